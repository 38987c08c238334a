"""Peak RSS of a whole replay minus the RSS of the final state alone.

Replay streams the log, so its peak should be the final state plus a small
working set. After the replay, everything but the final ``WorkerState`` is
dropped and freed memory is handed back to the OS before measuring.

    python benchmarks/replay_memory.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import resource

from _common import ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(path: str) -> dict:
    base = _rss_mb()
    history = replay.open(path)
    w = max(history.workers, key=lambda w: w.events)
    events = w.events
    ws = w.state_at(events)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del history, w
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    final = _rss_mb()
    return {
        "events": events,
        "tasks": len(ws.tasks),
        "baseline_mb": base,
        "peak_mb": peak,
        "final_state_mb": final,
        "overhead_mb": peak - final,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events))
    print(f"{m['events']} events, {m['tasks']} tasks at the end: peak RSS {m['peak_mb']:.0f} MB, "
          f"with only the final state {m['final_state_mb']:.0f} MB (interpreter alone {m['baseline_mb']:.0f} MB)")
    print(f"peak - final state = {m['overhead_mb']:.0f} MB  (target <= 200 MB)")
