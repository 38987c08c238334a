"""Record every stimulus a live worker's state machine handles.

Three ways to attach, all from the empty initial state:

- ``client.register_plugin(Recorder("logs/"))`` before workers join;
- ``Worker(plugins={Recorder("logs/")})``;
- ``dask worker --preload replay.record``, configured through dask config
  (``replay.directory``, ``replay.deterministic``, ``replay.compress``,
  ``replay.max-bytes``, ``replay.max-age``) or the matching
  ``DASK_REPLAY__DIRECTORY``-style environment variables.

With ``max_bytes`` or ``max_age`` the recording is bounded: each worker
writes rolling segments, each beginning with a snapshot of its whole state,
and the oldest are deleted past the bound (:mod:`replay.segments`).

``WorkerState`` has ``__slots__``, so its ``handle_stimulus`` cannot be
replaced on the instance; the recorder swaps the instance's class for a
slot-less subclass whose ``handle_stimulus`` encodes the events, calls the
real one and writes one line per stimulus.

What recording changes in a worker process, and nothing else:

- the class of each recorded ``WorkerState`` instance, as above (put back
  when the recording stops); the subclass also passes through
  ``_transition_to_memory``, to note a data store that raised;
- in deterministic mode, ``TaskState.__hash__`` for the whole process (see
  :mod:`replay.determinism`);
- only while a session watches for changes made outside ``handle_stimulus``
  (``watch_tasks``, used by ``pytest --replay-record``, never by the worker
  plugin or the preload): ``TaskState.__setattr__``, which then notes a
  state assigned between recorded calls (:class:`OutsideWatch`);
- only with a bound: at each segment, a thread that encodes and writes the
  snapshot, and the garbage collector paused from the capture of the state
  until that thread has encoded it (:mod:`replay.segments`, :mod:`replay.snapshot`).

It imports only the encoding half of :mod:`schemas` (no pydantic; its
encoders compiled by :mod:`schemas.generated`), the
segment writer and snapshot taker of a bounded recording
(:mod:`replay.segments`, :mod:`replay.snapshot`), and none of the replay
engine.
"""
from __future__ import annotations

import copyreg
import logging
import operator
import os
import re
import sys
import time
from collections import deque
from typing import Any

import dask
import dask.config
import distributed
from distributed import WorkerPlugin
from distributed import worker_state_machine as wsm

from replay.determinism import hash_seed, make_deterministic
from replay.logfile import LogWriter
from replay.segments import FOLDER_SUFFIX, ROLLED, Bound, SegmentFiles, parse_age, parse_bytes
from schemas.codec import (
    FORMAT, SETTINGS, VERSION, encode_float, encode_key, encode_resources, encode_setting,
)
from schemas.convert import encode_event, encode_instruction

logger = logging.getLogger("replay.record")

#: the settings of a WorkerState as a tuple, read in C: twice per stimulus
_settings_of = operator.attrgetter(*SETTINGS)

DEFAULT_DIRECTORY = "replay-logs"
#: snapshot pauses a session keeps, the latest
PAUSES_KEPT = 1000


class Recorder(WorkerPlugin):
    """A worker plugin that writes the worker's stimuli to ``directory``.

    Parameters
    ----------
    directory:
        Folder for the logs, one file per worker, created if missing.
    deterministic:
        Make the worker's ``TaskState`` hashing key-based so that the log
        replays exactly. Needs a fixed ``PYTHONHASHSEED`` in the worker
        process, which nanny-started workers have.
    compress:
        Write gzip (``.jsonl.gz``), flushed after every line.
    max_bytes, max_age:
        Keep at most this many bytes (``"50MB"`` or a number) or this much
        time (``"1h"`` or seconds) of each worker's history, as rolling
        segments of a tenth of the bound (:mod:`replay.segments`). Neither:
        one unbounded log per worker.
    segment_steps:
        Also close a segment every this many steps (tests, measurements).
    """

    name = "dask-replay-recorder"
    idempotent = False

    def __init__(
        self,
        directory: str = DEFAULT_DIRECTORY,
        *,
        deterministic: bool = True,
        compress: bool = False,
        max_bytes: int | str | None = None,
        max_age: float | str | None = None,
        segment_steps: int | None = None,
    ):
        self.directory = str(directory)
        self.deterministic = deterministic
        self.compress = compress
        max_bytes, max_age = parse_bytes(max_bytes), parse_age(max_age)
        self.bound = (Bound(max_bytes, max_age, segment_steps)
                      if max_bytes is not None or max_age is not None or segment_steps is not None
                      else None)
        # one session per worker: inproc workers may share this very object
        self._sessions: dict[int, Session] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_sessions": {}}

    def setup(self, worker: Any) -> None:
        try:
            self._sessions[id(worker)] = Session(
                worker.state,
                directory=self.directory,
                deterministic=self.deterministic,
                compress=self.compress,
                bound=self.bound,
            )
        except Exception as e:  # never take the worker down
            logger.warning("dask-replay: not recording this worker: %r", e)

    def teardown(self, worker: Any) -> None:
        session = self._sessions.pop(id(worker), None)
        if session is not None:
            session.close("teardown")


async def dask_setup(worker: Any) -> None:
    """Entry point of ``dask worker --preload replay.record``."""
    cfg = dask.config.get("replay", default={}) or {}
    await worker.plugin_add(
        Recorder(
            cfg.get("directory", DEFAULT_DIRECTORY),
            deterministic=_truthy(cfg.get("deterministic", True)),
            compress=_truthy(cfg.get("compress", False)),
            # dask's lookup: DASK_REPLAY__MAX_BYTES (and YAML) spell it max_bytes
            max_bytes=dask.config.get("replay.max-bytes", default=None),
            max_age=dask.config.get("replay.max-age", default=None),
        )
    )


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(v)


def state_inputs(ws: wsm.WorkerState) -> dict:
    """The ``WorkerState`` construction inputs and config a replay needs."""
    return {
        "nthreads": ws.nthreads,
        "resources": encode_resources(ws.total_resources),
        "transfer_incoming_count_limit": ws.transfer_incoming_count_limit,
        "validate": ws.validate,
        "transition_counter_max": ws.transition_counter_max,
        "transfer_incoming_bytes_limit": encode_float(float(ws.transfer_incoming_bytes_limit)),
        "transfer_message_bytes_limit": encode_float(float(ws.transfer_message_bytes_limit)),
        "default_data_size": int(wsm._default_data_size()),
        "log_length": ws.log.maxlen,
        # not a constructor argument: set after construction
        "transfer_incoming_bytes_throttle_threshold": encode_setting(
            ws.transfer_incoming_bytes_throttle_threshold
        ),
    }


# --- changes made outside handle_stimulus -------------------------------

#: recorded ``handle_stimulus`` calls running now: a task state assigned while
#: none runs was assigned outside the state machine
_calls_running = 0
#: tasks whose state was assigned outside a recorded call, with the state
#: each had before the first such assignment (None: it had none yet)
_assigned_outside: dict[wsm.TaskState, Any] = {}
#: the watches that read :data:`_assigned_outside`; the hook is installed
#: while there is one
_watches: list[OutsideWatch] = []
#: while the hook is installed: (the ``__setattr__`` ``TaskState`` itself
#: defined, or None), to put back
_own_setattr: tuple | None = None


def _install_state_hook() -> None:
    """``TaskState.__setattr__`` that notes a state assigned while no recorded
    call runs. Reading an attribute stays dask's own (the state machine reads
    ``ts.state`` six times as often as it assigns it); every assignment costs
    one Python call: a few per cent of ``handle_stimulus``
    (``benchmarks/outside_check.py``)."""
    global _own_setattr
    cls = wsm.TaskState
    real = cls.__setattr__

    def __setattr__(ts: Any, name: str, value: Any) -> None:
        if name == "state" and not _calls_running and ts not in _assigned_outside:
            _assigned_outside[ts] = getattr(ts, "state", None)  # None: being constructed
        real(ts, name, value)

    _own_setattr = (cls.__dict__.get("__setattr__"),)
    cls.__setattr__ = __setattr__  # type: ignore[method-assign,assignment]


def _remove_state_hook() -> None:
    global _own_setattr
    if _own_setattr is not None:
        (own,) = _own_setattr
        if own is None:
            del wsm.TaskState.__setattr__
        else:
            wsm.TaskState.__setattr__ = own  # type: ignore[method-assign]
    _own_setattr = None
    _assigned_outside.clear()


class OutsideWatch:
    """What changed in a ``WorkerState`` between two recorded calls, outside
    ``handle_stimulus``, which a replay cannot reproduce.

    Its contract: :meth:`changes` names every task whose state was assigned
    to another value, a change in the number of tasks, data keys added or
    removed, and ``ws.data`` replaced (another object or type), since
    :meth:`remember`; it never reports what the state machine itself did in
    a recorded call. It watches what changed instead of scanning the worker:
    task states through a ``TaskState.__setattr__`` hook (installed while a
    watch exists), the rest by identity and counts; the data keys are
    compared only when their number changed. Not seen: a data key removed
    and another added between the same two calls.
    """

    __slots__ = ("ws", "tasks", "data", "data_type", "data_len", "extra", "missing", "assigned")

    def __init__(self, ws: wsm.WorkerState):
        if not _watches:
            _install_state_hook()
        _watches.append(self)
        self.ws = ws
        #: as a WorkerState built from the header starts: no task, no data
        self.tasks = 0
        self.data = ws.data
        self.data_type = type(ws.data)
        self.data_len = 0
        #: data keys found written, or removed, outside: named once
        self.extra: set = set()
        self.missing: set = set()
        #: keys of tasks whose state was assigned outside: named as that,
        #: never again as a data key that disagrees with their state
        self.assigned: set = set()

    def close(self) -> None:
        if self in _watches:
            _watches.remove(self)
            if not _watches:
                _remove_state_hook()

    def remember(self) -> None:
        """What a recorded call left."""
        ws = self.ws
        self.tasks = len(ws.tasks)
        self.data = ws.data
        self.data_type = type(ws.data)
        self.data_len = len(ws.data)

    def changes(self, limit: int = 5) -> list[str]:
        """What changed since :meth:`remember`, at most ``limit`` lines."""
        ws = self.ws
        if not (_assigned_outside or len(ws.tasks) != self.tasks or ws.data is not self.data
                or len(ws.data) != self.data_len):
            return []
        out = []
        if _assigned_outside:
            out += self._states(self.assigned)
        if len(ws.tasks) != self.tasks:
            out.append(f"tasks: {self.tasks} -> {len(ws.tasks)}")
        if ws.data is not self.data:
            what = type(ws.data).__name__
            if type(ws.data) is not self.data_type:
                what = f"{self.data_type.__name__} -> {what}"
            out.append(f"data replaced ({what}), holding {len(ws.data)} keys")
        elif len(ws.data) != self.data_len:
            out += self._data_keys(self.assigned)
        out.sort()
        return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])

    def _states(self, assigned: set) -> list[str]:
        tasks = self.ws.tasks
        out = []
        for ts, old in list(_assigned_outside.items()):
            if tasks.get(ts.key) is ts:
                del _assigned_outside[ts]
                assigned.add(ts.key)
                if old != ts.state:
                    out.append(f"task {_short_key(ts.key)}: {old or 'absent'} -> {ts.state}")
            elif not any(w.ws.tasks.get(ts.key) is ts for w in _watches):
                del _assigned_outside[ts]  # of no watched worker
        return out

    def _data_keys(self, assigned: set) -> list[str]:
        # the state machine keeps ws.data to the tasks in memory (actors
        # aside): any other difference was made outside; each is named once,
        # and a task whose state was assigned is named as that
        ws = self.ws
        tasks, actors = ws.tasks, ws.actors
        extra = {k for k in ws.data
                 if k not in actors and getattr(tasks.get(k), "state", None) != "memory"}
        missing = {k for k, ts in tasks.items()
                   if ts.state == "memory" and k not in actors and k not in ws.data}
        out = [f"data {_short_key(k)}: added" for k in extra - self.extra - assigned]
        out += [f"data {_short_key(k)}: removed" for k in missing - self.missing - assigned]
        self.extra, self.missing = extra, missing
        return out or [f"data: {self.data_len} -> {len(ws.data)} keys"]


def _short_key(k: Any) -> str:
    text = repr(k)
    return text if len(text) <= 60 else text[:59] + "…"


def _address_of(ws: wsm.WorkerState) -> str | None:
    # a Worker sets its state's address in start_unsafe; until then it is unset
    return getattr(ws, "address", None)


class Session:
    """Recording of one ``WorkerState``."""

    def __init__(
        self,
        ws: wsm.WorkerState,
        *,
        directory: str | None = None,
        deterministic: bool = True,
        compress: bool = False,
        writer: Any = None,
        clock: Any = time.time,
        pid: int | None = None,
        watch_tasks: bool = False,
        bound: Bound | None = None,
    ):
        """Start recording ``ws``.

        Logs go to a new file in ``directory``, or to ``writer`` (anything
        with ``write(record: dict)``) when several workers share one log, as
        in a simulated cluster. ``clock`` and ``pid`` exist so that a
        simulation can write the same bytes for the same seed.
        ``watch_tasks`` notes changes made outside ``handle_stimulus`` before
        each stimulus (:class:`OutsideWatch`): meant for test suites, where
        tests assign task state directly. ``bound`` writes rolling segments
        to ``directory`` instead of one log (:mod:`replay.segments`).
        """
        self.ws = ws
        self.directory = directory
        self.compress = compress
        self.clock = clock
        self.pid = os.getpid() if pid is None else pid
        self.started = clock()
        self.seq = 0
        self.writer = writer
        self._owns_writer = writer is None
        self.bound = bound
        #: with a bound: the worker's segments
        self.segments: SegmentFiles | None = None
        #: with a bound: how long each of the last 1,000 snapshots held the
        #: event loop, seconds (the recorder may stay on for weeks)
        self.snapshot_pauses: deque[float] = deque(maxlen=PAUSES_KEPT)
        #: the CPU time of this thread in each of those pauses: the rest of a
        #: pause is the thread waiting for a core (a busy machine)
        self.snapshot_pause_cpu: deque[float] = deque(maxlen=PAUSES_KEPT)
        self._last_handled: float | None = None
        self.active = True
        #: the worker's name in every record, fixed when the header is
        #: written: its address then, or ``pid-N`` if it had none yet
        self.name: str | None = None
        #: what the previous call left: settings, resources, address; set
        #: with the header, which is written at the first stimulus, since a
        #: worker or test may assign settings between construction and then
        self._settings: tuple = ()
        self._resources: dict = {}
        self._available: dict = {}
        self._address: str | None = None
        self.watch: OutsideWatch | None = None
        self._watch_tasks = watch_tasks
        #: of the call running: each store into ``ws.data`` that raised
        self._store_failed: list[dict] = []
        self.inputs: dict | None = None
        self.initial_tasks = len(ws.tasks)
        # anything handled before now is lost, and replay would start wrong
        self.from_empty = not ws.tasks and not ws.stimulus_log and ws.running

        self.deterministic = False
        self.seed = hash_seed()
        if deterministic:
            keyed = make_deterministic()
            self.deterministic = keyed and self.seed is not None
            if not keyed:
                logger.warning(
                    "dask-replay: TaskState objects already exist in this process; "
                    "the log may not replay exactly"
                )
            elif self.seed is None:
                logger.warning(
                    "dask-replay: PYTHONHASHSEED is random in this worker process; "
                    "the log may not replay exactly (start workers with a nanny, "
                    "or set PYTHONHASHSEED)"
                )

        if not self.from_empty:
            logger.warning(
                "dask-replay: worker %s already holds %d tasks; a log started now "
                "could not be replayed from the empty state, so it is not recorded. "
                "Register the recorder before workers join.",
                getattr(ws, "address", "?"),
                self.initial_tasks,
            )
            self.active = False
            self._guard(self._write_header)
            return

        base = type(ws)
        self._base = base
        session = self

        def handle_stimulus(self: wsm.WorkerState, *stims: wsm.StateMachineEvent):
            if session.active:
                return session.handle(self, base, stims)
            return base.handle_stimulus(self, *stims)

        def _transition_to_memory(self: wsm.WorkerState, ts: wsm.TaskState, *args: Any, **kwargs: Any):
            out = base._transition_to_memory(self, ts, *args, **kwargs)
            # dask stores the value and sets "memory", or, when the data
            # store raised, recommends "error" with the exception's texts
            if ts.state != "memory" and session.active:
                session._guard(session._note_store_failure, ts, out)
            return out

        def __reduce_ex__(self: wsm.WorkerState, protocol: Any) -> Any:
            # pickle and copy as the class recorded: this one is made here and
            # cannot be found by name, and a copy must not write to this log
            rv = base.__reduce_ex__(self, protocol)
            if isinstance(rv, tuple) and len(rv) > 1 and rv[1] and rv[1][0] is type(self):
                if rv[0] is copyreg.__newobj__ and len(rv[1]) == 1:
                    # pickle insists that __newobj__ builds type(self)
                    rv = (copyreg._reconstructor, (base, object, None), *rv[2:])
                else:
                    rv = (rv[0], (base, *rv[1][1:]), *rv[2:])
            return rv

        ws.__class__ = type(
            f"Recording{base.__name__}",
            (base,),
            {
                "__slots__": (),
                "handle_stimulus": handle_stimulus,
                "_transition_to_memory": _transition_to_memory,
                "__reduce_ex__": __reduce_ex__,
                "__module__": __name__,
            },
        )

    # --- the hot path ---------------------------------------------------

    def handle(self, ws: wsm.WorkerState, base: type, stims: tuple) -> list:
        global _calls_running
        try:
            handled = self.clock()
            if not self._header_written:
                self._write_header()
            # the usual call changes nothing outside the state machine: tell
            # that here, without the record's own frame
            if (self.watch is not None or _settings_of(ws) != self._settings
                    or ws.total_resources != self._resources
                    or ws.available_resources != self._available
                    or getattr(ws, "address", None) != self._address):
                self._write_changes(ws)
            # encode before handling: handlers may consume what events carry
            encoded = list(map(encode_event, stims))
        except Exception as e:
            self._fail(e)
            return base.handle_stimulus(ws, *stims)

        if self._store_failed:
            self._store_failed = []
        _calls_running += 1
        try:
            instructions = base.handle_stimulus(ws, *stims)
        except BaseException as e:
            _calls_running -= 1
            self._guard(self._write_steps, encoded, handled, None, repr(e))
            self._guard(self._remember, ws)
            raise
        _calls_running -= 1
        try:
            self._write_steps(encoded, handled, instructions, None)
            if self.watch is not None or ws.available_resources != self._available:
                self._remember(ws)
            if self.segments is not None:
                self._after_call(ws, len(stims), handled)
        except Exception as e:
            self._fail(e)
        return instructions

    def _after_call(self, ws: wsm.WorkerState, n: int, handled: float) -> None:
        segments = self.segments
        assert segments is not None
        segments.wrote_steps(n, handled)
        self._last_handled = handled
        if segments.due(handled):
            self._roll(ws, handled)

    def _roll(self, ws: wsm.WorkerState, now: float) -> None:
        """Close the segment being written and begin the next with a snapshot."""
        segments = self.segments
        assert segments is not None and self.writer is not None
        self.writer.write({"kind": "end", "worker": self.name, "seq": self.seq,
                           "time": now, "reason": ROLLED})
        t0, c0 = time.perf_counter(), time.thread_time()
        # only the capture holds the loop: a thread encodes and writes the snapshot
        self.writer = segments.open_next_from(ws, {**self._header, "from_empty": False},
                                              seq=self.seq, handled=self._last_handled)
        self.snapshot_pauses.append(time.perf_counter() - t0)
        self.snapshot_pause_cpu.append(time.thread_time() - c0)
        segments.prune(now)

    def _remember(self, ws: wsm.WorkerState) -> None:
        """What this call left of what the state machine changes itself (the
        available resources), to tell later changes made outside
        ``handle_stimulus`` from its own. Settings, total resources and the
        address it never changes: :meth:`_write_changes` remembers them when
        it writes them (were one changed by a call, the next call would
        write it once, as a replay has it already)."""
        if ws.available_resources != self._available:
            self._available = dict(ws.available_resources)
        if self.watch is not None:
            self.watch.remember()

    def _note_store_failure(self, ts: wsm.TaskState, out: tuple) -> None:
        # the recommendation is ("error", exception, traceback,
        # exception_text, traceback_text, run_id): dask's error_message
        texts = [x for x in out[0][ts][1:] if type(x) is str]
        self._store_failed.append(
            {"key": encode_key(ts.key), "exception_text": texts[0], "traceback_text": texts[1]}
        )

    def _write_steps(
        self, encoded: list[dict], handled: float, instructions: list | None, error: str | None
    ) -> None:
        if not encoded:
            return  # handle_stimulus() with no event: no step
        write = self.writer.write  # type: ignore[union-attr]
        name = self.name
        last = encoded[-1]
        for ev in encoded:
            rec: dict[str, Any] = {
                "kind": "step",
                "worker": name,
                "seq": self.seq + 1,
                "handled": handled,
                "event": ev,
            }
            if ev is last:
                if instructions is not None:
                    rec["instructions"] = list(map(encode_instruction, instructions))
                if len(encoded) > 1:
                    rec["batch"] = len(encoded)
                if error is not None:
                    rec["error"] = error
                if self._store_failed:
                    rec["store_failed"] = self._store_failed
            write(rec)
            # counted once written, so that a warning names the last step on disk
            self.seq += 1

    # --- records around the steps --------------------------------------

    @property
    def address(self) -> str:
        """The name records use: fixed with the header, so that a worker that
        handles a stimulus before it has an address keeps one name."""
        if self.name is not None:
            return self.name
        # Worker.start_unsafe sets it after constructor plugins and preloads
        return _address_of(self.ws) or f"pid-{self.pid}"

    def _open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9.]+", "-", self.address).strip("-")
        ext = ".jsonl.gz" if self.compress else ".jsonl"
        if self.bound is not None:
            ext = FOLDER_SUFFIX
        path = os.path.join(self.directory, stem + ext)
        n = 0
        while os.path.exists(path):  # a restarted worker may reuse its port
            n += 1
            path = os.path.join(self.directory, f"{stem}-{n}{ext}")
        self.path = path
        if self.bound is not None:
            self.segments = SegmentFiles(path, self.bound, compress=self.compress)
            self.writer = self.segments.open_next()
            return
        self.writer = LogWriter(path, compress=self.compress)

    _header_written = False

    def _write_header(self) -> None:
        if self.writer is None:
            self._open()
        assert self.writer is not None
        self._header_written = True
        ws = self.ws
        self.name = self.address
        self.inputs = state_inputs(ws)
        # as a WorkerState built from the header starts: what a replay has
        # before step 1, so that a difference becomes a record
        self._settings = _settings_of(ws)
        self._resources = dict(ws.total_resources)
        self._available = dict(ws.total_resources)
        self._address = _address_of(ws)
        if self._watch_tasks and self.active:
            self.watch = OutsideWatch(ws)
        header = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "worker": self.name,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "python": sys.version.split()[0],
            "pid": self.pid,
            "started": self.started,
            "deterministic": self.deterministic,
            "hash_seed": self.seed,
            "from_empty": self.from_empty,
            "initial_tasks": self.initial_tasks,
            "state": self.inputs,
        }
        if self._address is None:
            # named before it had one: replay starts without, as the worker did
            header["address"] = None
        self._header = header
        self.writer.write(header)

    def _write_changes(self, ws: wsm.WorkerState) -> None:
        """One ``resources`` record if anything a replay needs changed since
        the previous call, outside ``handle_stimulus``: ``Worker.set_resources``,
        a setting assigned (``settings``), the worker's address once it has
        one (``address``), or, watched, task state (``outside``, which replay
        cannot reproduce)."""
        settings = _settings_of(ws)
        changed_settings = settings != self._settings
        changed_resources = (
            ws.total_resources != self._resources or ws.available_resources != self._available
        )
        address = _address_of(ws)
        changed_address = address != self._address
        outside = self.watch.changes() if self.watch is not None else []
        if not (changed_settings or changed_resources or changed_address or outside):
            return
        rec: dict[str, Any] = {
            "kind": "resources",
            "worker": self.name,
            "seq": self.seq + 1,
            "total": encode_resources(ws.total_resources),
            "available": encode_resources(ws.available_resources),
        }
        if changed_settings:
            rec["settings"] = {
                name: encode_setting(new)
                for name, old, new in zip(SETTINGS, self._settings, settings)
                if old != new
            }
        if changed_address:
            rec["address"] = address
        if outside:
            rec["outside"] = outside
        assert self.writer is not None
        self.writer.write(rec)
        # what a replay has from here on
        self._settings = settings
        self._resources = dict(ws.total_resources)
        self._available = dict(ws.available_resources)
        self._address = address

    def close(self, reason: str) -> None:
        if self.active and self._header_written:
            end = {"kind": "end", "worker": self.address, "seq": self.seq,
                   "time": self.clock(), "reason": reason}
            address = _address_of(self.ws)
            if address is not None and address != self.address:
                end["address"] = address
            self._guard(self.writer.write, end)
        self.active = False
        self._close_writer()
        if self.watch is not None:
            self.watch.close()
        if hasattr(self, "_base") and type(self.ws) is not self._base:
            self.ws.__class__ = self._base

    # --- failure: never into the worker --------------------------------

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        if self.active:
            logger.warning(
                "dask-replay: recording of worker %s stopped after step %d: %r; "
                "the worker carries on unrecorded",
                self.address, self.seq, e,
            )
        self.active = False
        self._close_writer()
        if self.watch is not None:
            self.watch.close()

    def _close_writer(self) -> None:
        if self.writer is not None and self._owns_writer:
            try:
                if self.segments is not None:
                    self.segments.close()
                else:
                    self.writer.close()
            except Exception:
                pass
