"""Exact conversion between real ``distributed`` objects and log dictionaries.

Each event and instruction class gets a table of its fields and the codec of
each field: the log format, the same for every supported release. Where the
installed release's classes differ from it, :data:`ERA` (from
:mod:`schemas.versions`) says how, and the encoders and decoders below follow. Encoding is what the recorder does on a live worker; decoding is
what replay feeds to a fresh ``WorkerState``. Fields whose values are not
data (``run_spec``, computed values, exceptions, types) are reduced on purpose
to what replay needs: data values become their sizes, exceptions their text,
types their names.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from distributed.protocol.serialize import Serialize
from distributed.sizeof import safe_sizeof
from distributed import worker_state_machine as wsm

from schemas.generated import function
from schemas.versions import VERSIONED, installed_era
from schemas.codec import (
    CodecError,
    decode_collection,
    decode_float,
    decode_key,
    decode_key_map,
    decode_resources,
    decode_value,
    decode_who_has,
    encode_collection,
    encode_float,
    encode_key,
    encode_key_map,
    encode_resources,
    encode_value,
    encode_who_has,
    tag_collection,
)


class SizedValue:
    """Stand-in for a data value of a known size.

    ``WorkerState`` sets ``ts.nbytes = sizeof(value)`` for scattered data, so
    replay needs a value whose dask ``sizeof`` is the recorded size: the
    replay engine registers it with dask's ``sizeof`` (the recorder, which
    never decodes, leaves dask's registry alone).
    """

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int):
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"<SizedValue {self.nbytes} B>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SizedValue) and other.nbytes == self.nbytes

    __hash__ = None  # type: ignore[assignment]


class Field:
    """How one dataclass field is written to and read from a log line."""

    __slots__ = ("encode", "decode")

    def __init__(self, encode: Callable[[Any], Any], decode: Callable[[Any], Any]):
        self.encode = encode
        self.decode = decode


def _ident(x: Any) -> Any:
    return x


def _str(x: Any) -> str:
    if type(x) is not str:
        raise CodecError(f"expected a string, got {x!r}")
    return x


def _int(x: Any) -> int:
    if type(x) is not int:
        raise CodecError(f"expected an integer, got {x!r}")
    return x


def _opt_float_decode(x: Any) -> float | None:
    return None if x is None else decode_float(x)


def _opt_float_encode(x: Any) -> Any:
    return None if x is None else encode_float(float(x))


class RecordedException(Exception):
    """Stand-in for an exception of which only the ``repr`` was recorded (the
    object itself may not even unpickle elsewhere). Its ``repr`` is the
    recorded text, so that encoding it again gives the same log value."""

    def __repr__(self) -> str:
        return str(self.args[0])


def _exc_encode(x: Any) -> str | None:
    if x is None:
        return None
    data = x.data if isinstance(x, Serialize) else x
    return None if data is None else repr(data)


def _exc_decode(x: Any) -> Serialize:
    return Serialize(None if x is None else RecordedException(_str(x)))


def _tb_encode(x: Any) -> bool:
    return x is not None


def _tb_decode(x: Any) -> None:
    if type(x) is not bool:
        raise CodecError(f"expected true/false, got {x!r}")
    return None


def _type_encode(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, type):
        return f"{x.__module__}.{x.__qualname__}"
    return str(x)


def _sizes_encode(data: dict) -> list:
    return [
        [_key(k), v.nbytes if type(v) is SizedValue else safe_sizeof(v)]
        for k, v in data.items()
    ]


def _sizes_decode(obj: Any) -> dict:
    return decode_key_map(obj, lambda n: SizedValue(_int(n)))


def _priority_decode(x: Any) -> tuple:
    if type(x) is not list:
        raise CodecError(f"priority must be a list, got {x!r}")
    return tuple(decode_value(v) for v in x)


def _priority_encode(x: Any) -> list:
    return [encode_value(v) for v in x]


def _resources_decode(x: Any) -> dict | None:
    return None if x is None else decode_resources(x)


def _resources_encode(x: Any) -> dict | None:
    return None if x is None else encode_resources(x)


PLAIN = Field(_ident, _ident)
STR = Field(_ident, _str)
INT = Field(_ident, _int)
BOOL = Field(_ident, lambda x: bool(x) if type(x) is bool else _int(x))
OPT_STR = Field(_ident, lambda x: None if x is None else _str(x))
OPT_INT = Field(_ident, lambda x: None if x is None else _int(x))
FLOAT = Field(lambda x: encode_float(float(x)), decode_float)
OPT_FLOAT = Field(_opt_float_encode, _opt_float_decode)
KEY = Field(encode_key, decode_key)
KEYS = Field(encode_collection, decode_collection)
WHO_HAS = Field(encode_who_has, decode_who_has)
NBYTES_MAP = Field(encode_key_map, lambda o: decode_key_map(o, _int))
SIZES = Field(_sizes_encode, _sizes_decode)
PRIORITY = Field(_priority_encode, _priority_decode)
RESOURCES = Field(_resources_encode, _resources_decode)
VALUE = Field(encode_value, decode_value)
EXCEPTION = Field(_exc_encode, _exc_decode)
TRACEBACK = Field(_tb_encode, _tb_decode)
TYPE = Field(_type_encode, lambda x: None)  # the type object cannot come back
DROPPED = Field(lambda x: None, lambda x: None)  # computed values, types

#: A replayed ``ComputeTaskEvent`` gets this stand-in for its ``run_spec``
#: (code, never recorded): with ``validate=True`` the state machine asserts
#: that an executing task has one, and only that.
ERA = installed_era()
RUN_SPEC = (
    wsm.ComputeTaskEvent.dummy_runspec("dask-replay-run-spec")
    if ERA.runspec_takes_key
    else wsm.ComputeTaskEvent.dummy_runspec()
)
STAND_IN_RUN_SPEC = Field(lambda x: None, lambda x: RUN_SPEC)

_GATHER_DONE = {"worker": STR, "total_nbytes": INT}
_ERROR = {
    "exception": EXCEPTION,
    "traceback": TRACEBACK,
    "exception_text": STR,
    "traceback_text": STR,
}

#: Field codecs of every concrete StateMachineEvent class: the log format, which
#: is distributed 2026.8's classes (schemas.versions says how others differ)
EVENT_FIELDS: dict[str, dict[str, Field]] = {
    "PauseEvent": {},
    "UnpauseEvent": {},
    "FindMissingEvent": {},
    "RetryBusyWorkerEvent": {"worker": STR},
    "GatherDepSuccessEvent": {**_GATHER_DONE, "data": SIZES},
    "GatherDepBusyEvent": _GATHER_DONE,
    "GatherDepNetworkFailureEvent": _GATHER_DONE,
    "GatherDepFailureEvent": {**_GATHER_DONE, **_ERROR},
    "RemoveWorkerEvent": {"worker": STR},
    "ComputeTaskEvent": {
        "key": KEY,
        "run_id": INT,
        "who_has": WHO_HAS,
        "nbytes": NBYTES_MAP,
        "priority": PRIORITY,
        "run_spec": STAND_IN_RUN_SPEC,
        "resource_restrictions": RESOURCES,
        "actor": BOOL,
        "annotations": VALUE,
        "span_id": OPT_STR,
    },
    "ExecuteSuccessEvent": {
        "key": KEY,
        "run_id": INT,
        "value": DROPPED,
        "start": FLOAT,
        "stop": FLOAT,
        "nbytes": INT,
        "type": TYPE,
    },
    "ExecuteFailureEvent": {
        "key": KEY,
        "run_id": INT,
        "start": OPT_FLOAT,
        "stop": OPT_FLOAT,
        **_ERROR,
    },
    "RescheduleEvent": {"key": KEY},
    "CancelComputeEvent": {"key": KEY},
    "RefreshWhoHasEvent": {"who_has": WHO_HAS},
    "AcquireReplicasEvent": {"who_has": WHO_HAS, "nbytes": NBYTES_MAP},
    "RemoveReplicasEvent": {"keys": KEYS},
    "FreeKeysEvent": {"keys": KEYS},
    "StealRequestEvent": {"key": KEY},
    "UpdateDataEvent": {"data": SIZES},
    "SecedeEvent": {"key": KEY, "compute_duration": FLOAT},
}

#: Field codecs of every Instruction class
INSTRUCTION_FIELDS: dict[str, dict[str, Field]] = {
    "GatherDep": {"worker": STR, "to_gather": KEYS, "total_nbytes": INT},
    "Execute": {"key": KEY},
    "RetryBusyWorkerLater": {"worker": STR},
    "TaskFinishedMsg": {
        "key": KEY,
        "run_id": INT,
        "nbytes": OPT_INT,
        "type": DROPPED,  # pickled class
        "typename": OPT_STR,
        "metadata": VALUE,
        "thread": OPT_INT,
        "startstops": VALUE,
    },
    "TaskErredMsg": {
        "key": KEY,
        "run_id": INT,
        **_ERROR,
        "thread": OPT_INT,
        "startstops": VALUE,
    },
    "ReleaseWorkerDataMsg": {"key": KEY},
    "RescheduleMsg": {"key": KEY},
    "LongRunningMsg": {"key": KEY, "run_id": OPT_INT, "compute_duration": OPT_FLOAT},
    "AddKeysMsg": {"keys": KEYS},
    "RequestRefreshWhoHasMsg": {"keys": KEYS},
    "StealResponseMsg": {"key": KEY, "state": OPT_STR},
}

#: Instruction fields a replay cannot reproduce: they depend on the threads,
#: the Python types of results, wall-clock timings or pickled objects.
UNREPRODUCIBLE: dict[str, frozenset[str]] = {
    "TaskFinishedMsg": frozenset({"type", "typename", "metadata", "thread", "startstops"}),
    "TaskErredMsg": frozenset({"exception", "traceback", "thread", "startstops"}),
}

EVENT_CLASSES: dict[str, type] = {name: getattr(wsm, name) for name in EVENT_FIELDS}
INSTRUCTION_CLASSES: dict[str, type] = {
    name: getattr(wsm, name) for name in INSTRUCTION_FIELDS
}


class UnknownClass(CodecError):
    pass


def _encode_slowly(obj: Any, table: dict[str, dict[str, Field]]) -> dict:
    """Encode field by field through the tables: the reference the compiled
    encoders below must equal, and the path that names a field that is wrong."""
    name = type(obj).__name__
    try:
        fields = table[name]
    except KeyError:
        raise UnknownClass(f"unknown class {name!r}") from None
    out = {"cls": name, "stimulus_id": obj.stimulus_id}
    absent = ERA.log_only.get(name, ())
    for field, codec in fields.items():
        # a field this release's class lacks is written as null (schemas.versions)
        try:
            out[field] = None if field in absent else codec.encode(getattr(obj, field))
        except CodecError as e:
            raise CodecError(f"{name}.{field}: {e}") from None
    return out


# Compiled encoders ------------------------------------------------------------
#
# The recorder encodes every event and instruction on the worker's event loop,
# where the loop above costs a Python call per field and per key. Each class
# gets one function, generated from its table, that builds the dict in one
# display; the common shapes (a key that is a string, or a tuple of strings
# and ints; finite floats; startstops) are encoded inline, anything else by
# the field's own codec. Their result equals ``_encode_slowly``'s, byte for
# byte once dumped (tests/test_recorder_encoding.py compares the two).

#: what ``encode_value`` returns unchanged, by exact type
_PLAIN_VALUES = frozenset({str, int, bool, type(None)})
#: ``_type_encode`` of the result types met so far; cleared when full, so
#: that classes made on the fly are not kept alive
_TYPE_NAMES: dict[type, str | None] = {}


def _key(k: Any) -> Any:
    t = type(k)
    if t is tuple:
        # a loop over a short tuple costs less than a set test over map(type, k)
        for part in k:
            if type(part) is not str and type(part) is not int:
                return encode_key(k)
        return list(k)
    if t is str or t is int:
        return k
    return encode_key(k)


def _keys(items: Any) -> Any:
    return tag_collection(items, [k if type(k) is str else _key(k) for k in items])


def _workers(ws: Any) -> Any:
    for w in ws:
        if type(w) is not str:
            return encode_collection(ws, _str)  # raises, naming the value
    t = type(ws)
    if t is tuple:
        return {"tuple": list(ws)}
    if t is set or t is frozenset:
        return {"set": list(ws)}
    return list(ws)


def _who_has(who_has: Any) -> list:
    return [[k if type(k) is str else _key(k), _workers(ws)] for k, ws in who_has.items()]


def _nbytes(mapping: Any) -> list:
    return [[k if type(k) is str else _key(k), n] for k, n in mapping.items()]


def _priority(x: Any) -> list:
    for v in x:
        if type(v) is not int and type(v) is not str and v is not None and type(v) is not bool:
            return _priority_encode(x)
    return list(x)


def _type_name(x: Any) -> str | None:
    # a class renamed after its first result would keep its first name here
    if isinstance(x, type) and getattr(type(x), "__hash__", None) is type.__hash__:
        name = _TYPE_NAMES.get(x)
        if name is None:
            if len(_TYPE_NAMES) >= 256:
                _TYPE_NAMES.clear()
            name = _TYPE_NAMES[x] = _type_encode(x)
        return name
    return _type_encode(x)


def _value(x: Any) -> Any:
    t = type(x)
    if t is str or t is int or t is bool or x is None:
        return x
    if t is float:
        return x if x - x == 0.0 else encode_float(x)  # inf - inf and nan - nan are nan
    if t is list:
        return [_value(v) for v in x]
    if t is dict:
        if not x:
            return {"dict": []}  # metadata and annotations, most often
        # startstops: dicts of strings and finite floats
        return {"dict": [
            [k if type(k) is str else _value(k),
             v if type(v) is str or (type(v) is float and v - v == 0.0) else _value(v)]
            for k, v in x.items()
        ]}
    if t is tuple:
        return {"tuple": [_value(v) for v in x]}
    return encode_value(x)


#: how a compiled encoder writes a field of each codec, ``{v}`` being a fresh
#: name and ``{a}`` the attribute read; a codec not here is called
_INLINE: dict[int, str] = {
    id(STR): "o.{a}",
    id(INT): "o.{a}",
    id(BOOL): "o.{a}",
    id(OPT_STR): "o.{a}",
    id(OPT_INT): "o.{a}",
    id(PLAIN): "o.{a}",
    id(KEY): "({v} if type({v} := o.{a}) is str else _key({v}))",
    id(KEYS): "_keys(o.{a})",
    id(WHO_HAS): "_who_has(o.{a})",
    id(NBYTES_MAP): "_nbytes(o.{a})",
    id(PRIORITY): "_priority(o.{a})",
    id(VALUE): "_value(o.{a})",
    id(RESOURCES): "(None if ({v} := o.{a}) is None else {c}({v}))",
    id(TYPE): "_type_name(o.{a})",
    # not read: written as null whatever they hold
    id(DROPPED): "None",
    id(STAND_IN_RUN_SPEC): "None",
    id(FLOAT): "({v} if type({v} := o.{a}) is float and {v} - {v} == 0.0 else {c}({v}))",
    id(OPT_FLOAT): "({v} if ({v} := o.{a}) is None or (type({v}) is float and {v} - {v} == 0.0) "
                   "else {c}({v}))",
}


def _compile(name: str, fields: dict[str, Field]) -> Callable[[Any], dict]:
    # one generated dict display per class, as dataclasses generates __init__
    env: dict[str, Any] = {"_key": _key, "_keys": _keys, "_who_has": _who_has,
                           "_nbytes": _nbytes, "_priority": _priority, "_value": _value,
                           "_type_name": _type_name}
    absent = ERA.log_only.get(name, ())
    items = [f"'cls': {name!r}", "'stimulus_id': o.stimulus_id"]
    for i, (field, codec) in enumerate(fields.items()):
        if field in absent:
            expr = "None"  # a field this release's class lacks (schemas.versions)
        else:
            env[f"_c{i}"] = codec.encode
            expr = _INLINE.get(id(codec), "{c}(o.{a})").format(v=f"v{i}", a=field, c=f"_c{i}")
        items.append(f"{field!r}: {expr}")
    return function(f"def encode_{name}(o):\n    return {{{', '.join(items)}}}\n", env, f"encoder of {name}")


_EVENT_ENCODERS = {name: _compile(name, fields) for name, fields in EVENT_FIELDS.items()}
_INSTRUCTION_ENCODERS = {name: _compile(name, fields) for name, fields in INSTRUCTION_FIELDS.items()}
#: the same encoders by the installed class itself: found without reading the
#: class's name (a subclass, or a class of another name, goes through ``_encode``)
_EVENT_ENCODERS_OF = {EVENT_CLASSES[name]: f for name, f in _EVENT_ENCODERS.items()}
_INSTRUCTION_ENCODERS_OF = {INSTRUCTION_CLASSES[name]: f for name, f in _INSTRUCTION_ENCODERS.items()}


def encode_event(ev: wsm.StateMachineEvent) -> dict:
    """A live event as a JSON-ready dict; call it before the event is handled."""
    # the recorder's hot path: one frame and one lookup for dask's own classes
    encode = _EVENT_ENCODERS_OF.get(type(ev))
    if encode is None:
        return _encode(ev, _EVENT_ENCODERS, EVENT_FIELDS)
    try:
        return encode(ev)
    except CodecError:
        return _encode_slowly(ev, EVENT_FIELDS)  # raises, naming the field


def encode_instruction(inst: wsm.Instruction) -> dict:
    encode = _INSTRUCTION_ENCODERS_OF.get(type(inst))
    if encode is None:
        return _encode(inst, _INSTRUCTION_ENCODERS, INSTRUCTION_FIELDS)
    try:
        return encode(inst)
    except CodecError:
        return _encode_slowly(inst, INSTRUCTION_FIELDS)  # raises, naming the field


def _encode(obj: Any, encoders: dict, fields: dict) -> dict:
    encode = encoders.get(type(obj).__name__)
    if encode is None:
        raise UnknownClass(f"unknown class {type(obj).__name__!r}")
    try:
        return encode(obj)
    except CodecError:
        return _encode_slowly(obj, fields)  # raises, naming the field


def _decode_slowly(d: dict, table: dict[str, dict[str, Field]], classes: dict[str, type]):
    """Decode field by field, to name the field that is wrong."""
    name = d.get("cls")
    try:
        fields = table[name]
    except (KeyError, TypeError):
        raise UnknownClass(f"unknown class {name!r}") from None
    kwargs = {"stimulus_id": _str(d.get("stimulus_id")), **ERA.class_only.get(name, {})}
    absent = ERA.log_only.get(name, ())
    for field, codec in fields.items():
        try:
            value = d[field]
            if field not in absent:
                kwargs[field] = codec.decode(value)
        except KeyError:
            raise CodecError(f"{name}: missing field {field!r}") from None
        except (CodecError, TypeError, ValueError, RecursionError) as e:
            raise CodecError(f"{name}.{field}: {e}") from None
    try:
        return classes[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise CodecError(f"{name}: {e}") from None


def _slowly(d: dict, table: dict[str, dict[str, Field]], classes: dict[str, type]):
    # looked up when called: the generated decoders hold this, not the slow way itself
    return _decode_slowly(d, table, classes)


def _decoders(table: dict[str, dict[str, Field]], classes: dict[str, type]) -> dict:
    """One fast decoder per class; when the input is wrong it defers to the slow
    path, which names the field. A bug (any other exception) propagates."""

    def make(name: str):
        # generated: a replay decodes every event, and a loop over the fields
        # building a dict of keywords costs as much as the fields' decoders
        cls = classes[name]
        absent = ERA.log_only.get(name, ())
        ns: dict[str, Any] = {"cls": cls, "init": cls.__init__, "new": object.__new__, "_str": _str,
                              "slowly": _slowly, "table": table, "classes": classes}
        kwargs = ['stimulus_id=_str(d["stimulus_id"])']
        for i, (f, codec) in enumerate(table[name].items()):
            if f in absent:
                continue
            if codec.decode is _ident:
                kwargs.append(f"{f}=d[{f!r}]")
            else:
                ns[f"dec{i}"] = codec.decode
                kwargs.append(f"{f}=dec{i}(d[{f!r}])")
        for i, (f, value) in enumerate(ERA.class_only.get(name, {}).items()):
            ns[f"extra{i}"] = value
            kwargs.append(f"{f}=extra{i}")
        if cls.__new__ is wsm.StateMachineEvent.__new__:
            # what dask's __new__ does (it sets handled), without its frame
            build = ["ev = new(cls)", "ev.handled = None", f"init(ev, {', '.join(kwargs)})", "return ev"]
        else:
            build = [f"return cls({', '.join(kwargs)})"]
        src = "\n".join([
            "def decode(d):",
            "    try:",
            *(f"        {line}" for line in build),
            "    except (KeyError, TypeError, ValueError, RecursionError):  # CodecError too",
            "        return slowly(d, table, classes)",
        ])
        return function(src, ns, f"decoder of {name}")

    return {name: make(name) for name in table}


_EVENT_DECODERS = _decoders(EVENT_FIELDS, EVENT_CLASSES)
_INSTRUCTION_DECODERS = _decoders(INSTRUCTION_FIELDS, INSTRUCTION_CLASSES)

def decode_event(d: dict) -> wsm.StateMachineEvent:
    """A real dask event, ready for ``WorkerState.handle_stimulus``."""
    try:
        decode = _EVENT_DECODERS[d["cls"]]
    except (KeyError, TypeError):
        raise UnknownClass(f"unknown event class {d.get('cls')!r}") from None
    return decode(d)


def decode_instruction(d: dict) -> wsm.Instruction:
    name = d.get("cls")
    fields = INSTRUCTION_FIELDS.get(name)  # type: ignore[arg-type]
    try:
        inst = _INSTRUCTION_DECODERS[name](d)
    except (KeyError, TypeError):
        raise UnknownClass(f"unknown instruction class {name!r}") from None
    if fields and "type" in fields:
        inst.type = b""
    return inst


#: what :func:`comparable` leaves out: fields a replay cannot reproduce, and
#: fields some supported release lacks (a log of one release replays under another)
_UNCOMPARED: dict[str, frozenset[str]] = {
    name: UNREPRODUCIBLE.get(name, frozenset()) | VERSIONED.get(name, frozenset())
    for name in INSTRUCTION_FIELDS
}


def comparable(d: dict) -> dict:
    """The part of an encoded instruction a faithful replay must reproduce.

    Sets (``GatherDep.to_gather``) compare regardless of iteration order.
    """
    skip = _UNCOMPARED.get(d.get("cls"), ())  # type: ignore[arg-type]
    out = {k: v for k, v in d.items() if k not in skip}
    tg = out.get("to_gather")
    if isinstance(tg, dict) and "set" in tg:
        out["to_gather"] = {"set": sorted(tg["set"], key=repr)}
    return out


def field_names(cls_name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(EVENT_CLASSES[cls_name])]
