"""``replay check``'s pass versus a raw ``orjson.loads`` pass over the same file.

Both stream the file line by line in this process, alternated, best of N.
Beside the ratio (the target), what the check's pass is made of, each alone
over the same lines: the scan that every read command runs (order, counts),
the schema (pydantic, per record) and decoding every event as the engine will.

    python benchmarks/schema_validation.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import gc
import time

from _common import simulated_log

import orjson  # noqa: E402

from replay.log import ClusterLog, decode_step  # noqa: E402
from schemas.records import RECORD  # noqa: E402


def raw_pass(path: str) -> None:
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)


def measure(path: str, repeats: int = 3) -> dict:
    raw, check, scan = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        raw_pass(path)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        log = ClusterLog.open(path, validate=True)
        check.append(time.perf_counter() - t)
        t = time.perf_counter()
        ClusterLog.open(path)
        scan.append(time.perf_counter() - t)
    with open(path, "rb") as f:
        records = [orjson.loads(line) for line in f]
    gc.freeze()  # the collector need not walk the records held for these two
    t = time.perf_counter()
    for rec in records:
        RECORD.validate_python(rec)
    schema = time.perf_counter() - t
    t = time.perf_counter()
    for rec in records:
        if rec["kind"] == "step":
            decode_step(path, 0, rec)
    decode = time.perf_counter() - t
    del records
    gc.unfreeze()
    base = min(raw)
    return {
        "lines": log.lines,
        "raw_s": base,
        "check_s": min(check),
        "ratio": min(check) / base,
        "scan_ratio": min(scan) / base,
        "schema_ratio": schema / base,
        "decode_ratio": decode / base,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events), a.repeats)
    print(f"{m['lines']} lines: orjson.loads {m['raw_s']:.2f} s, replay check {m['check_s']:.2f} s")
    print(f"check / raw = {m['ratio']:.2f}x  (target <= 1.5x); alone, each / raw: scan {m['scan_ratio']:.2f}x, "
          f"schema {m['schema_ratio']:.2f}x, decoding {m['decode_ratio']:.2f}x")
