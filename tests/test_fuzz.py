"""Fuzzing the read path: whatever the bytes, the only exception is LogError.

Valid lines are a real recording: one task's life on a real ``WorkerState``,
written by the recorder (the ``task_records`` fixture); they are mutated at
the byte level and at the JSON level, and random bytes are read too. Both
read paths are exercised: the pydantic one of ``replay check`` and the fast
one of the engine.
"""
from __future__ import annotations

import os
import tempfile
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from replay.log import ClusterLog, decode_step, summary
from replay.logfile import LogError, iter_lines
from schemas import compiled

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def read_everything(path: str) -> None:
    """Every reader a command uses; a log the schema accepts must also decode."""
    for _ in iter_lines(path):
        pass
    try:
        checked = ClusterLog.open(path, validate=True)
    except LogError as e:
        checked, verdict = None, str(e)
    else:
        verdict = summary(checked)
    # replay check's compiled schema says what the pydantic way alone says
    with mock.patch.object(compiled, "checked", lambda line: None):
        try:
            assert summary(ClusterLog.open(path, validate=True)) == verdict
        except LogError as e:
            assert str(e) == verdict
    log = ClusterLog.open(path)
    for w in log.workers:
        for lineno, rec in log.records(w):
            if rec["kind"] != "step":
                continue
            try:
                decode_step(path, lineno, rec, w.header)
            except LogError as e:
                # what the schema let through, the engine must be able to use
                assert checked is None, f"schema accepts what the decoder rejects: {e}"
                raise


def read_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        try:
            read_everything(path)
        except LogError as e:
            assert "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    read_bytes(data)


@pytest.fixture(scope="module")
def records(task_records) -> list[dict]:
    return task_records()


@pytest.fixture(scope="module")
def valid(records, jsonl) -> bytes:
    return jsonl(*records)


@FUZZ
@given(junk=st.binary(max_size=300), data=st.data())
def test_random_bytes_inside_a_valid_log(valid, junk, data):
    at = data.draw(st.integers(0, len(valid)), label="at")
    read_bytes(valid[:at] + junk + valid[at:])


@FUZZ
@given(data=st.data())
def test_flipped_bytes(valid, data):
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                               min_size=1, max_size=8), label="flips")
    flipped = bytearray(valid)
    for at, byte in flips:
        flipped[at] = byte
    read_bytes(bytes(flipped))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replace(obj, path, value):
    if not path:
        return value
    head, *rest = path
    obj[head] = _replace(obj[head], rest, value)
    return obj


@FUZZ
@given(data=st.data())
def test_mutated_json_values(valid, jsonl, data):
    """One value anywhere in one record becomes another JSON value, or disappears."""
    records = orjson.loads(b"[" + valid.rstrip(b"\n").replace(b"\n", b",") + b"]")
    which = data.draw(st.integers(0, len(records) - 1))
    paths = list(_paths(records[which]))[1:]
    path = data.draw(st.sampled_from(paths))
    if data.draw(st.booleans()):
        records[which] = _replace(records[which], path, data.draw(json_values))
    else:
        parent = records[which]
        for p in path[:-1]:
            parent = parent[p]
        del parent[path[-1]]
    read_bytes(jsonl(*records))


@FUZZ
@given(data=st.data())
def test_reordered_and_dropped_records(records, jsonl, data):
    order = data.draw(st.permutations(range(len(records))), label="order")
    keep = data.draw(st.integers(0, len(records)), label="keep")
    read_bytes(jsonl(*[records[i] for i in order[:keep]]))
