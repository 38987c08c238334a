"""Record every ``WorkerState`` a pytest session creates: ``pytest --replay-record DIR``.

Registered by the pytest entry point (``replay_pytest``) only when
``--replay-record`` is given. Then every ``WorkerState`` built in the test
process -- the bare ones of unit tests and those of in-process workers
(``gen_cluster``, ``LocalCluster(processes=False)``) -- is recorded from its
empty state, one log per worker per test, under ``DIR/<test id>/``. Workers in
other processes (``LocalCluster(processes=True)``) are not: record those with
the worker plugin or the preload (``replay.record``).

``--replay-keep failed`` (the default) deletes the logs of tests that passed;
``all`` keeps them. A failed test's report gets a ``dask-replay`` section: its
logs and, for each worker that ended with tasks not in a final state, what
``replay why`` says about them.

Recording never changes an outcome: a recorder that fails stops recording
that worker and lets the test carry on (see :mod:`replay.record`). A
worker's log is closed when ``Worker.close`` returns, not at the end of the
test, so that a test counting its process's file descriptors after closing a
worker finds none left open.

What the plugin changes in the test process while it is registered: it
wraps ``WorkerState.__init__`` (to attach a recorder) and ``Worker.close``
(to close that worker's log), and, as :mod:`replay.record` documents, the
recorded instances' class, ``TaskState.__hash__`` and, while a test's states
are watched for changes made outside ``handle_stimulus``,
``TaskState.__setattr__``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from typing import Any

import pytest

#: stash keys of an item: its log folder, and whether a phase failed
_DIR = pytest.StashKey[str]()
_FAILED = pytest.StashKey[bool]()


def log_dir_name(nodeid: str) -> str:
    """A test id as one folder name: path separators, ``::`` and brackets become
    ``-``, so that ``DIR/<name>`` is one level and safe to type in a shell."""
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-", nodeid).strip("-.")
    return name[:200] or "test"


class StateRecorder:
    """The plugin proper, registered only when asked for."""

    def __init__(self, directory: str, keep: str, segment_steps: int | None = None):
        from distributed import worker_state_machine as wsm
        from distributed.worker import Worker

        from replay.determinism import hash_seed, make_deterministic

        self.directory = directory
        self.keep = keep
        #: record as segments of this many steps, each from a snapshot
        self.segment_steps = segment_steps
        # before any TaskState exists: a set built with identity hashes could
        # no longer find its members once hashing changes
        self.deterministic = make_deterministic()
        self.seed = hash_seed()
        #: sessions of the running test
        self.sessions: list[Any] = []
        self.current: str | None = None
        #: off while this plugin replays logs itself
        self.recording = True
        self._wsm = wsm
        self._init = wsm.WorkerState.__init__
        plugin = self
        real_init = self._init

        def __init__(ws: Any, *args: Any, **kwargs: Any) -> None:
            real_init(ws, *args, **kwargs)
            plugin.attach(ws)

        __init__.__wrapped__ = real_init  # type: ignore[attr-defined]
        wsm.WorkerState.__init__ = __init__  # type: ignore[method-assign]

        self._worker = Worker
        self._close = real_close = Worker.close

        @functools.wraps(real_close)
        async def close(worker: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await real_close(worker, *args, **kwargs)
            finally:
                plugin.close_session_of(getattr(worker, "state", None), "worker closed")

        Worker.close = close  # type: ignore[method-assign]

    # --- recording ------------------------------------------------------

    def attach(self, ws: Any) -> None:
        # only the class WorkerState.__init__ was called for: a subclass's
        # own __init__ runs on after this returns, and is recorded as a whole
        if not self.recording or self.current is None:
            return
        from replay.record import Session
        from replay.segments import Bound

        try:
            session = Session(
                ws, directory=self.current, deterministic=True, watch_tasks=True,
                bound=None if self.segment_steps is None else Bound(segment_steps=self.segment_steps),
            )
        except Exception as e:  # a recorder failure must never fail the test
            sys.stderr.write(f"dask-replay: not recording a WorkerState: {e!r}\n")
            return
        self.sessions.append(session)

    def close_session_of(self, ws: Any, reason: str) -> None:
        """Close the log of ``ws``, if this test records it."""
        for session in self.sessions:
            if session.ws is ws:
                self.sessions.remove(session)
                session.close(reason)
                return

    def close_sessions(self) -> None:
        for session in self.sessions:
            session.close("end of the test")
        self.sessions = []

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.close_sessions()
        self._wsm.WorkerState.__init__ = self._init  # type: ignore[method-assign]
        self._worker.close = self._close  # type: ignore[method-assign]

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return [f"dask-replay: recording WorkerStates to {self.directory} "
                f"(keeping {'all logs' if self.keep == 'all' else 'the logs of failed tests'})"
                + ("" if self.exact else f"; {self.inexact_reason()}")]

    @property
    def exact(self) -> bool:
        return self.deterministic and self.seed is not None

    def inexact_reason(self) -> str:
        if not self.deterministic:
            return "TaskState objects existed before recording began: logs may not replay exactly"
        return "PYTHONHASHSEED is not fixed in this process: logs may not replay exactly (set PYTHONHASHSEED)"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any):
        self.current = item.stash[_DIR] = os.path.join(self.directory, log_dir_name(item.nodeid))
        item.stash[_FAILED] = False
        try:
            yield
        finally:
            self.close_sessions()
            self.current = None
            if self.keep == "failed" and not item.stash[_FAILED]:
                shutil.rmtree(item.stash[_DIR], ignore_errors=True)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if not report.failed:
            return
        item.stash[_FAILED] = True
        directory = item.stash.get(_DIR, None)
        if directory is None or not os.path.isdir(directory):
            return
        # the writer flushes every line: the logs show everything up to now
        report.sections.append(("dask-replay", self.section(directory)))

    # --- the report section --------------------------------------------

    def section(self, directory: str) -> str:
        logs = sorted(f for f in os.listdir(directory) if ".jsonl" in f)
        lines = [f"{len(logs)} log{'s' * (len(logs) != 1)} in {directory}"]
        if not self.exact:
            lines.append(self.inexact_reason())
        self.recording = False  # the replays below build WorkerStates too
        try:
            for name in logs:
                lines += self.describe(os.path.join(directory, name))
        finally:
            self.recording = True
        return "\n".join(lines)

    def describe(self, path: str) -> list[str]:
        from replay.errors import BadInput

        name = os.path.basename(path)
        try:
            steps, verdicts = unfinished_tasks(path)
        except BadInput as e:
            return [f"  {name}: cannot replay: {e}"]
        if not verdicts:
            return [f"  {name}: {steps} steps; every task in a final state"]
        out = [f"  {name}: {steps} steps; not in a final state (replay why {path}):"]
        out += [f"    {key!r} {state}: {reason}" for key, state, reason in verdicts[:10]]
        if len(verdicts) > 10:
            out.append(f"    … and {len(verdicts) - 10} more")
        return out


def unfinished_tasks(path: str) -> tuple[int, list[tuple[Any, str, str]]]:
    """The step count of a one-worker log, and ``(key, state, reason)`` of every
    task not in a final state at its end, as ``replay why`` explains them.

    The one place this plugin calls the diagnosis: the narrowest function
    that answers, so that reworked views leave it alone.
    """
    import replay
    from replay.diagnosis import diagnose, why

    history = replay.open(path).worker()
    replayer, tracker = diagnose(history)
    return history.events, [(v.key, v.state, v.reason) for v in why(replayer.ws, tracker)]
