"""Record a real LocalCluster with a bound, until each worker has written
several times it, and show that what is kept stays within the bound.

    python examples/bounded_cluster.py LOGDIR [--bound 50MB] [--times 3] [--limit 3600]

The workers are nanny processes (their hash seed is fixed) recorded through
the preload, configured only by the environment as the README documents
(``DASK_REPLAY__DIRECTORY``, ``DASK_REPLAY__MAX_BYTES``). 10,000 results are
held in memory for the whole run, so every snapshot holds about 5,000 tasks
per worker; then waves of a 12,000-task graph run until every worker's
segment numbers say it wrote ``--times`` the bound. While it runs, the size
of each worker's folder is read every 0.2 s: the largest seen is what the
worker kept at worst, the segment being written included. At the end
``replay verify`` replays every kept segment from its snapshot and
``replay load`` says what is not kept. Each worker's snapshot pauses are
printed, and how each capture ruled out tasks outside ``ws.tasks``: by
counting them, or ("ids") by looking up every task referred to, the slower
way, taken when a task was alive outside the worker's state.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from operator import add


def graph(leaves: int) -> tuple[dict, str]:
    """Leaves, a layer pairing far-apart leaves, and a tree reduction."""
    dsk: dict = {("x", i): (add, i, 1) for i in range(leaves)}
    half = leaves // 2
    for i in range(leaves):
        dsk["y", i] = (add, ("x", i), ("x", (i + half) % leaves))
    layer = [("y", i) for i in range(leaves)]
    level = 0
    while len(layer) > 1:
        level += 1
        layer_next = []
        for j in range(0, len(layer), 2):
            key = ("sum", level, j // 2)
            dsk[key] = (sum, layer[j : j + 2])
            layer_next.append(key)
        layer = layer_next
    return dsk, layer[0]


class Watch(threading.Thread):
    """The largest size each worker's folder of segments reached."""

    def __init__(self, logdir: str):
        super().__init__(daemon=True)
        self.logdir = logdir
        self.largest: dict[str, int] = {}
        self.last_number: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from replay.segments import FOLDER_SUFFIX, segment_files

        while not self.stop.wait(0.2):
            for name in os.listdir(self.logdir):
                if not name.endswith(FOLDER_SUFFIX):
                    continue
                kept = 0
                files = segment_files(os.path.join(self.logdir, name))
                for path in files:
                    try:
                        kept += os.path.getsize(path)
                    except FileNotFoundError:  # deleted since listed
                        pass
                self.largest[name] = max(self.largest.get(name, 0), kept)
                if files:
                    self.last_number[name] = int(os.path.basename(files[-1]).split(".")[0])


def _snapshots(dask_worker) -> dict:
    """In a worker: its recorder's snapshot pauses, wall and the loop's own
    CPU (wall above it is waiting for a core), in ms, and how many captures
    ruled out tasks outside ``ws.tasks`` each way ("ids" is the slower)."""
    sessions = [s for plugin in dask_worker.plugins.values() if type(plugin).__name__ == "Recorder"
                for s in plugin._sessions.values() if s.segments is not None]
    return {
        "pauses_ms": sorted(round(p * 1000, 1) for s in sessions for p in s.snapshot_pauses),
        "pause_cpu_ms": sorted(round(p * 1000, 1) for s in sessions for p in s.snapshot_pause_cpu),
        "orphans_by": {way: sum(s.segments.orphans_by[way] for s in sessions)
                       for way in sorted({w for s in sessions for w in s.segments.orphans_by})},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("logdir")
    ap.add_argument("--bound", default="50MB")
    ap.add_argument("--times", type=float, default=3.0, help="run until each worker wrote this many bounds")
    ap.add_argument("--limit", type=float, default=3600, help="seconds at most")
    a = ap.parse_args()
    shutil.rmtree(a.logdir, ignore_errors=True)
    os.makedirs(a.logdir)
    # the nannies' workers read these: the preload is configured as the README says
    os.environ["DASK_REPLAY__DIRECTORY"] = a.logdir
    os.environ["DASK_REPLAY__MAX_BYTES"] = a.bound

    import dask
    from distributed import Client, LocalCluster

    from replay.segments import parse_bytes, segment_files

    bound = parse_bytes(a.bound)
    # a segment is closed at a tenth of the bound (and a snapshot on top):
    # this many closed segments wrote at least ``times`` bounds
    wanted = int(10 * a.times) + 1
    watch = Watch(a.logdir)
    watch.start()
    t0 = time.time()
    with dask.config.set({"distributed.scheduler.worker-ttl": None}):
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=2, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", preload=["replay.record"]) as cluster, \
                Client(cluster) as client:
            held = client.map(lambda i: i, range(10_000), key=[f"held-{i}" for i in range(10_000)])
            client.gather(held[:10])
            waves = 0
            while True:
                dsk, root = graph(4096)  # the same keys each wave: released in between
                client.get(dsk, root)
                waves += 1
                numbers = dict(watch.last_number)
                print(f"{time.time() - t0:6.0f} s  wave {waves}: last segment {numbers}", flush=True)
                if (len(numbers) == 2 and min(numbers.values()) >= wanted) or time.time() - t0 > a.limit:
                    break
            snapshots = client.run(_snapshots)
            del held
    seconds = time.time() - t0
    watch.stop.set()
    watch.join()
    out = {"bound": bound, "seconds": round(seconds), "waves": waves,
           "workers": {name: {"largest_kept": watch.largest[name], "last_segment": watch.last_number[name],
                              "within_bound": watch.largest[name] <= bound}
                       for name in sorted(watch.largest)},
           "snapshots": snapshots}
    replay = [sys.executable, "-m", "cli"]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in sorted(watch.largest):
        folder = os.path.join(a.logdir, name)
        v = subprocess.run([*replay, "verify", folder, "--json"], cwd=here, capture_output=True, text=True)
        out["workers"][name]["kept_segments"] = len(segment_files(folder))
        out["workers"][name]["verify_exit"] = v.returncode
        out["workers"][name]["verify"] = v.stdout.strip()[-2000:]
    load = subprocess.run([*replay, "load", a.logdir], cwd=here, capture_output=True, text=True)
    out["load"] = [line for line in load.stdout.splitlines() if "not kept" in line or line.startswith("worker")]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
