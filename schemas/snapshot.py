"""The ``snapshot`` a segment's header carries: a ``WorkerState`` as data.

Written by :func:`replay.snapshot.take`, read back by
:func:`replay.snapshot.restore`. Tasks are rows (one array per task, fields
in :data:`replay.snapshot.TASK_FIELDS` order, after the key) and are named
elsewhere by their number: their place in ``tasks``, then in ``orphans``
(tasks referred to but not in ``ws.tasks``). Every container is written in
its iteration order.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from schemas.types import EncodedKey, Model, Number, Resources, Value

NonNegative = Annotated[StrictInt, Field(ge=0)]
#: a task's number; -1 in a heap entry: a task no longer alive
TaskNumber = Annotated[StrictInt, Field(ge=-1)]
Numbers = list[NonNegative]
#: slots of a set's hash table: its iteration order depends on it
TableSize = Annotated[StrictInt, Field(ge=8)]
OptStr = Optional[StrictStr]
OptNumber = Optional[Number]

#: key, then ``TASK_FIELDS``
TaskRow = tuple[
    EncodedKey,
    StrictStr,  # state
    OptStr,  # previous
    OptStr,  # next
    Optional[list[Value]],  # priority
    StrictInt,  # run_id
    StrictBool,  # has a run_spec
    Optional[StrictInt],  # nbytes
    StrictBool,  # done
    NonNegative,  # suspicious_count
    OptStr,  # coming_from
    OptStr,  # exception (its repr)
    StrictBool,  # has a traceback
    StrictStr,  # exception_text
    StrictStr,  # traceback_text
    OptStr,  # type (its name)
    OptNumber,  # start_time
    OptNumber,  # stop_time
    Value,  # startstops
    Value,  # metadata
    Value,  # annotations
    OptStr,  # span_id
    Optional[Resources],  # resource_restrictions
    list[StrictStr],  # who_has
    Numbers,  # dependencies
    Numbers,  # dependents
    Numbers,  # waiting_for_data
    Numbers,  # waiters
    Optional[list[TableSize]],  # table sizes of the sets above (null: all 8)
]


class HeapSetData(Model):
    """A ``HeapSet``: its members in set order, its heap entry by entry
    (``[priority, counter, task number]``, stale ones included), its counter."""

    items: Numbers
    heap: list[tuple[Value, NonNegative, TaskNumber]]
    inc: NonNegative
    sorted: StrictBool
    table: TableSize


class TaskCounterData(Model):
    current: list[tuple[StrictStr, StrictStr, NonNegative]]
    cumulative: list[tuple[StrictStr, StrictStr, Number]]
    new: Numbers


class Snapshot(Model):
    """A worker's whole state after step ``seq``."""

    version: Literal[1]
    seq: NonNegative
    handled: Optional[Union[StrictFloat, StrictInt]]
    address: OptStr
    settings: dict[StrictStr, Union[StrictBool, StrictInt, StrictFloat, Value]]
    total_resources: Resources
    available_resources: Resources
    counters: dict[StrictStr, Union[StrictBool, StrictInt]]
    sets: dict[StrictStr, Numbers]
    tables: dict[StrictStr, TableSize]
    ready: HeapSetData
    constrained: HeapSetData
    data_needed: list[tuple[StrictStr, HeapSetData]]
    has_what: list[tuple[StrictStr, list[EncodedKey], TableSize]]
    in_flight_workers: list[tuple[StrictStr, list[EncodedKey], TableSize]]
    busy_workers: list[StrictStr]
    data: list[EncodedKey]
    actors: list[EncodedKey]
    #: ``random.Random.getstate()``: version, 625 integers, gauss_next
    rng: tuple[StrictInt, list[StrictInt], Optional[Number]]
    task_counter: TaskCounterData
    tasks: list[TaskRow]
    orphans: list[TaskRow]
