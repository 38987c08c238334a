"""What a reproducer shows: the shrunk stimuli's kinds and the outcome asserted at the end."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from distributed import worker_state_machine as wsm

@dataclass(frozen=True, slots=True)
class Resources:
    """A ``Worker.set_resources`` change between two stimuli."""

    total: dict[str, float]
    available: dict[str, float]


Stimulus = Union[wsm.StateMachineEvent, Resources]


@dataclass(frozen=True, slots=True)
class Stuck:
    """``key`` ends in a state it never leaves; ``reason`` says why, in a sentence."""

    key: Any
    state: str
    reason: str
    #: peers marked in ``in_flight_workers`` with no transfer from them under
    #: way: stale bookkeeping, which a correct worker never keeps
    stale_in_flight: tuple = ()


@dataclass(frozen=True, slots=True)
class InState:
    """``key`` ends in ``state``."""

    key: Any
    state: str


@dataclass(frozen=True, slots=True)
class Raises:
    """The last stimulus makes ``handle_stimulus`` raise ``exception`` (a class name)."""

    exception: str
    key: Any = None
    start: str | None = None
    finish: str | None = None
    #: a function the exception passes through, e.g. ``_execute_done_common``
    function: str | None = None
    #: a correct worker receives the last event too (it is no reply to a
    #: request made twice), so it must handle it without raising
    handled_when_fixed: bool = False


@dataclass(frozen=True, slots=True)
class Invalid:
    """An ``assert`` of the state machine's validation fails at ``file``:``line``."""

    file: str
    line: int
    assertion: str


@dataclass(frozen=True, slots=True)
class Expr:
    """A Python expression over ``ws``, as the user typed it, holds at the end."""

    expr: str


Outcome = Union[Stuck, InState, Raises, Invalid, Expr]


@dataclass(frozen=True, slots=True)
class Narrative:
    """Where the events come from, for the test's docstring."""

    worker: str
    log: str
    original_events: int
    shrunk_events: int
    distributed: str
    predicate: str
