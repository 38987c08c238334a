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

Near where the user looks, snapshots are dense (as rr keeps its checkpoints
near the current time): a seek that replays more than :data:`DENSE_FROM`
steps leaves a snapshot every :data:`DENSE_EVERY` steps of the last
:data:`DENSE_WINDOW` before where it lands, so that stepping back or jumping
back a little afterwards replays a few hundred steps at most. Dense
snapshots are evicted least recently used first; with ``budget_mb`` the
first pass thins its sparse snapshots (every other one goes, the spacing
doubles) whenever they hold more than :data:`SPARSE_SHARE` of the budget,
and dense ones go while all hold more than the budget, whatever the log's
length.

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
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

from replay.engine import Applied, Replayer
from replay.errors import BadInput
from replay.history import Position, WorkerHistory
from replay.readahead import dumps, loads
from replay.reader import Progress, RecordedCall

View = Callable[..., Any]

#: a seek replaying more steps than this leaves dense snapshots behind
DENSE_FROM = 400
#: steps between two dense snapshots, and how far back from a seek they reach
DENSE_EVERY = 250
DENSE_WINDOW = 4000
#: dense snapshots kept at most (least recently used go first)
MAX_DENSE = 64
#: of the memory budget, what the first pass's sparse snapshots may hold
SPARSE_SHARE = 0.6
#: new snapshots between two measures of their memory
MEASURE_EVERY = 16


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
        follow_recording: bool = False,
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
        #: bound on the memory all snapshots hold (their proportional set sizes), MB
        self.budget_mb = budget_mb
        #: compare each call with the recorded instructions, as a view's replay
        #: does, so that a view can say where replay departed from the recording
        #: (the replayer's ``departed``); costs decoding the recorded instructions
        self.follow_recording = follow_recording
        #: with ``follow_recording``, once prepared: where the first pass's
        #: replay departed from the recording (a :class:`~replay.engine.Divergence`), or None
        self.departed: Any = None
        #: pid -> when last used, of the dense snapshots
        self.dense: dict[int, int] = {}
        self._tick = 0
        self._unmeasured = 0
        #: leave dense snapshots where seeks land (off: only the first pass's)
        self.dense_window = True
        #: CPU seconds the last seek took in the process that replayed it (a
        #: busy machine stretches its wall time, not this)
        self.seek_cpu = 0.0

    def __enter__(self) -> Seeker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def prepare(self, progress: Progress | None = None) -> None:
        """The first pass: replay every step once, leaving snapshots behind."""
        follow = self.follow_recording
        replayer = self.history.replayer(tap_log=self.tap_log, follow_recording=follow)
        self._snapshot(replayer)
        calls = map(self.spool.append, self.history.calls(instructions=follow))
        observe, follower = self.observe, self.follower
        try:
            self._first_pass(replayer, calls, progress, observe, follower)
        finally:
            self.departed = replayer.departed
        self.prepared = True

    def _first_pass(self, replayer: Replayer, calls: Any, progress: Progress | None,
                    observe: Any, follower: Any) -> None:
        next_snap = self.every
        for applied in replayer.feed(calls, progress):
            if observe is not None:
                observe(applied, replayer)
            if follower is not None:
                follower.feed(applied)
            if replayer.seq >= next_snap:
                self._snapshot(replayer)
                self._unmeasured += 1
                if self._unmeasured >= MEASURE_EVERY:
                    self._keep_sparse_in_budget()
                next_snap = replayer.seq + self.every
        # the last snapshots too: a long log spreads its snapshots (``max_snapshots``)
        # so that fewer than MEASURE_EVERY may be taken in all
        self._keep_sparse_in_budget()

    def _keep_sparse_in_budget(self) -> None:
        """Thin the first pass's snapshots while they hold more than their
        share of the budget."""
        self._unmeasured = 0
        if self.budget_mb is None:
            return
        while len(self.snapshots) > 2 and self.memory_mb() > SPARSE_SHARE * self.budget_mb:
            self._thin()

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

    def _thin(self) -> None:
        # every other sparse snapshot goes (never step 0's): the spacing doubles
        for k in range(len(self.snapshots) - 1, 0, -1):
            if k % 2 == 1:
                self._drop(k)
        self.every *= 2

    def _drop(self, k: int) -> None:
        _, conn, pid = self.snapshots.pop(k)
        self.dense.pop(pid, None)
        _stop(conn, pid)

    def memory_mb(self) -> float:
        """What the snapshots hold: the sum of their proportional set sizes
        (a page several snapshots share counts once in all), MB."""
        return sum(_pss_mb(pid) for _, _, pid in self.snapshots)

    def _add_dense(self, step: int, conn: Connection, pid: int) -> None:
        steps = [s for s, _, _ in self.snapshots]
        k = bisect.bisect_left(steps, step)
        if k < len(steps) and steps[k] == step:  # one there already
            _stop(conn, pid)
            return
        self.snapshots.insert(k, (step, conn, pid))
        self._tick += 1
        self.dense[pid] = self._tick

    def _evict(self) -> None:
        while len(self.dense) > MAX_DENSE:
            self._drop_dense(min(self.dense, key=self.dense.__getitem__))
        if self.budget_mb is not None and self.dense and self._unmeasured >= MEASURE_EVERY:
            self._unmeasured = 0
            while self.dense and self.memory_mb() > self.budget_mb:
                for _ in range(max(len(self.dense) // 4, 1)):
                    self._drop_dense(min(self.dense, key=self.dense.__getitem__))

    def _drop_dense(self, pid: int) -> None:
        k = next(i for i, (_, _, p) in enumerate(self.snapshots) if p == pid)
        self._drop(k)

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

    def distance(self, pos: Position) -> int:
        """How many steps a seek to ``pos`` (a step view's) would replay."""
        if not self.prepared:
            self.prepare()
        stop = self.history.position(pos)
        start = self._start(stop, True)
        i = bisect.bisect_right([s for s, _, _ in self.snapshots], start) - 1
        return stop - self.snapshots[i][0]

    def _start(self, stop: int, step: bool) -> int:
        start = stop
        if step and stop > 0:
            k = bisect.bisect_left(self.spool.last_seq, stop)
            start = self.spool.last_seq[k - 1] if k > 0 else 0
        return start

    def _ask(self, stop: int, step: bool, fn: View, args: tuple) -> Any:
        start = stop
        if step and stop > 0:
            # from before the call holding ``stop``, so that the seek applies it
            k = bisect.bisect_left(self.spool.last_seq, stop)
            start = self.spool.last_seq[k - 1] if k > 0 else 0
        i = bisect.bisect_right([s for s, _, _ in self.snapshots], start) - 1
        at, conn, pid = self.snapshots[i]
        if pid in self.dense:
            self._tick += 1
            self.dense[pid] = self._tick
        marks: tuple[int, ...] = ()
        if self.dense_window and stop - at > DENSE_FROM:
            marks = tuple(range(max(at + DENSE_EVERY, stop - DENSE_WINDOW), stop, DENSE_EVERY))
        conn.send((self.spool.extents(at, stop), stop, step, fn, args, marks))
        outcome, result, left, self.seek_cpu = conn.recv()
        for dense_step, dense_pid in left:
            self._add_dense(dense_step, Connection(recv_handle(conn)), dense_pid)
            self._unmeasured += 1
        if left:
            self._evict()
        if outcome == "bad input":
            raise BadInput(result)
        if outcome == "bug":
            raise RuntimeError(f"replay to step {stop} failed in a snapshot:\n{result}")
        return result

    def close(self) -> None:
        for _, conn, pid in self.snapshots:
            _stop(conn, pid)
        self.snapshots.clear()
        self.dense.clear()
        self.spool.file.close()
        gc.unfreeze()


def _stop(conn: Connection, pid: int) -> None:
    try:
        conn.send(None)
        conn.close()
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # a dense snapshot is a child of a seek that is gone
        pass


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except OSError:  # gone, or no /proc: nothing to count
        return 0.0


def _serve(conn: Connection, replayer: Replayer, fd: int, follower: Any) -> None:
    # the spool holds no recorded instructions to compare with: the first
    # pass compared them, and keeps where replay departed (Seeker.departed)
    replayer.follow_recording = False
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        pid = os.fork()
        if pid == 0:  # a throw-away copy does the work
            left: list[tuple[int, int]] = []
            ends: list[socket.socket] = []
            try:
                extents, stop, step, fn, args, marks = msg
                applied = None
                m = 0
                for applied in replayer.feed(_spooled(fd, extents, stop)):
                    if follower is not None:
                        follower.feed(applied)
                    # a dense snapshot after the first whole call past each mark
                    if m < len(marks) and marks[m] <= replayer.seq < stop:
                        while m < len(marks) and marks[m] <= replayer.seq:
                            m += 1
                        _leave(conn, replayer, fd, follower, left, ends)
                if step:
                    result = ("ok", fn(replayer, applied, follower, *args), left)
                else:
                    result = ("ok", fn(replayer, *args), left)
            except BadInput as e:
                result = ("bad input", str(e), left)
            except BaseException:  # report, never hang the caller
                result = ("bug", traceback.format_exc(), left)
            try:
                conn.send((*result, time.process_time()))  # a fork's CPU time starts at 0
                for end in ends:
                    send_handle(conn, end.fileno(), os.getppid())
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _leave(conn: Connection, replayer: Replayer, fd: int, follower: Any,
           left: list[tuple[int, int]], ends: list[socket.socket]) -> None:
    """Fork a snapshot of this seek where it stands; its end of a new socket
    goes to the seeker with the answer."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        theirs.close()
        conn.close()  # the seek's line to the seeker is not the snapshot's
        for end in ends:
            end.close()
        _serve(Connection(ours.detach()), replayer, fd, follower)
        os._exit(0)
    ours.close()
    left.append((replayer.seq, pid))
    ends.append(theirs)
