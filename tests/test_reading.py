"""One scan of a log finds every worker's lines; reading a worker parses only its own.

A cluster log interleaves the records of several workers. Reading one
worker's records must give exactly what filtering every record of the file
gives, while parsing that worker's lines only, whether the log is compressed
or not, and from any step on.
"""
from __future__ import annotations

import gzip
import types

import orjson
import pytest

import replay.logfile
from replay.errors import LogError
from replay.log import ClusterLog
from replay.logfile import iter_lines


@pytest.fixture(params=["gzip", "plain"])
def cluster_log(request, fixture_path, tmp_path):
    path = fixture_path("cluster-log.jsonl.gz")
    if request.param == "gzip":
        return path
    plain = tmp_path / "cluster-log.jsonl"
    plain.write_bytes(gzip.decompress(open(path, "rb").read()))
    return str(plain)


@pytest.fixture
def parses(monkeypatch):
    """Count the lines the log reader parses."""
    count = [0]

    def loads(line):
        count[0] += 1
        return orjson.loads(line)

    monkeypatch.setattr(replay.logfile, "orjson", types.SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError))
    return count


def filtered(path: str, address: str, start: int = 1) -> list[tuple[int, dict]]:
    """A worker's steps and resource changes from ``start`` on, the slow way:
    every record of the file, filtered."""
    return [
        (lineno, rec) for lineno, rec in iter_lines(path)
        if rec.get("worker") == address and rec["kind"] in ("step", "resources") and rec["seq"] >= start
    ]


def test_each_worker_parses_only_its_lines(cluster_log, parses):
    log = ClusterLog.open(cluster_log)
    assert len(log.workers) >= 2
    assert parses[0] == log.lines  # the scan: every line once
    for w in log.workers:
        expected = filtered(cluster_log, w.address)
        assert expected and len(expected) < log.lines
        before = parses[0]
        got = list(log.records(w))
        assert parses[0] - before == len(expected)  # its own lines, each once
        assert got == expected


def test_records_from_a_step_on(cluster_log):
    log = ClusterLog.open(cluster_log)
    for w in log.workers:
        for start in (1, 2, w.events // 2, w.events, w.events + 1):
            assert list(log.records(w, start=start)) == filtered(cluster_log, w.address, start)


def test_a_log_changed_after_its_scan_is_named(tmp_path, fixture_path):
    path = tmp_path / "cluster-log.jsonl"
    data = gzip.decompress(open(fixture_path("cluster-log.jsonl.gz"), "rb").read())
    path.write_bytes(data)
    log = ClusterLog.open(str(path))
    w = log.workers[1]
    # the first line of the second worker's steps now holds the first worker's
    lines = data.splitlines(keepends=True)
    theirs = w.lines[0] - 1
    mine = next(i for i, line in enumerate(lines) if orjson.loads(line).get("worker") == log.workers[0].address
                and orjson.loads(line)["kind"] == "step")
    lines[theirs] = lines[mine]
    path.write_bytes(b"".join(lines))
    with pytest.raises(LogError) as e:
        list(log.records(w))
    assert e.value.line == theirs + 1
    assert "changed since it was read" in str(e.value)
