"""The envelope of a log line.

A log is newline-delimited JSON. Each line is one record; records of several
workers may be interleaved (a cluster log), each worker's records in order:

- ``header``: once per worker, before its first step: versions, every
  ``WorkerState`` construction input, and whether replay can be exact.
- ``step``: one stimulus handled by the worker, numbered from 1 per worker,
  with the instructions it produced (or the error it raised).
- ``resources``: something changed outside ``handle_stimulus`` since the
  previous step: ``Worker.set_resources``, a setting assigned (``settings``),
  or task state (``outside``, noted only); applies before step ``seq``.
- ``end``: the recorder stopped cleanly after step ``seq``.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter

from schemas.codec import FORMAT, VERSION
from schemas.events import AnyEvent
from schemas.instructions import AnyInstruction
from schemas.types import DistributedRelease, Model, Number, Resources

__all__ = ["FORMAT", "VERSION", "RECORD", "Header", "Step", "ResourcesChange", "End", "StateInputs"]

Seq = Annotated[StrictInt, Field(ge=1)]


NonNegative = Annotated[StrictInt, Field(ge=0)]


class StateInputs(Model):
    """Everything a fresh ``WorkerState`` needs to behave like the recorded one.

    Ranges are those the state machine and its config accept: a value outside
    them could not have come from a worker, and would make construction fail.
    """

    nthreads: Annotated[StrictInt, Field(ge=1)]
    resources: Resources
    transfer_incoming_count_limit: NonNegative
    #: ``WorkerState(validate=...)``
    validate_: StrictBool = Field(alias="validate")
    transition_counter_max: Union[NonNegative, Literal[False]]
    transfer_incoming_bytes_limit: Number
    transfer_message_bytes_limit: Number
    #: ``distributed.scheduler.default-data-size``, in bytes
    default_data_size: NonNegative
    #: ``distributed.admin.low-level-log-length``; null for unbounded
    log_length: Optional[NonNegative]
    #: set by ``WorkerState`` after construction; absent: its default
    transfer_incoming_bytes_throttle_threshold: Optional[Number] = None


class Header(Model):
    kind: Literal["header"]
    format: Literal["dask-replay"]
    version: StrictInt
    worker: StrictStr
    dask: StrictStr
    #: a release from schemas.versions.OLDEST to NEWEST: others are refused
    distributed: DistributedRelease
    python: StrictStr
    pid: NonNegative
    #: wall-clock time the recorder attached
    started: StrictFloat
    #: TaskState hashing was made key-based and the hash seed is known
    deterministic: StrictBool
    #: PYTHONHASHSEED the worker ran with; null if random
    hash_seed: Optional[StrictStr]
    #: false if the recorder attached to a worker that already held tasks:
    #: such a log cannot be replayed from the empty state
    from_empty: StrictBool
    initial_tasks: NonNegative
    state: StateInputs


class Step(Model):
    kind: Literal["step"]
    worker: StrictStr
    seq: Seq
    #: wall-clock time the stimulus reached ``handle_stimulus``
    handled: StrictFloat
    event: AnyEvent
    #: the instructions ``handle_stimulus`` returned; for a batch of several
    #: stimuli, all of them on the batch's last step and null on the others
    instructions: Optional[list[AnyInstruction]] = None
    #: how many stimuli were handled in one call; set on the batch's last step
    batch: Annotated[StrictInt, Field(ge=1)] = 1
    #: ``repr`` of the exception handling raised, if it did
    error: Optional[StrictStr] = None
    #: room for optional per-step data (e.g. a clock tape)
    extras: Optional[dict[StrictStr, Any]] = None


class Settings(Model):
    """``WorkerState`` attributes assigned between two stimuli: the new values
    of those that changed."""

    nthreads: Optional[NonNegative] = None
    transfer_incoming_count_limit: Optional[NonNegative] = None
    transfer_incoming_bytes_limit: Optional[Number] = None
    transfer_incoming_bytes_throttle_threshold: Optional[Number] = None
    transfer_message_bytes_limit: Optional[Number] = None
    validate_: Optional[StrictBool] = Field(default=None, alias="validate")


class ResourcesChange(Model):
    kind: Literal["resources"]
    worker: StrictStr
    #: applies before this step
    seq: Seq
    total: Resources
    available: Resources
    settings: Optional[Settings] = None
    #: task states or data changed outside ``handle_stimulus`` (a test
    #: assigning them): what changed, which a replay cannot reproduce
    outside: Optional[list[StrictStr]] = None


class End(Model):
    kind: Literal["end"]
    worker: StrictStr
    #: the last step recorded (0 if none)
    seq: Annotated[StrictInt, Field(ge=0)]
    time: StrictFloat
    reason: StrictStr


Record = Annotated[Union[Header, Step, ResourcesChange, End], Field(discriminator="kind")]

RECORD = TypeAdapter(Record)


def record_json_schema() -> dict:
    """JSON Schema of one log line."""
    schema = RECORD.json_schema()
    schema["title"] = "dask-replay log record"
    return schema
