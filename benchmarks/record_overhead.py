"""Wall time of a real LocalCluster workload with and without the recorder.

Each run starts a fresh two-worker cluster (nanny processes), so that the
recorder attaches from the empty state as it must, and times only the
workload: a graph of a few thousand tasks whose dependencies cross workers.
Runs alternate (bare, recorded, recorded, bare, ...) so that drifts of the
machine hit both; the figure is the median of the per-pair ratios.

    python benchmarks/record_overhead.py [--repeats N] [--tasks N]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from operator import add

from _common import ROOT  # noqa: F401  (puts the project on sys.path)

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from replay import Recorder  # noqa: E402
from replay.log import ClusterLog  # noqa: E402
from replay.logfile import log_files  # noqa: E402
from replay.merge import merge  # noqa: E402


def graph(leaves: int) -> tuple[dict, list]:
    """Leaves, a mixing layer pairing far-apart leaves, and a tree reduction."""
    dsk: dict = {("x", i): (add, i, 1) for i in range(leaves)}
    half = leaves // 2
    for i in range(leaves):
        dsk["y", i] = (add, ("x", i), ("x", (i + half) % leaves))
    layer = [("y", i) for i in range(leaves)]
    level = 0
    while len(layer) > 1:
        level += 1
        nxt = []
        for j in range(0, len(layer), 2):
            key = ("sum", level, j // 2)
            dsk[key] = (sum, layer[j : j + 2])
            nxt.append(key)
        layer = nxt
    return dsk, layer


def run_once(leaves: int, record: bool) -> tuple[float, int]:
    """Seconds the workload took, and how many events were recorded."""
    logdir = tempfile.mkdtemp(prefix="dask-replay-bench-")
    dsk, (root,) = graph(leaves)
    try:
        with dask.config.set({"distributed.scheduler.worker-ttl": None}):
            with LocalCluster(
                n_workers=0, processes=True, threads_per_worker=1,
                dashboard_address="127.0.0.1:0", host="127.0.0.1",
            ) as cluster, Client(cluster) as client:
                if record:
                    client.register_plugin(Recorder(logdir))
                cluster.scale(2)
                client.wait_for_workers(2, timeout=60)
                # warm both workers up (imports, first connections) untimed
                client.get({("w", i): (add, i, 1) for i in range(20)}, [("w", i) for i in range(20)])
                start = time.perf_counter()
                result = client.get(dsk, root)
                elapsed = time.perf_counter() - start
                assert result == sum(2 * i + 2 for i in range(leaves)), result
        events = 0
        if record:
            merged = logdir + "/cluster.jsonl"
            merge(log_files(logdir), merged)
            events = sum(w.events for w in ClusterLog.open(merged).workers)
        return elapsed, events
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def measure(repeats: int = 5, leaves: int = 1024) -> dict:
    """Median of the recorded / bare wall-time ratios of ``repeats`` pairs.

    Pairs alternate their order (bare first, then recorded first) so that a
    machine slowly getting busier or quieter does not favour either side.
    """
    bare: list[float] = []
    recorded: list[float] = []
    events = 0
    for i in range(repeats):
        for record in (False, True) if i % 2 == 0 else (True, False):
            t, n = run_once(leaves, record=record)
            (recorded if record else bare).append(t)
            events = n or events
    ratios = [r / b for r, b in zip(recorded, bare)]
    return {
        "ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(recorded) / statistics.median(bare),
        "ratios": ratios,
        "bare": bare,
        "recorded": recorded,
        "tasks": len(graph(leaves)[0]),
        "events": events,
    }


def measure_handle(path: str | None = None, repeats: int = 5) -> dict:
    """The recorder's cost per stimulus, without the cluster around it.

    The busiest worker of a recorded log is fed, in this process, to a fresh
    ``WorkerState`` bare and to one wrapped by the recorder's ``Session``
    writing a real log file: the same code path as on a live worker, free of
    the scheduling noise of a whole cluster.
    """
    import os

    import replay as replay_api
    from replay.record import Session

    path = path or os.path.join(ROOT, "fixtures", "cluster-log.jsonl.gz")
    w = max(replay_api.open(path).workers, key=lambda w: w.events)
    calls = [(call.resources, call.events) for call in w.calls()]
    events = sum(len(evs) for _, evs in calls)

    def run(record: bool) -> float:
        r = w.replayer()
        ws = r.ws
        logdir = tempfile.mkdtemp(prefix="dask-replay-bench-")
        # key hashing is already on (the replayer turned it on): skip the seed check
        session = Session(ws, directory=logdir, deterministic=False) if record else None
        try:
            start = time.perf_counter()
            for res, evs in calls:
                for total, available in res:
                    r.set_resources(total, available)
                ws.handle_stimulus(*evs)
            return time.perf_counter() - start
        finally:
            if session is not None:
                session.close("benchmark")
            shutil.rmtree(logdir, ignore_errors=True)

    bare, recorded = [], []
    for _ in range(repeats):
        bare.append(run(False))
        recorded.append(run(True))
    b, r = min(bare), min(recorded)
    return {
        "events": events,
        "bare_us": b / events * 1e6,
        "recorded_us": r / events * 1e6,
        "ratio": r / b,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=1024, help="leaves of the graph")
    args = ap.parse_args()
    m = measure(args.repeats, args.tasks)
    print(f"workload: {m['tasks']} tasks on 2 workers; {m['events']} events recorded per run")
    for i, (b, r, q) in enumerate(zip(m["bare"], m["recorded"], m["ratios"]), 1):
        print(f"  pair {i}: bare {b:.3f} s, recorded {r:.3f} s, ratio {q:.3f}")
    print(f"median recorded / median bare: {m['ratio_of_medians']:.3f}x")
    print(f"median of pair ratios: {m['ratio']:.3f}x (target <= 1.05x)")
    h = measure_handle()
    print(
        f"per stimulus, in process ({h['events']} events of the cluster fixture): "
        f"handle_stimulus {h['bare_us']:.1f} us bare, {h['recorded_us']:.1f} us recorded "
        f"(+{h['recorded_us'] - h['bare_us']:.1f} us, {h['ratio']:.2f}x)"
    )


if __name__ == "__main__":
    main()
