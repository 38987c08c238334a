"""Bounded recording: the snapshot pause, the recorder's overhead with rolling
segments, and the disk a worker keeps, measured side by side.

- Pause side by side (``measure_capture``): on one state, alternating, the
  snapshot encoded and written on the loop against the capture the loop
  waits for now, and the loop's longest tick while the thread encodes.
- Pause: a real ``WorkerState`` holding 10,000 tasks (5,000 computed tasks,
  each with one input on a peer, driven through ``handle_stimulus`` into
  every state: memory, executing, ready, fetch, flight, waiting); the time
  ``Session._roll`` holds the event loop (snapshot, encoding, header
  written), median and worst of several, and the time to rebuild a
  ``WorkerState`` from it (off the worker, at read time).
- Overhead: the workload of ``record_overhead.py`` on a real two-worker
  ``LocalCluster`` (nanny processes), bare, recorded unbounded and recorded
  with a bound whose segments roll every few seconds (8 MB: segments of
  800 kB, one every 2 s or so of this workload; the time between rolls is
  printed), in rotating order in one run; wall
  ratios and the workers' CPU-time ratios (``process_time`` in each worker
  around the workload). ``--max-bytes 1000000`` rolls every 0.4 s instead.
- Disk: each bounded worker's folder after the run against the bound plus
  one segment (a run that writes several times its bound, with the oldest
  segments deleted: ``examples/bounded_cluster.py``).

    python benchmarks/recorder_bounded.py [--repeats N] [--tasks N] [--pause-only]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from operator import add

from _common import ROOT  # noqa: F401  (puts the project on sys.path)

import dask  # noqa: E402
import orjson  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from distributed import worker_state_machine as wsm  # noqa: E402

from record_overhead import _cpu, graph  # noqa: E402
from replay import Recorder  # noqa: E402
from replay.determinism import make_deterministic  # noqa: E402
from replay.engine import Replayer  # noqa: E402
from replay.logfile import encode_line  # noqa: E402
from replay.record import Session  # noqa: E402
from replay.segments import Bound, segment_files  # noqa: E402
from replay.snapshot import capture, take  # noqa: E402


def busy_state(tasks: int, folder: str | None = None) -> tuple[wsm.WorkerState, Session | None]:
    """A WorkerState holding ``tasks`` tasks in every state, recorded as
    segments into ``folder`` if given."""
    make_deterministic()
    ws = wsm.WorkerState(nthreads=4, address="tcp://127.0.0.1:1", validate=False,
                         transfer_incoming_count_limit=4)
    session = None
    if folder is not None:
        # key hashing is on already: no seed check
        session = Session(ws, directory=folder, deterministic=False, bound=Bound(segment_steps=10**9))
    n = tasks // 2
    peers = [f"tcp://127.0.0.2:{p}" for p in range(8)]
    evs = [wsm.ComputeTaskEvent.dummy(("y", i), who_has={("x", i): [peers[i % 8]]},
                                      priority=(0, i), stimulus_id=f"c{i}") for i in range(n)]
    ws.handle_stimulus(*evs)
    # some inputs arrive: their tasks become ready, and a few start
    for i in range(0, n, 3):
        ws.handle_stimulus(wsm.UpdateDataEvent(data={("x", i): 1}, stimulus_id=f"u{i}"))
    return ws, session


def measure_pause(tasks: int = 10_000, repeats: int = 7) -> dict:
    folder = tempfile.mkdtemp(prefix="dask-replay-bench-")
    ws, session = busy_state(tasks, folder)
    assert session is not None and session.active
    try:
        cpu = []
        for _ in range(repeats):
            t0 = time.process_time()
            session._roll(ws, time.time())
            cpu.append(time.process_time() - t0)
            session.writer.wait()  # the thread's encoding: not the loop's pause
        pauses = session.snapshot_pauses
        # what the box gives now: a bare handle_stimulus, per event
        bare, _ = busy_state(2000)
        evs = [wsm.ComputeTaskEvent.dummy(("z", i), who_has={("q", i): ["tcp://127.0.0.2:1"]},
                                          priority=(1, i), stimulus_id="z") for i in range(2000)]
        t0 = time.process_time()
        for ev in evs:
            bare.handle_stimulus(ev)
        bare_us = (time.process_time() - t0) / len(evs) * 1e6
        header = orjson.loads(open(segment_files(session.path)[-1], "rb").readline())
        nbytes = len(orjson.dumps(header["snapshot"]))
        t0 = time.perf_counter()
        r = Replayer(header)
        rebuild = time.perf_counter() - t0
        assert len(r.ws.tasks) == len(ws.tasks)
    finally:
        session.close("benchmark")
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "tasks": len(ws.tasks),
        "median_ms": statistics.median(pauses) * 1e3,
        "max_ms": max(pauses) * 1e3,
        "cpu_median_ms": statistics.median(cpu) * 1e3,
        "bare_handle_us": bare_us,
        "snapshot_bytes": nbytes,
        "rebuild_ms": rebuild * 1e3,
    }


def measure_capture(tasks: int = 10_000, repeats: int = 9) -> dict:
    """The event loop's pause at a segment, side by side in one process, on
    the same ``WorkerState``, alternating: the whole snapshot encoded and
    written on the loop (as the recorder did before the capture existed:
    ``take``, then the header line written) against ``Session._roll`` now
    (the capture on the loop, encoded on a thread), and ``_roll`` with a
    task alive outside ``ws.tasks`` (the capture then looks up every task
    referred to, where it otherwise rules orphans out by count). While the
    thread encodes, a loop of small ticks (0.5 ms asleep, then about 0.1 ms of
    work, as an event loop between messages) measures its longest tick: the
    loop's longest wait for the GIL the thread holds, plus the tick."""
    folder = tempfile.mkdtemp(prefix="dask-replay-bench-")
    ws, session = busy_state(tasks, folder)
    assert session is not None and session.active
    whole_cpu, whole_wall, cpu, wall, stall, encode_wall, alone = [], [], [], [], [], [], []
    ids_cpu, ids_wall = [], []
    # which way the capture ruled out orphans: by count here (one WorkerState
    # in this process), by looking up every reference where a task is alive
    # outside ws.tasks (a second worker in the process, a broken state)
    assert capture(ws, seq=session.seq, handled=None).orphans_by == "count"
    try:
        for _ in range(repeats):
            stray = wsm.TaskState("stray")
            assert capture(ws, seq=session.seq, handled=None).orphans_by == "ids"
            c0, t0 = time.process_time(), time.perf_counter()
            session._roll(ws, time.time())
            ids_cpu.append(time.process_time() - c0)
            ids_wall.append(time.perf_counter() - t0)
            session.writer.wait()
            del stray
            with open(os.path.join(folder, "whole.jsonl"), "wb", buffering=0) as f:
                c0, t0 = time.process_time(), time.perf_counter()
                f.write(encode_line({"kind": "header", "snapshot": take(ws, seq=session.seq, handled=None)}))
                whole_cpu.append(time.process_time() - c0)
                whole_wall.append(time.perf_counter() - t0)
            c0, t0 = time.process_time(), time.perf_counter()
            session._roll(ws, time.time())
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
            writer = session.writer
            assert writer is not None and writer._thread is not None  # encoded on the thread
            # each tick: asleep 0.5 ms (the GIL released), then 0.1 ms of work;
            # the longest: the GIL held by the thread, or the box's load, which
            # the same ticks as long again without the thread measure
            stall.append(_longest_tick(lambda: writer.pending))
            encode_wall.append(time.perf_counter() - t0)
            writer.wait()
            until = time.perf_counter() + encode_wall[-1]
            alone.append(_longest_tick(lambda: time.perf_counter() < until))
    finally:
        session.close("benchmark")
        shutil.rmtree(folder, ignore_errors=True)
    ms = 1e3
    return {
        "tasks": len(ws.tasks),
        "whole_median_ms": statistics.median(whole_wall) * ms, "whole_max_ms": max(whole_wall) * ms,
        "whole_cpu_median_ms": statistics.median(whole_cpu) * ms, "whole_cpu_max_ms": max(whole_cpu) * ms,
        "median_ms": statistics.median(wall) * ms, "max_ms": max(wall) * ms,
        "cpu_median_ms": statistics.median(cpu) * ms, "cpu_max_ms": max(cpu) * ms,
        "ids_median_ms": statistics.median(ids_wall) * ms, "ids_max_ms": max(ids_wall) * ms,
        "ids_cpu_median_ms": statistics.median(ids_cpu) * ms, "ids_cpu_max_ms": max(ids_cpu) * ms,
        "stall_median_ms": statistics.median(stall) * ms, "stall_max_ms": max(stall) * ms,
        "encoded_median_ms": statistics.median(encode_wall) * ms,
        "alone_median_ms": statistics.median(alone) * ms, "alone_max_ms": max(alone) * ms,
    }


def _longest_tick(going) -> float:
    last, worst = time.perf_counter(), 0.0
    while going():
        time.sleep(0.0005)
        x = 0
        for i in range(300):
            x += i
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    return worst


def print_capture(p: dict) -> None:
    print(f"pause at a segment, {p['tasks']} tasks, side by side: snapshot encoded on the loop (before) "
          f"median {p['whole_median_ms']:.1f} ms, max {p['whole_max_ms']:.1f} ms (CPU median "
          f"{p['whole_cpu_median_ms']:.1f}, max {p['whole_cpu_max_ms']:.1f}); captured on the loop (now) "
          f"median {p['median_ms']:.1f} ms, max {p['max_ms']:.1f} ms (CPU median {p['cpu_median_ms']:.1f}, "
          f"max {p['cpu_max_ms']:.1f}); the same with a task alive outside ws.tasks (every reference "
          f"looked up) median {p['ids_median_ms']:.1f} ms, max {p['ids_max_ms']:.1f} ms (CPU median "
          f"{p['ids_cpu_median_ms']:.1f}, max {p['ids_cpu_max_ms']:.1f}); the thread wrote it {p['encoded_median_ms']:.0f} ms after (median), "
          f"the longest tick of a loop meanwhile {p['stall_max_ms']:.1f} ms (median of each run's longest "
          f"{p['stall_median_ms']:.1f} ms), without the thread for as long {p['alone_max_ms']:.1f} ms "
          f"(median {p['alone_median_ms']:.1f} ms; a tick is about 0.6 ms)")


def run_once(leaves: int, mode: str, max_bytes: int) -> dict:
    logdir = tempfile.mkdtemp(prefix="dask-replay-bench-")
    dsk, (root,) = graph(leaves)
    try:
        with dask.config.set({"distributed.scheduler.worker-ttl": None}):
            with LocalCluster(
                n_workers=0, processes=True, threads_per_worker=1,
                dashboard_address="127.0.0.1:0", host="127.0.0.1",
            ) as cluster, Client(cluster) as client:
                if mode == "unbounded":
                    client.register_plugin(Recorder(logdir))
                elif mode == "bounded":
                    client.register_plugin(Recorder(logdir, max_bytes=max_bytes))
                cluster.scale(2)
                client.wait_for_workers(2, timeout=60)
                client.get({("w", i): (add, i, 1) for i in range(20)}, [("w", i) for i in range(20)])
                cpu0 = client.run(_cpu)
                start = time.perf_counter()
                result = client.get(dsk, root)
                elapsed = time.perf_counter() - start
                cpu1 = client.run(_cpu)
                assert result == sum(2 * i + 2 for i in range(leaves)), result
                pauses = []
                if mode == "bounded":
                    pauses = sum(client.run(lambda dask_worker: [
                        p for plugin in dask_worker.plugins.values() if isinstance(plugin, Recorder)
                        for s in plugin._sessions.values() for p in s.snapshot_pauses]).values(), [])
        # the workers' CPU on the workload, all their threads (not their start)
        out = {"seconds": elapsed, "cpu": sum(cpu1[w] - cpu0[w] for w in cpu1), "pauses": pauses}
        if mode == "bounded":
            folders = [os.path.join(logdir, f) for f in os.listdir(logdir) if f.endswith(".segments")]
            out["kept"] = [sum(os.path.getsize(p) for p in segment_files(f)) for f in folders]
            out["largest_segment"] = max(os.path.getsize(p) for f in folders for p in segment_files(f))
            out["segments"] = [int(os.path.basename(segment_files(f)[-1]).split(".")[0]) for f in folders]
        if mode == "unbounded":
            out["written"] = [os.path.getsize(os.path.join(logdir, f)) for f in os.listdir(logdir)]
        return out
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def measure(repeats: int = 3, leaves: int = 1024, max_bytes: int = 8_000_000) -> dict:
    """Bare, unbounded and bounded runs in rotating order; median ratios."""
    modes = ["bare", "unbounded", "bounded"]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(repeats):
        for m in modes[i % 3:] + modes[: i % 3]:
            runs[m].append(run_once(leaves, m, max_bytes))

    def ratio(m: str, key: str) -> float:
        return statistics.median(r[key] / b[key] for r, b in zip(runs[m], runs["bare"]))

    bounded = runs["bounded"]
    pauses = [p for r in bounded for p in r["pauses"]]
    return {
        "unbounded": ratio("unbounded", "seconds"),
        "bounded": ratio("bounded", "seconds"),
        "unbounded_cpu": ratio("unbounded", "cpu"),
        "bounded_cpu": ratio("bounded", "cpu"),
        "max_bytes": max_bytes,
        "written": max(max(r["written"]) for r in runs["unbounded"]),
        "kept_max": max(max(r["kept"]) for r in bounded),
        "largest_segment": max(r["largest_segment"] for r in bounded),
        "segments": max(max(r["segments"]) for r in bounded),
        "seconds": statistics.median(r["seconds"] for r in bounded),
        # the workload's time over the rolls of its busiest worker
        "roll_every_s": statistics.median(r["seconds"] / max(r["segments"]) for r in bounded),
        "pause_max_ms": max(pauses) * 1e3 if pauses else 0.0,
        "pause_median_ms": statistics.median(pauses) * 1e3 if pauses else 0.0,
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=1024, help="leaves of the graph")
    ap.add_argument("--max-bytes", type=int, default=8_000_000)
    ap.add_argument("--pause-only", action="store_true", help="only the pause at a segment, side by side")
    args = ap.parse_args()
    print_capture(measure_capture())
    if args.pause_only:
        return
    p = measure_pause()
    print(f"snapshot pause at {p['tasks']} tasks: median {p['median_ms']:.1f} ms (CPU "
          f"{p['cpu_median_ms']:.1f} ms), worst {p['max_ms']:.1f} ms ({p['snapshot_bytes'] / 1e6:.1f} MB); "
          f"rebuild {p['rebuild_ms']:.0f} ms; a bare handle_stimulus {p['bare_handle_us']:.0f} µs/event now")
    m = measure(args.repeats, args.tasks, args.max_bytes)
    print(f"overhead vs bare, median of {args.repeats} rotations: unbounded {m['unbounded']:.3f}x "
          f"(CPU {m['unbounded_cpu']:.3f}x), bounded {m['bounded']:.3f}x (CPU {m['bounded_cpu']:.3f}x)")
    print(f"bounded: {m['segments']} segments per worker in {m['seconds']:.1f} s (one every "
          f"{m['roll_every_s']:.1f} s); kept at most "
          f"{m['kept_max']} B of bound {m['max_bytes']} + one segment ({m['largest_segment']} B); "
          f"an unbounded worker wrote {m['written']} B; pauses median {m['pause_median_ms']:.1f} ms, "
          f"worst {m['pause_max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
