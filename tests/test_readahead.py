"""Decoding in a second process must not change what the replay reaches.

Each test pins which path answered: read ahead in a forked child, or in
process. A read-ahead path that silently fell back to the other would
otherwise pass every comparison.
"""
from __future__ import annotations

import gzip
import os

import orjson
import pytest

import replay
import replay.reader
from replay.errors import LogError


def _pids_of_reads(monkeypatch, tmp_path):
    """Make every in-process read note, in a file, the pid that ran it."""
    notes = tmp_path / "readers"
    real = replay.reader._read

    def noted(*args, **kwargs):
        with open(notes, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(replay.reader, "_read", noted)
    return lambda: [int(p) for p in notes.read_text().split()] if notes.exists() else []


@pytest.fixture
def cluster_log(fixture_path):
    return fixture_path("cluster-log.jsonl.gz")


@pytest.fixture
def read_ahead_always(monkeypatch):
    monkeypatch.setattr(replay.reader, "READ_AHEAD_FROM", 0)
    # on a one-core machine read-ahead is off; the path under test is not
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_read_ahead_replay_equals_in_process_replay(monkeypatch, tmp_path, cluster_log, fingerprint_ws):
    pids = _pids_of_reads(monkeypatch, tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for w in replay.open(cluster_log).workers:
        monkeypatch.setattr(replay.reader, "READ_AHEAD_FROM", 10**9)
        before = len(pids())
        here = fingerprint_ws(w.advance(w.replayer(), w.events).ws)
        assert pids()[before:] == [os.getpid()]  # read here

        monkeypatch.setattr(replay.reader, "READ_AHEAD_FROM", 0)
        before = len(pids())
        beside = fingerprint_ws(w.advance(w.replayer(), w.events).ws)
        (reader,) = pids()[before:]
        assert reader != os.getpid()  # read in the forked child
        assert here == beside


def test_views_never_read_ahead(monkeypatch, tmp_path, cluster_log, read_ahead_always):
    # the views need each call's step records, which do not cross the pipe
    pids = _pids_of_reads(monkeypatch, tmp_path)
    w = replay.open(cluster_log).worker(0)
    calls = list(w.calls(records=True))
    assert pids() == [os.getpid()]
    assert all(c.records is not None and len(c.records) == len(c.events) for c in calls)


def test_bad_event_in_reader_process_names_its_line(tmp_path, cluster_log, read_ahead_always, monkeypatch):
    with gzip.open(cluster_log, "rb") as f:
        lines = f.read().splitlines()
    # break the event of a late step: the index pass does not decode events
    for i in range(len(lines) - 1, 0, -1):
        rec = orjson.loads(lines[i])
        if rec["kind"] == "step" and rec["event"]["cls"] == "ComputeTaskEvent":
            rec["event"]["priority"] = "high"
            lines[i] = orjson.dumps(rec)
            break
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    pids = _pids_of_reads(monkeypatch, tmp_path)
    w = replay.open(str(path)).worker(rec["worker"])
    with pytest.raises(LogError) as e:
        w.state_at(None)
    assert e.value.line == i + 1
    assert "priority" in str(e.value)
    (reader,) = pids()
    assert reader != os.getpid()  # the child found it and named the line


def test_events_built_from_the_pipe_equal_the_decoded_ones(fixture_path):
    """The read-ahead builds events without dask's ``__new__`` and without
    decoding fields whose value is a constant: each must equal, field by
    field, what the in-process decoder builds from the same record."""
    import dataclasses

    from replay import readahead
    from replay.logfile import iter_lines
    from replay.reader import RecordedCall
    from schemas.convert import EVENT_CLASSES, decode_event, encode_event

    # on this release every class takes the fast build, not the fallback
    assert all(b.__name__ == "build" for b in readahead.BUILDERS.values())
    seen = set()
    for name in ("cluster-log.jsonl.gz", "stuck-flight.jsonl", "stuck-6705.jsonl", "stuck-constrained.jsonl"):
        for _, rec in iter_lines(fixture_path(name)):
            if rec["kind"] != "step":
                continue
            here = decode_event(rec["event"])
            call = RecordedCall([here], rec["seq"], [1], rec["handled"], [], None, None)
            (built,) = readahead.loads(readahead.dumps(call)).events
            assert type(built) is type(here) and built.handled is None
            for f in dataclasses.fields(here):
                a, b = getattr(built, f.name), getattr(here, f.name)
                if any(i == readahead.FIELD_ORDER[type(here).__name__].index(f.name)
                       for i, _, _ in readahead.LATE_FIELDS[type(here).__name__]):
                    assert type(a) is type(b), f.name  # objects compared by their encoding below
                else:
                    assert (a, type(a)) == (b, type(b)), f.name
            assert encode_event(built) == encode_event(here)
            seen.add(type(here).__name__)
    # the classes with constant or decoded fields are among those met
    assert {"ComputeTaskEvent", "ExecuteSuccessEvent", "GatherDepSuccessEvent"} <= seen <= set(EVENT_CLASSES)
