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
import gc
import marshal
import os
import struct
from collections.abc import Callable, Iterator


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
)

#: fields whose decoded value is an object marshal cannot carry: they cross
#: the pipe as their JSON and are decoded on arrival
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
BATCH = 256
_LEN = struct.Struct("<Q")

#: a call as plain values: (first, lines, handled, resources, [(class name,
#: args)], instructions, error, store failures)
Packed = tuple


def pack(call: RecordedCall, instructions: bool = True) -> Packed:
    """A call as plain values ``marshal`` carries; without its recorded
    instructions unless asked (only verifying needs them, and they are the
    bulk of what would cross)."""
    events = []
    for ev in call.events:
        name = type(ev).__name__
        args = [getattr(ev, f) for f in FIELD_ORDER[name]]
        for i, encode, _ in LATE_FIELDS[name]:
            args[i] = encode(args[i])
        events.append((name, tuple(args)))
    kept = call.instructions if instructions else None
    return (call.first, call.lines, call.handled, call.resources, events, kept, call.error,
            call.store_failed)


def unpack(packed: Packed) -> RecordedCall:
    first, lines, handled, resources, evs, instructions, error, store_failed = packed
    classes = EVENT_CLASSES
    events = []
    for name, args in evs:
        late = LATE_FIELDS[name]
        if late:
            args = list(args)
            for i, _, decode in late:
                args[i] = decode(args[i])
        events.append(classes[name](*args))
    return RecordedCall(events, first, lines, handled, resources, instructions, error,
                        store_failed=store_failed)


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
            for packed in msg[1]:
                yield unpack(packed)
    finally:
        os.close(r)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
