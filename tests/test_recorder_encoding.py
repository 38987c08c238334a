"""The recorder's compiled encoders write what the field tables say, and a
recording made with them on a real LocalCluster replays faithfully.

``encode_event``/``encode_instruction`` run one generated function per class
(schemas/convert.py); ``_encode_slowly`` walks the tables field by field. The
two are compared on real objects (a recorded cluster's, decoded; the
instructions a replay of it returns) and on generated ones covering the codec's
corners (non-finite floats, nested and odd keys, every container type).
"""
from __future__ import annotations

import math

import dask
import orjson
import pytest
from distributed import Client, LocalCluster, wait
from distributed import worker_state_machine as wsm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replay
from replay import Recorder
from replay.logfile import iter_lines, log_files
from replay.merge import merge
from schemas.codec import CodecError
from schemas.convert import (
    EVENT_FIELDS, INSTRUCTION_FIELDS, _encode_slowly, decode_event, decode_instruction,
    encode_event, encode_instruction,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def assert_same(obj) -> None:
    """The compiled encoder gives the reference's dict and bytes, or raises
    as it does."""
    table = EVENT_FIELDS if type(obj).__name__ in EVENT_FIELDS else INSTRUCTION_FIELDS
    fast = encode_event if table is EVENT_FIELDS else encode_instruction
    try:
        expected = _encode_slowly(obj, table)
    except CodecError:
        with pytest.raises(CodecError):
            fast(obj)
        return
    got = fast(obj)
    assert got == expected
    try:
        line = orjson.dumps(expected)
    except orjson.JSONEncodeError:  # an int beyond 64 bits: neither can be written
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(got)
        return
    # == takes 1 for 1.0 and a tuple for no list: the bytes tell them apart
    assert orjson.dumps(got) == line


# --- a real cluster --------------------------------------------------------


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def fail(x):
    raise ValueError(x)


@pytest.fixture(scope="module")
def cluster_log(tmp_path_factory):
    """A recorded run of two in-process workers: tuple, int and float keys,
    scattered data, transfers between the workers, a failing task."""
    logdir = str(tmp_path_factory.mktemp("logs"))
    with dask.config.set({"distributed.scheduler.worker-ttl": None}):
        with LocalCluster(n_workers=0, processes=False, threads_per_worker=2,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            client.register_plugin(Recorder(logdir))
            cluster.scale(2)
            client.wait_for_workers(2, timeout=30)
            a, b = sorted(client.scheduler_info()["workers"])
            data = client.scatter([1, 2, 3], workers=[a])
            xs = [client.submit(inc, d, key=("x", i, "n"), workers=[b]) for i, d in enumerate(data)]
            xs += [client.submit(inc, i, key=k, workers=[a]) for i, k in enumerate([7, 2.5, ("t", (1, 2))])]
            total = client.submit(add, *xs, key="total", workers=[b])
            total.result(timeout=30)
            bad = client.submit(fail, 1, key="bad")
            wait(bad, timeout=30)
            del xs, total, bad, data
    path = str(tmp_path_factory.mktemp("merged") / "cluster.jsonl")
    merge(log_files(logdir), path)
    return path


def test_compiled_encoders_equal_the_tables_on_a_recorded_cluster(cluster_log):
    seen: set[str] = set()
    for w in replay.open(cluster_log).workers:
        r = w.replayer()
        for call in w.calls():
            for ev in call.events:
                assert_same(ev)
                seen.add(type(ev).__name__)
            for d in call.instructions or ():
                assert_same(decode_instruction(d))
            # what a replay returns: real instructions with their live fields
            for inst in r.apply(call).instructions:
                assert_same(inst)
                seen.add(type(inst).__name__)
    # the classes the compiled encoders inline the most
    assert {"ComputeTaskEvent", "ExecuteSuccessEvent", "FreeKeysEvent", "GatherDepSuccessEvent",
            "TaskFinishedMsg", "TaskErredMsg", "GatherDep"} <= seen


def test_a_recorded_cluster_verifies_faithfully(cluster_log, cli_run):
    code, out, err = cli_run(["verify", cluster_log, "--json"])
    assert code == 0, err
    data = orjson.loads(out)
    assert data["faithful"] is True


def test_verify_names_the_first_step_a_replay_does_not_reproduce(cluster_log, tmp_path, cli_run):
    """The recording is altered at one step (a task's result size): the
    replay, which computes the real size, differs there first."""
    lines = [rec for _, rec in iter_lines(cluster_log)]
    target = None
    for rec in lines:
        for inst in rec.get("instructions") or ():
            if inst["cls"] == "TaskFinishedMsg" and target is None:
                inst["nbytes"] += 1000
                target = rec
    assert target is not None
    path = tmp_path / "altered.jsonl"
    path.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in lines))
    code, out, err = cli_run(["verify", str(path), "--json"])
    assert code == 1, err
    data = orjson.loads(out)
    assert data["faithful"] is False
    (diverged,) = [w for w in data["workers"] if w.get("divergence")]
    assert diverged["address"] == target["worker"]
    d = diverged["divergence"]
    assert d["step"] == target["seq"] and d["kind"] == "instructions"
    # the recorded instruction missing from the replay, and the replayed one
    (missing,) = d["diff"]["missing"]
    (unexpected,) = d["diff"]["unexpected"]
    assert missing["cls"] == unexpected["cls"] == "TaskFinishedMsg"
    assert missing["nbytes"] == unexpected["nbytes"] + 1000


# --- generated objects -----------------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True)
key_parts = st.one_of(st.text(max_size=4), st.integers(-(2**70), 2**70), floats, st.booleans())
keys = st.recursive(key_parts, lambda inner: st.tuples(inner, inner) | st.tuples(inner) | st.tuples(inner, inner, inner),
                    max_leaves=5)
good_keys = st.recursive(st.one_of(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1), floats),
                         lambda inner: st.tuples(inner, inner) | st.tuples(inner), max_leaves=4)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), floats, st.text(max_size=4),
              st.builds(object)),
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.frozensets(st.text(max_size=3))
                   | st.sets(st.integers(0, 5)) | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner,
                                                                  max_size=3)),
    max_leaves=8,
)


def containers(items):
    return st.one_of(st.lists(items, max_size=3), st.lists(items, max_size=3).map(tuple),
                     st.sets(items, max_size=3), st.frozensets(items, max_size=3))


workers = containers(st.sampled_from(["tcp://a:1", "tcp://b:2", "inproc://c/3"]))
times = st.one_of(floats, st.integers(0, 10))
#: result types: classes (the encoder keeps the names of those it met), a class
#: made on the fly, a renamed one, and what is no class at all
result_types = st.one_of(
    st.sampled_from([int, dict, None, "not a type", wsm.TaskState]),
    # any name type() takes (no NUL)
    st.text(st.characters(blacklist_characters="\0"), max_size=3).map(
        lambda n: type("Made" + n, (), {"__module__": "gen." + n})),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, who_has=st.dictionaries(good_keys, workers, max_size=3),
       nbytes=st.dictionaries(good_keys, st.integers(0, 10**6), max_size=3),
       priority=st.tuples(st.integers(-5, 5), values), annotations=values,
       resources=st.none() | st.dictionaries(st.text(max_size=3), st.floats() | st.integers(0, 3), max_size=2))
def test_compiled_event_encoders_equal_the_tables(key, who_has, nbytes, priority, annotations, resources):
    ev = wsm.ComputeTaskEvent.dummy(key, who_has=who_has, nbytes=nbytes, priority=priority,
                                    resource_restrictions=resources, stimulus_id="s")
    ev.annotations = annotations
    assert_same(ev)


@settings(max_examples=150, deadline=None)
@given(key=keys, keys_=containers(keys), start=times, stop=st.none() | times,
       startstops=st.lists(st.fixed_dictionaries({"action": st.text(max_size=5), "start": times, "stop": times}),
                           max_size=2),
       metadata=values, result_type=result_types)
def test_compiled_encoders_of_keys_floats_and_values_equal_the_tables(key, keys_, start, stop, startstops, metadata,
                                                                      result_type):
    assert_same(wsm.FreeKeysEvent(keys=keys_, stimulus_id="f"))
    assert_same(wsm.ExecuteSuccessEvent(key=key, run_id=1, value=None, start=start, stop=start, nbytes=8,
                                        type=result_type, stimulus_id="e"))
    assert_same(wsm.ExecuteFailureEvent(key=key, run_id=1, start=stop, stop=stop, exception=None,
                                        traceback=None, exception_text="E", traceback_text="T",
                                        stimulus_id="e"))
    assert_same(wsm.SecedeEvent(key=key, compute_duration=start, stimulus_id="s"))
    assert_same(wsm.TaskFinishedMsg(key=key, run_id=1, nbytes=None, type=None, typename="int",
                                    metadata=metadata, thread=3, startstops=startstops, stimulus_id="t"))
    assert_same(wsm.GatherDep(worker="tcp://a:1", to_gather=set(keys_), total_nbytes=1, stimulus_id="g"))


def test_a_key_that_is_not_a_dask_key_is_refused_naming_the_field():
    with pytest.raises(CodecError, match=r"ComputeTaskEvent\.key: not a dask key: True"):
        encode_event(wsm.ComputeTaskEvent.dummy(True, stimulus_id="s"))
    with pytest.raises(CodecError, match=r"FreeKeysEvent\.keys: not a dask key"):
        encode_event(wsm.FreeKeysEvent(keys=[("x", 1), ("y", [2])], stimulus_id="f"))
    with pytest.raises(CodecError, match=r"ComputeTaskEvent\.who_has: expected a string"):
        encode_event(wsm.ComputeTaskEvent.dummy("k", who_has={"a": [3]}, stimulus_id="s"))


def test_non_finite_floats_are_tagged_by_the_compiled_path():
    enc = encode_event(wsm.ExecuteSuccessEvent(key=("x", math.inf), run_id=1, value=None, start=math.nan,
                                               stop=-math.inf, nbytes=8, type=int, stimulus_id="e"))
    assert enc["key"] == ["x", {"float": "inf"}]
    assert enc["start"] == {"float": "nan"} and enc["stop"] == {"float": "-inf"}
    assert decode_event(orjson.loads(orjson.dumps(enc))).key == ("x", math.inf)
