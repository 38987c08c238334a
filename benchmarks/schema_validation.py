"""``replay check``'s pass versus a raw ``orjson.loads`` pass over the same file.

All stream the file line by line in this process, alternated, best of N (CPU
time of this process). Beside the ratio (the target): the same check with the
compiled schema turned off (every line the pydantic way, as before it), and,
each alone over the same lines, the scan that every read command runs and the
compiled schema's parse (:func:`schemas.compiled.checked`).

    python benchmarks/schema_validation.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

from _common import simulated_log

import orjson  # noqa: E402

from replay.log import ClusterLog  # noqa: E402
from schemas import compiled  # noqa: E402


def raw_pass(path: str) -> None:
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)


def compiled_pass(path: str) -> None:
    checked = compiled.checked
    with open(path, "rb") as f:
        for line in f:
            checked(line)


def pydantic_check(path: str) -> ClusterLog:
    """``replay check`` with the compiled schema answering no line."""
    with mock.patch.object(compiled, "checked", lambda line: None):
        return ClusterLog.open(path, validate=True)


def _timed(f, *args) -> tuple[float, float, object]:
    c, t = time.process_time(), time.perf_counter()
    out = f(*args)
    return time.process_time() - c, time.perf_counter() - t, out


def measure(path: str, repeats: int = 3) -> dict:
    cpu: dict[str, list[float]] = {k: [] for k in ("raw", "check", "pydantic", "scan", "compiled")}
    wall: dict[str, list[float]] = {k: [] for k in cpu}
    runs = {
        "raw": raw_pass,
        "check": lambda p: ClusterLog.open(p, validate=True),
        "pydantic": pydantic_check,
        "scan": ClusterLog.open,
        "compiled": compiled_pass,
    }
    for _ in range(repeats):
        for name, run in runs.items():
            c, w, out = _timed(run, path)
            cpu[name].append(c)
            wall[name].append(w)
            if name == "check":
                log = out
            elif name == "pydantic":
                assert out.checked == 0
    base, base_wall = min(cpu["raw"]), min(wall["raw"])
    return {
        "lines": log.lines,
        #: lines the compiled schema answered (the rest went the pydantic way)
        "compiled_lines": log.checked,
        "raw_s": base,
        "check_s": min(cpu["check"]),
        "ratio": min(cpu["check"]) / base,
        "wall_ratio": min(wall["check"]) / base_wall,
        "pydantic_s": min(cpu["pydantic"]),
        "pydantic_ratio": min(cpu["pydantic"]) / base,
        "scan_ratio": min(cpu["scan"]) / base,
        "compiled_ratio": min(cpu["compiled"]) / base,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events), a.repeats)
    print(f"{m['lines']} lines ({m['compiled_lines']} answered by the compiled schema), CPU: "
          f"orjson.loads {m['raw_s']:.2f} s, replay check {m['check_s']:.2f} s, "
          f"replay check the pydantic way {m['pydantic_s']:.2f} s")
    print(f"check / raw = {m['ratio']:.2f}x CPU, {m['wall_ratio']:.2f}x wall  (target <= 1.5x); "
          f"the pydantic way {m['pydantic_ratio']:.2f}x; alone, each / raw: scan {m['scan_ratio']:.2f}x, "
          f"compiled parse {m['compiled_ratio']:.2f}x")
