"""Whole-log answers: what ``replay load`` and ``replay verify`` report per worker.

``load`` leads with what matters to someone chasing a hang: per worker,
running or paused (and since when), the tasks not in a final state and why,
an invariant break or crash met by replay; only then the event mix.
``verify`` names the first step whose replay departs from the recording and,
for a broken invariant, the ``assert`` that failed: file, line, source text.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.diagnosis import Tracker, Verdict, verdicts_table, why
from replay.errors import NotFound, ReplayError
from replay.literal import jsonable, literal
from replay.story import Story, key_story
from replay.views import Departure, Moment, RaisedStep, departure, walk

if TYPE_CHECKING:  # an index answers load without the state machine
    from replay.engine import Divergence, Replayer


@dataclass(slots=True)
class Failure:
    """Where the state machine failed: the ``assert`` (or ``raise``) and its text."""

    exception: str
    file: str
    line: int
    function: str
    source: str
    #: the task the failure is about, if known
    key: Any = None

    @classmethod
    def of(cls, e: BaseException, key: Any = None) -> Failure:
        from replay.engine import failed_assert, raised_at

        inner = failed_assert(e) or e
        file, line, function, source = raised_at(inner)
        text = f"{type(inner).__name__}" + (f": {inner}" if not isinstance(inner, AssertionError) and str(inner) else "")
        return cls(text, file, line, function, source, key if key is not None else getattr(e, "key", None))

    def to_json(self) -> dict:
        return {"exception": self.exception, "file": self.file, "line": self.line,
                "function": self.function, "source": self.source, "key": jsonable(self.key)}

    def __rich__(self) -> Text:
        return Text.assemble(
            render.safe(f"{self.file}:{self.line}" if self.file else "(no traceback)"),
            f" in {self.function}: " if self.function else ": ",
            (render.safe(self.source or self.exception).plain, "bold"),
            *((" (about ", render.value(self.key, None), ")") if self.key is not None else ()),
        )


# --- load ---------------------------------------------------------------------


@dataclass
class WorkerSummary:
    """One worker of a log, replayed to its end."""

    address: str
    events: int
    event_counts: dict[str, int]
    first_handled: Optional[float]
    last_handled: Optional[float]
    deterministic: bool
    ended: bool
    task_states: dict[str, int]
    running: bool
    paused_since: Optional[Moment]
    #: every task not in a final state, with why
    stuck: list[Verdict]
    warnings: list[str]
    #: replay raised where the recording did not (then the rest reflects that step)
    crash: Optional[str] = None
    #: ``validate_state()`` of the final state failed here
    invariant: Optional[Failure] = None
    #: the step replay reached
    step: int = 0
    #: the steps at which the state machine raised, as the recorded worker did
    raised: list[RaisedStep] = field(default_factory=list)
    #: where the replay first departed from the recording (then what follows
    #: is the replay's, not the worker's): its step and what differed
    departed: Departure = None
    #: the ``end`` record's reason (None without one)
    end_reason: Optional[str] = None
    #: show every task with its key in full (``--detail``), not grouped by reason
    detail: bool = False
    #: when the state shown was taken, if not at the last step (a dump's time)
    end_time: Optional[float] = None

    @property
    def closed_at(self) -> Optional[int]:
        """The step at which the worker started closing, if its log shows a clean shutdown.

        ``Worker.close`` sets the status to closing, which hands the state
        machine a ``PauseEvent``; the worker may handle a few more stimuli
        (a peer's removal, a find-missing) before the plugins' teardown writes
        the ``end`` record ("teardown"). So a log that ends paused with that
        record is a closed worker, closing from its last pause. A recorder
        unregistered from a worker still running ends running instead; one
        unregistered while the worker is paused for memory would read as
        closed too (the end record does not say which teardown it was).
        """
        p = self.paused_since
        if self.ended and self.end_reason == "teardown" and not self.running and p is not None \
                and self.crash is None:
            return p.step
        return None

    @property
    def status(self) -> str:
        return "closed" if self.closed_at is not None else "running" if self.running else "paused"

    @property
    def kept(self) -> int:
        """Events the log holds: fewer than its last step where a bounded
        recording starts from a snapshot."""
        return sum(self.event_counts.values())

    def kept_text(self) -> str:
        n = self.kept
        text = f"{n} event{'' if n == 1 else 's'}"
        if 0 < n < self.events:
            text += f" (steps {self.events - n + 1}–{self.events})"
        return text

    @property
    def duration(self) -> float:
        if self.first_handled is None or self.last_handled is None:
            return 0.0
        return self.last_handled - self.first_handled

    def to_json(self) -> dict:
        return {
            "address": self.address, "events": self.events, "event_counts": self.event_counts,
            "first_handled": self.first_handled, "last_handled": self.last_handled,
            "duration": self.duration, "deterministic": self.deterministic, "ended": self.ended,
            "task_states": self.task_states, "running": self.running,
            "status": self.status, "closed_at": self.closed_at, "end_reason": self.end_reason,
            "paused_since": None if self.paused_since is None else self.paused_since.to_json(),
            "unfinished": len(self.stuck),
            "stuck": [v.to_json() for v in self.stuck], "warnings": self.warnings,
            "crash": self.crash, "invariant": None if self.invariant is None else self.invariant.to_json(),
            "step": self.step, "raised": [r.to_json() for r in self.raised],
            "departed": None if self.departed is None else {"step": self.departed[0], "text": self.departed[1]},
        }

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        closed = self.closed_at
        status = Text("running", style="green") if self.running else Text.assemble(
            ("closed", "green"), f" at step {closed} (clean shutdown)"
        ) if closed is not None else Text.assemble(
            ("paused", "bold yellow"),
            f" since step {self.paused_since.step}" if self.paused_since else "",
        )
        yield Text.assemble(
            ("worker ", "bold"), render.safe(self.address), ": ", status,
            f"; {len(self.stuck)} task{'' if len(self.stuck) == 1 else 's'} not finished"
            if self.stuck else "; no task is stuck",
            f"; {self.kept_text()} over {self.duration:.3f} s",
            "" if self.deterministic else "; NOT deterministic",
        )
        if not self.ended:
            yield Text.assemble(("  log ends without an end record", "bold yellow"),
                                f" at step {self.events}: the worker was killed, or the recorder stopped")
        for r in self.raised:
            yield Text.assemble("  ", r.__rich__())
        if self.departed is not None:
            yield Text.assemble(("  replay departs from the recording", "bold red"),
                                render.safe(f" at step {self.departed[0]}: {self.departed[1]}; later steps are "
                                            "the replay's, not the worker's"))
        if self.crash:
            yield Text.assemble(("  replay crashed: ", "bold red"), render.safe(self.crash))
        if self.invariant is not None:
            yield Text.assemble(("  invariant broken at the end: ", "bold red"), self.invariant.__rich__())
        if self.stuck:
            now = Moment(self.step, self.last_handled if self.end_time is None else self.end_time)
            yield verdicts_table(console, self.stuck, now, detail=self.detail,
                                 grouped=True)
        yield Text("  tasks: " + (", ".join(f"{s} {n}" for s, n in self.task_states.items()) or "none"))
        yield Text("  events: " + ", ".join(f"{render.safe(c).plain} {n}" for c, n in self.event_counts.items()),
                   style="dim")
        for w in self.warnings:
            yield Text.assemble(("  warning: ", "yellow"), render.safe(w))


@dataclass
class LoadSummary:
    path: str
    workers: list[WorkerSummary] = field(default_factory=list)
    #: the scheduler's summary (:class:`~replay.scheduler_log.SchedulerSummary`),
    #: when its log is beside this one: shown first
    scheduler: Any = None

    def to_json(self) -> dict:
        out = {"path": self.path, "workers": [w.to_json() for w in self.workers], "summary": self.summary()}
        if self.scheduler is not None:
            out = {"path": self.path, "scheduler": self.scheduler.to_json(), **out}
        return out

    def summary(self) -> str:
        """The log in one line: how its workers ended, what is not finished."""
        ends = Counter(w.status for w in self.workers)
        unended = sum(not w.ended for w in self.workers)
        states = Counter(v.state for w in self.workers for v in w.stuck)
        raised = sum(len(w.raised) for w in self.workers)
        n = len(self.workers)
        parts = [f"{n} worker{'' if n == 1 else 's'}: " + ", ".join(f"{c} {s}" for s, c in ends.most_common())]
        if unended:
            parts.append(f"{unended} without an end record")
        stuck = sum(states.values())
        parts.append(f"{stuck} task{'' if stuck == 1 else 's'} not finished"
                     + (" (" + ", ".join(f"{c} {s}" for s, c in states.most_common()) + ")" if stuck else ""))
        if raised:
            parts.append(f"{raised} raised step{'' if raised == 1 else 's'}")
        parts.append(f"{sum(w.kept for w in self.workers)} events")
        return "; ".join(parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.scheduler is not None:
            yield self.scheduler
        yield from self.workers
        yield Text(self.summary(), style="bold")


def load_worker(history: Any, *, progress: Any = None) -> WorkerSummary:
    """Replay one worker to its end (``replay load``)."""
    from replay.views import _state_rank

    wlog = history.wlog
    tracker = Tracker(history.events)
    r: Replayer | None = None
    crash = None
    try:
        for applied, r in walk(history, progress=progress):
            tracker.feed(applied)
    except ReplayError as e:  # a finding about the log, reported with the state before it
        crash = str(e)
    if r is None:
        r = history.replayer()
    ws = r.ws
    invariant = None
    if crash is None:
        try:
            ws.validate_state()
        except Exception as e:  # whatever validation raises, the state is broken
            invariant = Failure.of(e)
    states: dict[str, int] = {}
    for ts in ws.tasks.values():
        states[ts.state] = states.get(ts.state, 0) + 1
    return WorkerSummary(
        address=history.address,
        events=history.events,
        event_counts=dict(sorted(wlog.event_counts.items())),
        first_handled=wlog.first_handled,
        last_handled=wlog.last_handled,
        deterministic=bool(history.header.get("deterministic")),
        ended=wlog.ended,
        task_states=dict(sorted(states.items(), key=lambda kv: _state_rank(kv[0]))),
        running=ws.running,
        paused_since=tracker.paused if not ws.running else None,
        stuck=why(ws, tracker),
        warnings=list(r.warnings),
        crash=crash,
        invariant=invariant,
        step=tracker.now.step,
        raised=tracker.raised,
        end_reason=wlog.end_reason,
        departed=departure(r.departed),
    )


# --- verify -------------------------------------------------------------------


@dataclass
class DivergenceView:
    """The first step whose replay departs from the recording."""

    step: int
    stimulus_id: str
    #: "instructions", "error" or "invariant" (see :class:`~replay.engine.Divergence`)
    kind: str
    expected: Any
    actual: Any
    key: Any
    #: where replay failed (kinds "error" and "invariant")
    failure: Optional[Failure]
    #: the uncapped story of the key and its dependents up to the step
    story: Optional[Story]
    #: why, when it is known: a behaviour change between versions, state
    #: changed outside ``handle_stimulus``
    cause: Optional[str] = None
    #: the cause, or what was compared and that no cause is known
    explanation: str = ""

    @classmethod
    def of(cls, history: Any, d: Divergence, replayer: Replayer | None = None) -> DivergenceView:
        story = None
        if d.key is not None:
            # a step that raised in replay only cannot be replayed again: stop before it
            stop = d.seq - 1 if d.kind == "error" else d.seq
            ts = replayer.ws.tasks.get(d.key) if replayer is not None else None
            dependents = [dep.key for dep in ts.dependents] if ts is not None else []
            try:
                story = key_story(walk(history, stop), history.address, d.key, *dependents)
            except NotFound:  # the key appears in no step before: no story to tell
                story = None
        failure = None if d.exception is None else Failure.of(d.exception, d.key)
        return cls(d.seq, d.stimulus_id, d.kind, d.expected, d.actual, d.key, failure, story,
                   d.cause, d.explanation())

    def instructions_diff(self) -> dict:
        e = [_hashable(x) for x in self.expected or ()]
        a = [_hashable(x) for x in self.actual or ()]
        return {
            "missing": [x for x, h in zip(self.expected or (), e) if h not in a],
            "unexpected": [x for x, h in zip(self.actual or (), a) if h not in e],
            # same instructions in another order
            "reordered": e != a and sorted(map(repr, e)) == sorted(map(repr, a)),
        }

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "step": self.step, "stimulus_id": self.stimulus_id, "kind": self.kind,
            "key": jsonable(self.key), "cause": self.cause, "explanation": self.explanation,
            "failure": None if self.failure is None else self.failure.to_json(),
            "story": [] if self.story is None else self.story.to_json()["story"],
        }
        if self.kind == "instructions":
            out["expected"], out["actual"] = self.expected, self.actual
            out["diff"] = self.instructions_diff()
        elif self.kind == "error":
            out["expected"], out["actual"] = self.expected, self.actual
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.explanation:
            yield Text.assemble("  ", (render.safe(self.explanation).plain, "bold" if self.cause else ""))
        if self.kind == "instructions":
            diff = self.instructions_diff()
            for x in diff["missing"]:
                yield Text.assemble(("  - recorded ", "red"), render.safe(_instruction_text(x)))
            for x in diff["unexpected"]:
                yield Text.assemble(("  + replayed ", "green"), render.safe(_instruction_text(x)))
            if diff["reordered"]:
                yield Text("  the same instructions, in another order")
        elif self.kind == "invariant":
            yield Text.assemble("  validate_state() fails: ", self.failure.__rich__() if self.failure else "")
        elif self.expected is not None:
            yield Text.assemble("  the recorded worker raised ", render.safe(self.expected),
                                "; replay did not")
        else:
            yield Text.assemble("  replay raised ", render.safe(self.actual or ""),
                                "; the recorded worker did not")
            if self.failure is not None:
                yield Text.assemble("  at ", self.failure.__rich__())
        if self.story is not None:
            yield self.story


def _instruction_text(d: dict) -> str:
    cls = d.get("cls", "?")
    return cls + " " + " ".join(f"{k}={literal(v, 120)}" for k, v in d.items() if k not in ("cls", "stimulus_id"))


def _hashable(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_hashable(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


@dataclass
class WorkerVerify:
    address: str
    steps: int
    warnings: list[str]
    divergence: Optional[DivergenceView]
    #: why this replay could not be exact (another hash seed): then a match
    #: proves nothing, and verify never calls it faithful
    inexact: list[str] = field(default_factory=list)

    @property
    def faithful(self) -> bool:
        return self.divergence is None and not self.inexact

    def to_json(self) -> dict:
        return {"address": self.address, "steps": self.steps, "faithful": self.faithful,
                "warnings": self.warnings, "inexact": self.inexact,
                "divergence": None if self.divergence is None else self.divergence.to_json()}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        d = self.divergence
        if d is None and self.inexact:
            yield Text.assemble(("inexact ", "bold yellow"), render.safe(self.address),
                                f": {self.steps} steps replayed as recorded, but ",
                                render.safe("; ".join(self.inexact)),
                                ": a replay that cannot be exact proves nothing")
            return
        if d is None:
            n = self.steps
            yield Text.assemble(("faithful ", "green"), render.safe(self.address),
                                f": {n} step{'' if n == 1 else 's'} replayed, every instruction as recorded")
            return
        what = {"instructions": "instructions differ", "error": "replay and recording disagree on an exception",
                "invariant": "an invariant breaks"}.get(d.kind, d.kind)
        yield Text.assemble(
            ("diverges ", "bold red"), render.safe(self.address), f" at step {d.step} (stimulus ",
            render.safe(d.stimulus_id), f"): {what}",
            *((" about ", render.value(d.key, None)) if d.key is not None else ()),
        )
        yield d


@dataclass
class FinalStateCheck:
    """``verify`` of an imported log, which holds no instructions to compare:
    the replayed final state against the dump's (:func:`replay.dump.compare_final_state`)."""

    comparison: Any

    @property
    def faithful(self) -> bool:
        return self.comparison.equal

    def to_json(self) -> dict:
        c = self.comparison
        return {"address": c.worker, "faithful": c.equal, "compared": "final state",
                "tasks": c.tasks, "reason": c.reason,
                "differences": [{"key": jsonable(k), "what": what, "dump": jsonable(d), "replay": jsonable(r)}
                                for k, what, d, r in c.differences]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        c = self.comparison
        if c.equal:
            yield Text.assemble(("faithful ", "green"), render.safe(c.worker),
                                f": replayed, its {c.tasks} tasks end as in the dump (an imported log "
                                "holds no instructions to compare)")
            return
        yield Text.assemble(("differs ", "bold red"), render.safe(c.worker), ": ", render.safe(c.reason))
        for k, what, d, r in c.differences[:50]:
            yield Text.assemble("  ", render.value(k, None), f" {what}: dump ", render.safe(literal(d)),
                                ", replay ", render.safe(literal(r)))


@dataclass
class VerifyResult:
    workers: list[WorkerVerify]

    @property
    def faithful(self) -> bool:
        return all(w.faithful for w in self.workers)

    def to_json(self) -> dict:
        return {"faithful": self.faithful, "workers": [w.to_json() for w in self.workers]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.workers


def verify_worker(history: Any, *, validate: bool = False, progress: Any = None) -> WorkerVerify | FinalStateCheck:
    """``replay verify`` of one worker. A log imported from a cluster dump holds
    no instructions to compare: its replayed final state is compared with the
    dump's instead (a partial history cannot be replayed: :class:`ReplayError`)."""
    header = history.header
    if not (header.get("imported") or {}).get("instructions", True) and header.get("history") != "partial":
        from replay.dump import compare_worker

        return FinalStateCheck(compare_worker(history))
    from replay.determinism import inexact_reasons

    d, r = history.verify(validate=validate, progress=progress)
    return WorkerVerify(history.address, r.seq, list(r.warnings),
                        None if d is None else DivergenceView.of(history, d, r), inexact_reasons(header))

