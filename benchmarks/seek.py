"""Seek latency: random positions of a large log, in a warm process and from the CLI.

Warm: one process prepares a :class:`replay.seek.Seeker` (one linear pass that
leaves forked snapshots behind), then asks for the state view at random
steps. Cold: ``replay state LOG --at POS --json`` started afresh.

    python benchmarks/seek.py [LOG] [--events N] [--seeks K]
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

from _common import ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402
from replay.seek import Seeker  # noqa: E402


def fingerprint(r) -> tuple:
    ws = r.ws
    return r.seq, len(ws.tasks), sum(1 for ts in ws.tasks.values() if ts.state == "memory")


def _private_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty")) / 1024


def measure_warm(path: str, seeks: int = 50, seed: int = 0, max_snapshots: int = 128) -> dict:
    w = max(replay.open(path).workers, key=lambda w: w.events)
    # each snapshot is a process with a few descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rng = random.Random(seed)
    with Seeker(w, max_snapshots=max_snapshots) as s:
        t = time.perf_counter()
        s.prepare()
        prepare = time.perf_counter() - t
        lat = []
        for _ in range(seeks):
            pos = rng.randint(0, w.events)
            t = time.perf_counter()
            got = s.view(pos, fingerprint)
            lat.append(time.perf_counter() - t)
            assert got[0] == pos
        snaps = len(s.snapshots)
        snap_mb = sum(_private_mb(pid) for _, _, pid in s.snapshots)
        every = s.every
    return {
        "events": w.events,
        "prepare_s": prepare,
        "snapshots": snaps,
        "every": every,
        "snapshots_mb": snap_mb,
        "median_ms": statistics.median(lat) * 1e3,
        "p95_ms": sorted(lat)[int(0.95 * (len(lat) - 1))] * 1e3,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seeks", type=int, default=50)
    ap.add_argument("--max-snapshots", type=int, default=128)
    a = ap.parse_args()
    path = a.log or simulated_log(a.events)
    m = measure_warm(path, a.seeks, max_snapshots=a.max_snapshots)
    print(f"{m['events']} events: first pass {m['prepare_s']:.1f} s, {m['snapshots']} snapshots "
          f"(one every {m['every']} steps) holding {m['snapshots_mb']:.0f} MB")
    print(f"warm seek: median {m['median_ms']:.1f} ms, p95 {m['p95_ms']:.1f} ms  (target <= 50 ms)")
