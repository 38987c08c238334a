"""State, diff and story views, on logs recorded in the tests and on a real
cluster recording. Expected values follow from what the state machine must do."""
from __future__ import annotations

import dask.config
import orjson
import pytest
from distributed import worker_state_machine as wsm

import replay
from replay.errors import NotFound
from replay.literal import literal
from replay.story import key_story, stimulus_story
from replay.views import DiffView, StateView, state_of, steps_between, walk

ComputeTask = wsm.ComputeTaskEvent.dummy
PEER = "tcp://127.0.0.1:1235"
OTHER = "tcp://127.0.0.1:1236"


def view_at(wh, pos, **kwargs) -> StateView:
    return wh.view(pos, state_of, kwargs.get("states", ()), kwargs.get("keys", ()), kwargs.get("detail", False))


def diff(wh, a: int, b: int) -> DiffView:
    steps, total = steps_between(wh.calls(a + 1, b, instructions=False))
    return DiffView(view_at(wh, a), view_at(wh, b), steps, total)


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
    assert v.step == 7 and v.stimulus_id == "busy"
    states = {t.key: t.state for t in v.tasks}
    assert states[("run", 0)] == "executing"
    assert v.queues["executing"] == [("run", 0)]
    assert v.queues["ready"] == [("r", 1), ("r", 2)]
    assert v.queues["constrained"] == ["needs-R"]
    assert v.running and v.status == "running"
    # x1 went to the only free connection; x2 waits, OTHER answered busy
    assert v.in_flight_workers == {PEER: ["x1"]}
    assert v.busy_workers == [OTHER]
    assert v.data_needed == {PEER: ["x2"], OTHER: ["x2"]}
    c = v.counters
    assert (c.nthreads, c.executing, c.transfers, c.transfers_limit) == (1, 1, 1, 1)
    assert c.total_resources == {"R": 1.0} and c.available_resources == {"R": 1.0}
    assert v.task_states["fetch"] == 1 and v.task_states["flight"] == 1

    j = v.to_json()
    assert orjson.loads(orjson.dumps(j)) == j  # JSON-ready as it is
    assert j["executing"] == [["run", 0]] and j["ready"] == [["r", 1], ["r", 2]]
    assert j["resources"] == {"total": {"R": 1.0}, "available": {"R": 1.0}}


def test_state_lists_unfinished_tasks_first_and_filters(busy_log):
    wh = replay.open(busy_log).worker()
    v = view_at(wh, None)
    order = [t.state for t in v.tasks]
    # executing before anything queued, and the queued ones before what waits on them
    assert order.index("executing") < order.index("flight") < order.index("fetch") < order.index("ready")
    assert order.index("ready") < order.index("constrained") < order.index("waiting")
    only = view_at(wh, None, states=["ready"])
    assert [t.key for t in only.tasks] == [("r", 1), ("r", 2)]
    assert only.task_states == v.task_states  # counts of the whole worker
    (d2,) = view_at(wh, None, keys=["d2"]).tasks
    assert d2.detail["dependencies"] == ["x2"]
    (x2,) = view_at(wh, None, keys=["x2"]).tasks
    assert x2.detail["who_has"] == [PEER, OTHER]


def test_state_at_stimulus_id_and_step_zero(busy_log):
    wh = replay.open(busy_log).worker()
    v = view_at(wh, "c-r2")
    assert v.step == 2 and [t.state for t in v.tasks] == ["executing", "ready"]
    empty = view_at(wh, 0)
    assert empty.tasks == [] and empty.stimulus_id == "" and empty.handled is None


def test_diff(busy_log):
    wh = replay.open(busy_log).worker()
    d = diff(wh, 4, 7)
    j = d.to_json()
    assert (j["from"]["step"], j["to"]["step"]) == (4, 7)
    # the steps between, in order
    assert [s.step for s in d.steps] == [5, 6, 7] and d.steps_total == 3
    assert [s.stimulus_id for s in d.steps] == ["c-d1", "c-d2", "busy"]
    assert {c.key for c in d.tasks if c.before is None} == {"d1", "x1", "d2", "x2"}
    assert all(c.before is None for c in d.tasks)
    assert d.collections["busy_workers"] == {"added": [OTHER]}
    assert d.collections["in_flight_workers"] == {PEER: {"added": ["x1"]}}
    assert "ready" not in d.collections and j["resources"] == {}
    # nothing changes between a position and itself
    same = diff(wh, 5, 5)
    assert same.tasks == [] and same.collections == {} and same.steps_total == 0


def test_diff_cancelled(tmp_path, record_log):
    path = record_log(tmp_path / "resumed.jsonl", [
        ComputeTask("x", stimulus_id="c-x"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="free-x"),
        ComputeTask("x", stimulus_id="c-x-again"),
    ])
    wh = replay.open(path).worker()
    d = diff(wh, 1, 2)
    (c,) = d.tasks
    assert (c.before.state, c.after.state, c.after.previous) == ("executing", "cancelled", "executing")
    assert "executing" not in d.collections  # still running on its thread
    (c,) = diff(wh, 2, 3).tasks
    assert c.after.state == "executing"


def test_diff_resumed(tmp_path, record_log):
    # x is fetched for y; y is released, then x itself is to be computed here
    path = record_log(tmp_path / "resumed.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="c-y"),
        wsm.FreeKeysEvent(keys=["y"], stimulus_id="free-y"),
        ComputeTask("x", stimulus_id="c-x"),
    ])
    wh = replay.open(path).worker()
    (c,) = diff(wh, 2, 3).tasks
    assert (c.before.state, c.before.previous) == ("cancelled", "flight")
    assert (c.after.state, c.after.previous, c.after.next) == ("resumed", "flight", "waiting")


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
    story = key_story(walk(wh), wh.address, "x")
    assert len(wh.state_at().log) == 5
    assert [line.step for line in story.lines if line.kind == "event"] == list(range(1, 14))
    transitions = [line.item for line in story.lines if line.kind == "transition"]
    assert len(transitions) > 5
    assert transitions[0][1:3] == ("released", "waiting")
    assert [line.step for line in story.lines] == sorted(line.step for line in story.lines)
    first = next(line for line in story.lines if line.kind == "instruction")
    assert first.item == wsm.Execute(key="x", stimulus_id="c-x")


def test_story_carries_recorded_times(tmp_path, record_log):
    clock = iter([1000.0, 1000.0, 1012.5, 1012.5, 1030.0, 1030.0, 1031.0]).__next__
    path = record_log(tmp_path / "t.jsonl", [
        ComputeTask("x", stimulus_id="c-x"),
        wsm.ExecuteSuccessEvent.dummy("x", run_id=0, stimulus_id="done-x"),
    ], clock=clock)
    wh = replay.open(path).worker()
    recorded = {rec["seq"]: rec["handled"] for call in wh.calls(records=True) for rec in call.records}
    story = key_story(walk(wh), wh.address, "x")
    for line in story.lines:
        assert line.handled == recorded[line.step]
    j = story.to_json()
    assert j["start"] == recorded[1]
    for entry in j["story"]:
        assert entry["handled"] == recorded[entry["step"]]
        assert entry["elapsed"] == pytest.approx(recorded[entry["step"]] - recorded[1])
        # a transition is timed by the recording, not by the replay's clock
        assert "time" not in entry.get("transition", {})


def test_story_ties_gather_results_to_keys(tmp_path, record_log):
    path = record_log(tmp_path / "gather.jsonl", [
        ComputeTask("y", who_has={("x", 0): [PEER]}, stimulus_id="c-y"),
        wsm.GatherDepNetworkFailureEvent(worker=PEER, total_nbytes=1, stimulus_id="net"),
    ])
    wh = replay.open(path).worker()
    story = key_story(walk(wh), wh.address, ("x", 0))
    kinds = [(line.step, line.kind) for line in story.lines]
    # the failure event names only the peer; the story still has it
    assert (2, "event") in kinds and (1, "instruction") in kinds
    assert any(line.kind == "transition" and line.item[0] == ("x", 0) and line.item[2] == "missing"
               for line in story.lines)


def test_key_matching_is_exact(tmp_path, record_log):
    # dask's worker_story finds 5 inside every tuple key holding 5; a key is a key
    path = record_log(tmp_path / "exact.jsonl", [
        ComputeTask(("x", 5), stimulus_id="c-x5"),
        ComputeTask(5, stimulus_id="c-5"),
        ComputeTask(("y", 5), stimulus_id="c-y5"),
    ], nthreads=3)
    wh = replay.open(path).worker()
    story = key_story(walk(wh), wh.address, 5)
    assert {line.stimulus_id for line in story.lines} == {"c-5"}
    with pytest.raises(NotFound, match=r"no such key.*closest: \('x', 5\)"):
        key_story(walk(wh), wh.address, ("x", 6))


def test_stimulus_story(busy_log):
    wh = replay.open(busy_log).worker()
    story = stimulus_story(walk(wh), wh.address, "c-d1")
    assert {line.step for line in story.lines} == {5}
    assert story.lines[0].kind == "event" and story.lines[0].item.key == "d1"
    assert [type(line.item).__name__ for line in story.lines if line.kind == "instruction"] == ["GatherDep"]
    assert {(line.item[0], line.item[2]) for line in story.lines if line.kind == "transition"} >= {
        ("d1", "waiting"), ("x1", "fetch"), ("x1", "flight")
    }
    with pytest.raises(NotFound):
        stimulus_story(walk(wh), wh.address, "no-such-stimulus")


# --- a batch: several events in one handle_stimulus call ---------------------

BATCH = [
    ComputeTask("a", stimulus_id="c-a"),
    # one call: b arrives, a finishes, c arrives
    lambda ws: [
        ComputeTask("b", stimulus_id="c-b"),
        wsm.ExecuteSuccessEvent.dummy("a", run_id=0, stimulus_id="done-a"),
        ComputeTask("c", stimulus_id="c-c"),
    ],
    wsm.FreeKeysEvent(keys=["a"], stimulus_id="free-a"),
]


def one_by_one(upto: int) -> wsm.WorkerState:
    """A fresh worker fed the batch's events one call each, up to step ``upto``."""
    events = [BATCH[0], *BATCH[1](None), BATCH[2]]
    ws = wsm.WorkerState(nthreads=1, address="tcp://127.0.0.1:1234", validate=True)
    for ev in events[:upto]:
        ws.handle_stimulus(ev)
    return ws


def test_every_step_of_a_batch_is_a_position(tmp_path, record_log):
    wh = replay.open(record_log(tmp_path / "batch.jsonl", BATCH, validate=True)).worker()
    assert wh.events == 5
    for step in range(6):
        v = view_at(wh, step)
        assert v.step == step
        assert {t.key: t.state for t in v.tasks} == {k: ts.state for k, ts in one_by_one(step).tasks.items()}
    assert view_at(wh, 3).stimulus_id == "done-a"
    # replayed one event at a time, the batch still returns what the recorded call did
    d, _ = wh.verify()
    assert d is None


def test_story_of_a_batch_keeps_each_event_with_what_it_caused(tmp_path, record_log):
    wh = replay.open(record_log(tmp_path / "batch.jsonl", BATCH)).worker()
    story = key_story(walk(wh), wh.address, "b")
    lines = [(line.step, line.kind) for line in story.lines]
    # b's event at step 2, its transitions, then the Execute that step 3 issued
    # once a's thread was free: each at its own step, in order
    assert lines[0] == (2, "event")
    assert [s for s, k in lines] == sorted(s for s, k in lines)
    (execute,) = [line for line in story.lines if line.kind == "instruction"]
    assert execute.step == 3 and execute.item == wsm.Execute(key="b", stimulus_id="done-a")


# --- real recordings ----------------------------------------------------------


def test_real_recording_diff_adds_up(fixture_path):
    wh = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(0)
    d = diff(wh, 200, 400)
    after = {t.key: t.state_text() for t in d.before.tasks}
    for c in d.tasks:
        if c.after is None:
            del after[c.key]
        else:
            assert after.get(c.key) == (None if c.before is None else c.before.state_text())
            after[c.key] = c.after.state_text()
    assert after == {t.key: t.state_text() for t in d.after.tasks}
    assert d.tasks and d.steps_total == 200 and d.steps[0].step == 201


def test_real_recording_story_matches_the_workers_own(fixture_path):
    # early on, the worker's capped log still holds everything: the story must
    # then be exactly WorkerState.story, with recorded times instead of replay's
    wh = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(0)
    step = 150
    ws = wh.state_at(step)
    assert len(ws.log) < ws.log.maxlen
    recorded = {rec["seq"]: rec["handled"] for call in wh.calls(1, step, records=True) for rec in call.records}
    tasks = [ts for ts in ws.tasks.values() if isinstance(ts.key, str)][:5]
    assert tasks, f"no task with a string key at step {step} to compare stories of"
    for ts in tasks:
        story = key_story(walk(wh, step), wh.address, ts.key)
        ours = [line for line in story.lines if line.kind in ("transition", "log")]
        theirs = ws.story(ts.key)
        assert len(ours) == len(theirs) > 0
        for line, entry in zip(ours, theirs):
            assert line.item[:-1] == entry[:-1]  # all but the replay's clock
            assert line.handled == recorded[line.step]


def test_literal_shows_dask_values_as_dask_prints_them():
    assert literal({("tree", 2, 30): ("tcp://a:1",)}) == "{('tree', 2, 30): ('tcp://a:1',)}"
    assert literal({"b", "a"}) == "{'a', 'b'}"
    # cut at a whole element, with a count of what was cut
    text = literal(list(range(1000)), 40)
    assert text.startswith("[0, 1, 2,") and text.endswith("more]")
    shown = text[1:-1].split(", ")[:-1]
    assert [int(x) for x in shown] == list(range(len(shown)))
    assert text.endswith(f"… {1000 - len(shown)} more]")
    # a hostile key stays a literal: no escape sequence reaches the terminal
    assert literal("\x1b[2J") == repr("\x1b[2J")
