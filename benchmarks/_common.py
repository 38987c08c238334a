"""Shared helpers of the benchmark scripts."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def ensure_seed(seed: str = "6640") -> None:
    """Re-execute with the recorded hash seed: replay is exact only then."""
    if os.environ.get("PYTHONHASHSEED") != seed:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
                  dict(os.environ, PYTHONHASHSEED=seed))


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
