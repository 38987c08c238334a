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
the column's width in recorded time.
"""
from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from typing import Any, Optional

from distributed import worker_state_machine as wsm
from rich.console import Console

from replay.errors import BadInput, ReplayError
from replay.literal import jsonable, key_text, sort_key
from replay.positions import choose_worker
from replay.requests import OpenRequests
from replay.views import walk

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

    def to_json(self) -> dict:
        return {"key": jsonable(self.key), "state": self.state, "category": self.category, "reason": self.reason,
                "since_step": self.since_step, "since": self.since}


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

    def to_json(self) -> dict:
        return {"address": self.address, "nthreads": self.nthreads, "steps": self.steps, "first": self.first,
                "last": self.last, "ended": self.ended, "headline": self.headline, "load_text": self.load_text,
                "lanes": self.lanes, "bars": [b.to_json() for b in self.bars],
                "buckets": [b.to_json() for b in self.buckets],
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

    def command(self, *args: str) -> str:
        """The text command that answers what a panel shows."""
        return " ".join(["replay", args[0], shlex.quote(self.path), *(shlex.quote(a) for a in args[1:])])

    def to_json(self) -> dict:
        return {"path": self.path, "merged": self.merged, "source": self.source, "origin": self.origin, "span": self.span,
                "bucket": self.bucket, "width": self.width, "workers": [w.to_json() for w in self.workers]}


# --- building ---------------------------------------------------------------------

#: a request as remembered until its answer: (kind, step, handled time, keys, peer)
_Request = tuple[str, int, float, tuple, Optional[str]]

#: a request and its answer, before lanes are given: (request, stop step, stop time, outcome)
_Span = tuple[_Request, Optional[int], float, str]


def requests_and_answers(history: Any) -> tuple[list[_Span], Optional[str]]:
    """Replay the worker once; every ``Execute`` and ``GatherDep`` it issued
    with the event that answered it, in the order they were issued."""
    requests: OpenRequests[_Request] = OpenRequests()
    done: list[_Span] = []
    crash = None
    last = None
    try:
        for applied, _ in walk(history):
            handled = applied.call.handled
            for s in applied.steps():
                ev = s.event
                if not isinstance(ev, wsm.SecedeEvent):  # a seceded task is still executing
                    req = requests.answered(ev)
                    if req is not None:
                        done.append((req, s.step, handled, OUTCOMES[type(ev)]))
                for inst in s.instructions:
                    if isinstance(inst, wsm.Execute):
                        requests.issued(inst, ("execute", s.step, handled, (inst.key,), None))
                    elif isinstance(inst, wsm.GatherDep):
                        keys = tuple(sorted(inst.to_gather, key=sort_key))
                        requests.issued(inst, ("transfer", s.step, handled, keys, inst.worker))
            last = handled
    except ReplayError as e:  # a finding about the log: draw what came before it
        crash = str(e)
    if last is None:
        last = history.wlog.last_handled
    still_open = [*requests.executing.values(), *(r for pending in requests.gathers.values() for r in pending)]
    done.extend((req, None, last, UNFINISHED) for req in still_open)
    done.sort(key=lambda span: span[0][1])
    return done, crash


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


def build(history: Any, source: Any, workers: Any = (), *, width: int = PLOT_WIDTH) -> Report:
    """The report of ``history``'s workers (all, or those ``workers`` names);
    ``source`` answers for the same log (:func:`replay.source.open_source`)."""
    if any(w.header.get("history") == "partial" for w in history.workers):
        raise BadInput(f"{history.path}: history partial: a report needs a replay from the empty state; "
                       "load, why and state show the final state")
    addresses = [w.address for w in history.workers]
    chosen = [history.workers[i] for i in dict.fromkeys(choose_worker(addresses, w) for w in workers)] \
        if workers else list(history.workers)
    firsts = [w.wlog.first_handled for w in chosen if w.wlog.first_handled is not None]
    lasts = [w.wlog.last_handled for w in chosen if w.wlog.last_handled is not None]
    origin = min(firsts) if firsts else None
    span = (max(lasts) - origin) if firsts and lasts else 0.0
    bucket = max(span, 1e-9) / width
    report = Report(history.path, source.kind, origin, span, bucket, width)
    for wh in chosen:
        report.workers.append(_stream(wh, source.worker(wh.address), report))
    return report


def _stream(wh: Any, answers: Any, report: Report) -> WorkerStream:
    origin = report.origin or 0.0

    def rel(t: Optional[float]) -> float:
        return 0.0 if t is None else t - origin

    spans, crash = requests_and_answers(wh)
    laned, lanes = give_lanes(spans)
    bars: list[Bar] = []
    buckets: dict[tuple, Bucket] = {}
    for ((kind, step, start, keys, peer), stop_step, stop, outcome), lane in laned:
        start, stop = rel(start), rel(stop)
        if outcome != UNFINISHED and stop - start < report.bucket:
            column = int(start / report.bucket)
            b = buckets.setdefault((kind, lane, outcome, column), Bucket(kind, lane, outcome, column))
            b.count += 1
            continue
        bars.append(Bar(kind, lane, step, stop_step, start, stop, outcome, keys, peer))
    summary = answers.summary()
    text = load_lines(summary)
    unfinished = [Unfinished(v.key, v.state, v.category, v.reason, v.since.step,
                             None if v.since.time is None or not v.since.step else rel(v.since.time))
                  for v in summary.stuck]
    return WorkerStream(
        address=wh.address, nthreads=int(wh.header.get("state", {}).get("nthreads", 1)), steps=wh.events,
        first=rel(wh.wlog.first_handled), last=rel(wh.wlog.last_handled), ended=wh.wlog.ended,
        headline=text.splitlines()[0] if text else "", load_text=text, lanes=lanes, bars=bars,
        buckets=list(buckets.values()), unfinished=unfinished, crash=crash,
    )


def describe_keys(keys: tuple, limit: int = 3) -> str:
    """Keys as dask prints them, the first ``limit`` of them and how many more."""
    shown = ", ".join(key_text(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
