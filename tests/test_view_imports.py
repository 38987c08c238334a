"""What a fresh ``replay`` process imports to answer a view from a log's index.

A view from a current index is a few SQLite reads: the process must not pay
for the state machine (``distributed``), nor for dask (the index wrote down
what ``key_split`` names each key). Each command runs as the console script runs it, in a process of
its own, with ``REPLAY_INDEX=required`` (a missing or stale index fails
instead of replaying: the index answered), and reports what it imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import orjson
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: runs ``replay ARGS...`` and prints, last, the heavy packages it imported;
#: ``why`` continues only logs longer than this fixture's limit: none here
_RUN = (
    "import atexit, sys, cli\n"
    "cli.WHY_MAX_STEPS = int(sys.argv[1])\n"
    "atexit.register(lambda: print('IMPORTED', sorted(m for m in ('distributed', 'dask') if m in sys.modules)))\n"
    "sys.argv = ['replay', *sys.argv[2:]]\n"
    "cli.main()\n"
)


def _replay(args: list[str], why_max_steps: int = 0) -> tuple[int, str, list[str]]:
    """Exit code, output (without the last line) and the heavy packages imported."""
    p = subprocess.run([sys.executable, "-c", _RUN, str(why_max_steps), *args], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, REPLAY_INDEX="required"))
    *out, last = p.stdout.splitlines() or [""]
    assert last.startswith("IMPORTED "), p.stdout + p.stderr
    return p.returncode, "\n".join(out), eval(last.removeprefix("IMPORTED "))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """stuck-flight.jsonl (a worker whose gather was never answered) with its index beside it."""
    path = str(tmp_path_factory.mktemp("views") / "stuck-flight.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-flight.jsonl"), path)
    subprocess.run([sys.executable, "-m", "cli", "index", path], cwd=ROOT, check=True, capture_output=True)
    return path


STUCK = "43731"  # the worker of stuck-flight.jsonl with a task in flight forever


@pytest.mark.parametrize("args", [
    ["state", "{log}", "-w", STUCK],
    ["state", "{log}", "-w", STUCK, "--at", "1", "--json"],
    ["diff", "{log}", "0..1", "-w", STUCK],
    ["story", "{log}", "x", "-w", STUCK],
    ["why", "{log}", "--json"],
    # text shortens keys as dask.utils.key_split names them, by the names the index wrote down
    ["why", "{log}"],
    ["load", "{log}"],
])
def test_a_view_from_the_index_imports_no_state_machine(indexed, args):
    code, out, imported = _replay([a.format(log=indexed) for a in args])
    assert code == 0, out
    assert out.strip()
    assert imported == []


def test_why_continues_a_short_log_whichever_source_answers(indexed):
    # the continuation needs the state machine: a log short enough is continued
    # from the index too, so that both sources give one answer
    code, out, imported = _replay(["why", indexed, "-w", STUCK, "--json"], why_max_steps=10**9)
    assert code == 0, out
    assert "distributed" in imported
    assert "continued" in orjson.loads(out)["workers"][0]
    _, out, _ = _replay(["why", indexed, "-w", STUCK, "--json"])
    assert "continued" not in orjson.loads(out)["workers"][0]
