"""Replay time versus bare ``WorkerState.handle_stimulus`` time on the same events.

Bare: the events are decoded beforehand and fed to a fresh ``WorkerState`` in
a tight loop. Replay: the engine's whole pipeline from the log file (read,
parse, decode, handle). Both in this process, alternated, best of N. Beside
the wall-clock ratio (the target), the CPU time of this process and of the
read-ahead reader: on a busy machine the reader's core is not spare, and the
CPU ratio says what the replay itself costs. The pipeline alone (the same
replay with a state machine that does nothing) says what replay adds to
``handle_stimulus`` in this process, in CPU time, whatever the load. And bare ``handle_stimulus``
again under the collector thresholds a replay runs with, so that what the
thresholds win is not mistaken for the rest of the pipeline's cost.

    python benchmarks/replay_overhead.py [LOG] [--repeats N]
"""
from __future__ import annotations

import argparse
import resource
import time

from _common import bare_seconds, decoded, ensure_seed, simulated_log

ensure_seed()

import gc  # noqa: E402

import replay  # noqa: E402
from replay.engine import rare_collections  # noqa: E402


def pipeline_cpu(w) -> float:
    """CPU time of a replay whose state machine does nothing: what the
    pipeline (the read-ahead's hand-off, building events, the engine's
    bookkeeping) costs this process, whatever else runs on the machine."""
    r = w.replayer()
    r._handle = lambda *events: []
    c = time.process_time()
    w.advance(r, w.events)
    return time.process_time() - c


def measure(path: str, repeats: int = 3) -> dict:
    w = max(replay.open(path).workers, key=lambda w: w.events)
    calls = decoded(w)
    # the decoded events stay for every round: the collector of neither
    # measure should walk them (a worker never holds its whole history)
    gc.freeze()
    bare, full, bare_cpu, full_cpu, reader_cpu, bare_rare, pipeline = [], [], [], [], [], [], []
    for _ in range(repeats):
        c = time.process_time()
        bare.append(bare_seconds(w, calls))
        bare_cpu.append(time.process_time() - c)
        with rare_collections():
            bare_rare.append(bare_seconds(w, calls))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        c = time.process_time()
        t = time.perf_counter()
        w.advance(w.replayer(), w.events)
        full.append(time.perf_counter() - t)
        full_cpu.append(time.process_time() - c)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reader_cpu.append(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
        pipeline.append(pipeline_cpu(w))
    return {
        "events": w.events,
        "bare_s": min(bare),
        "replay_s": min(full),
        "ratio": min(full) / min(bare),
        "bare_us_per_event": min(bare) / w.events * 1e6,
        "replay_us_per_event": min(full) / w.events * 1e6,
        "bare_cpu_s": min(bare_cpu),
        "replay_cpu_s": min(full_cpu),
        "cpu_ratio": min(full_cpu) / min(bare_cpu),
        "reader_cpu_s": min(reader_cpu),
        "bare_rare_gc_s": min(bare_rare),
        "ratio_to_bare_rare_gc": min(full) / min(bare_rare),
        "pipeline_cpu_s": min(pipeline),
        "pipeline_us_per_event": min(pipeline) / w.events * 1e6,
        #: what the pipeline adds to bare handle_stimulus, CPU
        "pipeline_share": min(pipeline) / min(bare_cpu),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    m = measure(a.log or simulated_log(a.events), a.repeats)
    print(f"events {m['events']}: bare handle_stimulus {m['bare_s']:.2f} s "
          f"({m['bare_us_per_event']:.1f} µs/event), replay {m['replay_s']:.2f} s "
          f"({m['replay_us_per_event']:.1f} µs/event)")
    print(f"replay / bare = {m['ratio']:.2f}x  (target <= 1.10x)")
    print(f"CPU: bare {m['bare_cpu_s']:.2f} s, replay {m['replay_cpu_s']:.2f} s ({m['cpu_ratio']:.2f}x), "
          f"and its reader process {m['reader_cpu_s']:.2f} s")
    print(f"the pipeline alone (a state machine that does nothing): {m['pipeline_us_per_event']:.2f} µs/event "
          f"of this process's CPU, {m['pipeline_share'] * 100:.1f}% of bare's")
    print(f"bare under replay's collector thresholds {m['bare_rare_gc_s']:.2f} s: "
          f"replay / that = {m['ratio_to_bare_rare_gc']:.2f}x")
