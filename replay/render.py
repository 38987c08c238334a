"""Rich renderables for the views; the CLI prints them, nothing here prints.

Every string that comes from a log (keys, addresses, stimulus ids, exception
texts) goes through :func:`safe`, so a hostile log cannot smuggle rich markup
or terminal escape sequences onto the screen.
"""
from __future__ import annotations

import re
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: Any, limit: int = 200) -> Text:
    """Plain text, never markup; control characters shown as escapes."""
    s = value if isinstance(value, str) else repr(value)
    s = _CONTROL.sub(lambda m: repr(m.group())[1:-1], s)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return Text(s)


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
