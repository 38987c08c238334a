"""``replay report`` on a big log: the page's size, the time to build it, and
the time headless Chromium takes to draw it, each beside what it compares to.

- building the report's data (one replay per worker, the headline and ``why``
  from the log's index, built beforehand) / a bare replay of the same workers;
- the page's bytes, and how many bars were drawn one by one or counted per
  pixel column;
- headless Chromium, offline, loading the page until every worker's stream is
  drawn, minus the same browser loading the same page with nothing on its streams.

    python benchmarks/report.py [LOG] [--events N]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import bare_seconds, ensure_seed, simulated_log

ensure_seed()

import replay  # noqa: E402
from replay.index import build as build_index  # noqa: E402
from replay.report import build  # noqa: E402
from replay.report_page import page  # noqa: E402
from replay.source import open_source  # noqa: E402


def _browse_seconds(path: str, profile: str) -> tuple[float, str]:
    command = ["chromium", "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=10000", *(["--no-sandbox"] if os.geteuid() == 0 else []),
               "--dump-dom", "file://" + os.path.abspath(path)]
    t = time.perf_counter()
    dom = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, dom


def measure(log: str, repeats: int = 3) -> dict:
    history = replay.open(log)
    build_index(history)  # answers the headline and why, as after a first `replay report`
    source = open_source(log, history=lambda: history)
    t = time.perf_counter()
    report = build(history, source)
    build_s = time.perf_counter() - t
    bare_s = sum(bare_seconds(w) for w in history.workers)
    html = page(report)
    out: dict = {
        "events": sum(w.events for w in history.workers), "build_s": build_s, "bare_s": bare_s,
        "ratio": build_s / bare_s, "page_bytes": len(html.encode()),
        "bars": sum(len(w.bars) for w in report.workers),
        "counted": sum(b.count for w in report.workers for b in w.buckets),
        "columns": sum(len(w.buckets) for w in report.workers), "bucket_ms": report.bucket * 1e3,
    }
    if shutil.which("chromium"):
        with tempfile.TemporaryDirectory() as tmp:
            full, empty = os.path.join(tmp, "report.html"), os.path.join(tmp, "empty.html")
            with open(full, "w") as f:
                f.write(html)
            with open(empty, "w") as f:
                # the same workers and axes with nothing to draw on them
                bare_report = copy.copy(report)
                bare_report.workers = [dataclasses.replace(w, bars=[], buckets=[], unfinished=[])
                                       for w in report.workers]
                f.write(page(bare_report))
            drawn, bare = [], []
            for _ in range(repeats):  # side by side, alternating
                s, dom = _browse_seconds(full, os.path.join(tmp, "profile"))
                assert dom.count('class="bk-Figure"') == len(report.workers), "the page did not draw"
                drawn.append(s)
                bare.append(_browse_seconds(empty, os.path.join(tmp, "profile"))[0])
            out["render_s"] = min(drawn) - min(bare)
            out["browser_start_s"] = min(bare)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", nargs="?")
    p.add_argument("--events", type=int, default=100_000)
    args = p.parse_args()
    m = measure(args.log or simulated_log(args.events))
    print(m)
    if "render_s" in m:
        print(f"render {m['render_s']:.2f} s beyond the browser's start ({m['browser_start_s']:.2f} s)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
