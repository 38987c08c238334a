"""``pytest --replay-record`` on tests that take the paths of dask's own test
suite where recording once changed an outcome or lost a log: a worker closed
while the test counts file descriptors, a data store that raises (dask's
``SpillBuffer`` over its target, a mapping swapped in between stimuli), a
worker fed before it starts. The tests are written here, in dask's style and
with real workers; each outcome must be the same with and without the
plugin, and every log must verify, faithful or with its cause named."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import replay
from replay.logfile import iter_lines

TESTS = textwrap.dedent(
    '''
    import asyncio

    import psutil
    import pytest
    from distributed import Worker, wait
    from distributed import worker_state_machine as wsm
    from distributed.core import Status
    from distributed.utils_test import gen_cluster, inc


    @gen_cluster(client=True, nthreads=[], timeout=20)
    async def test_a_closed_worker_gives_its_file_descriptors_back(c, s):
        proc = psutil.Process()
        before = proc.num_fds()
        async with Worker(s.address, nthreads=1) as w:
            assert await c.submit(inc, 1, key="x", workers=[w.address]) == 2
            assert proc.num_fds() > before
        # the test's timeout fails it if one stays open
        while proc.num_fds() > before:
            await asyncio.sleep(0.01)


    class Unpicklable:
        def __init__(self, size):
            self.size = size

        def __sizeof__(self):
            return self.size

        def __getstate__(self):
            raise TypeError("cannot leave memory")


    @gen_cluster(
        client=True,
        nthreads=[("127.0.0.1", 1)],
        worker_kwargs={"memory_limit": "1 kiB"},
        config={
            "distributed.worker.memory.target": 0.5,
            "distributed.worker.memory.spill": False,
            "distributed.worker.memory.pause": False,
        },
    )
    async def test_a_value_over_the_spill_target_that_cannot_pickle_errs(c, s, a):
        x = c.submit(Unpicklable, 10**6, key="x")
        await wait(x)
        assert x.status == "error"
        assert a.state.tasks["x"].state == "error"
        assert await c.submit(inc, 1, key="y") == 2


    class RefusingStore(dict):
        def __setitem__(self, key, value):
            raise OSError(f"no room for {key!r}")


    def test_a_mapping_swapped_in_between_stimuli_refuses_a_result():
        ws = wsm.WorkerState(address="127.0.0.1:1", nthreads=1)
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
        ws.data = RefusingStore()
        instructions = ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
        assert instructions == [wsm.TaskErredMsg.match(key="x", stimulus_id="s2")]
        assert ws.tasks["x"].state == "error"


    @gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
    async def test_a_worker_fed_before_it_starts_is_rejected(c, s, a):
        w = Worker(s.address, nthreads=1)
        w.update_data(data={"y": 3})
        assert w.state.tasks["y"].state == "memory"
        with pytest.raises(RuntimeError, match="Worker failed to start"):
            await w
        assert w.status == Status.failed
        assert len(s.workers) == 1


    @gen_cluster(client=True, nthreads=[])
    async def test_a_worker_fed_and_emptied_before_it_starts_joins(c, s):
        w = Worker(s.address, nthreads=1)
        w.update_data(data={"y": 3})
        w.handle_stimulus(wsm.FreeKeysEvent(keys=["y"], stimulus_id="free-y"))
        async with w:
            assert await c.submit(inc, 1, key="z") == 2


    def test_a_task_taken_off_the_ready_queue_by_hand():
        ws = wsm.WorkerState(address="127.0.0.1:1", nthreads=1)
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2"))
        ws.ready.remove(ws.tasks["y"])
        ws.tasks["y"].state = "released"
        instructions = ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s3"))
        assert [type(i).__name__ for i in instructions] == ["TaskFinishedMsg"]
    '''
)

NAMES = [
    "test_a_closed_worker_gives_its_file_descriptors_back",
    "test_a_value_over_the_spill_target_that_cannot_pickle_errs",
    "test_a_mapping_swapped_in_between_stimuli_refuses_a_result",
    "test_a_worker_fed_before_it_starts_is_rejected",
    "test_a_worker_fed_and_emptied_before_it_starts_joins",
    "test_a_task_taken_off_the_ready_queue_by_hand",
]


def run_pytest(root: Path, *args: str) -> tuple[dict[str, str], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_paths.py", *args],
        cwd=root, capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    outcomes = {}
    for line in proc.stdout.splitlines():
        if line.startswith("test_paths.py::") and " " in line:
            name, outcome = line.split("::", 1)[1].split()[:2]
            outcomes[name] = outcome
    return outcomes, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict, str, Path]:
    root = tmp_path_factory.mktemp("paths")
    (root / "test_paths.py").write_text(TESTS)
    (root / "pytest.ini").write_text("[pytest]\n")
    plain, _ = run_pytest(root)
    logs = root / "logs"
    recorded, output = run_pytest(root, "--replay-record", str(logs), "--replay-keep", "all")
    return plain, recorded, output, logs


def test_every_outcome_is_the_same_with_the_plugin(runs):
    plain, recorded, output, _ = runs
    assert plain == recorded == {name: "PASSED" for name in NAMES}, output


def test_every_log_verifies_faithful_or_with_its_cause(runs):
    _, _, _, logs = runs
    verdicts = {}
    for test in sorted(os.listdir(logs)):
        for name in sorted(os.listdir(logs / test)):
            for worker in replay.open(str(logs / test / name)).workers:
                d, _ = worker.verify()
                verdicts.setdefault(test.split("-", 1)[1], []).append(None if d is None else d.cause)
    assert set(verdicts) == set(NAMES)
    for test, causes in verdicts.items():
        if test == "test_a_task_taken_off_the_ready_queue_by_hand":
            assert causes == ["state changed outside handle_stimulus before step 3"]
        else:
            assert causes == [None] * len(causes), test


def test_the_logs_show_the_failed_store_and_the_late_address(runs):
    _, _, _, logs = runs
    spill = logs / "test_paths.py-test_a_value_over_the_spill_target_that_cannot_pickle_errs"
    ((name,),) = [os.listdir(spill)]
    history = replay.open(str(spill / name)).worker()
    steps = [rec for _, rec in iter_lines(str(spill / name)) if rec["kind"] == "step"]
    failed = [s for s in steps if "store_failed" in s]
    assert [[f["key"] for f in s["store_failed"]] for s in failed] == [["x"]]
    assert history.state_at(failed[0]["seq"]).tasks["x"].state == "error"

    for test in ("test_a_worker_fed_before_it_starts_is_rejected",
                 "test_a_worker_fed_and_emptied_before_it_starts_joins"):
        names = os.listdir(logs / f"test_paths.py-{test}")
        assert any(n.startswith("pid-") for n in names), (test, names)
