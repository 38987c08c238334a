"""Wall and CPU time of a real LocalCluster workload with and without the recorder.

Each run starts a fresh two-worker cluster (nanny processes), so that the
recorder attaches from the empty state as it must, and times only the
workload: a graph of a few thousand tasks whose dependencies cross workers.
Beside the wall time it takes the CPU time the worker processes spent on the
workload (``time.process_time()`` in each worker, all its threads, read
before and after): the recorder's cost, less diluted by a loaded box than the
wall time. Runs alternate (bare, recorded, recorded, bare, ...) so that drifts
of the machine hit both; the figures are medians of the per-pair ratios.

Each recorded run says how its logs were written (through a memory map, or
a ``write`` per line: a file that cannot be mapped, or an older checkout).

``--against DIR`` adds the recorder of another checkout (a copy of an older
commit, ``git archive``) as a third kind of run in the same rotation, every
run then in a fresh process, the older one importing ``replay`` from DIR:
before and after, side by side. The per-stimulus figure is taken the same
way, for each checkout.

    python benchmarks/record_overhead.py [--repeats N] [--tasks N] [--against DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from operator import add

from _common import ROOT, simulated_log  # noqa: F401  (puts the project on sys.path)

if os.environ.get("REPLAY_BENCH_CHECKOUT"):
    # a run of another checkout's recorder (--against): its replay comes first
    sys.path.insert(0, os.environ["REPLAY_BENCH_CHECKOUT"])

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from replay import Recorder  # noqa: E402
from replay.log import ClusterLog  # noqa: E402
from replay.logfile import log_files  # noqa: E402
from replay.merge import merge  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


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


def _cpu() -> float:
    return time.process_time()


def _time_the_recorder() -> dict:
    """In a worker: from now on, the thread CPU time of each recorded call
    with and without the real ``handle_stimulus`` inside it; the difference
    is the recorder's own work on the event loop, measured in the run itself
    (the two clock reads around the inner call, and finding the wrapper that
    takes them, count as the recorder's)."""
    from replay import record

    cls = record.Session
    acc = {"calls": 0, "total": 0.0, "inner": 0.0}
    clock = time.thread_time
    real = getattr(cls, "_real_handle", cls.handle)

    class Timed:
        def __init__(self, base: type):
            self.base = base

        def handle_stimulus(self, ws, *stims):
            t = clock()
            try:
                return self.base.handle_stimulus(ws, *stims)
            finally:
                acc["inner"] += clock() - t

    # one wrapper per class, not one per call: its making is no part of the recorder
    timed: dict[type, Timed] = {}

    def handle(self, ws, base, stims):
        t = clock()
        try:
            inner = timed.get(base)
            if inner is None:
                inner = timed[base] = Timed(base)
            return real(self, ws, inner, stims)
        finally:
            acc["total"] += clock() - t
            acc["calls"] += 1

    cls._real_handle = real
    cls.handle = handle
    cls._timing = acc
    return acc


def _clock_pair() -> float:
    """In a worker: CPU seconds of one ``thread_time()`` pair, best of 20 x 1000;
    each timed call counts about one pair's worth as the recorder's."""
    clock = time.thread_time
    best = float("inf")
    for _ in range(20):
        t = clock()
        for _ in range(1000):
            clock()
            clock()
        best = min(best, (clock() - t) / 1000)
    return best


def _recorder_time() -> dict:
    from replay import record

    return dict(record.Session._timing)


def _log_writer(dask_worker=None) -> list[str]:
    """In a worker: how each recorded log is written (a checkout from before
    the memory map writes per line)."""
    sessions = dask_worker.plugins[Recorder.name]._sessions.values()
    return [("memory map" if getattr(s.writer, "mapped", False) else "write per line")
            for s in sessions if s.writer is not None]


def run_once(leaves: int, record: bool) -> dict:
    """Seconds the workload took, the workers' CPU seconds on it, and how many
    events were recorded."""
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
                if record:
                    client.run(_time_the_recorder)
                cpu0 = client.run(_cpu)
                start = time.perf_counter()
                result = client.get(dsk, root)
                elapsed = time.perf_counter() - start
                cpu1 = client.run(_cpu)
                timing = client.run(_recorder_time) if record else {}
                pair = statistics.median(client.run(_clock_pair).values()) if record else 0.0
                writers = sorted({w for ws in client.run(_log_writer).values() for w in ws}) if record else []
                assert result == sum(2 * i + 2 for i in range(leaves)), result
        events = 0
        if record:
            merged = logdir + "/cluster.jsonl"
            merge(log_files(logdir), merged)
            events = sum(w.events for w in ClusterLog.open(merged).workers)
        cpu = sum(cpu1[w] - cpu0[w] for w in cpu1)
        own = sum(t["total"] - t["inner"] for t in timing.values())
        return {"seconds": elapsed, "cpu": cpu, "events": events, "recorder_cpu": own,
                "handle_cpu": sum(t["inner"] for t in timing.values()),
                "calls": sum(t["calls"] for t in timing.values()), "clock_pair": pair,
                "writers": writers}
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def _in_process(mode: str, leaves: int, checkout: str | None = None) -> dict:
    """One run in a fresh interpreter; ``checkout``: import ``replay`` from there."""
    return _one(["--one", mode, "--tasks", str(leaves)], checkout)


def _one(args: list[str], checkout: str | None) -> dict:
    # multiprocessing gives the workers this sys.path, checkout first
    env = {k: v for k, v in os.environ.items() if k != "REPLAY_BENCH_CHECKOUT"}
    if checkout:
        env["REPLAY_BENCH_CHECKOUT"] = checkout
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "record_overhead.py"), *args],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(repeats: int = 5, leaves: int = 1024, against: str | None = None) -> dict:
    """Median of the recorded / bare ratios (wall and workers' CPU) of ``repeats`` rounds.

    Rounds rotate their order so that a machine slowly getting busier or
    quieter favours no side. With ``against``, a third kind of run records
    with that checkout's recorder, and every run is in a fresh process.
    """
    modes = ["bare", "recorded"] + (["before"] if against else [])
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    load = [os.getloadavg()[0]]
    for i in range(repeats):
        k = i % len(modes)
        for mode in modes[k:] + modes[:k]:
            if against:
                r = _in_process("bare" if mode == "bare" else "recorded", leaves,
                                against if mode == "before" else None)
            else:
                r = run_once(leaves, record=mode != "bare")
            runs[mode].append(r)
    load.append(os.getloadavg()[0])

    def ratios(mode: str, what: str) -> list[float]:
        return [r[what] / b[what] for r, b in zip(runs[mode], runs["bare"])]

    out = {
        "ratio": statistics.median(ratios("recorded", "seconds")),
        "cpu_ratio": statistics.median(ratios("recorded", "cpu")),
        "ratio_of_medians": statistics.median(r["seconds"] for r in runs["recorded"])
        / statistics.median(r["seconds"] for r in runs["bare"]),
        "ratios": ratios("recorded", "seconds"),
        "cpu_ratios": ratios("recorded", "cpu"),
        "runs": runs,
        "tasks": len(graph(leaves)[0]),
        "events": max(r["events"] for r in runs["recorded"]),
        "load": load,
    }
    for mode in modes[1:]:
        # the recorder's own CPU against the rest of the workers' CPU, in each run
        own = [r["cpu"] / (r["cpu"] - r["recorder_cpu"]) for r in runs[mode]]
        out[f"{mode}_own_ratio"] = statistics.median(own)
        out[f"{mode}_us_per_call"] = statistics.median(r["recorder_cpu"] / r["calls"] * 1e6 for r in runs[mode])
        out[f"{mode}_handle_us_per_call"] = statistics.median(
            r["handle_cpu"] / r["calls"] * 1e6 for r in runs[mode])
        out[f"{mode}_clock_us"] = statistics.median(r["clock_pair"] * 1e6 for r in runs[mode])
        # both timed in the same run, under the same load: the steadier comparison
        out[f"{mode}_per_handle"] = statistics.median(r["recorder_cpu"] / r["handle_cpu"] for r in runs[mode])
        out[f"{mode}_writers"] = sorted({w for r in runs[mode] for w in r.get("writers", [])})
    if against:
        out["before_ratio"] = statistics.median(ratios("before", "seconds"))
        out["before_cpu_ratio"] = statistics.median(ratios("before", "cpu"))
    return out


def measure_handle(path: str | None = None, repeats: int = 7) -> dict:
    """The recorder's cost per stimulus, without the cluster around it.

    A worker's events (of a simulated log unless ``path`` is given) are fed,
    in this process, to a fresh ``WorkerState`` bare and to one wrapped by the
    recorder's ``Session`` writing a real log file: the same code path as on a
    live worker, free of the scheduling noise of a whole cluster. Bare and
    recorded alternate; the best CPU time of each counts.
    """
    import replay as replay_api
    from replay.record import Session

    path = path or simulated_log(20_000)
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
            start = time.process_time()
            for res, evs in calls:
                for total, available in res:
                    r.set_resources(total, available)
                ws.handle_stimulus(*evs)
            return time.process_time() - start
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


def _handle_in_process(checkout: str | None) -> dict:
    return _one(["--one", "handle"], checkout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=1024, help="leaves of the graph")
    ap.add_argument("--against", metavar="DIR", help="also the recorder of the checkout in DIR")
    ap.add_argument("--one", choices=["bare", "recorded", "handle"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one == "handle":
        import replay.record

        print(json.dumps({**measure_handle(), "recorder": replay.record.__file__}))
        return
    if args.one:
        import replay.record

        print(json.dumps({**run_once(args.tasks, record=args.one == "recorded"),
                          "recorder": replay.record.__file__}))
        return
    from replay.determinism import NANNY_SEED

    if os.environ.get("PYTHONHASHSEED") != NANNY_SEED:
        # the per-stimulus figure replays a log: exact only under its seed
        os.environ["PYTHONHASHSEED"] = NANNY_SEED
        os.execv(sys.executable, [sys.executable, *sys.argv])
    against = os.path.abspath(args.against) if args.against else None
    m = measure(args.repeats, args.tasks, against)
    print(f"workload: {m['tasks']} tasks on 2 workers; {m['events']} events recorded per run; "
          f"load average {m['load'][0]:.1f} before, {m['load'][1]:.1f} after")
    for i, (b, r) in enumerate(zip(m["runs"]["bare"], m["runs"]["recorded"]), 1):
        line = (f"  round {i}: bare {b['seconds']:.3f} s (workers' CPU {b['cpu']:.2f} s), "
                f"recorded {r['seconds']:.3f} s (CPU {r['cpu']:.2f} s)")
        if against:
            o = m["runs"]["before"][i - 1]
            line += f", recorded by {args.against} {o['seconds']:.3f} s (CPU {o['cpu']:.2f} s)"
        print(line)
    print(f"median recorded / median bare: {m['ratio_of_medians']:.3f}x")
    print(f"median of pair ratios: wall {m['ratio']:.3f}x, workers' CPU {m['cpu_ratio']:.3f}x (target <= 1.05x)")
    if against:
        print(f"  recorder of {args.against}: wall {m['before_ratio']:.3f}x, "
              f"workers' CPU {m['before_cpu_ratio']:.3f}x")
    for mode, name in [("recorded", "this checkout")] + ([("before", args.against)] if against else []):
        print(f"the recorder's own CPU in the workers, {name} (logs: {', '.join(m[mode + '_writers'])}): "
              f"{m[mode + '_us_per_call']:.1f} us per call "
              f"beside {m[mode + '_handle_us_per_call']:.1f} us in handle_stimulus "
              f"({m[mode + '_per_handle']:.3f}x its CPU; a thread_time() pair, which each call's timing adds "
              f"about once: {m[mode + '_clock_us']:.1f} us); "
              f"workers' CPU / (workers' CPU - recorder's) = {m[mode + '_own_ratio']:.3f}x (median of runs)")
    for name, checkout in [("this checkout", None)] + ([(args.against, against)] if against else []):
        h = _handle_in_process(checkout) if against else measure_handle()
        print(
            f"per stimulus, in process, {name} ({h['events']} events of a simulated worker): "
            f"handle_stimulus {h['bare_us']:.1f} us bare, {h['recorded_us']:.1f} us recorded "
            f"(+{h['recorded_us'] - h['bare_us']:.1f} us, {h['ratio']:.2f}x; CPU, best of 7)"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
