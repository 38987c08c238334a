"""The replay loop collects garbage rarely, and gives the process its collector back.

Every replay goes through ``Replayer.feed``; while one runs, the collector's
first threshold is raised (the default runs it every few events), and the
thresholds the process had come back when the last replay ends, however
replays nest, interleave or are abandoned.
"""
from __future__ import annotations

import gc

import pytest

import replay
from replay.collector import RARE_GEN0


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


@pytest.fixture
def worker(fixture_path):
    return replay.open(fixture_path("stuck-6705.jsonl")).worker(1)


def test_threshold_raised_while_replaying_and_restored(thresholds, worker):
    seen = set()
    r = worker.replayer()
    for _ in r.feed(worker.calls()):
        seen.add(gc.get_threshold())
    assert seen == {(RARE_GEN0, 10, 10)}
    assert r.seq == worker.events
    assert gc.get_threshold() == (700, 10, 10)


def test_interleaved_and_abandoned_replays_restore(thresholds, worker):
    a = worker.replayer().feed(worker.calls())
    b = worker.replayer().feed(worker.calls())
    next(a)
    next(b)
    assert gc.get_threshold()[0] == RARE_GEN0
    a.close()  # the first to start ends first: the other still replays
    assert gc.get_threshold()[0] == RARE_GEN0
    for _ in b:
        pass
    assert gc.get_threshold() == (700, 10, 10)


def test_verify_collects_rarely_too(thresholds, worker, monkeypatch):
    seen = set()
    real = type(worker.replayer()).verify

    def noting(self, call):
        seen.add(gc.get_threshold()[0])
        return real(self, call)

    monkeypatch.setattr(type(worker.replayer()), "verify", noting)
    divergence, _ = worker.verify()
    assert divergence is None
    assert seen == {RARE_GEN0}
    assert gc.get_threshold() == (700, 10, 10)


def test_automatic_collection_off_stays_off(worker):
    saved = gc.get_threshold()
    gc.set_threshold(0)
    try:
        for _ in worker.replayer().feed(worker.calls()):
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*saved)


def test_a_slow_store_on_the_replaying_machine_leaves_no_trace(fixture_path, monkeypatch):
    """dask times storing a value itself and, past 5 ms, adds a "disk-write"
    to the task's startstops, which its TaskFinishedMsg carries. A replay on
    a busy machine must not: the state machine's clock answers the recorded
    time, so each replayed instruction is the recording's however slow this
    machine is (and every path shows the same one)."""
    import time

    from distributed import worker_state_machine as wsm

    from replay.engine import RecordedData

    setitem = RecordedData.__setitem__

    def slow(self, key, value):
        time.sleep(0.006)
        setitem(self, key, value)

    monkeypatch.setattr(RecordedData, "__setitem__", slow)
    wh = max(replay.open(fixture_path("stuck-flight.jsonl")).workers, key=lambda w: w.events)
    r = wh.replayer()
    finished = []
    for call in wh.calls():
        finished += [i for i in r.apply(call).instructions if isinstance(i, wsm.TaskFinishedMsg)]
    assert finished, "the log stores a computed value"
    actions = [[s["action"] for s in i.startstops] for i in finished]
    assert all("disk-write" not in a for a in actions), actions
    assert wsm.time is not r._clock, "the real clock is back once a call is replayed"
