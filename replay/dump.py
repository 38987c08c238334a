"""Import the artefacts of ``Client.dump_cluster_state`` as a dask-replay log.

A cluster dump (``.msgpack.gz`` or ``.yaml``) holds, per worker, its
``WorkerState.stimulus_log`` (the events it handled, capped at
``distributed.admin.low-level-log-length``, without ``FindMissingEvent``), its
transition log, its tasks and its dask config; and the scheduler's view of
every task. :func:`import_dump` turns each worker into the records the
recorder writes (header, steps, end), adds its final state (``final``
records) and the scheduler's view (``scheduler`` records), and says in each
header whether the history is complete, that is, provably starts from the
empty state (see :func:`_completeness`).

The dump is data: it is parsed with msgpack or YAML's safe loader only,
nothing in it is unpickled or evaluated, and its size, nesting and node count
are bounded before anything else looks at it. Events are rebuilt field by
field through the log format's own codecs and decoded as replay will decode
them, so a dump the importer accepts is a log the reader accepts.

Tuple keys. ``recursive_to_dict`` writes a tuple key as a list where it is a
value (``['y', 0]``) and as that list's ``str`` where it is a dict key
(``"['y', 0]"``). A dask key is never a list, so a list is always a tuple;
a dict key's text is mapped back through the keys the dump itself names
(its tasks, its events), and only text no key of the dump explains is read
as a literal.
"""
from __future__ import annotations

import ast
import gzip
import math
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import yaml
from pydantic import ValidationError

from replay.errors import BadInput
from replay.logfile import GZIP_MAGIC, MAX_LINE, encode_line
from replay.merge import records_of
from schemas.codec import (
    FORMAT,
    VERSION,
    CodecError,
    decode_key,
    encode_float,
    encode_key,
    encode_resources,
    encode_value,
)
from schemas import convert as cv

#: decompressed bytes read from a dump; a real dump of a few hundred workers
#: with full logs stays well below
MAX_BYTES = 512 * 2**20
#: values (containers and scalars) a dump may hold once parsed
MAX_NODES = 30_000_000
#: nesting a dump may have; real ones nest about ten deep
MAX_DEPTH = 100
#: items of one list or map, and length of one string or binary blob
MAX_ITEMS = 5_000_000
MAX_STR = 16 * 2**20
#: tasks per ``final`` or ``scheduler`` record: keeps every line far below
#: the reader's line limit
TASKS_PER_RECORD = 5_000
#: longest dict-key text read as a literal key
MAX_KEY_TEXT = 10_000

SOURCE = "cluster-dump"


# --- reading a dump ------------------------------------------------------------


def load_dump(path: str, *, max_bytes: int = MAX_BYTES) -> tuple[dict, str]:
    """The parsed dump and its format (``"msgpack"`` or ``"yaml"``).

    Refuses (:class:`~replay.errors.BadInput`, naming ``path``) a file that is
    not a dump, is truncated or corrupt, larger than ``max_bytes`` once
    decompressed, or holds anything but plain data.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == GZIP_MAGIC:
                fmt, raw = "msgpack", _read_gzip(path, f, max_bytes)
            else:
                fmt, raw = "yaml", f.read(max_bytes + 1)
    except OSError as e:
        raise BadInput(f"cannot read: {e.strerror or e}", path) from None
    if len(raw) > max_bytes:
        raise BadInput(f"larger than {max_bytes} bytes once decompressed; refused", path)
    if fmt == "msgpack":
        obj = _parse_msgpack(path, raw)
    else:
        if path.endswith(".gz"):
            raise BadInput("not gzip-compressed: not a .msgpack.gz cluster dump", path)
        obj = _parse_yaml(path, raw)
    _check_plain(path, obj)
    if not isinstance(obj, dict) or not isinstance(obj.get("workers"), dict) or not isinstance(
        obj.get("scheduler"), dict
    ):
        raise BadInput("not a cluster dump: expected a mapping with 'scheduler' and 'workers'", path)
    return obj, fmt


def _read_gzip(path: str, f: Any, max_bytes: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            return gz.read(max_bytes + 1)
    except EOFError:
        raise BadInput("compressed stream ends early: the dump is truncated", path) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise BadInput(f"corrupt gzip stream: {e}", path) from None


def _refuse_ext(code: int, data: bytes) -> Any:
    # msgpack extension types carry other languages' objects; a dump has none
    raise ValueError(f"msgpack extension type {code}")


def _parse_msgpack(path: str, raw: bytes) -> Any:
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=False,  # dask writes int task keys as map keys
            ext_hook=_refuse_ext,
            max_str_len=MAX_STR,
            max_bin_len=MAX_STR,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except (ValueError, TypeError) as e:  # what msgpack raises for bad input
        text = str(e) or type(e).__name__
        raise BadInput(f"not a msgpack cluster dump: {text[:200]}", path) from None


#: the C loader when PyYAML has it: the pure-Python one is ten times slower
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(path: str, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"not a cluster dump: neither gzip nor UTF-8 text ({e.reason})", path) from None
    # what yaml.safe_load does, with the C loader when there is one
    loader = _SAFE_LOADER(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()
        raise BadInput(f"not a YAML cluster dump: {first[0][:200] if first else type(e).__name__}", path) from None
    except RecursionError:
        raise BadInput("not a cluster dump: nested too deeply", path) from None
    finally:
        loader.dispose()


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(path: str, obj: Any) -> None:
    """Only plain data, bounded: no binary blobs (a pickled object would be
    one), no YAML timestamps or sets, a bounded count of nodes and nesting.

    A container reached twice is refused: only a YAML alias can do that, dask
    never writes one (it rebuilds every list and mapping before dumping), and
    an alias bomb would otherwise cost time exponential in its size.
    """
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    nodes = 0
    seen: set[int] = set()
    while stack:
        x, depth, where = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise BadInput(f"more than {MAX_NODES} values; refused", path)
        if isinstance(x, _PLAIN):
            if type(x) is str and len(x) > MAX_STR:
                raise BadInput(f"{where or 'dump'}: string longer than {MAX_STR}; refused", path)
            continue
        if depth >= MAX_DEPTH:
            raise BadInput(f"{where or 'dump'}: nested deeper than {MAX_DEPTH}; refused", path)
        if type(x) in (list, dict):
            if id(x) in seen:
                raise BadInput(f"{where or 'dump'}: a value used twice (a YAML alias); refused", path)
            seen.add(id(x))
        if type(x) is list:
            if len(x) > MAX_ITEMS:
                raise BadInput(f"{where or 'dump'}: list of more than {MAX_ITEMS} items; refused", path)
            stack.extend((v, depth + 1, where) for v in x)
        elif type(x) is dict:
            if len(x) > MAX_ITEMS:
                raise BadInput(f"{where or 'dump'}: mapping of more than {MAX_ITEMS} items; refused", path)
            for k, v in x.items():
                if not isinstance(k, _PLAIN):
                    raise BadInput(f"{where or 'dump'}: a mapping key of type {type(k).__name__}", path)
                stack.append((v, depth + 1, _join(where, k) if depth < 4 else where))
        elif isinstance(x, (bytes, bytearray)):
            raise BadInput(
                f"{where or 'dump'}: binary data (a pickled object?); a dump holds plain data "
                "and nothing in it is unpickled",
                path,
            )
        else:
            raise BadInput(f"{where or 'dump'}: a value of type {type(x).__name__}, not plain data", path)


def _join(where: str, k: Any) -> str:
    text = k if type(k) is str else repr(k)
    if len(text) > 60:
        text = text[:59] + "…"
    return f"{where}.{text}" if where else text


# --- keys --------------------------------------------------------------------------


class Keys:
    """Turns the dump's mangled keys back into dask keys (see the module doc)."""

    def __init__(self) -> None:
        #: ``str(list form)`` of every tuple key the dump names as a value
        self.by_text: dict[str, tuple] = {}
        #: every string key the dump names as a value
        self.strings: set[str] = set()
        #: ``repr(key)`` of every key, to read ``<TaskState ...>`` texts
        self.by_repr: dict[str, Any] = {}
        self.repaired = 0
        self.inferred = 0

    def learn(self, value: Any) -> None:
        """Note a key the dump holds as a value (list form or scalar)."""
        try:
            key = _value_key(value)
        except CodecError:
            return
        if type(key) is tuple:
            self.by_text.setdefault(str(_listed(key)), key)
        elif type(key) is str:
            self.strings.add(key)
        self.by_repr.setdefault(repr(key), key)

    def value(self, v: Any) -> Any:
        """A key the dump holds as a value: a list is a tuple key."""
        key = _value_key(v)
        if type(key) is tuple:
            self.repaired += 1
        return key

    def text(self, k: Any) -> Any:
        """A key the dump holds as a dict key: a tuple key is its list's ``str``."""
        if type(k) is not str:
            return _value_key(k)
        key = self.by_text.get(k)
        if key is not None:
            self.repaired += 1
            return key
        if k in self.strings or not (k.startswith("[") and k.endswith("]")) or len(k) > MAX_KEY_TEXT:
            return k
        # a key the dump names nowhere else (a released dependency): its text
        # is the only evidence; a literal, never evaluated
        try:
            parsed = ast.literal_eval(k)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return k
        try:
            key = _value_key(parsed)
        except CodecError:
            return k
        if type(key) is tuple:
            self.repaired += 1
            self.inferred += 1
        return key

    def task_repr(self, text: Any) -> Any:
        """The key of a ``<TaskState KEY STATE>`` text."""
        if type(text) is not str or not text.startswith("<TaskState ") or not text.endswith(">"):
            raise CodecError(f"not a task: {_short(text)}")
        inner = text[len("<TaskState "):-1].rsplit(" ", 1)[0]
        if inner in self.by_repr:
            return self.by_repr[inner]
        if len(inner) > MAX_KEY_TEXT:
            raise CodecError(f"not a task: {_short(text)}")
        try:
            return _value_key(_literal_key(ast.literal_eval(inner)))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise CodecError(f"not a task: {_short(text)}") from None


def _literal_key(x: Any) -> Any:
    # a task repr spells tuples as tuples; the key codec wants them as lists
    if type(x) is tuple:
        return [_literal_key(v) for v in x]
    return x


def _listed(key: Any) -> Any:
    return [_listed(k) for k in key] if type(key) is tuple else key


def _value_key(v: Any) -> Any:
    """A dump value as a dask key; raises CodecError if it cannot be one."""
    if type(v) is bool:  # an int subclass, never a key
        raise CodecError(f"not a dask key: {v!r}")
    return decode_key(encode_key(_tuples(v)))


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if type(v) is list else v


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x) if not isinstance(x, (list, dict)) or len(x) < 20 else f"<{type(x).__name__} of {len(x)}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the report --------------------------------------------------------------------


@dataclass
class WorkerImport:
    address: str
    #: steps written (the dump's stimulus_log)
    events: int
    #: "complete" or "partial"
    history: str
    reason: str
    tasks: int
    keys_repaired: int
    sizes_guessed: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ImportReport:
    """What :func:`import_dump` wrote."""

    dump: str
    out: str
    #: "msgpack" or "yaml"
    format: str
    workers: list[WorkerImport] = field(default_factory=list)
    #: workers the dump holds an error for instead of a state, with the error
    skipped: dict[str, str] = field(default_factory=dict)
    scheduler_tasks: int = 0
    records: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every worker's history is complete."""
        return all(w.history == "complete" for w in self.workers)

    def to_json(self) -> dict:
        return {
            "dump": self.dump, "out": self.out, "format": self.format,
            "workers": [w.to_json() for w in self.workers], "skipped": dict(self.skipped),
            "scheduler_tasks": self.scheduler_tasks, "records": self.records,
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        """Plain-text summary, one line per worker."""
        out = [f"{self.out}: {len(self.workers)} worker(s) from {self.dump} ({self.format}), "
               f"{self.scheduler_tasks} scheduler task(s)"]
        for w in self.workers:
            out.append(f"  {w.address}: {w.events} events, {w.tasks} tasks at the end; "
                       f"history {w.history}: {w.reason}")
        for address, error in self.skipped.items():
            out.append(f"  {address}: skipped, the dump holds an error: {error}")
        out.extend(f"warning: {w}" for w in self.warnings)
        return out


# --- converting one worker ------------------------------------------------------------


class _Refused(Exception):
    """Bad input found while converting; becomes a BadInput naming the dump."""


def _get(d: dict, name: str, types: type | tuple, where: str, default: Any = ...) -> Any:
    if name not in d:
        if default is ...:
            raise _Refused(f"{where}.{name}: missing")
        return default
    v = d[name]
    if not isinstance(v, types) or (type(v) is bool and bool not in _astuple(types)):
        raise _Refused(f"{where}.{name}: expected {_typename(types)}, got {_short(v)}")
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
    from dask.utils import parse_bytes

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
    raise _Refused(f"{where}: not a size in bytes: {_short(value)}")


def _state_inputs(w: dict, sched_worker: dict | None, where: str) -> dict:
    """The ``WorkerState`` construction inputs, as ``Worker.__init__`` derives
    them from its config and memory limit (see :func:`replay.record.state_inputs`)."""
    import dask.config

    cfg = w.get("config")
    if not isinstance(cfg, dict):
        cfg = {}

    def conf(name: str) -> Any:
        # a dump without the setting: the installed dask's default
        return _config(cfg, name, dask.config.get(name, None))

    nthreads = _get(w, "nthreads", int, where)
    if nthreads < 1:
        raise _Refused(f"{where}.nthreads: {nthreads}")
    count = conf("distributed.worker.connections.outgoing")
    if type(count) is not int or count < 0:
        raise _Refused(f"{where}.config: distributed.worker.connections.outgoing is {_short(count)}")
    validate = conf("distributed.worker.validate")
    if type(validate) is not bool:
        raise _Refused(f"{where}.config: distributed.worker.validate is {_short(validate)}")
    # not a dask config key unless a test sets it: Worker's default is False
    counter_max = _config(cfg, "distributed.admin.transition-counter-max", False)
    if counter_max is not False and (type(counter_max) is not int or counter_max < 0):
        raise _Refused(f"{where}.config: distributed.admin.transition-counter-max is {_short(counter_max)}")
    log_length = conf("distributed.admin.low-level-log-length")
    if log_length is not None and (type(log_length) is not int or log_length < 0):
        raise _Refused(f"{where}.config: distributed.admin.low-level-log-length is {_short(log_length)}")
    memory_limit = w.get("memory_limit")
    fraction = conf("distributed.worker.memory.transfer")
    incoming: float = math.inf
    if memory_limit is not None and fraction is not False:
        if type(memory_limit) not in (int, float) or type(fraction) not in (int, float):
            raise _Refused(f"{where}: memory_limit {_short(memory_limit)} or transfer fraction {_short(fraction)}")
        incoming = int(memory_limit * fraction)
    resources = None
    if sched_worker is not None and isinstance(sched_worker.get("resources"), dict):
        resources = sched_worker["resources"]
    if resources is None:
        resources = conf("distributed.worker.resources") or {}
    return {
        "nthreads": nthreads,
        "resources": _resources(resources, f"{where}.resources"),
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


def _resources(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict) or not all(
        type(k) is str and type(v) in (int, float) for k, v in obj.items()
    ):
        raise _Refused(f"{where}: expected a mapping of names to amounts, got {_short(obj)}")
    return encode_resources({k: float(v) for k, v in obj.items()})


def _python_version(text: Any) -> str:
    # dask reports "3.11.7.final.0"
    if type(text) is not str:
        return "unknown"
    return ".".join(text.split(".")[:3])


_STATUS = re.compile(r"^<Status\.\w+: '(\w+)'>$")
_WORKER_STATE = re.compile(r"^<WorkerState '([^']*)'")


def _status(text: Any) -> str | None:
    if type(text) is not str:
        return None
    m = _STATUS.match(text)
    return m.group(1) if m else text[:100]


class _EventConverter:
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
            raise _Refused(f"{where}: expected an event mapping, got {_short(ev)}")
        cls = ev.get("cls")
        if type(cls) is not str or cls not in self.fields:
            raise _Refused(f"{where}.cls: unknown event class {_short(cls)}")
        sid = ev.get("stimulus_id")
        if type(sid) is not str:
            raise _Refused(f"{where}.stimulus_id: missing or not a string")
        handled = ev.get("handled")
        if type(handled) not in (int, float) or not math.isfinite(handled):
            raise _Refused(f"{where}.handled: missing or not a time")
        out: dict[str, Any] = {"cls": cls, "stimulus_id": sid}
        for name, conv, codec in self.fields[cls]:
            if name not in ev:
                if id(codec) not in self.OPTIONAL:
                    raise _Refused(f"{where}: {cls} without {name!r}")
                value = None
            else:
                value = ev[name]
            try:
                out[name] = conv(value)
            except (CodecError, TypeError, ValueError) as e:
                raise _Refused(f"{where}.{name}: {e}") from None
        try:
            # decoded as replay will decode it: the importer writes no event
            # the reader would refuse
            cv.decode_event(out)
        except (CodecError, RecursionError) as e:
            raise _Refused(f"{where}: {e}") from None
        return out, float(handled)

    def _key(self, v: Any) -> Any:
        return encode_key(self.keys.value(v))

    def _keys(self, v: Any) -> list:
        if type(v) is not list:
            raise CodecError(f"expected a list of keys, got {_short(v)}")
        return [encode_key(self.keys.value(k)) for k in v]

    def _map(self, v: Any) -> Iterator[tuple[Any, Any]]:
        if type(v) is not dict:
            raise CodecError(f"expected a mapping, got {_short(v)}")
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
                raise CodecError(f"nbytes of {k!r}: {_short(n)}")
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
            raise CodecError(f"priority: expected a list, got {_short(v)}")
        return [encode_value(x) for x in v]

    def _resources(self, v: Any) -> Any:
        if v is None:
            return None
        if type(v) is not dict or not all(type(k) is str and type(x) in (int, float) for k, x in v.items()):
            raise CodecError(f"expected a mapping of resource amounts, got {_short(v)}")
        return encode_resources({k: float(x) for k, x in v.items()})

    @staticmethod
    def _exception(v: Any) -> Any:
        # recursive_to_dict writes the Serialize wrapper's repr
        if v is None:
            return None
        if type(v) is not str:
            raise CodecError(f"expected the exception's text, got {_short(v)}")
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
            raise CodecError(f"expected a number, got {_short(v)}")
        return encode_float(float(v))

    def _opt_float(self, v: Any) -> Any:
        return None if v is None else self._float(v)


def _plain(v: Any) -> Any:
    # strings, ints and bools: the codec's decoder checks the type
    return v


def _log_stimulus_ids(log: list) -> set[str]:
    out = set()
    for entry in log:
        if type(entry) is list and len(entry) >= 2 and type(entry[-2]) is str:
            out.add(entry[-2])
    return out


def _transitions_logged(log: list) -> int:
    # (key, start, recommended, final, recommendations, stimulus_id, time)
    return sum(1 for e in log if type(e) is list and len(e) == 7 and type(e[4]) is dict)


def _completeness(w: dict, events: int, cap: int | None) -> tuple[bool, str]:
    """Whether the dump's ``stimulus_log`` provably holds every event the
    worker handled since its empty state, and why (or why not).

    ``stimulus_log`` and the transition log ``log`` are deques of the same
    maximum length, created with the ``WorkerState``; a deque drops entries
    only once full, and stays full after. So the stimulus log is whole if it
    holds fewer entries than the transition log (which no deque can exceed),
    or if the transition log is itself whole (it accounts for every
    transition the worker counted) and names no stimulus the stimulus log
    lacks. The configured cap is checked as well. ``FindMissingEvent`` is
    never logged by dask; it changes no task state (it only asks the
    scheduler for who_has), so a replay without it ends in the same states.
    """
    if "stimulus_log" not in w:
        return False, "the dump excludes the worker's stimulus_log"
    if cap is not None and events >= cap:
        return False, (
            f"the stimulus_log is full ({events} events, distributed.admin.low-level-log-length="
            f"{cap}): earlier events were dropped"
        )
    log = w.get("log")
    counter = w.get("transition_counter")
    if type(log) is not list or type(counter) is not int:
        return False, "the dump lacks the worker's transition log to prove nothing was dropped"
    missing = _log_stimulus_ids(log) - set(_sids(w["stimulus_log"]))
    if missing:
        return False, (
            f"the transition log names {len(missing)} stimulus id(s) the stimulus_log lacks "
            f"(e.g. {_short(min(missing))}): events are missing"
        )
    if events < len(log):
        return True, (
            f"all {events} events since the worker started: the stimulus_log never filled "
            f"(it holds fewer entries than the transition log, {len(log)}, of the same cap)"
        )
    logged = _transitions_logged(log)
    if logged == counter:
        return True, (
            f"all {events} events since the worker started: the transition log holds all "
            f"{counter} transitions the worker made, and every stimulus it names"
        )
    return False, (
        f"cannot prove nothing was dropped: the transition log holds {logged} of "
        f"{counter} transitions"
    )


def _sids(stimulus_log: list) -> Iterator[str]:
    for ev in stimulus_log:
        if isinstance(ev, dict) and type(ev.get("stimulus_id")) is str:
            yield ev["stimulus_id"]


def _key_list(keys: Keys, v: Any, where: str, *, as_text: bool = False) -> list:
    if v is None:
        return []
    if isinstance(v, dict):
        v = list(v)
        as_text = True
    if type(v) is not list:
        raise _Refused(f"{where}: expected a list of keys, got {_short(v)}")
    try:
        return [encode_key(keys.text(k) if as_text else keys.value(k)) for k in v]
    except CodecError as e:
        raise _Refused(f"{where}: {e}") from None


def _keys_by(keys: Keys, v: Any, where: str) -> list:
    if v is None:
        return []
    if type(v) is not dict:
        raise _Refused(f"{where}: expected a mapping, got {_short(v)}")
    out = []
    for address, ks in v.items():
        if type(address) is not str:
            raise _Refused(f"{where}: worker {_short(address)} is not an address")
        out.append([address, _key_list(keys, ks, f"{where}.{address}")])
    return out


def _task_refs(keys: Keys, v: Any, where: str) -> list:
    if v is None:
        return []
    if type(v) is not list:
        raise _Refused(f"{where}: expected a list of tasks, got {_short(v)}")
    try:
        return [encode_key(keys.task_repr(t)) for t in v]
    except CodecError as e:
        raise _Refused(f"{where}: {e}") from None


def _opt(d: dict, name: str, types: type | tuple, where: str) -> Any:
    return _get(d, name, types + (type(None),) if isinstance(types, tuple) else (types, type(None)), where, None)


def _final_task(keys: Keys, name: Any, t: Any, where: str) -> dict:
    if not isinstance(t, dict):
        raise _Refused(f"{where}: expected a task mapping, got {_short(t)}")
    key = keys.value(t["key"]) if "key" in t else keys.text(name)
    out: dict[str, Any] = {"key": encode_key(key), "state": _get(t, "state", str, where)}
    for f in ("previous", "next", "coming_from", "exception_text"):
        v = _opt(t, f, str, where)
        if v is not None:
            out[f] = v
    run_id = _opt(t, "run_id", int, where)
    if run_id is not None:
        out["run_id"] = run_id
    nbytes = _opt(t, "nbytes", int, where)
    if nbytes is not None and nbytes >= 0:
        out["nbytes"] = nbytes
    priority = _opt(t, "priority", list, where)
    if priority is not None:
        out["priority"] = [encode_value(x) for x in priority]
    who_has = _opt(t, "who_has", list, where)
    if who_has:
        if not all(type(a) is str for a in who_has):
            raise _Refused(f"{where}.who_has: expected addresses")
        out["who_has"] = who_has
    for f in ("dependencies", "dependents", "waiting_for_data"):
        refs = _task_refs(keys, t.get(f), f"{where}.{f}")
        if refs:
            out[f] = refs
    rr = t.get("resource_restrictions")
    if rr:
        out["resource_restrictions"] = _resources(rr, f"{where}.resource_restrictions")
    return out


def _time(x: Any) -> float | None:
    return float(x) if type(x) in (int, float) and math.isfinite(x) and x > 0 else None


def _entered(keys: Keys, log: Any) -> dict[Any, tuple[str, float]]:
    """Per key, the state its last transition in the worker's transition log
    (``log``) ended in, and when: ``(key, start, finish, recs, stimulus_id,
    time)``, or ``(key, start, recommended, final, recs, stimulus_id, time)``."""
    out: dict[Any, tuple[str, float]] = {}
    for e in log if type(log) is list else ():
        if type(e) is not list or len(e) not in (6, 7) or type(e[-3 if len(e) == 6 else -4]) is not dict:
            continue
        finish, t = e[2] if len(e) == 6 else e[3], _time(e[-1])
        if type(finish) is not str or t is None:
            continue
        try:
            out[keys.value(e[0])] = (finish, t)
        except (CodecError, _Refused, TypeError):  # not a key this dump names: not a task's transition
            continue
    return out


def _dumped(w: dict, sched_worker: dict | None) -> float | None:
    """The latest time the dump records for a worker (its transition and
    stimulus logs, its transfers, the scheduler's last heartbeat from it): when
    the dump was taken, at the earliest."""
    times: list[float | None] = []
    for e in w.get("log") if type(w.get("log")) is list else ():
        times.append(_time(e[-1]) if type(e) is list and e else None)
    for ev in w.get("stimulus_log") if type(w.get("stimulus_log")) is list else ():
        times.append(_time(ev.get("handled")) if isinstance(ev, dict) else None)
    for f in ("transfer_incoming_log", "transfer_outgoing_log"):
        for tr in w.get(f) if type(w.get(f)) is list else ():
            times.append(_time(tr.get("stop")) if isinstance(tr, dict) else None)
    if isinstance(sched_worker, dict):
        times.append(_time(sched_worker.get("last_seen")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _final_records(keys: Keys, address: str, seq: int, w: dict, where: str,
                   sched_worker: dict | None = None) -> list[dict]:
    tasks_obj = _get(w, "tasks", dict, where, {})
    tasks = [_final_task(keys, name, t, f"{where}.tasks.{_short(name, 40)}") for name, t in tasks_obj.items()]
    # since when each task is in its state, by the dump's own clock: its last
    # transition there, or (executing) when its execution started
    entered = _entered(keys, w.get("log"))
    for task, (name, t) in zip(tasks, tasks_obj.items()):
        key = decode_key(task["key"])
        finish, when = entered.get(key, (None, None))
        if finish == task["state"]:
            task["since"] = when
        elif task["state"] in ("executing", "long-running") and _time(t.get("start_time")) is not None:
            task["since"] = _time(t["start_time"])
    busy = w.get("busy_workers") or []
    if type(busy) is not list or not all(type(a) is str for a in busy):
        raise _Refused(f"{where}.busy_workers: expected addresses")
    head: dict[str, Any] = {
        "kind": "final", "worker": address, "seq": seq, "part": 0, "source": SOURCE,
        "status": _status(w.get("status")),
        "running": w.get("running") if type(w.get("running")) is bool else None,
        "transition_counter": w.get("transition_counter") if type(w.get("transition_counter")) is int else None,
        "tasks": tasks[:TASKS_PER_RECORD],
        "data": _key_list(keys, w.get("data"), f"{where}.data", as_text=True),
        "busy_workers": busy,
        "dumped": _dumped(w, sched_worker),
    }
    for f in ("ready", "constrained", "executing", "long_running", "in_flight_tasks", "missing_dep_flight"):
        head[f] = _key_list(keys, w.get(f), f"{where}.{f}")
    for f in ("data_needed", "in_flight_workers", "has_what"):
        head[f] = _keys_by(keys, w.get(f), f"{where}.{f}")
    out = [head]
    for part, i in enumerate(range(TASKS_PER_RECORD, len(tasks), TASKS_PER_RECORD), 1):
        out.append({"kind": "final", "worker": address, "seq": seq, "part": part, "source": SOURCE,
                    "tasks": tasks[i:i + TASKS_PER_RECORD]})
    return out


def _scheduler_records(keys: Keys, s: dict) -> list[dict]:
    where = "scheduler"
    workers = []
    for address, sw in _get(s, "workers", dict, where, {}).items():
        if type(address) is not str:
            raise _Refused(f"{where}.workers: {_short(address)} is not an address")
        if not isinstance(sw, dict):
            workers.append({"address": address})
            continue
        entry: dict[str, Any] = {"address": address, "status": _status(sw.get("status"))}
        if type(sw.get("nthreads")) is int and sw["nthreads"] >= 0:
            entry["nthreads"] = sw["nthreads"]
        if isinstance(sw.get("resources"), dict):
            entry["resources"] = _resources(sw["resources"], f"{where}.workers.{address}.resources")
        workers.append(entry)
    tasks = []
    for name, t in _get(s, "tasks", dict, where, {}).items():
        w = f"{where}.tasks.{_short(name, 40)}"
        if not isinstance(t, dict):
            raise _Refused(f"{w}: expected a task mapping, got {_short(t)}")
        key = keys.value(t["key"]) if "key" in t else keys.text(name)
        task: dict[str, Any] = {"key": encode_key(key), "state": _get(t, "state", str, w)}
        on = t.get("processing_on")
        if on is not None:
            task["processing_on"] = _worker_ref(on, f"{w}.processing_on")
        who_has = t.get("who_has")
        if who_has:
            if type(who_has) is not list:
                raise _Refused(f"{w}.who_has: expected a list, got {_short(who_has)}")
            task["who_has"] = [_worker_ref(x, f"{w}.who_has") for x in who_has]
        if type(t.get("nbytes")) is int:
            task["nbytes"] = t["nbytes"]
        tasks.append(task)
    head: dict[str, Any] = {
        "kind": "scheduler", "part": 0, "source": SOURCE,
        "address": s.get("address") if type(s.get("address")) is str else None,
        "transition_counter": s.get("transition_counter")
        if type(s.get("transition_counter")) is int and s["transition_counter"] >= 0 else None,
        "workers": workers, "tasks": tasks[:TASKS_PER_RECORD],
    }
    out = [head]
    for part, i in enumerate(range(TASKS_PER_RECORD, len(tasks), TASKS_PER_RECORD), 1):
        out.append({"kind": "scheduler", "part": part, "source": SOURCE, "tasks": tasks[i:i + TASKS_PER_RECORD]})
    return out


def _worker_ref(x: Any, where: str) -> str:
    # the scheduler's TaskState refers to its WorkerState objects, dumped as repr
    if type(x) is str:
        m = _WORKER_STATE.match(x)
        if m:
            return m.group(1)
        if "://" in x and len(x) < 1000 and not x.startswith("<"):
            return x
    raise _Refused(f"{where}: not a worker: {_short(x)}")


def _learn_keys(keys: Keys, dump: dict) -> None:
    """Every key the dump holds as a value: tasks' keys, event keys."""
    key_fields = {
        name: [f for f, codec in table.items() if codec is cv.KEY or codec is cv.KEYS]
        for name, table in cv.EVENT_FIELDS.items()
    }
    tasks_of = [dump["scheduler"].get("tasks")]
    for w in dump["workers"].values():
        if not isinstance(w, dict):
            continue
        tasks_of.append(w.get("tasks"))
        for ev in w.get("stimulus_log") or ():
            if not isinstance(ev, dict):
                continue
            for f in key_fields.get(ev.get("cls"), ()):  # type: ignore[arg-type]
                v = ev.get(f)
                if f == "keys" and type(v) is list:
                    for k in v:
                        keys.learn(k)
                else:
                    keys.learn(v)
        for entry in w.get("log") or ():
            if type(entry) is list and entry:
                keys.learn(entry[0])
    for tasks in tasks_of:
        if isinstance(tasks, dict):
            for t in tasks.values():
                if isinstance(t, dict) and "key" in t:
                    keys.learn(t["key"])


def _versions(dump: dict, address: str) -> dict:
    versions = dump.get("versions")
    if not isinstance(versions, dict):
        return {}
    for src in ((versions.get("workers") or {}).get(address) if isinstance(versions.get("workers"), dict) else None,
                versions.get("scheduler")):
        if isinstance(src, dict) and isinstance(src.get("packages"), dict):
            return src["packages"]
    return {}


def _worker_records(
    dump: dict, file: str, address: str, w: dict, keys: Keys, sched_worker: dict | None
) -> tuple[list[dict], WorkerImport]:
    where = f"workers.{address}"
    packages = _versions(dump, address)
    inputs = _state_inputs(w, sched_worker, where)
    stimulus_log = _get(w, "stimulus_log", list, where, [])
    events = len(stimulus_log)
    complete, reason = _completeness(w, events, inputs["log_length"])
    # sizes the dump knows: the worker's tasks, then the scheduler's
    sizes: dict[Any, int] = {}
    for tasks in (w.get("tasks"), dump["scheduler"].get("tasks")):
        if isinstance(tasks, dict):
            for t in tasks.values():
                if isinstance(t, dict) and type(t.get("nbytes")) is int and t["nbytes"] >= 0 and "key" in t:
                    try:
                        sizes.setdefault(_value_key(t["key"]), t["nbytes"])
                    except CodecError:
                        pass
    conv = _EventConverter(keys, sizes, inputs["default_data_size"])
    repaired_before = keys.repaired
    converted = [conv.convert(ev, f"{where}.stimulus_log[{i}]") for i, ev in enumerate(stimulus_log)]
    pid = sched_worker.get("pid") if sched_worker is not None else None
    header = {
        "kind": "header", "format": FORMAT, "version": VERSION, "worker": address,
        "dask": packages.get("dask") if type(packages.get("dask")) is str else "unknown",
        "distributed": packages.get("distributed"),
        "python": _python_version(packages.get("python")),
        "pid": pid if type(pid) is int and pid >= 0 else 0,
        "started": converted[0][1] if converted else 0.0,
        # the dumped worker hashed tasks by identity: no replay can promise its order
        "deterministic": False,
        "hash_seed": None,
        "from_empty": complete,
        # unknown for a partial history: what the first step found is not in the dump
        "initial_tasks": 0,
        "state": inputs,
        "history": "complete" if complete else "partial",
        "history_reason": reason,
    }
    if type(header["distributed"]) is not str:
        raise _Refused(f"versions: no distributed version for worker {address}")
    records: list[dict] = [header]
    for seq, (ev, handled) in enumerate(converted, 1):
        records.append({"kind": "step", "worker": address, "seq": seq, "handled": handled, "event": ev})
    # events of one handle_stimulus call share its time: one batch, whose last
    # step ends the call (instructions null: the dump has none)
    i = 1
    while i < len(records):
        j = i
        while j + 1 < len(records) and records[j + 1]["handled"] == records[i]["handled"]:
            j += 1
        records[j]["instructions"] = None
        if j > i:
            records[j]["batch"] = j - i + 1
        i = j + 1
    final = _final_records(keys, address, events, w, where, sched_worker)
    header["imported"] = {
        "source": SOURCE, "file": file, "events": events, "log_length": inputs["log_length"],
        "instructions": False, "keys_repaired": keys.repaired - repaired_before,
        "sizes_guessed": conv.guessed,
    }
    last = converted[-1][1] if converted else header["started"]
    end = {"kind": "end", "worker": address, "seq": events, "time": last,
           "reason": "imported from a cluster dump; the final records hold the state when dumped"}
    records += final
    records.append(end)
    report = WorkerImport(
        address, events, header["history"], reason, sum(len(r["tasks"]) for r in final),
        header["imported"]["keys_repaired"], conv.guessed,
    )
    return records, report


# --- the import -------------------------------------------------------------------


def import_dump(dump_path: str, out_path: str, *, max_bytes: int = MAX_BYTES) -> ImportReport:
    """Convert a ``Client.dump_cluster_state`` artefact into a dask-replay log.

    Writes ``out_path`` (``.gz``: compressed) whole or not at all. Per worker:
    a header (construction inputs from the dump's config, ``history``
    complete or partial with the reason), one step per ``stimulus_log``
    event (instructions null), its ``final`` records and an ``end``; then the
    scheduler's records. Raises :class:`~replay.errors.BadInput` naming the
    dump for anything that is not a well-formed dump.
    """
    from schemas.records import RECORD

    dump, fmt = load_dump(dump_path, max_bytes=max_bytes)
    keys = Keys()
    _learn_keys(keys, dump)
    report = ImportReport(dump_path, out_path, fmt)
    sched_workers = dump["scheduler"].get("workers")
    if not isinstance(sched_workers, dict):
        sched_workers = {}
    records: list[dict] = []
    file = os.path.basename(dump_path)
    try:
        for address, w in dump["workers"].items():
            if type(address) is not str:
                raise _Refused(f"workers: {_short(address)} is not an address")
            if type(w) is str:  # dask writes a worker's failure to dump as its repr
                report.skipped[address] = w[:300]
                continue
            if not isinstance(w, dict):
                raise _Refused(f"workers.{address}: expected a worker mapping, got {_short(w)}")
            sw = sched_workers.get(address)
            recs, wi = _worker_records(dump, file, address, w, keys, sw if isinstance(sw, dict) else None)
            records += recs
            report.workers.append(wi)
        sched = _scheduler_records(keys, dump["scheduler"])
        records += sched
        report.scheduler_tasks = sum(len(r["tasks"]) for r in sched)
    except _Refused as e:
        raise BadInput(str(e), dump_path) from None
    except CodecError as e:
        raise BadInput(str(e), dump_path) from None
    if not report.workers:
        raise BadInput("no worker state in the dump", dump_path)
    if keys.inferred:
        report.warnings.append(
            f"{keys.inferred} key(s) read from their text alone (no task of the dump names them)"
        )
    guessed = sum(w.sizes_guessed for w in report.workers)
    if guessed:
        report.warnings.append(f"{guessed} data size(s) unknown to the dump, set to the default data size")
    for rec in records:
        _validated(dump_path, rec, RECORD)
    report.records = _write(out_path, records)
    return report


def _validated(dump_path: str, rec: dict, adapter: Any) -> None:
    # the schema the reader checks: a dump the importer accepts is a log it reads
    from replay.log import pydantic_error
    from schemas.records import Header

    try:
        if rec["kind"] == "header":
            Header.model_validate(rec)
        else:
            adapter.validate_python(rec)
    except ValidationError as e:
        where = rec.get("worker") or rec["kind"]
        raise BadInput(f"{where}: {pydantic_error(e)}", dump_path) from None
    except RecursionError:
        raise BadInput("nested too deeply", dump_path) from None


def _write(out_path: str, records: list[dict]) -> int:
    compress = out_path.endswith(".gz")
    folder = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".import-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise BadInput(f"cannot write: {e.strerror or e}", out_path) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            out: Any = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
            for rec in records:
                line = encode_line(rec)
                if len(line) > MAX_LINE:
                    raise BadInput(
                        f"a {rec['kind']} record of {rec.get('worker', 'the scheduler')} would be a "
                        f"line longer than the reader's limit ({MAX_LINE} bytes)", out_path)
                out.write(line)
            if compress:
                out.close()
        os.replace(tmp, out_path)
    except OSError as e:
        raise BadInput(f"cannot write: {e.strerror or e}", out_path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(records)


# --- reading what an import wrote ---------------------------------------------------


@dataclass
class FinalWorkerState:
    """A worker's final state as an imported log holds it (keys decoded)."""

    worker: str
    #: the state after this step
    seq: int
    status: str | None
    running: bool | None
    #: key -> the task's fields (``key`` decoded, others as stored)
    tasks: dict[Any, dict]
    #: the worker-level fields of the record, keys decoded
    fields: dict[str, Any]


def _decode_keys(v: list) -> list:
    return [decode_key(k) for k in v]


def final_states(path: Any) -> dict[str, FinalWorkerState]:
    """Each worker's ``final`` records, merged: the state when the dump was
    taken, without replay. Empty for a recorded (not imported) log."""
    out: dict[str, FinalWorkerState] = {}
    for _, rec in _side_records(path, "final"):
        address = rec["worker"]
        fw = out.get(address)
        if fw is None:
            fields = {}
            for f in ("data", "ready", "constrained", "executing", "long_running", "in_flight_tasks",
                      "missing_dep_flight"):
                fields[f] = _decode_keys(rec.get(f, []))
            for f in ("data_needed", "in_flight_workers", "has_what"):
                fields[f] = {a: _decode_keys(ks) for a, ks in rec.get(f, [])}
            fields["busy_workers"] = list(rec.get("busy_workers", []))
            fields["transition_counter"] = rec.get("transition_counter")
            fields["dumped"] = rec.get("dumped")
            fw = out[address] = FinalWorkerState(
                address, rec["seq"], rec.get("status"), rec.get("running"), {}, fields
            )
        for t in rec.get("tasks", []):
            task = dict(t)
            task["key"] = decode_key(t["key"])
            for f in ("dependencies", "dependents", "waiting_for_data"):
                if f in task:
                    task[f] = _decode_keys(task[f])
            fw.tasks[task["key"]] = task
    return out


@dataclass
class SchedulerView:
    """The scheduler's part of a dump as an imported log holds it."""

    address: str | None
    workers: list[dict]
    #: key -> {"state", "processing_on", "who_has", "nbytes"}
    tasks: dict[Any, dict]


def scheduler_state(path: Any) -> SchedulerView | None:
    """The ``scheduler`` records of an imported log, merged; None if it has none."""
    view: SchedulerView | None = None
    for _, rec in _side_records(path, "scheduler"):
        if view is None:
            view = SchedulerView(rec.get("address"), list(rec.get("workers", [])), {})
        for t in rec.get("tasks", []):
            task = dict(t)
            task["key"] = decode_key(t["key"])
            view.tasks[task["key"]] = task
    return view


def _side_records(path: Any, kind: str) -> Iterator[tuple[int, dict]]:
    """``kind`` records of a log (a file, a directory, several files)."""
    from replay.log import validate_record

    for file, lineno, rec in records_of(path):
        if rec.get("kind") == kind:
            validate_record(file, lineno, rec)
            yield lineno, rec


# --- comparing a replay with the dump ---------------------------------------------------


@dataclass
class FinalComparison:
    """A replayed worker's final task states against the dump's."""

    worker: str
    #: False when the history is partial: nothing was replayed
    compared: bool
    reason: str
    tasks: int = 0
    #: (key, what, the dump's value, the replay's value)
    differences: list[tuple[Any, str, Any, Any]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.compared and not self.differences


def compare_final_state(log: Any) -> list[FinalComparison]:
    """Replay every worker of an imported log whose history is complete, with
    the project's engine from the empty state, and compare each task's state
    (and size, once in memory) with the dump's final state.

    ``log`` is a path or what :func:`replay.open` returned. A worker with a
    partial history is not replayed: its comparison says why.
    """
    import replay

    history = replay.open(log) if isinstance(log, (str, os.PathLike)) else log
    finals = final_states(history.log.source)
    return [compare_worker(w, finals.get(w.address)) for w in history.workers]


def compare_worker(w: Any, final: FinalWorkerState | None = None) -> FinalComparison:
    """:func:`compare_final_state` of one worker (a ``WorkerHistory``);
    ``final`` is its final state, read from the log when not given."""
    header = w.header
    if header.get("history", "complete") != "complete":
        return FinalComparison(w.address, False, f"history partial: {header.get('history_reason')}")
    if final is None:
        final = final_states(w.log.source).get(w.address)
    if final is None:
        return FinalComparison(w.address, False, "the log holds no final state to compare with")
    ws = w.state_at(final.seq)
    diffs: list[tuple[Any, str, Any, Any]] = []
    for key in sorted(final.tasks.keys() | ws.tasks.keys(), key=repr):
        dumped = final.tasks.get(key)
        ts = ws.tasks.get(key)
        if dumped is None or ts is None:
            diffs.append((key, "present", dumped is not None, ts is not None))
            continue
        if dumped["state"] != ts.state:
            diffs.append((key, "state", dumped["state"], ts.state))
        elif ts.state == "memory" and dumped.get("nbytes") is not None and dumped["nbytes"] != ts.nbytes:
            diffs.append((key, "nbytes", dumped["nbytes"], ts.nbytes))
    return FinalComparison(w.address, True, "replayed from the empty state", len(final.tasks), diffs)


__all__ = [
    "ImportReport", "WorkerImport", "import_dump", "load_dump", "final_states", "scheduler_state",
    "compare_final_state", "FinalComparison", "FinalWorkerState", "SchedulerView",
]
