"""Hand-made logs: a real ``WorkerState`` driven by events written as code.

The log is recorded by :class:`replay.record.Session`, exactly as a live
worker's would be, so every command reads it like any other log.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Union

from distributed import worker_state_machine as wsm

from replay.logfile import LogWriter
from replay.record import Session

ADDRESS = "tcp://127.0.0.1:1234"
PEER = "tcp://127.0.0.1:1235"

#: an event, or a function of the worker state returning events (to react to
#: instructions, e.g. answer the GatherDep just issued)
Step = Union[wsm.StateMachineEvent, Callable[[wsm.WorkerState], Iterable[wsm.StateMachineEvent]]]


def record_log(
    path: str | os.PathLike,
    steps: Iterable[Step],
    *,
    nthreads: int = 1,
    resources: dict[str, float] | None = None,
    validate: bool = False,
    address: str = ADDRESS,
    deterministic: bool = True,
    **state_kwargs: Any,
) -> str:
    """Drive a fresh ``WorkerState`` through ``steps`` while recording it to ``path``.

    Returns the path. An event that raises is recorded as such and the
    exception propagates.
    """
    path = os.fspath(path)
    ws = wsm.WorkerState(
        nthreads=nthreads,
        address=address,
        resources=resources or {},
        validate=validate,
        **state_kwargs,
    )
    writer = LogWriter(path)
    session = Session(ws, writer=writer, deterministic=deterministic)
    try:
        for step in steps:
            events = step(ws) if callable(step) else [step]
            ws.handle_stimulus(*events)
        session.close("end of the scripted events")
    finally:
        writer.close()
    return path


def gather_failure(worker: str, total_nbytes: int, stimulus_id: str) -> wsm.GatherDepFailureEvent:
    return wsm.GatherDepFailureEvent.from_exception(
        Exception("boom"), worker=worker, total_nbytes=total_nbytes, stimulus_id=stimulus_id
    )
