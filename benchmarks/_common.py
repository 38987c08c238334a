"""Shared helpers of the benchmark scripts."""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def ensure_seed() -> None:
    """Re-execute with the hash seed the benchmark logs are recorded with
    (nanny workers' and ``replay simulate``'s): replay is exact only then."""
    from replay.determinism import NANNY_SEED, reexec_with_seed

    reexec_with_seed(NANNY_SEED)


def simulated_log(events: int, seed: int = 1) -> str:
    """A simulated cluster log of about ``events`` events, cached under /tmp."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dask-replay-bench-{events}-{seed}.jsonl")
    if not os.path.exists(path):
        import subprocess

        subprocess.run(
            [sys.executable, "-m", "cli", "simulate", "--events", str(events),
             "--seed", str(seed), "--workers", "1", "-o", path + ".tmp"],
            check=True, cwd=ROOT,
        )
        os.replace(path + ".tmp", path)
    return path


def decoded(worker) -> list:
    """A worker's calls decoded once: (resources changes, events) each.
    Handlers only read events, so one decoded copy serves every round."""
    return [(call.resources, call.events) for call in worker.calls()]


def bare_times(worker, calls: list | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of ``handle_stimulus`` alone on a fresh
    ``WorkerState``, fed ``calls`` (:func:`decoded`, decoded before either
    clock starts) in a tight loop: what a replay's overhead is measured against."""
    calls = decoded(worker) if calls is None else calls
    r = worker.replayer()
    ws = r.ws
    t, c = time.perf_counter(), time.process_time()
    for res, events in calls:
        for change in res:
            r.set_resources(change[0], change[1])
        ws.handle_stimulus(*events)
    return time.perf_counter() - t, time.process_time() - c
