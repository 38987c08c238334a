"""What every test shares: the hash seed, the shipped fixture logs, one way to
record a log and one way to run the ``replay`` command.

Test modules never import each other or this file: what they share is here,
as pytest fixtures.

The hash seed. The state machine keeps tasks in sets and acts on them in
iteration order. ``TaskState`` hashes by identity, so that order differs
between two processes; the recorder switches it to hashing by key, and then
the order depends on the string hash seed. A replay therefore takes the
recorded transitions only with the seed the recording worker had. Workers
started by a nanny run with ``PYTHONHASHSEED=6640``, so the test session
re-executes itself with that seed: in-process recordings, in-process replays
and the shipped fixtures (recorded by nanny-started workers) then all agree.
"""
from __future__ import annotations

import io
import itertools
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Union

import orjson
import pytest
from distributed import worker_state_machine as wsm

from replay.determinism import make_deterministic

NANNY_SEED = "6640"
_REEXEC = os.environ.get("PYTHONHASHSEED") != NANNY_SEED and not os.environ.get("REPLAY_TEST_REEXEC")

if not _REEXEC:
    # before any TaskState exists in this process
    make_deterministic()


def pytest_configure(config):
    if not _REEXEC:
        return
    # give the new process the real stdout/stderr back, not pytest's capture files
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    env = dict(os.environ, PYTHONHASHSEED=NANNY_SEED, REPLAY_TEST_REEXEC="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# --- the shipped fixture logs -------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

#: the logs the repository ships, each recorded by its script in examples/;
#: listed by name so that a deleted one fails the suite instead of shrinking it
SHIPPED = ("cluster-log.jsonl.gz", "stuck-6705.jsonl", "stuck-constrained.jsonl", "stuck-flight.jsonl")


def shipped_names() -> list[str]:
    """Every fixture log: the ones listed above, and any other in ``fixtures/``."""
    found = {p.name for pattern in ("*.jsonl", "*.jsonl.gz") for p in FIXTURES.glob(pattern)}
    return sorted(found | set(SHIPPED))


def _fixture_path(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"fixtures/{name} is missing: the scripts in examples/ record it", pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def fixture_path() -> Callable[[str], str]:
    """``fixture_path(name)``: the path of a shipped fixture log; fails, never
    skips, when the file is missing."""
    return _fixture_path


def pytest_generate_tests(metafunc):
    # a test taking ``shipped_fixture`` runs once for every fixture log
    if "shipped_fixture" in metafunc.fixturenames:
        metafunc.parametrize("shipped_fixture", shipped_names(), indirect=True)


@pytest.fixture
def shipped_fixture(request) -> str:
    """The path of one fixture log (the test runs for each of them)."""
    return _fixture_path(request.param)


# --- logs recorded from events written as code ---------------------------------

#: the worker address of a recorded log unless a test chooses another
ADDRESS = "tcp://127.0.0.1:1234"

#: an event, or a function of the worker state returning events (to react to
#: instructions, e.g. answer the GatherDep just issued)
Step = Union[wsm.StateMachineEvent, Callable[[wsm.WorkerState], Iterable[wsm.StateMachineEvent]]]


def _record(
    writer: Any,
    steps: Iterable[Step],
    *,
    nthreads: int = 1,
    resources: dict[str, float] | None = None,
    validate: bool = False,
    address: str = ADDRESS,
    deterministic: bool = True,
    clock: Callable[[], float] | None = None,
    pid: int | None = None,
    **state_kwargs: Any,
) -> None:
    """Drive a fresh ``WorkerState`` through ``steps``, recorded by the
    recorder's own :class:`replay.record.Session` into ``writer``."""
    from replay.record import Session

    ws = wsm.WorkerState(
        nthreads=nthreads, address=address, resources=resources or {}, validate=validate,
        **state_kwargs,
    )
    extra = {} if clock is None else {"clock": clock}
    session = Session(ws, writer=writer, deterministic=deterministic, pid=pid, **extra)
    for step in steps:
        events = step(ws) if callable(step) else [step]
        ws.handle_stimulus(*events)
    session.close("end of the scripted events")


def _record_log(path: str | os.PathLike, steps: Iterable[Step], **kwargs: Any) -> str:
    """Record ``steps`` to the file ``path`` with the recorder's writer; returns
    the path. An event that raises is recorded as such and the exception
    propagates. Keyword arguments go to ``WorkerState``."""
    from replay.logfile import LogWriter

    path = os.fspath(path)
    writer = LogWriter(path)
    try:
        _record(writer, steps, **kwargs)
    finally:
        writer.close()
    return path


@pytest.fixture(scope="session")
def record_log() -> Callable[..., str]:
    """``record_log(path, steps, **worker_state_kwargs) -> path``: a real
    ``WorkerState`` driven by ``steps`` and recorded as a live worker's is."""
    return _record_log


class _Records(list):
    """A writer that keeps the records, as they would read back from disk."""

    def write(self, record: dict) -> None:
        self.append(orjson.loads(orjson.dumps(record)))


_TASK_RECORDS: dict[tuple, bytes] = {}


def _task_records(worker: str = "tcp://127.0.0.1:40001", sid: str = "s", key: str = "x") -> list[dict]:
    """The records of one task's life on a real worker: header, three steps
    (compute, success, free; stimulus ids ``{sid}1`` to ``{sid}3``) and end.

    The clock and pid are fixed, so the same arguments give the same bytes.
    Every call returns fresh records, free to change.
    """
    args = (worker, sid, key)
    if args not in _TASK_RECORDS:
        records = _Records()
        _record(records, [
            wsm.ComputeTaskEvent.dummy(key, stimulus_id=f"{sid}1"),
            wsm.ExecuteSuccessEvent.dummy(key, run_id=0, stimulus_id=f"{sid}2"),
            wsm.FreeKeysEvent(keys=[key], stimulus_id=f"{sid}3"),
        ], address=worker, validate=True, clock=itertools.count(1700000000.0).__next__, pid=4242)
        _TASK_RECORDS[args] = orjson.dumps(records)
    return orjson.loads(_TASK_RECORDS[args])


@pytest.fixture(scope="session")
def task_records() -> Callable[..., list[dict]]:
    """``task_records(worker=..., sid="s", key="x")``: ``[header, step, step,
    step, end]`` of one task computed and released on a real ``WorkerState``,
    recorded by the recorder; the valid log broken logs are made from."""
    return _task_records


def _jsonl(*records: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture(scope="session")
def jsonl() -> Callable[..., bytes]:
    """``jsonl(*records) -> bytes``: records as the lines of a log."""
    return _jsonl


def _gather_failure(worker: str, total_nbytes: int, stimulus_id: str) -> wsm.GatherDepFailureEvent:
    return wsm.GatherDepFailureEvent.from_exception(
        Exception("boom"), worker=worker, total_nbytes=total_nbytes, stimulus_id=stimulus_id
    )


@pytest.fixture(scope="session")
def gather_failure() -> Callable[..., wsm.GatherDepFailureEvent]:
    """``gather_failure(worker, total_nbytes, stimulus_id)``: a peer failed to send data."""
    return _gather_failure


# --- the command line ------------------------------------------------------------


class CommandTimeout(BaseException):
    """A command ran past its deadline (a BaseException: no handler in the
    command may take it for one of its own errors)."""


def _cli_run(
    args: Iterable[Any], stdin: bytes | None = None, *, columns: int = 200, timeout: float = 60,
) -> tuple[int, str, str]:
    """Run ``replay ARGS`` in this process: ``(exit code, stdout, stderr)``.

    An exception that escapes ``cli.main`` (a traceback a user would see)
    propagates and fails the test, as does a command still running after
    ``timeout`` seconds.
    """
    import cli

    args = [str(a) for a in args]

    def deadline(signum, frame):
        raise CommandTimeout(f"replay {' '.join(args)}: still running after {timeout} s")

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    saved_env = {k: os.environ.get(k) for k in ("COLUMNS", "DASK_REPLAY_SEED_REEXEC")}
    sys.argv = ["replay", *args]
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout, sys.stderr = out, err
    os.environ["COLUMNS"] = str(columns)
    # logs recorded here carry this process's seed; should one not, the command
    # must not re-execute the test runner in its place
    os.environ["DASK_REPLAY_SEED_REEXEC"] = "1"
    alarm = signal.signal(signal.SIGALRM, deadline)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # what the interpreter does with sys.exit("message")
            print(e.code, file=err)
            code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, alarm)
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()


@pytest.fixture(scope="session")
def cli_run() -> Callable[..., tuple[int, str, str]]:
    """``cli_run(args, stdin=None, columns=200, timeout=60) -> (exit code, stdout,
    stderr)``: ``replay`` run in this process through ``cli.main``, as its
    console script runs it; ``stdin`` (bytes) is what standard input holds."""
    return _cli_run


# --- comparing replayed states ---------------------------------------------------


def _fingerprint_ws(ws: wsm.WorkerState) -> dict:
    """Everything observable, in iteration order: order decides later transitions."""
    keys = lambda tss: [ts.key for ts in tss]  # noqa: E731
    return {
        "tasks": [(k, ts.state, ts.previous, ts.next, ts.nbytes) for k, ts in ws.tasks.items()],
        "ready": keys(ws.ready.sorted()),
        "constrained": keys(ws.constrained.sorted()),
        "executing": keys(ws.executing),
        "long_running": keys(ws.long_running),
        "waiting": keys(ws.waiting),
        "in_flight_tasks": keys(ws.in_flight_tasks),
        "in_flight_workers": {w: sorted(map(repr, ks)) for w, ks in ws.in_flight_workers.items()},
        "data_needed": {w: keys(h.sorted()) for w, h in ws.data_needed.items() if h},
        "busy_workers": sorted(ws.busy_workers),
        "missing": keys(ws.missing_dep_flight),
        "has_what": {w: list(ks) for w, ks in ws.has_what.items() if ks},
        "resources": (dict(ws.total_resources), dict(ws.available_resources)),
        "running": ws.running,
        "nbytes": ws.nbytes,
        "transition_counter": ws.transition_counter,
    }


@pytest.fixture(scope="session")
def fingerprint_ws() -> Callable[[wsm.WorkerState], dict]:
    """``fingerprint_ws(ws) -> dict``: a worker state's observable content, to
    compare two replays."""
    return _fingerprint_ws
