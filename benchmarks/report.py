"""``replay report`` on a big log: the page's size, the time to build it, and
the time headless Chromium takes to draw it, each beside what it compares to.

- building the report's data (one replay per worker, the headline, ``why``
  and the stories from the log's index, built beforehand) / a bare replay of
  the same workers (``--no-bare`` leaves the bare replay out);
- the page's bytes, and how many bars were drawn one by one or counted per
  pixel column;
- headless Chromium, offline, loading the page until every worker's plots are
  drawn, minus the same browser loading an empty page (its own start-up), and
  minus the same page with nothing on its plots (Bokeh's own start-up); wall
  and the browser's CPU time (its processes' user + system) side by side,
  alternating, the least of ``repeats`` runs each; and the page's own clock:
  Bokeh's "document idle" time, from the start of the navigation to every
  plot drawn.

``--data FILE`` keeps the built report (a pickle) and reuses it when present:
the page can be measured again without replaying the log again.

    python benchmarks/report.py [LOG] [--events N] [--data FILE] [--no-bare] [--repeats N] [--wait-index]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from _common import bare_times, ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402
from replay.index import Index  # noqa: E402
from replay.index import build as build_index  # noqa: E402
from replay.report import StateCounts, build  # noqa: E402
from replay.report_page import page  # noqa: E402
from replay.source import open_source  # noqa: E402

EMPTY = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>empty</title></head><body></body></html>"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


#: Bokeh's own console line once every plot is drawn, in ms since the page's navigation began
IDLE = re.compile(r"document idle at (\d+) ms")


def _browse(path: str, profile: str) -> tuple[float, float, str, int | None]:
    """Wall and CPU seconds of one headless Chromium loading ``path`` to its
    DOM, and when Bokeh said the page was drawn (None: no Bokeh on it)."""
    command = ["chromium", "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=10000", *(["--no-sandbox"] if os.geteuid() == 0 else []),
               "--dump-dom", "file://" + os.path.abspath(path)]
    cpu, t = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    idle = IDLE.search(done.stderr)
    return time.perf_counter() - t, _children_cpu() - cpu, done.stdout, None if idle is None else int(idle[1])


class _WhenIndexed:
    """The log's index, opened when the report first asks it something: the
    report's replay runs while ``replay index`` (another process) still
    writes it. How long it waited is left out of the build's time."""

    def __init__(self, log: str):
        self.log = log
        self.index = None
        self.waited = 0.0

    def __getattr__(self, name: str):
        if self.index is None:
            t = time.perf_counter()
            while (index := Index.open(self.log)) is None:
                time.sleep(5)
            self.waited += time.perf_counter() - t
            self.index = index
        return getattr(self.index, name)


def built(log: str, data: str | None, bare: bool, wait_index: bool = False) -> tuple[object, dict]:
    """The report of ``log`` and what building it cost (from ``data`` when kept there)."""
    if data and os.path.exists(data):
        with open(data, "rb") as f:
            return pickle.load(f)
    history = replay.open(log)
    out: dict = {"index_s": None, "index_cpu_s": None}  # None: the log's index was current already
    if Index.open(log) is None and not wait_index:
        t, cpu = time.perf_counter(), time.process_time()
        build_index(history)  # answers the headline, why and the stories, as after a first `replay report`
        out.update(index_s=time.perf_counter() - t, index_cpu_s=time.process_time() - cpu)
    source = _WhenIndexed(log) if wait_index else open_source(log, history=lambda: history)
    t, cpu = time.perf_counter(), time.process_time()
    report = build(history, source)
    waited = source.waited if wait_index else 0.0
    assert report.source == "indexed"
    out.update(build_s=time.perf_counter() - t - waited, build_cpu_s=time.process_time() - cpu,
               waited_for_index_s=waited, events=sum(w.events for w in history.workers))
    if bare:
        cpu = time.process_time()
        out["bare_s"] = sum(bare_times(w)[0] for w in history.workers)
        out["bare_cpu_s"] = time.process_time() - cpu
        out["ratio"] = out["build_s"] / out["bare_s"]
        out["cpu_ratio"] = out["build_cpu_s"] / out["bare_cpu_s"]
    if data:
        with open(data, "wb") as f:
            pickle.dump((report, out), f)
    return report, out


def measure(log: str, repeats: int = 3, data: str | None = None, bare: bool = True,
            wait_index: bool = False) -> dict:
    report, out = built(log, data, bare, wait_index)
    t = time.perf_counter()
    html = page(report)
    out.update(
        page_s=time.perf_counter() - t, page_bytes=len(html.encode()),
        bars=sum(len(w.bars) for w in report.workers),
        counted=sum(b.count for w in report.workers for b in w.buckets),
        columns=sum(len(w.buckets) for w in report.workers), bucket_ms=report.bucket * 1e3,
        samples=sum(len(w.counts.steps) for w in report.workers),
        unfinished=sum(len(w.unfinished) for w in report.workers),
    )
    if shutil.which("chromium"):
        with tempfile.TemporaryDirectory() as tmp:
            paths = {name: os.path.join(tmp, f"{name}.html") for name in ("report", "bare", "empty")}
            with open(paths["report"], "w") as f:
                f.write(html)
            with open(paths["bare"], "w") as f:
                # the same workers and plots with nothing to draw on them
                bare_report = copy.copy(report)
                bare_report.links = []
                bare_report.workers = [dataclasses.replace(w, bars=[], buckets=[], unfinished=[], paused=[],
                                                           counts=StateCounts())
                                       for w in report.workers]
                f.write(page(bare_report))
            with open(paths["empty"], "w") as f:
                f.write(EMPTY)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
            idle: dict[str, list[int]] = {"report": [], "bare": []}
            for _ in range(repeats):  # side by side, alternating
                for name, path in paths.items():
                    wall, cpu, dom, drawn = _browse(path, os.path.join(tmp, "profile"))
                    if name == "report":
                        assert dom.count('class="bk-Column"') == len(report.workers), "the page did not draw"
                    if name in idle:
                        assert drawn is not None, "Bokeh never said the page was drawn"
                        idle[name].append(drawn)
                    runs[name].append((wall, cpu))
            best = {name: (min(w for w, _ in r), min(c for _, c in r)) for name, r in runs.items()}
            out.update(
                render_s=best["report"][0] - best["empty"][0], render_cpu_s=best["report"][1] - best["empty"][1],
                browser_start_s=best["empty"][0], browser_start_cpu_s=best["empty"][1],
                bokeh_start_s=best["bare"][0] - best["empty"][0], drawing_s=best["report"][0] - best["bare"][0],
                idle_s=min(idle["report"]) / 1e3, bare_idle_s=min(idle["bare"]) / 1e3,
            )
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", nargs="?")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--data", help="keep the built report in this file, and reuse it when present")
    p.add_argument("--no-bare", action="store_true", help="leave the bare replay (the build's yardstick) out")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--wait-index", action="store_true",
                   help="replay while another process (`replay index LOG`) writes the index; then ask it")
    args = p.parse_args()
    m = measure(args.log or simulated_log(args.events), repeats=args.repeats, data=args.data, bare=not args.no_bare,
                wait_index=args.wait_index)
    print(m)
    if "render_s" in m:
        print(f"page {m['page_bytes']:,} bytes; render {m['render_s']:.2f} s wall ({m['render_cpu_s']:.2f} s CPU) "
              f"beyond the browser's start on an empty page ({m['browser_start_s']:.2f} s wall, "
              f"{m['browser_start_cpu_s']:.2f} s CPU); of it Bokeh's start with nothing drawn "
              f"{m['bokeh_start_s']:.2f} s, drawing {m['drawing_s']:.2f} s; Bokeh says drawn {m['idle_s']:.2f} s "
              f"after navigation began ({m['bare_idle_s']:.2f} s with nothing drawn); "
              f"load average {m['load_average']}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
