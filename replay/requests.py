"""Which instruction an event answers.

A worker's state machine asks the world for things through instructions
(``Execute``, ``GatherDep``, ``RetryBusyWorkerLater``) and hears back through
events (``Execute*Event``/``RescheduleEvent``/``SecedeEvent``,
``GatherDep*Event``, ``RetryBusyWorkerEvent``) that do not say which request
they answer. :class:`OpenRequests` pairs them as the worker does: by key for
executions, and first in, first out per peer for transfers and retries (a
worker has at most one transfer in flight from each peer).
"""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Any, Generic, TypeVar

from distributed import worker_state_machine as wsm

#: what the caller remembers about a request: the index of the stimulus
#: that issued it, the keys a gather asked for, …
Tag = TypeVar("Tag")

_EXECUTE_DONE = (wsm.ExecuteSuccessEvent, wsm.ExecuteFailureEvent, wsm.RescheduleEvent)


class OpenRequests(Generic[Tag]):
    """Instructions still waiting for the event that answers them."""

    __slots__ = ("executing", "gathers", "retries")

    def __init__(self) -> None:
        #: key -> tag of its open ``Execute``
        self.executing: dict[Any, Tag] = {}
        #: peer -> tags of its open ``GatherDep``s, oldest first
        self.gathers: defaultdict[str, deque[Tag]] = defaultdict(deque)
        #: peer -> tags of its open ``RetryBusyWorkerLater``s, oldest first
        self.retries: defaultdict[str, deque[Tag]] = defaultdict(deque)

    def issued(self, inst: wsm.Instruction, tag: Tag) -> None:
        if isinstance(inst, wsm.Execute):
            self.executing[inst.key] = tag
        elif isinstance(inst, wsm.GatherDep):
            self.gathers[inst.worker].append(tag)
        elif isinstance(inst, wsm.RetryBusyWorkerLater):
            self.retries[inst.worker].append(tag)

    def answers(self, ev: wsm.StateMachineEvent) -> bool:
        """Does ``ev`` answer an open request (without closing it)?"""
        if isinstance(ev, (*_EXECUTE_DONE, wsm.SecedeEvent)):
            return ev.key in self.executing
        if isinstance(ev, wsm.GatherDepDoneEvent):
            return bool(self.gathers.get(ev.worker))
        if isinstance(ev, wsm.RetryBusyWorkerEvent):
            return bool(self.retries.get(ev.worker))
        return False

    def answered(self, ev: wsm.StateMachineEvent) -> Tag | None:
        """The tag of the request ``ev`` answers (closing it), if any."""
        if isinstance(ev, _EXECUTE_DONE):
            return self.executing.pop(ev.key, None)
        if isinstance(ev, wsm.SecedeEvent):
            return self.executing.get(ev.key)  # still executing, elsewhere
        if isinstance(ev, wsm.GatherDepDoneEvent):
            pending = self.gathers.get(ev.worker)
            return pending.popleft() if pending else None
        if isinstance(ev, wsm.RetryBusyWorkerEvent):
            pending = self.retries.get(ev.worker)
            return pending.popleft() if pending else None
        return None
