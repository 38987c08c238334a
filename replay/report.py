"""What ``replay report`` draws: each worker's task stream over recorded time.

Plain data, built from one replay per worker (:func:`replay.views.walk`) and
the log's :class:`~replay.source.Source`; ``--json`` writes exactly this, and
:mod:`replay.report_page` draws it. A bar is a request and its answer, paired
as the worker pairs them (:class:`~replay.requests.OpenRequests`): an
execution runs from the step whose ``Execute`` started it to the step of its
``ExecuteSuccessEvent``/``ExecuteFailureEvent``/``RescheduleEvent``, a
transfer from its ``GatherDep`` to its ``GatherDep*Event``. What is not
finished at the end, and why, is what ``replay why`` says, asked of the same
source; the headline is ``replay load``'s.

Bars shorter than one pixel column of the page cannot be drawn one by one: they
are counted per lane, outcome and column (:class:`Bucket`), and the page says
the column's width in recorded time. The same replay counts the worker's tasks
by state (:class:`StateCounts`, once per column), and notes its paused spans
(``PauseEvent`` to ``UnpauseEvent``). Disagreements between workers at the
report's end, and between the scheduler and a worker over the window when a
scheduler log is recorded, are the source's (``replay disagreements``), as
:class:`Link`\\ s between lanes.

A window (``start``/``stop``, recorded times) shows only what overlaps it:
bars are clipped to it, and what is unfinished is what ``why`` says at each
worker's last step by ``stop``.
"""
from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from typing import Any, Optional

from distributed import worker_state_machine as wsm
from rich.console import Console

from replay.disagreements import over_run
from replay.errors import BadInput, NotFound, ReplayError
from replay.literal import jsonable, key_text, sort_key
from replay.positions import choose_worker
from replay.requests import OpenRequests
from replay.views import is_transition, walk

#: the width of the time axis on the page, in pixels: one bucket per column
PLOT_WIDTH = 1200

#: what each answering event says about its request
OUTCOMES: dict[type, str] = {
    wsm.ExecuteSuccessEvent: "success",
    wsm.ExecuteFailureEvent: "failure",
    wsm.RescheduleEvent: "rescheduled",
    wsm.GatherDepSuccessEvent: "success",
    wsm.GatherDepBusyEvent: "busy",
    wsm.GatherDepFailureEvent: "failure",
    wsm.GatherDepNetworkFailureEvent: "network failure",
}

#: a request with no answer by the worker's last step
UNFINISHED = "unfinished"

#: task states in the order of a task's life, for the stacked counts
STACK_ORDER = ("released", "waiting", "constrained", "ready", "executing", "long-running", "fetch", "flight",
               "missing", "cancelled", "resumed", "memory", "error")

#: unfinished tasks per worker whose story the page carries, and lines of each
STORIES = 50
STORY_LINES = 40


@dataclass(frozen=True, slots=True)
class Bar:
    """One execution or transfer, from its request to its answer."""

    #: "execute" or "transfer"
    kind: str
    #: the row of its kind it is drawn on: no two bars of a lane overlap
    lane: int
    #: the step whose instruction asked for it
    start_step: int
    #: the step whose event answered it; None: no answer by the worker's last step
    stop_step: Optional[int]
    #: recorded seconds since the report's origin; an unanswered bar stops at the worker's last step
    start: float
    stop: float
    #: the answer (:data:`OUTCOMES`), or :data:`UNFINISHED`
    outcome: str
    #: the key executed, or the keys gathered
    keys: tuple
    #: the peer gathered from (transfers only)
    peer: Optional[str] = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "lane": self.lane, "start_step": self.start_step, "stop_step": self.stop_step,
                "start": self.start, "stop": self.stop, "outcome": self.outcome,
                "keys": jsonable(list(self.keys)), "peer": self.peer}


@dataclass(slots=True)
class Bucket:
    """Bars of one lane, kind and outcome shorter than a pixel column, that
    started in the same column: drawn as one."""

    kind: str
    lane: int
    outcome: str
    #: the column: it spans ``[column * bucket, (column + 1) * bucket)`` seconds
    column: int
    count: int = 0

    def to_json(self) -> dict:
        return {"kind": self.kind, "lane": self.lane, "outcome": self.outcome, "column": self.column,
                "count": self.count}


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A task not finished at the worker's last step, as ``replay why`` explains it."""

    key: Any
    state: str
    category: str
    #: ``why``'s sentence
    reason: str
    since_step: int
    #: recorded seconds since the report's origin; None: before the history the log holds
    since: Optional[float]
    #: the last lines of ``replay story KEY`` up to that step (empty past :data:`STORIES` keys)
    story: tuple = ()

    def to_json(self) -> dict:
        return {"key": jsonable(self.key), "state": self.state, "category": self.category, "reason": self.reason,
                "since_step": self.since_step, "since": self.since, "story": list(self.story)}


@dataclass(frozen=True, slots=True)
class Paused:
    """From a ``PauseEvent`` to the ``UnpauseEvent`` after it (None: still paused)."""

    start_step: int
    stop_step: Optional[int]
    start: float
    stop: float

    def to_json(self) -> dict:
        return {"start_step": self.start_step, "stop_step": self.stop_step, "start": self.start, "stop": self.stop}


@dataclass(slots=True)
class StateCounts:
    """How many tasks the worker held in each state, after the last step of
    each pixel column (every step's call, on a short log)."""

    #: the states met, in :data:`STACK_ORDER`
    states: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    #: recorded seconds since the report's origin
    times: list[float] = field(default_factory=list)
    #: state -> a count per sample (``len(steps)`` of them)
    counts: dict[str, list[int]] = field(default_factory=dict)

    def add(self, step: int, time: float, now: dict[str, int]) -> None:
        for state, n in now.items():
            if n and state not in self.counts:
                self.counts[state] = [0] * len(self.steps)
        for state, column in self.counts.items():
            column.append(now.get(state, 0))
        self.steps.append(step)
        self.times.append(time)
        self.states = sorted(self.counts, key=_state_rank)

    def at(self, i: int) -> dict[str, int]:
        return {s: self.counts[s][i] for s in self.states if self.counts[s][i]}

    def to_json(self) -> dict:
        return {"states": self.states, "steps": self.steps, "times": self.times,
                "counts": {s: self.counts[s] for s in self.states}}


def _state_rank(state: str) -> tuple:
    return (STACK_ORDER.index(state) if state in STACK_ORDER else len(STACK_ORDER), state)


@dataclass(frozen=True, slots=True)
class Link:
    """A disagreement about a key between two lanes: a worker and a peer, or
    the scheduler (``peer`` None) and a worker."""

    #: "between workers" or "scheduler and worker"
    kind: str
    key: Any
    worker: str
    #: the worker's side: recorded seconds since the origin
    time: float
    #: the peer (None: the scheduler), and the time of its side
    peer: Optional[str]
    peer_time: float
    #: ``replay disagreements``' sentence
    text: str
    #: when it stopped being seen (None: still at the end of the window)
    resolved: Optional[float] = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "key": jsonable(self.key), "worker": self.worker, "time": self.time,
                "peer": self.peer, "peer_time": self.peer_time, "text": self.text, "resolved": self.resolved}


@dataclass(slots=True)
class WorkerStream:
    """One worker's lanes, over its recorded time."""

    address: str
    nthreads: int
    steps: int
    #: recorded seconds since the report's origin of its first and last steps
    first: float
    last: float
    #: the log has the worker's ``end`` record (else it was killed, or the recorder stopped)
    ended: bool
    #: ``replay load``'s first line for the worker, and all it says
    headline: str
    load_text: str
    #: how many rows each kind of bar needed
    lanes: dict[str, int]
    #: bars drawn one by one (every unanswered one among them), in start order
    bars: list[Bar]
    buckets: list[Bucket]
    unfinished: list[Unfinished]
    #: replay stopped early: the state machine raised where the recorded worker did not
    crash: Optional[str] = None
    #: the worker's last step in the window (``steps`` without one)
    stop_step: int = 0
    #: ``replay load``'s status at the end: "closed", "running" or "paused"
    status: str = "running"
    #: the step its clean shutdown began (its closing ``PauseEvent``), as ``load`` reads it
    closed_at: Optional[int] = None
    paused: list[Paused] = field(default_factory=list)
    counts: StateCounts = field(default_factory=StateCounts)

    def to_json(self) -> dict:
        return {"address": self.address, "nthreads": self.nthreads, "steps": self.steps, "first": self.first,
                "last": self.last, "ended": self.ended, "stop_step": self.stop_step, "status": self.status,
                "closed_at": self.closed_at, "headline": self.headline,
                "load_text": self.load_text, "lanes": self.lanes, "bars": [b.to_json() for b in self.bars],
                "buckets": [b.to_json() for b in self.buckets], "paused": [p.to_json() for p in self.paused],
                "counts": self.counts.to_json(),
                "unfinished": [u.to_json() for u in self.unfinished], "crash": self.crash}


@dataclass(slots=True)
class Report:
    """Every chosen worker of a log, on one time axis."""

    path: str
    #: which kind of source answered the headline and the unfinished tasks
    source: str
    #: the earliest recorded time of the chosen workers (each worker's time is its own host's clock)
    origin: Optional[float]
    #: seconds from the origin to the last step of any chosen worker
    span: float
    #: seconds per pixel column: bars shorter than this are counted in :class:`Bucket`\\ s
    bucket: float
    width: int
    workers: list[WorkerStream] = field(default_factory=list)
    #: the command that merged a directory of worker logs into the log the page names
    merged: Optional[str] = None
    #: the window asked for (``--from``/``--to``), as recorded times; None: the whole log
    start: Optional[float] = None
    stop: Optional[float] = None
    #: disagreements, drawn between lanes
    links: list[Link] = field(default_factory=list)
    #: a scheduler log is recorded beside the log (the page gives it a lane)
    scheduler: bool = False

    def command(self, *args: str) -> str:
        """The text command that answers what a panel shows."""
        return " ".join(["replay", args[0], shlex.quote(self.path), *(shlex.quote(a) for a in args[1:])])

    def to_json(self) -> dict:
        return {"path": self.path, "merged": self.merged, "source": self.source, "origin": self.origin, "span": self.span,
                "bucket": self.bucket, "width": self.width, "start": self.start, "stop": self.stop,
                "scheduler": self.scheduler, "workers": [w.to_json() for w in self.workers],
                "links": [link.to_json() for link in self.links]}


# --- building ---------------------------------------------------------------------

#: a request as remembered until its answer: (kind, step, handled time, keys, peer)
_Request = tuple[str, int, float, tuple, Optional[str]]

#: a request and its answer, before lanes are given: (request, stop step, stop time, outcome)
_Span = tuple[_Request, Optional[int], float, str]


@dataclass(slots=True)
class Walked:
    """What one replay of a worker, up to a step, gives the report."""

    #: every ``Execute`` and ``GatherDep`` issued, with the event that answered it, in issue order
    spans: list[_Span] = field(default_factory=list)
    #: (pause step, its time, unpause step or None, its time)
    paused: list[tuple[int, float, Optional[int], float]] = field(default_factory=list)
    #: (step, recorded time, task counts by state) after the last call of each sampled column
    samples: list[tuple[int, float, dict[str, int]]] = field(default_factory=list)
    crash: Optional[str] = None


def walk_worker(history: Any, stop: Optional[int] = None, *, sample: Any = None) -> Walked:
    """Replay the worker once, to step ``stop`` (its last without): its
    requests and their answers, its paused spans, and its task counts by
    state after each call whose ``sample(time)`` (a column) differs from the
    next call's (every call without ``sample``)."""
    requests: OpenRequests[_Request] = OpenRequests()
    out = Walked()
    state_of: dict[Any, str] = {}
    counts: dict[str, int] = {}
    pause: Optional[tuple[int, float]] = None
    last = None
    pending = None
    try:
        for applied, _ in walk(history, stop):
            handled = applied.call.handled
            if pending is not None and (sample is None or sample(pending[1]) != sample(handled)):
                out.samples.append(pending)
            for entry in applied.log:
                if is_transition(entry):  # (key, start, finish, final, ...): the task's state after it
                    before = state_of.pop(entry[0], None)
                    if before is not None:
                        counts[before] -= 1
                    if entry[3] != "forgotten":
                        state_of[entry[0]] = entry[3]
                        counts[entry[3]] = counts.get(entry[3], 0) + 1
            for s in applied.steps():
                ev = s.event
                if isinstance(ev, wsm.PauseEvent) and pause is None:
                    pause = (s.step, handled)
                elif isinstance(ev, wsm.UnpauseEvent) and pause is not None:
                    out.paused.append((*pause, s.step, handled))
                    pause = None
                if not isinstance(ev, wsm.SecedeEvent):  # a seceded task is still executing
                    req = requests.answered(ev)
                    if req is not None:
                        out.spans.append((req, s.step, handled, OUTCOMES[type(ev)]))
                for inst in s.instructions:
                    if isinstance(inst, wsm.Execute):
                        requests.issued(inst, ("execute", s.step, handled, (inst.key,), None))
                    elif isinstance(inst, wsm.GatherDep):
                        keys = tuple(sorted(inst.to_gather, key=sort_key))
                        requests.issued(inst, ("transfer", s.step, handled, keys, inst.worker))
            last = handled
            pending = (applied.call.first + len(applied.call.events) - 1, handled, dict(counts))
    except ReplayError as e:  # a finding about the log: draw what came before it
        out.crash = str(e)
    if pending is not None:
        out.samples.append(pending)
    if last is None:
        last = history.wlog.last_handled if stop is None else None
    if last is None:
        last = history.wlog.first_handled or 0.0
    if pause is not None:
        out.paused.append((*pause, None, last))
    still_open = [*requests.executing.values(), *(r for queued in requests.gathers.values() for r in queued)]
    out.spans.extend((req, None, last, UNFINISHED) for req in still_open)
    out.spans.sort(key=lambda span: span[0][1])
    return out


def give_lanes(spans: list[_Span]) -> tuple[list[tuple[_Span, int]], dict[str, int]]:
    """The lowest free lane of its kind for each span, in start order: as
    dask's task stream gives each thread its row."""
    free_at: dict[str, list[float]] = {"execute": [], "transfer": []}
    out = []
    for span in spans:
        (kind, _, start, _, _), _, stop, _ = span
        lanes = free_at[kind]
        lane = next((i for i, t in enumerate(lanes) if t <= start), len(lanes))
        if lane == len(lanes):
            lanes.append(stop)
        else:
            lanes[lane] = stop
        out.append((span, lane))
    return out, {kind: len(lanes) for kind, lanes in free_at.items()}


def load_lines(summary: Any) -> str:
    """What ``replay load`` prints for the worker, as plain text."""
    console = Console(file=io.StringIO(), width=160, color_system=None, highlight=False, soft_wrap=True)
    console.print(summary)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def build(history: Any, source: Any, workers: Any = (), *, width: int = PLOT_WIDTH,
          start: Optional[float] = None, stop: Optional[float] = None) -> Report:
    """The report of ``history``'s workers (all, or those ``workers`` names);
    ``source`` answers for the same log (:func:`replay.source.open_source`).
    ``start``/``stop`` (recorded times) show only that window."""
    if any(w.header.get("history") == "partial" for w in history.workers):
        raise BadInput(f"{history.path}: history partial: a report needs a replay from the empty state; "
                       "load, why and state show the final state")
    addresses = [w.address for w in history.workers]
    chosen = [history.workers[i] for i in dict.fromkeys(choose_worker(addresses, w) for w in workers)] \
        if workers else list(history.workers)
    firsts = [w.wlog.first_handled for w in chosen if w.wlog.first_handled is not None]
    lasts = [w.wlog.last_handled for w in chosen if w.wlog.last_handled is not None]
    if start is not None and stop is not None and stop < start:
        raise BadInput(f"--to is before --from: {stop} < {start}")
    if firsts and ((start is not None and start > max(lasts)) or (stop is not None and stop < min(firsts))):
        raise NotFound(f"{history.path}: nothing recorded in that window: the workers handled steps from "
                       f"{min(firsts)} to {max(lasts)}")
    origin = start if start is not None else (min(firsts) if firsts else None)
    end = stop if stop is not None else (max(lasts) if lasts else None)
    span = (end - origin) if origin is not None and end is not None else 0.0
    bucket = max(span, 1e-9) / width
    report = Report(history.path, "", origin, span, bucket, width, start=start, stop=stop)
    steps = {wh.address: wh.events if stop is None else source.worker(wh.address).step_at_time(stop)
             for wh in chosen}

    def column(t: float) -> int:
        return int((t - (origin or 0.0)) / bucket)

    # the replays first, then the source's answers (a short log: the counts after every call)
    walks = [walk_worker(wh, steps[wh.address], sample=column if wh.events > 2 * width else None) for wh in chosen]
    report.source = source.kind
    report.scheduler = source.scheduler_log is not None
    for wh, walked in zip(chosen, walks):
        report.workers.append(_stream(wh, source.worker(wh.address), report, steps[wh.address], walked))
    report.links = _links(report, source, steps)
    return report


def _stream(wh: Any, answers: Any, report: Report, stop_step: int, walked: Walked) -> WorkerStream:
    origin = report.origin or 0.0
    window_start = 0.0 if report.start is None else report.start - origin

    def rel(t: Optional[float]) -> float:
        return 0.0 if t is None else t - origin
    spans = [s for s in walked.spans if rel(s[2]) >= window_start]  # what ended before the window is not shown
    laned, lanes = give_lanes(spans)
    bars: list[Bar] = []
    buckets: dict[tuple, Bucket] = {}
    for ((kind, step, start, keys, peer), stop_step_, stop, outcome), lane in laned:
        start, stop = max(rel(start), window_start), rel(stop)
        if outcome != UNFINISHED and stop - start < report.bucket:
            column = int(start / report.bucket)
            b = buckets.setdefault((kind, lane, outcome, column), Bucket(kind, lane, outcome, column))
            b.count += 1
            continue
        bars.append(Bar(kind, lane, step, stop_step_, start, stop, outcome, keys, peer))
    paused = [Paused(a, b, max(rel(ta), window_start), rel(tb)) for a, ta, b, tb in walked.paused
              if rel(tb) >= window_start]
    counts = StateCounts()
    for step, t, now in walked.samples:
        if rel(t) >= window_start or step == walked.samples[-1][0]:
            counts.add(step, max(rel(t), window_start), now)
    summary = answers.summary()
    text = load_lines(summary)
    verdicts = summary.stuck if stop_step == wh.events else answers.why(stop_step).tasks
    unfinished = []
    for i, v in enumerate(verdicts):
        story: tuple = ()
        if i < STORIES:
            lines = answers.key_story(stop_step, v.key).lines[-STORY_LINES:]
            story = tuple(f"step {line.step}: {line.text}" for line in lines)
        unfinished.append(Unfinished(v.key, v.state, v.category, v.reason, v.since.step,
                                     None if v.since.time is None or not v.since.step else rel(v.since.time),
                                     story))
    last = wh.wlog.last_handled if stop_step == wh.events else (answers.step_times()[stop_step - 1]
                                                                   if stop_step else wh.wlog.first_handled)
    return WorkerStream(
        address=wh.address, nthreads=int(wh.header.get("state", {}).get("nthreads", 1)), steps=wh.events,
        first=max(rel(wh.wlog.first_handled), window_start), last=rel(last), ended=wh.wlog.ended,
        headline=text.splitlines()[0] if text else "", load_text=text, lanes=lanes, bars=bars,
        buckets=list(buckets.values()), unfinished=unfinished, crash=walked.crash, stop_step=stop_step,
        paused=paused, counts=counts, status=summary.status, closed_at=summary.closed_at,
    )


def _links(report: Report, source: Any, steps: dict[str, int]) -> list[Link]:
    """The disagreements to draw: between workers at each one's last step of
    the window; the scheduler's against each worker over the window."""
    origin = report.origin or 0.0
    chosen = set(steps)
    times = {w.address: w.last + origin for w in report.workers}
    links: list[Link] = []
    for f in source.disagreements(steps):
        if not hasattr(f, "peer"):
            continue  # the scheduler's findings: over the run, below
        peer = source.worker(f.peer)
        peer_time = peer.step_times()[f.peer_step - 1] if f.peer_step else None
        links.append(Link("between workers", f.key, f.worker, times[f.worker] - origin, f.peer,
                          (peer_time if peer_time is not None else times[f.worker]) - origin, f.text()))
    if source.scheduler_log is not None:
        workers = [w for w in source.workers if w.address in chosen]
        for e in over_run(source.path, source.scheduler_log, workers).episodes:
            f = e.finding
            if f.worker not in chosen or (report.start is not None and e.resolved is not None
                                          and e.resolved < report.start) \
                    or (report.stop is not None and e.began > report.stop):
                continue
            began = max(e.began, origin)
            links.append(Link("scheduler and worker", f.key, f.worker, began - origin, None, began - origin,
                              f.text(), None if e.resolved is None else e.resolved - origin))
    return links


def describe_keys(keys: tuple, limit: int = 3) -> str:
    """Keys as dask prints them, the first ``limit`` of them and how many more."""
    shown = ", ".join(key_text(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
