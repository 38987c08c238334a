"""``replay step`` latencies on a large simulated log, measured in one run.

After the first pass (one replay that leaves forked snapshots behind), from
random positions: step back one step, jump back 1,000 steps, jump to a random
step, and reverse-continue to a breakpoint 100,000 steps back; each the time
to the step view on screen (the view computed, not drawn). Also the first
pass and the memory the snapshots hold (the sum of their proportional set
sizes: pages shared between snapshots counted once).

    python benchmarks/step.py [LOG] [--events N] [--repeats K] [--memory MB]
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
from replay.step import Stepper  # noqa: E402


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except OSError:
        return 0.0


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def measure(path: str, repeats: int = 20, memory_mb: int = 2048, seed: int = 0) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    history = replay.open(path)
    wh = max(history.workers, key=lambda w: w.events)
    rng = random.Random(seed)
    t = time.perf_counter()
    s = Stepper(history, wh.address, budget_mb=memory_mb)
    first_pass = time.perf_counter() - t
    n = s.last

    def at(pos: int) -> None:
        s.go(pos)
        s.view()

    back1, back1000, jump, reverse = [], [], [], []
    for _ in range(repeats):
        p = rng.randint(2000, n)
        jump.append(_timed(lambda: at(p)))
        back1.append(_timed(lambda: at(p - 1)))
        back1000.append(_timed(lambda: at(p - 1 - 1000)))
    for _ in range(max(repeats // 4, 3)):
        p = rng.randint(min(100_000 + 1, n), n)
        target = max(p - 100_000, 1)
        sid = s.scan.sids.names[s.scan.sid[target]]
        s.breakpoints[:] = []
        s.add_break(f"stimulus:{sid}")
        at(p)

        def reverse_continue() -> None:
            hit = s.next_hit(False)
            at(hit[0])

        reverse.append(_timed(reverse_continue))
    snaps = [pid for _, _, pid in s.seeker.snapshots]
    mem = sum(_pss_mb(pid) for pid in snaps)
    s.close()
    return {
        "events": n, "first_pass_s": first_pass, "snapshots": len(snaps), "snapshots_mb": mem,
        "memory_bound_mb": memory_mb,
        "back1_ms": statistics.median(back1), "back1000_ms": statistics.median(back1000),
        "jump_ms": statistics.median(jump), "reverse_100k_ms": statistics.median(reverse),
        "jump_p95_ms": sorted(jump)[int(0.95 * (len(jump) - 1))],
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--memory", type=int, default=2048, help="the snapshots' memory bound, MB")
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events), a.repeats, a.memory)
    print(f"{m['events']} steps: first pass {m['first_pass_s']:.0f} s; {m['snapshots']} snapshots holding "
          f"{m['snapshots_mb']:.0f} MB (bound {m['memory_bound_mb']} MB)")
    print(f"median: step back 1 {m['back1_ms']:.1f} ms, jump back 1,000 {m['back1000_ms']:.1f} ms (targets <= 50 ms); "
          f"random jump {m['jump_ms']:.0f} ms (p95 {m['jump_p95_ms']:.0f}; target <= 500 ms); "
          f"reverse-continue 100,000 back {m['reverse_100k_ms']:.0f} ms (target <= 2,000 ms)")
