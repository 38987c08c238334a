"""``replay step`` latencies on a large simulated log, measured in one run.

After the first pass (one replay that leaves forked snapshots behind), from
random positions: step back one step, jump back 1,000 steps, jump to a random
step, and reverse-continue to a breakpoint 100,000 steps back; each the time
to the step view on screen (the view computed, not drawn). Also the first
pass and the memory the snapshots hold (the sum of their proportional set
sizes: pages shared between snapshots counted once).

With ``--first-open``, the log as ``replay step`` first opens it: no index
(the log is linked into a fresh folder, so no index of another run applies),
the stepper's first pass, the background indexer started as the command
starts it, and the first answer (step 0's view); then far jumps and
reverse-continues over 100,000 steps at once, while the indexer runs (forks
answer), and again once it has written the index (the stepper takes it for
far seeks). Each seek says which path answered.

    python benchmarks/step.py [LOG] [--events N] [--repeats K] [--memory MB] [--first-open]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time

from _common import ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402
from replay.index import index_in_background, index_path  # noqa: E402
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


def _far_seeks(s: Stepper, rng: random.Random, repeats: int) -> dict:
    """Medians of random far jumps and of reverse-continues to a breakpoint
    100,000 steps back, each timed to the step view (wall, and CPU: this
    process's and that of the fork that replayed, whose wall time a busy
    machine stretches), and how many of each the index answered (the rest: forks)."""
    n = s.last
    wall: dict = {"jump": [], "reverse": []}
    cpu: dict = {"jump": [], "reverse": []}
    by_index = {"jump": 0, "reverse": 0}

    def at(pos: int, kind: str) -> None:
        s.go(pos)
        indexed = s.far()
        by_index[kind] += indexed
        s.seeker.seek_cpu = 0.0
        s.view()
        if not indexed:
            cpu_fork[0] = s.seeker.seek_cpu

    cpu_fork = [0.0]

    def timed(kind: str, fn) -> None:
        cpu_fork[0] = 0.0
        c, t = time.process_time(), time.perf_counter()
        fn()
        wall[kind].append((time.perf_counter() - t) * 1e3)
        cpu[kind].append((time.process_time() - c + cpu_fork[0]) * 1e3)

    last = 0
    for _ in range(repeats):
        p = rng.randint(1, n)
        while abs(p - last) < n // 4:  # far: no snapshot a previous seek left nearby
            p = rng.randint(1, n)
        last = p
        timed("jump", lambda: at(p, "jump"))
    for _ in range(max(repeats // 2, 2)):
        p = rng.randint(min(100_000 + 1, n), n)
        target = max(p - 100_000, 1)
        s.breakpoints[:] = []
        s.add_break(f"stimulus:{s.scan.sids.names[s.scan.sid[target]]}")
        s.go(p)  # standing there: the time to the hit's view is what is measured

        def reverse_continue() -> None:
            hit = s.next_hit(False)
            at(hit[0], "reverse")

        timed("reverse", reverse_continue)
    med = statistics.median
    return {"jump_ms": med(wall["jump"]), "jump_max_ms": max(wall["jump"]), "jump_cpu_ms": med(cpu["jump"]),
            "jump_cpu_max_ms": max(cpu["jump"]),
            "reverse_100k_ms": med(wall["reverse"]), "reverse_max_ms": max(wall["reverse"]),
            "reverse_cpu_ms": med(cpu["reverse"]),
            "jumps": len(wall["jump"]), "reverses": len(wall["reverse"]),
            "jump_by_index": by_index["jump"], "reverse_by_index": by_index["reverse"]}


def measure_first_open(path: str, repeats: int = 8, memory_mb: int = 2048, seed: int = 0,
                       after_index: bool = True) -> dict:
    """``replay step`` on a log opened for the first time (see the module's
    docstring): the first answer's time, then far seeks while the background
    indexer runs, then (``after_index``) once its index is written."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    folder = tempfile.mkdtemp(prefix="dask-replay-first-open-")
    log = os.path.join(folder, os.path.basename(path))
    os.symlink(os.path.abspath(path), log)
    rng = random.Random(seed)
    try:
        t, c = time.perf_counter(), time.process_time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        history = replay.open(log)
        wh = max(history.workers, key=lambda w: w.events)
        s = Stepper(history, wh.address, budget_mb=memory_mb)
        # as the command does: once the first pass is done, when no index is current
        assert s.indexed() is None, "a first-opened log has no index"
        pid = index_in_background(log)
        s.go(0)
        s.view()
        answered = time.perf_counter()
        reader = resource.getrusage(resource.RUSAGE_CHILDREN)  # the first pass's read-ahead, waited for
        out = {"events": s.last, "first_answer_s": answered - t, "load": os.getloadavg()[0],
               "first_answer_cpu_s": time.process_time() - c, "first_pass_reader_cpu_s":
               reader.ru_utime + reader.ru_stime - before.ru_utime - before.ru_stime, "snapshots": len(s.seeker.snapshots),
               "every": s.seeker.every, "snapshots_mb": s.seeker.memory_mb(),
               "before": _far_seeks(s, rng, repeats)}
        out["before"]["after_s"] = time.perf_counter() - answered
        print(f"first answer {out['first_answer_s']:.1f} s; before the index: {out['before']}",
              file=sys.stderr, flush=True)  # a long wait for the indexer may follow
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        _, status = os.waitpid(pid, 0)
        indexer = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["index_ok"] = status == 0
        out["index_written_s"] = time.perf_counter() - answered
        out["indexer_cpu_s"] = (indexer.ru_utime + indexer.ru_stime) - (children.ru_utime + children.ru_stime)
        if after_index and status == 0:
            out["after"] = _far_seeks(s, rng, repeats)
        s.close()
        return out
    finally:
        for p in (index_path(log), index_path(log) + ".lock", index_path(log) + ".stderr"):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--memory", type=int, default=2048, help="the snapshots' memory bound, MB")
    ap.add_argument("--first-open", action="store_true",
                    help="the log opened for the first time, while the background indexer runs")
    a = ap.parse_args()
    if a.first_open:
        m = measure_first_open(a.log or simulated_log(a.events), a.repeats, a.memory)
        print(f"{m['events']} steps: first answer {m['first_answer_s']:.1f} s ({m['snapshots']} snapshots, "
              f"every {m['every']} steps, {m['snapshots_mb']:.0f} MB; load {m['load']:.1f}); CPU "
              f"{m['first_answer_cpu_s']:.0f} s and its reader {m['first_pass_reader_cpu_s']:.0f} s; index written {m['index_written_s']:.0f} s later "
              f"(indexer CPU {m['indexer_cpu_s']:.0f} s, ok: {m['index_ok']})")
        for phase in ("before", "after"):
            if phase in m:
                p = m[phase]
                print(f"{phase} the index: far jump median {p['jump_ms']:.0f} ms wall, {p['jump_cpu_ms']:.0f} ms CPU "
                      f"(max {p['jump_max_ms']:.0f} / {p['jump_cpu_max_ms']:.0f}; {p['jump_by_index']}/{p['jumps']} "
                      f"by the index; target <= 500 ms), reverse-continue 100k {p['reverse_100k_ms']:.0f} ms wall, "
                      f"{p['reverse_cpu_ms']:.0f} ms CPU (max {p['reverse_max_ms']:.0f}; {p['reverse_by_index']}/"
                      f"{p['reverses']} by the index; target <= 2,000 ms)")
        raise SystemExit(0)
    m = measure(a.log or simulated_log(a.events), a.repeats, a.memory)
    print(f"{m['events']} steps: first pass {m['first_pass_s']:.0f} s; {m['snapshots']} snapshots holding "
          f"{m['snapshots_mb']:.0f} MB (bound {m['memory_bound_mb']} MB)")
    print(f"median: step back 1 {m['back1_ms']:.1f} ms, jump back 1,000 {m['back1000_ms']:.1f} ms (targets <= 50 ms); "
          f"random jump {m['jump_ms']:.0f} ms (p95 {m['jump_p95_ms']:.0f}; target <= 500 ms); "
          f"reverse-continue 100,000 back {m['reverse_100k_ms']:.0f} ms (target <= 2,000 ms)")
