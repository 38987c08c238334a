"""A worker's recorded ``handle_stimulus`` calls, read and decoded from its log.

This is the unit every replay consumes. The recorder writes one step record
per stimulus; the stimuli of one call (a batch) are consecutive steps, and the
last of them carries what the call returned or raised. ``resources`` records
(``Worker.set_resources`` and settings assigned, which bypass
``handle_stimulus``) apply before the call that follows them.

:func:`read_calls` groups the records into :class:`RecordedCall` objects and
decodes their events into real dask events; a record that does not decode is a
:class:`~replay.errors.LogError` naming its line. Long stretches are read and
decoded in a second process (:mod:`replay.readahead`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from distributed import worker_state_machine as wsm

from replay.errors import LogError
from schemas.codec import CodecError, decode_key, decode_resources, decode_settings

if TYPE_CHECKING:
    from replay.log import ClusterLog, WorkerLog

#: what changed outside ``handle_stimulus`` before a call: (total resources,
#: available resources), followed, when the record has them, by the settings
#: assigned (or None), notes of task state changed outside it (or None) and
#: the worker's address assigned (or None); plain values, for the read-ahead pipe
ResourcesChange = tuple
#: a store into the worker's data that raised during a call: (key,
#: exception text, traceback text); plain values, for the read-ahead pipe
StoreFailure = tuple
#: called with the last step replayed, for progress bars
Progress = Callable[[int], None]

#: from how many steps on :func:`read_calls` decodes in a second process
READ_AHEAD_FROM = 20_000


@dataclass(slots=True)
class RecordedCall:
    """One recorded call of ``WorkerState.handle_stimulus``."""

    #: the real dask events, in the order they were handled (several for a batch)
    events: list[wsm.StateMachineEvent]
    #: step of ``events[0]``; a call's steps are consecutive
    first: int
    #: log line of each event's step record
    lines: list[int]
    #: when the worker handled the call (its events share this time)
    handled: float
    #: ``Worker.set_resources`` changes and settings, in order, applied just before the call
    resources: list[ResourcesChange]
    #: the instructions the recorded call returned, encoded; None if it raised
    #: or the worker died while handling it
    instructions: Optional[list[dict]]
    #: ``repr`` of the exception the recorded call raised, if it did
    error: Optional[str]
    #: the step records as read, when :func:`read_calls` was asked for them
    records: Optional[list[dict]] = None
    #: each store into the worker's data that raised during the call, in order
    store_failed: Optional[list[StoreFailure]] = None
    #: the head of a recorded call (:meth:`head`, or one event of a batch):
    #: what the whole call returned or raised says nothing about the head alone
    cut: bool = False

    @property
    def last(self) -> int:
        """Step of the call's last event."""
        return self.first + len(self.events) - 1

    @property
    def stimulus_id(self) -> str:
        return self.events[-1].stimulus_id

    def head(self, stop: int) -> RecordedCall:
        """The call cut after step ``stop`` (itself if it ends there or before);
        it keeps the recorded error, since the state machine may raise in the head."""
        if stop >= self.last:
            return self
        n = stop - self.first + 1
        return RecordedCall(
            self.events[:n], self.first, self.lines[:n], self.handled, self.resources,
            None, self.error, None if self.records is None else self.records[:n],
            self.store_failed, cut=True,
        )

    def step_of(self, stimulus_id: str) -> int:
        """The step of this call that carries ``stimulus_id`` (the last if several)."""
        for i in range(len(self.events) - 1, -1, -1):
            if self.events[i].stimulus_id == stimulus_id:
                return self.first + i
        return self.last


def read_calls(
    log: ClusterLog,
    worker: WorkerLog,
    start: int = 1,
    stop: int | None = None,
    *,
    records: bool = False,
    instructions: bool = True,
) -> Iterator[RecordedCall]:
    """The calls of ``worker`` holding steps ``start..stop``, and no others.

    A batch that ``start`` or ``stop`` falls inside is cut there, so that a
    replay can stop between the events of one ``handle_stimulus`` call (the
    state machine handles them one after another). A cut call carries what
    the whole call recorded (instructions, error), so only whole calls can be
    compared with the recording.

    With ``records`` each call keeps the step records it was read from (the
    views show them). Without, a stretch of at least :data:`READ_AHEAD_FROM`
    steps is read and decoded in a second process while the caller replays;
    ``instructions=False`` leaves the recorded instructions out of what
    crosses (``call.instructions`` is then None), which replaying without
    comparing does not need.
    """
    stop = worker.events if stop is None else stop
    if not records and stop - start + 1 >= READ_AHEAD_FROM and (os.cpu_count() or 1) > 1:
        from replay.readahead import read_ahead

        return read_ahead(lambda: _read(log, worker, start, stop, False), instructions=instructions)
    return _read(log, worker, start, stop, records)


def _read(
    log: ClusterLog, worker: WorkerLog, start: int, stop: int, keep: bool
) -> Iterator[RecordedCall]:
    # once per read, not per call: importing replay.log at the top would bring
    # pydantic to every importer of the engine
    from replay.log import decode_step

    path, header = log.file_of(worker), worker.header
    resources: list[ResourcesChange] = []
    steps: list[tuple[int, dict]] = []
    records = log.records(worker, start=start)
    for lineno, rec in records:
        if rec["kind"] == "resources":
            resources.append(_resources_change(path, lineno, rec))
            continue
        if rec["seq"] > stop:
            if steps:  # stop falls inside a batch: its head, so every step is a position
                yield _call(decode_step, path, header, resources, steps, keep, _call_end(records, rec))
            return
        steps.append((lineno, rec))
        if "instructions" in rec or "error" in rec:
            yield _call(decode_step, path, header, resources, steps, keep)
            resources, steps = [], []
    if steps:  # a torn batch: the worker died while handling it
        yield _call(decode_step, path, header, resources, steps, keep)


def _call_end(records: Iterator[tuple[int, dict]], rec: dict) -> dict:
    """The record that ends the call ``rec`` belongs to: it carries what the call
    returned or raised (a head that raises must know it was recorded to)."""
    while "instructions" not in rec and "error" not in rec:
        nxt = next(records, None)
        if nxt is None or nxt[1]["kind"] != "step":
            break
        rec = nxt[1]
    return rec


def _call(
    decode_step: Callable[..., wsm.StateMachineEvent],
    path: str,
    header: dict,
    resources: list[ResourcesChange],
    steps: list[tuple[int, dict]],
    keep: bool,
    last: dict | None = None,
) -> RecordedCall:
    last = steps[-1][1] if last is None else last
    failed = last.get("store_failed")
    # positional: this runs once per call of every replay
    return RecordedCall(
        [decode_step(path, lineno, rec, header) for lineno, rec in steps],
        steps[0][1]["seq"],
        [lineno for lineno, _ in steps],
        last["handled"],
        resources,
        last.get("instructions"),
        last.get("error"),
        [rec for _, rec in steps] if keep else None,
        None if failed is None else _store_failed(path, steps[-1][0], failed),
        last is not steps[-1][1],
    )


def _store_failed(path: str, lineno: int, failed: object) -> list[StoreFailure]:
    try:
        if type(failed) is not list:
            raise CodecError("must be a list")
        out = []
        for f in failed:
            if type(f) is not dict or not all(
                type(f.get(t)) is str for t in ("exception_text", "traceback_text")
            ):
                raise CodecError(f"bad entry {f!r:.80}")
            out.append((decode_key(f.get("key")), f["exception_text"], f["traceback_text"]))
        return out
    except CodecError as e:
        raise LogError(path, lineno, f"store_failed: {e}") from None


def _resources_change(path: str, lineno: int, rec: dict) -> ResourcesChange:
    try:
        settings = rec.get("settings")
        outside = rec.get("outside")
        address = rec.get("address")
        if outside is not None and (type(outside) is not list or not all(type(o) is str for o in outside)):
            raise CodecError("outside must be a list of strings")
        if address is not None and type(address) is not str:
            raise CodecError("address must be a string")
        resources = decode_resources(rec.get("total")), decode_resources(rec.get("available"))
        if settings is None and outside is None and address is None:
            return resources
        return (*resources, None if settings is None else decode_settings(settings), outside, address)
    except CodecError as e:
        raise LogError(path, lineno, f"resources: {e}") from None
