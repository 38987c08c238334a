"""The index of a replay: the cost of building it, its size, and the time of
views answered from it, each side by side with what it replaces.

- indexing pass / bare ``handle_stimulus`` on the same events (one worker);
- index size / log size;
- peak RSS while indexing, above the replayed final state's;
- a fresh CLI process answering load, state, diff, story and why from the
  index (wall time, median), and inside a warm process (the stepper's case).

    python benchmarks/index.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from _common import ROOT, bare_seconds, ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402


def _peak_rss_mb(code: str) -> float:
    """Peak RSS of a fresh process running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        cwd=ROOT, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="6640"))
    return int(out.stdout.split()[-1]) / 1024


def measure_build(path: str) -> dict:
    """Build the index in this process, bare replay of the same workers
    alongside; then the peak RSS of building, against that of a replay to
    the end (the final state), each in a fresh process."""
    from replay.index import build

    history = replay.open(path)
    bare = sum(bare_seconds(w) for w in history.workers)
    t = time.perf_counter()
    out = build(history)
    seconds = time.perf_counter() - t
    events = sum(w.events for w in history.workers)
    final = _peak_rss_mb(f"import replay; h = replay.open({path!r}); [w.state_at(None) for w in h.workers]")
    indexing = _peak_rss_mb(f"import replay; from replay.index import build; "
                            f"build(replay.open({path!r}), {out + '.rss'!r})")
    os.unlink(out + ".rss")
    return {
        "events": events, "bare_s": bare, "index_s": seconds, "ratio": seconds / bare,
        "index_bytes": os.path.getsize(out), "log_bytes": os.path.getsize(path),
        "size_ratio": os.path.getsize(out) / os.path.getsize(path),
        "rss_growth_mb": indexing - final,
    }


def _cli(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, REPLAY_INDEX="required"))
    return time.perf_counter() - t


def measure_queries(path: str, repeats: int = 5, seed: int = 0) -> dict:
    """Fresh CLI processes against a current index (REPLAY_INDEX=required: a
    stale or missing index fails instead of replaying), and the same views in
    this process."""
    from replay.index import Index

    index = Index.open(path)
    if index is None:
        raise ValueError(f"{path}: no current index; build it first")
    rng = random.Random(seed)
    w = max(index.workers, key=lambda w: w.events)
    steps = [rng.randint(1, w.events) for _ in range(repeats)]
    key = next(iter(w.frozen(w.events // 2).ws.tasks), None)
    from replay.literal import key_text

    cold: dict[str, list[float]] = {}
    for step in steps:
        for name, args in {
            "load": ["load", path],
            "state": ["state", path, "-w", w.address, "--at", str(step)],
            "diff": ["diff", path, f"{max(0, step - 1000)}..{step}", "-w", w.address],
            "story": ["story", path, key_text(key), "-w", w.address, "--at", str(step)],
            "why": ["why", path, "-w", w.address, "--at", str(step)],
        }.items():
            cold.setdefault(name, []).append(_cli(args))
    warm: dict[str, list[float]] = {}
    for step in steps:
        for name, fn in {
            "state": lambda: w.state(step),
            "diff": lambda: w.diff(step - 1, step),
            "why": lambda: w.why(step),
            "story": lambda: w.key_story(step, key),
        }.items():
            t = time.perf_counter()
            try:
                fn()
            except LookupError:  # the key not seen by then: still a full query
                pass
            warm.setdefault(name, []).append(time.perf_counter() - t)
    return {
        "cold_s": {k: statistics.median(v) for k, v in cold.items()},
        "warm_ms": {k: statistics.median(v) * 1e3 for k, v in warm.items()},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    path = a.log or simulated_log(a.events)
    b = measure_build(path)
    print(f"{b['events']} events: indexing {b['index_s']:.1f} s, bare handle_stimulus {b['bare_s']:.1f} s: "
          f"{b['ratio']:.2f}x (target <= 1.3x)")
    print(f"index {b['index_bytes'] / 1e6:.0f} MB, log {b['log_bytes'] / 1e6:.0f} MB: "
          f"{b['size_ratio']:.2f}x (target <= 0.5x); peak RSS indexing - replaying to the end: "
          f"{b['rss_growth_mb']:.0f} MB (target <= 300 MB)")
    q = measure_queries(path, a.repeats)
    print("fresh CLI process, median: " + ", ".join(f"{k} {v:.2f} s" for k, v in q["cold_s"].items())
          + "  (target <= 0.5 s)")
    print("warm process, median: " + ", ".join(f"{k} {v:.1f} ms" for k, v in q["warm_ms"].items())
          + "  (target <= 20 ms)")
