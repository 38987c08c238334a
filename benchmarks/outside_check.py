"""What the check for changes made outside ``handle_stimulus`` costs, per
stimulus, against the state machine's own time, on a recorded stress run.

``pytest --replay-record`` watches every recorded ``WorkerState`` for task
state, data and the data mapping changed between stimuli
(:class:`replay.record.OutsideWatch`). This script records a real in-process
``LocalCluster`` under load from the active memory manager (results
fetched by peers, whose replicas it then drops, in rounds, so that each worker holds
thousands of tasks), then replays its busiest worker's stimuli in this
process, timing side by side, pass after pass:

- ``handle_stimulus`` alone (no watch: ``TaskState.state`` is dask's slot);
- ``handle_stimulus`` with the watch installed (its property in place), plus
  the watch's ``changes()`` before and ``remember()`` after each call;
- the full scan the watch replaced: every task's state and every data key,
  after each call and again before the next, compared.

Rounds of one pass per way, in rotating order, so that the machine's drifts
hit all three; a check's cost is what its pass spends beyond the bare pass of
its round, in ``handle_stimulus`` and around it, over the bare pass; each
figure is the median over rounds.

    python benchmarks/outside_check.py [--waves N] [--width N] [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

from _common import ensure_seed

import dask  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402

import replay  # noqa: E402
from replay import record  # noqa: E402
from replay.logfile import log_files  # noqa: E402
from replay.merge import merge  # noqa: E402

AMM = {
    "distributed.scheduler.active-memory-manager.start": True,
    "distributed.scheduler.active-memory-manager.interval": 0.05,
    "distributed.scheduler.worker-ttl": None,
}


def inc(x: int) -> int:
    return x + 1


def add(*xs: int) -> int:
    return sum(xs)


def record_stress(logdir: str, waves: int, width: int) -> str:
    """A cluster log of a workload the active memory manager keeps busy."""
    with dask.config.set(AMM):
        with LocalCluster(
            n_workers=0, processes=False, threads_per_worker=2, protocol="tcp://",
            host="127.0.0.1", dashboard_address="127.0.0.1:0",
        ) as cluster, Client(cluster) as client:
            client.register_plugin(record.Recorder(logdir))
            cluster.scale(4)
            client.wait_for_workers(4, timeout=60)
            kept: list = []
            for r in range(waves):
                xs = client.map(inc, range(width), key=[f"x-{r}-{i}" for i in range(width)])
                # each y needs x's from other workers: every transfer leaves a
                # replica behind, which the active memory manager drops again
                ys = [client.submit(add, xs[i], xs[(i * 7 + 1) % width], xs[(i * 13 + 5) % width],
                                    key=f"y-{r}-{i}") for i in range(width)]
                wait(ys, timeout=120)
                time.sleep(0.2)
                kept += ys  # results stay in memory: the workers' states grow
                del xs
            assert sum(client.gather(kept[-width:])) > 0
    merged = logdir + "/stress.jsonl"
    merge(log_files(logdir), merged)
    return merged


def scan(ws) -> tuple[dict, set]:
    return {k: ts.state for k, ts in ws.tasks.items()}, set(ws.data)


def _handle(handle, call) -> int:
    """Replay a call's events; how many raised (as recorded, on an exact replay)."""
    # as the recorder does: the state machine's own assignments are inside a call
    record._calls_running += 1
    raised = 0
    try:
        for ev in call.events:
            try:
                handle(ev)
            except Exception:
                raised += 1
    finally:
        record._calls_running -= 1
    return raised


#: the three ways a round replays the calls
MODES = ("bare", "watched", "scanned")


def one_pass(worker, mode: str) -> dict:
    """Replay the worker's calls once: ``bare`` only handles them;
    ``watched`` has the watch's hook installed throughout, as in a recorded
    test, and calls ``changes()`` before and ``remember()`` after each call;
    ``scanned`` builds every task's state and every data key after each call
    and again before the next, and compares them. Seconds in
    ``handle_stimulus`` (what the hook, or the scan's garbage, adds shows
    there) and in the check around it."""
    clock = time.perf_counter
    r = worker.replayer()
    calls = list(worker.calls())  # decoded anew: handlers may consume what events carry
    ws, handle = r.ws, r._handle
    watch = record.OutsideWatch(ws) if mode == "watched" else None
    t = {"handle": 0.0, "check": 0.0, "raised": 0, "tasks": 0}
    last = ({}, set())
    try:
        for call in calls:
            r._before(call)
            t0 = clock()
            if watch is not None:
                watch.changes()
            elif mode == "scanned":
                _ = scan(ws) != last
            t1 = clock()
            t["raised"] += _handle(handle, call)
            t2 = clock()
            if watch is not None:
                watch.remember()
            elif mode == "scanned":
                last = scan(ws)
            t3 = clock()
            t["handle"] += t2 - t1
            t["check"] += (t1 - t0) + (t3 - t2)
            t["tasks"] += len(ws.tasks)
    finally:
        if watch is not None:
            watch.close()
    t["tasks"] /= len(calls)
    return t


def passes(path: str, rounds: int) -> dict:
    """``rounds`` rounds of one pass per mode, in an order that rotates per
    round; each cost is the median over rounds of what the mode's pass adds
    to the bare pass of its round, over the bare pass."""
    history = replay.open(path)
    worker = max(history.workers, key=lambda w: w.events)
    events = worker.events
    for mode in MODES:
        one_pass(worker, mode)  # warm up: imports, caches, the allocator
    runs = []
    for n in range(rounds):
        runs.append({mode: one_pass(worker, mode) for mode in MODES[n % 3:] + MODES[:n % 3]})

    def median(f) -> float:
        return statistics.median(f(r) for r in runs)

    def cost(mode: str) -> float:
        return median(lambda r: (r[mode]["handle"] - r["bare"]["handle"] + r[mode]["check"]) / r["bare"]["handle"])

    bare = [r["bare"]["handle"] for r in runs]
    return {
        "events": events,
        "raised": runs[0]["bare"]["raised"],
        "mean_tasks": runs[0]["bare"]["tasks"],
        "bare_us": statistics.median(bare) / events * 1e6,
        "watch_ratio": cost("watched"),
        "hook_ratio": median(lambda r: (r["watched"]["handle"] - r["bare"]["handle"]) / r["bare"]["handle"]),
        "calls_ratio": median(lambda r: r["watched"]["check"] / r["bare"]["handle"]),
        "scan_ratio": cost("scanned"),
        # how much the bare pass moved between rounds: the noise of these figures
        "bare_spread": (max(bare) - min(bare)) / statistics.median(bare),
    }


def measure(waves: int = 6, width: int = 400, rounds: int = 9) -> dict:
    logdir = tempfile.mkdtemp(prefix="dask-replay-outside-")
    try:
        path = record_stress(logdir, waves, width)
        return passes(path, rounds)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--waves", type=int, default=6, help="waves of tasks in the recorded run")
    ap.add_argument("--width", type=int, default=400, help="tasks per wave and layer")
    ap.add_argument("--rounds", type=int, default=9, help="rounds of passes measured")
    a = ap.parse_args()
    ensure_seed()
    m = measure(a.waves, a.width, a.rounds)
    print(json.dumps(m, indent=1))
    print(
        f"outside check / handle_stimulus: {m['watch_ratio']:.3f}x "
        f"(hook {m['hook_ratio']:.3f}x + calls {m['calls_ratio']:.3f}x); "
        f"the full scan it replaced: {m['scan_ratio']:.2f}x; "
        f"{m['bare_us']:.1f} µs per stimulus over {m['events']} stimuli, "
        f"{m['mean_tasks']:.0f} tasks held on average; bare passes spread {m['bare_spread']:.0%}"
    )


if __name__ == "__main__":
    main()
