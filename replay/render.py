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


# --- replay views (replay.views, replay.diagnosis) ---------------------------


def key_text(encoded: Any) -> Text:
    """An encoded key as the user would type it: ``x`` or ``('x', 0)``."""
    from schemas.codec import decode_key

    try:
        key = decode_key(encoded)
    except Exception:
        key = encoded
    return safe(key)


def _keys_line(name: str, keys: list) -> Text:
    t = Text.assemble((f"{name} ({len(keys)}): ", "bold"))
    for i, k in enumerate(keys[:20]):
        if i:
            t.append(", ")
        t.append_text(key_text(k))
    if len(keys) > 20:
        t.append(f", … {len(keys) - 20} more")
    return t


def _resources_text(res: dict) -> str:
    # resource names come from the log
    return safe(", ".join(f"{k}={v}" for k, v in res.items()) or "none").plain


def state_view(view: dict) -> Group:
    head = Text.assemble(
        ("worker ", "bold"), safe(view["worker"]), f"  step {view['step']}  ",
        ("stimulus ", "bold"), safe(view["stimulus_id"] or "(empty state)"),
    )
    res = view["resources"]
    facts = Text(
        f"{view['status']}, {view['nthreads']} threads, {view['nbytes']} bytes in memory, "
        f"resources available {_resources_text(res['available'])} of {_resources_text(res['total'])}"
    )
    counts = Text("tasks: " + (", ".join(f"{s} {n}" for s, n in view["task_states"].items()) or "none"))
    t = Table(show_edge=False, box=None, pad_edge=False)
    t.add_column("key")
    t.add_column("state")
    for task in view["tasks"]:
        state = task["state"]
        if "previous" in task:
            state += f" (previous {task['previous']}, next {task['next']})"
        t.add_row(key_text(task["key"]), safe(state))
    parts: list[Any] = [head, facts, counts, t]
    for name in ("ready", "constrained", "executing", "long_running", "missing"):
        if view[name]:
            parts.append(_keys_line(name, view[name]))
    for name in ("data_needed", "in_flight_workers"):
        for peer, keys in view[name].items():
            parts.append(_keys_line(f"{name} {safe(peer).plain}", keys))
    if view["busy_workers"]:
        parts.append(Text.assemble(("busy workers: ", "bold"), safe(", ".join(view["busy_workers"]))))
    return Group(*parts)


def diff_view(view: dict) -> Group:
    a, b = view["from"], view["to"]
    parts: list[Any] = [
        Text.assemble(
            ("worker ", "bold"), safe(view["worker"]),
            f"  step {a['step']} → {b['step']}  ", safe(b["stimulus_id"]),
        )
    ]
    tasks = view["tasks"]
    for t in tasks["added"]:
        parts.append(Text.assemble(("+ ", "green"), key_text(t["key"]), " ", safe(t["state"])))
    for t in tasks["removed"]:
        parts.append(Text.assemble(("- ", "red"), key_text(t["key"]), " ", safe(t["state"])))
    for t in tasks["changed"]:
        line = Text.assemble(("~ ", "yellow"), key_text(t["key"]), " ", safe(t["from"]), " → ", safe(t["to"]))
        for f in ("previous", "next"):
            if f in t:
                line.append_text(Text.assemble(f" ({f} ", safe(t[f][0]), " → ", safe(t[f][1]), ")"))
        parts.append(line)
    for name, d in view["collections"].items():
        if "added" in d or "removed" in d:
            d = {"": d}
        for peer, ch in d.items():
            label = f"{name} {safe(peer).plain}".rstrip()
            if ch.get("added"):
                parts.append(_keys_line(f"{label} +", ch["added"]))
            if ch.get("removed"):
                parts.append(_keys_line(f"{label} -", ch["removed"]))
    for part, ch in view["resources"].items():
        for r, (x, y) in ch.items():
            parts.append(Text.assemble(f"resources {part} ", safe(r), f": {x} → {y}"))
    for f in ("running", "nbytes"):
        if f in view:
            parts.append(Text(f"{f}: {view[f][0]} → {view[f][1]}"))
    if len(parts) == 1:
        parts.append(Text("no change"))
    return Group(*parts)


def _what(entry: dict) -> Text:
    kind = entry["kind"]
    if kind == "event":
        ev = entry["event"]
        return Text.assemble(("event ", "cyan"), safe(ev["cls"]), " ", safe(_brief(ev)))
    if kind == "transition":
        return Text.assemble(
            ("transition ", "magenta"), key_text(entry["key"]), " ", safe(entry["start"]),
            " → ", safe(entry["finish"]),
            *((" (now ", safe(entry["final"]), ")") if entry["final"] != entry["finish"] else ()),
        )
    if kind == "instruction":
        inst = entry["instruction"]
        return Text.assemble(("instruction ", "green"), safe(inst["cls"]), " ", safe(_brief(inst)))
    return Text.assemble(("log ", "dim"), safe(entry["entry"][:-2]))


def _brief(d: dict) -> str:
    skip = {"cls", "stimulus_id", "run_spec", "exception", "traceback", "traceback_text", "annotations", "span_id"}
    return " ".join(f"{k}={v}" for k, v in d.items() if k not in skip and v not in (None, [], {}))


def key_story(key: Any, entries: list) -> Table:
    t = Table(title=Text.assemble("story of ", key_text(key)), title_justify="left")
    t.add_column("step", justify="right")
    t.add_column("stimulus")
    t.add_column("what")
    for e in entries:
        t.add_row(str(e["step"]), safe(e["stimulus_id"], 60), _what(e))
    return t


def stimulus_story(stimulus_id: str, steps: list) -> Group:
    parts: list[Any] = [Text.assemble(("stimulus ", "bold"), safe(stimulus_id), f": {len(steps)} step(s)")]
    for s in steps:
        parts.append(Text.assemble(f"step {s['step']}: ", _what({"kind": "event", "event": s["event"]})))
        for e in s["log"]:
            parts.append(Text.assemble("  ", _what(e)))
        for i in s["instructions"]:
            parts.append(Text.assemble("  ", _what({"kind": "instruction", "instruction": i})))
        if s.get("error"):
            parts.append(Text.assemble("  raised ", safe(s["error"]), style="red"))
    return Group(*parts)


def why_table(entries: list, title: Text | str = "") -> Table | Text:
    if not entries:
        return Text.assemble(title, ": " if title else "", ("no task is stuck", "green"))
    t = Table(title=title or None, title_justify="left")
    t.add_column("key")
    t.add_column("state")
    t.add_column("since step", justify="right")
    t.add_column("reason")
    for e in entries:
        t.add_row(key_text(e["key"]), safe(e["state"]), str(e["since_step"]), safe(e["reason"], 400))
    return t


def load_summary(data: dict) -> Group:
    parts: list[Any] = []
    for w in data["workers"]:
        parts.append(
            Text.assemble(
                ("worker ", "bold"), safe(w["address"]),
                f": {w['events']} events over {w['duration']:.3f} s",
                "" if w["deterministic"] else ", NOT deterministic",
            )
        )
        parts.append(Text("  events: " + ", ".join(f"{safe(c).plain} {n}" for c, n in w["event_counts"].items())))
        parts.append(Text("  final tasks: " + (", ".join(f"{s} {n}" for s, n in w["task_states"].items()) or "none")))
        parts.append(why_table(w["stuck"], Text.assemble("  stuck at step ", str(w["events"]))))
    return Group(*parts)


def verify_result(data: dict) -> Group:
    parts: list[Any] = []
    for w in data["workers"]:
        d = w.get("divergence")
        if d is None:
            parts.append(Text.assemble(("faithful ", "green"), safe(w["address"]), f": {w['steps']} steps replayed"))
            continue
        parts.append(
            Text.assemble(
                (f"{d['kind']} divergence ", "bold red"), safe(w["address"]),
                f" at step {d['step']}, stimulus ", safe(d["stimulus_id"]),
            )
        )
        if d["kind"] == "instructions":
            for x in d["diff"]["missing"]:
                parts.append(Text.assemble(("  - recorded ", "red"), safe(x, 400)))
            for x in d["diff"]["unexpected"]:
                parts.append(Text.assemble(("  + replayed ", "green"), safe(x, 400)))
            if d["diff"]["reordered"]:
                parts.append(Text("  same instructions, another order"))
        else:
            parts.append(Text.assemble("  expected ", safe(d["expected"], 400)))
            parts.append(Text.assemble("  actual   ", safe(d["actual"], 400)))
        if d.get("key") is not None:
            parts.append(key_story(d["key"], d["story"]))
    return Group(*parts)
