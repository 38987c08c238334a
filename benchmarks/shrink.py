"""Shrinking a long stuck log: events before and after, replays run, seconds.

The log is a simulated single-worker run of ``--events`` stimuli: the
simulation stops at its event budget with transfers in flight and tasks
waiting for them, exactly the state a peer that never answers leaves behind.
Without a predicate ``replay shrink`` calls that a normal wait; ``--stuck``
(the stuck task that best explains the others) must reduce it to a 1-minimal
reproducer, checked in fresh interpreters under dask's own hashing as a test
would be written; 1-minimality is checked here, outside the timing.

    python benchmarks/shrink.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import os
import resource
import time

from _common import ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402
from replay import shrinker as s  # noqa: E402


def measure(path: str) -> dict:
    (wh,) = replay.open(path).workers[:1]
    start, cpu = time.perf_counter(), _cpu()
    result = s.shrink(wh, predicate=s.StuckPredicate())
    seconds, cpu_seconds = time.perf_counter() - start, _cpu() - cpu
    predicate = s.StuckPredicate(result.outcome.key)
    minimal = all(
        predicate.observe(s.replay_stimuli(result.header, result.stimuli[:i] + result.stimuli[i + 1:]))
        != result.fingerprint
        for i in range(len(result.stimuli))
    )
    return {
        "events_before": result.original_events,
        "events_after": result.narrative.shrunk_events,
        "replays": result.replays,
        "passes": result.passes,
        "seconds": seconds,
        # this process and the hash check's interpreters: what a loaded box does not inflate
        "cpu_seconds": cpu_seconds,
        "load": os.getloadavg()[0],
        "one_minimal": minimal,
        "fingerprint": repr(result.fingerprint),
    }


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=100_000)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events))
    print(f"{m['events_before']} events -> {m['events_after']} ({m['fingerprint']}), "
          f"{m['passes']} passes, {m['replays']} replays, {m['seconds']:.1f} s wall, "
          f"{m['cpu_seconds']:.1f} s CPU (load {m['load']:.1f}), "
          f"1-minimal: {m['one_minimal']}  (target: 1-minimal in <= 60 s)")
