"""Log files: line writers (crash-safe, or threaded for speed) and a streaming reader.

This is the I/O edge of the data path; everything after it works on dicts.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import mmap
import os
import queue
import re
import shutil
import stat
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import orjson

from replay.errors import LogError

#: longest line the reader accepts. A real step is well under 100 kB; the
#: bound keeps a hostile line from costing gigabytes once parsed.
MAX_LINE = 16 * 2**20
GZIP_MAGIC = b"\x1f\x8b"

#: the records a worker's history is made of
KINDS = ("header", "step", "resources", "end")
#: what a cluster dump adds (replay.dump): final states and the scheduler's
#: view, read by the commands that want them; replay has no use for them
SIDE_KINDS = ("final", "scheduler")

#: what names a log: a file (``-``: standard input), a directory of worker
#: logs, or several files (a tuple), the last two read as one cluster log
LogName = str | tuple[str, ...]


def encode_line(record: dict) -> bytes:
    """``record`` as one line of a log: compact JSON and a newline."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14; the constant is Python 3.12's)
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform == "linux" else None)


class LogWriter:
    """Appends one JSON line per record; each is in the kernel's hands (the
    page cache) when ``write`` returns, so a worker killed with SIGKILL
    leaves every line it finished.

    A plain file is written through a shared memory map of a window of it,
    ``chunk`` bytes allocated at a time: a store into the map is in the page
    cache as a ``write(2)`` is, without a system call per line. The file is
    cut to the length written on :meth:`close`; one left by a killed writer
    ends in zero bytes up to the chunk's end, which the reader takes as the
    end of the recording (:func:`scan_lines`). Space is allocated before a
    window is mapped, so a full disk is an ``OSError`` there, never a SIGBUS
    on a store. A file that cannot be mapped (a pipe, a device) is written
    unbuffered instead, as gzip output is, sync-flushed after each line; a
    reader treats the missing gzip trailer as a torn end.
    """

    #: bytes a plain log is allocated and mapped at a time: at most this much
    #: of it is mapped into the worker (and counted in its RSS) at once
    CHUNK = 1 << 20

    def __init__(self, path: str, *, compress: bool = False, chunk: int | None = None):
        self.path = path
        self._gz: gzip.GzipFile | None = None
        self._map: mmap.mmap | None = None
        self._fd = -1
        #: the map's window: where it starts in the file, its length, and
        #: where the next line goes in it (``_room`` -1: nothing mapped ever,
        #: every line through :meth:`_append`)
        self._base = 0
        self._room = -1
        self._at = 0
        #: bytes allocated and mapped at a time (0: none, not mapped)
        self.chunk = 0
        if compress:
            self._raw = open(path, "ab", buffering=0)
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="ab")
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        size = -1
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.ENODEV, "not a regular file")
            if not hasattr(os, "posix_fallocate"):  # macOS: a store could SIGBUS on a full disk
                raise OSError(errno.ENOTSUP, "no posix_fallocate")
            # appended to, as "ab" would, after what a killed writer stored:
            # the zero bytes past it are its chunk's unwritten rest
            size = _stored_length(fd)
            start = size - size % mmap.ALLOCATIONGRANULARITY
            chunk = self.CHUNK if chunk is None else chunk
            self.chunk = max(mmap.ALLOCATIONGRANULARITY,
                             chunk - chunk % mmap.ALLOCATIONGRANULARITY)
            self._window(fd, start)
            self._at = size - start
        except OSError:
            try:
                if size >= 0 and self._room == 0:  # allocated, then not mapped
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
            self.chunk = 0
            self._raw = open(path, "ab", buffering=0)
            return
        self._fd = fd
        self._raw = None

    @property
    def mapped(self) -> bool:
        """Whether lines go through the memory map (not ``write(2)``)."""
        return self._fd >= 0

    def _window(self, fd: int, start: int) -> None:
        """Map ``chunk`` bytes of the file from ``start``, allocated first."""
        if self._map is not None:
            self._map.close()
            self._map = None
        self._room = self._at = 0
        self._base = start
        os.posix_fallocate(fd, start, self.chunk)
        self._map = mmap.mmap(fd, self.chunk, offset=start)
        if _POPULATE_WRITE is not None:
            # the chunk's pages faulted in by one call now, not one fault per
            # page in later stores, each on a cold kernel path
            try:
                self._map.madvise(_POPULATE_WRITE)
            except OSError:  # a kernel before 5.14: the stores fault them in
                pass
        self._room = self.chunk

    def write(self, record: dict) -> None:
        # write_line(encode_line(record)) in one frame: once per stimulus
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        at = self._at
        end = at + len(line)
        if end <= self._room:
            self._map[at:end] = line  # type: ignore[index]
            self._at = end
        else:
            self._append(line)

    def write_line(self, line: bytes) -> None:
        """One line already encoded (:func:`encode_line`)."""
        at = self._at
        end = at + len(line)
        if end <= self._room:  # the usual line: a copy into the map
            self._map[at:end] = line  # type: ignore[index]
            self._at = end
        else:
            self._append(line)

    def _append(self, line: bytes) -> None:
        view = memoryview(line)
        if self._fd >= 0:  # across the window's end: what fits, then the next
            while True:
                part = view[: self._room - self._at]
                if part:
                    self._map[self._at : self._at + len(part)] = part  # type: ignore[index]
                    self._at += len(part)
                    view = view[len(part):]
                if not view:
                    return
                self._window(self._fd, self._base + self._room)
        if self._gz is not None:
            self._gz.write(line)
            self._gz.flush(zlib.Z_SYNC_FLUSH)
            return
        # an unbuffered file may take part of a line (disk full, signal);
        # the rest must follow or the next line would be glued to it
        assert self._raw is not None
        while view:
            n = self._raw.write(view)
            if n is None:
                raise BlockingIOError(f"{self.path}: write would block")
            view = view[n:]

    def tell(self) -> int:
        """Bytes written so far (compressed, for gzip)."""
        if self._raw is None:  # mapped (or was, closed)
            return self._base + self._at
        return self._raw.tell()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                if self._map is not None:
                    self._map.close()
                    self._map = None
                os.ftruncate(fd, self._base + self._at)  # the chunk's unwritten rest
            finally:
                self._room = -1
                os.close(fd)
            return
        try:
            if self._gz is not None:
                self._gz.close()
        finally:
            if self._raw is not None:
                self._raw.close()


def stored_length(path: str) -> int:
    """The bytes of a log before the zero bytes that end it while a mapped
    :class:`LogWriter` still writes it, or once it was killed: what a reader
    finds in it. The file's size for any other file.

    A live log's size and modification time change only once per chunk (its
    stores are into pages already faulted in), so this, not the size, tells
    that lines were added since a log was last read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _stored_length(fd)
    finally:
        os.close(fd)


def _stored_length(fd: int) -> int:
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - (1 << 16))
        kept = os.pread(fd, end - start, start).rstrip(b"\0")
        if kept:
            return start + len(kept)
        end = start
    return 0


class LineWriter:
    """``write(record)`` as one line on a binary stream the caller opened and closes.

    The lines of :class:`LogWriter` without its push to the OS per line: for
    a writer with no crash to survive, such as a simulation.
    """

    __slots__ = ("_write",)

    def __init__(self, stream: Any):
        self._write = stream.write

    def write(self, record: dict) -> None:
        self._write(encode_line(record))


class ThreadedLineWriter:
    """:class:`LineWriter` handing chunks of lines to a thread that writes them.

    For a compressing stream: zlib releases the GIL, so compression runs on
    another core beside the producer. An error of the stream is raised by the
    next ``write`` or by ``close()``, which writes what is left and leaves
    ``stream`` open.
    """

    def __init__(self, stream: Any, chunk: int = 1 << 20):
        self._stream = stream
        #: lines not handed over yet; ``_size`` is their length in bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._chunk = chunk
        # bounded: a producer faster than the stream waits instead of piling up chunks
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        #: the stream's first error; later chunks are dropped
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="replay-line-writer", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        line = encode_line(record)
        self._parts.append(line)
        self._size += len(line)
        if self._size >= self._chunk:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(b"".join(self._parts))
        self._parts = []
        self._size = 0

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._stream.write(chunk)
                except BaseException as e:  # reported by the next write or close
                    self._error = e

    def close(self) -> None:
        if self._parts:
            self._queue.put(b"".join(self._parts))
            self._parts = []
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        f: IO[bytes] = open(path, "rb")
    except OSError as e:
        raise LogError(path, None, f"cannot open: {e.strerror or e}") from None
    head = f.peek(2)[:2] if hasattr(f, "peek") else b""
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    return f


def iter_lines(
    path: str,
    *,
    warn: Callable[[str], None] | None = None,
    source: str | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record dict)`` without holding the file in memory.

    Reads ``source`` (default: ``path``) and names ``path`` in messages.
    What a killed writer leaves behind is skipped with a warning: a last line
    without its newline that does not parse, or a gzip stream without its
    end. Zero bytes to the end of the file (the rest of a killed
    :class:`LogWriter`'s chunk) end the log quietly, like the file's end.
    Any other bad line is a :class:`LogError`. CRLF line ends (a file passed
    through a Windows tool) are read with a warning.
    """
    for lineno, _, obj in scan_lines(path, warn=warn, source=source):
        yield lineno, obj


def scan_lines(
    path: str,
    *,
    warn: Callable[[str], None] | None = None,
    source: str | None = None,
    checked: Callable[[bytes], Any] | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """:func:`iter_lines` with where each line starts: ``(line number, byte
    offset in the uncompressed stream, record dict)``, for :func:`lines_at`.

    ``checked(line)`` is asked first, where given: what it returns other than
    None is yielded as the line's record (a record it parsed and checked, see
    :func:`schemas.compiled.checked`); None leaves the line to be read as here."""
    f = _open_binary(path if source is None else source)
    lineno = 0
    offset = 0
    crlf = False
    # bound once: this loop runs for every line of every log read
    readline, limit = f.readline, MAX_LINE + 1
    try:
        while True:
            try:
                line = readline(limit)
            except EOFError:
                # a gzip stream without its end: a writer stopped mid-stream
                if warn:
                    warn(f"{path}:{lineno + 1}: compressed stream ends early "
                         "(the writer stopped); reading stops here")
                return
            except (zlib.error, gzip.BadGzipFile) as e:
                # the reader decompresses ahead, so no line can be blamed
                raise LogError(path, None, f"corrupt compressed stream after line {lineno}: {e}") from None
            except OSError as e:
                raise LogError(path, lineno + 1, f"read error: {e.strerror or e}") from None
            if not line:
                return
            lineno += 1
            n = len(line)
            start, offset = offset, offset + n
            if n == limit:
                raise LogError(path, lineno, f"line longer than {MAX_LINE} bytes")
            torn = line[-1] != 10  # b"\n"
            if torn and line[-1] == 0:
                # zero bytes to the end: the unwritten rest of a mapped
                # writer's chunk (LogWriter), where its recording stops: it
                # was killed, or is still writing. What precedes them on
                # this line is a torn last line.
                line = line.rstrip(b"\0")
                if not line:
                    return
            if not crlf and not torn and n > 1 and line[-2] == 13:  # b"\r\n"
                crlf = True
                if warn:
                    warn(f"{path}:{lineno}: CRLF line ends (converted by another tool?); "
                         "reading on")
            if checked is not None and not torn:
                obj = checked(line)
                if obj is not None:
                    yield lineno, start, obj
                    continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if torn:
                    if warn:
                        warn(f"{path}:{lineno}: torn last line skipped "
                             "(the writer stopped mid-line)")
                    return
                if not line.strip():
                    continue
                raise LogError(path, lineno, f"invalid JSON: {e}") from None
            if type(obj) is not dict:
                raise LogError(path, lineno, "a record must be a JSON object")
            yield lineno, start, obj
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def lines_at(
    path: str, lines: Sequence[int], offsets: Sequence[int], *, source: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record dict)`` of the given lines only, which a
    :func:`scan_lines` pass found at ``offsets`` (ascending): the lines
    between are skipped unread by the parser. A compressed stream is
    decompressed up to each, never rewound."""
    f = _open_binary(path if source is None else source)
    pos = 0
    try:
        for lineno, offset in zip(lines, offsets):
            try:
                if offset != pos:
                    f.seek(offset)
                line = f.readline(MAX_LINE + 1)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
                raise LogError(path, lineno, f"cannot read the line again ({e}): the log changed since it was read") from None
            pos = offset + len(line)
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is not dict:
                raise LogError(path, lineno, "not the record read before: the log changed since it was read")
            yield lineno, obj
    finally:
        if f is not sys.stdin.buffer:
            f.close()


#: the copy of standard input a process made before it re-executed itself
#: (with the recorded hash seed): the new process reads the copy, not stdin
STDIN_COPY_ENV = "REPLAY_STDIN_COPY"


def spool_stdin() -> str:
    """Copy standard input to a temporary file: a log is read more than once.

    A copy made before this process was re-executed is taken over instead.
    The caller removes the file.
    """
    copy = os.environ.pop(STDIN_COPY_ENV, None)
    if copy and os.path.isfile(copy):
        return copy
    fd, tmp = tempfile.mkstemp(prefix="replay-stdin-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 2**20)
    except OSError as e:
        os.unlink(tmp)
        raise LogError("<stdin>", None, f"cannot read: {e.strerror or e}") from None
    return tmp


def write_records(path: str, records: Iterator[dict], *, compress: bool | None = None) -> int:
    """Write records to a new file (``.gz`` compresses); returns how many."""
    if compress is None:
        compress = path.endswith(".gz")
    n = 0
    with open(path, "wb") as raw:
        out: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
        buf = io.BufferedWriter(out) if compress else out  # type: ignore[arg-type]
        for rec in records:
            buf.write(encode_line(rec))
            n += 1
        buf.flush()
        if compress:
            out.close()
    return n


def cache_folder() -> str:
    """Where files made from a log go when they must not go beside it (the
    folder is not writable, or it is a bounded recording's): the user's
    cache folder, ``$XDG_CACHE_HOME/dask-replay`` (``~/.cache/dask-replay``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "dask-replay")


def cache_file(made_from: str, suffix: str, *under: str) -> str:
    """The cache folder's file (in its subfolder ``under``) for what was made
    from ``made_from`` (a log's absolute path, say): named by its hash."""
    name = hashlib.sha256(made_from.encode()).hexdigest()[:32] + suffix
    return os.path.join(cache_folder(), *under, name)


#: the scheduler's logs in a recording directory (:mod:`replay.scheduler_recorder`):
#: ``scheduler.jsonl``, or ``scheduler-N.jsonl`` for a second scheduler
SCHEDULER_LOG_NAME = re.compile(r"scheduler(-[0-9]+)?\.jsonl(\.gz)?")


def log_files(directory: str) -> list[str]:
    """The worker logs a :class:`~replay.Recorder` wrote to ``directory``
    (not the scheduler's, which is no worker's). A bounded worker's folder of
    segments (``NAME.segments/``) is one log: the segments it keeps, joined
    (:func:`replay.segments.joined`); so is ``directory`` itself if it is one."""
    from replay import segments  # it imports this module

    if segments.is_segment_folder(directory):
        return [segments.joined(directory)]
    names = os.listdir(directory)
    return sorted(
        [os.path.join(directory, name) for name in names
         if name.endswith((".jsonl", ".jsonl.gz")) and not SCHEDULER_LOG_NAME.fullmatch(name)]
        + [segments.joined(os.path.join(directory, name)) for name in names
           if name.endswith(segments.FOLDER_SUFFIX)
           and segments.is_segment_folder(os.path.join(directory, name))]
    )


def log_inputs(log: LogName) -> list[str] | None:
    """The files of a log named by a directory or several files; None for one file."""
    if isinstance(log, tuple):
        return list(log)
    if log != "-" and os.path.isdir(log):
        found = log_files(log)
        if not found:
            raise LogError(log, None, "no .jsonl or .jsonl.gz worker logs in this directory")
        return found
    return None


def as_log(paths: list[str]) -> LogName:
    """The log several command-line paths name. Every worker log of one
    directory is that directory (sharing its index); otherwise the files.
    A scheduler's log among them (``DIR/*.jsonl``) is no worker's: it is read
    beside the workers' logs, not as one of them."""
    if len(paths) > 1:
        paths = [p for p in paths if not SCHEDULER_LOG_NAME.fullmatch(os.path.basename(p))] or paths
    if len(paths) == 1:
        return paths[0]
    for p in paths:
        if p == "-":
            raise LogError(p, None, "standard input is a log of its own; give it alone")
        if os.path.isdir(p):
            raise LogError(p, None, "a directory is a log of its own; give it alone")
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) == 1:
        folder = folders.pop()
        if sorted(map(os.path.abspath, paths)) == log_files(folder):
            return os.path.dirname(paths[0]) or "."
    return tuple(paths)


def log_name(log: LogName) -> str:
    """How messages name a log."""
    return " ".join(log) if isinstance(log, tuple) else log
