"""Lossless JSON encoding of dask keys and of the loose values events carry.

Keys are ``str | int | float | tuple`` (nested). A dask key is never a list, so
a JSON array always means a tuple key; the only tag a key needs is for
non-finite floats, which JSON cannot spell: ``{"float": "nan"}``.

Collections of keys (``FreeKeysEvent.keys``, ``who_has`` values) arrive as a
list over inproc and a tuple over TCP, and ``ws.log`` shows which, so the
container type is kept: a list is a JSON array, anything else is tagged
(``{"tuple": [...]}``, ``{"set": [...]}``).

Other values (annotations, metadata) use the same tags plus ``{"dict":
[[k, v], ...]}`` and ``{"repr": "..."}`` for objects JSON cannot hold; every
JSON object in an encoded value is a one-entry tag.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

#: the ``format`` field of every header, and the newest log format version;
#: kept here, free of pydantic, for the recorder
FORMAT = "dask-replay"
VERSION = 1

_NONFINITE = {"nan": math.nan, "-nan": -math.nan, "inf": math.inf, "-inf": -math.inf}


class CodecError(ValueError):
    """An encoded value does not follow the codec's grammar."""


def encode_float(x: float) -> Any:
    if math.isfinite(x):
        return x
    if x != x:
        return {"float": "nan" if math.copysign(1.0, x) > 0 else "-nan"}
    return {"float": "inf" if x > 0 else "-inf"}


def decode_float(obj: Any) -> float:
    if isinstance(obj, dict):
        try:
            (tag, name), = obj.items()
            if tag == "float":
                return _NONFINITE[name]
        except (ValueError, KeyError, TypeError):
            pass
        raise CodecError(f"bad float encoding {obj!r}")
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        raise CodecError(f"expected a number, got {obj!r}")
    return float(obj)


def encode_resources(resources: Mapping[str, float]) -> dict:
    """Resource amounts (``{"GPU": 1.0}``) as JSON, in their order."""
    return {k: encode_float(float(v)) for k, v in resources.items()}


def decode_resources(obj: Any) -> dict[str, float]:
    if type(obj) is not dict:
        raise CodecError(f"resources must be an object, got {obj!r}")
    out = {}
    for k, v in obj.items():
        if type(k) is not str:
            raise CodecError(f"resource names are strings, got {k!r}")
        out[k] = decode_float(v)
    return out


#: ``WorkerState`` attributes that tests and workers assign between stimuli
#: (``Worker.__init__`` after building its state, ``freeze_data_fetching``,
#: tests tuning limits); the recorder writes them when they change
SETTINGS = (
    "nthreads",
    "transfer_incoming_count_limit",
    "transfer_incoming_bytes_limit",
    "transfer_incoming_bytes_throttle_threshold",
    "transfer_message_bytes_limit",
    "validate",
)
_INT_SETTINGS = ("nthreads", "transfer_incoming_count_limit")


def encode_setting(value: Any) -> Any:
    # bool and int stay as they are; inf and nan need the float tag
    return encode_float(value) if type(value) is float else value


def decode_settings(obj: Any) -> dict[str, Any]:
    """Changed settings, as the attributes to assign."""
    if type(obj) is not dict:
        raise CodecError(f"settings must be an object, got {obj!r}")
    out: dict[str, Any] = {}
    for name, v in obj.items():
        if name not in SETTINGS:
            raise CodecError(f"unknown setting {name!r}")
        if name == "validate":
            if type(v) is not bool:
                raise CodecError(f"validate must be true or false, got {v!r}")
            out[name] = v
        elif type(v) is int:
            out[name] = v
        elif name in _INT_SETTINGS:
            raise CodecError(f"{name} must be an integer, got {v!r}")
        else:
            out[name] = decode_float(v)
    return out


# Keys ---------------------------------------------------------------------


def encode_key(key: Any) -> Any:
    # bool is an int subclass but not a dask key; keep it out of the int path
    t = type(key)
    if t is str or t is int:
        return key
    if t is tuple:
        return [encode_key(k) for k in key]
    if t is float:
        return encode_float(key)
    raise CodecError(f"not a dask key: {key!r}")


def decode_key(obj: Any) -> Any:
    t = type(obj)
    if t is str or t is int or t is float:
        return obj
    if t is list:
        # the usual tuple key, ("name", 3): parts that need no decoding, in
        # one loop here rather than a call each
        for o in obj:
            to = type(o)
            if to is not str and to is not int and to is not float:
                return tuple([decode_key(o) for o in obj])
        return tuple(obj)
    if t is dict:
        return decode_float(obj)
    raise CodecError(f"bad key encoding {obj!r}")


def encode_collection(items: Collection, item=encode_key) -> Any:
    return tag_collection(items, [item(k) for k in items])


def tag_collection(items: Collection, enc: list) -> Any:
    """``enc``, the encoded members of ``items``, tagged with its kind of collection."""
    t = type(items)
    if t is list:
        return enc
    if t is tuple:
        return {"tuple": enc}
    if t is set or t is frozenset:
        return {"set": enc}
    return enc


def decode_collection(obj: Any, item=decode_key) -> Collection:
    if type(obj) is list:
        return [item(o) for o in obj]
    if type(obj) is dict and len(obj) == 1:
        (tag, items), = obj.items()
        if type(items) is list:
            if tag == "tuple":
                return tuple([item(o) for o in items])
            if tag == "set":
                return {item(o) for o in items}
    raise CodecError(f"bad collection encoding {obj!r}")


def _same(x: Any) -> Any:
    if type(x) is not str:
        raise CodecError(f"expected a string, got {x!r}")
    return x


def encode_who_has(who_has: Mapping[Any, Collection[str]]) -> list:
    return [[encode_key(k), encode_collection(ws, _same)] for k, ws in who_has.items()]


def decode_who_has(obj: Any) -> dict:
    if type(obj) is not list:
        raise CodecError("who_has must be a list of [key, workers] pairs")
    return {decode_key(k): decode_collection(ws, _same) for k, ws in _pairs(obj)}


def encode_key_map(mapping: Mapping[Any, Any], value=lambda v: v) -> list:
    return [[encode_key(k), value(v)] for k, v in mapping.items()]


def decode_key_map(obj: Any, value=lambda v: v) -> dict:
    if type(obj) is not list:
        raise CodecError("expected a list of [key, value] pairs")
    return {decode_key(k): value(v) for k, v in _pairs(obj)}


def _pairs(obj: list):
    for pair in obj:
        if type(pair) is not list or len(pair) != 2:
            raise CodecError(f"expected a [key, value] pair, got {pair!r}")
        yield pair


# Loose values -------------------------------------------------------------


def encode_value(x: Any) -> Any:
    """Encode annotations, metadata and the like; unknown objects become repr."""
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return encode_float(x)
    if isinstance(x, list):
        return [encode_value(v) for v in x]
    if isinstance(x, tuple):
        return {"tuple": [encode_value(v) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"set": [encode_value(v) for v in x]}
    if isinstance(x, Mapping):
        return {"dict": [[encode_value(k), encode_value(v)] for k, v in x.items()]}
    return {"repr": repr(x)}


def decode_value(obj: Any) -> Any:
    if type(obj) is list:
        return [decode_value(v) for v in obj]
    if type(obj) is dict:
        if len(obj) != 1:
            raise CodecError(f"bad value encoding {obj!r}")
        (tag, inner), = obj.items()
        if tag == "float":
            return decode_float(obj)
        if tag == "repr" and type(inner) is str:
            return inner
        if type(inner) is list:
            if tag == "tuple":
                return tuple([decode_value(v) for v in inner])
            if tag == "set":
                return {decode_value(v) for v in inner}
            if tag == "dict":
                return {decode_value(k): decode_value(v) for k, v in _pairs(inner)}
        raise CodecError(f"bad value encoding {obj!r}")
    return obj


def parse_key(text: str) -> Any:
    """A key typed on a command line: a Python literal tuple/number, else the text."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    try:
        encode_key(value)
    except CodecError:
        return text
    return value
