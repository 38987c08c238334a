"""One pydantic model per concrete ``StateMachineEvent`` class (distributed 2026.8).

Models describe a log line's ``event`` object; :mod:`schemas.convert` turns it
into the real dask event. Fields dropped on purpose: ``run_spec`` (code) and
computed values; data values are kept as their sizes.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictInt, StrictStr

from schemas.types import EncodedKey, KeyCollection, KeySizes, Model, Number, Resources, Value, WhoHas


class Event(Model):
    stimulus_id: StrictStr


class PauseEvent(Event):
    cls: Literal["PauseEvent"]


class UnpauseEvent(Event):
    cls: Literal["UnpauseEvent"]


class FindMissingEvent(Event):
    cls: Literal["FindMissingEvent"]


class RetryBusyWorkerEvent(Event):
    cls: Literal["RetryBusyWorkerEvent"]
    worker: StrictStr


class _GatherDepDone(Event):
    worker: StrictStr
    total_nbytes: StrictInt


class GatherDepSuccessEvent(_GatherDepDone):
    cls: Literal["GatherDepSuccessEvent"]
    #: sizes of the received values
    data: KeySizes


class GatherDepBusyEvent(_GatherDepDone):
    cls: Literal["GatherDepBusyEvent"]


class GatherDepNetworkFailureEvent(_GatherDepDone):
    cls: Literal["GatherDepNetworkFailureEvent"]


class _Error(Model):
    #: repr of the exception object
    exception: Optional[StrictStr]
    #: whether a traceback object was attached
    traceback: StrictBool
    exception_text: StrictStr
    traceback_text: StrictStr


class GatherDepFailureEvent(_GatherDepDone, _Error):
    cls: Literal["GatherDepFailureEvent"]


class RemoveWorkerEvent(Event):
    cls: Literal["RemoveWorkerEvent"]
    worker: StrictStr


class ComputeTaskEvent(Event):
    cls: Literal["ComputeTaskEvent"]
    key: EncodedKey
    run_id: StrictInt
    who_has: WhoHas
    nbytes: KeySizes
    priority: list[Value]
    #: always null: code is not recorded
    run_spec: None
    resource_restrictions: Optional[Resources]
    actor: StrictBool
    annotations: Value
    span_id: Optional[StrictStr]


class ExecuteSuccessEvent(Event):
    cls: Literal["ExecuteSuccessEvent"]
    key: EncodedKey
    run_id: StrictInt
    #: always null: the value itself is not recorded, ``nbytes`` is
    value: None
    start: Number
    stop: Number
    nbytes: StrictInt
    #: qualified name of the result's type
    type: Optional[StrictStr]


class ExecuteFailureEvent(Event, _Error):
    cls: Literal["ExecuteFailureEvent"]
    key: EncodedKey
    run_id: StrictInt
    start: Optional[Number]
    stop: Optional[Number]


class RescheduleEvent(Event):
    cls: Literal["RescheduleEvent"]
    key: EncodedKey


class CancelComputeEvent(Event):
    cls: Literal["CancelComputeEvent"]
    key: EncodedKey


class RefreshWhoHasEvent(Event):
    cls: Literal["RefreshWhoHasEvent"]
    who_has: WhoHas


class AcquireReplicasEvent(Event):
    cls: Literal["AcquireReplicasEvent"]
    who_has: WhoHas
    nbytes: KeySizes


class RemoveReplicasEvent(Event):
    cls: Literal["RemoveReplicasEvent"]
    keys: KeyCollection


class FreeKeysEvent(Event):
    cls: Literal["FreeKeysEvent"]
    keys: KeyCollection


class StealRequestEvent(Event):
    cls: Literal["StealRequestEvent"]
    key: EncodedKey


class UpdateDataEvent(Event):
    cls: Literal["UpdateDataEvent"]
    #: sizes of the scattered values
    data: KeySizes


class SecedeEvent(Event):
    cls: Literal["SecedeEvent"]
    key: EncodedKey
    compute_duration: Number


AnyEvent = Annotated[
    Union[
        PauseEvent,
        UnpauseEvent,
        FindMissingEvent,
        RetryBusyWorkerEvent,
        GatherDepSuccessEvent,
        GatherDepBusyEvent,
        GatherDepNetworkFailureEvent,
        GatherDepFailureEvent,
        RemoveWorkerEvent,
        ComputeTaskEvent,
        ExecuteSuccessEvent,
        ExecuteFailureEvent,
        RescheduleEvent,
        CancelComputeEvent,
        RefreshWhoHasEvent,
        AcquireReplicasEvent,
        RemoveReplicasEvent,
        FreeKeysEvent,
        StealRequestEvent,
        UpdateDataEvent,
        SecedeEvent,
    ],
    Field(discriminator="cls"),
]
