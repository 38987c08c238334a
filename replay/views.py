"""Views of a replayed worker as plain data: state, diff, story.

Every view is a JSON-ready dict; keys are encoded with
:func:`schemas.codec.encode_key` (tuple keys become arrays). Nothing here
prints or opens files: :func:`walk` replays a worker's recorded calls, with
their step records, through a tapped :class:`~replay.engine.Replayer`, and the
renderers in :mod:`replay.render` turn the dicts into text.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from distributed import worker_state_machine as wsm
from distributed._stories import worker_story

from replay.engine import Applied, Replayer
from replay.reader import Progress
from replay.requests import OpenRequests
from schemas.codec import CodecError, decode_collection, decode_key, encode_float, encode_key
from schemas.convert import encode_instruction

#: states a task can stay in forever without anything being wrong
FINAL_STATES = frozenset({"memory", "error", "released", "forgotten"})


# --- keys -------------------------------------------------------------------


def ek(key: Any) -> Any:
    return encode_key(key)


def _sort_key(key: Any) -> tuple:
    # keys of one worker mix str, int and tuples: order by type name, then text
    return (type(key).__name__, str(key))


def _keys(tasks: Iterable[wsm.TaskState]) -> list:
    return [ek(k) for k in sorted((ts.key for ts in tasks), key=_sort_key)]


def loggable(x: Any) -> Any:
    """A ``ws.log`` entry item as JSON: tuple keys as arrays, containers as arrays."""
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return encode_float(x)
    if isinstance(x, wsm.TaskState):
        return ek(x.key)
    if isinstance(x, tuple):
        try:
            return encode_key(x)
        except CodecError:
            return [loggable(v) for v in x]
    if isinstance(x, (list, set, frozenset)):
        items = [loggable(v) for v in x]
        return items if isinstance(x, list) else sorted(items, key=repr)
    if isinstance(x, dict):
        return [[loggable(k), loggable(v)] for k, v in x.items()]
    return repr(x)


def log_entry(entry: tuple) -> dict:
    """One ``ws.log`` entry; transitions get named fields."""
    if is_transition(entry):
        key, start, finish, final, recs, sid, t = entry
        return {
            "kind": "transition",
            "key": ek(key),
            "start": start,
            "finish": finish,
            "final": final,
            "recommendations": loggable(recs),
            "stimulus_id": sid,
            "time": encode_float(t),
        }
    return {"kind": "log", "entry": [loggable(v) for v in entry]}


def is_transition(entry: tuple) -> bool:
    # (key, start, finish, final state, recommendations, stimulus_id, time)
    return len(entry) == 7 and isinstance(entry[4], dict)


# --- replaying with the worker's log tapped --------------------------------


def walk(
    history: Any,
    stop: int | None = None,
    *,
    progress: Progress | None = None,
) -> Iterator[tuple[Applied, Replayer]]:
    """Replay a worker from its empty state to step ``stop``, one call at a time.

    Yields what each call did (with its step records and its uncapped
    ``ws.log`` entries) and the replayer after it; ``applied.log`` is only
    valid until the next item is requested.
    """
    r = history.replayer(tap_log=True)
    if stop is None:
        stop = history.events
    if stop <= 0:
        return
    for applied in r.feed(history.calls(1, stop, records=True), progress):
        yield applied, r


# --- state --------------------------------------------------------------------


def task_entry(ts: wsm.TaskState) -> dict:
    d: dict[str, Any] = {"key": ek(ts.key), "state": ts.state}
    if ts.state in ("cancelled", "resumed"):
        d["previous"] = ts.previous
        d["next"] = ts.next
    return d


def _resources(d: dict) -> dict:
    return {k: encode_float(float(v)) for k, v in sorted(d.items())}


def state_view(ws: wsm.WorkerState, *, step: int, stimulus_id: str) -> dict:
    """Everything a debugger asks of a worker at one step."""
    by_state: dict[str, int] = {}
    for ts in ws.tasks.values():
        by_state[ts.state] = by_state.get(ts.state, 0) + 1
    return {
        "worker": ws.address,
        "step": step,
        "stimulus_id": stimulus_id,
        "status": "running" if ws.running else "paused",
        "running": ws.running,
        "nthreads": ws.nthreads,
        "nbytes": ws.nbytes,
        "task_states": dict(sorted(by_state.items())),
        "tasks": [task_entry(ts) for ts in ws.tasks.values()],
        "ready": [ek(ts.key) for ts in ws.ready.sorted()],
        "constrained": [ek(ts.key) for ts in ws.constrained.sorted()],
        # validate=True can leave empty entries behind: not a peer we need
        "data_needed": {
            w: [ek(ts.key) for ts in tss.sorted()]
            for w, tss in sorted(ws.data_needed.items())
            if tss
        },
        "in_flight_workers": {
            w: [ek(k) for k in sorted(keys, key=_sort_key)]
            for w, keys in sorted(ws.in_flight_workers.items())
        },
        "busy_workers": sorted(ws.busy_workers),
        "executing": _keys(ws.executing),
        "long_running": _keys(ws.long_running),
        "missing": _keys(ws.missing_dep_flight),
        "resources": {
            "total": _resources(ws.total_resources),
            "available": _resources(ws.available_resources),
        },
    }


def state_of(replayer: Replayer) -> dict:
    """:func:`state_view` of where a replay stands (usable through a Seeker)."""
    return state_view(replayer.ws, step=replayer.seq, stimulus_id=replayer.stimulus_id)


# --- diff ---------------------------------------------------------------------

_KEY_LISTS = ("ready", "constrained", "executing", "long_running", "missing")
_PEER_MAPS = ("data_needed", "in_flight_workers")


def _added_removed(a: list, b: list) -> dict:
    sa = {_hashable(x) for x in a}
    sb = {_hashable(x) for x in b}
    out = {}
    added = [x for x in b if _hashable(x) not in sa]
    removed = [x for x in a if _hashable(x) not in sb]
    if added:
        out["added"] = added
    if removed:
        out["removed"] = removed
    return out


def _hashable(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_hashable(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


def diff_view(a: dict, b: dict) -> dict:
    """What changed from state view ``a`` to state view ``b``."""
    ta = {_hashable(t["key"]): t for t in a["tasks"]}
    tb = {_hashable(t["key"]): t for t in b["tasks"]}
    changed = []
    for k, t in tb.items():
        old = ta.get(k)
        if old is not None and old != t:
            c = {"key": t["key"], "from": old["state"], "to": t["state"]}
            for f in ("previous", "next"):
                if f in old or f in t:
                    c[f] = [old.get(f), t.get(f)]
            changed.append(c)
    collections: dict[str, Any] = {}
    for name in _KEY_LISTS + ("busy_workers",):
        d = _added_removed(a[name], b[name])
        if d:
            collections[name] = d
    for name in _PEER_MAPS:
        peers = {}
        for w in sorted(set(a[name]) | set(b[name])):
            d = _added_removed(a[name].get(w, []), b[name].get(w, []))
            if d:
                peers[w] = d
        if peers:
            collections[name] = peers
    resources = {}
    for part in ("total", "available"):
        ra, rb = a["resources"][part], b["resources"][part]
        ch = {r: [ra.get(r), rb.get(r)] for r in sorted(set(ra) | set(rb)) if ra.get(r) != rb.get(r)}
        if ch:
            resources[part] = ch
    out: dict[str, Any] = {
        "worker": b["worker"],
        "from": {"step": a["step"], "stimulus_id": a["stimulus_id"]},
        "to": {"step": b["step"], "stimulus_id": b["stimulus_id"]},
        "tasks": {
            "added": [t for k, t in tb.items() if k not in ta],
            "removed": [t for k, t in ta.items() if k not in tb],
            "changed": changed,
        },
        "collections": collections,
        "resources": resources,
    }
    for f in ("running", "nbytes"):
        if a[f] != b[f]:
            out[f] = [a[f], b[f]]
    return out


# --- story --------------------------------------------------------------------


def event_keys(ev: dict) -> set:
    """Every key an encoded event names (decoded, hashable)."""
    keys: set = set()
    if "key" in ev:
        keys.add(decode_key(ev["key"]))
    for f in ("who_has", "nbytes", "data"):
        pairs = ev.get(f)
        if isinstance(pairs, list):
            keys.update(decode_key(p[0]) for p in pairs)
    if "keys" in ev:
        keys.update(decode_collection(ev["keys"]))
    return keys


def instruction_keys(inst: wsm.Instruction) -> set:
    if isinstance(inst, wsm.GatherDep):
        return set(inst.to_gather)
    if isinstance(inst, (wsm.AddKeysMsg, wsm.RequestRefreshWhoHasMsg)):
        return set(inst.keys)
    key = getattr(inst, "key", None)
    return set() if key is None else {key}


def key_story(walked: Iterable[tuple[Applied, Any]], key: Any, *more: Any) -> list[dict]:
    """Every event, transition, log entry and instruction naming ``key`` (or any
    of ``more``), uncapped."""
    story: list[dict] = []
    # a GatherDep*Event names only the peer: it is about the keys its gather asked for
    gathers: OpenRequests[set] = OpenRequests()
    target = {key, *more}
    for applied, _ in walked:
        call = applied.call
        for s, event in zip(call.records, call.events):
            ev = s["event"]
            names = event_keys(ev) | (gathers.answered(event) or set())
            if not target.isdisjoint(names):
                story.append({"step": s["seq"], "stimulus_id": ev["stimulus_id"], "kind": "event", "event": ev})
        for entry in worker_story(target, applied.log):
            d = log_entry(entry)
            story.append({"step": call.step_of(entry[-2]) if isinstance(entry[-2], str) else call.last,
                          "stimulus_id": entry[-2] if isinstance(entry[-2], str) else "", **d})
        for inst in applied.instructions:
            if not target.isdisjoint(instruction_keys(inst)):
                story.append({"step": call.step_of(inst.stimulus_id), "stimulus_id": inst.stimulus_id,
                              "kind": "instruction", "instruction": encode_instruction(inst)})
        for inst in applied.instructions:
            gathers.issued(inst, set(inst.to_gather) if isinstance(inst, wsm.GatherDep) else set())
    return story


def stimulus_story(walked: Iterable[tuple[Applied, Any]], stimulus_id: str) -> list[dict]:
    """Every step carrying ``stimulus_id``, with its transitions and instructions."""
    out: list[dict] = []
    for applied, _ in walked:
        seqs = [s for s in applied.call.records if s["event"]["stimulus_id"] == stimulus_id]
        if not seqs:
            continue
        entries = worker_story({stimulus_id}, applied.log)
        insts = [i for i in applied.instructions if i.stimulus_id == stimulus_id]
        error = None if applied.exception is None else repr(applied.exception)
        for n, s in enumerate(seqs):
            last = n == len(seqs) - 1
            out.append(
                {
                    "step": s["seq"],
                    "stimulus_id": stimulus_id,
                    "handled": s["handled"],
                    "event": s["event"],
                    # a batch's transitions and instructions belong to the call
                    "log": [log_entry(e) for e in entries] if last else [],
                    "instructions": [encode_instruction(i) for i in insts] if last else [],
                    "error": error if last else None,
                }
            )
    return out


# --- verify -------------------------------------------------------------------


def instructions_diff(expected: list, actual: list) -> dict:
    """Recorded vs replayed instructions of one step, as added/missing entries."""
    e = [_hashable(x) for x in expected]
    a = [_hashable(x) for x in actual]
    return {
        "missing": [x for x, h in zip(expected, e) if h not in a],
        "unexpected": [x for x, h in zip(actual, a) if h not in e],
        # same instructions in another order
        "reordered": e != a and Counter(e) == Counter(a),
    }


def divergence_view(history: Any, d: Any, replayer: Replayer | None = None) -> dict:
    """A :class:`~replay.engine.Divergence` as data, with the uncapped story of
    the broken key and its dependents (found in ``replayer``'s state) up to
    the step where replay departed."""
    out: dict[str, Any] = {
        "step": d.seq,
        "stimulus_id": d.stimulus_id,
        "kind": d.kind,
        "expected": d.expected,
        "actual": d.actual,
        "key": None if d.key is None else ek(d.key),
        "story": [],
    }
    if d.kind == "instructions":
        out["diff"] = instructions_diff(d.expected, d.actual)
    if d.key is not None:
        # a step that raised in replay only cannot be replayed again: stop before it
        stop = d.seq - 1 if d.kind == "error" else d.seq
        ts = replayer.ws.tasks.get(d.key) if replayer is not None else None
        dependents = [dep.key for dep in ts.dependents] if ts is not None else []
        out["story"] = key_story(walk(history, stop), d.key, *dependents)
    return out
