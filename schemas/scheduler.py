"""The lines of a scheduler log (``scheduler.jsonl``, :mod:`replay.scheduler_recorder`).

Same format and version as a worker's log; its own record kinds. Each
record but the header carries ``seq``, numbered from 1.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter

from schemas.types import DistributedRelease, EncodedKey, Model, Resources

Seq = Annotated[StrictInt, Field(ge=1)]


class SchedulerHeader(Model):
    kind: Literal["scheduler-header"]
    format: Literal["dask-replay"]
    version: StrictInt
    #: the scheduler's address ('' if it had none yet)
    address: StrictStr
    dask: StrictStr
    distributed: DistributedRelease
    python: StrictStr
    pid: Annotated[StrictInt, Field(ge=0)]
    #: wall-clock time the recorder attached
    started: StrictFloat


class Transition(Model):
    """One entry of ``Scheduler.transition_log``, with the task's view after it."""

    kind: Literal["transition"]
    seq: Seq
    key: EncodedKey
    start: StrictStr
    #: the state the task ended in (dask's ``actual_finish``)
    finish: StrictStr
    stimulus_id: StrictStr
    #: the scheduler's time stamp of the transition, as ``Scheduler.story`` shows it
    time: StrictFloat
    #: what the transition recommended next, as [[key, state], ...]
    recommendations: list[tuple[EncodedKey, StrictStr]] = []
    #: the worker the task is processing on after the transition; with
    #: ``who_has``, present only where the view changed (absent: as before)
    processing_on: Optional[StrictStr] = None
    who_has: Optional[list[StrictStr]] = None


class AddWorker(Model):
    kind: Literal["add-worker"]
    seq: Seq
    address: StrictStr
    time: StrictFloat
    nthreads: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    resources: Resources = {}
    #: the worker had joined before the recorder attached
    present: StrictBool = False


class RemoveWorker(Model):
    kind: Literal["remove-worker"]
    seq: Seq
    address: StrictStr
    time: StrictFloat
    stimulus_id: StrictStr = ""


class SchedulerEnd(Model):
    kind: Literal["scheduler-end"]
    seq: Seq
    time: StrictFloat
    reason: StrictStr


SchedulerRecord = Annotated[
    Union[SchedulerHeader, Transition, AddWorker, RemoveWorker, SchedulerEnd], Field(discriminator="kind")
]

SCHEDULER_RECORD = TypeAdapter(SchedulerRecord)

#: the record kinds of a scheduler log
KINDS = ("scheduler-header", "transition", "add-worker", "remove-worker", "scheduler-end")


def scheduler_json_schema() -> dict:
    """JSON Schema of one scheduler log line."""
    schema = SCHEDULER_RECORD.json_schema()
    schema["title"] = "dask-replay scheduler log record"
    return schema
