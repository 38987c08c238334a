"""One worker's dumped values in the log format: its ``WorkerState``
construction inputs, and each ``stimulus_log`` entry as an event, field by
field through the codecs of :mod:`schemas.convert`.

Anything the dump holds that the log format cannot say raises
:class:`Refused`, which :func:`~replay.dump.importer.import_dump` turns into a
:class:`~replay.errors.BadInput` naming the dump.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from replay.dump.keys import Keys, short
from schemas import convert as cv
from schemas.codec import CodecError, encode_float, encode_key, encode_resources, encode_value


class Refused(Exception):
    """Bad input found while converting; becomes a BadInput naming the dump."""


def get_typed(d: dict, name: str, types: type | tuple, where: str, default: Any = ...) -> Any:
    if name not in d:
        if default is ...:
            raise Refused(f"{where}.{name}: missing")
        return default
    v = d[name]
    if not isinstance(v, types) or (type(v) is bool and bool not in _astuple(types)):
        raise Refused(f"{where}.{name}: expected {_typename(types)}, got {short(v)}")
    return v


def _astuple(t: type | tuple) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _typename(t: type | tuple) -> str:
    return " or ".join("null" if x is type(None) else x.__name__ for x in _astuple(t))


def _config(cfg: dict, dotted: str, default: Any) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return default
        # dask normalises '_' and '-' in config names
        if part in node:
            node = node[part]
        elif part.replace("-", "_") in node:
            node = node[part.replace("-", "_")]
        else:
            return default
    return node


def _bytes(value: Any, where: str) -> int:
    from dask.utils import parse_bytes  # dask only when a dump is converted, not when one is read back

    if type(value) is int and value >= 0:
        return value
    if type(value) is float and math.isfinite(value) and value >= 0:
        return int(value)
    if type(value) is str and len(value) < 100:
        try:
            n = parse_bytes(value)
        except (ValueError, TypeError):
            pass
        else:
            if n >= 0:
                return n
    raise Refused(f"{where}: not a size in bytes: {short(value)}")


def state_inputs(w: dict, sched_worker: dict | None, where: str) -> dict:
    """The ``WorkerState`` construction inputs, as ``Worker.__init__`` derives
    them from its config and memory limit (see :func:`replay.record.state_inputs`)."""
    import dask.config  # dask only when a dump is converted, not when one is read back

    cfg = w.get("config")
    if not isinstance(cfg, dict):
        cfg = {}

    def conf(name: str) -> Any:
        # a dump without the setting: the installed dask's default
        return _config(cfg, name, dask.config.get(name, None))

    nthreads = get_typed(w, "nthreads", int, where)
    if nthreads < 1:
        raise Refused(f"{where}.nthreads: {nthreads}")
    count = conf("distributed.worker.connections.outgoing")
    if type(count) is not int or count < 0:
        raise Refused(f"{where}.config: distributed.worker.connections.outgoing is {short(count)}")
    validate = conf("distributed.worker.validate")
    if type(validate) is not bool:
        raise Refused(f"{where}.config: distributed.worker.validate is {short(validate)}")
    # not a dask config key unless a test sets it: Worker's default is False
    counter_max = _config(cfg, "distributed.admin.transition-counter-max", False)
    if counter_max is not False and (type(counter_max) is not int or counter_max < 0):
        raise Refused(f"{where}.config: distributed.admin.transition-counter-max is {short(counter_max)}")
    log_length = conf("distributed.admin.low-level-log-length")
    if log_length is not None and (type(log_length) is not int or log_length < 0):
        raise Refused(f"{where}.config: distributed.admin.low-level-log-length is {short(log_length)}")
    memory_limit = w.get("memory_limit")
    fraction = conf("distributed.worker.memory.transfer")
    incoming: float = math.inf
    if memory_limit is not None and fraction is not False:
        if type(memory_limit) not in (int, float) or type(fraction) not in (int, float):
            raise Refused(f"{where}: memory_limit {short(memory_limit)} or transfer fraction {short(fraction)}")
        incoming = int(memory_limit * fraction)
    resources = None
    if sched_worker is not None and isinstance(sched_worker.get("resources"), dict):
        resources = sched_worker["resources"]
    if resources is None:
        resources = conf("distributed.worker.resources") or {}
    return {
        "nthreads": nthreads,
        "resources": resources_of(resources, f"{where}.resources"),
        "transfer_incoming_count_limit": count,
        "validate": validate,
        "transition_counter_max": counter_max,
        "transfer_incoming_bytes_limit": encode_float(float(incoming)),
        "transfer_message_bytes_limit": encode_float(float(_bytes(
            conf("distributed.worker.transfer.message-bytes-limit"), f"{where}.config.message-bytes-limit"
        ))),
        "default_data_size": _bytes(
            conf("distributed.scheduler.default-data-size"), f"{where}.config.default-data-size"
        ),
        "log_length": log_length,
    }


def resources_of(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict) or not all(
        type(k) is str and type(v) in (int, float) for k, v in obj.items()
    ):
        raise Refused(f"{where}: expected a mapping of names to amounts, got {short(obj)}")
    return encode_resources({k: float(v) for k, v in obj.items()})


class EventConverter:
    """A ``stimulus_log`` entry as the log format's event, field by field
    through the codecs of :mod:`schemas.convert`."""

    def __init__(self, keys: Keys, sizes: dict, default_size: int):
        self.keys = keys
        self.sizes = sizes
        self.default_size = default_size
        self.guessed = 0
        by = {
            id(cv.KEY): self._key, id(cv.KEYS): self._keys, id(cv.WHO_HAS): self._who_has,
            id(cv.NBYTES_MAP): self._nbytes, id(cv.SIZES): self._sizes,
            id(cv.PRIORITY): self._priority, id(cv.RESOURCES): self._resources,
            id(cv.VALUE): encode_value, id(cv.EXCEPTION): self._exception,
            id(cv.TRACEBACK): lambda v: v is not None, id(cv.TYPE): self._type,
            id(cv.DROPPED): lambda v: None, id(cv.STAND_IN_RUN_SPEC): lambda v: None,
            id(cv.FLOAT): self._float, id(cv.OPT_FLOAT): self._opt_float,
        }
        self.fields = {
            name: [(f, by.get(id(codec), _plain), codec) for f, codec in table.items()]
            for name, table in cv.EVENT_FIELDS.items()
        }

    #: fields a dump may lack (``exclude=``) without losing what replay needs
    OPTIONAL = frozenset(map(id, (cv.DROPPED, cv.STAND_IN_RUN_SPEC, cv.TYPE, cv.TRACEBACK, cv.EXCEPTION)))

    def convert(self, ev: Any, where: str) -> tuple[dict, float]:
        if not isinstance(ev, dict):
            raise Refused(f"{where}: expected an event mapping, got {short(ev)}")
        cls = ev.get("cls")
        if type(cls) is not str or cls not in self.fields:
            raise Refused(f"{where}.cls: unknown event class {short(cls)}")
        sid = ev.get("stimulus_id")
        if type(sid) is not str:
            raise Refused(f"{where}.stimulus_id: missing or not a string")
        handled = ev.get("handled")
        if type(handled) not in (int, float) or not math.isfinite(handled):
            raise Refused(f"{where}.handled: missing or not a time")
        out: dict[str, Any] = {"cls": cls, "stimulus_id": sid}
        for name, conv, codec in self.fields[cls]:
            if name not in ev:
                if id(codec) not in self.OPTIONAL:
                    raise Refused(f"{where}: {cls} without {name!r}")
                value = None
            else:
                value = ev[name]
            try:
                out[name] = conv(value)
            except (CodecError, TypeError, ValueError) as e:
                raise Refused(f"{where}.{name}: {e}") from None
        try:
            # decoded as replay will decode it: the importer writes no event
            # the reader would refuse
            cv.decode_event(out)
        except (CodecError, RecursionError) as e:
            raise Refused(f"{where}: {e}") from None
        return out, float(handled)

    def _key(self, v: Any) -> Any:
        return encode_key(self.keys.value(v))

    def _keys(self, v: Any) -> list:
        if type(v) is not list:
            raise CodecError(f"expected a list of keys, got {short(v)}")
        return [encode_key(self.keys.value(k)) for k in v]

    def _map(self, v: Any) -> Iterator[tuple[Any, Any]]:
        if type(v) is not dict:
            raise CodecError(f"expected a mapping, got {short(v)}")
        for k, x in v.items():
            yield self.keys.text(k), x

    def _who_has(self, v: Any) -> list:
        out = []
        for k, ws in self._map(v):
            if type(ws) is not list or not all(type(a) is str for a in ws):
                raise CodecError(f"who_has of {k!r}: expected a list of addresses")
            out.append([encode_key(k), ws])
        return out

    def _nbytes(self, v: Any) -> list:
        out = []
        for k, n in self._map(v):
            if type(n) is not int or n < 0:
                raise CodecError(f"nbytes of {k!r}: {short(n)}")
            self.sizes.setdefault(k, n)
            out.append([encode_key(k), n])
        return out

    def _sizes(self, v: Any) -> list:
        # the dump drops data values; the state machine needs a value's size
        # only when the task's nbytes is unknown (scattered data)
        out = []
        for k, _ in self._map(v):
            n = self.sizes.get(k)
            if n is None:
                n = self.default_size
                self.guessed += 1
            out.append([encode_key(k), n])
        return out

    def _priority(self, v: Any) -> list:
        if type(v) is not list:
            raise CodecError(f"priority: expected a list, got {short(v)}")
        return [encode_value(x) for x in v]

    def _resources(self, v: Any) -> Any:
        if v is None:
            return None
        if type(v) is not dict or not all(type(k) is str and type(x) in (int, float) for k, x in v.items()):
            raise CodecError(f"expected a mapping of resource amounts, got {short(v)}")
        return encode_resources({k: float(x) for k, x in v.items()})

    @staticmethod
    def _exception(v: Any) -> Any:
        # recursive_to_dict writes the Serialize wrapper's repr
        if v is None:
            return None
        if type(v) is not str:
            raise CodecError(f"expected the exception's text, got {short(v)}")
        if v.startswith("<Serialize: ") and v.endswith(">"):
            return v[len("<Serialize: "):-1]
        return v

    @staticmethod
    def _type(v: Any) -> Any:
        if type(v) is not str:
            return None
        m = re.match(r"^<class '([^']+)'>$", v)
        if not m:
            return v[:200]
        name = m.group(1)
        return name if "." in name else f"builtins.{name}"

    @staticmethod
    def _float(v: Any) -> Any:
        if type(v) not in (int, float):
            raise CodecError(f"expected a number, got {short(v)}")
        return encode_float(float(v))

    def _opt_float(self, v: Any) -> Any:
        return None if v is None else self._float(v)


def _plain(v: Any) -> Any:
    # strings, ints and bools: the codec's decoder checks the type
    return v
