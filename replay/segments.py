"""Bounded recording: a worker's log as rolling segments, each from a snapshot.

A worker recorded with a bound (``Recorder(..., max_bytes=, max_age=)``, or
config ``replay.max-bytes`` / ``replay.max-age``) writes a folder
``<worker>.segments/`` of numbered files ``000001.jsonl``, ``000002.jsonl``,
… Each file is a log of its own:

- the first begins, like an unbounded log, at the empty state;
- every later one begins with a header whose ``snapshot``
  (:mod:`replay.snapshot`) is the worker's whole state after the step before
  its first, so it replays from there alone (``from_empty`` false,
  ``segment`` its number);
- each ends with an ``end`` record (reason ``"segment"``) once the next has
  begun.

A segment is closed when its steps reach a tenth of the bound (bytes, not
counting its snapshot, or age), or ``segment_steps`` steps if given. The
oldest closed segments are deleted when a closed segment's last step is older
than ``max_age``, or when the closed ones and the segment being written, at
the most it can grow to, would pass ``max_bytes``: a worker never keeps more
than the bound (unless one segment, its snapshot and a tenth of the bound,
is larger than the bound alone).

Reading: :func:`segment_files` lists a folder's segments in order;
:func:`joined` makes one log of the segments kept (the oldest's header and
snapshot, then every kept step), which every read command takes as an
ordinary log starting at that snapshot's step.
"""
from __future__ import annotations

import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replay.logfile import LogWriter, encode_line

if TYPE_CHECKING:
    from replay.snapshot import Capture

#: ``000001.jsonl`` (or ``.jsonl.gz``): a segment and its number
SEGMENT_NAME = re.compile(r"([0-9]{6,})\.jsonl(\.gz)?")
#: the folder suffix of a worker's segments
FOLDER_SUFFIX = ".segments"
#: the reason an ``end`` record gives for a segment closed for the next one
ROLLED = "segment"
#: room kept for a segment's ``end`` record (about 100 bytes)
_END_BYTES = 256


def parse_bytes(value: Any) -> int | None:
    """``50MB``, ``2 GiB``, ``1e6`` or a number of bytes (dask's parser)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    from dask.utils import parse_bytes as dask_parse_bytes  # dask's own, used by its config

    return int(dask_parse_bytes(value))


def parse_age(value: Any) -> float | None:
    """``1h``, ``30 minutes`` or seconds (dask's parser)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    from dask.utils import parse_timedelta  # dask's own, used by its config

    return float(parse_timedelta(value, default="s"))


@dataclass(frozen=True)
class Bound:
    """How much of a worker's history a bounded recording keeps."""

    #: bytes of segments kept per worker (None: no limit on bytes)
    max_bytes: int | None = None
    #: seconds of history kept per worker (None: no limit on age)
    max_age: float | None = None
    #: a segment closes at this many steps (forced segments, for tests and
    #: measurements); by default only bytes and age close one
    segment_steps: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is None and self.max_age is None and self.segment_steps is None:
            raise ValueError("a bound needs max_bytes, max_age or segment_steps")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"max_age must be positive, got {self.max_age}")

    @property
    def segment_bytes(self) -> int | None:
        return None if self.max_bytes is None else max(1, self.max_bytes // 10)

    @property
    def segment_age(self) -> float | None:
        return None if self.max_age is None else self.max_age / 10


class SegmentWriter(LogWriter):
    """A segment's file, whose first line (the header with its snapshot) is
    encoded on a thread of its own.

    The worker's event loop only captures the state (:func:`~replay.snapshot.capture`,
    the part that needs the state machine still); :meth:`begin` hands the
    capture to a thread that encodes it and writes the header. Lines written
    meanwhile are held in memory, in order, and follow the header, so the
    file holds the same bytes as if the snapshot had been written at once.
    :meth:`close` waits for the thread. An error of the thread (a bug) is
    raised by the next ``write`` or by ``close``.
    """

    def __init__(self, path: str, *, compress: bool = False, chunk: int | None = None):
        super().__init__(path, compress=compress, chunk=chunk)
        self._lock = threading.Lock()
        #: lines written while the header is being encoded; None: written through
        self._held: list[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: bytes on disk once the header is written (None until then)
        self.base: int | None = 0

    def begin(self, header: dict, cap: Capture) -> None:
        """Write ``header`` with the ``snapshot`` encoded from ``cap``, on a
        thread, which then resumes the garbage collector if the capture paused it."""
        assert self._thread is None and self.tell() == 0
        self._held = []
        self.base = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._write_header, args=(header, cap, started),
                                        name="dask-replay-snapshot", daemon=True)
        self._thread.start()
        started.set()

    def _write_header(self, header: dict, cap: Capture, started: threading.Event) -> None:
        # not before start() has returned: the event loop, woken in it, would
        # wait for the GIL this thread holds (a switch interval, 5 ms)
        started.wait()
        # here, not at the top: the read commands import this module without distributed
        from replay.snapshot import encode_line_with, resume_gc

        try:
            try:
                line = encode_line_with(header, cap)
            finally:
                resume_gc(cap)
            del cap  # the tasks it holds alive
            self.write_line(line)  # alone on the file: the loop's lines are held
            self.base = self.tell()
        except BaseException as e:  # raised again on the event loop
            self._error = e
        while True:  # the lines held, without holding the lock while writing
            with self._lock:
                lines, self._held = self._held, []
                if not lines:
                    self._held = None
                    return
            for held in lines:
                self.write_line(held)

    def write(self, record: dict) -> None:
        if self._error is not None:
            self._raise()
        line = encode_line(record)
        with self._lock:
            if self._held is not None:
                self._held.append(line)
                return
        self.write_line(line)

    @property
    def pending(self) -> bool:
        """Whether the header is still being encoded."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Until the header and the lines held are written."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            self._raise()

    def _raise(self) -> None:
        e, self._error = self._error, None
        raise RuntimeError(f"{self.path}: the snapshot could not be written") from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            super().close()


class SegmentFiles:
    """The segments of one worker in its folder: which to write, which to drop."""

    def __init__(self, folder: str, bound: Bound, *, compress: bool = False):
        self.folder = folder
        self.bound = bound
        self.compress = compress
        os.makedirs(folder, exist_ok=True)
        #: closed segments kept, oldest first: (path, bytes, last handled time)
        self.closed: list[tuple[str, int, float | None]] = []
        self.number = 0
        self.writer: SegmentWriter | None = None
        #: of the segment being written: its first step's time and its steps
        self.started: float | None = None
        self.steps = 0
        self.last_handled: float | None = None
        #: how many snapshots ruled out tasks outside ``ws.tasks`` each way
        #: (:attr:`replay.snapshot.Capture.orphans_by`): "ids", the slower
        #: way, says one was alive then
        self.orphans_by: Counter[str] = Counter()
        #: the most bytes one call has written: a segment closes after the
        #: call that fills it, so it may pass its tenth by this much
        self.largest_call = 0
        #: bytes of the last snapshot header written: the next one's guess
        self.header_bytes = 0
        #: the size on disk after the last call, once the header is written
        self._written: int | None = None
        #: what a segment's file is allocated by at a time beyond what is
        #: written (:class:`~replay.logfile.LogWriter`): a sixteenth of a
        #: segment at most, and counted in :meth:`reserved`
        seg = bound.segment_bytes
        self.chunk = LogWriter.CHUNK if seg is None else min(LogWriter.CHUNK, seg // 16)

    def open_next(self) -> SegmentWriter:
        """Close the segment being written (keeping it) and start the next.
        Waits for the segment's snapshot if it is still being written."""
        if self.writer is not None:
            path = self.writer.path
            self.writer.close()
            self.closed.append((path, os.path.getsize(path), self.last_handled))
        self.number += 1
        ext = ".jsonl.gz" if self.compress else ".jsonl"
        self.writer = SegmentWriter(os.path.join(self.folder, f"{self.number:06d}{ext}"),
                                    compress=self.compress, chunk=self.chunk)
        self.started = None
        self.steps = 0
        self._written = None
        return self.writer

    def wrote_steps(self, n: int, handled: float) -> None:
        self.steps += n
        if self.started is None:
            self.started = handled
        self.last_handled = handled
        base = None if self.writer is None else self.writer.base
        if base is None:  # lines held while the header is encoded: not on disk yet
            return
        size = self.size()
        if self._written is None:  # the header is written: its size is known now
            self.header_bytes = base
            self._written = size
            self.prune(handled)
            return
        self.largest_call = max(self.largest_call, size - self._written)
        self._written = size

    def reserved(self) -> int:
        """The most bytes the segment being written can grow to before it
        closes (its header guessed from the last one until it is written)."""
        b = self.bound
        if self.writer is None or b.segment_bytes is None:
            return self.size()
        base = self.writer.base
        header = self.header_bytes if base is None else base
        # the call that fills it, then its end record, in a file allocated
        # up to a chunk beyond what is written
        return (max(self.size(), header + b.segment_bytes + self.largest_call + _END_BYTES)
                + self.writer.chunk)

    def open_next_from(self, ws: Any, header: dict, *, seq: int, handled: float | None) -> SegmentWriter:
        """Close the segment being written and begin the next with ``header``
        and a snapshot of ``ws`` after step ``seq``: captured now, while the
        state machine is still, then encoded and written by the new segment's
        thread (:class:`SegmentWriter`)."""
        # here, not at the top: the read commands import this module without distributed
        from replay.snapshot import capture, resume_gc

        cap = capture(ws, seq=seq, handled=handled, pause_gc=True)
        self.orphans_by[cap.orphans_by] += 1
        try:
            writer = self.open_next()
            writer.begin({**header, "segment": self.number}, cap)
        except BaseException:
            resume_gc(cap)  # no thread will
            raise
        return writer

    def due(self, now: float) -> bool:
        """Whether the segment being written is full."""
        b = self.bound
        if b.segment_steps is not None and self.steps >= b.segment_steps:
            return True
        # bytes of steps: a segment closes when its steps reach a tenth of
        # the bound, whatever its snapshot (none counted before it is written)
        base = None if self.writer is None else self.writer.base
        if b.segment_bytes is not None and base is not None and self.size() - base >= b.segment_bytes:
            return True
        age = b.segment_age
        return age is not None and self.started is not None and now - self.started >= age

    def size(self) -> int:
        w = self.writer
        return 0 if w is None else w.tell()

    def prune(self, now: float) -> list[str]:
        """Delete the oldest closed segments past the bound; the deleted paths."""
        b = self.bound
        gone = []
        while self.closed:
            path, size, last = self.closed[0]
            over_bytes = (b.max_bytes is not None
                          and sum(s for _, s, _ in self.closed) + self.reserved() > b.max_bytes)
            too_old = b.max_age is not None and last is not None and now - last > b.max_age
            if not (over_bytes or too_old):
                break
            self.closed.pop(0)
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            gone.append(path)
        return gone

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def segment_files(folder: str) -> list[str]:
    """A folder's segments, oldest first."""
    found = []
    for name in os.listdir(folder):
        m = SEGMENT_NAME.fullmatch(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return [p for _, p in sorted(found)]


def is_segment_folder(path: str) -> bool:
    return os.path.isdir(path) and bool(segment_files(path))


# --- reading ------------------------------------------------------------


@dataclass
class SegmentCheck:
    """One segment replayed from its own start and compared with its steps."""

    path: str
    #: its number, and the step its snapshot was taken after (0: the empty state)
    number: int
    snapshot_seq: int
    #: the last step it holds
    last: int
    #: the first difference (a :class:`~replay.engine.Divergence`), or None: exact
    divergence: Any = None

    @property
    def exact(self) -> bool:
        return self.divergence is None


def verify_segment(path: str) -> SegmentCheck:
    """Replay a segment from its snapshot (or from the empty state, the first)
    and compare every step with the recording."""
    # the reading side's: never loaded by the recorder
    from replay.history import ClusterHistory
    from replay.log import ClusterLog

    (wh,) = ClusterHistory(ClusterLog.open(path)).workers
    snapshot = wh.header.get("snapshot")
    first = 0 if snapshot is None else snapshot["seq"]
    check = SegmentCheck(path, wh.header.get("segment") or 1, first, wh.events)
    # as every replay of the Python API: refused under another hash seed
    # (InexactReplay), where sets would iterate in another order
    r = wh.replayer()
    for call in wh.calls(first + 1):
        d = r.verify(call)
        if d is not None:
            check.divergence = d
            break
    return check


def verify_folder(folder: str) -> list[SegmentCheck]:
    """Every kept segment of a bounded recording, each from its own snapshot."""
    return [verify_segment(p) for p in segment_files(folder)]


#: how the name of a joined copy ends (:func:`joined`)
JOINED = ".joined.jsonl"


def joined(folder: str) -> str:
    """One log of the segments a folder keeps: the oldest kept segment's
    header (and snapshot), then every kept segment's steps and resource
    changes, and the last one's ``end`` if it has one.

    The copy goes to the cache folder, never into the recording: the bound
    counts every byte there (a flight recorder's folder may be full to it), and
    a recording may be read where it cannot be written. It is rewritten when
    the segments changed (by name, length stored and time); a bounded
    recording is at most its bound, so the copy is too."""
    import json
    import tempfile

    # this module is the recorder's: read side only
    from replay.logfile import cache_file, iter_lines, stored_length, write_records

    files = segment_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no segments")
    source = os.path.abspath(folder)
    # the length stored, not the size: the segment being written grows a
    # chunk at a time (LogWriter)
    stamp = json.dumps({"folder": source, "segments": [
        [os.path.basename(p), stored_length(p), os.stat(p).st_mtime_ns] for p in files]})
    out = cache_file(source, JOINED, "joined")
    where = os.path.dirname(out)
    try:
        with open(out + ".stamp", encoding="utf-8") as f:
            if f.read() == stamp and os.path.exists(out):
                return out
    except FileNotFoundError:
        pass

    def records():
        for n, path in enumerate(files):
            for _, rec in iter_lines(path, source=path):
                kind = rec.get("kind")
                if kind == "header":
                    if n == 0:
                        yield rec
                elif kind == "end" and rec.get("reason") == ROLLED:
                    continue
                else:
                    yield rec

    os.makedirs(where, exist_ok=True)
    # a temporary name of its own: two readers of one recording may join it at once
    fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    os.close(fd)
    try:
        write_records(tmp, records())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with open(out + ".stamp", "w", encoding="utf-8") as f:
        f.write(stamp)
    return out


def joined_from(log_file: str) -> str | None:
    """The segment folder :func:`joined` made ``log_file`` of; None for any other log."""
    import json

    if not log_file.endswith(JOINED):
        return None
    try:
        with open(log_file + ".stamp", encoding="utf-8") as f:
            return json.load(f)["folder"]
    except FileNotFoundError:
        return None


def kept_from(header: dict) -> str | None:
    """What a log starting at a snapshot does not have, in words; None for a
    log from the empty state."""
    snap = header.get("snapshot")
    if not snap:
        return None
    import time  # only for the words: how long ago

    text = f"history before step {snap['seq']:,}"
    handled = snap.get("handled")
    if isinstance(handled, (int, float)):
        ago = max(0.0, time.time() - handled)
        text += f" ({_ago(ago)} ago)"
    return text + " not kept (bounded recording: it starts from the snapshot there)"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def departures(log_file: str) -> list[str]:
    """For a bounded recording's joined log, each kept segment that does not
    replay exactly from its own snapshot, in words; [] for any other log."""
    folder = joined_from(log_file)
    if folder is None:
        return []
    return [f"inexact from the snapshot at step {c.snapshot_seq:,} (segment {c.number}: "
            f"{c.divergence.kind} differ at step {c.divergence.seq:,})"
            for c in verify_folder(folder) if not c.exact]
