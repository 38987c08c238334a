"""Replay time versus bare ``WorkerState.handle_stimulus`` time on the same events.

Bare: the events are decoded beforehand and fed to a fresh ``WorkerState`` in
a tight loop. Replay: the engine's whole pipeline from the log file (read,
parse, decode, handle). Both in this process, alternated, best of N.

    python benchmarks/replay_overhead.py [LOG] [--repeats N]
"""
from __future__ import annotations

import argparse
import time

from _common import bare_seconds, decoded, ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402


def measure(path: str, repeats: int = 3) -> dict:
    w = max(replay.open(path).workers, key=lambda w: w.events)
    calls = decoded(w)
    bare, full = [], []
    for _ in range(repeats):
        bare.append(bare_seconds(w, calls))
        t = time.perf_counter()
        w.advance(w.replayer(), w.events)
        full.append(time.perf_counter() - t)
    return {
        "events": w.events,
        "bare_s": min(bare),
        "replay_s": min(full),
        "ratio": min(full) / min(bare),
        "bare_us_per_event": min(bare) / w.events * 1e6,
        "replay_us_per_event": min(full) / w.events * 1e6,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events), a.repeats)
    print(f"events {m['events']}: bare handle_stimulus {m['bare_s']:.2f} s "
          f"({m['bare_us_per_event']:.1f} µs/event), replay {m['replay_s']:.2f} s "
          f"({m['replay_us_per_event']:.1f} µs/event)")
    print(f"replay / bare = {m['ratio']:.2f}x  (target <= 1.10x)")
