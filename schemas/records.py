"""The envelope of a log line.

A log is newline-delimited JSON. Each line is one record; records of several
workers may be interleaved (a cluster log), each worker's records in order:

- ``header``: once per worker, before its first step: versions, every
  ``WorkerState`` construction input, and whether replay can be exact.
- ``step``: one stimulus handled by the worker, numbered from 1 per worker,
  with the instructions it produced (or the error it raised), and each value
  whose store into the worker's data raised (``store_failed``).
- ``resources``: something changed outside ``handle_stimulus`` since the
  previous step: ``Worker.set_resources``, a setting assigned (``settings``),
  the worker's address once it has one (``address``), or task state
  (``outside``, noted only); applies before step ``seq``.
- ``end``: the recorder stopped cleanly after step ``seq``.

A worker's name (``worker`` in every record) is fixed when its header is
written: its address then, or ``pid-N`` for a worker that handled a stimulus
before it had one (the header's ``address`` is then null, and a ``resources``
record gives the address once known).

A log imported from a cluster dump (:mod:`replay.dump`) also has, per worker,
``final`` records (the worker's task states when dumped) and, once,
``scheduler`` records (the scheduler's view); readers that do not need them
skip them. Its headers say whether the history is complete.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter

from schemas.codec import FORMAT, VERSION
from schemas.events import AnyEvent
from schemas.instructions import AnyInstruction
from schemas.snapshot import Snapshot
from schemas.types import DistributedRelease, EncodedKey, Model, Number, Resources, Value

__all__ = [
    "FORMAT", "VERSION", "RECORD", "Header", "Step", "StoreFailure", "ResourcesChange", "End",
    "StateInputs", "Imported", "Continued", "ShrunkBy", "FinalState", "SchedulerState",
]

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


class Imported(Model):
    """Where an imported worker log comes from, and what the source lacked."""

    source: Literal["cluster-dump"]
    #: the dump's file name, without its folder
    file: StrictStr
    #: how many events the dump's ``stimulus_log`` held
    events: NonNegative
    #: ``distributed.admin.low-level-log-length`` in the dump's config; null: unbounded
    log_length: Optional[NonNegative]
    #: the steps carry no instructions (null): a dump keeps events only
    instructions: Literal[False] = False
    #: keys whose tuple type the dump had turned into a list or its text
    keys_repaired: NonNegative = 0
    #: data sizes the dump lacks, set to the default data size
    sizes_guessed: NonNegative = 0


class Continued(Model):
    """The log continues a recorded one (``replay continue -o``): the steps
    up to ``from_step`` are the recording's, the ones after it simulated."""

    from_step: NonNegative
    #: how the simulated peers answered: "answer", "busy" or "silent"
    peers: Literal["answer", "busy", "silent"]
    #: simulated steps
    events: NonNegative
    #: the step whose instructions first differed from the recording
    #: (another release, a patch): the last recorded step kept
    diverged_at: Optional[Seq] = None


class ShrunkBy(Model):
    """The predicate ``replay shrink`` kept a shrunk log showing, with the
    keys as the shrunk log names them: ``replay bisect`` asks it again under
    other releases."""

    predicate: Literal["stuck", "state", "raises", "invalid", "expr"]
    #: as given on the command line, keys as the original log named them
    text: StrictStr
    #: --stuck KEY, --state KEY=STATE
    key: Optional[EncodedKey] = None
    state: Optional[StrictStr] = None
    #: --raises NAME
    name: Optional[StrictStr] = None
    #: --expr: kept to be read, never evaluated from the log
    expr: Optional[StrictStr] = None


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
    #: the worker's address when the header was written, if not ``worker``:
    #: null for a worker that handled a stimulus before it had one (``worker``
    #: is then ``pid-N``); absent: ``worker`` is the address
    address: Optional[StrictStr] = None
    #: "complete": the steps are every stimulus since the empty state;
    #: "partial": earlier stimuli are missing (``history_reason`` says why),
    #: so the log cannot be replayed. Absent: complete, as the recorder writes
    history: Literal["complete", "partial"] = "complete"
    history_reason: Optional[StrictStr] = None
    #: set when the log was converted from another artefact, not recorded
    imported: Optional[Imported] = None
    #: set when the log continues a recorded one with simulated steps
    continued: Optional[Continued] = None
    #: set on a log written by ``replay shrink -o``
    shrunk: Optional[ShrunkBy] = None
    #: a bounded recording's segment (:mod:`replay.segments`): its number,
    #: and, from the second on, the worker's state after the step before
    #: its first (``from_empty`` is then false)
    segment: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    snapshot: Optional[Snapshot] = None


class StoreFailure(Model):
    """Storing a task's value in the worker's data raised (a ``SpillBuffer``
    that cannot pickle a value over its target, a third-party mapping): dask
    recommends ``error`` with these texts, and replay's data raises the same."""

    key: EncodedKey
    exception_text: StrictStr
    #: where the recorded mapping raised; a replay has none of its code, so
    #: verify does not compare this text in the ``TaskErredMsg`` that follows
    traceback_text: StrictStr


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
    #: on a call's last step: each store into the worker's data that raised
    #: during the call, in order
    store_failed: Optional[list[StoreFailure]] = None
    #: room for optional per-step data (e.g. a clock tape)
    extras: Optional[dict[StrictStr, Any]] = None
    #: the step was not recorded: a continuation simulated it (see
    #: :class:`Continued`)
    simulated: StrictBool = False


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
    #: the worker's address, assigned since the previous step (a worker named
    #: ``pid-N`` in its header gets one when it starts)
    address: Optional[StrictStr] = None
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
    #: the worker's address at the end, where it is not ``worker``
    address: Optional[StrictStr] = None


KeyList = list[EncodedKey]
#: dict[address, keys] as [[address, [key, ...]], ...]
KeysBy = list[tuple[StrictStr, KeyList]]


class FinalTask(Model):
    """A task of a worker's final state, as the dump held it."""

    key: EncodedKey
    state: StrictStr
    previous: Optional[StrictStr] = None
    next: Optional[StrictStr] = None
    run_id: Optional[StrictInt] = None
    nbytes: Optional[NonNegative] = None
    priority: Optional[list[Value]] = None
    who_has: list[StrictStr] = []
    coming_from: Optional[StrictStr] = None
    dependencies: KeyList = []
    dependents: KeyList = []
    waiting_for_data: KeyList = []
    resource_restrictions: Optional[Resources] = None
    exception_text: Optional[StrictStr] = None
    #: when the task entered its state (the dump's transition log, or an
    #: execution's start), by the worker's clock; absent when unknown
    since: Optional[StrictFloat] = None


class FinalState(Model):
    """A worker's state when a cluster dump was taken: what later commands say
    of the final state without replaying. Long task lists are split over
    several records (``part`` 0, 1, …); the worker's fields are on part 0."""

    kind: Literal["final"]
    worker: StrictStr
    #: the state after this step (0: before every step the log holds)
    seq: NonNegative
    part: NonNegative = 0
    source: Literal["cluster-dump"] = "cluster-dump"
    status: Optional[StrictStr] = None
    running: Optional[StrictBool] = None
    transition_counter: Optional[NonNegative] = None
    tasks: list[FinalTask] = []
    #: keys held in memory
    data: KeyList = []
    ready: KeyList = []
    constrained: KeyList = []
    executing: KeyList = []
    long_running: KeyList = []
    in_flight_tasks: KeyList = []
    missing_dep_flight: KeyList = []
    data_needed: KeysBy = []
    in_flight_workers: KeysBy = []
    has_what: KeysBy = []
    busy_workers: list[StrictStr] = []
    #: the latest time the dump records for the worker: when it was taken,
    #: at the earliest (the end of every duration in the final state)
    dumped: Optional[StrictFloat] = None


class SchedulerTask(Model):
    key: EncodedKey
    state: StrictStr
    processing_on: Optional[StrictStr] = None
    who_has: list[StrictStr] = []
    #: -1: unknown to the scheduler
    nbytes: Optional[StrictInt] = None


class SchedulerWorker(Model):
    address: StrictStr
    status: Optional[StrictStr] = None
    nthreads: Optional[NonNegative] = None
    resources: Resources = {}


class SchedulerState(Model):
    """The scheduler's view in a cluster dump, kept to compare with each
    worker's; tasks split over records as in :class:`FinalState`."""

    kind: Literal["scheduler"]
    part: NonNegative = 0
    source: Literal["cluster-dump"] = "cluster-dump"
    address: Optional[StrictStr] = None
    transition_counter: Optional[NonNegative] = None
    workers: list[SchedulerWorker] = []
    tasks: list[SchedulerTask] = []


Record = Annotated[
    Union[Header, Step, ResourcesChange, End, FinalState, SchedulerState], Field(discriminator="kind")
]

RECORD = TypeAdapter(Record)


def record_json_schema() -> dict:
    """JSON Schema of one log line."""
    schema = RECORD.json_schema()
    schema["title"] = "dask-replay log record"
    return schema
