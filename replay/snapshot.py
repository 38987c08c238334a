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

It runs in the worker: :func:`capture` on its event loop, the encoding on a
thread of the segment writer (see "taking" below). It imports only the state
machine, orjson and the encoding half of :mod:`schemas`.
"""
from __future__ import annotations

import gc
import heapq
import weakref
from collections.abc import Iterable, Iterator
from itertools import chain, compress, cycle, islice
from operator import attrgetter, itemgetter
from time import monotonic
from typing import Any

import orjson
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
    "dependencies", "dependents", "waiting_for_data", "waiters", "tables",
)
#: the task sets whose table sizes a row's ``tables`` gives (null: all 8)
ROW_SETS = ("who_has", "dependencies", "dependents", "waiting_for_data", "waiters")
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

    def __init__(self, tasks: list[wsm.TaskState]):
        self.tasks = list(tasks)
        self.number = {id(ts): i for i, ts in enumerate(self.tasks)}

    def __call__(self, ts: wsm.TaskState) -> int:
        n = self.number.get(id(ts))
        if n is None:
            n = self.number[id(ts)] = len(self.tasks)
            self.tasks.append(ts)
        return n


# --- taking: a capture on the event loop, encoded elsewhere ---------------
#
# A snapshot must be of one instant: the state machine may not run while it
# is read. Reading is cheap when it is done by C loops (``map`` with an
# ``attrgetter``, ``tuple`` of a set keeps its iteration order,
# ``set.__sizeof__`` its table) and copies only what the state machine
# mutates in place; turning that into JSON-ready rows (numbering tasks,
# encoding keys, floats, priorities) is what costs, and needs nothing live.
# So :func:`capture` runs while the worker's event loop waits, and
# :func:`encode` / :func:`encode_line_with`, which only read the capture, may
# run later on another thread (:mod:`replay.segments` does); :func:`take`
# does both at once.

#: a task's fields that are immutable values (or objects only encoded by
#: identity or ``repr``), read by one C call
_PLAIN = attrgetter(
    "key", "state", "previous", "next", "priority", "run_id", "run_spec", "nbytes", "done",
    "suspicious_count", "coming_from", "exception", "traceback", "exception_text",
    "traceback_text", "type", "start_time", "stop_time", "span_id",
)
#: a task's sets (copied as tuples in iteration order, with their table sizes)
_GET_SETS = attrgetter(*ROW_SETS)
#: which of a task's sets hold tasks (all but ``who_has``)
_OF_TASKS = (False,) + (True,) * (len(ROW_SETS) - 1)
#: a task's list and dicts the state machine appends to or updates in place
_GET_CONTAINERS = attrgetter("startstops", "metadata", "annotations", "resource_restrictions")
#: tasks read at a time: each map over them finds them, and their sets, still
#: in the CPU's cache from the map before (a tenth less than whole lists)
_CHUNK = 256


class _Rows:
    """The fields of some tasks at one instant, field by field (parallel lists)."""

    __slots__ = ("plain", "sets", "sizes", "containers")

    def __init__(self, tasks: list[wsm.TaskState]):
        #: per task: the tuple of :data:`_PLAIN`
        self.plain: list[tuple] = []
        #: per task, per set of :data:`ROW_SETS` (task ``i``'s ``j``-th at
        #: ``5 * i + j``): its members in iteration order
        self.sets: list[tuple] = []
        #: the same, their ``set.__sizeof__`` (:func:`_slots` gives the table)
        self.sizes: list[int] = []
        #: per task: copies of :data:`_GET_CONTAINERS` (their items are not
        #: changed once added): ``startstops`` as a tuple, the dicts or None
        self.containers: list[tuple] = []
        for at in range(0, len(tasks), _CHUNK):
            chunk = tasks[at:at + _CHUNK]
            self.plain += map(_PLAIN, chunk)
            # all sets of these tasks, a task's ROW_SETS after another's
            live = list(chain.from_iterable(map(_GET_SETS, chunk)))
            self.sets += map(tuple, live)
            self.sizes += map(_SIZEOF, live)
            self.containers += [
                (tuple(s) if s else (), dict(m) if m else None, None if a is None else dict(a),
                 None if r is None else dict(r))
                for s, m, a, r in map(_GET_CONTAINERS, chunk)]

    def referenced(self) -> Iterable[wsm.TaskState]:
        """Every task a task set of these rows holds (the empty sets skipped
        in a C loop: most are)."""
        return chain.from_iterable(filter(None, compress(self.sets, cycle(_OF_TASKS))))


#: a ``HeapSet`` at one instant: its members, its heap's entries ``(priority,
#: counter, weak reference)``, each entry's task (None where no longer
#: alive), its counter, sortedness and table size
_HeapCapture = tuple[tuple, list, list, int, bool, int]
_THIRD = itemgetter(2)
#: a weak reference's referent, called in a C loop
_DEREF = weakref.ref.__call__


def _capture_heapset(hs: Any) -> _HeapCapture:
    heap = list(hs._heap)
    return (tuple(hs._data), heap, list(map(_DEREF, map(_THIRD, heap))), hs._inc, hs._sorted,
            table_size(hs._data))


class Capture:
    """What a snapshot holds, read from a ``WorkerState`` at one instant:
    immutable values and copies of every container, nothing the state
    machine changes afterwards. Holds the tasks it names alive until
    encoded (tasks dropped meanwhile are freed then)."""

    __slots__ = ("seq", "handled", "address", "settings", "total_resources", "available_resources",
                 "counters", "sets", "tables", "ready", "constrained", "data_needed", "has_what",
                 "in_flight_workers", "busy_workers", "data", "actors", "rng", "task_counter",
                 "tasks", "rows", "orphans", "orphans_by", "gc_paused")

    def __init__(self, ws: wsm.WorkerState, seq: int, handled: float | None):
        #: whether :func:`resume_gc` turns the garbage collector back on
        self.gc_paused = False
        self.seq = seq
        self.handled = handled
        self.address = getattr(ws, "address", None)
        self.settings = [getattr(ws, n) for n in SETTINGS]
        self.total_resources = dict(ws.total_resources)
        self.available_resources = dict(ws.available_resources)
        self.counters = [getattr(ws, n) for n in COUNTERS]
        live_sets = [getattr(ws, n) for n in TASK_SETS]
        self.sets = list(map(tuple, live_sets))
        self.tables = [table_size(s) for s in live_sets] + [table_size(ws.busy_workers)]
        self.ready = _capture_heapset(ws.ready)
        self.constrained = _capture_heapset(ws.constrained)
        self.data_needed = [(w, _capture_heapset(hs)) for w, hs in ws.data_needed.items()]
        self.has_what = [(w, tuple(keys), table_size(keys)) for w, keys in ws.has_what.items()]
        self.in_flight_workers = [(w, tuple(keys), table_size(keys))
                                  for w, keys in ws.in_flight_workers.items()]
        self.busy_workers = tuple(ws.busy_workers)
        self.data = list(ws.data)
        self.actors = list(ws.actors)
        self.rng = ws.rng.getstate()
        tc = ws.task_counter
        self.task_counter = (list(tc._current_count.items()), list(tc._cumulative_elapsed.items()),
                             tuple(tc._new_tasks))
        self.tasks = list(ws.tasks.values())
        self.rows = _Rows(self.tasks)
        #: tasks referred to but not in ``ws.tasks`` (a broken state), by id:
        #: each with its rows, as it was at this instant
        self.orphans: dict[int, tuple[_Rows, int]] = {}
        known = set(map(id, self.tasks))
        found = []
        #: how orphans were ruled out or looked for: "count" where every
        #: ``TaskState`` alive is in ``ws.tasks`` (dask registers each it makes
        #: in ``TaskState._instances``; the capture holds every task it refers
        #: to alive, so none can be outside), else "ids": every task referred
        #: to looked up by id, in C loops, the tasks themselves only if any is not
        self.orphans_by = "count"
        if len(wsm.TaskState._instances) != len(known):
            self.orphans_by = "ids"
            if not known.issuperset(map(id, self._referenced())):
                found = [ts for ts in self._referenced() if id(ts) not in known]
        while found:
            seen = {}
            for ts in found:
                if id(ts) not in known:
                    known.add(id(ts))
                    seen[id(ts)] = ts
            rows = _Rows(list(seen.values()))
            for i, key in enumerate(seen):
                self.orphans[key] = (rows, i)
            found = [ts for ts in rows.referenced() if id(ts) not in known]

    def _referenced(self) -> Iterable[wsm.TaskState]:
        heaps = [self.ready, self.constrained, *(h for _, h in self.data_needed)]
        return chain(
            self.rows.referenced(), chain.from_iterable(self.sets),
            chain.from_iterable(items for items, *_ in heaps),
            filter(None, chain.from_iterable(alive for _, _, alive, *_ in heaps)),
            self.task_counter[2])


def capture(ws: wsm.WorkerState, *, seq: int, handled: float | None, pause_gc: bool = False) -> Capture:
    """The part of a snapshot that must run while the state machine is
    still: ``ws`` read at this instant, for :func:`encode` at any later time.

    The garbage collector is paused meanwhile: a capture allocates a few
    objects per task, and a collection in the middle of it (a full one, at
    10,000 tasks) would double the pause. With ``pause_gc`` it stays paused
    until :func:`resume_gc`, after the capture is encoded: the objects of
    both then die without a collection having moved them to an older
    generation, so they leave no full collection due (which would otherwise
    come in the encoding thread, holding the GIL, or soon after on the loop).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        cap = Capture(ws, seq, handled)
    except BaseException:
        if enabled:
            gc.enable()
        raise
    if not pause_gc:
        if enabled:
            gc.enable()
    else:
        cap.gc_paused = enabled
    return cap


def resume_gc(cap: Capture) -> None:
    """The garbage collector as before :func:`capture` paused it (``pause_gc``)."""
    if cap.gc_paused:
        cap.gc_paused = False
        gc.enable()


def take(ws: wsm.WorkerState, *, seq: int, handled: float | None) -> dict:
    """The ``snapshot`` of ``ws`` after step ``seq`` (handled at ``handled``)."""
    return encode(capture(ws, seq=seq, handled=handled))


def encode(cap: Capture) -> dict:
    """A capture as the ``snapshot`` record (JSON-ready data). Reads only ``cap``."""
    out, rows = _encode(cap)
    every = list(rows)
    out["tasks"] = every[: len(cap.tasks)]
    out["orphans"] = every[len(cap.tasks):]
    return out


def encode_line_with(record: dict, cap: Capture, *, chunk: int = 100) -> bytes:
    """The log line of ``record`` with ``"snapshot": encode(cap)`` added last:
    the bytes of ``encode_line({**record, "snapshot": encode(cap)})``, made
    with the task rows turned into JSON ``chunk`` at a time. The rows then die
    young: all of them alive at once would reach the garbage collector's
    oldest generation and set off a full collection, which holds the GIL
    (about 100 ms at 10,000 tasks) from the worker's event loop."""
    assert "snapshot" not in record
    out, rows = _encode(cap)
    head = orjson.dumps({**record, "snapshot": out})
    assert head.endswith(b"}}")
    parts = [head[:-2], b',"tasks":[']
    n = len(cap.tasks)
    done = 0
    while done < n:
        batch = list(islice(rows, min(chunk, n - done)))
        parts.append((b"," if done else b"") + orjson.dumps(batch)[1:-1])
        done += len(batch)
    parts.append(b'],"orphans":')
    parts.append(orjson.dumps(list(rows)))  # the few of a broken state
    parts.append(b"}}\n")
    return b"".join(parts)


def _encode(cap: Capture) -> tuple[dict, Iterator[list]]:
    """The snapshot but its task rows, and the rows (tasks, then orphans)."""
    num = _Numbering(cap.tasks)
    out: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "seq": cap.seq,
        "handled": cap.handled,
        "address": cap.address,
        "settings": {n: _setting(v) for n, v in zip(SETTINGS, cap.settings)},
        "total_resources": {k: encode_float(float(v)) for k, v in cap.total_resources.items()},
        "available_resources": {k: encode_float(float(v)) for k, v in cap.available_resources.items()},
        "counters": dict(zip(COUNTERS, cap.counters)),
        "sets": {n: [num(ts) for ts in items] for n, items in zip(TASK_SETS, cap.sets)},
        "tables": dict(zip(TASK_SETS + ("busy_workers",), cap.tables)),
        "ready": _heapset(cap.ready, num),
        "constrained": _heapset(cap.constrained, num),
        "data_needed": [[w, _heapset(hs, num)] for w, hs in cap.data_needed],
        "has_what": [[w, [encode_key(k) for k in keys], size] for w, keys, size in cap.has_what],
        "in_flight_workers": [[w, [encode_key(k) for k in keys], size]
                              for w, keys, size in cap.in_flight_workers],
        "busy_workers": list(cap.busy_workers),
        "data": [encode_key(k) for k in cap.data],
        "actors": [encode_key(k) for k in cap.actors],
        "rng": _rng_state(cap.rng),
        "task_counter": _task_counter(cap.task_counter, num),
    }

    # rows last: the containers above may have numbered orphans
    def rows() -> Iterator[list]:
        for i in range(len(cap.tasks)):
            yield _task_row(cap.rows, i, num)
        i = len(cap.tasks)
        while i < len(num.tasks):  # orphans, as numbered; their rows may number more
            orphan_rows, j = cap.orphans[id(num.tasks[i])]
            yield _task_row(orphan_rows, j, num)
            i += 1

    return out, rows()


def _key(key: Any) -> Any:
    # most keys are a str, or a tuple of str and int: JSON as they are
    t = type(key)
    if t is str:
        return key
    if t is tuple and len(key) == 2 and type(key[0]) is str and type(key[1]) is int:
        return [key[0], key[1]]
    return encode_key(key)


def _priority(prio: tuple) -> list:
    for v in prio:
        if type(v) is not int:
            return _priority_encode(prio)
    return list(prio)


def _task_row(rows: _Rows, i: int, num: _Numbering) -> list:
    """Task ``i`` of ``rows`` as a row. The common cases (str and tuple
    keys, int priorities, empty containers) take no call into the codec."""
    nget = num.number.get
    (key, state, previous, next_, prio, run_id, run_spec, nbytes, done, suspicious_count,
     coming_from, exception, traceback, exception_text, traceback_text, type_, start_time,
     stop_time, span_id) = rows.plain[i]
    k = i * 5
    who_has, deps, dependents, wfd, waiters = rows.sets[k:k + 5]
    startstops, metadata, annotations, restrictions = rows.containers[i]
    row = [
        _key(key), state, previous, next_,
        None if prio is None else _priority(prio),
        run_id, run_spec is not None, nbytes, done, suspicious_count,
        coming_from, None if exception is None else _exc_encode(exception),
        traceback is not None, exception_text, traceback_text,
        None if type_ is None else getattr(type_, "__qualname__", str(type_)),
        _opt_float(start_time), _opt_float(stop_time),
        encode_value(list(startstops)) if startstops else [],
        encode_value(metadata) if metadata else None,
        None if annotations is None else encode_value(annotations),
        span_id,
        {k: encode_float(float(v)) for k, v in restrictions.items()}
        if restrictions is not None else None,
        list(who_has),
        [nget(id(d)) for d in deps] if deps else [],
        [nget(id(d)) for d in dependents] if dependents else [],
        [nget(id(d)) for d in wfd] if wfd else [],
        [nget(id(d)) for d in waiters] if waiters else [],
        _tables(rows.sizes[k:k + 5]),
    ]
    for j in range(-5, -1):
        if None in row[j]:  # a task not in ws.tasks: numbered as an orphan
            row[j] = [num(d) for d in (deps, dependents, wfd, waiters)[j + 5]]
    return row


def _tables(sizes: list[int]) -> list[int] | None:
    small = _SMALL_SIZEOF
    if sizes[0] == small and sizes[1] == small and sizes[2] == small and sizes[3] == small \
            and sizes[4] == small:
        return None
    return [_slots(n) for n in sizes]


def _heapset(hs: _HeapCapture, num: _Numbering) -> dict:
    items, entries, alive, inc, sorted_, table = hs
    heap = [[_priority_encode(k) if type(k) is tuple else encode_value(k), i,
             -1 if ts is None else num(ts)] for (k, i, _), ts in zip(entries, alive)]
    return {"items": [num(ts) for ts in items], "heap": heap, "inc": inc,
            "sorted": sorted_, "table": table}


def _setting(v: Any) -> Any:
    if type(v) is float:
        return encode_float(v)
    return v


def _rng_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _task_counter(tc: tuple, num: _Numbering) -> dict:
    current, cumulative, new = tc
    return {
        "current": [[p, s, n] for (p, s), n in current],
        "cumulative": [[p, s, encode_float(t)] for (p, s), t in cumulative],
        "new": [num(ts) for ts in new],
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
    tables = snap["tables"]
    for name, items in snap["sets"].items():
        setattr(ws, name, ordered_set([tasks[i] for i in items], tables[name]))
    _fill_heapset(ws.ready, snap["ready"], tasks)
    _fill_heapset(ws.constrained, snap["constrained"], tasks)
    ws.data_needed.clear()
    for w, hs in snap["data_needed"]:
        _fill_heapset(ws.data_needed[w], hs, tasks)
    ws.has_what.clear()
    for w, keys, size in snap["has_what"]:
        ws.has_what[w] = ordered_set([decode_key(k) for k in keys], size)
    ws.in_flight_workers = {w: ordered_set([decode_key(k) for k in keys], size)
                            for w, keys, size in snap["in_flight_workers"]}
    ws.busy_workers = ordered_set(snap["busy_workers"], tables["busy_workers"])
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
    tc._new_tasks = ordered_set([tasks[i] for i in snap["task_counter"]["new"]])
    tc._previous_ts = monotonic() if tc._current_count else None


def _fill_task(ts: wsm.TaskState, row: list, tasks: list[wsm.TaskState]) -> None:
    (_, ts.state, ts.previous, ts.next, prio, ts.run_id, has_run_spec, ts.nbytes, ts.done,
     ts.suspicious_count, ts.coming_from, exception, has_traceback, ts.exception_text,
     ts.traceback_text, _type, start, stop, startstops, metadata, annotations, ts.span_id,
     restrictions, who_has, deps, dependents, waiting_for_data, waiters, tables) = row
    t = tables or (8, 8, 8, 8, 8)
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
    ts.who_has = ordered_set(who_has, t[0])
    ts.dependencies = ordered_set([tasks[i] for i in deps], t[1])
    ts.dependents = ordered_set([tasks[i] for i in dependents], t[2])
    ts.waiting_for_data = ordered_set([tasks[i] for i in waiting_for_data], t[3])
    ts.waiters = ordered_set([tasks[i] for i in waiters], t[4])


def _fill_heapset(hs: Any, snap: dict, tasks: list[wsm.TaskState]) -> None:
    hs._data = ordered_set([tasks[i] for i in snap["items"]], snap["table"])
    gone = _Gone()  # one object, dropped at the end: every stale entry's referent
    heap = []
    for k, i, n in snap["heap"]:
        key = _priority_decode(k) if type(k) is list else decode_value(k)
        heap.append((key, i, weakref.ref(gone if n < 0 else tasks[n])))
    hs._heap = heap
    hs._inc = snap["inc"]
    hs._sorted = snap["sorted"]
    del gone



# --- sets in their recorded order -----------------------------------------
#
# A set iterates in the order of its hash table's slots. Adding the recorded
# items in their iteration order gives that order back only if the table has
# the recorded size (sets do not shrink when items leave) and no item sits
# past a slot that held an item since removed. The snapshot writes each
# set's table size (from its size in bytes) where it is not the built-in 8
# slots, and :func:`ordered_set` rebuilds the order: each item is given the
# first slot of its probe sequence after the previous item's slot; the slots
# its probe passes first and no item holds get a blocker (an object with
# that hash, removed afterwards, as the recorded set's removed items were);
# blockers then items go into an empty table through ``set.update(dict)``,
# which sizes the table once and adds in the dict's order. The result is
# checked against the recorded order; where it differs the set is built by
# adding in order (the tests count how often).

#: a set's size in bytes: ``set.__sizeof__`` called directly (``sys.getsizeof``
#: without the collector's header, at a third of its cost: 50,000 calls a snapshot)
_SIZEOF = set.__sizeof__
#: that of a set on its built-in table of 8 slots, and the bytes per slot beyond
_SMALL_SIZEOF = _SIZEOF(set())
_ENTRY = 16
_LINEAR_PROBES = 9
_PERTURB_SHIFT = 5


def table_size(s: set) -> int:
    """Slots of a set's hash table (8 while it uses its built-in table)."""
    return _slots(_SIZEOF(s))


def _slots(sizeof: int) -> int:
    """Slots of a set's hash table from its ``set.__sizeof__``."""
    n = sizeof - _SMALL_SIZEOF
    return 8 if n <= 0 else n // _ENTRY


class _Blocker:
    """An item with a chosen hash, equal only to itself: it holds a slot."""

    __slots__ = ("h",)

    def __init__(self, h: int):
        self.h = h

    def __hash__(self) -> int:
        return self.h


def _probe(h: int, mask: int) -> Iterable[int]:
    """The slots CPython's ``set_add_entry`` probes for hash ``h``, in order."""
    perturb = h & 0xFFFFFFFFFFFFFFFF
    i = perturb & mask
    for _ in range(8 * (mask + 1)):
        if i + _LINEAR_PROBES <= mask:
            yield from range(i, i + _LINEAR_PROBES + 1)
        else:
            yield i
        perturb >>= _PERTURB_SHIFT
        i = (i * 5 + 1 + perturb) & mask


def _clean_slots(items: list, mask: int, budget: int = 400) -> tuple[list[int], list[list[int]]] | None:
    """Slots for ``items`` in increasing order such that every slot a probe
    passes first is another item's: a table built without removals. A
    depth-first search over each item's probe, ``budget`` nodes at most."""
    paths = []
    for x in items:
        path: list[int] = []
        for p in _probe(hash(x), mask):
            if p not in path:
                path.append(p)
            if len(path) > min(mask, 24):
                break
        paths.append(path)
    slots: list[int] = []
    passes: list[list[int]] = []
    nodes = 0

    def search(i: int, last: int) -> bool:
        nonlocal nodes
        if i == len(items):
            held = set(slots)
            return all(q in held for ps in passes for q in ps)
        for at, p in enumerate(paths[i]):
            nodes += 1
            if nodes > budget:
                return False
            if p <= last or p in slots:
                continue
            slots.append(p)
            passes.append(paths[i][:at])
            if search(i + 1, p):
                return True
            slots.pop()
            passes.pop()
        return False

    return (slots, passes) if search(0, -1) else None


def _slotted(items: list, size: int, lowest: bool | None) -> set | None:
    """``items`` in a fresh table of ``size`` slots, iterating in their order;
    None where that cannot be built. Each item takes the first slot of its
    probe after the previous item's, or with ``lowest`` the lowest (more
    blockers, more room for the items after it)."""
    mask = size - 1
    # each item's slot: the lowest its probe reaches after the previous item's
    slots: list[int] = []
    passes: list[list[int]] = []
    last = -1
    if lowest is None:  # as a table that never lost an item
        found = _clean_slots(items, mask)
        if found is None:
            return None
        slots, passes = found
    for x in items if lowest is not None else ():
        path = []
        best = None
        for n, p in enumerate(_probe(hash(x), mask)):
            if n > 3 * (_LINEAR_PROBES + 1) and best is not None:
                break
            if p > last and p not in path and (best is None or p < best[0]):
                best = (p, len(path))
                if not lowest:
                    path.append(p)
                    break
            path.append(p)
        if best is None:
            return None
        slot, at = best
        slots.append(slot)
        passes.append([q for q in path[:at] if q != slot])
        last = slot
    holder = {s: i for i, s in enumerate(slots)}
    blocked = sorted({q for ps in passes for q in ps if q not in holder})
    # an item goes in after the items holding the slots its probe passes first
    after = [{holder[q] for q in ps if q in holder} for ps in passes]
    if any(i in a for i, a in enumerate(after)):
        return None
    # in iteration order where nothing says otherwise (a heap: O(n log n))
    before: list[list[int]] = [[] for _ in items]
    pending = [len(a) for a in after]
    for i, a in enumerate(after):
        for j in a:
            before[j].append(i)
    free = [i for i, n in enumerate(pending) if not n]
    heapq.heapify(free)
    placed: list[int] = []
    while free:
        i = heapq.heappop(free)
        placed.append(i)
        for k in before[i]:
            pending[k] -= 1
            if not pending[k]:
                heapq.heappush(free, k)
    if len(placed) != len(items):
        return None  # each waits for another
    items = [items[i] for i in placed]
    taken = set(slots) | set(blocked)
    blockers = [_Blocker(b) for b in blocked]
    order: dict = dict.fromkeys(blockers)
    order.update(dict.fromkeys(items))
    # the table is sized once, to the first power of two above twice the
    # number added, when that number is at least 5: pad with more blockers
    free = (b for b in range(size) if b not in taken)
    pad = []
    while size > 8 and len(order) + len(pad) < max(size // 4, 5):
        b = next(free, None)
        if b is None:
            return None
        pad.append(_Blocker(b))
    order.update(dict.fromkeys(pad))
    s: set = set()
    first = list(order)
    head = first[: max(size // 2 - 1, 0)] if size > 8 else []
    s.update(dict.fromkeys(head))
    for x in first[len(head):]:
        s.add(x)
    if table_size(s) != size:
        return None
    for b in blockers:
        s.discard(b)
    for b in pad:
        s.discard(b)
    return s


def ordered_set(items: Iterable, size: int = 8) -> set:
    """A set of ``items`` iterating in their order, in a table of ``size``
    slots where that can be rebuilt (see above)."""
    items = list(items)
    out = set()
    for x in items:
        out.add(x)
    if table_size(out) == size and _same_order(out, items):
        return out
    for lowest in (None, False, True):
        rebuilt = _slotted(items, size, lowest)
        if rebuilt is not None and _same_order(rebuilt, items):
            return rebuilt
    return out


def _same_order(s: set, items: list) -> bool:
    return len(s) == len(items) and all(a is b for a, b in zip(s, items))
