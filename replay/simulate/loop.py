"""The discrete-event loop: one heap of pending calls on a fake clock."""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable

#: the fake clock's origin, so that timestamps look like wall-clock times
EPOCH = 1_700_000_000.0


class Stalled(RuntimeError):
    """The simulated cluster stopped making progress."""


class _BudgetSpent(Exception):
    """The run handed over all the stimuli it was asked for."""


class EventLoop:
    """Pending completions and messages, run in the order of their simulated time.

    A call scheduled for a time runs after every call scheduled earlier for
    the same time: ties break in the order the calls were scheduled, never by
    what the calls are, so a run is a function of its seed alone.

    The loop also keeps the step budget: :meth:`count_step` is called once per
    stimulus handed to a worker, and the run ends at the one that would
    exceed it, before that stimulus is handled.
    """

    __slots__ = ("now", "steps", "limit", "counts", "_heap", "_seq")

    #: simulated seconds since :data:`EPOCH`; the time of the call running
    now: float
    #: stimuli handed to workers so far, over all workers
    steps: int
    #: the run ends when ``steps`` would exceed it
    limit: int
    #: stimulus class name -> stimuli of that class handed so far
    counts: dict[str, int]
    #: ``(time, sequence number, function, arguments)``; the sequence number is unique
    _heap: list[tuple]

    def __init__(self) -> None:
        self.now = 0.0
        self.steps = 0
        self.limit = 0
        self.counts = {}
        self._heap = []
        self._seq = itertools.count()

    def clock(self) -> float:
        """The simulated wall-clock time."""
        return EPOCH + self.now

    def stimulus_id(self, prefix: str) -> str:
        """A stimulus id as dask makes them: a name and the time it was made."""
        return f"{prefix}-{EPOCH + self.now}"

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), fn, args))

    def call_at(self, when: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def count_step(self, name: str) -> None:
        """Account for one more stimulus of class ``name``, or end the run."""
        if self.steps >= self.limit:
            raise _BudgetSpent
        self.steps += 1
        self.counts[name] = self.counts.get(name, 0) + 1

    def run(self, events: int) -> None:
        """Run calls until ``events`` more stimuli were handed over.

        Raises :class:`Stalled` if nothing is left to run before that.
        """
        self.limit = self.steps + events
        heap = self._heap
        pop = heapq.heappop
        try:
            while heap:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
            raise Stalled(f"nothing left to do at step {self.steps}")
        except _BudgetSpent:
            pass
