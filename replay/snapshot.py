"""A ``WorkerState`` as data, and a real ``WorkerState`` rebuilt from it.

:func:`take` reads everything the state machine reads, as JSON-ready data
(never pickle); :func:`restore` puts it into a freshly constructed real
``WorkerState`` so that replaying the following events from it does what the
recorded worker did. A bounded recording (:mod:`replay.segments`) starts each
segment with one.

What makes the rebuilt worker behave as the recorded one:

- every ``TaskState`` field the state machine reads, and its tasks in
  ``ws.tasks`` order;
- every worker-level container and counter, the resources, the settings, the
  address, ``rng``'s state and ``task_counter``'s counts;
- order. The state machine acts in the iteration order of its sets
  (``ready``'s ties, ``dependents``, ``who_has``, ``executing`` …). Sets are
  written in their iteration order and rebuilt by adding in that order,
  which under key hashing (:mod:`replay.determinism`) gives back the same
  order unless the recorded set's hash table held deleted entries that
  displaced an item; dicts keep insertion order exactly. ``HeapSet`` heaps
  are written entry by entry, stale entries included (``(priority, counter,
  task)`` with -1 for a task no longer alive), so ``pop`` and ``peek`` take
  the recorded entries in the recorded order.

Tasks are numbered by their place in ``ws.tasks``; a task referred to but
not in ``ws.tasks`` (a broken state) is written after them as an orphan.

Not written: values (``ws.data`` keeps its keys; replay holds no values),
run specs (a stand-in, as for every replayed ``ComputeTaskEvent``), the
exception objects (their ``repr``, as events carry them), ``ts.type`` (as
replay has it: none), ``ws.log`` and ``ws.stimulus_log`` (what happened
before the snapshot is not kept), ``threads`` and ``plugins``.

It runs on the worker's event loop: it imports only the state machine and
the encoding half of :mod:`schemas`.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable
from time import monotonic
from typing import Any

from distributed import worker_state_machine as wsm

from schemas.codec import decode_float, decode_key, decode_value, encode_float, encode_key, encode_value
from schemas.convert import RUN_SPEC, RecordedException, _exc_encode, _priority_decode, _priority_encode

#: the snapshot record's version: a reader refuses another
SNAPSHOT_VERSION = 1

#: ``TaskState`` fields in a task row, after the key; containers of tasks are
#: task numbers, in iteration order
TASK_FIELDS = (
    "state", "previous", "next", "priority", "run_id", "run_spec", "nbytes", "done",
    "suspicious_count", "coming_from", "exception", "traceback", "exception_text",
    "traceback_text", "type", "start_time", "stop_time", "startstops", "metadata",
    "annotations", "span_id", "resource_restrictions", "who_has",
    "dependencies", "dependents", "waiting_for_data", "waiters",
)
#: the task sets of a ``WorkerState``
TASK_SETS = ("waiting", "executing", "long_running", "in_flight_tasks", "missing_dep_flight")
#: plain numbers and flags of a ``WorkerState``
COUNTERS = (
    "fetch_count", "transfer_incoming_bytes", "transfer_incoming_count_total", "generation",
    "executed_count", "nbytes", "transition_counter", "running",
)
#: settings tests and workers assign (floats may be infinite)
SETTINGS = (
    "nthreads", "transfer_incoming_count_limit", "transfer_incoming_bytes_limit",
    "transfer_incoming_bytes_throttle_threshold", "transfer_message_bytes_limit", "validate",
    "transition_counter_max",
)


def _opt_float(x: Any) -> Any:
    return None if x is None else encode_float(float(x))


def _float_back(x: Any) -> Any:
    return None if x is None else decode_float(x)


class _Numbering:
    """Task numbers: ``ws.tasks`` order, then orphans as they are met."""

    __slots__ = ("number", "tasks")

    def __init__(self, tasks: Iterable[wsm.TaskState]):
        self.tasks = list(tasks)
        self.number = {id(ts): i for i, ts in enumerate(self.tasks)}

    def __call__(self, ts: wsm.TaskState) -> int:
        n = self.number.get(id(ts))
        if n is None:
            n = self.number[id(ts)] = len(self.tasks)
            self.tasks.append(ts)
        return n


def _task_row(ts: wsm.TaskState, num: _Numbering) -> list:
    prio = ts.priority
    return [
        encode_key(ts.key), ts.state, ts.previous, ts.next,
        None if prio is None else _priority_encode(prio),
        ts.run_id, ts.run_spec is not None, ts.nbytes, ts.done, ts.suspicious_count,
        ts.coming_from, _exc_encode(ts.exception), ts.traceback is not None,
        ts.exception_text, ts.traceback_text,
        None if ts.type is None else getattr(ts.type, "__qualname__", str(ts.type)),
        _opt_float(ts.start_time), _opt_float(ts.stop_time),
        encode_value(ts.startstops) if ts.startstops else [],
        encode_value(ts.metadata) if ts.metadata else None,
        None if ts.annotations is None else encode_value(ts.annotations),
        ts.span_id,
        {k: encode_float(float(v)) for k, v in ts.resource_restrictions.items()}
        if ts.resource_restrictions is not None else None,
        list(ts.who_has),
        [num(d) for d in ts.dependencies], [num(d) for d in ts.dependents],
        [num(d) for d in ts.waiting_for_data], [num(d) for d in ts.waiters],
    ]


def _heapset(hs: Any, num: _Numbering) -> dict:
    heap = []
    for k, i, ref in hs._heap:
        ts = ref()
        heap.append([_priority_encode(k) if type(k) is tuple else encode_value(k), i,
                     -1 if ts is None else num(ts)])
    return {"items": [num(ts) for ts in hs._data], "heap": heap, "inc": hs._inc,
            "sorted": hs._sorted}


def take(ws: wsm.WorkerState, *, seq: int, handled: float | None) -> dict:
    """The ``snapshot`` of ``ws`` after step ``seq`` (handled at ``handled``)."""
    num = _Numbering(ws.tasks.values())
    out: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "seq": seq,
        "handled": handled,
        "address": getattr(ws, "address", None),
        "settings": {n: _setting(getattr(ws, n)) for n in SETTINGS},
        "total_resources": {k: encode_float(float(v)) for k, v in ws.total_resources.items()},
        "available_resources": {k: encode_float(float(v)) for k, v in ws.available_resources.items()},
        "counters": {n: getattr(ws, n) for n in COUNTERS},
        "sets": {n: [num(ts) for ts in getattr(ws, n)] for n in TASK_SETS},
        "ready": _heapset(ws.ready, num),
        "constrained": _heapset(ws.constrained, num),
        "data_needed": [[w, _heapset(hs, num)] for w, hs in ws.data_needed.items()],
        "has_what": [[w, [encode_key(k) for k in keys]] for w, keys in ws.has_what.items()],
        "in_flight_workers": [[w, [encode_key(k) for k in keys]]
                              for w, keys in ws.in_flight_workers.items()],
        "busy_workers": list(ws.busy_workers),
        "data": [encode_key(k) for k in ws.data],
        "actors": [encode_key(k) for k in ws.actors],
        "rng": _rng_state(ws.rng),
        "task_counter": _task_counter(ws.task_counter, num),
    }
    # rows last: the containers above may have numbered orphans
    rows = []
    i = 0
    while i < len(num.tasks):
        rows.append(_task_row(num.tasks[i], num))
        i += 1
    out["tasks"] = rows[: len(ws.tasks)]
    out["orphans"] = rows[len(ws.tasks):]
    return out


def _setting(v: Any) -> Any:
    if type(v) is float:
        return encode_float(v)
    return v


def _rng_state(rng: Any) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _task_counter(tc: Any, num: _Numbering) -> dict:
    return {
        "current": [[p, s, n] for (p, s), n in tc._current_count.items()],
        "cumulative": [[p, s, encode_float(t)] for (p, s), t in tc._cumulative_elapsed.items()],
        "new": [num(ts) for ts in tc._new_tasks],
    }


# --- rebuilding -------------------------------------------------------


class _Gone:
    """What a stale heap entry points to: nothing alive."""

    __slots__ = ("__weakref__",)


def _dead_ref() -> weakref.ref:
    return weakref.ref(_Gone())


def restore(ws: wsm.WorkerState, snap: dict) -> None:
    """Fill ``ws``, a real ``WorkerState`` freshly built from the recording's
    construction inputs (as :class:`~replay.engine.Replayer` builds it), with
    the state of ``snap``. Under key hashing, as the recording was."""
    rows = snap["tasks"] + snap["orphans"]
    tasks = [wsm.TaskState(decode_key(row[0])) for row in rows]
    for ts, row in zip(tasks, rows):
        _fill_task(ts, row, tasks)
    n = len(snap["tasks"])
    ws.tasks = {ts.key: ts for ts in tasks[:n]}
    address = snap.get("address")
    if address is not None:
        ws.address = address
    for name, v in snap["settings"].items():
        setattr(ws, name, _float_back(v) if isinstance(v, dict) else v)
    for name, v in snap["counters"].items():
        setattr(ws, name, v)
    ws.total_resources = {k: decode_float(v) for k, v in snap["total_resources"].items()}
    ws.available_resources = {k: decode_float(v) for k, v in snap["available_resources"].items()}
    for name, items in snap["sets"].items():
        setattr(ws, name, _ordered_set(tasks[i] for i in items))
    _fill_heapset(ws.ready, snap["ready"], tasks)
    _fill_heapset(ws.constrained, snap["constrained"], tasks)
    ws.data_needed.clear()
    for w, hs in snap["data_needed"]:
        _fill_heapset(ws.data_needed[w], hs, tasks)
    ws.has_what.clear()
    for w, keys in snap["has_what"]:
        ws.has_what[w] = _ordered_set(decode_key(k) for k in keys)
    ws.in_flight_workers = {w: _ordered_set(decode_key(k) for k in keys)
                            for w, keys in snap["in_flight_workers"]}
    ws.busy_workers = _ordered_set(snap["busy_workers"])
    data = ws.data
    data.clear()
    for k in snap["data"]:
        data[decode_key(k)] = None
    ws.actors = {decode_key(k): None for k in snap["actors"]}
    version, internal, gauss = snap["rng"]
    ws.rng.setstate((version, tuple(internal), gauss))
    tc = ws.task_counter
    tc._current_count.clear()
    for p, s, c in snap["task_counter"]["current"]:
        tc._current_count[p, s] = c
    tc._cumulative_elapsed.clear()
    for p, s, t in snap["task_counter"]["cumulative"]:
        tc._cumulative_elapsed[p, s] = decode_float(t)
    tc._new_tasks = _ordered_set(tasks[i] for i in snap["task_counter"]["new"])
    tc._previous_ts = monotonic() if tc._current_count else None


def _ordered_set(items: Iterable) -> set:
    # adding in the recorded iteration order: see the module docstring
    out = set()
    for x in items:
        out.add(x)
    return out


def _fill_task(ts: wsm.TaskState, row: list, tasks: list[wsm.TaskState]) -> None:
    (_, ts.state, ts.previous, ts.next, prio, ts.run_id, has_run_spec, ts.nbytes, ts.done,
     ts.suspicious_count, ts.coming_from, exception, has_traceback, ts.exception_text,
     ts.traceback_text, _type, start, stop, startstops, metadata, annotations, ts.span_id,
     restrictions, who_has, deps, dependents, waiting_for_data, waiters) = row
    ts.priority = None if prio is None else _priority_decode(prio)
    ts.run_spec = RUN_SPEC if has_run_spec else None
    # as replay decodes an event's exception: its repr; the traceback object is not kept
    ts.exception = None if exception is None else wsm.Serialize(RecordedException(exception))
    ts.traceback = None
    ts.start_time = _float_back(start)
    ts.stop_time = _float_back(stop)
    ts.startstops = decode_value(startstops)
    ts.metadata = {} if metadata is None else decode_value(metadata)
    ts.annotations = None if annotations is None else decode_value(annotations)
    ts.resource_restrictions = (None if restrictions is None
                                else {k: decode_float(v) for k, v in restrictions.items()})
    ts.who_has = _ordered_set(who_has)
    ts.dependencies = _ordered_set(tasks[i] for i in deps)
    ts.dependents = _ordered_set(tasks[i] for i in dependents)
    ts.waiting_for_data = _ordered_set(tasks[i] for i in waiting_for_data)
    ts.waiters = _ordered_set(tasks[i] for i in waiters)


def _fill_heapset(hs: Any, snap: dict, tasks: list[wsm.TaskState]) -> None:
    hs._data = _ordered_set(tasks[i] for i in snap["items"])
    gone = _Gone()  # one object, dropped at the end: every stale entry's referent
    heap = []
    for k, i, n in snap["heap"]:
        key = _priority_decode(k) if type(k) is list else decode_value(k)
        heap.append((key, i, weakref.ref(gone if n < 0 else tasks[n])))
    hs._heap = heap
    hs._inc = snap["inc"]
    hs._sorted = snap["sorted"]
    del gone

