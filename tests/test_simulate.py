"""The simulated cluster: real WorkerStates driven by a scripted scheduler and peers.

Its logs go through the recorder's Session, so they must replay faithfully;
every fault it injects must show in the log and take the real state machine
where it should.
"""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import orjson
import pytest

import replay
from replay.logfile import LineWriter
from replay.simulate import Faults, Simulation, simulate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: every fault often enough to show up in a few thousand events
FAULTY = Faults(
    busy=0.1, network=0.03, missing=0.08, fail=0.01, reschedule=0.01, secede=0.05,
    steal=0.05, pause=0.01, retire=0.005, replicate=0.05, drop=0.5,
)
FAULT_EVENTS = {
    "busy": "GatherDepBusyEvent",
    "network": "GatherDepNetworkFailureEvent",
    "fail": "ExecuteFailureEvent",
    "reschedule": "RescheduleEvent",
    "secede": "SecedeEvent",
    "steal": "StealRequestEvent",
    "pause": "PauseEvent",
    "retire": "RemoveWorkerEvent",
    "replicate": "AcquireReplicasEvent",
    "drop": "RemoveReplicasEvent",
}


def run_to_bytes(**kwargs) -> tuple[bytes, dict]:
    buf = io.BytesIO()
    counts = simulate(LineWriter(buf), **kwargs)
    return buf.getvalue(), counts


@pytest.fixture(scope="module")
def faulty_log(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sim") / "faulty.jsonl")
    with open(path, "wb") as f:
        counts = simulate(LineWriter(f), events=6000, seed=11, workers=2, faults=FAULTY)
    return path, counts


def test_simulated_log_replays_faithfully(faulty_log):
    path, counts = faulty_log
    log = replay.open(path, validate=True)
    assert sum(w.events for w in log.workers) == counts["events"] == 6000
    assert len(log.workers) == 2
    for wh in log.workers:
        assert wh.header["deterministic"] is True
        assert wh.header["hash_seed"] == "6640"
        assert wh.header["pid"] == 0
        assert wh.wlog.ended
        divergence, r = wh.verify()
        assert divergence is None, divergence
        assert r.seq == wh.events


def test_same_seed_same_bytes():
    a, counts = run_to_bytes(events=2000, seed=7, workers=3)
    b, _ = run_to_bytes(events=2000, seed=7, workers=3)
    c, _ = run_to_bytes(events=2000, seed=8, workers=3)
    assert a == b
    assert a != c
    assert counts["events"] == 2000
    assert a.count(b'"kind":"step"') == 2000


class SlowStore(dict):
    """``WorkerState.data`` whose stores take longer than the 5 ms after which
    ``_put_key_in_memory`` notes a ``disk-write``: a spill, or a loaded box."""

    def __init__(self) -> None:
        super().__init__()
        self.stores = 0

    def __setitem__(self, key, value) -> None:
        self.stores += 1
        time.sleep(0.006)
        super().__setitem__(key, value)


def slow_run(seed: int) -> tuple[bytes, int]:
    buf = io.BytesIO()
    sim = Simulation(LineWriter(buf), seed=seed, workers=2)
    stores = [SlowStore() for _ in sim.workers]
    for w, store in zip(sim.workers, stores):
        w.ws.data = store
    try:
        sim.run(400)
    finally:
        sim.close()
    return buf.getvalue(), sum(s.stores for s in stores)


def test_same_seed_same_bytes_with_a_slow_store():
    """The state machine times its own stores with ``time()``; in a simulation
    that clock is the simulated one, on which a store takes no time."""
    a, stores = slow_run(7)
    b, _ = slow_run(7)
    assert stores > 20  # the slow stores did happen, in the state machine
    assert a == b
    # a store takes no simulated time, so none was long enough to be noted
    assert b"disk-write" not in a
    assert b'"TaskFinishedMsg"' in a


def test_every_fault_kind_is_in_the_log(faulty_log):
    path, counts = faulty_log
    log = replay.open(path)
    classes = Counter()
    for w in log.log.workers:
        classes.update(w.event_counts)
    for kind, cls in FAULT_EVENTS.items():
        assert counts["faults"].get(kind, 0) > 0, kind
        assert classes[cls] > 0, cls
    assert counts["faults"]["missing"] > 0
    for cls in ("ComputeTaskEvent", "ExecuteSuccessEvent", "GatherDepSuccessEvent", "FreeKeysEvent",
                "RetryBusyWorkerEvent", "UnpauseEvent", "FindMissingEvent", "RefreshWhoHasEvent"):
        assert classes[cls] > 0, cls
    assert classes == Counter(counts["event_counts"])


def test_faults_take_the_state_machine_where_they_should(faulty_log):
    """Replay the simulated log into a real WorkerState and check each fault's effect."""
    path, _ = faulty_log
    seen: Counter = Counter()
    for wh in replay.open(path).workers:
        r = wh.replayer()
        ws = r.ws
        busy_since: set[str] = set()  # peers answered busy, not retried yet
        paused = False
        for call in wh.calls():
            assert len(call.events) == 1  # the simulation hands over one event at a time
            (ev,) = call.events
            cls = type(ev).__name__
            in_flight = {w: set(keys) for w, keys in ws.in_flight_workers.items()}
            ready_before = len(ws.ready)
            executing_before = set(ws.executing)
            missing_before = bool(ws.missing_dep_flight)
            instructions = r.apply(call).instructions
            names = Counter(type(i).__name__ for i in instructions)

            if cls == "GatherDepBusyEvent":
                busy_since.add(ev.worker)
                assert names["RetryBusyWorkerLater"] == 1
            elif cls == "RetryBusyWorkerEvent":
                busy_since.discard(ev.worker)
                assert ev.worker not in ws.busy_workers
                seen["busy-until-retry"] += 1
            for peer in busy_since:
                assert peer in ws.busy_workers, (peer, call.first)

            if cls == "GatherDepSuccessEvent":
                for key in in_flight[ev.worker] - ev.data.keys():
                    ts = ws.tasks.get(key)
                    if ts is None or ts.state == "released":
                        continue  # no longer wanted while in flight
                    assert ts.state in ("fetch", "flight", "missing"), ts
                    assert ev.worker not in ts.who_has or ts.coming_from != ev.worker
                    seen[f"lacking-key-{ts.state}"] += 1
                    seen["lacking-key"] += 1
            elif cls in ("GatherDepNetworkFailureEvent", "RemoveWorkerEvent"):
                assert not ws.has_what.get(ev.worker)
                assert all(ev.worker not in ts.who_has for ts in ws.tasks.values())
                seen[cls] += 1
            elif cls == "PauseEvent":
                paused = True
                assert not ws.running
            elif cls == "UnpauseEvent":
                paused = False
                assert ws.running
                if ready_before and len(executing_before) < ws.nthreads:
                    assert names["Execute"] > 0
                    seen["unpause-executes"] += 1
            elif cls == "ExecuteFailureEvent":
                ts = ws.tasks[ev.key]
                if ts.state == "error":
                    assert names["TaskErredMsg"] == 1
                    seen[cls] += 1
            elif cls == "RescheduleEvent":
                assert names["RescheduleMsg"] == 1
                ts = ws.tasks.get(ev.key)
                assert ts is None or ts.state == "released"
                seen[cls] += 1
            elif cls == "SecedeEvent":
                if ws.tasks[ev.key].state == "long-running":
                    assert names["LongRunningMsg"] == 1
                    seen[cls] += 1
            elif cls == "StealRequestEvent":
                (response,) = [i for i in instructions if type(i).__name__ == "StealResponseMsg"]
                if response.state in ("ready", "waiting", "constrained"):
                    ts = ws.tasks.get(ev.key)
                    assert ts is None or ts.state == "released"
                    seen["stolen"] += 1
            elif cls == "AcquireReplicasEvent":
                for key in ev.who_has:
                    assert ws.tasks[key].state in ("fetch", "flight", "memory", "missing")
                seen[cls] += 1
            elif cls == "RemoveReplicasEvent":
                for key in ev.keys:
                    ts = ws.tasks.get(key)
                    assert ts is None or ts.state != "memory"
                seen[cls] += 1
            elif cls == "FindMissingEvent" and missing_before:
                assert names["RequestRefreshWhoHasMsg"] == 1
                seen["find-missing-asks"] += 1
            elif cls == "RefreshWhoHasEvent":
                for key, holders in ev.who_has.items():
                    ts = ws.tasks.get(key)
                    if ts is not None and set(holders) - {ws.address}:
                        assert ts.state != "missing", ts
                seen[cls] += 1

            if paused:
                # a paused worker starts nothing: ready tasks stay ready
                assert not names["Execute"] and not names["GatherDep"]
                assert ws.executing <= executing_before
                if ws.ready:
                    seen["ready-while-paused"] += 1
    for check in (
        "busy-until-retry", "lacking-key", "GatherDepNetworkFailureEvent", "RemoveWorkerEvent",
        "unpause-executes", "ExecuteFailureEvent", "RescheduleEvent", "SecedeEvent", "stolen",
        "AcquireReplicasEvent", "RemoveReplicasEvent", "find-missing-asks", "RefreshWhoHasEvent",
        "ready-while-paused",
    ):
        assert seen[check] > 0, (check, seen)


def test_live_tasks_stay_bounded():
    sim = Simulation(LineWriter(io.BytesIO()), seed=3, workers=2, window=50)
    try:
        sim.run(8000)
    finally:
        sim.close()
    assert sim.generated > 5 * sim.max_live  # the window rolled many times
    assert sim.live <= sim.max_live
    assert len(sim.by_key) == sim.live
    for w in sim.workers:
        assert len(w.ws.tasks) <= 2 * sim.max_live


def test_a_peer_that_is_always_busy():
    """"What if this peer were busy": only it answers busy, the cluster carries on."""
    buf = io.BytesIO()
    sim = Simulation(LineWriter(buf), seed=5, workers=2, faults=Faults.none())
    slow = sim.peers[0].address
    sim.faults = replace(Faults.none(), peer_busy={slow: 1.0})
    try:
        counts = sim.run(3000)
    finally:
        sim.close()
    busy_from = Counter()
    served_by = Counter()
    for line in buf.getvalue().splitlines():
        rec = orjson.loads(line)
        ev = rec.get("event") or {}
        if ev.get("cls") == "GatherDepBusyEvent":
            busy_from[ev["worker"]] += 1
        elif ev.get("cls") == "GatherDepSuccessEvent" and ev["data"]:
            served_by[ev["worker"]] += 1
    assert set(busy_from) == {slow}
    assert served_by[slow] == 0
    assert sum(served_by.values()) > 0
    assert counts["finished"] > 0


def test_faults_spec():
    f = Faults.parse("none,busy=0.5,missing")
    assert f.busy == 0.5
    assert f.missing == Faults().missing
    assert f.network == 0.0 and f.pause == 0.0
    assert Faults.parse("default") == Faults()
    with pytest.raises(ValueError, match="unknown fault 'bogus'"):
        Faults.parse("bogus=1")
    with pytest.raises(ValueError, match="not a probability"):
        Faults.parse("busy=2")


def test_cli_reexecutes_with_a_fixed_hash_seed_and_writes_the_same_log(tmp_path):
    out = str(tmp_path / "sim.jsonl.gz")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "DASK_REPLAY_SEED_REEXEC")}
    p = subprocess.run(
        [sys.executable, "-m", "cli", "simulate", "--events", "1500", "--seed", "3", "--json", "-o", out],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert orjson.loads(p.stdout)["events"] == 1500
    with gzip.open(out, "rb") as f:
        written = f.read()
    header = orjson.loads(written.split(b"\n", 1)[0])
    assert header["hash_seed"] == "6640" and header["deterministic"] is True
    # this test process runs with the same seed: the in-process run is identical
    expected, _ = run_to_bytes(events=1500, seed=3)
    assert written == expected


def test_cli_rejects_a_bad_fault_spec(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "cli", "simulate", "--events", "10", "--faults", "busy=x",
         "-o", str(tmp_path / "x.jsonl")],
        cwd=ROOT, capture_output=True, timeout=120,
    )
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--faults" in lines[0] and "Traceback" not in lines[0]
