"""The scheduler recorder's cost on a real LocalCluster.

The workload of ``record_overhead.py`` (a graph of a few thousand tasks whose
dependencies cross two nanny workers) runs bare and with
``ClusterRecorder(workers=False)``, which records the scheduler alone, so the
figure is the scheduler's part of the cost. Runs alternate (bare, recorded,
recorded, bare, ...); the figure is the median of the per-pair ratios. The
recorded runs also time the recorder's hooks inside the scheduler (the sum of
their wall time over the transitions recorded) and weigh the log.

    python benchmarks/scheduler_overhead.py [--repeats N] [--tasks N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from operator import add

from _common import ROOT  # noqa: F401  (puts the project on sys.path)

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from record_overhead import graph  # noqa: E402

from replay.scheduler_log import SchedulerLog  # noqa: E402
from replay.scheduler_recorder import SCHEDULER_LOG, ClusterRecorder  # noqa: E402


class TimedRecorder(ClusterRecorder):
    """The recorder, with the wall time of its hooks summed (the scheduler
    runs in this process: LocalCluster's scheduler is local)."""

    spent = 0.0

    def transition(self, *args, **kwargs):
        start = time.perf_counter()
        super().transition(*args, **kwargs)
        TimedRecorder.spent += time.perf_counter() - start


def run_once(leaves: int, record: bool) -> dict:
    logdir = tempfile.mkdtemp(prefix="dask-replay-bench-")
    dsk, (root,) = graph(leaves)
    TimedRecorder.spent = 0.0
    try:
        with dask.config.set({"distributed.scheduler.worker-ttl": None}):
            with LocalCluster(
                n_workers=0, processes=True, threads_per_worker=1,
                dashboard_address="127.0.0.1:0", host="127.0.0.1",
            ) as cluster, Client(cluster) as client:
                if record:
                    client.register_plugin(TimedRecorder(logdir, workers=False))
                cluster.scale(2)
                client.wait_for_workers(2, timeout=60)
                client.get({("w", i): (add, i, 1) for i in range(20)}, [("w", i) for i in range(20)])
                spent_before = TimedRecorder.spent
                start = time.perf_counter()
                result = client.get(dsk, root)
                elapsed = time.perf_counter() - start
                spent = TimedRecorder.spent - spent_before
                assert result == sum(2 * i + 2 for i in range(leaves)), result
        out = {"elapsed": elapsed}
        if record:
            path = os.path.join(logdir, SCHEDULER_LOG)
            log = SchedulerLog.open(path)
            out.update(transitions=len(log.transitions), bytes=os.path.getsize(path), hook_s=spent)
        return out
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def measure(repeats: int = 5, leaves: int = 1024) -> dict:
    bare: list[float] = []
    recorded: list[dict] = []
    for i in range(repeats):
        for record in (False, True) if i % 2 == 0 else (True, False):
            m = run_once(leaves, record)
            (recorded.append(m) if record else bare.append(m["elapsed"]))
    ratios = [r["elapsed"] / b for r, b in zip(recorded, bare)]
    last = recorded[-1]
    hook_us = statistics.median(r["hook_s"] / r["transitions"] * 1e6 for r in recorded)
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "bare": bare,
        "recorded": [r["elapsed"] for r in recorded],
        "tasks": len(graph(leaves)[0]),
        "transitions": last["transitions"],
        "bytes_per_transition": last["bytes"] / last["transitions"],
        "hook_us": hook_us,
        # the hooks' share of the workload's wall time
        "hook_share": statistics.median(r["hook_s"] / r["elapsed"] for r in recorded),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=1024, help="leaves of the graph")
    args = ap.parse_args()
    m = measure(args.repeats, args.tasks)
    print(f"workload: {m['tasks']} tasks on 2 workers; {m['transitions']} scheduler transitions recorded per run")
    for i, (b, r, q) in enumerate(zip(m["bare"], m["recorded"], m["ratios"]), 1):
        print(f"  pair {i}: bare {b:.3f} s, scheduler recorded {r:.3f} s, ratio {q:.3f}")
    print(f"median of pair ratios: {m['ratio']:.3f}x (target <= 1.05x)")
    print(f"recorder hook: {m['hook_us']:.1f} us per transition, {m['hook_share'] * 100:.1f}% of the "
          f"workload's wall time; {m['bytes_per_transition']:.0f} bytes per transition")


if __name__ == "__main__":
    main()
