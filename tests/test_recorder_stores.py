"""A data store that raises: the recorder notes which key's store raised and
with what, replay's data raises the same, and the replay is faithful.

dask's ``_transition_to_memory`` stores a value with ``ws.data[key] = value``;
when the mapping raises (a ``SpillBuffer`` that cannot pickle a value larger
than its target, a third-party mapping), the task goes to ``error`` and the
worker sends ``TaskErredMsg``. Without the record a replay stores the value,
ends with the task in memory and departs from the recording there.
"""
from __future__ import annotations

import asyncio

import orjson
from distributed import Client, Scheduler, Worker, wait
from distributed import worker_state_machine as wsm
from distributed.spill import SpillBuffer

import replay
from replay.engine import Replayer, StoreRaised
from replay.logfile import LogWriter, iter_lines, log_files
from replay.reader import read_calls
from replay.record import Recorder, Session

PEER = "tcp://127.0.0.2:1"


class Unpicklable:
    """A result whose size is over a spilling store's target and which cannot
    be pickled: the store must spill it at once, and fails."""

    def __init__(self, size: int):
        self.size = size

    def __sizeof__(self) -> int:
        return self.size

    def __getstate__(self):
        raise TypeError("this value cannot leave memory")


class RefusingStore(dict):
    """A third-party mapping that refuses every value."""

    def __setitem__(self, key, value):
        raise OSError(f"no room for {key!r}")


def inc(x: int) -> int:
    return x + 1


def records(path) -> list[dict]:
    return [rec for _, rec in iter_lines(str(path))]


def without_store_failures(path, out) -> str:
    """The log as a recorder that missed the failures would have written it."""
    lines = []
    for rec in records(path):
        rec.pop("store_failed", None)
        lines.append(orjson.dumps(rec))
    out.write_bytes(b"\n".join(lines) + b"\n")
    return str(out)


def departure(path) -> int | None:
    """The first departure a replay that follows the recording meets."""
    history = replay.open(str(path))
    worker = history.worker()
    r = Replayer(worker.header, follow_recording=True)
    for call in read_calls(history.log, worker.wlog):
        r.apply(call)
    return None if r.departed is None else r.departed.seq


def test_a_spill_buffer_that_cannot_pickle_is_recorded_on_a_live_worker(tmp_path):
    logs = tmp_path / "logs"

    async def run() -> None:
        async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1") as s, Worker(
            s.address, nthreads=1, data=SpillBuffer(str(tmp_path / "spill"), target=1000),
            plugins={Recorder(str(logs))},
        ), Client(s.address, asynchronous=True) as c:
            x = c.submit(Unpicklable, 10**6, key="x")
            await wait(x)
            # dask's semantics: the value is lost, the task errs, the worker carries on
            assert x.status == "error"
            assert await c.submit(inc, 1, key="y") == 2

    asyncio.run(run())
    (path,) = log_files(str(logs))
    steps = [r for r in records(path) if r["kind"] == "step"]
    failed = [s for s in steps if "store_failed" in s]
    assert len(failed) == 1
    step = failed[0]
    assert step["event"]["cls"] == "ExecuteSuccessEvent" and step["event"]["key"] == "x"
    (failure,) = step["store_failed"]
    (erred,) = [i for i in step["instructions"] if i["cls"] == "TaskErredMsg"]
    assert failure["key"] == erred["key"] == "x"
    assert failure["exception_text"] == erred["exception_text"]

    history = replay.open(path)
    worker = history.worker()
    assert worker.verify()[0] is None
    assert departure(path) is None
    assert worker.state_at(step["seq"]).tasks["x"].state == "error"

    # the log without the record: replay stores x and departs right there,
    # and nothing recorded explains why
    blind = without_store_failures(path, tmp_path / "blind.jsonl")
    d, _ = replay.open(blind).worker().verify()
    assert d is not None and d.seq == step["seq"] and d.kind == "instructions"
    assert d.cause is None
    assert d.explanation().startswith("no cause known: verify compared every instruction")
    assert departure(blind) == d.seq
    assert replay.open(blind).worker().state_at(step["seq"]).tasks["x"].state == "memory"


def _running(path) -> tuple[wsm.WorkerState, Session, LogWriter]:
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1, validate=True)
    writer = LogWriter(str(path))
    # watched, as pytest --replay-record records a unit test's state
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    return ws, session, writer


def test_a_data_mapping_swapped_between_stimuli_is_noted_and_its_failure_replayed(tmp_path):
    path = tmp_path / "log.jsonl"
    ws, session, writer = _running(path)
    ws.data = RefusingStore()
    instructions = ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
    assert [type(i) for i in instructions] == [wsm.TaskErredMsg]
    assert ws.tasks["x"].state == "error"
    session.close("test")
    writer.close()

    recs = records(path)
    (change,) = [r for r in recs if r["kind"] == "resources"]
    assert (change["seq"], change["outside"]) == (2, ["data replaced (dict -> RefusingStore), holding 0 keys"])
    (step,) = [r for r in recs if r.get("seq") == 2 and r["kind"] == "step"]
    assert [f["key"] for f in step["store_failed"]] == ["x"]
    assert step["store_failed"][0]["exception_text"] == "OSError(\"no room for 'x'\")"

    worker = replay.open(str(path)).worker()
    assert worker.verify()[0] is None
    ws2 = worker.state_at(None)
    assert ws2.tasks["x"].state == "error"
    assert ws2.tasks["x"].exception_text == "OSError(\"no room for 'x'\")"
    # replay's own data is a plain dict again after the call: nothing left armed
    assert not ws2.data and not ws2.data.raising


def test_a_fetched_value_whose_store_raises_in_a_batch(tmp_path):
    path = tmp_path / "log.jsonl"
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1, validate=False)
    writer = LogWriter(str(path))
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.data = RefusingStore()
    instructions = ws.handle_stimulus(
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="s1"),
        wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={"x": 123}, stimulus_id="s2"),
    )
    # the fetched x cannot be stored: it errs, y keeps waiting for it
    assert [type(i) for i in instructions] == [wsm.GatherDep, wsm.TaskErredMsg]
    assert (ws.tasks["x"].state, ws.tasks["y"].state) == ("error", "waiting")
    session.close("test")
    writer.close()

    steps = [r for r in records(path) if r["kind"] == "step"]
    assert ["store_failed" in s for s in steps] == [False, True]  # on the batch's last step
    worker = replay.open(str(path)).worker()
    assert worker.verify()[0] is None
    # a position inside the batch: the head of the call, armed as recorded
    assert worker.state_at(1).tasks["x"].state == "flight"
    assert worker.state_at(2).tasks["x"].state == "error"


def test_replays_data_raises_only_for_the_recorded_key_and_call():
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=2)
    header = {
        "worker": ws.address, "from_empty": True, "deterministic": False, "hash_seed": None,
        "distributed": "0", "state": {
            "nthreads": 2, "resources": {}, "transfer_incoming_count_limit": 4, "validate": True,
            "transition_counter_max": False, "transfer_incoming_bytes_limit": 1e9,
            "transfer_message_bytes_limit": 1e9, "default_data_size": 1024, "log_length": 1000,
        },
    }
    r = Replayer(header)
    data = r.ws.data
    data.raising = {"x": StoreRaised("ValueError('recorded')")}
    data["y"] = 1
    assert dict(data) == {"y": 1}
    try:
        data["x"] = 2
    except StoreRaised as e:
        assert repr(e) == "ValueError('recorded')"
    else:
        raise AssertionError("the recorded failure was not raised")
    data["x"] = 3  # once: a later store of x succeeds
    assert dict(data) == {"y": 1, "x": 3}
