"""Replay time versus bare ``WorkerState.handle_stimulus`` time on the same events.

Bare: the events are decoded beforehand and fed to a fresh ``WorkerState`` in
a tight loop. Replay: the engine's whole pipeline from the log file (read,
parse, decode, handle), as ``replay`` runs it: past
:data:`~replay.reader.READ_AHEAD_FROM` steps the reading and decoding run in a
forked reader process beside the replay.

Bare and replay alternate in one process, ``--pairs`` times, each pair over
the same first ``--steps`` steps; every figure is the median over the pairs of
that pair's ratio, with the smallest and largest beside it. Counted:

- **CPU** (the judged ratio): the replay's ``time.process_time()`` *plus the
  reader process's* user + system CPU (``RUSAGE_CHILDREN``, taken around the
  replay; the reader is waited for before the replay returns), against bare's
  ``time.process_time()``. The reader's work is work the replay costs, whether
  or not a spare core hides it.
- this process's CPU alone, and the reader's alone, per event;
- wall time (``perf_counter``), which a shared machine's load moves most;
- the pipeline alone: the same replay with a state machine that does nothing
  (this process's CPU per event);
- bare again under the collector thresholds a replay runs with;
- the same replay with the reading and decoding in this process (no reader
  process): what the read-ahead's hand-off costs in CPU, against the wall
  time it saves when a core is spare.

    python benchmarks/replay_overhead.py [LOG] [--pairs N] [--steps N]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

from _common import decoded, ensure_seed, simulated_log

ensure_seed()

import gc  # noqa: E402

import replay  # noqa: E402
from replay import reader  # noqa: E402
from replay.collector import rare_collections  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _bare(w, calls: list) -> tuple[float, float]:
    """(wall, CPU) of ``handle_stimulus`` alone on a fresh state machine."""
    r = w.replayer()
    ws = r.ws
    t, c = time.perf_counter(), time.process_time()
    for res, events in calls:
        for change in res:
            r.set_resources(change[0], change[1])
        ws.handle_stimulus(*events)
    return time.perf_counter() - t, time.process_time() - c


def _replay(w, stop: int, noop: bool = False, in_process: bool = False) -> tuple[float, float, float]:
    """(wall, this process's CPU, the reader process's CPU) of a replay to ``stop``."""
    r = w.replayer()
    if noop:
        r._handle = lambda *events: []
    ch = _children_cpu()
    ahead = reader.READ_AHEAD_FROM
    if in_process:
        reader.READ_AHEAD_FROM = stop + 1
    try:
        t, c = time.perf_counter(), time.process_time()
        w.advance(r, stop)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        reader.READ_AHEAD_FROM = ahead
    return wall, cpu, _children_cpu() - ch


def _spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def measure(path: str, repeats: int = 5, steps: int | None = None, extras: bool = True) -> dict:
    """``repeats`` pairs of bare and replay over the first ``steps`` steps;
    with ``extras`` also the pipeline alone, bare under replay's collector
    thresholds and the replay without a reader process, each pair."""
    pairs = repeats
    w = max(replay.open(path).workers, key=lambda w: w.events)
    stop = w.events if steps is None else min(steps, w.events)
    calls = []
    for call in w.calls(1, stop, instructions=False):
        calls.append((call.resources, call.events))
    del call
    # the decoded events stay for every pair: the collector of neither
    # measure should walk them (a worker never holds its whole history)
    gc.freeze()
    load = [os.getloadavg()[0]]
    rows = []
    for i in range(pairs):
        # which goes first alternates, so that neither always follows the other
        order = ("bare", "replay") if i % 2 == 0 else ("replay", "bare")
        row = {}
        for what in order:
            if what == "bare":
                row["bare_wall"], row["bare_cpu"] = _bare(w, calls)
            else:
                row["wall"], row["cpu"], row["reader_cpu"] = _replay(w, stop)
        if extras:
            with rare_collections():
                _, row["bare_rare_cpu"] = _bare(w, calls)
            _, row["pipeline_cpu"], _ = _replay(w, stop, noop=True)
            row["in_process_wall"], row["in_process_cpu"], _ = _replay(w, stop, in_process=True)
        rows.append(row)
        load.append(os.getloadavg()[0])
        # each pair as it ends (stderr: run.py reads stdout), so a long run that is stopped still says something
        print(f"pair {i + 1}: CPU incl. the reader {(row['cpu'] + row['reader_cpu']) / row['bare_cpu']:.3f}x, "
              f"this process {row['cpu'] / row['bare_cpu']:.3f}x, wall {row['wall'] / row['bare_wall']:.3f}x "
              f"(bare {row['bare_cpu']:.1f} s CPU; load {load[-1]:.1f})", file=sys.stderr, flush=True)
    n = stop
    total = [(r["cpu"] + r["reader_cpu"]) / r["bare_cpu"] for r in rows]
    own = [r["cpu"] / r["bare_cpu"] for r in rows]
    wall = [r["wall"] / r["bare_wall"] for r in rows]
    med = statistics.median
    m = {
        "events": n,
        "pairs": pairs,
        #: the judged ratio: (replay CPU + its reader's CPU) / bare CPU, median of the pairs
        "total_cpu_ratio": med(total),
        "total_cpu_spread": _spread(total),
        "cpu_ratio": med(own),
        "cpu_spread": _spread(own),
        "ratio": med(wall),
        "wall_spread": _spread(wall),
        "bare_us_per_event": med(r["bare_cpu"] for r in rows) / n * 1e6,
        "replay_us_per_event": med(r["cpu"] for r in rows) / n * 1e6,
        "reader_us_per_event": med(r["reader_cpu"] for r in rows) / n * 1e6,
        "reader_cpu_s": med(r["reader_cpu"] for r in rows),
        "bare_wall_us_per_event": med(r["bare_wall"] for r in rows) / n * 1e6,
        "replay_wall_us_per_event": med(r["wall"] for r in rows) / n * 1e6,
        "load": load,
    }
    if extras:
        in_process = [r["in_process_cpu"] / r["bare_cpu"] for r in rows]
        m.update({
            "pipeline_us_per_event": med(r["pipeline_cpu"] for r in rows) / n * 1e6,
            "pipeline_share": med(r["pipeline_cpu"] / r["bare_cpu"] for r in rows),
            #: the replay without a reader process: its CPU / bare CPU, and its wall / bare wall
            "in_process_cpu_ratio": med(in_process),
            "in_process_cpu_spread": _spread(in_process),
            "in_process_wall_ratio": med(r["in_process_wall"] / r["bare_wall"] for r in rows),
            "ratio_to_bare_rare_gc": med(r["cpu"] / r["bare_rare_cpu"] for r in rows),
        })
    return m


def report(m: dict) -> str:
    t, o, w = m["total_cpu_spread"], m["cpu_spread"], m["wall_spread"]
    lines = [
        f"{m['events']} events, {m['pairs']} alternating pairs, medians (min-max over the pairs); "
        f"load average {' -> '.join(f'{x:.1f}' for x in m['load'])}",
        f"replay CPU incl. its reader / bare CPU = {t['median']:.3f}x ({t['min']:.3f}-{t['max']:.3f})  (target <= 1.10x)",
        f"  replay process alone / bare = {o['median']:.3f}x ({o['min']:.3f}-{o['max']:.3f}); "
        f"per event: bare {m['bare_us_per_event']:.1f} µs, replay {m['replay_us_per_event']:.1f} µs "
        f"+ reader {m['reader_us_per_event']:.1f} µs",
        f"  wall: {w['median']:.3f}x ({w['min']:.3f}-{w['max']:.3f}); "
        f"{m['replay_wall_us_per_event']:.1f} vs {m['bare_wall_us_per_event']:.1f} µs/event",
    ]
    if "pipeline_share" not in m:
        return "\n".join(lines)
    return "\n".join(lines + [
        f"  the pipeline alone (a state machine that does nothing): {m['pipeline_us_per_event']:.2f} µs/event "
        f"of this process's CPU, {m['pipeline_share'] * 100:.1f}% of bare's",
        f"  replay process / bare under replay's collector thresholds: {m['ratio_to_bare_rare_gc']:.3f}x",
        f"  without a reader process (read and decode here): CPU {m['in_process_cpu_ratio']:.3f}x "
        f"({m['in_process_cpu_spread']['min']:.3f}-{m['in_process_cpu_spread']['max']:.3f}), "
        f"wall {m['in_process_wall_ratio']:.3f}x",
    ])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="replay only the first N steps")
    ap.add_argument("--no-extras", dest="extras", action="store_false",
                    help="only the pairs of bare and replay")
    a = ap.parse_args()
    print(report(measure(a.log or simulated_log(a.events), a.pairs, a.steps, a.extras)))
