"""State, diff and story views, on hand-made logs and on a real cluster recording."""
from __future__ import annotations

import dask.config
import orjson
import pytest
from distributed import worker_state_machine as wsm

import replay
from replay.views import diff_view, key_story, state_view, stimulus_story, walk
from schemas.codec import encode_key

ComputeTask = wsm.ComputeTaskEvent.dummy
PEER = "tcp://127.0.0.1:1235"
OTHER = "tcp://127.0.0.1:1236"


def stimulus_at(wh, step: int) -> str:
    """The stimulus id of a step, read from the log ('' for the empty state)."""
    for call in wh.calls(step, step) if step else ():
        if call.first <= step <= call.last:
            return call.events[step - call.first].stimulus_id
    return ""


def view_at(wh, pos) -> dict:
    step = wh.position(pos)
    return state_view(wh.state_at(step), step=step, stimulus_id=stimulus_at(wh, step))


@pytest.fixture
def busy_log(tmp_path, record_log):
    """One thread, one resource: a worker with something in every collection."""
    return record_log(tmp_path / "busy.jsonl", [
        ComputeTask(("run", 0), priority=(0,), stimulus_id="c-run"),
        # ready, in priority order (not arrival order)
        ComputeTask(("r", 2), priority=(2,), stimulus_id="c-r2"),
        ComputeTask(("r", 1), priority=(1,), stimulus_id="c-r1"),
        ComputeTask("needs-R", resource_restrictions={"R": 1}, priority=(3,), stimulus_id="c-R"),
        # one dependency in flight from PEER, another queued behind it
        ComputeTask("d1", who_has={"x1": [PEER]}, stimulus_id="c-d1"),
        ComputeTask("d2", who_has={"x2": [PEER, OTHER]}, stimulus_id="c-d2"),
        wsm.GatherDepBusyEvent(worker=OTHER, total_nbytes=1, stimulus_id="busy"),
    ], nthreads=1, resources={"R": 1}, transfer_incoming_count_limit=1)


def test_state_collections(busy_log):
    wh = replay.open(busy_log).worker()
    v = view_at(wh, None)
    assert v["step"] == 7 and v["stimulus_id"] == "busy"
    assert orjson.loads(orjson.dumps(v)) == v  # JSON-ready as it is
    states = {orjson.dumps(t["key"]): t["state"] for t in v["tasks"]}
    assert states[orjson.dumps(["run", 0])] == "executing"
    assert v["executing"] == [["run", 0]]
    assert v["ready"] == [["r", 1], ["r", 2]]
    assert v["constrained"] == ["needs-R"]
    assert v["resources"] == {"total": {"R": 1.0}, "available": {"R": 1.0}}
    assert v["status"] == "running" and v["running"] is True
    # x1 went to the only free connection; x2 waits, OTHER answered busy
    assert v["in_flight_workers"] == {PEER: ["x1"]}
    assert v["busy_workers"] == [OTHER]
    assert v["data_needed"] == {PEER: ["x2"], OTHER: ["x2"]}
    assert v["task_states"]["fetch"] == 1 and v["task_states"]["flight"] == 1
    assert v["missing"] == [] and v["nbytes"] == 0


def test_state_at_stimulus_id_and_step_zero(busy_log):
    wh = replay.open(busy_log).worker()
    v = view_at(wh, "c-r2")
    assert v["step"] == 2 and [t["state"] for t in v["tasks"]] == ["executing", "ready"]
    empty = view_at(wh, 0)
    assert empty["tasks"] == [] and empty["stimulus_id"] == ""


def test_diff(busy_log):
    wh = replay.open(busy_log).worker()
    d = diff_view(view_at(wh, 4), view_at(wh, 7))
    assert (d["from"]["step"], d["to"]["step"]) == (4, 7)
    assert {orjson.dumps(t["key"]) for t in d["tasks"]["added"]} == {
        orjson.dumps(k) for k in ("d1", "x1", "d2", "x2")
    }
    assert d["tasks"]["removed"] == [] and d["tasks"]["changed"] == []
    assert d["collections"]["busy_workers"] == {"added": [OTHER]}
    assert d["collections"]["in_flight_workers"] == {PEER: {"added": ["x1"]}}
    assert "ready" not in d["collections"] and d["resources"] == {}
    # nothing changes between a position and itself
    same = diff_view(view_at(wh, 5), view_at(wh, 5))
    assert same["tasks"] == {"added": [], "removed": [], "changed": []}
    assert same["collections"] == {} and same["resources"] == {}


def test_diff_cancelled(tmp_path, record_log):
    path = record_log(tmp_path / "resumed.jsonl", [
        ComputeTask("x", stimulus_id="c-x"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="free-x"),
        ComputeTask("x", stimulus_id="c-x-again"),
    ])
    wh = replay.open(path).worker()
    d = diff_view(view_at(wh, 1), view_at(wh, 2))
    assert d["tasks"]["changed"] == [
        {"key": "x", "from": "executing", "to": "cancelled", "previous": [None, "executing"], "next": [None, None]}
    ]
    assert "executing" not in d["collections"]  # still running on its thread
    d = diff_view(view_at(wh, 2), view_at(wh, 3))
    assert d["tasks"]["changed"][0]["to"] == "executing"


def test_diff_resumed(tmp_path, record_log):
    # x is fetched for y; y is released, then x itself is to be computed here
    path = record_log(tmp_path / "resumed.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="c-y"),
        wsm.FreeKeysEvent(keys=["y"], stimulus_id="free-y"),
        ComputeTask("x", stimulus_id="c-x"),
    ])
    wh = replay.open(path).worker()
    d = diff_view(view_at(wh, 2), view_at(wh, 3))
    assert d["tasks"]["changed"] == [
        {"key": "x", "from": "cancelled", "to": "resumed", "previous": ["flight", "flight"], "next": [None, "waiting"]}
    ]


def test_story_is_not_capped(tmp_path, record_log):
    # the worker keeps 5 log entries; the story has them all
    events = [ComputeTask("x", stimulus_id="c-x")]
    for i in range(6):
        events += [
            wsm.FreeKeysEvent(keys=["x"], stimulus_id=f"free-{i}"),
            ComputeTask("x", run_id=i + 1, stimulus_id=f"again-{i}"),
        ]
    with dask.config.set({"distributed.admin.low-level-log-length": 5}):
        path = record_log(tmp_path / "capped.jsonl", events)
    wh = replay.open(path).worker()
    story = key_story(walk(wh), "x")
    assert len(wh.state_at().log) == 5
    events_in_story = [e for e in story if e["kind"] == "event"]
    assert [e["step"] for e in events_in_story] == list(range(1, 14))
    transitions = [e for e in story if e["kind"] == "transition"]
    assert len(transitions) > 5
    assert transitions[0]["start"] == "released" and transitions[0]["finish"] == "waiting"
    assert [e["step"] for e in story] == sorted(e["step"] for e in story)
    assert [e for e in story if e["kind"] == "instruction"][0]["instruction"] == {
        "cls": "Execute", "stimulus_id": "c-x", "key": "x"
    }


def test_story_ties_gather_results_to_keys(tmp_path, record_log):
    path = record_log(tmp_path / "gather.jsonl", [
        ComputeTask("y", who_has={("x", 0): [PEER]}, stimulus_id="c-y"),
        wsm.GatherDepNetworkFailureEvent(worker=PEER, total_nbytes=1, stimulus_id="net"),
    ])
    wh = replay.open(path).worker()
    story = key_story(walk(wh), ("x", 0))
    kinds = [(e["step"], e["kind"]) for e in story]
    # the failure event names only the peer; the story still has it
    assert (2, "event") in kinds and (1, "instruction") in kinds
    assert any(e["kind"] == "transition" and e["key"] == ["x", 0] and e["finish"] == "missing"
               for e in story)


def test_stimulus_story(busy_log):
    wh = replay.open(busy_log).worker()
    (s,) = stimulus_story(walk(wh), "c-d1")
    assert s["step"] == 5 and s["event"]["key"] == "d1"
    assert [i["cls"] for i in s["instructions"]] == ["GatherDep"]
    assert {(t["key"], t["finish"]) for t in s["log"] if t["kind"] == "transition"} >= {
        ("d1", "waiting"), ("x1", "fetch"), ("x1", "flight")
    }


def test_real_recording_diff_adds_up(fixture_path):
    wh = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(0)
    a, b = view_at(wh, 200), view_at(wh, 400)
    d = diff_view(a, b)
    key = lambda t: orjson.dumps(t["key"])  # noqa: E731
    after = {key(t): t["state"] for t in a["tasks"]}
    for t in d["tasks"]["removed"]:
        del after[key(t)]
    for t in d["tasks"]["added"]:
        after[key(t)] = t["state"]
    for t in d["tasks"]["changed"]:
        assert after[key(t)] == t["from"]
        after[key(t)] = t["to"]
    assert after == {key(t): t["state"] for t in b["tasks"]}
    assert d["tasks"]["added"] or d["tasks"]["changed"] or d["tasks"]["removed"]


def test_real_recording_story_matches_the_workers_own(fixture_path):
    # early on, the worker's capped log still holds everything: the regenerated
    # story must then be exactly WorkerState.story (times aside)
    wh = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(0)
    step = 150
    ws = wh.state_at(step)
    assert len(ws.log) < ws.log.maxlen
    tasks = list(ws.tasks.values())[:5]
    assert tasks, f"no task at step {step} to compare stories of"
    for ts in tasks:
        ours = [e for e in key_story(walk(wh, step), ts.key) if e["kind"] in ("transition", "log")]
        theirs = ws.story(ts.key)
        assert len(ours) == len(theirs) > 0
        for mine, entry in zip(ours, theirs):
            if mine["kind"] == "transition":
                assert mine["key"] == encode_key(entry[0])
                assert (mine["start"], mine["finish"], mine["final"], mine["stimulus_id"]) == entry[1:4] + (entry[5],)
            else:
                assert len(mine["entry"]) == len(entry)
