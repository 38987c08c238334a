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

from collections.abc import Callable, Iterator
from typing import Any

from distributed import worker_state_machine as wsm

from replay.collector import rare_collections
from replay.determinism import inexact_reasons
from replay.engine import Divergence, Replayer
from replay.errors import InexactReplay, NotFound
from replay.log import ClusterLog, WorkerLog
from replay.reader import Progress, RecordedCall, read_calls
from replay.segments import kept_from

Position = int | str | None


def open(path: str, *, validate: bool = False, inexact: bool = False) -> ClusterHistory:  # noqa: A001
    """Read a log (one pass) and return its workers' histories.

    A deterministic recording replays exactly only in a process hashing
    strings with the recorded ``PYTHONHASHSEED``; elsewhere a replay can take
    other transitions and show findings the log does not hold, so replaying
    raises :class:`~replay.errors.InexactReplay` naming the seed, unless
    ``inexact`` accepts that.
    """
    return ClusterHistory(ClusterLog.open(path, validate=validate), inexact=inexact)


class ClusterHistory:
    def __init__(self, log: ClusterLog, *, inexact: bool = False):
        self.log = log
        self.workers = [WorkerHistory(log, w, inexact=inexact) for w in log.workers]

    @property
    def path(self) -> str:
        return self.log.path

    @property
    def warnings(self) -> list[str]:
        return self.log.warnings

    def worker(self, which: str | int | None = None) -> WorkerHistory:
        return self.workers[self.log.worker(which).index]


class WorkerHistory:
    """One worker of a log."""

    def __init__(self, log: ClusterLog, wlog: WorkerLog, *, inexact: bool = False):
        self.log = log
        self.wlog = wlog
        #: replaying where it cannot be exact is accepted (see :func:`open`)
        self.inexact = inexact
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
        from replay.positions import step_of

        step = step_of(pos, self.address, self.events, lambda sid: self.log.last_step_of(self.wlog, sid),
                       lambda: self.wlog.last_step_of or ())
        snapshot = self.header.get("snapshot")
        if snapshot is not None and step < snapshot["seq"]:
            # a bounded recording starts at its oldest kept snapshot
            raise NotFound(f"step {step} of {self.address} is not kept: {kept_from(self.header)}")
        return step

    def calls(
        self, start: int = 1, stop: int | None = None, *, records: bool = False, instructions: bool = True
    ) -> Iterator[RecordedCall]:
        """The recorded ``handle_stimulus`` calls from step ``start`` to ``stop``
        (see :func:`replay.reader.read_calls`)."""
        return read_calls(self.log, self.wlog, start, stop, records=records, instructions=instructions)

    def replayer(self, **kwargs: Any) -> Replayer:
        if not self.inexact and self.header.get("history") != "partial":
            reasons = inexact_reasons(self.header)
            if reasons:
                raise InexactReplay(
                    f"{self.address}: {'; '.join(reasons)}. Run Python with "
                    f"PYTHONHASHSEED={self.header.get('hash_seed')} for an exact replay, or "
                    "pass inexact=True to replay.open() to accept one that may depart"
                )
        return Replayer(self.header, **kwargs)

    def advance(self, replayer: Replayer, stop: int, progress: Progress | None = None) -> Replayer:
        """Replay forward from ``replayer``'s step to ``stop``."""
        if replayer.seq >= stop:
            return replayer
        return replayer.run(self.calls(replayer.seq + 1, stop, instructions=False), progress)

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

        The caller owns it and may keep feeding it events (a log recorded on
        ``inproc://`` addresses needs :func:`replay.engine.offline_addresses`
        around those calls).
        """
        stop = self.position(pos)
        cursor = self._cursor
        self._cursor = None
        if cursor is None or cursor.seq > stop:
            cursor = self.replayer()
        return self.advance(cursor, stop, progress).ws

    def continue_from(self, pos: Position = None, peers: str = "answer", **kwargs: Any) -> Any:
        """Rebuild the worker at ``pos`` and drive it onward as a live worker
        would go on, its peers answering (or ``"busy"``, ``"silent"``): a
        :class:`~replay.continuation.Continuation`, the verdict with the
        continued steps (see :func:`~replay.continuation.continue_worker`)."""
        # the continuation reaches the simulator and the shrinker, which import this module
        from replay.continuation import continue_worker

        return continue_worker(self, pos, peers=peers, **kwargs)

    def verify(
        self, *, validate: bool = False, progress: Progress | None = None
    ) -> tuple[Divergence | None, Replayer]:
        """Replay every step and compare with the recording.

        ``validate`` also runs ``validate_state()`` after every step.
        """
        r = self.replayer(validate=True if validate else None, check_invariants=validate)
        with rare_collections():
            for call in self.calls():
                d = r.verify(call)
                if progress is not None:
                    progress(r.seq)
                if d is not None:
                    return d, r
        return None, r
