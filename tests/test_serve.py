"""A running ``replay serve`` answers state and diff exactly as a fresh replay does."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import orjson
import pytest

import replay
from replay import serve
from replay.views import DiffView, state_of, steps_between

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "cluster-log.jsonl.gz")


@pytest.fixture
def served_log(tmp_path):
    log = str(tmp_path / "cluster-log.jsonl.gz")
    shutil.copy(FIXTURE, log)
    cmd = [sys.executable, "-c", "import cli; cli.main()", "serve", log]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, cwd=os.path.dirname(FIXTURE) + "/..")
    path = serve.socket_path(log)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield log
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert not os.path.exists(path)


def cli(*args: str, serve: str = "required") -> subprocess.CompletedProcess:
    """Run the CLI; by default it must be answered by the server, so that a
    broken server cannot hide behind the CLI's own replay."""
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True, cwd=os.path.join(os.path.dirname(FIXTURE), ".."),
        env=dict(os.environ, REPLAY_SERVE=serve),
    )


def test_served_state_and_diff_equal_a_fresh_replay(served_log):
    w = max(replay.open(served_log).workers, key=lambda w: w.events)
    a, b = w.events // 3, 2 * w.events // 3
    expected_state = w.view(b, state_of).to_json()
    steps, total = steps_between(w.calls(a + 1, b, instructions=False))
    expected_diff = DiffView(w.view(a, state_of), w.view(b, state_of), steps, total).to_json()

    out = cli("state", served_log, "-w", w.address, "--at", str(b), "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == expected_state

    out = cli("diff", served_log, f"{a}..{b}", "-w", w.address, "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == expected_diff


def test_served_errors_are_one_line(served_log):
    out = cli("state", served_log, "-w", "0", "--at", "99999999")
    assert out.returncode == 2
    assert out.stderr.decode().count("\n") == 1
    assert "out of range" in out.stderr.decode()


def test_no_server_for_a_changed_log(served_log):
    assert serve.ask(served_log, {"op": "state", "worker": "0", "at": 1}) is not None
    os.utime(served_log, (1, 1))  # the log changed: its old server must not answer
    assert serve.ask(served_log, {"op": "state", "worker": "0", "at": 1}) is None


def test_required_server_that_is_not_running_is_an_error(tmp_path):
    log = str(tmp_path / "cluster-log.jsonl.gz")
    shutil.copy(FIXTURE, log)
    out = cli("state", log, "-w", "0", "--at", "3")
    assert out.returncode == 2
    assert "no `replay serve` answers" in out.stderr.decode()
    out = cli("state", log, "-w", "0", "--at", "3", "--json", serve="auto")
    assert out.returncode == 0 and orjson.loads(out.stdout)["step"] == 3
