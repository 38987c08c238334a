"""Read and decode recorded calls in a second process while this one replays.

Parsing JSON and decoding events costs about half as much again as the state
machine itself; on a machine with a spare core that work can run beside it.
A forked reader runs the same reader as this process would (so every line is
checked, and a bad one named, exactly as in process) and sends batches of
packed calls through a pipe: plain values (str, int, float, tuple, list, dict,
set: exactly what ``marshal`` carries, tuple keys included), from which this
process only rebuilds the event objects. Nothing but values this project
produced in its own child crosses the pipe.
"""
from __future__ import annotations

import dataclasses
import fcntl
import gc
import marshal
import os
import struct
from collections.abc import Callable, Iterator
from operator import attrgetter

from distributed import worker_state_machine as wsm

from replay.errors import LogError
from replay.reader import RecordedCall
from schemas.convert import (
    DROPPED,
    EVENT_CLASSES,
    EVENT_FIELDS,
    EXCEPTION,
    SIZES,
    STAND_IN_RUN_SPEC,
    TRACEBACK,
    TYPE,
    SizedValue,
)

#: fields whose decoded value is an object marshal cannot carry: they cross
#: the pipe as their JSON and are decoded on arrival (less those below)
_LATE = {DROPPED, SIZES, EXCEPTION, TRACEBACK, TYPE, STAND_IN_RUN_SPEC}
#: every event class's fields in ``__init__`` order: events cross as tuples
FIELD_ORDER = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_CLASSES.items()
}
#: (position, encoder, decoder) of each late field
LATE_FIELDS = {
    name: tuple(
        (FIELD_ORDER[name].index(f), c.encode, c.decode) for f, c in fields.items() if c in _LATE
    )
    for name, fields in EVENT_FIELDS.items()
}
#: fields whose decoded value is the same whatever was recorded (values and
#: types dropped, the stand-in run_spec): they cross as None and are set on
#: arrival, not decoded (a None constant is already there)
_CONSTANT = {DROPPED: None, TYPE: None, STAND_IN_RUN_SPEC: STAND_IN_RUN_SPEC.decode(None)}


def _sizes_pack(data: dict) -> dict:
    # the keys cross decoded, the values as their sizes: only the stand-ins
    # are made on arrival
    return dict(zip(data, [n for _, n in SIZES.encode(data)]))


def _sizes_unpack(sizes: dict) -> dict:
    return {k: SizedValue(n) for k, n in sizes.items()}


def _none(x: object) -> None:
    return None


def _packers(name: str) -> tuple:
    """(position, packer) of class ``name``'s fields that cross otherwise than as they are."""
    out = []
    for i, encode, _ in LATE_FIELDS[name]:
        codec = EVENT_FIELDS[name][FIELD_ORDER[name][i]]
        out.append((i, _none if codec in _CONSTANT else _sizes_pack if codec is SIZES else encode))
    return tuple(out)


def _unpackers(name: str) -> tuple:
    """(position, what makes the field's value from what crossed) of class
    ``name``'s fields that need it on arrival."""
    out = []
    for i, _, decode in LATE_FIELDS[name]:
        codec = EVENT_FIELDS[name][FIELD_ORDER[name][i]]
        if codec in _CONSTANT:
            constant = _CONSTANT[codec]
            if constant is not None:
                out.append((i, lambda _, c=constant: c))
        else:
            out.append((i, _sizes_unpack if codec is SIZES else decode))
    return tuple(out)


def _builder(name: str) -> Callable[[tuple], object]:
    """What makes class ``name``'s event from the tuple of its packed fields.

    Every call of a replay builds its events here, so the build skips what it
    can: dask's ``StateMachineEvent.__new__`` (which only sets ``handled`` to
    None, done here) and a decoder for a field whose value is a constant."""
    cls = EVENT_CLASSES[name]
    fixes = _unpackers(name)
    if cls.__new__ is not wsm.StateMachineEvent.__new__:  # a release that builds otherwise
        def build_otherwise(args: tuple) -> object:
            args = list(args)
            for i, fix in fixes:
                args[i] = fix(args[i])
            return cls(*args)

        return build_otherwise
    init = cls.__init__
    new = object.__new__

    def build(args: tuple) -> object:
        if fixes:
            args = list(args)
            for i, fix in fixes:
                args[i] = fix(args[i])
        ev = new(cls)
        ev.handled = None
        init(ev, *args)
        return ev

    return build


#: event classes cross as their number in this tuple
CLASS_NAMES = tuple(EVENT_CLASSES)
_CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
_PACKERS = {name: _packers(name) for name in CLASS_NAMES}
#: each event class's :func:`_builder`
BUILDERS = {name: _builder(name) for name in CLASS_NAMES}
_BUILD = tuple(BUILDERS[name] for name in CLASS_NAMES)
BATCH = 256
_LEN = struct.Struct("<Q")

#: a call as plain values: (first, lines, handled, resources, [(class
#: number, args)], instructions, error, store failures)
Packed = tuple


def _fields_of(name: str) -> Callable[[object], tuple]:
    """What reads class ``name``'s fields, in ``__init__`` order, as a tuple
    (one C call: an ``attrgetter`` of one name returns the value bare)."""
    fields = FIELD_ORDER[name]
    if len(fields) > 1:
        return attrgetter(*fields)
    get = attrgetter(fields[0])
    return lambda ev: (get(ev),)


#: event class -> (its number, what reads its fields, its fields' packers)
_PACK = {EVENT_CLASSES[name]: (_CLASS_ID[name], _fields_of(name), _PACKERS[name]) for name in CLASS_NAMES}


def pack(call: RecordedCall, instructions: bool = True) -> Packed:
    """A call as plain values ``marshal`` carries; without its recorded
    instructions unless asked (only verifying needs them, and they are the
    bulk of what would cross)."""
    events = []
    for ev in call.events:
        number, fields, packers = _PACK[type(ev)]
        args = fields(ev)
        if packers:
            args = list(args)
            for i, packer in packers:
                args[i] = packer(args[i])
            args = tuple(args)
        events.append((number, args))
    kept = call.instructions if instructions else None
    return (call.first, call.lines, call.handled, call.resources, events, kept, call.error,
            call.store_failed)


def unpack(packed: Packed) -> RecordedCall:
    first, lines, handled, resources, evs, instructions, error, store_failed = packed
    build = _BUILD
    return RecordedCall([build[c](args) for c, args in evs], first, lines, handled,
                        resources, instructions, error, None, store_failed)


def dumps(call: RecordedCall) -> bytes:
    """A call for a spool that only replays: without its recorded instructions."""
    return marshal.dumps(pack(call, instructions=False))


def loads(blob: bytes) -> RecordedCall:
    """A call this project packed: to its own pipe, or its own spool file."""
    return unpack(marshal.loads(blob))


def _reader(produce: Callable[[], Iterator[RecordedCall]], fd: int, instructions: bool) -> None:
    # everything inherited stays put: the collector need not walk it again
    gc.freeze()
    batch: list = []

    def send(obj: object) -> None:
        blob = marshal.dumps(obj)
        os.write(fd, _LEN.pack(len(blob)))
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]

    try:
        for call in produce():
            batch.append(pack(call, instructions))
            if len(batch) >= BATCH:
                send(("calls", batch))
                batch = []
        send(("calls", batch))
        send(("end",))
    except LogError as e:
        send(("error", e.path, e.line, e.message))
    except BrokenPipeError:
        pass


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the reader process ended early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


#: how far the reader may run ahead, in bytes of packed calls: the pipe's
#: default (64 kB, a few hundred calls) stalls the replay whenever the reader
#: does not get a core at once, on a busy machine
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    """Let the pipe hold :data:`PIPE_BYTES` (Linux; elsewhere, or above the
    system's limit, it keeps its size)."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except PermissionError:  # above /proc/sys/fs/pipe-max-size for this user
            pass


def read_ahead(
    produce: Callable[[], Iterator[RecordedCall]], *, instructions: bool = True
) -> Iterator[RecordedCall]:
    """The calls ``produce()`` yields, produced in a forked child beside us;
    their recorded instructions cross only with ``instructions``.

    A :class:`~replay.errors.LogError` in the child is raised here, where the
    caller reads; any other failure of the child ends its stream early and is
    an ``EOFError`` here (a bug: the child printed its traceback).
    """
    r, w = os.pipe()
    _widen(w)
    pid = os.fork()
    if pid == 0:  # the reader
        os.close(r)
        code = 1
        try:
            _reader(produce, w, instructions)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        while True:
            (n,) = _LEN.unpack(_read_exactly(r, _LEN.size))
            msg = marshal.loads(_read_exactly(r, n))
            if msg[0] == "end":
                return
            if msg[0] == "error":
                raise LogError(msg[1], msg[2], msg[3])
            # the whole batch at once: its code and data stay warm for 256 calls,
            # not cold again after every handle_stimulus
            yield from [unpack(packed) for packed in msg[1]]
    finally:
        os.close(r)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
