"""Stuck-task diagnosis, on the ways a worker's tasks get stuck: each built as
an event sequence on a real ``WorkerState`` and recorded as an ordinary log,
and on the stuck fixtures recorded from real clusters.

The ways: a dependency that erred leaves its dependent waiting for ever (dask
issue 6705); a gather whose answer never comes leaves its keys in flight; a
key no worker holds any more is missing; a task needing more of a resource
than the worker has stays constrained; a paused worker runs nothing ready; a
cancelled task waits for its execution to end; a fetch waits while every
holder is busy or already in flight.
"""
from __future__ import annotations

import pytest
from distributed import worker_state_machine as wsm

import replay
from replay.errors import NotFound
from replay.diagnosis import diagnose, why

ComputeTask = wsm.ComputeTaskEvent.dummy
PEER = "tcp://127.0.0.1:1235"
OTHER = "tcp://127.0.0.1:1236"


def stuck(path: str, at=None, key=None) -> dict:
    """The verdicts at ``at``, by key."""
    wh = replay.open(path).worker()
    r, tracker = diagnose(wh, wh.position(at))
    return {v.key: v for v in why(r.ws, tracker, key)}


def stuck_anywhere(path: str) -> dict:
    """The verdicts at the end of every worker of a log, by key."""
    out = {}
    for wh in replay.open(path).workers:
        r, tracker = diagnose(wh)
        out.update({v.key: v for v in why(r.ws, tracker)})
    return out


def test_erred_dependency_leaves_dependent_waiting(tmp_path, record_log, gather_failure):
    # dask #6705: the peer fails to send x; x errs, y waits for it forever
    path = record_log(tmp_path / "6705.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        gather_failure(PEER, 1, "gather-failed"),
    ])
    d = stuck(path)
    assert set(d) == {"y"}  # x is in error: a final state
    y = d["y"]
    assert y.state == "waiting" and y.category == "waiting: erred dependency"
    assert y.since.step == 1 and y.stimulus_id == "compute-y"
    assert "'x', which erred at step 2" in y.reason and "6705" in y.reason
    assert y.detail["erred_dependency"] == "x"
    assert y.detail["waiting_for"] == {"x": "error"}


def test_gather_not_completed_by_the_step_asked_about(tmp_path, record_log):
    path = record_log(tmp_path / "flight.jsonl", [
        ComputeTask("a", stimulus_id="compute-a"),
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        wsm.ExecuteSuccessEvent.dummy("a", stimulus_id="a-done"),
        wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={"x": 1}, stimulus_id="got-x"),
    ])
    # before the answer comes, x is in flight: "not completed by" the step asked about
    for at in (2, 3):
        d = stuck(path, at=at)
        x = d["x"]
        assert x.state == "flight" and x.since.step == 2
        assert x.detail == {"gather_step": 2, "coming_from": PEER}
        assert f"in flight from {PEER}: gather issued at step 2, not completed by step {at}" in x.reason
        assert "never" not in x.reason
        assert d["y"].reason == f"waiting for 1 dependency: 'x' (in flight from {PEER})"
    # once it came, x is in memory and y runs
    d = stuck(path, at=4)
    assert set(d) == {"y"} and d["y"].state == "executing"


def test_gather_never_answered_by_the_end_of_the_log(tmp_path, record_log):
    # the recorder reads the clock for its header, then once per call
    clock = iter([100.0, 100.0, 108.5, 120.0]).__next__
    path = record_log(tmp_path / "flight.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        ComputeTask("z", stimulus_id="compute-z"),
    ], clock=clock)
    x = stuck(path)["x"]
    # recorded times: issued at the first step, the log ends 8.5 s later
    assert "not completed by the end of the log (8.5 s)" in x.reason


def test_since_is_the_last_change_of_state(tmp_path, record_log):
    # x in flight from PEER; PEER answers without it, and the same step sends
    # the gather to OTHER: flight -> fetch -> flight, no change of state
    path = record_log(tmp_path / "since.jsonl", [
        ComputeTask("y", who_has={"x": [PEER, OTHER]}, stimulus_id="compute-y"),
        lambda ws: [wsm.GatherDepSuccessEvent(
            worker=ws.tasks["x"].coming_from, total_nbytes=1, data={}, stimulus_id="no-x")],
    ])
    x = stuck(path)["x"]
    assert x.state == "flight" and x.since.step == 1
    first = stuck(path, at=1)["x"]
    # the gather in force is the second one, from the other holder
    assert (first.detail["coming_from"], x.detail["gather_step"]) != (x.detail["coming_from"], 1)
    assert x.detail["gather_step"] == 2


def test_missing_with_no_holder_left(tmp_path, record_log):
    path = record_log(tmp_path / "missing.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        # the peer answers without x
        wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={}, stimulus_id="no-x"),
        wsm.RefreshWhoHasEvent(who_has={"x": []}, stimulus_id="nobody"),
    ])
    d = stuck(path)
    assert d["x"].state == "missing"
    assert d["x"].since.step == 2 and d["x"].stimulus_id == "no-x"
    assert d["x"].reason.startswith("missing: no worker")
    assert d["y"].detail["waiting_for"] == {"x": "missing"}


def test_constrained_needs_more_than_the_worker_has(tmp_path, record_log):
    path = record_log(
        tmp_path / "constrained.jsonl",
        [ComputeTask("x", resource_restrictions={"R": 2}, stimulus_id="compute-x")],
        resources={"R": 1},
    )
    (x,) = stuck(path).values()
    assert x.state == "constrained" and x.since.step == 1
    assert "'R': 2, and only 1 of 1 is free" in x.reason
    assert "it can never run" in x.reason
    assert x.detail == {"needs": {"R": 2}, "available": {"R": 1}}


def test_ready_while_paused(tmp_path, record_log):
    path = record_log(tmp_path / "paused.jsonl", [
        wsm.PauseEvent(stimulus_id="pause"),
        ComputeTask("x", stimulus_id="compute-x"),
    ])
    (x,) = stuck(path).values()
    assert x.state == "ready" and x.since.step == 2 and x.category == "ready: paused"
    assert x.detail == {"paused_step": 1}
    assert "paused (since step 1" in x.reason
    # once unpaused, it runs
    path = record_log(tmp_path / "unpaused.jsonl", [
        wsm.PauseEvent(stimulus_id="pause"),
        ComputeTask("x", stimulus_id="compute-x"),
        wsm.UnpauseEvent(stimulus_id="unpause"),
    ])
    (x,) = stuck(path).values()
    assert x.state == "executing"
    assert x.reason.startswith("executing since step 3; not finished by the end of the log")


def test_cancelled_and_single_key(tmp_path, record_log):
    path = record_log(tmp_path / "cancelled.jsonl", [
        ComputeTask("x", stimulus_id="compute-x"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="free-x"),
        ComputeTask("z", stimulus_id="compute-z"),
        wsm.ExecuteSuccessEvent.dummy("z", stimulus_id="z-done"),
    ], nthreads=2)
    d = stuck(path)
    assert set(d) == {"x"}
    x = d["x"]
    assert x.state == "cancelled" and x.since.step == 2
    assert x.reason.startswith("cancelled while executing") and "once its execution ends" in x.reason
    assert x.detail == {"previous": "executing", "next": None}
    # one key, whatever its state; and the state at an earlier step
    assert stuck(path, key="z")["z"].reason == "memory: a final state"
    assert stuck(path, at=1)["x"].state == "executing"
    with pytest.raises(NotFound, match="not known"):
        stuck(path, key="nope")


def test_fetch_with_every_holder_in_flight(tmp_path, record_log):
    # one connection at a time: y's fetch from the peer waits for x's gather
    path = record_log(tmp_path / "fetch.jsonl", [
        ComputeTask("a", who_has={"x": [PEER]}, stimulus_id="compute-a"),
        ComputeTask("b", who_has={"y": [PEER]}, stimulus_id="compute-b"),
    ], transfer_incoming_count_limit=1)
    d = stuck(path)
    assert d["x"].state == "flight"
    y = d["y"]
    assert y.state == "fetch" and y.category == "fetch: holders busy"
    assert f"its only holder can't send now: a transfer from {PEER} is already under way" in y.reason
    assert y.detail["in_flight"] == [PEER] and y.detail["busy"] == []


def test_fetch_names_the_busy_holders(tmp_path, record_log):
    path = record_log(tmp_path / "busy.jsonl", [
        ComputeTask("a", who_has={"x": [PEER, OTHER]}, stimulus_id="compute-a"),
        lambda ws: [wsm.GatherDepBusyEvent(worker=ws.tasks["x"].coming_from, total_nbytes=1, stimulus_id="busy-1")],
        lambda ws: [wsm.GatherDepBusyEvent(worker=ws.tasks["x"].coming_from, total_nbytes=1, stimulus_id="busy-2")],
    ])
    x = stuck(path)["x"]
    assert x.state == "fetch"
    assert x.detail["busy"] == sorted([PEER, OTHER])
    assert f"both holders can't send now: {PEER} and {OTHER} answered busy" in x.reason


def test_fixture_stuck_flight(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-flight.jsonl"))
    x = d["x"]
    assert x.state == "flight"
    assert f"gather issued at step {x.detail['gather_step']}, not completed by the end of the log" in x.reason
    assert d["y"].state == "waiting"


def test_fixture_stuck_constrained(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-constrained.jsonl"))
    (c,) = [v for v in d.values() if v.state == "constrained"]
    assert "and only 0 of 1 is free" in c.reason


def test_fixture_stuck_6705(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-6705.jsonl"))
    (w,) = [v for v in d.values() if "erred_dependency" in v.detail]
    assert w.state == "waiting" and "6705" in w.reason


def test_verify_validate_finds_6705(tmp_path, record_log, gather_failure):
    path = record_log(tmp_path / "6705.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        gather_failure(PEER, 1, "gather-failed"),
    ])
    wh = replay.open(path).worker()
    d, _ = wh.verify()
    assert d is None  # a faithful replay of a broken state
    d, _ = wh.verify(validate=True)
    assert d is not None and d.kind == "invariant"
    assert (d.seq, d.stimulus_id) == (2, "gather-failed")
