"""Read and decode a worker's steps in a second process while this one replays.

Parsing JSON and decoding events costs about half as much again as the state
machine itself; on a machine with a spare core that work can run beside it.
A forked reader parses and checks every line as the engine would, and sends
batches of plain values (str, int, float, tuple, list, dict, set: exactly
what ``marshal`` carries, tuple keys included) through a pipe; this process
only rebuilds the event objects. Nothing but values this project produced in
its own child crosses the pipe.
"""
from __future__ import annotations

import dataclasses
import gc
import marshal
import os
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from distributed import worker_state_machine as wsm

from replay.logfile import LogError
from schemas.convert import (
    DROPPED,
    EVENT_CLASSES,
    EVENT_FIELDS,
    EXCEPTION,
    SIZES,
    TRACEBACK,
    TYPE,
    _RUN_SPEC,
)

if TYPE_CHECKING:
    from replay.history import WorkerHistory

#: fields whose decoded value is an object marshal cannot carry: they cross
#: the pipe as their JSON and are decoded on arrival
_LATE = {DROPPED, SIZES, EXCEPTION, TRACEBACK, TYPE}
#: every event class's fields in ``__init__`` order: events cross as tuples
FIELD_ORDER = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_CLASSES.items()
}
#: (position, decoder) of each late field
LATE_FIELDS = {
    name: tuple(
        (FIELD_ORDER[name].index(f), c.decode) for f, c in fields.items() if c in _LATE
    )
    for name, fields in EVENT_FIELDS.items()
}
BATCH = 256
_LEN = struct.Struct("<Q")

#: one call: (resources records, [(class name, args)], last step, error or None)
Call = tuple


def pack(resources: list[dict], steps: list[dict], events: list[wsm.StateMachineEvent]) -> Call:
    """A call's decoded events as plain values ``marshal`` carries."""
    return (
        resources,
        [_early(s["event"], e) for s, e in zip(steps, events)],
        steps[-1]["seq"],
        steps[-1].get("error"),
    )


def unpack(call: Call) -> tuple[list[dict], list[wsm.StateMachineEvent], int, str | None]:
    """``(resources, events, last step, recorded error)`` of a packed call."""
    resources, evs, last, error = call
    classes = EVENT_CLASSES
    events = []
    for name, args in evs:
        late = LATE_FIELDS[name]
        if late:
            args = list(args)
            for i, dec in late:
                args[i] = dec(args[i])
        ev = classes[name](*args)
        if name == "ComputeTaskEvent":
            ev.run_spec = _RUN_SPEC
        events.append(ev)
    return resources, events, last, error


def dumps(call: Call) -> bytes:
    return marshal.dumps(call)


def loads(blob: bytes) -> Call:
    """A packed call this project wrote: to its own pipe, or its own spool file."""
    return marshal.loads(blob)


def _early(d: dict, event: wsm.StateMachineEvent) -> tuple[str, tuple]:
    name = d["cls"]
    args = [getattr(event, f) for f in FIELD_ORDER[name]]
    for i, _ in LATE_FIELDS[name]:
        args[i] = d[FIELD_ORDER[name][i]]
    return name, tuple(args)


def _reader(history: WorkerHistory, start: int, stop: int, fd: int) -> None:
    # everything inherited stays put: the collector need not walk it again
    gc.freeze()
    batch: list = []

    def send(obj: object) -> None:
        blob = dumps(obj)
        os.write(fd, _LEN.pack(len(blob)))
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]

    try:
        for resources, steps in history.calls(start, stop):
            # decoding checks every event, and names a bad line
            batch.append(pack(resources, steps, history.decode(steps)))
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


def packed_calls(history: WorkerHistory, start: int, stop: int) -> Iterator[Call]:
    """The calls from step ``start`` to ``stop``, read and decoded beside us."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reader
        os.close(r)
        try:
            _reader(history, start, stop, w)
        finally:
            os._exit(0)
    os.close(w)
    try:
        while True:
            (n,) = _LEN.unpack(_read_exactly(r, _LEN.size))
            msg = loads(_read_exactly(r, n))
            if msg[0] == "end":
                return
            if msg[0] == "error":
                raise LogError(msg[1], msg[2], msg[3])
            yield from msg[1]
    finally:
        os.close(r)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
