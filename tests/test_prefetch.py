"""Decoding in a second process must not change what the replay reaches."""
from __future__ import annotations

import gzip
import orjson
import pytest

import replay
import replay.history
from replay.logfile import LogError
from test_seek import FIXTURE, fingerprint_ws


@pytest.fixture
def prefetch_always(monkeypatch):
    monkeypatch.setattr(replay.history, "PREFETCH_FROM", 0)


def test_prefetched_replay_equals_in_process_replay(monkeypatch):
    for w in replay.open(FIXTURE).workers:
        monkeypatch.setattr(replay.history, "PREFETCH_FROM", 10**9)
        here = fingerprint_ws(w.advance(w.replayer(), w.events).ws)
        monkeypatch.setattr(replay.history, "PREFETCH_FROM", 0)
        beside = fingerprint_ws(w.advance(w.replayer(), w.events).ws)
        assert here == beside


def test_bad_event_in_reader_process_names_its_line(tmp_path, prefetch_always):
    with gzip.open(FIXTURE, "rb") as f:
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
    w = replay.open(str(path)).worker(rec["worker"])
    with pytest.raises(LogError) as e:
        w.state_at(None)
    assert e.value.line == i + 1
    assert "priority" in str(e.value)
