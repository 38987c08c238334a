"""Fast, exact seeking: forked snapshots of a replay.

A state rebuilt from a pickle or a deep copy holds the same tasks, but its
sets are rebuilt with another internal order, and later transitions can then
differ (a few per thousand steps, even with key hashing); both also recurse
along dependency chains and fail on long ones. ``os.fork()`` copies a process
exactly, hash tables included, in milliseconds. So the first pass replays linearly and
every ``every`` steps leaves behind a forked child, frozen at that step. To
look at step ``p``, the nearest snapshot at or before ``p`` forks again; that
grandchild replays the few steps to ``p``, computes the requested view as
plain data, sends it back, and exits. The snapshot itself never moves.

The decoded calls are spooled, packed as :mod:`replay.readahead` packs them,
to a private temporary file during the first pass, so that a grandchild
reads its few steps with one ``pread`` each instead of parsing the log.
POSIX only.
"""
from __future__ import annotations

import array
import bisect
import gc
import os
import signal
import tempfile
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from typing import Any

from replay.engine import Applied, Replayer
from replay.errors import BadInput
from replay.history import Position, WorkerHistory
from replay.readahead import dumps, loads
from replay.reader import Progress, RecordedCall

View = Callable[..., Any]


class _Spool:
    """The worker's decoded calls (packed, see :mod:`replay.readahead`), by call number."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="dask-replay-spool-")
        self.fd = self.file.fileno()
        self.offsets = array.array("q", [0])
        #: last step of each call, for bisect
        self.last_seq = array.array("q")

    def append(self, call: RecordedCall) -> RecordedCall:
        blob = dumps(call)
        os.write(self.fd, blob)
        self.offsets.append(self.offsets[-1] + len(blob))
        self.last_seq.append(call.last)
        return call

    def extents(self, after: int, stop: int) -> list[tuple[int, int]]:
        """Where the calls past step ``after`` up to step ``stop`` lie in the file.

        A snapshot was forked before the spool was complete, so it is told
        where to read rather than reading this index itself.
        """
        if stop <= after:
            return []
        i = bisect.bisect_right(self.last_seq, after)
        # and the batch ``stop`` falls inside, which the reader cuts at ``stop``
        j = bisect.bisect_left(self.last_seq, stop) + 1
        j = min(j, len(self.last_seq))
        o = self.offsets
        return [(o[k], o[k + 1] - o[k]) for k in range(i, j)]


def _spooled(fd: int, extents: list[tuple[int, int]], stop: int):
    # our own spool, written by this process's parent from decoded calls
    for offset, size in extents:
        yield loads(os.pread(fd, size, offset)).head(stop)


class Seeker:
    """Views of one worker at any step, each computed from an exact replay.

    >>> with Seeker(history) as s:
    ...     s.view(1200, state_view)      # state_view(replayer) -> plain data
    """

    def __init__(
        self,
        history: WorkerHistory,
        *,
        every: int = 1000,
        max_snapshots: int = 128,
        tap_log: bool = False,
        observe: Callable[[Applied, Replayer], None] | None = None,
        follower: Any = None,
        budget_mb: int | None = None,
    ):
        # Each snapshot ends up owning its copy of every page the first pass
        # writes after the fork: about the replay's working set, some 17 MB
        # for a worker with ~1,000 live tasks. The cap bounds that memory; a
        # seek replays at most ``every`` steps (~100 µs each in a fresh fork).
        self.history = history
        self.every = max(every, -(-history.events // max_snapshots))
        self.spool = _Spool()
        #: (step, connection to the snapshot process, pid)
        self.snapshots: list[tuple[int, Connection, int]] = []
        self.prepared = False
        #: replay with ``ws.log`` tapped, so that a view sees what a step caused
        self.tap_log = tap_log
        #: called in this process with every call the first pass applies
        self.observe = observe
        #: fed (``follower.feed(applied)``) every call of the first pass and of
        #: every seek, in the process that replays it: its copy in a snapshot
        #: is exact at the snapshot's step, and a seek brings it to the
        #: step asked for (a :class:`~replay.diagnosis.Tracker`)
        self.follower = follower
        self.budget_mb = budget_mb

    def __enter__(self) -> Seeker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def prepare(self, progress: Progress | None = None) -> None:
        """The first pass: replay every step once, leaving snapshots behind."""
        replayer = self.history.replayer(tap_log=self.tap_log)
        self._snapshot(replayer)
        next_snap = self.every
        calls = map(self.spool.append, self.history.calls(instructions=False))
        observe, follower = self.observe, self.follower
        for applied in replayer.feed(calls, progress):
            if observe is not None:
                observe(applied, replayer)
            if follower is not None:
                follower.feed(applied)
            if replayer.seq >= next_snap:
                self._snapshot(replayer)
                next_snap = replayer.seq + self.every
        self.prepared = True

    def _snapshot(self, replayer: Replayer) -> None:
        parent_end, child_end = Pipe()
        # objects that exist now are never collected by the parent's gc again,
        # which keeps it from writing to (and copying) the pages it shares
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the snapshot
            parent_end.close()
            for _, conn, _ in self.snapshots:
                conn.close()  # so that each snapshot sees EOF when its parent goes
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _serve(child_end, replayer, self.spool.fd, self.follower)
            os._exit(0)
        child_end.close()
        self.snapshots.append((replayer.seq, parent_end, pid))

    def view(self, pos: Position, fn: View, *args: Any) -> Any:
        """``fn(replayer, *args)`` at ``pos``; ``fn`` must be a module-level function."""
        if not self.prepared:
            self.prepare()
        return self._ask(self.history.position(pos), False, fn, args)

    def view_step(self, pos: Position, fn: View, *args: Any) -> Any:
        """``fn(replayer, applied, follower, *args)`` at ``pos``: ``applied``
        is the :class:`~replay.engine.Applied` call that holds step ``pos``,
        cut there (its :meth:`~replay.engine.Applied.steps` give the step's
        event, instructions and log entries; None at step 0), ``follower`` the
        seeker's follower brought to ``pos``. Needs ``tap_log`` for the log
        entries."""
        if not self.prepared:
            self.prepare()
        return self._ask(self.history.position(pos), True, fn, args)

    def _ask(self, stop: int, step: bool, fn: View, args: tuple) -> Any:
        start = stop
        if step and stop > 0:
            # from before the call holding ``stop``, so that the seek applies it
            k = bisect.bisect_left(self.spool.last_seq, stop)
            start = self.spool.last_seq[k - 1] if k > 0 else 0
        i = bisect.bisect_right([s for s, _, _ in self.snapshots], start) - 1
        at, conn, _ = self.snapshots[i]
        conn.send((self.spool.extents(at, stop), stop, step, fn, args))
        outcome, result = conn.recv()
        if outcome == "bad input":
            raise BadInput(result)
        if outcome == "bug":
            raise RuntimeError(f"replay to step {stop} failed in a snapshot:\n{result}")
        return result

    def close(self) -> None:
        for _, conn, pid in self.snapshots:
            try:
                conn.send(None)
                conn.close()
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.snapshots.clear()
        self.spool.file.close()
        gc.unfreeze()


def _serve(conn: Connection, replayer: Replayer, fd: int, follower: Any) -> None:
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        pid = os.fork()
        if pid == 0:  # a throw-away copy does the work
            try:
                extents, stop, step, fn, args = msg
                applied = None
                for applied in replayer.feed(_spooled(fd, extents, stop)):
                    if follower is not None:
                        follower.feed(applied)
                if step:
                    result = ("ok", fn(replayer, applied, follower, *args))
                else:
                    result = ("ok", fn(replayer, *args))
            except BadInput as e:
                result = ("bad input", str(e))
            except BaseException:  # report, never hang the caller
                result = ("bug", traceback.format_exc())
            try:
                conn.send(result)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
