"""The Python API: a log as workers whose state can be reached at any step.

>>> import replay
>>> log = replay.open("cluster-log.jsonl")
>>> w = log.worker("127.0.0.1:40331")
>>> ws = w.state_at("compute-task-1712345.678")   # a real WorkerState
>>> ws.tasks

Positions are steps (1-based per worker, 0 = the empty initial state) or
stimulus ids, meaning the state after the last step carrying that id:
stimulus ids are not unique.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from distributed import worker_state_machine as wsm

from replay.engine import Divergence, Replayer, ReplayError
from replay.log import ClusterLog, WorkerLog, decode_step

Position = int | str | None

#: from how many steps on a replay decodes in a second process
PREFETCH_FROM = 20_000

#: where a step record came from, so that a bad event can be named by its line
LINE = "_line"
Progress = Callable[[int], None]


def open(path: str, *, validate: bool = False) -> ClusterHistory:  # noqa: A001
    """Read a log (one pass) and return its workers' histories."""
    return ClusterHistory(ClusterLog.open(path, validate=validate))


class ClusterHistory:
    def __init__(self, log: ClusterLog):
        self.log = log
        self.workers = [WorkerHistory(log, w) for w in log.workers]

    @property
    def path(self) -> str:
        return self.log.path

    @property
    def warnings(self) -> list[str]:
        return self.log.warnings

    def worker(self, which: str | int | None = None) -> WorkerHistory:
        return self.workers[self.log.worker(which).index]


def steps_of(records: Iterator[tuple[int, dict]]) -> Iterator[tuple[list[dict], list[dict]]]:
    """Group records into calls of ``handle_stimulus``: ``(resources changes, steps)``.

    A batch's steps all precede the one that carries its instructions.
    """
    resources: list[dict] = []
    pending: list[dict] = []
    for lineno, rec in records:
        if rec["kind"] == "resources":
            resources.append(rec)
            continue
        rec[LINE] = lineno
        pending.append(rec)
        if "instructions" in rec or "error" in rec:
            yield resources, pending
            resources, pending = [], []
    if pending:  # a torn batch: the worker died while handling it
        yield resources, pending


def handle_call(
    replayer: Replayer, events: list, last: int, error: str | None
) -> tuple[list, BaseException | None]:
    """Feed one recorded call: its instructions, or the exception it raised
    where the recording raised too. A crash the recording did not have is a
    :class:`ReplayError`."""
    try:
        return replayer.handle(events), None
    except Exception as e:
        if error is None:
            raise ReplayError(
                f"step {last} ({events[-1].stimulus_id}) of {replayer.header['worker']}: the "
                f"state machine raised {type(e).__name__}: {_first_line(e)} where the "
                "recorded worker did not; run `replay verify --validate` to find where "
                "the state went wrong"
            ) from e
        replayer.seq = last  # the recording raised here too
        return [], e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


class WorkerHistory:
    """One worker of a log."""

    def __init__(self, log: ClusterLog, wlog: WorkerLog):
        self.log = log
        self.wlog = wlog
        self._cursor: Replayer | None = None
        #: a :class:`~replay.seek.Seeker` answers views when attached
        self.seeker: Any = None

    @property
    def address(self) -> str:
        return self.wlog.address

    @property
    def header(self) -> dict:
        return self.wlog.header

    @property
    def events(self) -> int:
        return self.wlog.events

    def position(self, pos: Position) -> int:
        """The step a position names; ``None`` is the last step."""
        if pos is None:
            return self.events
        if isinstance(pos, int) or (isinstance(pos, str) and pos.isdigit()):
            step = int(pos)
            if not 0 <= step <= self.events:
                raise KeyError(f"step {step} is out of range: {self.address} has steps 1..{self.events}")
            return step
        step = self.log.last_step_of(self.wlog, pos)
        if step is None:
            raise KeyError(f"no step of {self.address} has stimulus id {pos!r}")
        return step

    def calls(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[list[dict], list[dict]]]:
        """The recorded ``handle_stimulus`` calls from step ``start`` to ``stop``."""
        for resources, steps in steps_of(self.log.records(self.wlog, start=start)):
            if stop is not None and steps[0]["seq"] > stop:
                return
            yield resources, steps

    def decode(self, steps: list[dict]) -> list[wsm.StateMachineEvent]:
        """The real dask events of a call's steps; a bad one is a LogError naming its line."""
        path, header = self.log.path, self.header
        return [decode_step(path, s.get(LINE, 0), s, header) for s in steps]

    def replayer(self, **kwargs: Any) -> Replayer:
        return Replayer(self.header, **kwargs)

    def packed_calls(self, start: int = 1, stop: int | None = None) -> Iterator[Any]:
        """Decoded calls from step ``start`` to ``stop`` in :mod:`replay.prefetch`'s packed form.

        Long stretches are read and decoded by a second process beside us.
        """
        from replay import prefetch

        stop = self.events if stop is None else stop
        if stop - start + 1 >= PREFETCH_FROM and (os.cpu_count() or 1) > 1:
            yield from prefetch.packed_calls(self, start, stop)
            return
        for resources, steps in self.calls(start, stop):
            yield prefetch.pack(resources, steps, self.decode(steps))

    def advance(self, replayer: Replayer, stop: int, progress: Progress | None = None) -> Replayer:
        """Replay forward from ``replayer``'s step to ``stop``."""
        from replay.prefetch import unpack

        if replayer.seq >= stop:
            return replayer
        for call in self.packed_calls(replayer.seq + 1, stop):
            resources, events, last, error = unpack(call)
            for r in resources:
                replayer.set_resources(r)
            handle_call(replayer, events, last, error)
            if progress is not None:
                progress(replayer.seq)
        return replayer

    def view(self, pos: Position, fn: Callable[..., Any], *args: Any, progress: Progress | None = None) -> Any:
        """``fn(replayer, *args)`` on the state at ``pos``; the state stays ours.

        With a :class:`~replay.seek.Seeker` attached, from its nearest
        snapshot; otherwise from a private cursor that only moves forward, so
        that ascending positions cost one replay in all.
        """
        stop = self.position(pos)
        if self.seeker is not None:
            return self.seeker.view(stop, fn, *args)
        cursor = self._cursor
        if cursor is None or cursor.seq > stop:
            cursor = self.replayer()
        self._cursor = None  # a failed replay must not leave a half-moved cursor
        self.advance(cursor, stop, progress)
        self._cursor = cursor
        return fn(cursor, *args)

    def state_at(self, pos: Position = None, progress: Progress | None = None) -> wsm.WorkerState:
        """A real ``WorkerState`` as a linear replay from step 1 reaches ``pos``.

        The caller owns it and may keep feeding it events.
        """
        stop = self.position(pos)
        cursor = self._cursor
        self._cursor = None
        if cursor is None or cursor.seq > stop:
            cursor = self.replayer()
        return self.advance(cursor, stop, progress).ws

    def verify(
        self, *, validate: bool = False, progress: Progress | None = None
    ) -> tuple[Divergence | None, Replayer]:
        """Replay every step and compare with the recording.

        ``validate`` also runs ``validate_state()`` after every step.
        """
        r = self.replayer(validate=True if validate else None, check_invariants=validate)
        for resources, steps in self.calls():
            for res in resources:
                r.set_resources(res)
            d = r.verify(steps, self.decode(steps))
            if progress is not None:
                progress(r.seq)
            if d is not None:
                return d, r
        return None, r
