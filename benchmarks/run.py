"""Run every benchmark of the project and print one table.

Each figure is measured side by side in this run; where a ratio applies it is
a ratio of two measurements taken here, not a comparison with a stored number.

    python benchmarks/run.py [--events N] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from _common import simulated_log

from replay.determinism import NANNY_SEED  # noqa: E402  (after _common puts us on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Row:
    measure: str
    target: str
    run: Callable[[], tuple[str, bool]]


def isolated(module: str, call: str) -> dict:
    """``module.call`` in a fresh process: no benchmark inherits another's heap.

    A forked snapshot copies its parent's page tables, and a heap grown by an
    earlier benchmark would make every fork slower.
    """
    code = f"import json, {module}; print(json.dumps({module}.{call}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE, check=True, capture_output=True, text=True,
        env=dict(os.environ, PYTHONHASHSEED=NANNY_SEED),
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rows(events: int, quick: bool) -> list[Row]:
    def replay_ratio():
        log = simulated_log(events)
        # pairs only: at 1M each pair is minutes; the extras are replay_overhead.py's own run
        m = isolated("replay_overhead", f"measure({log!r}, repeats={2 if quick else 3}, extras=False)")
        t, w = m["total_cpu_spread"], m["wall_spread"]
        return (f"CPU incl. the reader {m['total_cpu_ratio']:.2f}x ({t['min']:.2f}-{t['max']:.2f} over "
                f"{m['pairs']} pairs; {m['replay_us_per_event']:.1f} + reader {m['reader_us_per_event']:.1f} "
                f"vs {m['bare_us_per_event']:.1f} µs/event), this process alone {m['cpu_ratio']:.2f}x; "
                f"wall {m['ratio']:.2f}x ({w['min']:.2f}-{w['max']:.2f}); load {m['load'][0]:.1f}-"
                f"{max(m['load']):.1f}"), m["total_cpu_ratio"] <= 1.10

    def warm_seek():
        log = simulated_log(events)
        m = isolated("seek", f"measure_warm({log!r}, seeks={20 if quick else 50})")
        return (f"{m['median_ms']:.1f} ms median, {m['p95_ms']:.1f} ms p95 "
                f"({m['snapshots']} snapshots, {m['snapshots_mb'] / 1024:.1f} GB)"), m["median_ms"] <= 50

    def warm_seek_dense():
        # the memory/latency trade: one snapshot every 1,000 steps of a smaller log
        log = simulated_log(min(events, 200_000))
        m = isolated("seek", f"measure_warm({log!r}, seeks={20 if quick else 50}, max_snapshots=10**6)")
        return (f"{m['median_ms']:.1f} ms median ({m['snapshots']} snapshots, "
                f"{m['snapshots_mb'] / 1024:.1f} GB)"), m["median_ms"] <= 50

    def step():
        m = isolated("step", f"measure({simulated_log(events)!r}, repeats={8 if quick else 20})")
        met = (m["back1_ms"] <= 50 and m["back1000_ms"] <= 50 and m["jump_ms"] <= 500
               and m["reverse_100k_ms"] <= 2000 and m["snapshots_mb"] <= m["memory_bound_mb"])
        return (f"back 1: {m['back1_ms']:.0f} ms, back 1k: {m['back1000_ms']:.0f} ms, jump: {m['jump_ms']:.0f} ms, "
                f"reverse-continue 100k: {m['reverse_100k_ms']:.0f} ms; snapshots {m['snapshots_mb']:.0f} MB"), met

    def step_first_open():
        m = isolated("step", f"measure_first_open({simulated_log(events)!r}, repeats={6 if quick else 12})")
        phases = [("until the index", m["before"])] + ([("after", m["after"])] if "after" in m else [])
        met = all(p["jump_ms"] <= 500 and p["reverse_100k_ms"] <= 2000 for _, p in phases)
        return (f"first answer {m['first_answer_s']:.0f} s, index {m['index_written_s']:.0f} s later; " + "; ".join(
            f"{name}: jump {p['jump_ms']:.0f} ms ({p['jump_cpu_ms']:.0f} CPU), reverse-continue "
            f"{p['reverse_100k_ms']:.0f} ms ({p['reverse_cpu_ms']:.0f} CPU), {p['jump_by_index'] + p['reverse_by_index']}"
            f"/{p['jumps'] + p['reverses']} by the index" for name, p in phases)
            + f" (load {m['load']:.1f})"), met

    def index_build():
        m = isolated("index", f"measure_build({simulated_log(events)!r})")
        index_facts.update(m)
        return (f"{m['ratio']:.2f}x ({m['index_s']:.0f} vs {m['bare_s']:.0f} s), CPU {m['cpu_ratio']:.2f}x; size {m['size_ratio']:.2f}x "
                f"the log; RSS +{m['rss_growth_mb']:.0f} MB"), m["ratio"] <= 1.3

    def index_size():
        m = index_facts or isolated("index", f"measure_build({simulated_log(events)!r})")
        return f"{m['size_ratio']:.2f}x ({m['index_bytes'] / 1e6:.0f} MB)", m["size_ratio"] <= 0.3

    def index_rss():
        m = index_facts or isolated("index", f"measure_build({simulated_log(events)!r})")
        return (f"+{m['rss_growth_mb']:.0f} MB ({m['rss_indexing_mb']:.0f} vs {m['rss_replay_mb']:.0f} MB, sampled"
                f" with the reader child)", m["rss_growth_mb"] <= 300)

    def first_load():
        m = isolated("index", f"measure_first_load({simulated_log(events)!r})")
        return (f"{m['ratio']:.2f}x ({m['first_s']:.1f} vs {m['off_s']:.1f} s), CPU {m['cpu_ratio']:.2f}x; "
                f"answered by: {', '.join(m['paths'])}"), m["ratio"] <= 1.2

    def index_cold():
        m = isolated("views", f"measure_fresh({simulated_log(events)!r}, runs={3 if quick else 5})")
        wall, cpu = next(iter(m["wall_s"].values())), next(iter(m["cpu_s"].values()))
        return (", ".join(f"{k} {v:.2f} s" for k, v in wall.items()) + " (CPU " +
                ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) +
                f"; load {m['load'][0]:.1f})"), max(wall.values()) <= 0.3

    def index_warm():
        m = isolated("views", f"measure_warm({simulated_log(events)!r}, steps={20 if quick else 50})")
        return (", ".join(f"{k} {v:.0f}" for k, v in m["median_ms"].items()) + " ms median; p95 " +
                ", ".join(f"{k} {v:.0f}" for k, v in m["p95_ms"].items()) + " ms"), max(m["median_ms"].values()) <= 20

    index_facts: dict = {}

    def schema():
        log = simulated_log(min(events, 200_000))
        m = isolated("schema_validation", f"measure({log!r}, repeats={1 if quick else 3})")
        return (f"{m['ratio']:.2f}x CPU, {m['wall_ratio']:.2f}x wall ({m['lines']} lines, "
                f"{m['compiled_lines']} by the compiled schema); the pydantic way {m['pydantic_ratio']:.2f}x; "
                f"alone: scan {m['scan_ratio']:.2f}x, compiled parse {m['compiled_ratio']:.2f}x"), m["ratio"] <= 1.5

    def memory():
        m = isolated("replay_memory", f"measure({simulated_log(events)!r})")
        return f"{m['overhead_mb']:.0f} MB (peak {m['peak_mb']:.0f} MB)", m["overhead_mb"] <= 200

    def recorder():
        m = isolated("record_overhead", f"measure(repeats={3 if quick else 5})")
        return (f"{m['ratio']:.3f}x wall, {m['cpu_ratio']:.3f}x workers' CPU (medians of {len(m['ratios'])} "
                f"pairs); the recorder's own CPU {m['recorded_us_per_call']:.1f} µs per call, "
                f"{m['recorded_own_ratio']:.3f}x the rest of the workers' CPU"), m["ratio"] <= 1.05

    def snapshot_pause():
        m = isolated("recorder_bounded", "measure_pause()")
        c = isolated("recorder_bounded", "measure_capture()")
        return (f"median {m['median_ms']:.0f} ms (CPU {m['cpu_median_ms']:.0f} ms), worst {m['max_ms']:.0f} ms at "
                f"{m['tasks']} tasks ({m['snapshot_bytes'] / 1e6:.1f} MB); rebuild {m['rebuild_ms']:.0f} ms; "
                f"bare handle_stimulus {m['bare_handle_us']:.0f} µs/event in the same process; side by side: "
                f"encoded on the loop median {c['whole_median_ms']:.0f} ms (CPU {c['whole_cpu_median_ms']:.0f}), "
                f"captured median {c['median_ms']:.0f} ms (CPU {c['cpu_median_ms']:.0f}), worst "
                f"{c['max_ms']:.0f} ms; with a task alive outside ws.tasks (every reference looked up: "
                f"several workers in one process, not taken by nanny workers) median {c['ids_median_ms']:.0f} ms, "
                f"worst {c['ids_max_ms']:.0f} ms"), max(m["max_ms"], c["max_ms"]) <= 50

    def bounded_recorder():
        m = isolated("recorder_bounded", f"measure(repeats={2 if quick else 3})")
        return (f"bounded {m['bounded']:.3f}x (CPU {m['bounded_cpu']:.3f}x), unbounded {m['unbounded']:.3f}x "
                f"(CPU {m['unbounded_cpu']:.3f}x); {m['segments']} segments/worker in {m['seconds']:.0f} s "
                f"(one every {m['roll_every_s']:.1f} s), kept "
                f"{m['kept_max'] / 1e6:.2f} MB of {m['max_bytes'] / 1e6:.1f} MB (largest segment "
                f"{m['largest_segment'] / 1e6:.2f} MB); pauses worst {m['pause_max_ms']:.0f} ms"), (
            m["bounded"] <= 1.05 and m["kept_max"] <= m["max_bytes"])

    def scheduler_recorder():
        m = isolated("scheduler_overhead", f"measure(repeats={3 if quick else 5})")
        return (f"{m['ratio']:.3f}x (median of {len(m['ratios'])} pairs); hooks {m['hook_us']:.0f} µs per "
                f"transition, {m['hook_share'] * 100:.1f}% of wall time"), m["ratio"] <= 1.05

    def outside_check():
        m = isolated("outside_check", f"measure(rounds={5 if quick else 9})")
        return (f"{m['watch_ratio']:.3f}x (hook {m['hook_ratio']:.3f}x + calls {m['calls_ratio']:.3f}x; "
                f"the full scan it replaced {m['scan_ratio']:.2f}x; {m['bare_us']:.0f} µs/stimulus, "
                f"{m['mean_tasks']:.0f} tasks held)"), m["watch_ratio"] <= 0.10

    def shrink():
        m = isolated("shrink", f"measure({simulated_log(100_000)!r})")
        return (f"{m['events_before']} -> {m['events_after']} events, {m['replays']} replays, "
                f"{m['seconds']:.1f} s wall, {m['cpu_seconds']:.1f} s CPU (load {m['load']:.1f}), "
                f"1-minimal: {m['one_minimal']}"), m["one_minimal"] and m["seconds"] <= 60

    def parallel():
        m = isolated("parallel", f"measure({50_000 if quick else 200_000})")
        return (f"--jobs 2: {m['jobs2_speedup']:.2f}x, 2-worker LocalCluster: {m['dask2_speedup']:.2f}x "
                f"({m['serial_s']:.0f} s serial); results {'equal' if m['same'] else 'DIFFER'}"), m["same"]

    n = f"{events // 1000}k" if events < 10**6 else f"{events // 10**6}M"
    def report():
        m = isolated("report", f"measure({simulated_log(events)!r}, repeats={1 if quick else 3})")
        render = m.get("render_s")
        shown = 'n/a (no chromium)' if render is None else f"{render:.2f} s ({m['render_cpu_s']:.2f} s CPU)"
        figure = (f"{m['page_bytes'] / 1e6:.1f} MB, render {shown} beyond an empty page's; "
                  f"data {m['ratio']:.2f}x a bare replay ({m['cpu_ratio']:.2f}x CPU; {m['bars']} bars, "
                  f"{m['counted']} in {m['columns']} columns of {m['bucket_ms']:.1f} ms)")
        return figure, m["page_bytes"] <= 20e6 and render is not None and render <= 3

    return [
        Row(f"replay / bare handle_stimulus, {n} events", "<= 1.10x", replay_ratio),
        Row(f"seek latency, warm process, {n} events", "<= 50 ms", warm_seek),
        Row("seek latency, warm process, 200k events, snapshot every 1k steps", "<= 50 ms", warm_seek_dense),
        Row(f"replay step medians after the first pass, {n} events", "<= 50/50/500/2000 ms, <= 2 GB", step),
        Row(f"stepper far jump / reverse-continue 100k on a log opened for the first time, {n} events",
            "<= 500 ms / <= 2 s after the first answer", step_first_open),
        Row(f"first replay load of an unindexed log / REPLAY_INDEX=off, {n} events", "<= 1.2x", first_load),
        Row(f"indexing pass / bare handle_stimulus, {n} events", "<= 1.3x", index_build),
        Row(f"index size / log size, {n} events", "<= 0.3x", index_size),
        Row(f"peak RSS while indexing - a replay's own peak, {n} events", "<= 300 MB", index_rss),
        Row(f"any view from a fresh CLI process via the index, {n} events", "<= 0.3 s", index_cold),
        Row(f"any view in a warm process via the index, {n} events", "<= 20 ms", index_warm),
        Row("replay check / raw orjson.loads", "<= 1.5x", schema),
        Row(f"peak RSS replaying {n} events - final state", "<= 200 MB", memory),
        Row("recorder overhead, real LocalCluster", "<= 1.05x", recorder),
        Row("snapshot pause, 10,000 tasks (bounded recording)", "<= 50 ms", snapshot_pause),
        Row("bounded recorder overhead, real LocalCluster, segment every few s", "<= 1.05x, disk <= bound",
            bounded_recorder),
        Row("scheduler recorder overhead, real LocalCluster", "<= 1.05x", scheduler_recorder),
        Row("outside-change check / handle_stimulus, recorded stress run", "<= 0.10x", outside_check),
        Row("shrink a stuck 100k-event log to 1-minimal", "<= 60 s", shrink),
        Row("verify a 4-worker log side by side / serially", "speed-up, equal results", parallel),
        Row(f"replay report of {n} events: page size, render in headless Chromium", "<= 20 MB, <= 3 s", report),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", action="append",
                    help="run rows whose name contains this text (several: rows matching any)")
    a = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dask-replay benchmarks")
    for col in ("measure", "figure", "target", "met"):
        table.add_column(col)
    for row in rows(a.events, a.quick):
        if a.only and not any(text in row.measure for text in a.only):
            continue
        try:
            figure, met = row.run()
        except (subprocess.CalledProcessError, ValueError, KeyError) as e:
            # one broken benchmark must not hide the others
            detail = getattr(e, "stderr", "") or repr(e)
            figure, met = f"failed: {detail.strip().splitlines()[-1] if detail.strip() else e!r}"[:100], False
        print(f"{row.measure}: {figure} (target {row.target})", file=sys.stderr, flush=True)
        table.add_row(row.measure, figure, row.target, "yes" if met else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
