"""The pieces views render themselves with; nothing here prints.

Every string that comes from a log (keys, addresses, stimulus ids, exception
texts) goes through :func:`safe` or :func:`value`, so a hostile log cannot
smuggle rich markup or terminal escape sequences onto the screen. Values are
spelled by :mod:`replay.literal`, the one formatter.

Tables have boxes on a terminal only: piped output is plain text whose lines
a box border cannot cut.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Iterable
from typing import Any, Optional

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from replay.literal import LIMIT, key_text, literal

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: event and instruction fields a one-line summary leaves out: bulky or
#: the same for every step
_QUIET_FIELDS = frozenset({
    "stimulus_id", "run_spec", "exception", "traceback", "traceback_text", "annotations",
    "span_id", "handled",
})


def safe(value: Any, limit: int | None = None) -> Text:
    """Plain text, never markup; control characters shown as escapes."""
    s = value if isinstance(value, str) else repr(value)
    s = _CONTROL.sub(lambda m: repr(m.group())[1:-1], s)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return Text(s)


def value(v: Any, limit: int | None = LIMIT) -> Text:
    """A dask value (key, peer list, who_has…) as its Python literal."""
    return safe(key_text(v) if limit is None else literal(v, limit))


def table(console: Console, *columns: str, title: str | Text | None = None) -> Table:
    """A table with a box on a terminal and none elsewhere."""
    framed = console.is_terminal and not console.is_dumb_terminal
    t = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD if framed else None,
        show_edge=False, pad_edge=False, title_style="bold",
    )
    for c in columns:
        t.add_column(c, justify="right" if c in ("step", "since", "time") else "left", overflow="fold")
    return t


def clock(t: Optional[float]) -> str:
    """A recorded time as the wall clock of the worker (UTC)."""
    if t is None:
        return ""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def position(worker: str, step: int, stimulus_id: str, handled: Optional[float]) -> Text:
    """The heading of a view at one step."""
    return Text.assemble(
        ("worker ", "bold"), safe(worker), f"  step {step}  ",
        ("stimulus ", "bold"), safe(stimulus_id or "(empty state)"),
        f"  at {clock(handled)} UTC" if handled is not None else "",
    )


def keys_line(label: str, keys: list, shown: int = 20) -> Text:
    """``label (n): key, key, … m more``."""
    t = Text.assemble((f"{label} ({len(keys)}): ", "bold"))
    for i, k in enumerate(keys[:shown]):
        if i:
            t.append(", ")
        t.append_text(value(k, None))
    if len(keys) > shown:
        t.append(f", … {len(keys) - shown} more", style="dim")
    return t


def fields_text(obj: Any, limit: int = 120) -> str:
    """``field=value …`` of an event or instruction, bulky fields left out."""
    return _spell(((name, getattr(obj, name)) for name in _shown_fields(type(obj))), limit)


def _spell(fields: Iterable[tuple[str, Any]], limit: int) -> str:
    """``name=value …`` of the fields worth showing: not None, not empty, not
    bytes (a pickled type, whose name is in another field)."""
    parts = []
    for name, v in fields:
        if v is None or isinstance(v, bytes) or (isinstance(v, (list, tuple, set, frozenset, dict)) and not v):
            continue
        parts.append(f"{name}={literal(v, limit)}")
    return " ".join(parts)


@functools.lru_cache(maxsize=None)
def _shown_fields(cls: type) -> tuple[str, ...]:
    if not dataclasses.is_dataclass(cls):
        return ()
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _QUIET_FIELDS)


def event_text(obj: Any) -> str:
    """An event or instruction in one line: its class and fields."""
    return f"{type(obj).__name__} {fields_text(obj)}".rstrip()


class _Sized:
    """What ``schemas.convert.SizedValue`` prints as (that module imports
    ``distributed``; an index renders without it)."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int):
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"<SizedValue {self.nbytes} B>"


def _decoders() -> dict[str, Any]:
    from schemas.codec import (decode_collection, decode_float, decode_key, decode_key_map,
                               decode_resources, decode_value, decode_who_has)

    return {
        "plain": lambda x: x,
        "float": decode_float,
        "opt_float": lambda x: None if x is None else decode_float(x),
        "key": decode_key,
        "keys": decode_collection,
        "who_has": decode_who_has,
        "nbytes_map": decode_key_map,
        "sizes": lambda o: decode_key_map(o, _Sized),
        "priority": lambda x: tuple(decode_value(v) for v in x),
        "resources": lambda x: None if x is None else decode_resources(x),
        "value": decode_value,
        "none": lambda x: None,
    }


#: how each field codec of :mod:`schemas.convert` decodes, by the name an
#: index gives it (the field values the state machine was fed or returned)
DECODERS: dict[str, Any] = _decoders()


def encoded_text(d: dict, fields: list) -> str:
    """:func:`event_text` of an event or instruction from its encoding (the
    log's, :func:`schemas.convert.encode_event`), given its class's shown
    fields as ``[[name, decoder]…]`` in the class's order (an index writes
    them down with ``distributed`` at hand; this needs neither)."""
    text = _spell(((name, DECODERS[codec](d[name])) for name, codec in fields), 120)
    return f"{d['cls']} {text}".rstrip()


def step_line(brief: Any) -> Text:
    """A :class:`~replay.views.StepBrief` in one line."""
    fields = brief.text[len(brief.cls):]
    return Text.assemble(f"  {brief.step:>6}  ", (brief.cls, "cyan"), safe(fields), "  ",
                         (safe(brief.stimulus_id).plain, "dim"))


def check_summary(data: dict) -> Group:
    parts: list[Any] = []
    for w in data["workers"]:
        t = Table(title=Text.assemble("worker ", safe(w["address"])), title_justify="left")
        t.add_column("event class")
        t.add_column("count", justify="right")
        for cls, n in w["event_counts"].items():
            t.add_row(safe(cls), str(n))
        t.add_row(Text("total", style="bold"), Text(str(w["events"]), style="bold"))
        parts.append(t)
        parts.append(
            Text.assemble(
                "  dask ", safe(w["dask"]), ", distributed ", safe(w["distributed"]),
                f", {w['duration']:.3f} s of stimuli",
                ", deterministic" if w["deterministic"] else ", NOT deterministic",
                "" if w["ended"] else ", no end record (worker stopped without teardown)",
            )
        )
    parts.append(Text(f"{data['path']}: valid, {data['lines']} lines, {len(data['workers'])} worker(s)", style="green"))
    return Group(*parts)
