"""One pydantic model per ``Instruction`` class a ``WorkerState`` returns."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, StrictInt, StrictStr

from schemas.events import _Error
from schemas.types import EncodedKey, KeyCollection, Model, Number, Value


class Instruction(Model):
    stimulus_id: StrictStr


class GatherDep(Instruction):
    cls: Literal["GatherDep"]
    worker: StrictStr
    to_gather: KeyCollection
    total_nbytes: StrictInt


class Execute(Instruction):
    cls: Literal["Execute"]
    key: EncodedKey


class RetryBusyWorkerLater(Instruction):
    cls: Literal["RetryBusyWorkerLater"]
    worker: StrictStr


class TaskFinishedMsg(Instruction):
    cls: Literal["TaskFinishedMsg"]
    key: EncodedKey
    run_id: StrictInt
    nbytes: Optional[StrictInt]
    #: always null: the pickled type is not recorded, ``typename`` is
    type: None
    typename: Optional[StrictStr]
    metadata: Value
    thread: Optional[StrictInt]
    startstops: Value


class TaskErredMsg(Instruction, _Error):
    cls: Literal["TaskErredMsg"]
    key: EncodedKey
    run_id: StrictInt
    thread: Optional[StrictInt]
    startstops: Value


class ReleaseWorkerDataMsg(Instruction):
    cls: Literal["ReleaseWorkerDataMsg"]
    key: EncodedKey


class RescheduleMsg(Instruction):
    cls: Literal["RescheduleMsg"]
    key: EncodedKey


class LongRunningMsg(Instruction):
    cls: Literal["LongRunningMsg"]
    key: EncodedKey
    #: null when recorded with distributed before 2025.2.0, which did not send it
    run_id: Optional[StrictInt]
    compute_duration: Optional[Number]


class AddKeysMsg(Instruction):
    cls: Literal["AddKeysMsg"]
    keys: KeyCollection


class RequestRefreshWhoHasMsg(Instruction):
    cls: Literal["RequestRefreshWhoHasMsg"]
    keys: KeyCollection


class StealResponseMsg(Instruction):
    cls: Literal["StealResponseMsg"]
    key: EncodedKey
    state: Optional[StrictStr]


AnyInstruction = Annotated[
    Union[
        GatherDep,
        Execute,
        RetryBusyWorkerLater,
        TaskFinishedMsg,
        TaskErredMsg,
        ReleaseWorkerDataMsg,
        RescheduleMsg,
        LongRunningMsg,
        AddKeysMsg,
        RequestRefreshWhoHasMsg,
        StealResponseMsg,
    ],
    Field(discriminator="cls"),
]
