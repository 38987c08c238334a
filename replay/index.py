"""An index of a log's replay: one exact linear replay, written down, that
answers every view at any step without replaying again.

Every view (state, diff, story, why, load) is a function of what one linear
replay observes. :func:`build` runs that replay once per worker (the same
tapped :func:`~replay.views.walk` the views use) and writes to SQLite, beside
the log or in a cache folder:

- ``steps``: per run of :data:`STEPS` steps, compressed, each step's
  recorded time, stimulus id and event class, and where its line is in the
  log (line number, byte offset: a log of one uncompressed file); with the
  earliest time of the run and the sorted CRC-32s of its stimulus ids
  (where to look for one);
- ``blocks``: per run of :data:`BLOCK` steps, every story line of each step
  (its event, the transitions and log entries it caused, its instructions)
  with its payload and the keys it names, each step's JSON apart (a query
  parses the steps it asks for), compressed; an event's,
  instruction's and transition's text is made from its payload when read
  (:func:`~replay.render.encoded_text`, with the shown fields and codecs of
  each class the writer wrote down: ``meta.fields``). Where the log's line
  is known, the event's payload and that of each instruction replay made
  byte for byte as recorded are not copied: they are read from the log
  when asked for (:meth:`IndexedWorker._fill`); a payload's stimulus id is
  left out where it is the step's (:func:`_lean`);
- ``changes``: per run of :data:`CHANGES` steps, compressed, the task
  rows (state, previous, next, then priority, who_has, … as JSON text of
  their own, parsed when read: :func:`task_row`) each step changed and
  the worker's counters and containers (running, transfers, memory,
  resources, busy peers, ready, in flight…) it changed; with ``keyframes``
  of every row each :data:`KEYFRAME` steps (every :data:`FULL`-th whole,
  those between as the rows changed since it), the tasks at any step are
  a keyframe plus a bounded number of changes;
- ``keys`` and ``kids``: per key, its interned id (story lines and changes
  name keys by it), found by the CRC-32 of its spelling, and, in compressed
  runs of :data:`KIDS` keys, its steps: where its row changed, where it
  moved (for ``why``), where its story has a line, its GatherDep and
  Execute instructions. Written once: no table grows a row per change, and
  no secondary index is built over them.

Blobs are zstd; story and change blocks with a dictionary trained on the
worker's first blocks (``dicts``, :class:`_Packer`).

A query rebuilds a read-only stand-in of the ``WorkerState`` at the step
(:class:`FrozenWorker`) and hands it to the same view code a replay feeds:
:meth:`StateView.of <replay.views.StateView.of>`, :func:`~replay.diagnosis.explain`.
So an index answer and a replay answer cannot drift apart by construction,
and a property test compares them anyway. The query path imports neither
``distributed`` nor the pydantic schemas, and never re-executes the
interpreter: a fresh ``replay state`` on an indexed log is imports plus a few
SQLite reads.

The index holds JSON and text only; nothing in it can execute. It is keyed by
the log's size, modification time, length stored (before the zeros a log
being written ends in) and a hash of its head: a log that changed is indexed
anew (and so the byte offsets it keeps into the log stay true).
"""
from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from itertools import accumulate
import importlib.metadata
import os
import sqlite3
import sys
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

import orjson
import zstandard

from replay import codeid
from replay.collector import collecting_rarely, rare_collections
from replay.diagnosis import Tracker, why, why_view
from replay.disagreements import find
from replay.errors import NotFound, ReplayError
from replay.literal import jsonable, key_name, key_text, learn_key_names, sort_key, task_name
from replay.logfile import (
    GZIP_MAGIC, LogError, LogName, cache_file, lines_at, log_inputs, log_name, stored_length,
)
from replay.positions import choose_worker, step_of
from replay.render import encoded_text, event_text
from replay.scheduler_log import attach_scheduler_log
from replay.segments import is_segment_folder
from replay.story import (
    Story,
    StoryLine,
    entry_keys,
    event_keys,
    instruction_keys,
    line_data,
    line_text,
    no_such_key,
    transition_text,
)
from replay.summary import Failure, WorkerSummary
from replay.views import (
    DIFF_STEPS,
    Counters,
    DiffView,
    Gather,
    Moment,
    RaisedStep,
    StateView,
    StepBrief,
    _state_rank,
    changed_states,
    departed_note,
    departure,
    is_transition,
    notes,
    reach,
)
from schemas.codec import decode_float, decode_key, decode_resources, encode_key

#: the index layout; an index of another layout is rebuilt (bump it with
#: every change to what is written)
VERSION = 23
#: steps per compressed block of story lines
BLOCK = 64
#: steps between two keyframes of the task table
KEYFRAME = 2000
#: every FULL-th keyframe holds every row; those between hold the rows that
#: changed since it (a worker that keeps thousands of tasks rewrote them all
#: at each keyframe: at a million steps, more than a tenth of the log)
FULL = 10
#: steps per compressed block of changes (task rows, counters, containers);
#: a keyframe starts a block
CHANGES = 250
#: steps per row of ``steps`` (their times, stimulus ids and event classes)
STEPS = 4096
#: keys per row of ``kids`` (what the index keeps of each key)
KIDS = 256
#: bytes of the log's head that identify it, with its size and mtime
HEAD = 1 << 16
#: zstd level of every compressed blob (9: as fast as zlib's 6 here, a tenth smaller)
LEVEL = 9
#: blocks of story lines and of changes a worker's dictionary is trained on
#: (its first ones); a worker with fewer is compressed without one
TRAIN = 32
#: bytes of such a dictionary
DICT_BYTES = 32768

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE workers (wid INTEGER PRIMARY KEY, address TEXT, events INTEGER, info TEXT);
CREATE TABLE steps (wid INTEGER, first INTEGER, low REAL, sids BLOB, data BLOB,
                    PRIMARY KEY (wid, first)) WITHOUT ROWID;
CREATE TABLE blocks (wid INTEGER, first INTEGER, data BLOB, PRIMARY KEY (wid, first)) WITHOUT ROWID;
CREATE TABLE keys (wid INTEGER, crc INTEGER, kid INTEGER, PRIMARY KEY (wid, crc, kid)) WITHOUT ROWID;
CREATE TABLE kids (wid INTEGER, first INTEGER, data BLOB, PRIMARY KEY (wid, first)) WITHOUT ROWID;
CREATE TABLE changes (wid INTEGER, first INTEGER, data BLOB, PRIMARY KEY (wid, first)) WITHOUT ROWID;
CREATE TABLE keyframes (wid INTEGER, step INTEGER, data BLOB, PRIMARY KEY (wid, step)) WITHOUT ROWID;
CREATE TABLE gathers (wid INTEGER, issued INTEGER, answered INTEGER, peer TEXT, keys TEXT);
CREATE TABLE dicts (wid INTEGER, kind TEXT, data BLOB, PRIMARY KEY (wid, kind)) WITHOUT ROWID;
"""
# built after the bulk insert: cheaper than keeping them up to date
_INDEXES = """
CREATE INDEX gathers_by_step ON gathers (wid, issued);
CREATE INDEX gathers_unanswered ON gathers (wid, issued) WHERE answered IS NULL;
"""


def _ktext(key: Any) -> str:
    """A key as the index spells it: its codec encoding as JSON text."""
    return orjson.dumps(encode_key(key)).decode()


def _kparse(text: str) -> Any:
    return decode_key(orjson.loads(text))


# --- where the index lives ------------------------------------------------------


def _file_identity(path: str) -> dict:
    st = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HEAD)).hexdigest()
    # stored: a log its worker still writes grows a chunk at a time, its
    # size and time unmoved by each line (LogWriter)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head": head,
            "stored": stored_length(path)}


def identity(log: LogName) -> dict:
    """What a log's index is keyed by: size, modification time, length stored, hash of the
    head (of each file, for a directory or several files), the index layout
    and the installed ``distributed`` and ``dask``; the state machine's code is checked
    apart (:func:`code_identity`, :func:`same_code`)."""
    files = log_inputs(log)
    ident = (_file_identity(log) if files is None  # type: ignore[arg-type]
             else {"files": [{"file": os.path.basename(f), **_file_identity(f)} for f in files]})
    return {**ident, "version": VERSION, "distributed": importlib.metadata.version("distributed"),
            # the key names it wrote down are dask's key_split's
            "dask": importlib.metadata.version("dask")}


def code_identity() -> dict:
    """The state machine that replays in this process (the one writing an
    index): its installed source file, its code as imported, and whether that
    is the file's code unpatched."""
    file = codeid.module_file()
    live = codeid.live_digest()
    return {"file": codeid.file_hash(file), "digest": live, "stock": live == codeid.file_digest(file)}


def same_code(recorded: dict) -> bool:
    """Would this process replay through the code an index was written by?

    A process that has imported the state machine (a patch, ``--import``)
    compares the code as imported; one that has not (the query path never
    imports ``distributed``) trusts a stock index over an unchanged file.
    """
    if codeid.MODULE in sys.modules:
        return recorded.get("digest") == codeid.live_digest()
    file = codeid.module_file()
    return bool(recorded.get("stock")) and file is not None and recorded.get("file") == codeid.file_hash(file)


#: the index of a recording directory, inside it: it moves with the recording
DIRECTORY_INDEX = ".replay-index"


def index_path(log: LogName) -> str:
    """Beside the log (a directory's inside it, as ``DIR/.replay-index``), or
    in the cache folder when that folder is not writable. Several files that
    are not one directory's recording, and a bounded recording's folder of
    segments, are indexed in the cache folder."""
    if isinstance(log, tuple):
        where = None
        named = "\0".join(os.path.abspath(p) for p in log)
    elif os.path.isdir(log):
        where = os.path.join(os.path.abspath(log), DIRECTORY_INDEX)
        named = where
        if is_segment_folder(log):  # a bounded recording: its bound counts every byte there
            where = None
    else:
        where = os.path.abspath(log) + ".replay-index"
        named = os.path.abspath(log)
    if where is not None and os.access(os.path.dirname(where), os.W_OK):
        return where
    return cache_file(named, ".replay-index")


# --- indexing afterwards, in the background --------------------------------------

#: a log at least this big on disk is answered by replaying the first time and
#: indexed afterwards, in a process of its own (smaller ones: in the same pass)
LATER_BYTES = 4 << 20


def log_bytes(log: LogName) -> int:
    """The size on disk of a log's file(s)."""
    files = log_inputs(log)
    return sum(os.path.getsize(f) for f in ([log] if files is None else files))  # type: ignore[list-item]


def _indexer_running(lock: str) -> Optional[int]:
    """The pid of the indexer that holds ``lock``, if it still runs."""
    try:
        with open(lock) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def index_in_background(log: LogName) -> Optional[int]:
    """Start ``replay index LOG`` in a session of its own, its output thrown
    away; returns its pid, or None when an indexer of this log already runs.

    It inherits this process's environment, so it replays through the same
    ``--import`` modules (:mod:`replay.imports`) and re-executes with the
    recorded hash seed as every command does. ``PATH.lock`` holds its pid
    until :func:`build` replaces the index.
    """
    import subprocess  # only when indexing afterwards

    lock = index_path(log) + ".lock"
    if _indexer_running(lock) is not None:
        return None
    files = list(log) if isinstance(log, tuple) else [log]
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    # the installed command line, never a cli.py of the current directory
    code = "import sys; sys.path[:] = [p for p in sys.path if p]; import cli; cli.main()"
    # what it says is kept: a failure must reach the next command (background_failure)
    with open(index_path(log) + ".stderr", "wb") as said:
        p = subprocess.Popen([sys.executable, "-c", code, "index", *files], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=said, start_new_session=True)
    with open(lock, "w") as f:
        f.write(str(p.pid))
    return p.pid


def background_failure(log: LogName) -> Optional[str]:
    """The last line the background indexer of ``log`` wrote, if it stopped
    without writing the index (its lock is left, its pid gone); else None."""
    lock = index_path(log) + ".lock"
    if not os.path.exists(lock) or _indexer_running(lock) is not None:
        return None
    try:
        with open(index_path(log) + ".stderr", errors="replace") as f:
            said = [line.strip() for line in f if line.strip()]
    except OSError:
        said = []
    return said[-1] if said else "it stopped without a word (killed?)"


# --- a read-only WorkerState at one step -------------------------------------------

#: the fields of a task row, in order (:func:`task_row`, :class:`FrozenTask`):
#: the states, then the rest as JSON text of its own
ROW = ("state", "previous", "next", "rest")
#: the fields of a row's rest, in order
REST = ("priority", "nbytes", "who_has", "coming_from", "dependencies", "resource_restrictions",
        "run_id", "exception_text")


# JSON kept for long is str: orjson's bytes keep a buffer of 4 KB each, and
# the writer keeps one per key and per task (gigabytes at a million steps);
# UTF-8 sorts as code points do, so str sorts as the bytes did


def task_row(ts: Any, ktext: Callable[[Any], str] = _ktext) -> str:
    """What the views read of a ``TaskState``, as JSON (:func:`frozen_row`);
    ``ktext`` spells a key (the writer's caches the spelling of each key)."""
    return orjson.dumps(frozen_row(
        ts.state, ts.previous, ts.next,
        priority=None if ts.priority is None else list(ts.priority), nbytes=ts.nbytes,
        who_has=sorted(ts.who_has), coming_from=ts.coming_from,
        dependencies=[orjson.Fragment(d) for d in sorted(ktext(d.key) for d in ts.dependencies)],
        resource_restrictions=ts.resource_restrictions or None, run_id=ts.run_id,
        exception_text=ts.exception_text or None,
    )).decode()


def frozen_row(state: str, previous: Optional[str] = None, next: Optional[str] = None, *,
               priority: Any = None, nbytes: Any = None, who_has: Any = (), coming_from: Any = None,
               dependencies: Any = (), resource_restrictions: Any = None, run_id: Any = None,
               exception_text: Any = None) -> list:
    """A task row: its state, previous and next, then the rest (:data:`REST`)
    as JSON text of its own, which :class:`FrozenTask` parses when it is read
    (an answer reads the states of every task and the rest of a few).
    ``dependencies``: the keys encoded."""
    # in REST's order
    return [state, previous, next, orjson.dumps([
        priority, nbytes, list(who_has), coming_from, list(dependencies), resource_restrictions, run_id,
        exception_text,
    ]).decode()]


_PRIORITY = REST.index("priority")


def _rest_field(name: str) -> property:
    i = REST.index(name)
    return property(lambda ts: ts.rest()[i], doc=f"``{name}`` from the row's rest (:data:`REST`)")


class FrozenTask:
    """A ``TaskState`` as the index recorded it: the attributes views read."""

    __slots__ = ("key", "state", "previous", "next", "_rest", "_fields", "_worker")

    def __init__(self, key: Any, row: list, worker: weakref.ref[FrozenWorker]):
        self.key = key
        self.state, self.previous, self.next, self._rest = row
        #: the rest of the row, parsed the first time one of its fields is read
        self._fields: Optional[list] = None
        # weak: a worker and its tasks in a cycle would outlive every answer
        # until the collector found them
        self._worker = worker

    def rest(self) -> list:
        fields = self._fields
        if fields is None:
            fields = self._fields = orjson.loads(self._rest)
        return fields

    @property
    def priority(self) -> Optional[tuple]:
        # a priority is a flat tuple of numbers
        priority = self.rest()[_PRIORITY]
        return None if priority is None else tuple(priority)

    nbytes = _rest_field("nbytes")
    who_has = _rest_field("who_has")
    coming_from = _rest_field("coming_from")
    #: the dependencies' keys, encoded
    dependency_keys = _rest_field("dependencies")
    resource_restrictions = _rest_field("resource_restrictions")
    run_id = _rest_field("run_id")
    exception_text = _rest_field("exception_text")

    @property
    def dependencies(self) -> list[FrozenTask]:
        worker = self._worker()
        assert worker is not None, f"task {self.key!r} read after its FrozenWorker was dropped"
        tasks = worker.tasks
        keys = (decode_key(d) for d in self.dependency_keys)
        return [tasks[k] for k in keys if k in tasks]


class _Queue:
    """A HeapSet's members (views order them themselves)."""

    def __init__(self, tasks: list[FrozenTask]):
        self.tasks = tasks

    def __iter__(self) -> Iterator[FrozenTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __bool__(self) -> bool:
        return bool(self.tasks)


class FrozenWorker:
    """A ``WorkerState`` at one step, rebuilt from the index: what the views
    read, every container as the real ``WorkerState`` held it (recorded by
    :class:`Containers`, never derived from the tasks' states)."""

    def __init__(self, address: str, rows: dict[Any, list], counters: dict):
        self.address = address
        me = weakref.ref(self)
        self.tasks: dict[Any, FrozenTask] = {key: FrozenTask(key, row, me) for key, row in rows.items()}
        c = counters
        self.running = c["running"]
        self.nthreads = c["nthreads"]
        self.transfer_incoming_count = c["transfers"]
        self.transfer_incoming_count_limit = c["transfers_limit"]
        self.transfer_incoming_bytes = c["transfer_bytes"]
        limit = c["transfer_bytes_limit"]
        self.transfer_incoming_bytes_limit = float("inf") if limit is None else limit
        self.nbytes = c["nbytes"]
        self.total_resources = dict(c["total_resources"])
        self.available_resources = dict(c["available_resources"])
        self.busy_workers = set(c["busy_workers"])
        # the containers as the real WorkerState held them (Containers)
        strays = c["strays"]

        def task(text: str) -> FrozenTask:
            key = _kparse(text)
            if text in strays or key not in self.tasks:
                state, priority = strays.get(text, ("forgotten", None))
                return FrozenTask(key, frozen_row(state, priority=priority), me)
            return self.tasks[key]

        def per_peer(texts: Any) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for text in texts:
                peer, *k = orjson.loads(text)
                keys = out.setdefault(peer, [])
                if k:  # [peer] alone: the entry, whatever it holds
                    keys.append(orjson.dumps(k[0]).decode())
            return out

        self.executing = {task(k) for k in c["executing"]}
        self.long_running = {task(k) for k in c["long_running"]}
        self.ready = _Queue([task(k) for k in c["ready"]])
        self.constrained = _Queue([task(k) for k in c["constrained"]])
        self.missing_dep_flight = {task(k) for k in c["missing"]}
        self.in_flight_workers = {w: {_kparse(k) for k in ks} for w, ks in per_peer(c["in_flight_workers"]).items()}
        self.data_needed = {w: _Queue([task(k) for k in ks]) for w, ks in per_peer(c["data_needed"]).items()}


@dataclass
class FrozenReplayer:
    """Where a replay would stand: the worker at a step, as views take it."""

    ws: FrozenWorker
    seq: int
    stimulus_id: str
    handled: Optional[float]


# --- writing ----------------------------------------------------------------------


#: the state view's counters the index keeps (the two others it derives from the tasks)
_COUNTED = ("nthreads", "transfers", "transfers_limit", "transfer_bytes", "transfer_bytes_limit", "nbytes",
            "total_resources", "available_resources")


def counters_row(ws: Any) -> dict:
    """What the index keeps of the worker's own counters: the view's
    :class:`~replay.views.Counters`, whether it runs, its busy peers."""

    c = Counters.of(ws)
    row = {f: getattr(c, f) for f in _COUNTED}
    row.update(running=ws.running, busy_workers=sorted(ws.busy_workers))
    return row


#: containers kept as changes of membership: they can hold thousands of
#: tasks, of which a step moves a few. Members are JSON texts: a key's
#: (:func:`_ktext`), or ``[peer, key]``'s for those kept per peer.
MEMBERS = ("executing", "long_running", "ready", "constrained", "missing")
PER_PEER = ("in_flight_workers", "data_needed")


#: the member that stands for a per-peer entry itself (``[peer]``)
_PEER = object()


def _as_set(container: Any) -> set:
    # a HeapSet's members are its ``_data`` set: copying a set reuses the
    # stored hashes, where iterating would call TaskState.__hash__ per member
    return set(getattr(container, "_data", container))


class Containers:
    """Follows the worker's containers as the state machine holds them, never
    derived from task states: a bookkeeping bug (a stale ``in_flight_workers``
    entry, a task queued twice or in no queue) is what the views must show.

    :meth:`changes` returns the members each container gained and lost in
    the step, as texts. Small containers (sets) are compared whole with the
    last step's. A ``HeapSet`` (``ready``, ``constrained``, each peer's
    ``data_needed``: thousands of tasks, of which a step moves a few) counts
    its additions (``_inc``): unchanged count and size, it did not change;
    else the step's tasks (the keys its event, log entries and instructions
    name) are looked up in it, and when they account for every addition and
    for the change of size, they are its whole change (any other member that
    left or came would break one of the two counts); when they do not, it is
    compared whole. ``strays`` are members whose ``TaskState`` is not the one
    ``ws.tasks`` holds (a task forgotten but still queued), with their state
    and priority.
    """

    def __init__(self, ktext: Callable[[Any], str] = _ktext) -> None:
        #: container (a peer's: (name, peer)) -> its members at the last step
        self.was: dict[Any, set] = {}
        #: a HeapSet container -> (the object, its additions, its size) at the last step
        self.marks: dict[Any, tuple] = {}
        self.strays: dict[str, list] = {}
        self.ktext = ktext
        #: how many times a HeapSet was compared whole (its counts not explained)
        self.whole = 0

    def _heap(self, name: Any, heap: Any, tasks: list, out: dict) -> None:
        inc = getattr(heap, "_inc", None)
        mark = self.marks.get(name)
        n = len(heap)
        was = self.was.get(name)
        if mark is not None and mark[0] is heap and inc is not None and was is not None:
            if mark[1] == inc and mark[2] == n:
                return
            data = heap._data
            added = [t for t in tasks if t in data and t not in was]
            removed = [t for t in tasks if t not in data and t in was]
            if inc - mark[1] == len(added) and mark[2] + len(added) - len(removed) == n:
                was.update(added)
                was.difference_update(removed)
                self.marks[name] = (heap, inc, n)
                if added:
                    out[name, "+"] = added
                if removed:
                    out[name, "-"] = removed
                return
            self.whole += 1
        self.marks[name] = (heap, inc, n)
        self._whole(name, set(getattr(heap, "_data", heap)), out)

    def _whole(self, name: Any, now: set, out: dict) -> None:
        a = self.was.get(name, set())
        if a != now:
            if now - a:
                out[name, "+"] = now - a
            if a - now:
                out[name, "-"] = a - now
        self.was[name] = now

    def changes(self, ws: Any, tasks: list) -> dict[str, list[str]]:
        """The step's changes; ``tasks``: the ``TaskState`` of each key it named."""
        out: dict[Any, Any] = {}
        self._whole("executing", set(ws.executing), out)
        self._whole("long_running", set(ws.long_running), out)
        self._whole("missing", set(ws.missing_dep_flight), out)
        self._heap("ready", ws.ready, tasks, out)
        self._heap("constrained", ws.constrained, tasks, out)
        peers = set()
        for w, keys in ws.in_flight_workers.items():
            # the peer itself is a member: an entry without keys still means
            # "a transfer from w is under way" to the state machine
            name = ("in_flight_workers", w)
            peers.add(name)
            self._whole(name, set(keys) | {_PEER}, out)
        for w, tss in ws.data_needed.items():
            if tss:  # validate=True can leave empty entries behind
                name = ("data_needed", w)
                peers.add(name)
                self._heap(name, tss, tasks, out)
        for name in [n for n in self.was if type(n) is tuple and n not in peers]:
            if self.was[name]:
                out[name, "-"] = self.was[name]
            del self.was[name]
            self.marks.pop(name, None)
        texts: dict[str, list[str]] = {}
        for (name, sign), members in out.items():
            field, peer = (name, None) if isinstance(name, str) else name
            texts.setdefault(sign + field, []).extend(self._text(ws, field, peer, m, sign) for m in members)
        return {k: sorted(v) for k, v in texts.items()}

    def _text(self, ws: Any, field: str, peer: Optional[str], member: Any, sign: str) -> str:
        if member is _PEER:
            return orjson.dumps([peer]).decode()
        if field == "in_flight_workers":  # keys, not tasks
            return orjson.dumps([peer, orjson.Fragment(self.ktext(member))]).decode()
        text = self.ktext(member.key)
        if sign == "+":
            if ws.tasks.get(member.key) is not member:
                self.strays[text] = [member.state, None if member.priority is None else list(member.priority)]
            elif self.strays:
                self.strays.pop(text, None)
        return text if peer is None else orjson.dumps([peer, orjson.Fragment(text)]).decode()


def rendered_fields() -> dict[str, list]:
    """Per event and instruction class whose text an index makes when read
    (:func:`~replay.render.encoded_text`): its shown fields, in the class's
    order, each with the name of its decoder (:data:`replay.render.DECODERS`).
    A class with a field the log does not hold as its codec decodes it (a
    release's class-only field) is left out: its text is written instead."""
    from schemas import convert as c  # writing only: the codecs' tables import distributed

    from replay.render import _shown_fields

    names = {id(c.PLAIN): "plain", id(c.STR): "plain", id(c.INT): "plain", id(c.BOOL): "plain",
             id(c.OPT_STR): "plain", id(c.OPT_INT): "plain", id(c.FLOAT): "float", id(c.OPT_FLOAT): "opt_float",
             id(c.KEY): "key", id(c.KEYS): "keys", id(c.WHO_HAS): "who_has", id(c.NBYTES_MAP): "nbytes_map",
             id(c.SIZES): "sizes", id(c.PRIORITY): "priority", id(c.RESOURCES): "resources",
             id(c.VALUE): "value", id(c.DROPPED): "none", id(c.TYPE): "none"}
    out: dict[str, list] = {}
    for table, classes in ((c.EVENT_FIELDS, c.EVENT_CLASSES), (c.INSTRUCTION_FIELDS, c.INSTRUCTION_CLASSES)):
        for name, codecs in table.items():
            absent = c.ERA.log_only.get(name, ())
            row = []
            for f in _shown_fields(classes[name]):
                codec = codecs.get(f)
                if codec is None or f in absent or id(codec) not in names or f in c.ERA.class_only.get(name, {}):
                    break
                row.append([f, names[id(codec)]])
            else:
                out[name] = row
    return out


def _crc(sid: str) -> int:
    """Where the index looks for a stimulus id: its CRC-32."""
    return zlib.crc32(sid.encode("utf-8", "surrogatepass"))


def _has_repr(value: Any) -> bool:
    """An encoded value (:func:`schemas.codec.encode_value`) holds an object kept as its ``repr``."""
    if type(value) is list:
        return any(map(_has_repr, value))
    if type(value) is dict:
        return "repr" in value or any(map(_has_repr, value.values()))
    return False


class _Packer:
    """Writes one worker's compressed blocks of one table (``blocks`` or
    ``changes``): zstd, with a dictionary trained on the worker's first
    :data:`TRAIN` blocks (kept in ``dicts``; the blocks repeat the same
    field names, classes and key names, which each small block would
    otherwise spell out again). Blocks are held until it is trained; a worker
    with fewer blocks is compressed without one."""

    def __init__(self, db: sqlite3.Connection, wid: int, table: str):
        self.db, self.wid, self.table = db, wid, table
        self.held: list[tuple[int, bytes]] = []
        self.zc: Optional[zstandard.ZstdCompressor] = None

    def add(self, first: int, raw: bytes) -> None:
        if self.zc is None:
            self.held.append((first, raw))
            if len(self.held) >= TRAIN:
                try:
                    trained = zstandard.train_dictionary(DICT_BYTES, [r for _, r in self.held])
                except zstandard.ZstdError:  # samples it cannot learn from: none
                    trained = None
                self._start(trained)
        else:
            self.db.execute(f"INSERT INTO {self.table} VALUES (?, ?, ?)", (self.wid, first, self.zc.compress(raw)))

    def _start(self, trained: Optional[zstandard.ZstdCompressionDict]) -> None:
        if trained is not None:
            self.db.execute("INSERT INTO dicts VALUES (?, ?, ?)", (self.wid, self.table, trained.as_bytes()))
        self.zc = zstandard.ZstdCompressor(level=LEVEL, dict_data=trained)
        held, self.held = self.held, []
        for first, raw in held:
            self.add(first, raw)

    def close(self) -> None:
        if self.zc is None:
            self._start(None)


def _compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=LEVEL).compress(raw)


def _steps_blob(steps: list) -> bytes:
    """A block of steps' story lines: the JSON of each step after a first
    line of their lengths, so that a query parses the steps it asks for
    only (one step of a block may hold thousands of transitions)."""
    parts = [orjson.dumps(lines) for lines in steps]
    return orjson.dumps([len(p) for p in parts]) + b"\n" + b"".join(parts)


def _steps_of_blob(raw: bytes) -> tuple[memoryview, list[int]]:
    """What :func:`_steps_blob` wrote: the steps' bytes, and where step ``i``
    starts (``ends[i]``) and ends (``ends[i + 1]``)."""
    head = raw.index(b"\n")
    return memoryview(raw)[head + 1:], [0, *accumulate(orjson.loads(raw[:head]))]


def _lean(d: dict, sid: str) -> Optional[int]:
    """Where ``d`` (an event's or instruction's encoding) held the step's
    stimulus id, which it no longer holds (:func:`_full` puts it back); None
    when it held another (kept)."""
    if d.get("stimulus_id") != sid:
        return None
    at = list(d).index("stimulus_id")
    del d["stimulus_id"]
    return at


def _full(line: list, sid: str) -> list:
    """A story line as :func:`_lean` found it: the step's stimulus id back
    in its place in the payload."""
    if len(line) > 4:
        kind = line[0]
        items = list(line[2][kind].items())
        items.insert(line.pop(), ("stimulus_id", sid))
        line[2] = {kind: dict(items)}
    return line


class _Writer:
    """Follows one worker's tapped replay and writes what each step observed.

    Keys are interned (``kid``: the order the worker first named them, by
    equality as ``ws.tasks`` holds them); per key, the steps where its row
    changed, where it moved, where its story has a line, and its requests
    are packed arrays written once at the end; the rows and counters each
    step changed go into a compressed block per :data:`CHANGES` steps.
    """

    def __init__(self, db: sqlite3.Connection, wid: int, address: str, rendered: dict,
                 locate: Optional[Callable[[int], Optional[tuple[int, int]]]] = None):
        # writing replays; only reading must stay free of the state machine
        from replay.requests import OpenRequests
        from schemas.convert import encode_instruction

        self.encode_instruction = encode_instruction

        self.db, self.wid, self.address = db, wid, address
        self.tracker = Tracker()
        #: open requests; a gather's tag is its row of ``gathers``:
        #: [wid, issued, answered (None while open), peer, keys]
        self.gathers: OpenRequests[Optional[list]] = OpenRequests()
        self.gather_rows: list[list] = []
        self.known: set = set()
        #: key -> its kid; kid -> the key encoded (schemas.codec), and as JSON
        self.kids: dict[Any, int] = {}
        self.encoded: list[Any] = []
        self.texts: list[str] = []
        #: kid -> steps: its row changed, it moved (Tracker.changed), its story
        self.changed: list[array] = []
        self.moved: list[array] = []
        self.story: list[array] = []
        #: kid -> [[step, peer]…] of its GatherDeps; steps of its Executes
        self.gathered: dict[int, list] = {}
        self.executed: dict[int, array] = {}
        #: key -> the row last written (JSON), and what it was made of
        self.rows: dict[Any, str] = {}
        self.sigs: dict[Any, tuple] = {}
        #: the rows of the last whole keyframe, and its step
        self.full_rows: dict[Any, str] = {}
        self.full_step: Optional[int] = None
        self.counters: dict = {}
        #: what the counters were made of at the last step (_counters)
        self.sig: tuple = ()
        self.containers = Containers(self.ktext)
        #: container -> its members now, as texts (for keyframes)
        self.members: dict[str, set[str]] = {}
        self.strays: dict[str, list] = {}
        self.block: list = []
        self.block_first = 1
        self.packers = {t: _Packer(db, wid, t) for t in ("blocks", "changes")}
        #: this block's changed steps: [step, [[kid, key, moved, row or None]…], counters change or None]
        self.change_block: list = []
        #: the steps of this run of STEPS: recorded times, stimulus ids, event
        #: classes, and where each step's line is in the log (line, byte
        #: offset; each the difference from the step before's, None: unknown)
        self.steps: tuple[list, list, list, list, list] = ([], [], [], [], [])
        self.steps_first = 1
        #: step -> its line and byte offset in the log, where an event can be read again (_locator)
        self.locate = locate
        self.last_at = (0, 0)
        #: [step, handled, class] of every PauseEvent and UnpauseEvent
        self.pauses: list[list] = []
        #: class -> its shown fields and their decoders, for the classes whose
        #: text is made when read (:func:`rendered_fields`)
        self.rendered = rendered
        #: key -> jsonable(key)
        self.jkeys: dict[Any, Any] = {}

    def kid(self, key: Any) -> int:
        kid = self.kids.get(key)
        if kid is None:
            kid = self.kids[key] = len(self.encoded)
            self.encoded.append(encode_key(key))
            self.texts.append(orjson.dumps(self.encoded[-1]).decode())
            self.changed.append(array("i"))
            self.moved.append(array("i"))
            self.story.append(array("i"))
        return kid

    def ktext(self, key: Any) -> str:
        return self.texts[self.kid(key)]

    def key_names(self) -> dict[str, str]:
        """Each name of the keys met, and what dask's ``key_split`` names its
        tasks (:func:`~replay.literal.task_name`)."""
        names = {key_name(key) for key in self.kids}
        return {name: task_name(name) for name in names if type(name) is str}

    def feed(self, applied: Any, ws: Any) -> None:
        from distributed import worker_state_machine as wsm  # writing only (see __init__)

        call = applied.call
        handled = call.handled
        self.tracker.feed(applied)
        wid = self.wid
        kid = self.kid
        for s in applied.steps():  # one: build() feeds a batch one event at a time
            ev = s.event
            step = s.step
            sid = ev.stimulus_id
            named = event_keys(ev)
            self.known |= named
            tag = self.gathers.answered(ev)
            answered = []
            if tag is not None:
                tag[2] = step
                answered = tag[5]
            cls = type(ev).__name__
            steps = self.steps
            steps[0].append(handled)
            steps[1].append(sid)
            steps[2].append(cls)
            at = None if self.locate is None else self.locate(step)
            if at is None:
                steps[3].append(None)
                steps[4].append(None)
            else:
                steps[3].append(at[0] - self.last_at[0])
                steps[4].append(at[1] - self.last_at[1])
                self.last_at = at
            if cls in ("PauseEvent", "UnpauseEvent"):
                self.pauses.append([step, handled, cls])
            touched = set(named) | set(answered)
            # an event's and an instruction's text is made when read (encoded_text)
            # from its payload, a transition's too (transition_text)
            text = None if cls in self.rendered else event_text(ev)
            if at is not None:  # read from the log when asked for (IndexedWorker._fill)
                lines = [["event", text, None, [kid(k) for k in touched]]]
            else:
                event = dict(s.record["event"])  # the reader's own stays as read
                where = _lean(event, sid)
                lines = [["event", text, {"event": event}, [kid(k) for k in touched]]]
                if where is not None:
                    lines[0].append(where)
            # the instructions the log holds for the step, if it is read again
            recorded = None if at is None else s.record.get("instructions")
            for entry in s.log:
                keys = entry_keys(entry, self.known)
                touched.update(keys)
                if is_transition(entry):
                    lines.append(["transition", None, self._transition(entry), [kid(k) for k in keys]])
                else:
                    lines.append(["log", line_text("log", entry), line_data("log", entry), [kid(k) for k in keys]])
            for j, inst in enumerate(s.instructions):
                keys = instruction_keys(inst)
                touched |= keys
                enc = self.encode_instruction(inst)
                line = ["instruction", None if self._renders(inst, enc) else line_text("instruction", inst),
                        {"instruction": enc}, [kid(k) for k in keys]]
                if recorded is not None and j < len(recorded) and recorded[j] == enc \
                        and orjson.dumps(recorded[j]) == orjson.dumps(enc):
                    line[2] = j  # the recorded one, spelled alike: read from the log when asked for
                else:
                    where = _lean(enc, sid)
                    if where is not None:
                        line.append(where)
                lines.append(line)
                row = None
                if isinstance(inst, wsm.GatherDep):
                    gkeys = sorted(inst.to_gather, key=sort_key)
                    row = [wid, step, None, inst.worker, orjson.dumps([encode_key(k) for k in gkeys]).decode(),
                           gkeys]
                    self.gather_rows.append(row)
                    for k in inst.to_gather:
                        self.gathered.setdefault(kid(k), []).append([step, inst.worker])
                elif isinstance(inst, wsm.Execute):
                    self.executed.setdefault(kid(inst.key), array("i")).append(step)
                self.gathers.issued(inst, row)
            if applied.exception is not None:
                lines.append(["raised", line_text("raised", applied.exception),
                              line_data("raised", applied.exception), [kid(k) for k in named]])
            if isinstance(ev, (wsm.GatherDepNetworkFailureEvent, wsm.RemoveWorkerEvent)):
                touched |= set(ws.tasks) | set(self.rows)  # a peer left every who_has
            self._block(lines)
            story = self.story
            for k in {k for line in lines for k in line[3]}:
                story[k].append(step)
            # as the Tracker decides: a task changed if the step left it elsewhere
            tasks = self._tasks(step, touched, ws, changed_states(s.log).keys())
            counters = self._counters(ws, [ts for ts in map(ws.tasks.get, touched) if ts is not None])
            if tasks or counters:
                self.change_block.append([step, tasks, counters])
            if step % CHANGES == 0:
                self._write_changes()
            if step % KEYFRAME == 0:
                self._keyframe(step)
        if len(self.steps[0]) >= STEPS:
            self.flush()

    def _jkey(self, key: Any) -> Any:
        """``jsonable(key)``, once per key."""
        j = self.jkeys.get(key)
        if j is None:
            j = self.jkeys[key] = jsonable(key)
        return j

    def _transition(self, entry: tuple) -> dict:
        """``line_data("transition", entry)``, with each key's JSON made once."""
        key, start, finish, final, recs, _, _ = entry
        if all(type(k) is str for k in recs):
            r: Any = {k: v if type(v) is str else jsonable(v) for k, v in recs.items()}
        else:
            r = [[self._jkey(k), v if type(v) is str else jsonable(v)] for k, v in recs.items()]
        return {"transition": {"key": self._jkey(key), "start": start, "finish": finish, "final": final,
                               "recommendations": r}}

    def _renders(self, inst: Any, enc: dict) -> bool:
        """Whether :func:`~replay.render.encoded_text` of ``enc`` spells the
        instruction as :func:`~replay.render.event_text` does: a value kept as
        its ``repr`` (a ``{"repr": …}`` tag) or a dropped field that the
        object holds as more than bytes would not."""
        fields = self.rendered.get(type(inst).__name__)
        if fields is None:
            return False
        for name, codec in fields:
            if codec == "none":
                v = getattr(inst, name)
                if v is not None and not isinstance(v, bytes):
                    return False
            elif codec == "value" and _has_repr(enc[name]):
                return False
        return True

    def _block(self, lines: list) -> None:
        self.block.append(lines)
        if len(self.block) == BLOCK:
            self._write_block()

    def _write_block(self) -> None:
        if self.block:
            self.packers["blocks"].add(self.block_first, _steps_blob(self.block))
            self.block_first += len(self.block)
            self.block = []

    def _write_changes(self) -> None:
        """The changes since the last block, as one block (its steps are one
        run of :data:`CHANGES`: it is written at each multiple)."""
        if self.change_block:
            first = (self.change_block[0][0] - 1) // CHANGES * CHANGES + 1
            self.packers["changes"].add(first, orjson.dumps(self.change_block))
            self.change_block = []

    def _tasks(self, step: int, touched: set, ws: Any, moved_keys: Any) -> list:
        out = []
        for key in touched:
            ts = ws.tasks.get(key)
            was = self.rows.get(key)
            moved = key in moved_keys
            if ts is None:
                if was is not None:
                    del self.rows[key]
                    del self.sigs[key]
                    k = self.kid(key)
                    self.changed[k].append(step)
                    if moved:
                        self.moved[k].append(step)
                    out.append([k, self.encoded[k], int(moved), None])
                continue
            # what task_row reads, compared first: a step names more tasks than it changes
            rr = ts.resource_restrictions
            sig = (ts.state, ts.previous, ts.next, ts.priority, ts.nbytes, ts.coming_from, ts.run_id,
                   ts.exception_text, frozenset(ts.who_has), frozenset(ts.dependencies),
                   tuple(rr.items()) if rr else None)
            if was is not None and self.sigs[key] == sig:
                if not moved:
                    continue
                row = was
            else:
                self.sigs[key] = sig
                row = task_row(ts, self.ktext)
                if row != was:
                    self.rows[key] = row
                elif not moved:
                    continue
            k = self.kid(key)
            self.changed[k].append(step)
            if moved:
                self.moved[k].append(step)
            out.append([k, self.encoded[k], int(moved), orjson.Fragment(row)])
        return out

    def _keyframe(self, step: int) -> None:
        enc, kids = self.encoded, self.kids
        frame: dict[str, Any] = {
            "counters": {**self.counters, "strays": self.strays},
            "members": {f: sorted(m) for f, m in self.members.items()},
        }
        if self.full_step is None or step // KEYFRAME % FULL == 0:
            frame["tasks"] = [[enc[kids[k]], orjson.Fragment(v)] for k, v in self.rows.items()]
            self.full_rows, self.full_step = dict(self.rows), step
        else:  # the rows that differ from the last whole keyframe's (None: gone)
            full = self.full_rows
            frame["base"] = self.full_step
            frame["tasks"] = [[enc[kids[k]], orjson.Fragment(v)] for k, v in self.rows.items()
                              if full.get(k) is not v] + [[enc[kids[k]], None] for k in full if k not in self.rows]
        self.db.execute("INSERT INTO keyframes VALUES (?, ?, ?)",
                        (self.wid, step, _compress(orjson.dumps(frame))))

    def _counters(self, ws: Any, tasks: list) -> Optional[dict]:
        # what counters_row reads, compared first: most steps change none of it
        sig = (ws.nthreads, ws.transfer_incoming_count, ws.transfer_incoming_count_limit,
               ws.transfer_incoming_bytes, ws.transfer_incoming_bytes_limit, ws.nbytes, ws.running,
               tuple(ws.total_resources.items()), tuple(ws.available_resources.items()),
               frozenset(ws.busy_workers))
        changed = {}
        if sig != self.sig:
            self.sig = sig
            c = counters_row(ws)
            changed = {k: v for k, v in c.items() if self.counters.get(k) != v}
            self.counters = c
        # "+f" / "-f": the members the step added to and removed from container f
        for name, texts in self.containers.changes(ws, tasks).items():
            changed[name] = texts
            members = self.members.setdefault(name[1:], set())
            (members.update if name[0] == "+" else members.difference_update)(texts)
        strays = self.containers.strays
        if strays != self.strays:
            changed["strays"] = self.strays = dict(strays)
        return changed or None

    def flush(self) -> None:
        handled = self.steps[0]
        sids = self.steps[1]
        if handled:
            times = [t for t in handled if t is not None]
            crcs = array("I", sorted({_crc(sid) for sid in sids}))
            self.db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?)", (
                self.wid, self.steps_first, min(times) if times else None, crcs.tobytes(),
                _compress(orjson.dumps(self.steps))))
            self.steps_first += len(handled)
            self.steps = ([], [], [], [], [])
            self.last_at = (0, 0)

    def close(self) -> None:
        self._write_block()
        self._write_changes()
        for packer in self.packers.values():
            packer.close()
        self.flush()
        self.db.executemany("INSERT INTO gathers VALUES (?, ?, ?, ?, ?)", [r[:5] for r in self.gather_rows])
        self.db.executemany("INSERT INTO keys VALUES (?, ?, ?)",
                            ((self.wid, _crc(text), k) for k, text in enumerate(self.texts)))
        for first in range(0, len(self.encoded), KIDS):
            rows = [[self.encoded[k], _deltas(self.changed[k]), _deltas(self.moved[k]), _deltas(self.story[k]),
                     self.gathered.get(k, []), _deltas(self.executed.get(k, ()))]
                    for k in range(first, min(first + KIDS, len(self.encoded)))]
            # a line per key: a query parses the one it asks for
            self.db.execute("INSERT INTO kids VALUES (?, ?, ?)",
                            (self.wid, first, _compress(b"\n".join(map(orjson.dumps, rows)))))


def build(history: Any, path: Optional[str] = None, *, progress: Any = None) -> str:
    """Replay every worker of ``history`` once and write its index; returns its path.

    ``progress(worker, step)`` is told how far each worker got.
    """
    path = path or index_path(history.log.source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    db = sqlite3.connect(tmp)
    try:
        # a scratch file until it is complete: no journal. A page cache of 32 MB:
        # at 1M events 256 MB raised the build's peak RSS by 95 MB and saved
        # no CPU (the index is written once, in order)
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-32768;"
                         # small pages: less of each compressed block's last page left empty
                         " PRAGMA page_size=1024;"
                         + _SCHEMA)
        rendered = rendered_fields()
        names: dict[str, str] = {}
        for wid, wh in enumerate(history.workers):
            w = _Writer(db, wid, wh.address, rendered, _locator(history, wh))
            crash = crash_step = invariant = None
            cb = None if progress is None else (lambda step, a=wh.address: progress(a, step))
            r = wh.replayer(tap_log=True, follow_recording=True)
            try:
                with rare_collections():  # as every replay collects garbage
                    for call in wh.calls(records=True):
                        for one in _one_by_one(call):
                            w.feed(r.apply(one), r.ws)
                        if cb is not None:
                            cb(r.seq)
            except ReplayError as e:  # a finding about the log: the index ends where replay did
                crash, crash_step = str(e), e.step
            w.close()
            names.update(w.key_names())
            ws = r.ws
            if crash is None:
                try:
                    ws.validate_state()
                except Exception as e:  # whatever validation raises, the state is broken
                    invariant = Failure.of(e).to_json()
            wlog = wh.wlog
            info = {
                "header": wh.header, "event_counts": dict(sorted(wlog.event_counts.items())),
                "first_handled": wlog.first_handled, "last_handled": wlog.last_handled,
                "ended": wlog.ended, "end_reason": wlog.end_reason, "warnings": list(r.warnings),
                "crash": crash, "crash_step": crash_step, "invariant": invariant, "reached": w.tracker.now.step,
                "departed": departure(r.departed), "pauses": w.pauses,
                # steps the longest answered gather stayed open (open_gathers looks that far back)
                "gather_span": max((a - i for _, i, a, *_ in w.gather_rows if a is not None), default=0),
                "raised": [{**r.to_json(), "key": None if r.key is None else encode_key(r.key)}
                           for r in w.tracker.raised],
            }
            db.execute("INSERT INTO workers VALUES (?, ?, ?, ?)",
                       (wid, wh.address, wh.events, orjson.dumps(info).decode()))
        db.executescript(_INDEXES)
        ident = identity(history.log.source) if history.path != "<stdin>" else {}
        ident["code"] = code_identity()
        # what reading the log found (a torn last line…): said again by every answer
        ident["warnings"] = list(history.warnings)
        ident["fields"] = rendered
        # a fresh process shortens keys without importing dask (learn_key_names)
        ident["key_names"] = names
        db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, orjson.dumps(v).decode()) for k, v in ident.items()])
        db.commit()
    finally:
        db.close()
    os.replace(tmp, path)
    lock = path + ".lock"
    if os.path.exists(lock) and _indexer_running(lock) in (None, os.getpid()):
        for done in (lock, path + ".stderr"):
            try:
                os.unlink(done)
            except FileNotFoundError:  # another indexer of the log got there first
                pass
    return path


def _locator(history: Any, wh: Any) -> Optional[Callable[[int], Optional[tuple[int, int]]]]:
    """Where each step's line is in a log of one uncompressed file: its line
    number and byte offset, from the reading's scan (the index then keeps
    where its event is, not the event: the index is current only while the
    log is the same, by size, mtime and head). None for any other log."""
    log = history.log
    if history.path == "<stdin>" or log.files is not None:
        return None
    with open(log.source, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            return None
    wlog = wh.wlog
    seqs, lines, offsets = wlog.seqs, wlog.lines, wlog.offsets
    if not (len(seqs) == len(lines) == len(offsets)):
        return None

    def locate(step: int) -> Optional[tuple[int, int]]:
        # a resources record carries the step it precedes: the step's line is the last
        i = bisect_right(seqs, step) - 1
        return (lines[i], offsets[i]) if i >= 0 and seqs[i] == step else None

    return locate


def _one_by_one(call: Any) -> Iterator[Any]:
    """A batch as one call per event, so that the state after each is seen.

    Exact: the state machine handles a batch's events one after another. Each
    part keeps the recorded error (the state machine may raise in any of
    them); the last keeps the recorded instructions of the whole call.
    """
    n = len(call.events)
    if n == 1:
        yield call
        return
    from replay.reader import RecordedCall  # writing only: the reader decodes with distributed

    for i in range(n):
        yield RecordedCall(
            call.events[i:i + 1], call.first + i, call.lines[i:i + 1], call.handled,
            call.resources if i == 0 else [], call.instructions if i == n - 1 else None, call.error,
            None if call.records is None else call.records[i:i + 1],
            # which event stored the failing value is not recorded: each may
            store_failed=call.store_failed, cut=i < n - 1,
        )


# --- reading ----------------------------------------------------------------------


class Index:
    """An index that is current for its log: a :class:`~replay.source.Source`."""

    kind = "indexed"

    def __init__(self, log: LogName, path: str):
        self.log = log
        #: the log's name in messages, as every source has it
        self.path = log_name(log)
        #: where the index is
        self.file = path
        # read-only: a query never changes the index
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        row = self.db.execute("SELECT value FROM meta WHERE name = 'warnings'").fetchone()
        self.warnings: list[str] = [] if row is None else orjson.loads(row[0])
        (fields,) = self.db.execute("SELECT value FROM meta WHERE name = 'fields'").fetchone()
        #: class -> its shown fields, for the texts made when read (rendered_fields)
        self.fields: dict[str, list] = orjson.loads(fields)
        (names,) = self.db.execute("SELECT value FROM meta WHERE name = 'key_names'").fetchone()
        learn_key_names(orjson.loads(names))
        self.workers = [
            IndexedWorker(self, wid, address, events, orjson.loads(info))
            for wid, address, events, info in self.db.execute(
                "SELECT wid, address, events, info FROM workers ORDER BY wid")
        ]

    @classmethod
    def open(cls, log: LogName) -> Optional[Index]:
        """The index of ``log`` if there is one and it is current, else None."""
        if log == "-":
            return None
        path = index_path(log)
        if not os.path.exists(path):
            return None
        try:
            want = identity(log)
        except OSError:
            return None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                have = {k: orjson.loads(v) for k, v in db.execute("SELECT name, value FROM meta")}
            finally:
                db.close()
        except sqlite3.DatabaseError:  # not an index, or torn: build it anew
            return None
        code = have.pop("code", None)
        have.pop("warnings", None)
        have.pop("fields", None)
        have.pop("key_names", None)
        if have != want or code is None or not same_code(code):
            return None
        return cls(log, path)

    def disagreements(self, at: dict[str, int]) -> list:
        """Where the workers (and the scheduler, with its log) disagree about
        a key, each worker at the step ``at`` names."""
        return find(self.workers, at, self.scheduler_log)

    @property
    def scheduler_log(self) -> Any:
        """The scheduler's log beside this one (read as recorded, never indexed)."""
        if not hasattr(self, "_scheduler_log"):
            self._scheduler_log = attach_scheduler_log(self.path, [w.address for w in self.workers])
        return self._scheduler_log

    def scheduler_task(self, key: Any) -> Any:
        """From the log itself: the index does not hold the scheduler's view
        (asked only of a key no worker has)."""
        from replay.partial import scheduler_task  # replay.partial imports this module

        return scheduler_task(self.log, key)

    def worker(self, which: Any = None) -> IndexedWorker:
        return self.workers[choose_worker([w.address for w in self.workers], which)]


class IndexedWorker:
    """One worker's views, read from the index."""

    def __init__(self, index: Index, wid: int, address: str, events: int, info: dict):
        self.index, self.wid, self.address, self.events, self.info = index, wid, address, events, info
        self.db = index.db
        #: keyframe step -> (rows, counters), the last few decoded
        self._frames: dict[int, tuple[dict, dict]] = {}
        #: first step -> a block of changes, the last few decoded (never changed)
        self._blocks: dict[int, list] = {}
        #: first step -> a run of steps (_run), the last few decoded
        self._runs: dict[int, tuple[list, list, list]] = {}
        #: the step :meth:`frozen` was asked last, its rows and counters (never changed)
        self._last: Optional[tuple[int, dict, dict]] = None
        #: every run's first step and earliest time (:meth:`_step_runs`)
        self._step_runs_read: Optional[list[tuple[int, Optional[float]]]] = None
        #: first kid -> a row of kids, a line per key, the last few decompressed
        self._kids: dict[int, list[bytes]] = {}
        #: first step of a run -> its steps' lines and byte offsets in the log
        self._wheres: dict[int, tuple[list, list]] = {}
        self._times: Optional[list[Optional[float]]] = None
        #: table -> the decompressor of its blobs (with the worker's dictionary, if any)
        self._unpackers: dict[str, zstandard.ZstdDecompressor] = {}

    def _unpack(self, table: str, blob: bytes) -> Any:
        """A blob of ``table`` as the writer packed it (:class:`_Packer`, :func:`_compress`)."""
        return orjson.loads(self._raw(table, blob))

    def _raw(self, table: str, blob: bytes) -> bytes:
        """A blob of ``table`` decompressed."""
        d = self._unpackers.get(table)
        if d is None:
            row = self.db.execute("SELECT data FROM dicts WHERE wid = ? AND kind = ?", (self.wid, table)).fetchone()
            d = self._unpackers[table] = zstandard.ZstdDecompressor(
                dict_data=None if row is None else zstandard.ZstdCompressionDict(row[0]))
        return d.decompress(blob)

    @property
    def ended(self) -> bool:
        return self.info["ended"]

    @property
    def last_handled(self) -> Optional[float]:
        return self.info["last_handled"]

    def raised(self, step: int) -> list:
        """The steps up to ``step`` at which the state machine raised."""

        return [RaisedStep(**{**r, "key": None if r["key"] is None else decode_key(r["key"])})
                for r in self.info["raised"] if r["step"] <= step]

    # --- positions ----------------------------------------------------

    def position(self, pos: Any) -> int:
        return step_of(pos, self.address, self.events, self._last_step_of, self._stimulus_ids)

    def _stimulus_ids(self) -> list[str]:
        return list(dict.fromkeys(sid for first, _ in self._step_runs() for sid in self._run(first)[1]))

    def _last_step_of(self, stimulus_id: str) -> Optional[int]:
        steps = self._steps_of(stimulus_id, self.events)
        return steps[-1] if steps else None

    def _step_runs(self) -> list[tuple[int, Optional[float]]]:
        """Each run of steps: its first step and its earliest recorded time
        (read once: an index is never written after it is opened)."""
        if self._step_runs_read is None:
            self._step_runs_read = self.db.execute(
                "SELECT first, low FROM steps WHERE wid = ? ORDER BY first", (self.wid,)).fetchall()
        return self._step_runs_read

    def _where(self, step: int) -> tuple[int, int]:
        """The line and byte offset of ``step``'s line in the log (the writer knew them)."""
        first = (step - 1) // STEPS * STEPS + 1
        at = self._wheres.get(first)
        if at is None:
            run = self._run(first)
            at = self._wheres[first] = ([], [])
            for i in (3, 4):
                n = 0
                for d in run[i]:
                    if d is not None:
                        n += d
                    at[i - 3].append(n)
            while len(self._wheres) > 8:
                del self._wheres[next(iter(self._wheres))]
        return at[0][step - first], at[1][step - first]

    def _fill(self, found: list[tuple[int, list]]) -> None:
        """The payloads of these story lines that the index left in the log
        (an event: None; a recorded instruction: its place in the step's
        ``instructions``), read there (``found``: ``(step, line)``, ascending
        steps)."""
        want: dict[int, list] = {}
        for step, line in found:
            if line[2] is None or type(line[2]) is int:
                want.setdefault(step, []).append(line)
        if not want:
            return
        at = [self._where(step) for step in want]
        read = lines_at(self.index.path, [a[0] for a in at], [a[1] for a in at], source=self.index.log)
        for (step, lines), (lineno, rec) in zip(want.items(), read):
            if rec.get("kind") != "step" or rec.get("seq") != step or "event" not in rec:
                raise LogError(self.index.path, lineno, "not the record indexed: the log changed since it was indexed")
            for line in lines:
                line[2] = {"event": rec["event"]} if line[2] is None else {"instruction": rec["instructions"][line[2]]}

    def _run(self, first: int) -> tuple[list, list, list]:
        """The run of steps from ``first``: their times, stimulus ids and classes (the last few kept)."""
        return self._cached(self._runs, "steps", first, 8)

    def _cached(self, cache: dict, table: str, first: int, most: int) -> Any:
        """The decompressed block of ``table`` from ``first``, kept in ``cache`` (the ``most`` last read)."""
        block = cache.get(first)
        if block is None:
            (data,) = self.db.execute(f"SELECT data FROM {table} WHERE wid = ? AND first = ?",
                                      (self.wid, first)).fetchone()
            block = cache[first] = self._unpack(table, data)
            while len(cache) > most:
                del cache[next(iter(cache))]
        return block

    def _stored(self) -> int:
        """The last step the index holds (replay stopped there, or the log did)."""
        runs = self._step_runs()
        return 0 if not runs else runs[-1][0] + len(self._run(runs[-1][0])[0]) - 1

    def _step(self, step: int) -> tuple[Optional[float], str, str]:
        """A step's recorded time, stimulus id and event class."""
        first = (step - 1) // STEPS * STEPS + 1
        run = self._run(first)
        i = step - first
        return run[0][i], run[1][i], run[2][i]

    def _steps_of(self, stimulus_id: str, stop: int) -> list[int]:
        """The steps up to ``stop`` that carry ``stimulus_id``, ascending."""
        crc = _crc(stimulus_id)
        out = []
        for first, crcs in self.db.execute("SELECT first, sids FROM steps WHERE wid = ? AND first <= ?"
                                           " ORDER BY first", (self.wid, stop)):
            packed = _unsigned(crcs)
            i = bisect_right(packed, crc)
            if i and packed[i - 1] == crc:
                sids = self._run(first)[1]
                out += [first + i for i, sid in enumerate(sids) if sid == stimulus_id and first + i <= stop]
        return out

    def step_times(self) -> list[Optional[float]]:
        """The recorded time of every step, in order (read once)."""
        if self._times is None:
            self._times = [t for first, _ in self._step_runs() for t in self._run(first)[0]]
        return self._times

    def step_at_time(self, t: Optional[float]) -> int:
        """The last step this worker had handled at recorded time ``t`` (0: none yet)."""
        if t is None:
            return 0
        for first, low in reversed(self._step_runs()):
            # a run whose earliest time is later holds no such step
            if low is not None and low <= t:
                times = self._run(first)[0]
                for i in range(len(times) - 1, -1, -1):
                    if times[i] is not None and times[i] <= t:
                        return first + i
        return 0

    def key_row(self, key: Any) -> Optional[tuple]:
        """What the index keeps of ``key`` (None: the worker never named it):
        its kid, the steps its row changed, it moved, its story has a line
        (arrays), its gathers ``[[step, peer]…]``, its executes (array)."""
        text = _ktext(key)
        # the first key of that spelling (the CRC-32 of another may be the same)
        for (kid,) in self.db.execute("SELECT kid FROM keys WHERE wid = ? AND crc = ? ORDER BY kid",
                                      (self.wid, _crc(text))):
            enc, changed, moved, story, gathers, executes = self._kid(kid)
            if orjson.dumps(enc).decode() == text:
                return kid, _steps(changed), _steps(moved), _steps(story), gathers, _steps(executes)
        return None

    def _kid(self, kid: int) -> list:
        """The row of ``kids`` that holds ``kid``'s: its encoding and packed steps."""
        first = kid // KIDS * KIDS
        lines = self._kids.get(first)
        if lines is None:
            (data,) = self.db.execute("SELECT data FROM kids WHERE wid = ? AND first = ?", (self.wid, first)).fetchone()
            lines = self._kids[first] = self._raw("kids", data).split(b"\n")
            while len(self._kids) > 64:
                del self._kids[next(iter(self._kids))]
        return orjson.loads(lines[kid - first])

    def _storied(self) -> set:
        """Every key with a story line."""
        return {decode_key(row[0]) for (data,) in self.db.execute("SELECT data FROM kids WHERE wid = ?", (self.wid,))
                for row in map(orjson.loads, self._raw("kids", data).split(b"\n")) if row[3]}

    def task_at(self, key: Any, step: int) -> Optional[list]:
        """The row of ``key`` after ``step`` (None if the worker had no such task):
        every change of a row is in ``changes``."""
        found = self.key_row(key)
        if found is None:
            return None
        kid, changed = found[0], found[1]
        i = bisect_right(changed, step)
        if i == 0:
            return None
        at = changed[i - 1]
        for _, tasks, _ in self._changes(at - 1, at):
            for k, _, _, row in tasks:
                if k == kid:
                    return row
        raise AssertionError(f"index of {self.address}: no change of kid {kid} at step {at}")

    def _changes(self, after: int, until: int) -> Iterator[list]:
        """The changes of the steps in (``after``, ``until``], in order:
        ``[step, [[kid, key, moved, row or None]…], counters change or None]``."""
        for (first,) in self.db.execute("SELECT first FROM changes WHERE wid = ? AND first > ? AND first <= ?"
                                        " ORDER BY first", (self.wid, after // CHANGES * CHANGES, until)):
            block = self._cached(self._blocks, "changes", first, 16)
            for entry in block:
                if after < entry[0] <= until:
                    yield entry

    def _step_row(self, step: int) -> tuple[str, Optional[float]]:
        if step == 0:
            return "", None
        handled, sid, _ = self._step(step)
        return sid, handled

    # --- the worker at a step -------------------------------------------

    def _keyframe(self, step: int) -> tuple[int, dict, dict]:
        """The last keyframe at or before ``step``: its step, rows and counters,
        decoded once and kept (a stepper asks near the same place again)."""
        row = self.db.execute("SELECT max(step) FROM keyframes WHERE wid = ? AND step <= ?",
                              (self.wid, step)).fetchone()
        since = row[0] or 0
        rows, counters = self._frame(since)
        return since, rows, counters

    def _frame(self, since: int) -> tuple[dict, dict]:
        """The rows and counters of the keyframe at step ``since``, a
        keyframe between whole ones made whole (its whole one is kept too)."""
        cached = self._frames.get(since)
        if cached is None:
            rows: dict[Any, list] = {}
            counters = _initial_counters(self.info["header"])
            if since:
                (blob,) = self.db.execute("SELECT data FROM keyframes WHERE wid = ? AND step = ?",
                                          (self.wid, since)).fetchone()
                data = self._unpack("keyframes", blob)
                if "base" in data:
                    rows = dict(self._frame(data["base"])[0])
                    for k, r in data["tasks"]:
                        if r is None:
                            del rows[decode_key(k)]
                        else:
                            rows[decode_key(k)] = r
                else:
                    rows = {decode_key(k): r for k, r in data["tasks"]}
                counters.update(data["counters"])
                for f, members in data["members"].items():
                    counters[f] = frozenset(members)
            cached = self._frames[since] = (rows, counters)
            while len(self._frames) > 6:
                del self._frames[next(iter(self._frames))]
        return cached

    @collecting_rarely
    def frozen(self, step: int) -> FrozenReplayer:
        """The stand-in ``WorkerState`` at ``step``: the last keyframe before
        it and the changes since, or, where it lies between them, the step
        asked last and the changes since that (a diff's second state, a
        stepper's next step)."""
        since, frame_rows, frame_counters = self._keyframe(step)
        if self._last is not None and since <= self._last[0] <= step:
            since, frame_rows, frame_counters = self._last
        # copies: the cached keyframe stays as it was (rows themselves are never changed)
        rows = dict(frame_rows)
        counters = dict(frame_counters)
        for _, tasks, change in self._changes(since, step):
            for _, key, _, row in tasks:
                if row is None:
                    rows.pop(decode_key(key), None)
                else:
                    rows[decode_key(key)] = row
            if change is not None:
                apply_change(counters, change)
        self._last = (step, rows, counters)
        sid, handled = self._step_row(step)
        return FrozenReplayer(FrozenWorker(self.address, rows, counters), step, sid, handled)

    def _reach(self, step: int) -> tuple[int, Optional[str]]:
        """The step that answers for ``step``: past a crash, the last one
        replay reached (:func:`~replay.views.reach`, as a replay answers)."""
        crash = self.info.get("crash")
        return reach(step, self.events, None if crash is None else (self.info["crash_step"], crash))

    @collecting_rarely
    def state(self, step: int, states: Any = (), keys: Any = (), detail: bool = False) -> Any:
        at, note = self._reach(step)
        view = StateView.of(self.frozen(at), states=states, keys=keys, detail=detail, strict=True)
        view.raised = self.raised(at)
        view.gathers = self.open_gathers(at)
        view.note = notes(note, self.departure_note(at))
        return view

    def departure_note(self, step: int) -> Optional[str]:
        """What an answer about ``step`` says of where replay departed from the recording."""
        dep = self.info["departed"]
        return departed_note(None if dep is None else tuple(dep), step)

    def open_gathers(self, step: int) -> list:
        """The gathers issued by ``step`` and not answered by it, oldest first."""
        # one answered after step was issued at most the longest span before it
        rows = self.db.execute(
            "SELECT issued, peer, keys FROM gathers WHERE wid = ? AND issued BETWEEN ? AND ? AND answered > ?"
            " UNION ALL SELECT issued, peer, keys FROM gathers WHERE wid = ? AND answered IS NULL AND issued <= ?",
            (self.wid, step - self.info["gather_span"], step, step, self.wid, step))
        return sorted((Gather(issued, self._step(issued)[0], peer, tuple(decode_key(k) for k in orjson.loads(keys)))
                       for issued, peer, keys in rows), key=lambda g: (g.step, g.peer))

    @collecting_rarely
    def diff(self, first: int, last: int) -> Any:
        before, after = self.state(first), self.state(last)
        last = after.step  # a replay that stopped early: the steps it reached
        rows = [(step, *self._step(step)) for step in range(first + 1, min(last, first + DIFF_STEPS, self._stored()) + 1)]
        # a step's first story line is its event, in words
        sids = {r[0]: r[2] for r in rows}
        events = [(step, lines[0]) for step, lines in self._lines(list(sids))]
        self._fill(events)
        texts = {step: self._text(line, sids[step]) for step, line in events}
        briefs = [StepBrief(step, handled, sid, cls, texts[step]) for step, handled, sid, cls in rows]
        return DiffView(before, after, briefs, last - first)

    # --- stories -----------------------------------------------------------

    def _text(self, line: list, sid: str) -> str:
        """A story line's text: made here from its payload unless the writer
        kept it; its payload made whole (:func:`_full`) with the step's
        stimulus id ``sid``."""
        _full(line, sid)
        if line[1] is None:
            kind = line[0]
            if kind == "transition":
                line[1] = transition_text(line[2]["transition"])
            else:
                d = line[2][kind]
                line[1] = encoded_text(d, self.index.fields[d["cls"]])
        return line[1]

    def _lines(self, steps: list[int]) -> Iterator[tuple[int, list]]:
        """The story lines of ``steps`` (ascending), read block by block and
        parsed step by step; a line's text may be None until :meth:`_text`
        makes it."""
        first = -1
        for step in steps:
            want = (step - 1) // BLOCK * BLOCK + 1
            if want != first:
                (data,) = self.db.execute("SELECT data FROM blocks WHERE wid = ? AND first = ?",
                                          (self.wid, want)).fetchone()
                block, ends = _steps_of_blob(self._raw("blocks", data))
                first = want
            i = step - first
            yield step, orjson.loads(block[ends[i]:ends[i + 1]])

    @collecting_rarely
    def lines_of(self, step: int) -> list:
        """The story lines of one step: ``[kind, text, payload, keys]`` each."""
        lines = next(self._lines([step]))[1]
        self._fill([(step, line) for line in lines])
        sid = self._step(step)[1]
        for line in lines:
            self._text(line, sid)
        return lines

    def _handled(self, steps: list[int]) -> dict[int, tuple[float, str]]:
        if not steps:
            return {}
        out = {}
        for step in steps:
            handled, sid, _ = self._step(step)
            out[step] = (handled, sid)
        return out

    def _start(self) -> Optional[float]:
        return self.info["first_handled"]

    @collecting_rarely
    def key_story(self, stop: int, *keys: Any) -> Any:
        stop, note = self._reach(stop)
        found = [f for f in map(self.key_row, keys) if f is not None]
        wanted = {f[0] for f in found}
        steps = sorted({s for f in found for s in f[3][:bisect_right(f[3], stop)]})
        times = self._handled(steps)
        found = [(step, line) for step, step_lines in self._lines(steps) for line in step_lines
                 if not wanted.isdisjoint(line[3])]
        self._fill(found)
        lines = []
        for step, line in found:
            handled, sid = times[step]
            text = self._text(line, sid)
            lines.append(StoryLine(step, handled, self.address, sid, line[0], text, line[2]))
        if not lines:
            raise NotFound(no_such_key(set(keys), self._storied(), self.address))
        about = ", ".join(sorted(key_text(k) for k in keys))
        return Story(about, lines, self._start(), keys=sorted(keys, key=sort_key), note=note)

    @collecting_rarely
    def stimulus_story(self, stop: int, stimulus_id: str) -> Any:
        stop, note = self._reach(stop)
        rows = [(step, self._step(step)[0]) for step in self._steps_of(stimulus_id, stop)]
        if not rows:
            raise NotFound(f"no step of {self.address} has stimulus id {stimulus_id!r}")
        times = dict(rows)
        found = [(step, line) for step, step_lines in self._lines([s for s, _ in rows]) for line in step_lines]
        self._fill(found)
        lines = []
        for step, line in found:
            text = self._text(line, stimulus_id)
            lines.append(StoryLine(step, times[step], self.address, stimulus_id, line[0], text, line[2]))
        return Story(f"stimulus {stimulus_id}", lines, self._start(), stimulus_id=stimulus_id, note=note)

    # --- why -------------------------------------------------------------

    def tracker(self, step: int) -> Any:
        return IndexTracker(self, step)

    @collecting_rarely
    def why(self, step: int, key: Any = None) -> Any:
        at, note = self._reach(step)
        view = why_view(self.frozen(at), self.tracker(at), key)
        view.note = notes(note, self.departure_note(at))
        return view

    @collecting_rarely
    def summary(self) -> Any:
        info = self.info
        step = info["reached"]
        r = self.frozen(step)
        tracker = self.tracker(step)
        states: dict[str, int] = {}
        for ts in r.ws.tasks.values():
            states[ts.state] = states.get(ts.state, 0) + 1
        inv = info["invariant"]
        return WorkerSummary(
            address=self.address, events=self.events, event_counts=info["event_counts"],
            first_handled=info["first_handled"], last_handled=info["last_handled"],
            deterministic=bool(info["header"].get("deterministic")), ended=info["ended"],
            end_reason=info["end_reason"],
            task_states=dict(sorted(states.items(), key=lambda kv: _state_rank(kv[0]))),
            running=r.ws.running, paused_since=tracker.paused if not r.ws.running else None,
            stuck=why(r.ws, tracker), warnings=info["warnings"], crash=info["crash"],
            invariant=None if inv is None else Failure(**{**inv, "key": None if inv["key"] is None
                                                           else decode_key(inv["key"])}),
            step=step, raised=self.raised(step),
            departed=None if info["departed"] is None else tuple(info["departed"]),
        )


def _deltas(steps: Any) -> list[int]:
    """Ascending steps as the differences between them (small numbers, which
    JSON spells in a digit or two and which compress well)."""
    out = []
    prev = 0
    for step in steps:
        out.append(step - prev)
        prev = step
    return out


def _steps(deltas: list[int]) -> array:
    """Steps written by :func:`_deltas`."""
    return array("i", accumulate(deltas))


def _unsigned(packed: bytes) -> array:
    """A packed array of CRC-32s, as the writer wrote it."""
    out = array("I")
    out.frombytes(packed)
    return out


def apply_change(counters: dict, change: dict) -> None:
    """One ``workers_at`` row onto the counters after the step before it
    (containers' member sets are replaced, never changed in place: a cached
    keyframe shares them)."""
    for name, value in change.items():
        op = name[0]
        if op == "+":
            counters[name[1:]] = counters[name[1:]] | set(value)
        elif op == "-":
            counters[name[1:]] = counters[name[1:]] - set(value)
        else:
            counters[name] = value


def _initial_counters(header: dict) -> dict:
    s = header["state"]
    resources = dict(sorted(decode_resources(s["resources"]).items()))
    limit = decode_float(s["transfer_incoming_bytes_limit"])
    return {
        "running": True, "nthreads": s["nthreads"], "transfers": 0,
        "transfers_limit": s["transfer_incoming_count_limit"], "transfer_bytes": 0,
        "transfer_bytes_limit": None if limit in (None, float("inf")) else limit, "nbytes": 0,
        "total_resources": resources, "available_resources": resources, **EMPTY_CONTAINERS,
    }


#: the containers of a worker that holds no task
EMPTY_CONTAINERS: dict = {"busy_workers": [], "strays": {}, **{f: frozenset() for f in MEMBERS + PER_PEER}}


class _Moments:
    """``tracker.changed`` and friends, answered by queries up to a step."""

    def __init__(self, worker: IndexedWorker, step: int, what: str):
        self.w, self.step, self.what = worker, step, what

    def get(self, key: Any, default: Any = None) -> Any:
        w = self.w
        found = w.key_row(key)
        if found is None:
            return default
        if self.what == "gather":
            gathers = [g for g in found[4] if g[0] <= self.step]
            if not gathers:
                return default
            step, peer = gathers[-1]
            return Moment(step, w._step_row(step)[1]), peer
        steps = found[2] if self.what == "changed" else found[5]
        i = bisect_right(steps, self.step)
        if i == 0:
            return default
        sid, handled = w._step_row(steps[i - 1])
        return (Moment(steps[i - 1], handled), sid) if self.what == "changed" else Moment(steps[i - 1], handled)


class IndexTracker:
    """A :class:`~replay.diagnosis.Tracker` at a step, read from the index."""

    #: what durations at the last step run to
    end_name = "the end of the log"

    def __init__(self, worker: IndexedWorker, step: int):
        self.end = worker.events
        self.changed = _Moments(worker, step, "changed")
        self.gather = _Moments(worker, step, "gather")
        self.execute = _Moments(worker, step, "execute")
        _, handled = worker._step_row(step)
        self.now = Moment(step, handled)
        # the last pause or unpause by then (the index keeps them in the worker's row)
        pauses = worker.info["pauses"]
        i = bisect_right(pauses, step, key=lambda p: p[0])
        self.paused = Moment(*pauses[i - 1][:2]) if i and pauses[i - 1][2] == "PauseEvent" else None
        self.raised = worker.raised(step)
        self._gathers = worker.open_gathers(step)

    def open_gathers(self) -> list:
        """The gathers issued and not answered by the step, oldest first."""
        return self._gathers
