"""``pytest --replay-record DIR`` on a small test file of passing, failing and
stuck tests, run by a real pytest in a subprocess, as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import replay

TESTS = textwrap.dedent(
    '''
    import asyncio

    from distributed import Client, LocalCluster, wait
    from distributed import worker_state_machine as wsm


    def test_passes():
        ws = wsm.WorkerState(address="127.0.0.1:1", nthreads=1)
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
        ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
        assert ws.tasks["x"].state == "memory"


    def test_fails():
        ws = wsm.WorkerState(address="127.0.0.1:1", nthreads=1)
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2"))
        # one thread: x runs, y waits for it
        assert ws.tasks["y"].state == "executing"


    def test_never_stimulated():
        wsm.WorkerState(address="127.0.0.1:1")


    def inc(x):
        return x + 1


    def hang_get_data(dask_worker):
        async def never(comm, **kwargs):
            await asyncio.Event().wait()

        dask_worker.handlers["get_data"] = never


    def test_stuck():
        with LocalCluster(
            n_workers=2, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster, Client(cluster) as client:
            a, b = sorted(client.scheduler_info()["workers"])
            x = client.submit(inc, 1, key="x", workers=[a])
            x.result(timeout=10)
            client.run(hang_get_data, workers=[a])
            y = client.submit(inc, x, key="y", workers=[b])
            # a never sends x: y cannot run
            wait(y, timeout=2)
    '''
)

OUTCOMES = {"test_passes": "PASSED", "test_fails": "FAILED", "test_never_stimulated": "PASSED",
            "test_stuck": "FAILED"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    (root / "test_small.py").write_text(TESTS)
    # a rootdir of its own: not this project's configuration
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


def run_pytest(root: Path, *args: str) -> tuple[dict[str, str], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_small.py", *args],
        cwd=root, capture_output=True, text=True, timeout=180,
        # the session's hash seed (conftest): logs replay exactly here
        env=dict(os.environ),
    )
    outcomes = {}
    for line in proc.stdout.splitlines():
        if line.startswith("test_small.py::") and " " in line:
            name, outcome = line.split("::", 1)[1].split()[:2]
            outcomes[name] = outcome
    return outcomes, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def plain(suite):
    return run_pytest(suite)


@pytest.fixture(scope="module")
def recorded(suite):
    logs = suite / "logs"
    return (*run_pytest(suite, "--replay-record", str(logs)), logs)


@pytest.fixture(scope="module")
def kept_all(suite):
    logs = suite / "logs-all"
    return (*run_pytest(suite, "--replay-record", str(logs), "--replay-keep", "all"), logs)


def test_the_plugin_is_installed_and_inert_without_the_option(plain):
    assert any(ep.value == "replay_pytest" for ep in entry_points(group="pytest11")), (
        "the pytest11 entry point is missing: reinstall with pip install -e ."
    )
    outcomes, output = plain
    assert outcomes == OUTCOMES, output
    assert "dask-replay:" not in output  # no header line, no section


def test_recording_does_not_change_outcomes(plain, recorded):
    outcomes, output, _ = recorded
    assert outcomes == plain[0] == OUTCOMES, output


def test_only_failed_tests_keep_their_logs(recorded):
    _, output, logs = recorded
    assert sorted(os.listdir(logs)) == ["test_small.py-test_fails", "test_small.py-test_stuck"]
    # a bare WorkerState: one log, replayed faithfully, ending where the test saw it
    (log,) = os.listdir(logs / "test_small.py-test_fails")
    history = replay.open(str(logs / "test_small.py-test_fails" / log))
    worker = history.worker()
    assert worker.events == 2
    assert worker.verify()[0] is None
    states = {k: ts.state for k, ts in worker.state_at(None).tasks.items()}
    assert states == {"x": "executing", "y": "ready"}


def test_keep_all_keeps_every_stimulated_worker(kept_all):
    outcomes, output, logs = kept_all
    assert outcomes == OUTCOMES, output
    # a WorkerState that never handled a stimulus has nothing to replay: no log
    assert sorted(os.listdir(logs)) == [
        "test_small.py-test_fails", "test_small.py-test_passes", "test_small.py-test_stuck",
    ]
    for test in os.listdir(logs):
        for name in os.listdir(logs / test):
            for worker in replay.open(str(logs / test / name)).workers:
                divergence, _ = worker.verify()
                assert divergence is None, (test, name, divergence)


def test_a_failed_test_reports_its_logs_and_why(recorded):
    _, output, logs = recorded
    sections = output.split(" dask-replay ---")
    assert len(sections) == 3, output  # one section per failed test
    fails = next(s for s in sections[1:] if "test_fails" in s.split("\n", 2)[1])
    assert "1 log in" in fails
    # y waits for the one thread x holds
    assert "'y' ready: ready: all 1 threads busy (executing 'x')" in fails

    stuck = next(s for s in sections[1:] if "test_stuck" in s.split("\n", 2)[1])
    assert "2 logs in" in stuck
    assert stuck.count("every task in a final state") == 1  # the holder of x
    # the other worker's gather of x never ends: x is still in flight when the
    # test gives up, and cancelled there once the closing client releases it
    assert ("'x' cancelled: cancelled while flight" in stuck
            or "'x' flight: in flight from" in stuck), stuck
