"""Draw ``examples/report-cluster-log.png``: ``replay report`` on
``fixtures/cluster-log.jsonl.gz``, as headless Chromium shows it with no network.

Needs Debian's ``chromium``. Re-run from the repository root::

    .venv/bin/python examples/report_screenshot.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "cluster-log.jsonl.gz"


def main() -> None:
    replay = os.path.join(os.path.dirname(sys.executable), "replay")
    with tempfile.TemporaryDirectory() as tmp:
        # a copy, so that the log's index is written there and the page names the log plainly
        shutil.copy(os.path.join(ROOT, "fixtures", NAME), os.path.join(tmp, NAME))
        subprocess.run([replay, "report", NAME, "-o", "report.html"], cwd=tmp, check=True)
        subprocess.run(
            ["chromium", "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp}/profile",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--hide-scrollbars",
             "--virtual-time-budget=10000", "--window-size=1450,1100",
             *(["--no-sandbox"] if os.geteuid() == 0 else []),
             f"--screenshot={os.path.join(ROOT, 'examples', 'report-cluster-log.png')}",
             "file://" + os.path.join(tmp, "report.html")],
            check=True, capture_output=True,
        )


if __name__ == "__main__":
    main()
