"""The compiled schema of ``replay check`` against the pydantic way.

``replay check`` parses each step, resources and end line with msgspec Structs
generated from the pydantic models (:mod:`schemas.compiled`), and reads the
lines that pass declines the pydantic way. Its contract: never looser than
the pydantic schema plus the event decoder; where it is stricter, the
pydantic way answers. Each test says which path answered, and compares the
verdict of ``replay check`` with the compiled pass turned off.

(``tests/test_broken_logs.py::test_check_compiled_and_pydantic_agree`` runs
the corpus of broken logs both ways.)
"""
from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from replay.errors import LogError
from replay.log import ClusterLog, summary
from schemas import compiled
from schemas.codec import CodecError
from schemas.convert import EVENT_FIELDS, decode_event
from schemas.events import AnyEvent
from schemas.records import RECORD


@pytest.fixture(scope="module")
def records(task_records) -> list[dict]:
    """header, compute x, x done, release x, end: recorded on a real WorkerState."""
    return task_records()


def verdict(path: str, pydantic_only: bool, monkeypatch) -> tuple:
    """What ``replay check`` makes of the log: its summary or its one error
    line, and how many records the compiled schema passed."""
    with monkeypatch.context() as m:
        if pydantic_only:
            m.setattr(compiled, "checked", lambda line: None)
        try:
            log = ClusterLog.open(path, validate=True)
        except LogError as e:
            return ("error", str(e)), None
    return ("ok", summary(log)), log.checked


def both_ways(tmp_path, monkeypatch, recs: list[dict]) -> tuple[tuple, int | None]:
    """The verdict, the same both ways, and how many records the compiled schema passed."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    fast, passed = verdict(str(path), False, monkeypatch)
    slow, none = verdict(str(path), True, monkeypatch)
    assert fast == slow
    assert none in (0, None)
    return fast, passed


def with_event(records: list[dict], seq: int, **fields) -> list[dict]:
    recs = copy.deepcopy(records)
    recs[seq]["event"].update(fields)
    return recs


def test_event_models_are_the_decoders_fields():
    # a record the schema passes needs no check_event: every event model has
    # exactly the decoder's fields, each required
    for model in AnyEvent.__origin__.__args__:
        name = model.model_fields["cls"].annotation.__args__[0]
        assert set(model.model_fields) == {"cls", "stimulus_id", *EVENT_FIELDS[name]}, name
        assert all(f.is_required() for f in model.model_fields.values()), name
    assert set(compiled.EVENT_TAGS.values()) == set(EVENT_FIELDS)


def test_a_recorded_log_is_checked_by_the_compiled_schema(records, tmp_path, monkeypatch):
    (kind, s), passed = both_ways(tmp_path, monkeypatch, records)
    assert kind == "ok" and s["workers"][0]["events"] == 3
    assert passed == 4  # three steps and the end; the header goes the pydantic way


@pytest.mark.parametrize("run_id, outcome, passed", [
    (2**63 - 1, "ok", 4),
    # orjson reads an integer up to 2**64 - 1; msgspec's bounds stop at 2**63 - 1
    (2**63, "ok", 3),
    # a larger literal orjson reads as a float: not a run_id
    (2**64, "error", None),
    (-(2**63), "ok", 4),
    (True, "error", None),
    (0.0, "error", None),
])
def test_integers_at_orjsons_bounds(records, tmp_path, monkeypatch, run_id, outcome, passed):
    # written by hand: orjson writes no integer beyond 64 bits
    literal = str(run_id).encode() if type(run_id) is int else orjson.dumps(run_id)
    log = b"".join(orjson.dumps(r) + b"\n" for r in with_event(records, 1, run_id=12345))
    path = tmp_path / "log.jsonl"
    path.write_bytes(log.replace(b'"run_id":12345', b'"run_id":' + literal, 1))
    fast, n = verdict(str(path), False, monkeypatch)
    slow, _ = verdict(str(path), True, monkeypatch)
    assert fast == slow
    assert fast[0] == outcome, fast
    assert n == passed
    if outcome == "error":
        assert "run_id" in fast[1] and ":2:" in fast[1]


def test_an_integer_time_stays_an_integer(records, tmp_path, monkeypatch):
    # pydantic's strict float takes an integer; so does the compiled schema,
    # without making it a float
    recs = copy.deepcopy(records)
    recs[1]["handled"] = 1700000001
    (kind, s), passed = both_ways(tmp_path, monkeypatch, recs)
    assert kind == "ok" and passed == 4
    assert type(s["workers"][0]["first_handled"]) is int


def test_a_key_deeper_than_the_compiled_depth_goes_the_pydantic_way(records, tmp_path, monkeypatch):
    key: object = "x"
    for _ in range(compiled.DEPTH + 2):
        key = [key]
    recs = with_event(records, 1, key=key)
    line = orjson.dumps(recs[1])
    assert compiled.checked(line) is None
    assert compiled.checked(orjson.dumps(with_event(records, 1, key=[[["x", 1]]])[1])) is not None
    (kind, _), passed = both_ways(tmp_path, monkeypatch, recs)
    assert kind == "ok" and passed == 3


#: loose values of an event (``annotations``), and whether the decoder takes them
VALUES = [
    ({"dict": []}, True),
    ({"dict": [[{"tuple": ["a", 1]}, {"set": [1, 2]}]]}, True),
    ({"dict": [[{"float": "nan"}, {"repr": "<object>"}]]}, True),
    ({"set": [{"tuple": [1, {"float": "-inf"}]}]}, True),
    ([1, "a", None, True, 2.5, [[]]], True),
    # a set member and a dict key must decode to something hashable
    ({"set": [[1]]}, False),
    ({"set": [{"set": [1]}]}, False),
    ({"dict": [[{"dict": []}, 1]]}, False),
    ({"set": [{"tuple": [[1]]}]}, False),
    # one entry per tag object, of a known tag
    ({"tuple": [1], "set": [2]}, False),
    ({}, False),
    ({"list": [1]}, False),
    ({"float": "huge"}, False),
    ({"repr": 1}, False),
    ({"dict": [[1, 2, 3]]}, False),
    ({"tuple": {"a": 1}}, False),
]


@pytest.mark.parametrize("value, decodes", VALUES)
def test_loose_values_follow_the_decoder(records, tmp_path, monkeypatch, value, decodes):
    recs = with_event(records, 1, annotations=value)
    assert (compiled.checked(orjson.dumps(recs[1])) is not None) == decodes
    (kind, text), passed = both_ways(tmp_path, monkeypatch, recs)
    assert kind == ("ok" if decodes else "error")
    if decodes:
        assert passed == 4
    else:
        assert ":2:" in text and "annotations" in text, text


@pytest.mark.parametrize("who_has, valid", [
    ([["y", ["tcp://a:1"]]], True),
    ([["y", {"tuple": ["tcp://a:1"]}]], True),
    ([["y", {"set": ["tcp://a:1"]}]], True),
    ([["y", {"tuple": ["a"], "set": ["b"]}]], False),
    ([["y", {"tuple": [1]}]], False),
    ([["y", {}]], False),
    ([["y", ["a"], 3]], False),
])
def test_one_of_two_tag_objects(records, tmp_path, monkeypatch, who_has, valid):
    recs = with_event(records, 1, who_has=who_has)
    assert (compiled.checked(orjson.dumps(recs[1])) is not None) == valid
    (kind, text), _ = both_ways(tmp_path, monkeypatch, recs)
    assert kind == ("ok" if valid else "error"), text


# --- never looser: whatever a step line holds --------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4))
TAGS = st.sampled_from(["tuple", "set", "dict", "float", "repr", "list"])
LOOSE = st.recursive(
    SCALARS | st.sampled_from(["nan", "inf", "-nan"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(TAGS, inner, min_size=0, max_size=2)
    | st.tuples(inner, inner).map(list),
    max_leaves=8,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value):
    if not path:
        return value
    head, *rest = path
    obj[head] = _set(obj[head], rest, value)
    return obj


def pydantic_and_decoder_accept(line: bytes) -> bool:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    try:
        RECORD.validate_python(rec)
    except ValidationError:
        return False
    if rec.get("kind") == "step":
        try:
            decode_event(rec["event"])
        except CodecError:
            return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_never_looser_than_pydantic_and_the_decoder(records, data):
    """One value anywhere in a step (or end) record becomes another, or goes:
    whatever the compiled schema passes, the pydantic way passes too."""
    which = data.draw(st.sampled_from([1, 2, 3, 4]), label="record")
    rec = copy.deepcopy(records[which])
    path = data.draw(st.sampled_from(list(_paths(rec))[1:]), label="path")
    if data.draw(st.booleans(), label="replace"):
        rec = _set(rec, path, data.draw(LOOSE, label="value"))
    else:
        parent = rec
        for p in path[:-1]:
            parent = parent[p]
        del parent[path[-1]]
    try:
        line = orjson.dumps(rec)
    except TypeError:  # an integer orjson will not write: not a line of a log
        return
    if compiled.checked(line) is not None:
        assert pydantic_and_decoder_accept(line), line
