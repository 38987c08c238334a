"""Bugs injected into dask's state machine, recorded on a real cluster, shrunk,
and the reproducer run as a dask maintainer would run it.

Each bug is a patch of ``WorkerState`` written as dask's own tests patch it (a
re-registered event handler, a replaced transition, a wrapped method), kept as
the source of a small module so that every process can load it: this one
(whose in-process workers run it while they are recorded), the shrinker's
fresh hash-check interpreters (through ``REPLAY_IMPORT``, as ``--import``
passes it on) and the reproducer's pytest (through a ``conftest.py``).

For every bug the reproducer must pass with the patch and fail without it,
each time in a fresh pytest that cannot import this project, under three
random hash seeds and dask's own ``TaskState`` hashing; the shrunk events
must be 1-minimal and answer no request that is not in them.
"""
from __future__ import annotations

import importlib
import os
import random
import re
import subprocess
import sys
import time
from operator import add
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from distributed import worker_state_machine as wsm

import replay
from replay import imports
from replay import shrinker as s
from replay.record import Recorder
from replay.testcase import once_fixed

# --- the bugs, as patch modules ------------------------------------------------------

STALE_BUSY = '''
"""After a busy reply the peer stays marked in flight: the worker never asks it again."""
from distributed import worker_state_machine as wsm

original = wsm.WorkerState._handle_gather_dep_busy


def _handle_gather_dep_busy(self, ev):
    keys = set(self.in_flight_workers[ev.worker])
    recs, instructions = original(self, ev)
    self.in_flight_workers[ev.worker] = keys  # the bug: a stale entry
    return recs, instructions


wsm.WorkerState._handle_event.register(wsm.GatherDepBusyEvent)(_handle_gather_dep_busy)


def undo():
    wsm.WorkerState._handle_event.register(wsm.GatherDepBusyEvent)(original)
'''

RAISING_TRANSITION = '''
"""A cancelled task whose execution ends raises instead of being forgotten."""
from distributed import worker_state_machine as wsm

table = wsm.WorkerState._TRANSITIONS_TABLE
original = table[("cancelled", "memory")]


def _transition_cancelled_memory(self, ts, value, run_id, *, stimulus_id):
    raise RuntimeError(f"cannot forget cancelled task {ts.key!r}")  # the bug


table[("cancelled", "memory")] = _transition_cancelled_memory


def undo():
    table[("cancelled", "memory")] = original
'''

BROKEN_INVARIANT = '''
"""When a peer leaves, its replicas stay in who_has (has_what forgets them)."""
from distributed import worker_state_machine as wsm

original = wsm.WorkerState._handle_remove_worker


def _handle_remove_worker(self, ev):
    for ts in self.data_needed.pop(ev.worker, ()):
        if ts.who_has == {ev.worker}:
            ts.who_has.discard(ev.worker)
    self.has_what.pop(ev.worker, None)  # the bug: who_has keeps the peer
    return {}, []


wsm.WorkerState._handle_event.register(wsm.RemoveWorkerEvent)(_handle_remove_worker)


def undo():
    wsm.WorkerState._handle_event.register(wsm.RemoveWorkerEvent)(original)
'''

DUPLICATE_GATHER = '''
"""Every GatherDep is issued twice."""
from distributed import worker_state_machine as wsm

original = wsm.WorkerState._ensure_communicating


def _ensure_communicating(self, *, stimulus_id):
    recs, instructions = original(self, stimulus_id=stimulus_id)
    twice = [i for i in instructions if isinstance(i, wsm.GatherDep)]  # the bug
    return recs, instructions + twice


wsm.WorkerState._ensure_communicating = _ensure_communicating


def undo():
    wsm.WorkerState._ensure_communicating = original
'''

LEAKING_COUNTER = '''
"""Every finished transfer leaves one byte behind in transfer_incoming_bytes."""
from distributed import worker_state_machine as wsm

original = wsm.WorkerState._gather_dep_done_common


def _gather_dep_done_common(self, ev):
    self.transfer_incoming_bytes += 1  # the bug
    return original(self, ev)


wsm.WorkerState._gather_dep_done_common = _gather_dep_done_common


def undo():
    wsm.WorkerState._gather_dep_done_common = original
'''


# --- recording on a real cluster -----------------------------------------------------


def inc(x):
    return x + 1


def slow_inc(x):
    time.sleep(0.5)
    return x + 1


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stale_busy(client, workers):
    """a computes y from b's x; b answers busy once."""
    a, b = workers[:2]
    warm = client.map(add, range(30), range(30), workers=[a.address], pure=False)
    client.gather(warm)
    x = client.submit(inc, 1, workers=[b.address], key="x")
    x.result()
    b.transfer_outgoing_count_limit = 0  # b answers every request busy
    y = client.submit(inc, x, workers=[a.address], key="y")
    wait_for(lambda: any(isinstance(ev, wsm.GatherDepBusyEvent) for ev in a.state.stimulus_log),
             "a busy reply")
    b.transfer_outgoing_count_limit = 50
    # with the bug, a never asks b again: y never runs
    wait_for(lambda: any(isinstance(ev, wsm.RetryBusyWorkerEvent) for ev in a.state.stimulus_log),
             "the retry")
    time.sleep(0.5)
    assert a.state.tasks["x"].state == "fetch"
    return a, (x, y, warm)


def raising_transition(client, workers):
    """a runs a slow task; the scheduler cancels it while it runs."""
    a = workers[0]
    warm = client.map(add, range(30), range(30), workers=[a.address], pure=False)
    client.gather(warm)
    f = client.submit(slow_inc, 1, workers=[a.address], key="slow")
    wait_for(lambda: "slow" in a.state.tasks and a.state.tasks["slow"].state == "executing", "execution")
    f.cancel()
    wait_for(lambda: any(isinstance(ev, wsm.ExecuteSuccessEvent) and ev.key == "slow"
                         for ev in a.state.stimulus_log), "the end of the execution")
    return a, (warm,)


def broken_invariant(client, workers):
    """a fetches b's x; then b retires."""
    a, b = workers[:2]
    warm = client.map(add, range(30), range(30), workers=[a.address], pure=False)
    client.gather(warm)
    x = client.submit(inc, 1, workers=[b.address], key="x")
    y = client.submit(inc, x, workers=[a.address], key="y")
    y.result()
    client.retire_workers([b.address])
    wait_for(lambda: any(isinstance(ev, wsm.RemoveWorkerEvent) for ev in a.state.stimulus_log),
             "the peer's removal")
    return a, (x, y, warm)


def duplicate_gather(client, workers):
    """a computes y from b's x."""
    a, b = workers[:2]
    warm = client.map(add, range(30), range(30), workers=[a.address], pure=False)
    client.gather(warm)
    x = client.submit(inc, 1, workers=[b.address], key="x")
    x.result()
    client.submit(inc, x, workers=[a.address], key="y")
    wait_for(lambda: sum(isinstance(ev, wsm.GatherDepDoneEvent) for ev in a.state.stimulus_log) >= 2
             or "y" in a.state.tasks and a.state.tasks["y"].state == "memory", "both transfers")
    time.sleep(0.3)
    return a, (x, warm)


def leaking_counter(client, workers):
    """a computes 100 tasks from b's data: many transfers, hundreds of events."""
    a, b = workers[:2]
    xs = client.map(inc, range(100), workers=[b.address], key=[f"x-{i}" for i in range(100)])
    client.gather(xs)
    ys = [client.submit(inc, x, workers=[a.address], key=f"y-{i}") for i, x in enumerate(xs)]
    client.gather(ys)
    return a, (xs, ys)


#: (name, patch source, scenario, predicate, most events the reproducer may need)
BUGS = [
    ("stale_busy", STALE_BUSY, stale_busy, s.StuckPredicate(), 3),
    ("raising_transition", RAISING_TRANSITION, raising_transition, s.RaisesPredicate(), 3),
    ("broken_invariant", BROKEN_INVARIANT, broken_invariant, s.InvalidPredicate(), 4),
    ("duplicate_gather", DUPLICATE_GATHER, duplicate_gather, s.RaisesPredicate("KeyError"), 3),
    ("leaking_counter", LEAKING_COUNTER, leaking_counter,
     s.ExprPredicate("not ws.in_flight_workers and ws.transfer_incoming_bytes > 0"), 2),
]
#: the bugs whose cause is certain, so that the reproducer carries what a
#: correct worker does: a stale entry, a raise on an event a correct worker
#: receives too, a broken invariant (not: the reply to a duplicated request,
#: which a fixed worker never gets; a user's expression)
CERTAIN = {"stale_busy", "raising_transition", "broken_invariant"}
#: of those, the bugs whose test asserts instructions the fix changes after
#: the bug's first effect (a stale entry stops a later request)
STATE_ONLY = {"stale_busy"}


def expected_holds(result: s.Shrunk, source: str, patch) -> tuple[bool, bool]:
    """Do the reproducer's commented expected assertions hold after its
    events on stock dask, and with the bug?"""
    lines = source.splitlines()
    start = next(i for i, x in enumerate(lines) if x.lstrip().startswith("# expected, once fixed:"))
    while not lines[start].endswith(":"):
        start += 1
    code = []
    for x in lines[start + 1:]:
        if not x.lstrip().startswith("# "):
            break
        code.append(x.strip()[2:])
    peers = dict(re.findall(r'^\s+(ws\d+) = "([^"]*)"$', source, re.M))
    held = []
    for patched_in in (False, True):
        if not patched_in:
            patch.undo()
        try:
            run = s.replay_stimuli(result.header, result.stimuli)
        finally:
            if not patched_in:
                importlib.reload(patch)
        try:
            for statement in code:
                exec(statement, {"ws": run.ws, **peers})  # the test's own assertion, just written
            held.append(True)
        except AssertionError:
            held.append(False)
    return held[0], held[1]


def record(tmp: Path, scenario) -> str:
    """Run ``scenario`` on a real two-worker cluster (three for a retirement),
    recorded from the start; the log of the worker it names."""
    logdir = tmp / "logs"
    with LocalCluster(n_workers=0, processes=False, threads_per_worker=1,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.register_plugin(Recorder(str(logdir)))
        n = 3 if scenario is broken_invariant else 2
        cluster.scale(n)
        client.wait_for_workers(n, timeout=30)
        workers = sorted(cluster.workers.values(), key=lambda w: w.address)
        worker, keep = scenario(client, workers)
        address = worker.address
        # the logs are taken while the worker hangs, as a user would take them
        for w in list(cluster.workers.values()):
            if Recorder.name in w.plugins:
                w.plugins[Recorder.name].teardown(w)
        del keep
    (log,) = [str(p) for p in logdir.glob("*.jsonl") if replay.open(str(p)).workers[0].address == address]
    return log


@pytest.fixture
def patched(tmp_path, monkeypatch):
    """``patched(name, source)``: the bug applied in this process and passed on
    to the processes the shrinker starts; undone at teardown."""
    applied = []

    def apply(name: str, source: str):
        (tmp_path / f"bug_{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv(imports.ENV, f"bug_{name}")
        monkeypatch.setenv(imports.PATH_ENV, str(tmp_path))
        module = importlib.import_module(f"bug_{name}")
        applied.append(module)
        return module

    yield apply
    for module in applied:
        module.undo()
        sys.modules.pop(module.__name__, None)


def plain_pytest(runs: list[tuple[Path, str | None, str]]) -> list[tuple[int, str]]:
    """pytest on each (test, patch, seed), side by side, each in a process that
    can import distributed and pytest but not this project, with dask's own
    hashing and the seed; a patch (a module beside the test) is applied by a
    conftest first. Returns (exit code, output) of each."""
    procs = []
    for i, (test, patch, seed) in enumerate(runs):
        folder = test.parent.parent / f"run{i}"
        poison = folder / "poison"
        for name in ("replay", "schemas"):
            (poison / name).mkdir(parents=True)
            (poison / name / "__init__.py").write_text('raise ImportError("a reproducer must not import dask-replay")\n')
        (poison / "cli.py").write_text('raise ImportError("a reproducer must not import dask-replay")\n')
        for f in test.parent.iterdir():
            (folder / f.name).write_text(f.read_text())
        (folder / "conftest.py").write_text(f"import {patch}  # noqa: F401\n" if patch else "")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAY_")}
        env.update(PYTHONPATH=str(poison), PYTHONHASHSEED=seed)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             "-p", "no:dask_replay", "--rootdir", str(folder), str(folder / test.name)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder, env=env,
        ))
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]


def one_minimal(result: s.Shrunk, predicate: s.Predicate) -> bool:
    """Without any one of its stimuli the shrunk list loses the bug, or holds
    a reply to a request that is gone (a message about nothing)."""
    header, target = result.header, result.fingerprint
    for i in range(len(result.stimuli)):
        run = s.replay_stimuli(header, result.stimuli[:i] + result.stimuli[i + 1:])
        if not run.unsolicited and predicate.observe(run) == target:
            return False
    return True


@pytest.mark.parametrize("name,source,scenario,predicate,most", BUGS, ids=[b[0] for b in BUGS])
def test_injected_bug_shrinks_to_a_reproducer_that_holds_in_plain_pytest(
    name, source, scenario, predicate, most, tmp_path, patched
):
    patch = patched(name, source)
    log = record(tmp_path, scenario)
    (wh,) = replay.open(log).workers
    assert wh.events > 40  # a real workload, not a toy

    start = time.perf_counter()
    result = s.shrink(wh, predicate=predicate)
    seconds = time.perf_counter() - start
    source_text = result.test_source
    assert result.narrative.shrunk_events <= most, source_text
    if isinstance(predicate, s.StuckPredicate):
        predicate = s.StuckPredicate(result.outcome.key)
    assert one_minimal(result, predicate)
    # no reply without its request: the run's own pairing finds none unanswered
    assert s.replay_stimuli(result.header, result.stimuli).unsolicited == []
    # the hash check ran, in three fresh interpreters, and agreed
    assert len(result.seen) == 3 and all(x.shows(result.fingerprint) for x in result.seen)

    test = tmp_path / "repro" / f"test_{name}.py"
    test.parent.mkdir()
    test.write_text(source_text)
    (test.parent / f"{patch.__name__}.py").write_text(source)
    seeds = [str(random.randrange(1, 2**32)) for _ in range(3)]
    runs = [(test, patch.__name__, seed) for seed in seeds] + [(test, None, seed) for seed in seeds]
    assert ("# expected, once fixed:" in source_text) == (name in CERTAIN), source_text
    if name in STATE_ONLY:
        # the steps after the stale entry ask for other instructions once
        # fixed: the expected state is checked on the events alone
        stock, buggy = expected_holds(result, source_text, patch)
        assert stock and not buggy, source_text
    elif name in CERTAIN:
        # the expected behaviour, uncommented in place of the bug's assertion:
        # it holds on stock dask and not with the bug
        fixed = test.with_name(f"test_{name}_fixed.py")
        fixed.write_text(once_fixed(source_text))
        runs += [(fixed, None, seed) for seed in seeds] + [(fixed, patch.__name__, seeds[0])]
    outcomes = plain_pytest(runs)
    for (path, with_patch, seed), (code, output) in zip(runs, outcomes):
        text = path.read_text()
        if (with_patch is not None) == (path == test):
            assert code == 0, f"{path.name} with the bug={bool(with_patch)}, PYTHONHASHSEED={seed}\n{text}\n{output}"
        else:
            assert code == 1 and "1 failed" in output, (
                f"{path.name} with the bug={bool(with_patch)}, PYTHONHASHSEED={seed}\n{text}\n{output}")
    print(f"\n{name}: {wh.events} events -> {result.narrative.shrunk_events}, {seconds:.1f} s, "
          f"1-minimal, {result.replays} replays, expected behaviour: {name in CERTAIN}")
    print(source_text)
