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


def stuck(path: str, at=None, key=None) -> dict:
    """The diagnosis at ``at``, by key."""
    wh = replay.open(path).worker()
    r, tracker = diagnose(wh, wh.position(at))
    return {d["key"]: d for d in why(r.ws, tracker, key)}


def stuck_anywhere(path: str) -> dict:
    """The diagnosis at the end of every worker of a log, by key."""
    out = {}
    for wh in replay.open(path).workers:
        r, tracker = diagnose(wh)
        out.update({d["key"]: d for d in why(r.ws, tracker)})
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
    assert y["state"] == "waiting"
    assert y["since_step"] == 1 and y["stimulus_id"] == "compute-y"
    assert "'x', which erred at step 2" in y["reason"] and "6705" in y["reason"]
    assert y["detail"]["erred_dependency"] == "x"
    assert y["detail"]["waiting_on"] == [
        {"key": "x", "state": "error", "who_has": [PEER], "since_step": 2}
    ]


def test_gather_never_completes(tmp_path, record_log):
    path = record_log(tmp_path / "flight.jsonl", [
        ComputeTask("a", stimulus_id="compute-a"),
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        wsm.ExecuteSuccessEvent.dummy("a", stimulus_id="a-done"),
    ])
    d = stuck(path)
    assert set(d) == {"x", "y"}
    x = d["x"]
    assert x["state"] == "flight" and x["since_step"] == 2
    assert x["detail"] == {"gather_step": 2, "coming_from": PEER}
    assert x["reason"] == f"flight from {PEER}: gather issued at step 2 never completed"
    assert d["y"]["reason"] == f"waiting on 1 dependency: 'x' (in flight from {PEER})"


def test_missing_with_no_holder_left(tmp_path, record_log):
    path = record_log(tmp_path / "missing.jsonl", [
        ComputeTask("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        # the peer answers without x
        wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={}, stimulus_id="no-x"),
        wsm.RefreshWhoHasEvent(who_has={"x": []}, stimulus_id="nobody"),
    ])
    d = stuck(path)
    assert d["x"]["state"] == "missing"
    assert d["x"]["since_step"] == 2 and d["x"]["stimulus_id"] == "no-x"
    assert d["x"]["reason"].startswith("missing: no worker")
    assert d["y"]["detail"]["waiting_on"][0]["state"] == "missing"


def test_constrained_needs_more_than_the_worker_has(tmp_path, record_log):
    path = record_log(
        tmp_path / "constrained.jsonl",
        [ComputeTask("x", resource_restrictions={"R": 2}, stimulus_id="compute-x")],
        resources={"R": 1},
    )
    (x,) = stuck(path).values()
    assert x["state"] == "constrained" and x["since_step"] == 1
    assert x["reason"] == (
        "constrained: needs R=2 while only 1 of 1 is free "
        "(more than the worker has: it can never run)"
    )


def test_ready_while_paused(tmp_path, record_log):
    path = record_log(tmp_path / "paused.jsonl", [
        wsm.PauseEvent(stimulus_id="pause"),
        ComputeTask("x", stimulus_id="compute-x"),
    ])
    (x,) = stuck(path).values()
    assert x["state"] == "ready" and x["since_step"] == 2
    assert x["detail"] == {"paused_step": 1}
    assert x["reason"] == "ready while the worker is paused (since step 1)"
    # once unpaused, it runs
    path = record_log(tmp_path / "unpaused.jsonl", [
        wsm.PauseEvent(stimulus_id="pause"),
        ComputeTask("x", stimulus_id="compute-x"),
        wsm.UnpauseEvent(stimulus_id="unpause"),
    ])
    (x,) = stuck(path).values()
    assert x["state"] == "executing"
    assert x["reason"] == "executing since step 3: no completion since"


def test_cancelled_and_single_key(tmp_path, record_log):
    path = record_log(tmp_path / "cancelled.jsonl", [
        ComputeTask("x", stimulus_id="compute-x"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="free-x"),
        ComputeTask("z", stimulus_id="compute-z"),
        wsm.ExecuteSuccessEvent.dummy("z", stimulus_id="z-done"),
    ], nthreads=2)
    d = stuck(path)
    assert set(d) == {"x"}
    assert d["x"]["state"] == "cancelled" and d["x"]["since_step"] == 2
    assert d["x"]["reason"] == "cancelled while executing: waits for the executing to finish"
    # one key, whatever its state; and the state at an earlier step
    assert stuck(path, key="z")["z"]["reason"] == "memory: final state"
    assert stuck(path, at=1)["x"]["state"] == "executing"
    with pytest.raises(NotFound, match="not known"):
        stuck(path, key="nope")


def test_fetch_with_every_holder_in_flight(tmp_path, record_log):
    # one connection at a time: y's fetch from the peer waits for x's gather
    path = record_log(tmp_path / "fetch.jsonl", [
        ComputeTask("a", who_has={"x": [PEER]}, stimulus_id="compute-a"),
        ComputeTask("b", who_has={"y": [PEER]}, stimulus_id="compute-b"),
    ], transfer_incoming_count_limit=1)
    d = stuck(path)
    assert d["x"]["state"] == "flight"
    assert d["y"]["state"] == "fetch"
    assert d["y"]["reason"] == f"fetch: every holder is busy or already in flight: {PEER}"
    assert d["y"]["detail"]["in_flight"] == [PEER]


def test_fixture_stuck_flight(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-flight.jsonl"))
    x = d["x"]
    assert x["state"] == "flight"
    assert f"gather issued at step {x['detail']['gather_step']} never completed" in x["reason"]
    assert d["y"]["state"] == "waiting"


def test_fixture_stuck_constrained(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-constrained.jsonl"))
    (c,) = [v for v in d.values() if v["state"] == "constrained"]
    assert "while only 0 of 1 is free" in c["reason"]


def test_fixture_stuck_6705(fixture_path):
    d = stuck_anywhere(fixture_path("stuck-6705.jsonl"))
    (w,) = [v for v in d.values() if "erred_dependency" in v.get("detail", {})]
    assert w["state"] == "waiting" and "6705" in w["reason"]


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
