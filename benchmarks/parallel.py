"""Replaying a 4-worker log side by side: speed-up over one worker after another.

Three runs of ``replay verify`` on the same simulated log, in this order, each
a fresh CLI process: serial, ``--jobs 2`` (forked processes) and
``--scheduler`` on a 2-worker ``LocalCluster``; their JSON must be equal.

    python benchmarks/parallel.py [--events N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import ROOT

WORKERS = 4


def four_worker_log(events: int) -> str:
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dask-replay-bench-{events}-w{WORKERS}.jsonl")
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "cli", "simulate", "--events", str(events), "--seed", "3",
                        "--workers", str(WORKERS), "-o", path + ".tmp"], check=True, cwd=ROOT,
                       capture_output=True)
        os.replace(path + ".tmp", path)
    return path


def _verify(path: str, *extra: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli", "verify", path, "--json", *extra], cwd=ROOT,
                         capture_output=True, env=dict(os.environ, REPLAY_INDEX="off"))
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr.decode())
    return time.perf_counter() - t, out.stdout


def measure(events: int = 200_000) -> dict:
    from distributed import LocalCluster

    path = four_worker_log(events)
    serial_s, serial = _verify(path)
    jobs_s, jobs = _verify(path, "--jobs", "2")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        dask_s, on_dask = _verify(path, "--scheduler", cluster.scheduler_address)
    return {
        "events": events, "workers": WORKERS, "serial_s": serial_s, "jobs2_s": jobs_s, "dask2_s": dask_s,
        "jobs2_speedup": serial_s / jobs_s, "dask2_speedup": serial_s / dask_s,
        "same": serial == jobs == on_dask,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    a = ap.parse_args()
    m = measure(a.events)
    print(f"{m['events']} events of {m['workers']} workers: serial {m['serial_s']:.1f} s, "
          f"--jobs 2 {m['jobs2_s']:.1f} s ({m['jobs2_speedup']:.2f}x), "
          f"2-worker LocalCluster {m['dask2_s']:.1f} s ({m['dask2_speedup']:.2f}x); "
          f"results {'equal' if m['same'] else 'DIFFER'}")
