"""The recorder meets a failing disk or a killed worker on a real LocalCluster.

Whatever happens to the log, the computation carries on with the right
result, the worker says so once, and what reached the disk reads back up to
its last complete line. Tests run as root, so permissions cannot make a
directory unwritable; the failures are injected where the OS reports them: a
plain log is stored through a memory map and meets the disk when it allocates
its next chunk (``posix_fallocate`` raising ``OSError``, after the part of a
line that fitted), a gzip log at each ``write`` (raising ``OSError``, or a
short write followed by one).
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from distributed import Client, LocalCluster, wait

import replay
from replay import Recorder
from replay.log import ClusterLog
from replay.logfile import LogWriter, iter_lines, log_files

#: seconds any one wait on the cluster may take before the test fails
WAIT = 60


def results(c: Client, futures):
    """``c.gather(futures)`` (a future or a list), failing the test after WAIT seconds."""
    fs = futures if isinstance(futures, list) else [futures]
    try:
        wait(fs, timeout=WAIT)
    except TimeoutError:
        pytest.fail(f"{sum(not f.done() for f in fs)} of {len(fs)} tasks not done after {WAIT} s")
    out = c.gather(fs)
    return out if isinstance(futures, list) else out[0]


def inc(x):
    return x + 1


def slowinc(x):
    time.sleep(0.02)
    return x + 1


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings():
    handler = Warnings()
    logger = logging.getLogger("replay.record")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@contextmanager
def cluster(directory: Path, *, processes: bool = False, compress: bool = False):
    with LocalCluster(
        n_workers=0, processes=processes, threads_per_worker=1, dashboard_address="127.0.0.1:0",
        host="127.0.0.1" if processes else None,
    ) as cluster, Client(cluster) as c:
        c.register_plugin(Recorder(str(directory), compress=compress))
        cluster.scale(1)
        c.wait_for_workers(1, timeout=WAIT)
        yield cluster, c


def session_of(cluster):
    (worker,) = cluster.workers.values()
    return worker.plugins[Recorder.name]._sessions[id(worker)]


class FailingFile:
    """A log file whose disk goes away: ``write`` fails like the OS would.

    ``partial`` first lets half of one write through and reports the short
    count, as ``write(2)`` does when the disk fills up mid-line.
    """

    def __init__(self, raw, err: int, partial: bool = False):
        self.raw = raw
        self.err = err
        self.partial = partial
        self.calls = 0

    def write(self, data) -> int:
        self.calls += 1
        if self.partial:
            self.partial = False
            half = bytes(data[: len(data) // 2])
            return self.raw.write(half)
        raise OSError(self.err, os.strerror(self.err))

    def flush(self) -> None:
        raise OSError(self.err, os.strerror(self.err))

    def close(self) -> None:
        self.raw.close()


class FailingChunks:
    """A mapped log's next chunk, refused as ``posix_fallocate`` refuses it."""

    def __init__(self, err: int):
        self.err = err
        self.calls = 0

    def __call__(self, fd: int, start: int) -> None:
        self.calls += 1
        raise OSError(self.err, os.strerror(self.err))


def break_disk(err: int, partial: bool, dask_worker=None) -> tuple[int, int]:
    """Make the worker's log file fail; runs on its event loop, between
    stimuli. The session's step and the bytes its log holds."""
    session = dask_worker.plugins[Recorder.name]._sessions[id(dask_worker)]
    writer = session.writer
    size = writer.tell()
    if writer.mapped:
        writer._window = FailingChunks(err)
    else:
        failing = FailingFile(writer._raw, err, partial)
        if writer._gz is not None:
            writer._gz.fileobj = failing
        writer._raw = failing
    return session.seq, size


def read_back(directory: Path) -> list[ClusterLog]:
    return [ClusterLog.open(p, validate=True) for p in log_files(str(directory))]


@pytest.fixture
def small_chunks(monkeypatch):
    """Plain logs allocated a page at a time: a few lines fill a chunk."""
    monkeypatch.setattr(LogWriter, "CHUNK", mmap.ALLOCATIONGRANULARITY)


@pytest.mark.parametrize(
    "err, partial, compress",
    [
        (errno.ENOSPC, True, False),
        (errno.EIO, True, False),
        (errno.EACCES, False, True),
        (errno.ENOSPC, False, True),
    ],
    ids=["disk full at a chunk", "I/O error at a chunk", "unwritable, gzip", "disk full, gzip"],
)
def test_write_fails_mid_run(tmp_path, warnings, small_chunks, err, partial, compress):
    with cluster(tmp_path, compress=compress) as (cl, c):
        assert results(c, c.submit(inc, 1)) == 2
        session = session_of(cl)
        assert session.writer.mapped is not compress  # which path writes
        ((before, size),) = c.run(break_disk, err, partial).values()
        failing = session.writer._window if not compress else session.writer._raw
        assert before > 0 and isinstance(failing, FailingChunks if not compress else FailingFile)
        assert results(c, c.map(inc, range(10))) == list(range(1, 11))
        assert results(c, c.submit(inc, 100)) == 101  # the worker carries on unrecorded
        assert not session.active
        assert failing.calls >= 1
    assert len(warnings) == 1, warnings
    assert "stopped after step" in warnings[0]
    assert f"OSError({err}" in warnings[0] or f"Error({err}" in warnings[0], warnings[0]

    (path,) = log_files(str(tmp_path))
    raw = Path(path).read_bytes()
    if not compress:
        # cut on close to what was stored: the lines before, then the part
        # of the next line that fitted in the chunk
        assert b"\0" not in raw and len(raw) > size and not raw.endswith(b"\n")
    # the log holds every step up to the one the warning names: for a mapped
    # log, the lines that still fitted in the chunk, then none
    stopped = int(re.search(r"stopped after step (\d+)", warnings[0]).group(1))
    assert stopped == before if compress else stopped >= before
    (log,) = read_back(tmp_path)
    (w,) = log.workers
    assert w.events == stopped
    assert not w.ended
    if partial:
        assert [m for m in log.warnings if "torn last line" in m], log.warnings
    else:
        assert [m for m in log.warnings if "compressed stream ends early" in m], log.warnings


def test_log_directory_is_a_file(tmp_path, warnings):
    # the recorder opens its file at the first stimulus; the directory cannot exist
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    with cluster(blocker) as (cl, c):
        assert results(c, c.map(inc, range(5))) == list(range(1, 6))
        assert not session_of(cl).active
    assert len(warnings) == 1, warnings
    assert "stopped after step 0" in warnings[0] and "FileExistsError" in warnings[0]
    assert blocker.read_text() == "not a directory"


def test_worker_killed_mid_run(tmp_path):
    with cluster(tmp_path, processes=True) as (cl, c):
        assert results(c, c.submit(inc, 1)) == 2
        futures = c.map(slowinc, range(40))
        deadline = time.monotonic() + WAIT
        while sum(f.done() for f in futures) < 5:
            if time.monotonic() > deadline:
                pytest.fail(f"{sum(f.done() for f in futures)} of 5 tasks done after {WAIT} s: "
                            "the worker was to be killed mid-run")
            time.sleep(0.01)
        (pid,) = c.run(os.getpid).values()
        # what the scheduler heard the worker finish: each was sent after the
        # handle_stimulus call that said so had returned
        heard = {k for k, ws in c.who_has().items() if ws}
        os.kill(pid, signal.SIGKILL)
        # the nanny starts a new worker, which records to a new file
        assert results(c, futures) == list(range(1, 41))
        c.wait_for_workers(1, timeout=WAIT)
        assert (c.run(os.getpid).popitem()[1]) != pid
    logs = read_back(tmp_path)
    assert len(logs) == 2
    by_pid = {log.workers[0].header["pid"]: log.workers[0] for log in logs}
    killed = by_pid.pop(pid)
    (restarted,) = by_pid.values()
    # the killed worker's log stops where it died, every line complete or skipped
    assert not killed.ended and killed.events >= 3
    assert restarted.ended and restarted.events > 0
    assert killed.header["from_empty"] and restarted.header["from_empty"]
    assert killed.ended is False and logs[0].warnings == logs[1].warnings == []
    # stored through the map and killed mid-chunk: zeros follow the last line
    # (a log closed cleanly is cut to its lines)
    raw = {log.workers[0].header["pid"]: Path(log.path).read_bytes() for log in logs}
    lines = raw[pid].rstrip(b"\0")
    assert len(lines) < len(raw[pid]) and lines.endswith(b"\n")
    assert b"\0" not in raw[restarted.header["pid"]]
    # every task whose end the scheduler heard of is in the log, with the
    # instruction that told it
    finished = {rec["instructions"][i]["key"]
                for _, rec in iter_lines(next(log.path for log in logs
                                              if log.workers[0].header["pid"] == pid))
                if rec["kind"] == "step"
                for i in range(len(rec.get("instructions", [])))
                if rec["instructions"][i]["cls"] == "TaskFinishedMsg"}
    assert len(heard) >= 5 and heard <= finished, heard - finished
    # and the log replays as the worker ran, up to where it died
    killed_log = replay.open(next(log.path for log in logs if log.workers[0].header["pid"] == pid))
    assert killed_log.worker().verify()[0] is None
