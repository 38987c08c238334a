"""Schema validation pass versus a raw ``orjson.loads`` pass over the same file.

    python benchmarks/schema_validation.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import time

from _common import simulated_log

import orjson  # noqa: E402

from schemas.records import RECORD  # noqa: E402


def measure(path: str, repeats: int = 3) -> dict:
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    raw, full = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        for line in lines:
            RECORD.validate_json(line)
        full.append(time.perf_counter() - t)
    return {"lines": len(lines), "raw_s": min(raw), "schema_s": min(full), "ratio": min(full) / min(raw)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events))
    print(f"{m['lines']} lines: orjson.loads {m['raw_s']:.2f} s, schema validation {m['schema_s']:.2f} s")
    print(f"schema / raw = {m['ratio']:.2f}x  (target <= 1.5x)")
