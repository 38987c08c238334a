"""Run every benchmark of the project and print one table.

Each figure is measured side by side in this run; where a ratio applies it is
a ratio of two measurements taken here, not a comparison with a stored number.

    python benchmarks/run.py [--events N] [--quick]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from _common import ROOT, ensure_seed, simulated_log

ensure_seed()


@dataclass
class Row:
    measure: str
    target: str
    run: Callable[[], tuple[str, bool]]


def rows(events: int, quick: bool) -> list[Row]:
    import record_overhead
    import replay_overhead
    import schema_validation
    import seek

    def replay_ratio():
        m = replay_overhead.measure(simulated_log(events), repeats=1 if quick else 2)
        return f"{m['ratio']:.2f}x ({m['replay_us_per_event']:.1f} vs {m['bare_us_per_event']:.1f} µs/event)", m["ratio"] <= 1.10

    def warm_seek():
        m = seek.measure_warm(simulated_log(events), seeks=20 if quick else 50)
        return f"{m['median_ms']:.1f} ms median, {m['p95_ms']:.1f} ms p95", m["median_ms"] <= 50

    def cold_seek():
        m = seek.measure_cold(simulated_log(events), seeks=5)
        return (f"{m['served_s']:.2f} s with replay serve; {m['alone_s']:.1f} s alone",
                m["served_s"] <= 2)

    def schema():
        m = schema_validation.measure(simulated_log(min(events, 200_000)), repeats=1 if quick else 3)
        return f"{m['ratio']:.2f}x ({m['lines']} lines)", m["ratio"] <= 1.5

    def memory():
        # a process of its own, so that its peak RSS is the replay's alone
        out = subprocess.run(
            [sys.executable, "benchmarks/replay_memory.py", simulated_log(events)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
        mb = float(out.rsplit("=", 1)[1].split("MB")[0])
        return f"{mb:.0f} MB", mb <= 200

    def recorder():
        m = record_overhead.measure(repeats=3 if quick else 5)
        return f"{m['ratio']:.3f}x", m["ratio"] <= 1.05

    n = f"{events // 1000}k" if events < 10**6 else f"{events // 10**6}M"
    return [
        Row(f"replay / bare handle_stimulus, {n} events", "<= 1.10x", replay_ratio),
        Row(f"seek latency, warm process, {n} events", "<= 50 ms", warm_seek),
        Row(f"seek latency, cold CLI start, {n} events", "<= 2 s", cold_seek),
        Row("schema validation / raw orjson.loads", "<= 1.5x", schema),
        Row(f"peak RSS replaying {n} events - final state", "<= 200 MB", memory),
        Row("recorder overhead, real LocalCluster", "<= 1.05x", recorder),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", help="run rows whose name contains this text")
    a = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dask-replay benchmarks")
    for col in ("measure", "figure", "target", "met"):
        table.add_column(col)
    for row in rows(a.events, a.quick):
        if a.only and a.only not in row.measure:
            continue
        try:
            figure, met = row.run()
        except Exception as e:  # one broken benchmark must not hide the others
            figure, met = f"failed: {e!r}"[:80], False
        print(f"{row.measure}: {figure} (target {row.target})", file=sys.stderr, flush=True)
        table.add_row(row.measure, figure, row.target, "yes" if met else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
