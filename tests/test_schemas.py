"""Every event and instruction class survives encode -> JSON line -> schema -> decode.

The objects are built the way dask's own tests build them (``dummy``,
``from_exception``), with tuple, int and float keys. Fields the log reduces on
purpose are compared with their documented reduction.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import random

import orjson
import pytest
from dask._task_spec import Task
from distributed.core import error_message
from distributed.protocol.serialize import Serialize
from distributed.sizeof import safe_sizeof
from distributed import worker_state_machine as wsm

from schemas.convert import (
    EVENT_FIELDS, INSTRUCTION_FIELDS, SizedValue, decode_event, decode_instruction,
    encode_event, encode_instruction,
)
from schemas.records import RECORD

W1, W2 = "tcp://127.0.0.1:1001", "tcp://127.0.0.1:1002"
X, Y, I, F = ("x", 0), ("y", ("nested", 1.5)), 5, 2.5


def _error(exc: BaseException) -> dict:
    try:
        raise exc
    except BaseException as e:  # a real traceback, like a failed task's
        return error_message(e)


def events() -> list[wsm.StateMachineEvent]:
    err = _error(ValueError("boom"))
    return [
        wsm.PauseEvent(stimulus_id="pause"),
        wsm.UnpauseEvent(stimulus_id="unpause"),
        wsm.FindMissingEvent(stimulus_id="find-missing"),
        wsm.RetryBusyWorkerEvent(worker=W1, stimulus_id="retry"),
        wsm.GatherDepSuccessEvent(
            worker=W1, total_nbytes=100, data={X: b"abc", I: list(range(10))},
            stimulus_id="gather-success",
        ),
        wsm.GatherDepBusyEvent(worker=W1, total_nbytes=10, stimulus_id="busy"),
        wsm.GatherDepNetworkFailureEvent(worker=W2, total_nbytes=10, stimulus_id="net"),
        wsm.GatherDepFailureEvent.from_exception(
            RuntimeError("cannot unpickle"), worker=W2, total_nbytes=7, stimulus_id="gather-fail"
        ),
        wsm.RemoveWorkerEvent(worker=W2, stimulus_id="remove-worker"),
        wsm.ComputeTaskEvent.dummy(
            Y,
            who_has={X: [W1, W2], F: (W1,)},
            nbytes={X: 8, F: 16},
            priority=(0, 1, -3),
            resource_restrictions={"R": 1.0},
            annotations={"retries": 2, ("a", 1): (1, 2.5)},
            stimulus_id="compute",
        ),
        wsm.ComputeTaskEvent(
            key=I, run_id=3, who_has={}, nbytes={}, priority=(1,), run_spec=None,
            resource_restrictions=None, actor=True, annotations={}, span_id="span-1",
            stimulus_id="compute-actor",
        ),
        wsm.ExecuteSuccessEvent(
            key=X, run_id=1, value=[1, 2, 3], start=1.25, stop=2.5, nbytes=80, type=list,
            stimulus_id="success",
        ),
        wsm.ExecuteFailureEvent.from_exception(
            err, key=F, run_id=2, start=1.0, stop=1.5, stimulus_id="failure"
        ),
        wsm.ExecuteFailureEvent.dummy(I, stimulus_id="failure-dummy"),
        wsm.RescheduleEvent.dummy(F, stimulus_id="reschedule"),
        wsm.CancelComputeEvent(key=Y, stimulus_id="cancel"),
        wsm.RefreshWhoHasEvent(who_has={X: [W2], I: []}, stimulus_id="refresh"),
        wsm.AcquireReplicasEvent(who_has={F: (W1,)}, nbytes={F: 4}, stimulus_id="acquire"),
        wsm.RemoveReplicasEvent(keys=[X, I], stimulus_id="remove-replicas"),
        wsm.FreeKeysEvent(keys=(X, Y, I, F), stimulus_id="free"),
        wsm.FreeKeysEvent(keys=[X], stimulus_id="free-list"),
        wsm.StealRequestEvent(key=X, stimulus_id="steal"),
        wsm.UpdateDataEvent(data={("s", 1): "scattered", 7: 1.5}, stimulus_id="scatter"),
        wsm.SecedeEvent(key=Y, compute_duration=0.125, stimulus_id="secede"),
    ]


def instructions() -> list[wsm.Instruction]:
    err = _error(KeyError("lost"))
    stamps = [{"action": "compute", "start": 1.0, "stop": 2.0}]
    return [
        wsm.GatherDep(worker=W1, to_gather={X, I, F}, total_nbytes=24, stimulus_id="g"),
        wsm.Execute(key=Y, stimulus_id="e"),
        wsm.RetryBusyWorkerLater(worker=W2, stimulus_id="r"),
        wsm.TaskFinishedMsg(
            key=X, run_id=1, nbytes=80, type=pickle.dumps(list), typename="list",
            metadata={"m": (1, 2)}, thread=1234, startstops=stamps, stimulus_id="tf",
        ),
        wsm.TaskErredMsg(
            key=F, run_id=2, exception=err["exception"], traceback=err["traceback"],
            exception_text=err["exception_text"], traceback_text=err["traceback_text"],
            thread=None, startstops=stamps, stimulus_id="te",
        ),
        wsm.ReleaseWorkerDataMsg(key=I, stimulus_id="rel"),
        wsm.RescheduleMsg(key=F, stimulus_id="res"),
        wsm.LongRunningMsg(key=Y, run_id=4, compute_duration=0.5, stimulus_id="lr"),
        wsm.LongRunningMsg(key=Y, run_id=4, compute_duration=None, stimulus_id="lr-none"),
        wsm.AddKeysMsg(keys=[X, Y], stimulus_id="add"),
        wsm.RequestRefreshWhoHasMsg(keys=[F], stimulus_id="refresh"),
        wsm.StealResponseMsg(key=X, state="executing", stimulus_id="steal"),
        wsm.StealResponseMsg(key=I, state=None, stimulus_id="steal-none"),
    ]


def _exception_reduced(orig, back) -> bool:
    """Exceptions become their text: the object may not unpickle elsewhere."""
    data = orig.data if isinstance(orig, Serialize) else orig
    if data is None:
        return isinstance(back, Serialize) and back.data is None
    return isinstance(back, Serialize) and back.data.args == (repr(data),)


def _sizes_reduced(orig: dict, back: dict) -> bool:
    """Data values become a stand-in of the same dask size."""
    return list(orig) == list(back) and all(
        back[k] == SizedValue(safe_sizeof(v)) for k, v in orig.items()
    )


#: field -> (original, decoded) -> bool, for the fields reduced on purpose
REDUCED = {
    # a stand-in Task, enough for validate=True to execute the task
    ("ComputeTaskEvent", "run_spec"): lambda o, b: isinstance(b, Task),
    ("ExecuteSuccessEvent", "value"): lambda o, b: b is None,
    ("ExecuteSuccessEvent", "type"): lambda o, b: b is None,
    ("GatherDepSuccessEvent", "data"): _sizes_reduced,
    ("UpdateDataEvent", "data"): _sizes_reduced,
    ("TaskFinishedMsg", "type"): lambda o, b: b == b"",
}
for _cls in ("GatherDepFailureEvent", "ExecuteFailureEvent", "TaskErredMsg"):
    REDUCED[_cls, "exception"] = _exception_reduced
    REDUCED[_cls, "traceback"] = lambda o, b: b is None


def assert_same(orig, back) -> None:
    assert type(back) is type(orig)
    name = type(orig).__name__
    for f in dataclasses.fields(orig):
        o, b = getattr(orig, f.name), getattr(back, f.name)
        reduced = REDUCED.get((name, f.name))
        if reduced is not None:
            assert reduced(o, b), (name, f.name, o, b)
        else:
            # keys keep their type: 1 vs 1.0 and tuple vs list would compare equal
            assert b == o and repr(b) == repr(o), (name, f.name, o, b)


def step_line(event: dict, instrs: list[dict] | None = None) -> bytes:
    return orjson.dumps({
        "kind": "step", "worker": W1, "seq": 1, "handled": 1700000000.5,
        "event": event, "instructions": instrs or [],
    })


@pytest.mark.parametrize("ev", events(), ids=lambda e: e.stimulus_id)
def test_event_round_trip(ev):
    enc = encode_event(ev)
    line = step_line(enc)
    rec = RECORD.validate_json(line)  # the typed schema accepts it
    assert rec.kind == "step"
    back = decode_event(orjson.loads(line)["event"])
    assert_same(ev, back)


@pytest.mark.parametrize("inst", instructions(), ids=lambda i: i.stimulus_id)
def test_instruction_round_trip(inst):
    enc = encode_instruction(inst)
    line = step_line(encode_event(wsm.PauseEvent(stimulus_id="p")), [enc])
    RECORD.validate_json(line)
    back = decode_instruction(orjson.loads(line)["instructions"][0])
    assert_same(inst, back)


def test_the_generated_decoders_answer_and_agree_with_the_field_by_field_way(monkeypatch):
    """Every event and instruction of every class decodes by its generated
    decoder (the field-by-field way, which names a wrong field, made to fail
    here), to what the field-by-field way builds from the same record; and a
    wrong record still gets the field-by-field way's words."""
    from schemas import convert

    records = [("event", encode_event(ev), ev) for ev in events()]
    records += [("instruction", encode_instruction(i), i) for i in instructions()]
    slowly = convert._decode_slowly
    decode = {"event": decode_event, "instruction": decode_instruction}
    table = {"event": (convert.EVENT_FIELDS, convert.EVENT_CLASSES),
             "instruction": (convert.INSTRUCTION_FIELDS, convert.INSTRUCTION_CLASSES)}

    def refused(*args):
        raise AssertionError("the field-by-field way answered a valid record")

    for kind, enc, original in records:
        monkeypatch.setattr(convert, "_decode_slowly", refused)
        fast = decode[kind](orjson.loads(orjson.dumps(enc)))
        monkeypatch.setattr(convert, "_decode_slowly", slowly)
        assert_same(original, fast)
        # both decoded: the same fields of the same types, the same encoding
        decoders = convert._EVENT_DECODERS if kind == "event" else convert._INSTRUCTION_DECODERS
        fields, classes = table[kind]
        monkeypatch.setitem(decoders, enc["cls"], lambda d: slowly(d, fields, classes))
        slow = decode[kind](orjson.loads(orjson.dumps(enc)))
        monkeypatch.undo()
        assert type(slow) is type(fast)
        for f in dataclasses.fields(fast):
            assert type(getattr(slow, f.name)) is type(getattr(fast, f.name)), f.name
        encode = encode_event if kind == "event" else encode_instruction
        assert encode(slow) == encode(fast)
        if kind == "event":
            assert fast.handled is None  # what dask's __new__ sets
    bad = encode_event(wsm.FreeKeysEvent(keys=[X], stimulus_id="f"))
    bad["keys"] = [True]
    with pytest.raises(convert.CodecError, match=r"FreeKeysEvent\.keys"):
        decode_event(bad)


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _from_distributed(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "distributed"


def dask_event_classes() -> set[str]:
    """The concrete event classes of the installed distributed.

    ``StateMachineEvent`` registers every subclass in its own ``_classes``;
    the abstract ones among them (``GatherDepDoneEvent``, ``ExecuteDoneEvent``)
    are those ``WorkerState._handle_event`` has no handler for: dispatching
    them reaches the fallback registered for ``object``.
    """
    registry = getattr(wsm.StateMachineEvent, "_classes", None) or {
        c.__name__: c for c in _subclasses(wsm.StateMachineEvent)
    }
    dispatcher = wsm.WorkerState.__dict__["_handle_event"].dispatcher
    fallback = dispatcher.dispatch(object)
    return {
        name for name, cls in registry.items()
        if _from_distributed(cls) and dispatcher.dispatch(cls) is not fallback
    }


def dask_instruction_classes() -> set[str]:
    """The concrete instruction classes of the installed distributed.

    Instructions have no registry: every subclass of ``Instruction``, less the
    abstract ones, which declare a class variable without giving it a value
    (``SendMessageToScheduler.op``, the scheduler handler a message is for).
    """
    def abstract(cls: type) -> bool:
        declared = {
            name for klass in cls.__mro__
            for name, hint in vars(klass).get("__annotations__", {}).items()
            if "ClassVar" in str(hint)
        }
        return any(not hasattr(cls, name) for name in declared)

    return {c.__name__ for c in _subclasses(wsm.Instruction) if _from_distributed(c) and not abstract(c)}


def test_every_class_is_covered():
    # compared with dask's own classes, so that a new one in a dask upgrade fails here
    dask_events = dask_event_classes()
    assert {type(e).__name__ for e in events()} == set(EVENT_FIELDS) == dask_events
    assert "GatherDepDoneEvent" not in dask_events and "ExecuteDoneEvent" not in dask_events
    assert len(EVENT_FIELDS) == 21
    dask_instructions = dask_instruction_classes()
    assert {type(i).__name__ for i in instructions()} == set(INSTRUCTION_FIELDS) == dask_instructions
    assert "SendMessageToScheduler" not in dask_instructions


def test_decoded_compute_task_runs_in_a_real_worker_state():
    # the run_spec stand-in is enough for validate=True to execute the task
    ws = wsm.WorkerState(nthreads=1, validate=True)
    ev = decode_event(orjson.loads(orjson.dumps(encode_event(
        wsm.ComputeTaskEvent.dummy(Y, stimulus_id="c")
    ))))
    instrs = ws.handle_stimulus(ev)
    assert instrs == [wsm.Execute(key=Y, stimulus_id="c")]
    assert ws.tasks[Y].state == "executing"


@pytest.fixture(scope="module")
def json_schema(cli_run):
    # a test dependency (pyproject's "test" extra): missing, it fails, never skips
    import jsonschema

    code, out, err = cli_run(["schema"])
    assert code == 0, err
    schema = orjson.loads(out)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


#: share of the remaining lines validated, drawn with a seed fixed per file
SAMPLE_RATE = 0.05


def sample_lines(path: str) -> tuple[list[tuple[int, dict]], int]:
    """The lines of a log worth validating, and how many it has.

    Every header; the first record of each kind; the first step of each
    event class, and the first that issues each instruction class; then a
    random share of the rest, the same every run. The JSON Schema is a union
    of one branch per record kind and per event or instruction class, and the
    lines of one branch differ only in their values: this reaches every
    branch a fixture uses, and the random lines (keys, floats, collections of
    every size) reach the values. ``replay check`` validates every line of
    every fixture against the typed schema the JSON Schema is generated from
    (test_recorder), so the lines left out here are still read in full.
    """
    from replay.logfile import iter_lines

    rng = random.Random(os.path.basename(path))
    seen: set[tuple[str, str]] = set()
    picked, n = [], 0
    for lineno, rec in iter_lines(path):
        n += 1
        kinds = {("kind", rec.get("kind"))}
        if rec.get("kind") == "step":
            kinds.add(("event", rec["event"]["cls"]))
            kinds |= {("instruction", i["cls"]) for i in rec.get("instructions") or ()}
        if rec.get("kind") == "header" or not kinds <= seen or rng.random() < SAMPLE_RATE:
            picked.append((lineno, rec))
        seen |= kinds
    return picked, n


def test_replay_schema_validates_fixture_lines(json_schema, shipped_fixture):
    import jsonschema

    picked, n = sample_lines(shipped_fixture)
    assert n > 0 and picked
    assert picked[0][1]["kind"] == "header"
    for lineno, rec in picked:
        try:
            json_schema.validate(rec)
        except jsonschema.ValidationError as e:
            pytest.fail(f"{shipped_fixture}:{lineno}: {e.message}")


def test_json_schema_rejects_what_the_log_must_not_hold(json_schema):
    enc = encode_event(wsm.FreeKeysEvent(keys=[X], stimulus_id="f"))
    rec = orjson.loads(step_line(enc))
    assert json_schema.is_valid(rec)
    assert not json_schema.is_valid({**rec, "seq": 0})
    assert not json_schema.is_valid({**rec, "event": {**enc, "cls": "NoSuchEvent"}})
