"""The index of a replay: the cost of building it, its size, and the time of
views answered from it, each side by side with what it replaces.

- indexing pass / bare ``handle_stimulus`` on the same events (one worker);
- index size / log size;
- peak RSS while indexing, above a replay to the end (each a fresh process
  whose memory, with its reader child's, is sampled; the main process's
  ``ru_maxrss`` beside it);
- a fresh CLI process answering load, state, diff, story and why from the
  index (wall time, median), and inside a warm process (the stepper's case),
  as ``benchmarks/views.py`` measures them;
- the first ``replay load`` of a log that has no index / ``REPLAY_INDEX=off``
  ``replay load`` (a big log's first answer replays and indexes afterwards).

    python benchmarks/index.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _common import ROOT, bare_times, ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402


def _fresh(code: str) -> tuple[list[str], float, float]:
    """A fresh process running ``code``: what it printed (words), its own
    peak RSS (``ru_maxrss``: what the kernel kept of that process alone), and
    the peak of the sum over it and its children (the log reader's), sampled
    every 20 ms, in MB."""
    import psutil  # distributed's dependency: here on every machine that replays

    p = subprocess.Popen(
        [sys.executable, "-c", code + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONHASHSEED="6640"))
    proc = psutil.Process(p.pid)
    tree = 0
    while p.poll() is None:
        total = 0
        try:
            members = [proc, *proc.children(recursive=True)]
        except psutil.Error:  # it has just ended
            break
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:  # a child that has just ended
                pass
        tree = max(tree, total)
        time.sleep(0.02)
    out, _ = p.communicate()
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, code)
    words = out.split()
    return words[:-1], int(words[-1]) / 1024, tree / 2**20


def measure_build(path: str) -> dict:
    """Bare replay of the workers in this process; then, each in a fresh
    process whose memory is followed (:func:`_fresh`), a replay to the end
    (the final state) and the index built (its time measured inside it)."""
    from replay.index import index_path

    history = replay.open(path)
    # the handling alone: each worker's events are decoded before its clocks start
    times = [bare_times(w) for w in history.workers]
    bare, bare_cpu = sum(t for t, _ in times), sum(c for _, c in times)
    events = sum(w.events for w in history.workers)
    final = _fresh(f"import replay; h = replay.open({path!r}); [w.state_at(None) for w in h.workers]")
    # the reader's child process is left out of both times: the same for either
    out = index_path(path)
    indexing = _fresh(f"import time, replay; from replay.index import build; h = replay.open({path!r}); "
                      f"t, c = time.perf_counter(), time.process_time(); build(h, {out!r}); "
                      f"print(time.perf_counter() - t, time.process_time() - c)")
    seconds, index_cpu = map(float, indexing[0])
    return {
        "events": events, "bare_s": bare, "index_s": seconds, "ratio": seconds / bare,
        "cpu_ratio": index_cpu / bare_cpu,
        "index_bytes": os.path.getsize(out), "log_bytes": os.path.getsize(path),
        "size_ratio": os.path.getsize(out) / os.path.getsize(path),
        # the sampled peak of each process tree: the kernel's ru_maxrss of the
        # main process alone is given beside it
        "rss_growth_mb": indexing[2] - final[2],
        "rss_indexing_mb": indexing[2], "rss_replay_mb": final[2],
        "maxrss_indexing_mb": indexing[1], "maxrss_replay_mb": final[1],
    }


def _timed_load(log: str, mode: str) -> tuple[float, float, str]:
    """Wall and CPU seconds (the CLI process and its children) of ``replay
    load LOG`` under ``REPLAY_INDEX=mode``, and what it printed on stderr."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cli", "load", log], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=dict(os.environ, REPLAY_INDEX=mode))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stderr


def measure_first_load(path: str, pairs: int = 2) -> dict:
    """The first ``replay load`` of an unindexed log (a fresh link to it, so
    no index exists) against ``REPLAY_INDEX=off`` ``replay load``, in turn.
    The background indexer the first answer starts is stopped once the
    answer is in: the next pair must not share the machine with it."""
    import signal
    import tempfile

    from replay.index import index_path

    first, off, first_cpu, off_cpu, paths = [], [], [], [], []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as d:
        for i in range(pairs):
            log = os.path.join(d, f"{i}-{os.path.basename(path)}")
            try:
                os.link(path, log)
            except OSError:
                import shutil

                shutil.copy(path, log)
            wall, cpu, err = _timed_load(log, "auto")
            lock = index_path(log) + ".lock"
            later = "in the background" in err
            paths.append("later" if later else "same pass")
            if later and os.path.exists(lock):
                with open(lock) as f:
                    try:
                        os.kill(int(f.read()), signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            first.append(wall)
            first_cpu.append(cpu)
            wall, cpu, _ = _timed_load(log, "off")
            off.append(wall)
            off_cpu.append(cpu)
    return {
        "first_s": statistics.median(first), "off_s": statistics.median(off),
        "ratio": statistics.median(first) / statistics.median(off),
        "cpu_ratio": statistics.median(first_cpu) / statistics.median(off_cpu), "paths": paths,
    }


def measure_queries(path: str, repeats: int = 5, seed: int = 0) -> dict:
    """Fresh CLI processes against a current index, and the same views in this
    process: :mod:`views` (``benchmarks/views.py``) measures both."""
    import views

    fresh, warm = views.measure_fresh(path, repeats, seed=seed), views.measure_warm(path, seed=seed)
    return {"cold_s": next(iter(fresh["wall_s"].values())), "warm_ms": warm["median_ms"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--first-load", action="store_true", help="also time the first load against REPLAY_INDEX=off")
    a = ap.parse_args()
    path = a.log or simulated_log(a.events)
    if a.first_load:
        f = measure_first_load(path)
        print(f"first replay load, no index: {f['first_s']:.1f} s, REPLAY_INDEX=off: {f['off_s']:.1f} s: "
              f"{f['ratio']:.2f}x, CPU {f['cpu_ratio']:.2f}x (target <= 1.2x; answered by: {', '.join(f['paths'])})")
    b = measure_build(path)
    print(f"{b['events']} events: indexing {b['index_s']:.1f} s, bare handle_stimulus {b['bare_s']:.1f} s: "
          f"{b['ratio']:.2f}x, CPU {b['cpu_ratio']:.2f}x (target <= 1.3x)")
    print(f"index {b['index_bytes'] / 1e6:.0f} MB, log {b['log_bytes'] / 1e6:.0f} MB: "
          f"{b['size_ratio']:.2f}x (target <= 0.3x); peak RSS indexing - replaying to the end: "
          f"{b['rss_growth_mb']:.0f} MB ({b['rss_indexing_mb']:.0f} - {b['rss_replay_mb']:.0f} MB, sampled, with the "
          f"reader; ru_maxrss of the main process: {b['maxrss_indexing_mb']:.0f} - {b['maxrss_replay_mb']:.0f} MB) "
          f"(target <= 300 MB)")
    q = measure_queries(path, a.repeats)
    print("fresh CLI process, median: " + ", ".join(f"{k} {v:.2f} s" for k, v in q["cold_s"].items())
          + "  (target <= 0.3 s)")
    print("warm process, median: " + ", ".join(f"{k} {v:.1f} ms" for k, v in q["warm_ms"].items())
          + "  (target <= 20 ms)")
