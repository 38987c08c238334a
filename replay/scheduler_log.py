"""The scheduler's log, read: its stories, its view of the tasks at any time, its summary.

A scheduler log (:mod:`replay.scheduler_recorder`) is not replayed: it is
what the scheduler decided, read as recorded. :class:`SchedulerLog` answers
the scheduler's part of every read question, the same object whatever kind
of :class:`~replay.source.Source` answers for the workers (a replay, an
index, a partial history), so its answers cannot depend on the path.

It is found beside a worker log: ``scheduler.jsonl`` in a recording
directory, or in the folder of a log file whose every worker that
scheduler saw join (:func:`find_scheduler_log`).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.errors import LogError
from replay.literal import jsonable, key_text
from replay.logfile import iter_lines
from replay.story import SCHEDULER, StoryLine, _transition_text
from schemas.codec import FORMAT, VERSION, CodecError, decode_key

#: scheduler states of a task not finished
UNFINISHED = ("released", "waiting", "no-worker", "queued", "processing")


@dataclass(slots=True)
class TransitionRecord:
    """One recorded scheduler transition."""

    seq: int
    #: the scheduler's time stamp
    time: float
    key: Any
    start: str
    finish: str
    stimulus_id: str
    #: key -> recommended state
    recommendations: dict
    #: (processing_on, who_has) after it, where it changed; None: unchanged
    view: Optional[tuple[Optional[str], tuple[str, ...]]]

    def entry(self) -> tuple:
        """As ``Scheduler.story`` returns it (without dask's ``Transition`` class)."""
        return (self.key, self.start, self.finish, self.recommendations, self.stimulus_id, self.time)

    def story_line(self) -> StoryLine:
        data = {"transition": {"key": jsonable(self.key), "start": self.start, "finish": self.finish,
                               "final": self.finish, "recommendations": jsonable(self.recommendations)}}
        text = _transition_text(self.key, self.start, self.finish, self.finish, self.recommendations)
        return StoryLine(self.seq, self.time, SCHEDULER, self.stimulus_id, "transition", text, data)


@dataclass(slots=True)
class WorkerChange:
    """A worker joined (``add-worker``) or left (``remove-worker``)."""

    seq: int
    time: float
    kind: str
    address: str
    stimulus_id: str = ""
    #: joined before the recorder attached
    present: bool = False


@dataclass(slots=True)
class TaskView:
    """The scheduler's view of one task at a time."""

    state: str
    processing_on: Optional[str] = None
    who_has: tuple[str, ...] = ()
    #: when the task got into this state (the scheduler's time)
    since: float = 0.0


@dataclass
class SchedulerView:
    """The scheduler's view of every task and worker at one recorded time."""

    time: Optional[float]
    tasks: dict[Any, TaskView] = field(default_factory=dict)
    #: workers the scheduler had, joined and not left
    workers: set[str] = field(default_factory=set)
    #: workers that left, and when
    left: dict[str, float] = field(default_factory=dict)
    #: the scheduler's last record by then (its step; 0: none)
    seq: int = 0


class SchedulerLog:
    """A scheduler log read whole (it is small beside the workers': one line
    per transition)."""

    def __init__(self, path: str):
        self.path = path
        self.header: dict = {}
        self.transitions: list[TransitionRecord] = []
        self.worker_changes: list[WorkerChange] = []
        self.ended = False
        self.warnings: list[str] = []

    @classmethod
    def open(cls, path: str, *, validate: bool = False) -> SchedulerLog:
        log = cls(path)
        log._scan(validate)
        return log

    def _scan(self, validate: bool) -> None:
        path, seq = self.path, 0
        for lineno, rec in iter_lines(path, warn=self.warnings.append):
            kind = rec.get("kind")
            if validate:
                _validate(path, lineno, rec)
            if kind == "scheduler-header":
                if self.header:
                    raise LogError(path, lineno, "second scheduler header")
                if rec.get("format") != FORMAT:
                    raise LogError(path, lineno, f"format: not a {FORMAT} log")
                if type(rec.get("version")) is not int or rec["version"] > VERSION:
                    raise LogError(path, lineno, f"version: missing, or newer than this dask-replay reads ({VERSION})")
                self.header = rec
                continue
            if not self.header:
                raise LogError(path, lineno, f"{kind!r} record before the scheduler header")
            if self.ended:
                raise LogError(path, lineno, f"{kind!r} record after the scheduler's end")
            if rec.get("seq") != seq + 1:
                raise LogError(path, lineno, f"record {rec.get('seq')!r} out of order (expected {seq + 1})")
            seq += 1
            t = rec.get("time")
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                raise LogError(path, lineno, "time: missing or not a number")
            try:
                if kind == "transition":
                    view = None
                    if "who_has" in rec:
                        view = (rec.get("processing_on"), tuple(rec["who_has"]))
                    recs = {decode_key(k): v for k, v in rec.get("recommendations", ())}
                    self.transitions.append(TransitionRecord(
                        seq, t, decode_key(rec["key"]), rec["start"], rec["finish"], rec["stimulus_id"],
                        recs, view))
                elif kind in ("add-worker", "remove-worker"):
                    self.worker_changes.append(WorkerChange(seq, t, kind, rec["address"],
                                                            rec.get("stimulus_id", ""), rec.get("present", False)))
                elif kind == "scheduler-end":
                    self.ended = True
                else:
                    raise LogError(path, lineno, f"unknown scheduler record kind {kind!r}")
            except (KeyError, TypeError, ValueError, CodecError) as e:
                raise LogError(path, lineno, f"{kind}: malformed ({e!r})") from None
        if not self.header:
            raise LogError(path, None, "no scheduler header: not a dask-replay scheduler log, or empty")

    # --- what it knows ---------------------------------------------------

    @property
    def address(self) -> str:
        return self.header.get("address", "")

    @property
    def workers_seen(self) -> list[str]:
        return list(dict.fromkeys(c.address for c in self.worker_changes if c.kind == "add-worker"))

    @property
    def keys(self) -> set:
        return {t.key for t in self.transitions}

    @property
    def last_time(self) -> Optional[float]:
        times = [r.time for r in self.transitions[-1:]] + [c.time for c in self.worker_changes[-1:]]
        return max(times) if times else None

    def story(self, *keys_or_stimuli: Any) -> list[TransitionRecord]:
        """The transitions ``Scheduler.story`` would return for these keys,
        uncapped: those of a key, or recommending one, or (as dask's
        ``Client.story`` asks of each side) of a stimulus id."""
        wanted = set(keys_or_stimuli)
        return [t for t in self.transitions
                if t.key in wanted or t.stimulus_id in wanted or not wanted.isdisjoint(t.recommendations)]

    def story_lines(self, *keys_or_stimuli: Any, until: Optional[float] = None) -> list[StoryLine]:
        return [t.story_line() for t in self.story(*keys_or_stimuli) if until is None or t.time <= until]

    def records(self) -> Iterator[TransitionRecord | WorkerChange]:
        """Transitions and workers joining or leaving, in the order recorded."""
        changes = iter(self.worker_changes)
        change = next(changes, None)
        for t in self.transitions:
            while change is not None and change.seq < t.seq:
                yield change
                change = next(changes, None)
            yield t
        while change is not None:
            yield change
            change = next(changes, None)

    def view_at(self, t: Optional[float]) -> SchedulerView:
        """The scheduler's view at recorded time ``t`` (None: the end)."""
        view = SchedulerView(None)
        for rec in self.records():
            if t is not None and rec.time > t:
                break
            apply(view, rec)
        if t is not None:
            view.time = t
        return view

    def summary(self) -> SchedulerSummary:
        view = self.view_at(None)
        states = Counter(v.state for v in view.tasks.values())
        unfinished = {k: v for k, v in view.tasks.items() if v.state in UNFINISHED}
        return SchedulerSummary(self.address, self.path, len(self.transitions), dict(states),
                                self.workers_seen, dict(view.left), unfinished, self.ended, view.time)


def apply(view: SchedulerView, rec: TransitionRecord | WorkerChange) -> None:
    """``view`` after one more record."""
    view.seq = rec.seq
    if isinstance(rec, TransitionRecord):
        _apply_transition(view, rec)
    else:
        _apply_change(view, rec)


def _apply_transition(view: SchedulerView, t: TransitionRecord) -> None:
    view.time = t.time
    if t.finish == "forgotten":
        view.tasks.pop(t.key, None)
        return
    old = view.tasks.get(t.key)
    on, holders = t.view if t.view is not None else ((old.processing_on, old.who_has) if old else (None, ()))
    holders = tuple(h for h in holders if h not in view.left or h in view.workers)
    since = old.since if old is not None and old.state == t.finish else t.time
    view.tasks[t.key] = TaskView(t.finish, on, holders, since)


def _apply_change(view: SchedulerView, c: WorkerChange) -> None:
    view.time = c.time
    if c.kind == "add-worker":
        view.workers.add(c.address)
        view.left.pop(c.address, None)
        return
    view.workers.discard(c.address)
    view.left[c.address] = c.time
    # the scheduler forgets a leaving worker's replicas without a transition
    for key, task in list(view.tasks.items()):
        if c.address in task.who_has:
            view.tasks[key] = TaskView(task.state, task.processing_on,
                                       tuple(h for h in task.who_has if h != c.address), task.since)


def _validate(path: str, lineno: int, rec: dict) -> None:
    # pydantic only for `check`: the index's query path reads this log too
    from pydantic import ValidationError

    from replay.log import pydantic_error
    from schemas.scheduler import SCHEDULER_RECORD

    try:
        SCHEDULER_RECORD.validate_python(rec)
    except ValidationError as e:
        raise LogError(path, lineno, pydantic_error(e)) from None


@dataclass
class SchedulerSummary:
    """``load``'s first part: the scheduler at the end of its log."""

    address: str
    path: str
    transitions: int
    #: tasks by state at the end
    states: dict[str, int]
    workers_seen: list[str]
    #: workers that left, and when
    left: dict[str, float]
    #: tasks not finished at the end, with where each is processing
    unfinished: dict[Any, TaskView]
    ended: bool
    last: Optional[float]

    def to_json(self) -> dict:
        return {
            "address": self.address, "path": self.path, "transitions": self.transitions,
            "states": dict(sorted(self.states.items())), "workers_seen": self.workers_seen,
            "left": self.left, "ended": self.ended, "last": self.last,
            "unfinished": [{"key": jsonable(k), "state": v.state, "processing_on": v.processing_on,
                            "since": v.since} for k, v in sorted(self.unfinished.items(), key=lambda kv: repr(kv[0]))],
        }

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text.assemble(("scheduler ", "bold"), render.safe(self.address or "?"),
                            f": {self.transitions} transitions, {len(self.workers_seen)} workers seen"
                            + (f", {len(self.left)} left" if self.left else "")
                            + ("" if self.ended else "; its log has no end record"))
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "none"
        yield Text(f"  tasks by state at the end: {states}")
        for key, v in sorted(self.unfinished.items(), key=lambda kv: repr(kv[0]))[:20]:
            where = f" on {v.processing_on}" if v.processing_on else ""
            yield Text.assemble("  ", render.safe(key_text(key)), f": {v.state}{where}")
        if len(self.unfinished) > 20:
            yield Text(f"  and {len(self.unfinished) - 20} more not finished")


def find_scheduler_log(path: str, workers: list[str]) -> Optional[str]:
    """The scheduler log that belongs with the log at ``path``: in a recording
    directory, its ``scheduler.jsonl``; beside a log file, one that saw every
    worker of that log join (a stray one from another run does not)."""
    if path == "-" or path == "<stdin>":
        return None
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for name in ("scheduler.jsonl", "scheduler.jsonl.gz"):
        candidate = os.path.join(folder, name)
        if not os.path.isfile(candidate):
            continue
        if os.path.isdir(path):
            return candidate
        try:
            seen = set(SchedulerLog.open(candidate).workers_seen)
        except LogError:
            return None
        if workers and seen.issuperset(workers):
            return candidate
    return None


def attach_scheduler_log(path: str, workers: list[str]) -> Optional[SchedulerLog]:
    """The scheduler's log that belongs with the log at ``path``, read, or None."""
    found = find_scheduler_log(path, workers)
    return None if found is None else SchedulerLog.open(found)
