"""The recorder's log file: lines stored through a memory map, a chunk at a time.

A line is in the page cache when ``write`` returns, so a process killed with
SIGKILL leaves every line it finished; what it leaves after them (the rest of
its chunk, zero bytes) ends the log for every reader, quietly, as the file's
end would. A clean close cuts the file to the bytes written.
"""
from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading

import orjson
import pytest

from replay.errors import LogError
from replay.logfile import LogWriter, encode_line, iter_lines, scan_lines, stored_length
from replay.segments import Bound, SegmentFiles, joined

PAGE = mmap.ALLOCATIONGRANULARITY


def read(path) -> tuple[list[dict], list[str]]:
    warnings: list[str] = []
    return [rec for _, rec in iter_lines(str(path), warn=warnings.append)], warnings


def record(i: int, width: int) -> dict:
    return {"kind": "step", "seq": i, "pad": "x" * width}


def test_lines_across_chunks_read_back_and_close_cuts_the_file(tmp_path):
    path = tmp_path / "w.jsonl"
    w = LogWriter(str(path), chunk=PAGE)
    assert w.mapped and w.chunk == PAGE
    # lines of every length around the chunk: straddling one end, and longer
    # than a whole chunk (a snapshot header is)
    recs = [record(i, width) for i, width in
            enumerate([10, PAGE - 200, 300, 5, 3 * PAGE, 0, PAGE - 40, 77])]
    written = 0
    for rec in recs:
        w.write(rec)
        written += len(encode_line(rec))
        assert w.tell() == written
    # before close: allocated to the chunk's end, the rest zero
    raw = path.read_bytes()
    assert len(raw) > written and len(raw) % PAGE == 0
    assert raw[written:] == bytes(len(raw) - written)
    w.close()
    raw = path.read_bytes()
    assert len(raw) == written and b"\0" not in raw
    assert raw == b"".join(map(encode_line, recs))
    assert read(path) == (recs, [])


def test_reopened_log_is_appended_to(tmp_path):
    path = tmp_path / "w.jsonl"
    first = [record(i, 50) for i in range(3)]
    w = LogWriter(str(path), chunk=PAGE)
    for rec in first:
        w.write(rec)
    w.close()
    size = path.stat().st_size
    assert size % PAGE  # the next writer starts inside a page, not at a window's start
    w = LogWriter(str(path), chunk=PAGE)
    assert w.tell() == size
    second = [record(i, PAGE // 3) for i in range(3, 9)]
    for rec in second:
        w.write(rec)
    w.close()
    assert read(path) == (first + second, [])


KILLED = """
import os, signal, sys
from replay.logfile import LogWriter
w = LogWriter(sys.argv[1], chunk=int(sys.argv[2]))
for i in range(int(sys.argv[3])):
    w.write({"kind": "step", "seq": i + 1, "pad": "y" * (i % 97)})
print(w.tell(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("lines", [1, 500])
def test_a_writer_killed_with_sigkill_leaves_every_line(tmp_path, lines):
    path = tmp_path / "killed.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path), str(64 * 1024), str(lines)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    written = int(proc.stdout)
    raw = path.read_bytes()
    # killed mid-chunk: the file runs on in zeros past the last line
    assert len(raw) > written and raw[written:] == bytes(len(raw) - written)
    recs, warnings = read(path)
    assert [r["seq"] for r in recs] == list(range(1, lines + 1))
    assert warnings == []


def test_a_log_left_by_a_killed_writer_is_appended_to_after_its_last_line(tmp_path):
    """A writer appends to a log that exists, as a file opened "ab" does: to
    one a killed writer left, its lines go where that writer's stopped, over
    the zero tail, not after it (which would leave the log unreadable from
    there on)."""
    path = tmp_path / "killed.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path), str(64 * 1024), "5"],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    written = int(proc.stdout)
    assert path.stat().st_size > written  # the zero tail is there
    w = LogWriter(str(path), chunk=PAGE)
    assert w.tell() == written
    w.write({"kind": "step", "seq": 6})
    w.close()
    recs, warnings = read(path)
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5, 6] and warnings == []


def test_a_torn_line_before_the_zero_tail_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "torn.jsonl"
    lines = b"".join(encode_line(record(i, 20)) for i in range(3))
    path.write_bytes(lines + b'{"kind": "st' + bytes(PAGE))
    recs, warnings = read(path)
    assert [r["seq"] for r in recs] == [0, 1, 2]
    assert len(warnings) == 1 and "torn.jsonl:4: torn last line skipped" in warnings[0]


def test_zero_bytes_followed_by_more_lines_are_bad_input(tmp_path):
    # zeros in the middle are no writer's tail: named, with the line
    path = tmp_path / "bad.jsonl"
    path.write_bytes(encode_line(record(0, 5)) + bytes(100) + encode_line(record(1, 5)))
    with pytest.raises(LogError) as e:
        list(scan_lines(str(path)))
    assert "bad.jsonl:2" in str(e.value) and "invalid JSON" in str(e.value)


def test_a_file_that_cannot_be_mapped_is_written_line_by_line(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    w = LogWriter(str(fifo), chunk=PAGE)
    assert not w.mapped
    recs = [record(i, 2 * PAGE if i == 1 else 10) for i in range(3)]
    for rec in recs:
        w.write(rec)
    w.close()
    reader.join(10)
    assert [orjson.loads(x) for x in got[0].splitlines()] == recs


def test_a_segment_counts_what_is_written_and_reserves_its_chunk(tmp_path):
    bound = Bound(max_bytes=160 * PAGE)
    files = SegmentFiles(str(tmp_path / "w.segments"), bound)
    writer = files.open_next()
    assert writer.mapped and writer.chunk == PAGE  # a sixteenth of a segment, at least a page
    writer.write(record(0, 100))
    assert files.size() == writer.tell() == len(encode_line(record(0, 100)))
    assert os.path.getsize(writer.path) == PAGE  # allocated beyond
    # the segment's reservation covers its file as allocated
    assert files.reserved() >= bound.segment_bytes + PAGE
    written = files.size()
    files.close()
    assert os.path.getsize(writer.path) == written
    assert read(writer.path)[0] == [record(0, 100)]


def test_lines_stored_into_a_live_chunk_are_seen_by_their_length_not_the_size(tmp_path):
    path = tmp_path / "live.jsonl"
    w = LogWriter(str(path), chunk=4 * PAGE)
    w.write(record(0, 10))
    size, first = path.stat().st_size, w.tell()
    assert stored_length(str(path)) == first
    w.write(record(1, 10))
    # the size did not move; what is stored did
    assert path.stat().st_size == size and stored_length(str(path)) == w.tell() > first
    # across more than one read of the tail
    w.write(record(2, 3 * PAGE))
    assert stored_length(str(path)) == w.tell()
    w.close()
    assert stored_length(str(path)) == path.stat().st_size == w.tell()
    empty = tmp_path / "empty.jsonl"
    LogWriter(str(empty)).close()
    assert stored_length(str(empty)) == 0


def test_a_bounded_recordings_joined_log_follows_its_live_segment(tmp_path):
    files = SegmentFiles(str(tmp_path / "w.segments"), Bound(max_bytes=1 << 20))
    writer = files.open_next()
    header = {"kind": "header", "format": "dask-replay", "worker": "w"}
    writer.write(header)
    writer.write(record(1, 10))
    assert [r.get("seq") for r in read(joined(files.folder))[0]] == [None, 1]
    writer.write(record(2, 10))  # the same chunk: the segment's size is unchanged
    assert [r.get("seq") for r in read(joined(files.folder))[0]] == [None, 1, 2]
    files.close()


def test_a_file_allocated_but_not_mapped_is_cut_back_and_written_line_by_line(tmp_path, monkeypatch):
    path = tmp_path / "w.jsonl"
    path.write_bytes(encode_line(record(0, 5)))

    def refused(*args, **kwargs):
        raise OSError(19, "no mmap here")

    monkeypatch.setattr("replay.logfile.mmap.mmap", refused)
    w = LogWriter(str(path), chunk=PAGE)
    assert not w.mapped
    w.write(record(1, 5))
    w.close()
    # no allocated zeros left between the lines
    assert read(path) == ([record(0, 5), record(1, 5)], [])


def test_an_index_of_a_live_log_is_stale_once_a_line_is_stored(tmp_path):
    from replay.index import HEAD, identity  # the read side's

    path = tmp_path / "live.jsonl"
    w = LogWriter(str(path))
    w.write(record(0, HEAD))  # past the head the index hashes
    before = identity(str(path))
    w.write(record(1, 10))
    after = identity(str(path))
    w.close()
    # one chunk, its pages faulted in before the stores: the size and head
    # did not move, nor (on Linux >= 5.14) the time; the index must still
    # be told apart
    assert (before["size"], before["head"]) == (after["size"], after["head"])
    assert before != after
