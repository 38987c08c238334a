"""Reading a cluster dump: the file parsed as plain, bounded data.

The dump is data: it is parsed with msgpack or YAML's safe loader only,
nothing in it is unpickled or evaluated, and its size, nesting and node count
are bounded before anything else looks at it.
"""
from __future__ import annotations

import gzip
import zlib
from typing import Any

import msgpack
import yaml

from replay.errors import BadInput
from replay.logfile import GZIP_MAGIC

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
