"""One interface for every read question, whatever answers it.

``load``, ``state``, ``diff``, ``story`` and ``why`` ask a :class:`Source`
(the whole log) and its :class:`WorkerAnswers` (one worker). Three kinds
answer, each with the same view objects:

- ``replayed`` (:class:`ReplayedSource`): a fresh, real ``WorkerState`` fed
  the recorded stimuli;
- ``indexed`` (:class:`replay.index.Index`): what one such replay observed,
  written down;
- ``partial`` (:class:`replay.partial.PartialLog`): a log whose history does
  not start from the empty state (a cluster dump), answered from its final
  state and recorded events, saying so.

:func:`open_source` holds the one policy that picks among them. Every finding
— raised steps, a log without a clean end, disagreements between workers —
comes from every kind, so an answer never depends on the path that produced
it; ``tests/test_one_answer.py`` holds them to that.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Optional, Protocol

from replay.diagnosis import diagnose, why_view
from replay.disagreements import find
from replay.errors import BadInput, ReplayError
from replay.index import LATER_BYTES, Index, build, log_bytes
from replay.logfile import LogName, log_name
from replay.partial import PartialLog, is_partial, scheduler_task
from replay.positions import choose_worker
from replay.scheduler_log import SchedulerLog, attach_scheduler_log
from replay.story import key_story, stimulus_story
from replay.summary import load_worker
from replay.views import (
    Crash,
    DiffView,
    StateView,
    departed_note,
    departure,
    notes,
    reach,
    state_of,
    steps_between,
    walk,
)

#: ``REPLAY_INDEX=off`` always replays; ``required`` fails unless a current
#: index answers (no replay at all); unset (``auto``), the index answers, built
#: on first use: in the same pass for a small log, afterwards in the background
#: for one of :data:`~replay.index.LATER_BYTES` or more; ``later``: afterwards
#: whatever the size
INDEX_ENV = "REPLAY_INDEX"
#: the values :data:`INDEX_ENV` takes
INDEX_MODES = ("auto", "off", "required", "later")

#: ``progress(label, total)``: a context giving a step callback (or None)
ProgressFactory = Callable[[str, int], AbstractContextManager[Optional[Callable[[int], None]]]]


def no_progress(label: str, total: int) -> AbstractContextManager[None]:
    return nullcontext(None)


class WorkerAnswers(Protocol):
    """Every read question about one worker of a log."""

    address: str
    #: the worker's steps
    events: int

    @property
    def ended(self) -> bool:
        """The log has the worker's ``end`` record."""

    @property
    def last_handled(self) -> Optional[float]:
        """The recorded time of the worker's last step."""

    def position(self, pos: Any) -> int:
        """The step a position names (:func:`replay.positions.step_of`)."""

    def state(self, step: int, states: Any = (), keys: Any = (), detail: bool = False) -> StateView: ...

    def diff(self, first: int, last: int) -> DiffView: ...

    def key_story(self, stop: int, key: Any) -> Any: ...

    def stimulus_story(self, stop: int, stimulus_id: str) -> Any: ...

    def why(self, step: int, key: Any = None) -> Any: ...

    def summary(self) -> Any: ...

    def step_at_time(self, t: Optional[float]) -> int:
        """The last step this worker had handled at recorded time ``t``."""

    def step_times(self) -> list[Optional[float]]:
        """The recorded time of each step, in order (the instants at which
        the worker's state can change)."""


class Source(Protocol):
    """Every read question about a log."""

    #: "replayed", "indexed" or "partial": which kind answers
    kind: str
    #: the log's name in messages
    path: str
    workers: list[WorkerAnswers]
    #: what reading the log found wrong with it (a torn last line…)
    warnings: list[str]

    #: the scheduler's part: its log, read as recorded, the same object
    #: whichever kind answers for the workers (None: no scheduler log)
    scheduler_log: Optional[SchedulerLog]

    def worker(self, which: Any = None) -> WorkerAnswers: ...

    def disagreements(self, at: dict[str, int]) -> list:
        """Where workers (or the scheduler and a worker) disagree about a
        key, each worker at the step ``at`` gives it."""

    def scheduler_task(self, key: Any) -> Any:
        """What the scheduler's view (an imported dump's) says of a key no
        worker has (:class:`replay.partial.SchedulerTaskView`), or None."""


# --- replayed ---------------------------------------------------------------------


class ReplayedWorker:
    """One worker, answered by replaying it."""

    def __init__(self, history: Any, progress: ProgressFactory = no_progress):
        self.history = history
        self.address: str = history.address
        self.events: int = history.events
        self._progress = progress
        #: the recorded time of every step (index: step), read when first needed
        self._times: Optional[list[Optional[float]]] = None
        #: the last replay to a step and its tracker: why, then disagreements, ask twice
        self._last: Optional[tuple[int, Any, Any]] = None
        #: where replay raised as the recording did not, once a replay got there
        self.crash: Crash = None

    @property
    def ended(self) -> bool:
        return self.history.wlog.ended

    @property
    def last_handled(self) -> Optional[float]:
        return self.history.wlog.last_handled

    def position(self, pos: Any) -> int:
        return self.history.position(pos)

    def _bar(self, stop: int) -> Any:
        return self._progress(f"replaying {self.address}", stop)

    def _replayed(self, step: int, answer: Callable[[int], Any]) -> Any:
        """``answer(step)``, or past a step where replay raised (and the
        recording did not), at the last step replay reaches, with a note
        (:func:`~replay.views.reach`: the index answers so too)."""
        at, note = reach(step, self.events, self.crash)
        try:
            view = answer(at)
        except ReplayError as e:
            if e.step is None or self.crash is not None:
                raise
            self.crash = (e.step, str(e))
            at, note = reach(step, self.events, self.crash)
            view = answer(at)
        view.note = notes(note, view.note)
        return view

    def _at(self, step: int) -> tuple[Any, Any]:
        """A replay to ``step`` with its tracker (which alone knows the raised steps)."""
        if self._last is not None and self._last[0] == step:
            return self._last[1], self._last[2]
        with self._bar(step) as cb:
            r, tracker = diagnose(self.history, step, progress=cb)
        self._last = (step, r, tracker)
        return r, tracker

    def state(self, step: int, states: Any = (), keys: Any = (), detail: bool = False) -> StateView:
        def answer(at: int) -> StateView:
            r, tracker = self._at(at)
            view = state_of(r, states, keys, detail)
            view.raised = list(tracker.raised)
            view.gathers = tracker.open_gathers()
            view.note = departed_note(departure(r.departed), at)
            return view

        return self._replayed(step, answer)

    def diff(self, first: int, last: int) -> DiffView:
        views = {step: self.state(step) for step in (first, last)}
        # a replay that stopped early: the steps it reached
        steps, total = steps_between(self.history.calls(first + 1, views[last].step, instructions=False))
        return DiffView(views[first], views[last], steps, total)

    def key_story(self, stop: int, key: Any) -> Any:
        def answer(at: int) -> Any:
            with self._bar(at) as cb:
                return key_story(walk(self.history, at, progress=cb), self.address, key)

        return self._replayed(stop, answer)

    def stimulus_story(self, stop: int, stimulus_id: str) -> Any:
        def answer(at: int) -> Any:
            with self._bar(at) as cb:
                return stimulus_story(walk(self.history, at, progress=cb), self.address, stimulus_id)

        return self._replayed(stop, answer)

    def why(self, step: int, key: Any = None) -> Any:
        def answer(at: int) -> Any:
            r, tracker = self._at(at)
            view = why_view(r, tracker, key)
            view.note = departed_note(departure(r.departed), at)
            return view

        return self._replayed(step, answer)

    def summary(self) -> Any:
        with self._bar(self.events) as cb:
            return load_worker(self.history, progress=cb)

    def step_times(self) -> list[Optional[float]]:
        if self._times is None:
            self._times = [None]
            for call in self.history.calls(instructions=False):
                self._times.extend([call.handled] * len(call.events))
        return self._times[1:]

    def step_at_time(self, t: Optional[float]) -> int:
        if t is None:
            return 0
        self.step_times()
        assert self._times is not None
        step = 0
        for s, handled in enumerate(self._times):
            if s and handled is not None and handled <= t:
                step = s
        return step


class ReplayedSource:
    """A log answered by replaying its workers (standard input, ``REPLAY_INDEX=off``,
    or a log whose index cannot be written)."""

    kind = "replayed"

    def __init__(self, history: Any, progress: ProgressFactory = no_progress):
        self.history = history
        self.path: str = history.path
        self.warnings: list[str] = list(history.warnings)
        self.workers: list[ReplayedWorker] = [ReplayedWorker(w, progress) for w in history.workers]
        self.scheduler_log = attach_scheduler_log(self.path, [w.address for w in self.workers])

    def worker(self, which: Any = None) -> ReplayedWorker:
        return self.workers[choose_worker([w.address for w in self.workers], which)]

    def disagreements(self, at: dict[str, int]) -> list:
        return find(self.workers, at, self.scheduler_log)

    def scheduler_task(self, key: Any) -> Any:
        return scheduler_task(self.history.log.source, key)


# --- the policy ------------------------------------------------------------------


def open_source(path: LogName, *, history: Any = None, progress: ProgressFactory = no_progress,
                index_progress: Any = None, index_later: Optional[Callable[[LogName], None]] = None) -> Source:
    """The source that answers for the log at ``path``.

    A current index answers; without one, the first question builds it
    (unless ``REPLAY_INDEX=off``; ``REPLAY_INDEX=required`` refuses instead).
    ``path`` may name a recording directory or several files
    (:data:`replay.logfile.LogName`): they are one cluster log, merged in
    memory by recorded time, indexed as ``DIR/.replay-index``.
    A partial history answers from its final state. Standard input and a log
    whose index cannot be written are replayed. With ``index_later`` (the
    command line's), a big log without an index is answered by replaying, at
    a plain replay's speed, and ``index_later(path)`` is asked to index it
    afterwards; without it (the Python API) the index is built in the same
    pass, as for a small log. ``history`` opens the log
    (:func:`replay.open` and the hash seed's re-execution are the caller's:
    the command line re-executes, the Python API refuses an inexact replay).
    """

    mode = os.environ.get(INDEX_ENV) or "auto"
    if mode not in INDEX_MODES:
        raise BadInput(f"{INDEX_ENV}={mode!r}: not one of {', '.join(INDEX_MODES)}")
    if path != "-" and mode != "off":
        index = Index.open(path)
        if index is not None:
            return index
        if mode == "required":
            raise BadInput(f"{log_name(path)}: no current index ({INDEX_ENV}=required); `replay index` builds one")
    opened = history()

    if is_partial(opened):  # nothing to replay from the empty state: answer without
        return PartialLog(opened)
    if path == "-" or mode == "off":
        return ReplayedSource(opened, progress)
    if any(w.header.get("snapshot") for w in opened.workers):
        # the index writes what changed since the empty state: a bounded
        # recording, which starts from a snapshot (replay.segments), is replayed
        return ReplayedSource(opened, progress)
    if index_later is not None and (mode == "later" or log_bytes(path) >= LATER_BYTES):
        # the first answer at a replay's speed; the index follows
        index_later(path)
        return ReplayedSource(opened, progress)
    try:
        if index_progress is None:
            build(opened)
        else:
            with index_progress(opened) as cb:
                build(opened, progress=cb)
    except OSError as e:  # nowhere to write it: answer by replaying
        source = ReplayedSource(opened, progress)
        source.warnings.append(f"{log_name(path)}: cannot write its index ({e.strerror or e}); replaying")
        return source
    index = Index.open(path)
    if index is None:  # the log changed while it was indexed
        return ReplayedSource(opened, progress)
    return index
