"""View latency on a log whose index is current, measured side by side in one run.

- fresh: each view (load, state, diff, story, why) as a whole ``replay``
  process (``python -m cli``, ``REPLAY_INDEX=required``: a missing or stale
  index fails instead of replaying), wall and CPU (``RUSAGE_CHILDREN``), the
  median of ``--runs`` random steps; the project's modules byte-compiled
  first, as an installed copy's are;
- warm: the same views inside one process that has the index open (the
  stepper's case), and the stepper's pane, at random steps: median and p95.

With ``--vs ROOT`` (another checkout of the project, e.g. ``git worktree add
/tmp/base main``) each figure is also taken with ROOT's code, interleaved
run by run, so that both see the same load; the machine's load average is
printed beside them. The warm figures of each tree come from processes of
its own, the trees in turn on other random steps each round.

    python benchmarks/views.py [LOG] [--events N] [--runs K] [--steps S] [--vs ROOT [--vs-log LOG2]]
                               [--only fresh|warm]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VIEWS = ("load", "state", "diff", "story", "why")


def _env(root: str) -> dict:
    # the tree's own code first: the editable install points at one tree only
    return dict(os.environ, REPLAY_INDEX="required", PYTHONPATH=root)


def plan(path: str, runs: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """``runs`` sets of command lines, one per view, at random steps of the
    busiest worker (read from the index, in a child: this process stays as
    light as the views it times)."""
    code = (
        "import json, random, sys; from replay.index import Index; from replay.literal import key_text\n"
        "index = Index.open(sys.argv[1])\n"
        "if index is None: sys.exit(sys.argv[1] + ': no current index; run `replay index` on it first')\n"
        "w = max(index.workers, key=lambda w: w.events); rng = random.Random(int(sys.argv[2]))\n"
        "steps = [rng.randint(1, w.events) for _ in range(int(sys.argv[3]))]\n"
        "held = [sorted(w.frozen(s).ws.tasks, key=repr) for s in steps]\n"
        "keys = [key_text(ts[len(ts) // 2]) if ts else None for ts in held]\n"
        "print(json.dumps([w.address, steps, keys]))"
    )
    out = subprocess.run([sys.executable, "-c", code, path, str(seed), str(runs)], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=_env(ROOT)).stdout
    address, steps, keys = json.loads(out)
    return [{
        "load": ["load", path],
        "state": ["state", path, "-w", address, "--at", str(step)],
        "diff": ["diff", path, f"{max(0, step - 1000)}..{step}", "-w", address],
        # a key the worker holds at the step: a story with lines
        "story": ["story", path, key or "x", "-w", address, "--at", str(step)],
        "why": ["why", path, "-w", address, "--at", str(step)],
    } for step, key in zip(steps, keys)]


def _one(root: str, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``replay`` process run from ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], cwd=root, check=True, env=_env(root),
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compiled(root: str) -> None:
    """Byte-compile ``root``'s own modules, as installing a package does: a
    fresh process then reads them as an installed copy would, even where
    ``PYTHONDONTWRITEBYTECODE`` is set (it stops writing, not reading)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cli.py", "replay", "schemas"],
                   cwd=root, check=True, stdout=subprocess.DEVNULL)


def measure_fresh(path: str, runs: int = 5, roots: tuple[str, ...] = (ROOT,), seed: int = 0,
                  logs: Optional[dict[str, str]] = None) -> dict:
    """Per tree, per view: median wall and CPU seconds of a fresh process
    (each tree byte-compiled first: :func:`compiled`); ``logs``: a tree's
    own copy of the log (its index of another layout beside it)."""
    logs = logs or {}
    for root in roots:
        compiled(root)
    wall: dict = {r: {v: [] for v in VIEWS} for r in roots}
    cpu: dict = {r: {v: [] for v in VIEWS} for r in roots}
    load = [os.getloadavg()[0]]
    for cases in plan(path, runs, seed):
        for view in VIEWS:
            for root in roots:  # interleaved: each pair sees the same load
                w, c = _one(root, [logs.get(root, path) if a == path else a for a in cases[view]])
                wall[root][view].append(w)
                cpu[root][view].append(c)
    load.append(os.getloadavg()[0])
    return {
        "wall_s": {r: {v: statistics.median(x) for v, x in d.items()} for r, d in wall.items()},
        "cpu_s": {r: {v: statistics.median(x) for v, x in d.items()} for r, d in cpu.items()},
        "load": load,
    }


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def measure_warm(path: str, steps: int = 50, seed: int = 0) -> dict:
    """In this process, the index open: each view at ``steps`` random steps
    (after one untimed view, as a stepper has shown one), median and p95 ms,
    wall and CPU."""
    from replay.index import Index
    from replay.stepview import indexed_step_view

    index = Index.open(path)
    if index is None:
        raise ValueError(f"{path}: no current index; run `replay index` on it first")
    w = max(index.workers, key=lambda w: w.events)
    rng = random.Random(seed)
    at = [rng.randint(1, w.events) for _ in range(steps)]
    # a key held at each step: a story with lines, as a user asks of a task on screen
    keys = []
    for s in at:
        tasks = sorted(w.frozen(s).ws.tasks, key=repr)
        keys.append(tasks[rng.randrange(len(tasks))] if tasks else None)
    start = w.info["first_handled"]
    views = {
        "state": lambda s, k: w.state(s),
        "diff": lambda s, k: w.diff(max(0, s - 1), s),
        "story": lambda s, k: w.key_story(s, k),
        "why": lambda s, k: w.why(s),
        "pane": lambda s, k: indexed_step_view(w, s, w.events, start),
    }
    wall: dict[str, list[float]] = {v: [] for v in views}
    cpu: dict[str, list[float]] = {v: [] for v in views}
    load = [os.getloadavg()[0]]
    views["state"](at[0] // 2 or 1, None)  # warm: the index open and read once
    for s, k in zip(at, keys):
        for name, fn in views.items():
            t, c = time.perf_counter(), time.process_time()
            try:
                fn(s, k)
            except LookupError:  # the key has no story by then: still a full query
                pass
            wall[name].append((time.perf_counter() - t) * 1e3)
            cpu[name].append((time.process_time() - c) * 1e3)
    load.append(os.getloadavg()[0])
    return {
        "median_ms": {k: statistics.median(v) for k, v in wall.items()},
        "p95_ms": {k: _p95(v) for k, v in wall.items()},
        "cpu_median_ms": {k: statistics.median(v) for k, v in cpu.items()},
        "load": load, "tasks_median": statistics.median(len(w.frozen(s).ws.tasks) for s in at[:5]),
        "wall_ms": wall, "cpu_ms": cpu,
    }


def warm_side_by_side(roots: tuple[str, ...], path: str, steps: int, rounds: int = 4,
                      logs: Optional[dict[str, str]] = None) -> dict:
    """:func:`measure_warm` of each tree in turn, ``rounds`` times on other
    random steps, so that every tree sees the same load; per tree: medians and
    p95 over every round's steps, and the load at each round."""
    out: dict = {r: {"wall_ms": {}, "cpu_ms": {}, "load": []} for r in roots}
    for i in range(rounds):
        for root in roots:
            m = warm_in(root, (logs or {}).get(root, path), max(1, steps // rounds), seed=i)
            for part in ("wall_ms", "cpu_ms"):
                for view, xs in m[part].items():
                    out[root][part].setdefault(view, []).extend(xs)
            out[root]["load"] += m["load"]
            out[root]["tasks_median"] = m["tasks_median"]
    for m in out.values():
        m["median_ms"] = {k: statistics.median(v) for k, v in m["wall_ms"].items()}
        m["p95_ms"] = {k: _p95(v) for k, v in m["wall_ms"].items()}
        m["cpu_median_ms"] = {k: statistics.median(v) for k, v in m["cpu_ms"].items()}
    return out


def warm_in(root: str, path: str, steps: int, seed: int = 0) -> dict:
    """:func:`measure_warm` in a fresh process running ``root``'s code."""
    code = (f"import json, sys; sys.path.insert(1, {HERE!r}); import views; "
            f"print(json.dumps(views.measure_warm({path!r}, {steps}, {seed})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True,
                         env=_env(root)).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(label: str, d: dict, unit: str, scale: float = 1.0) -> str:
    return f"{label}: " + ", ".join(f"{k} {v * scale:.{0 if unit == 'ms' else 2}f}" for k, v in d.items()) + f" {unit}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per view (random steps)")
    ap.add_argument("--steps", type=int, default=50, help="random steps of the warm views")
    ap.add_argument("--vs", metavar="ROOT", help="another checkout to time side by side (run first)")
    ap.add_argument("--vs-log", metavar="LOG", help="ROOT's own copy (a hard link) of the log, where "
                    "ROOT's index has another layout: each tree reads its own index")
    ap.add_argument("--only", choices=("fresh", "warm"), help="one of the two")
    a = ap.parse_args()
    if a.log:
        path = a.log
    else:
        sys.path.insert(0, HERE)
        from _common import simulated_log

        path = simulated_log(a.events)
    roots = (a.vs, ROOT) if a.vs else (ROOT,)
    logs = {a.vs: a.vs_log} if a.vs and a.vs_log else {}
    print(f"{path}; {os.cpu_count()} CPUs; fresh: median of {a.runs}; warm: {a.steps} steps", flush=True)
    if a.only != "warm":
        f = measure_fresh(path, a.runs, roots, logs=logs)
        for root in roots:
            print(f"[{root}] fresh, load {f['load'][0]:.1f}-{f['load'][1]:.1f}", flush=True)
            print("  " + _row("wall", f["wall_s"][root], "s"))
            print("  " + _row("CPU ", f["cpu_s"][root], "s"))
    if a.only == "fresh":
        return
    warm = warm_side_by_side(roots, path, a.steps, logs=logs) if len(roots) > 1 else {ROOT: warm_in(ROOT, path, a.steps)}
    for root, m in warm.items():
        print(f"[{root}] warm, load {min(m['load']):.1f}-{max(m['load']):.1f}, ~{m['tasks_median']:.0f} tasks",
              flush=True)
        print("  " + _row("median", m["median_ms"], "ms"))
        print("  " + _row("p95   ", m["p95_ms"], "ms"))
        print("  " + _row("CPU median", m["cpu_median_ms"], "ms"))
    print("targets: fresh <= 0.3 s, warm <= 20 ms")


if __name__ == "__main__":
    main()
