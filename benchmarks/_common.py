"""Shared helpers of the benchmark scripts."""
from __future__ import annotations

import os
import sys

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
