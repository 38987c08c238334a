"""What the recorder sees of a WorkerState besides its stimuli: settings
assigned between them, resources, task state changed behind the state
machine's back, and copies of a recorded state."""
from __future__ import annotations

import copy
import pickle

from distributed import worker_state_machine as wsm

import replay
from replay.logfile import LogWriter, iter_lines
from replay.record import Session

PEER = "tcp://127.0.0.2:1"


def records(path) -> list[dict]:
    return [rec for _, rec in iter_lines(str(path))]


def start(path, **kwargs) -> tuple[wsm.WorkerState, Session, LogWriter]:
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", **kwargs)
    writer = LogWriter(str(path))
    return ws, Session(ws, writer=writer), writer


def stop(session: Session, writer: LogWriter) -> None:
    session.close("test")
    writer.close()


def verify(path):
    return replay.open(str(path)).worker().verify()[0]


def test_settings_assigned_before_the_first_stimulus_are_the_headers(tmp_path):
    path = tmp_path / "log.jsonl"
    ws, session, writer = start(path, nthreads=1)
    # as tests and Worker.__init__ do, after building the state
    ws.nthreads = 2
    ws.transfer_message_bytes_limit = 1000
    ws.handle_stimulus(
        wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"),
        wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2"),
    )
    stop(session, writer)
    header = records(path)[0]
    assert header["state"]["nthreads"] == 2
    assert header["state"]["transfer_message_bytes_limit"] == 1000
    # two threads: both tasks run at once
    executes = [i for r in records(path) if r["kind"] == "step" for i in r.get("instructions") or ()]
    assert [i["cls"] for i in executes] == ["Execute", "Execute"]
    assert verify(path) is None


def _fetch_from_peer(ws: wsm.WorkerState, key: str, dep: str, sid: str) -> list:
    return ws.handle_stimulus(
        wsm.ComputeTaskEvent.dummy(key, who_has={dep: [PEER]}, stimulus_id=sid)
    )


def test_freezing_data_fetching_is_a_settings_record_and_replays(tmp_path):
    path = tmp_path / "log.jsonl"
    ws, session, writer = start(path, nthreads=1)
    # distributed.utils_test.freeze_data_fetching, on the state itself
    old = ws.transfer_incoming_count_limit, ws.transfer_incoming_bytes_throttle_threshold
    ws.transfer_incoming_count_limit = 0
    ws.transfer_incoming_bytes_throttle_threshold = 0
    frozen = _fetch_from_peer(ws, "y", "x", "s1")
    assert not any(isinstance(i, wsm.GatherDep) for i in frozen)
    assert ws.tasks["x"].state == "fetch"
    ws.transfer_incoming_count_limit, ws.transfer_incoming_bytes_throttle_threshold = old
    thawed = _fetch_from_peer(ws, "z", "x2", "s2")
    # both dependencies now go in flight from the one peer
    gathers = [i for i in thawed if isinstance(i, wsm.GatherDep)]
    assert [sorted(g.to_gather) for g in gathers] == [["x", "x2"]]
    stop(session, writer)

    recs = records(path)
    assert recs[0]["state"]["transfer_incoming_bytes_throttle_threshold"] == 0
    changes = [r for r in recs if r["kind"] == "resources"]
    assert [(c["seq"], c["settings"]) for c in changes] == [
        (2, {"transfer_incoming_count_limit": old[0],
             "transfer_incoming_bytes_throttle_threshold": old[1]}),
    ]
    assert verify(path) is None


def test_the_state_machines_own_resource_use_is_not_a_record(tmp_path):
    path = tmp_path / "log.jsonl"
    ws, session, writer = start(path, nthreads=2, resources={"R": 1.0})
    ws.handle_stimulus(
        wsm.ComputeTaskEvent.dummy("x", resource_restrictions={"R": 1.0}, stimulus_id="s1")
    )
    assert ws.available_resources == {"R": 0.0}
    ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
    assert ws.available_resources == {"R": 1.0}
    assert not [r for r in records(path) if r["kind"] == "resources"]
    # Worker.set_resources writes both directly: that is a record
    ws.total_resources["R"] = 2.0
    ws.available_resources["R"] = 2.0
    ws.handle_stimulus(wsm.FreeKeysEvent(keys=["x"], stimulus_id="s3"))
    stop(session, writer)
    changes = [r for r in records(path) if r["kind"] == "resources"]
    assert [(c["seq"], c["total"], c["available"]) for c in changes] == [(3, {"R": 2.0}, {"R": 2.0})]
    assert "settings" not in changes[0]
    assert verify(path) is None


def test_a_recorded_state_pickles_and_copies_as_an_unrecorded_one(tmp_path):
    path = tmp_path / "log.jsonl"
    ws, session, writer = start(path, nthreads=1)
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    for clone in (pickle.loads(pickle.dumps(ws)), copy.deepcopy(ws)):
        assert type(clone) is wsm.WorkerState
        assert clone.tasks["x"].state == "executing"
        clone.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="clone"))
    assert session.seq == 1  # the clones wrote nothing into this log
    ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
    stop(session, writer)
    assert [r["event"]["stimulus_id"] for r in records(path) if r["kind"] == "step"] == ["s1", "s2"]


def test_task_state_changed_outside_handle_stimulus_is_named_by_verify(tmp_path):
    path = tmp_path / "log.jsonl"
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1)
    writer = LogWriter(str(path))
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2"))
    assert ws.tasks["y"].state == "ready"
    # a test taking a task out of the ready queue by hand: replay cannot know
    ws.ready.remove(ws.tasks["y"])
    ws.tasks["y"].state = "released"
    instructions = ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s3"))
    # with y gone from ready, nothing runs next; a replay runs y
    assert [type(i).__name__ for i in instructions] == ["TaskFinishedMsg"]
    stop(session, writer)
    change = [r for r in records(path) if r["kind"] == "resources"]
    assert [(c["seq"], c["outside"]) for c in change] == [(3, ["task 'y': ready -> released"])]
    d = verify(path)
    assert d is not None and d.seq == 3
    assert d.cause == "state changed outside handle_stimulus before step 3"
