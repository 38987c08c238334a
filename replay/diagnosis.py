"""Why a task is stuck: for every task not in a final state, what it waits for.

A :class:`Tracker` follows a tapped replay (:func:`replay.views.walk`) step by
step and remembers, per key, when it last *changed* state (a ``flight →
fetch → flight`` within one step is no change), the last ``GatherDep`` and
``Execute`` that named it, and when the worker paused. :func:`why` then reads
the real ``WorkerState`` at that step and explains each unfinished task in
terms of what is known *there*: a gather issued at step 371 is "not completed
by step 400", never "never completed", since it may complete at step 416.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.errors import NotFound
from replay.literal import jsonable, key_text, literal, short_key, sort_key, task_name
from replay.story import no_such_key
from replay.views import FINAL_STATES, Gather, Key, Moment, RaisedStep, changed_states, elapsed

if TYPE_CHECKING:  # an index answers why without the state machine
    from distributed import worker_state_machine as wsm

    from replay.engine import Applied, Replayer


class Tracker:
    """Moments that explain the current state of each key."""

    #: what durations at the last step run to
    end_name = "the end of the log"

    def __init__(self, end: Optional[int] = None) -> None:
        # only a replay tracks: the index's query path imports no state machine
        from replay.requests import OpenRequests

        #: the worker's last step, if known: at it, a wait lasts "to the end of the log"
        self.end = end
        #: key -> (moment, stimulus id) of the step that last changed its state
        self.changed: dict[Key, tuple[Moment, str]] = {}
        #: key -> (moment, peer) of the last GatherDep that asked for it
        self.gather: dict[Key, tuple[Moment, str]] = {}
        #: key -> moment of the last Execute
        self.execute: dict[Key, Moment] = {}
        #: the PauseEvent still in force
        self.paused: Optional[Moment] = None
        #: the last step fed
        self.now: Moment = Moment(0, None)
        #: the steps at which the state machine raised, as recorded
        self.raised: list[RaisedStep] = []
        #: the instructions not answered yet: a gather's tag is its :class:`Gather`
        self.requests: Any = OpenRequests()

    def feed(self, applied: Applied) -> None:
        from distributed import worker_state_machine as wsm

        handled = applied.call.handled
        if applied.exception is not None:
            call = applied.call
            # a batch stops at the event that raised: the events before it completed
            n = 0 if applied.ends is None else len(applied.ends)
            self.raised.append(RaisedStep.of(call.first + n, handled, call.events[n], applied.exception))
        for s in applied.steps():
            at = Moment(s.step, handled)
            self.now = at
            ev = s.event
            if isinstance(ev, wsm.PauseEvent):
                self.paused = at
            elif isinstance(ev, wsm.UnpauseEvent):
                self.paused = None
            for key in changed_states(s.log):
                self.changed[key] = (at, ev.stimulus_id)
            self.requests.answered(ev)
            for inst in s.instructions:
                gather = None
                if isinstance(inst, wsm.GatherDep):
                    gather = Gather(at.step, at.time, inst.worker, tuple(sorted(inst.to_gather, key=sort_key)))
                self.requests.issued(inst, gather)
                if isinstance(inst, wsm.GatherDep):
                    for key in inst.to_gather:
                        self.gather[key] = (at, inst.worker)
                elif isinstance(inst, wsm.Execute):
                    self.execute[inst.key] = at

    def open_gathers(self) -> list[Gather]:
        """The gathers issued and not answered yet, oldest first."""
        return sorted((g for pending in self.requests.gathers.values() for g in pending),
                      key=lambda g: (g.step, g.peer))

    def follow(self, walked: Iterable[tuple[Applied, Any]]) -> Optional[wsm.WorkerState]:
        """Consume a walk; return the state it ends at."""
        ws = None
        for applied, r in walked:
            self.feed(applied)
            ws = r.ws
        return ws


def category(ws: wsm.WorkerState, ts: wsm.TaskState) -> str:
    """What kind of wait ``ts`` is in: its state and, within it, the branch
    of :func:`explain` that holds. Two states share a category when the same
    kind of thing keeps the task where it is (``replay shrink --stuck``
    requires the shrunk log to end in the original's category)."""
    state = ts.state
    if state in FINAL_STATES:
        return state
    if state == "waiting":
        deps = [d for d in ts.dependencies if d.state != "memory"]
        if any(d.state == "error" for d in deps):
            return "waiting: erred dependency"
        return "waiting: dependencies" if deps else "waiting: dependencies in memory"
    if state == "fetch":
        holders = ts.who_has
        if not ws.running:
            return "fetch: paused"
        if holders and all(w in ws.busy_workers or w in ws.in_flight_workers for w in holders):
            return "fetch: holders busy"
        return "fetch: queued"
    if state == "constrained":
        need = ts.resource_restrictions or {}
        if any(ws.available_resources.get(r, 0) < n for r, n in need.items()):
            return "constrained: resources"
        return "constrained: paused" if not ws.running else "constrained: threads busy"
    if state == "ready":
        return "ready: paused" if not ws.running else "ready: threads busy"
    if state in ("cancelled", "resumed"):
        return f"{state}: while {ts.previous}"
    return state


@dataclass(slots=True)
class Verdict:
    """Why one task is where it is, at one step."""

    key: Key
    state: str
    #: the kind of wait (:func:`category`)
    category: str
    #: one sentence, for people
    reason: str
    #: when the task last changed state, and the stimulus that changed it
    since: Moment
    stimulus_id: str
    #: the facts the reason rests on: peers, dependencies, steps
    detail: dict[str, Any] = field(default_factory=dict)
    #: the keys ``reason`` names, spelled there by :func:`key_text`
    named: tuple = ()

    def short_reason(self) -> str:
        """``reason`` with its keys shortened as dask's dashboard names tasks
        (:func:`~replay.literal.short_key`)."""
        text = self.reason
        for k in self.named:
            text = text.replace(key_text(k), short_key(k))
        return text

    def to_json(self) -> dict:
        out = {"key": jsonable(self.key), "state": self.state, "category": self.category,
               "reason": self.reason, "since_step": self.since.step, "since_time": self.since.time,
               "stimulus_id": self.stimulus_id}
        if self.detail:
            out["detail"] = jsonable(self.detail)
        return out


#: ``why`` runs a short continuation (:func:`replay.continuation.short_verdict`)
#: only on logs of at most this many steps; here, not there, so that ``why`` on
#: a longer log decides without importing the state machine
WHY_MAX_STEPS = 20_000


# --- explaining one task ----------------------------------------------------

#: what a cancelled or resumed task still waits for, by its previous state
_UNDERWAY = {"executing": "its execution", "long-running": "its seceded execution", "flight": "its transfer"}


def _holders(ts: wsm.TaskState) -> list[str]:
    return sorted(ts.who_has)


def _peers(peers: list[str]) -> str:
    if len(peers) == 1:
        return peers[0]
    return ", ".join(peers[:-1]) + " and " + peers[-1]


def _when(m: Optional[Moment], now: Moment) -> str:
    if m is None or m.step == 0:
        return ""
    ago = elapsed(m, now)
    return f"step {m.step}" + (f", {ago} earlier" if ago and m.step != now.step else "")


def explain(ws: wsm.WorkerState, ts: wsm.TaskState, tracker: Tracker) -> Verdict:
    """Why ``ts`` cannot progress, as known at the tracker's step."""
    key, state, now = ts.key, ts.state, tracker.now
    since, sid = tracker.changed.get(key, (Moment(0, None), ""))
    detail: dict[str, Any] = {}
    named: list = []
    kind = category(ws, ts)  # which branch below holds
    by = tracker.end_name if now.step and now.step == tracker.end else f"step {now.step}"

    if state in FINAL_STATES:
        reason = f"{state}: a final state"
    elif state == "waiting":
        deps = sorted((d for d in ts.dependencies if d.state != "memory"), key=lambda d: sort_key(d.key))
        detail["waiting_for"] = {d.key: d.state for d in deps}
        if kind == "waiting: erred dependency":
            d = next(d for d in deps if d.state == "error")
            at = tracker.changed.get(d.key, (None, ""))[0]
            detail["erred_dependency"] = d.key
            named.append(d.key)
            reason = (
                f"waiting for {key_text(d.key)}, which erred"
                + (f" at {_when(at, now)}" if at else "")
                + ": nothing releases or reschedules a task whose dependency erred (dask #6705)"
            )
        elif kind == "waiting: dependencies":
            noun = "dependency" if len(deps) == 1 else "dependencies"
            named += [d.key for d in deps[:5]]
            reason = f"waiting for {len(deps)} {noun}: " + "; ".join(
                f"{key_text(d.key)} {_where(ws, d, tracker)}" for d in deps[:5]
            ) + (f"; … {len(deps) - 5} more" if len(deps) > 5 else "")
        else:
            reason = "waiting although every dependency is in memory: nothing recommended it ready"
    elif state == "fetch":
        holders = _holders(ts)
        busy = [w for w in holders if w in ws.busy_workers]
        flying = [w for w in holders if w in ws.in_flight_workers and w not in ws.busy_workers]
        detail.update(who_has=holders, busy=busy, in_flight=flying)
        if kind == "fetch: paused":
            reason = f"fetch: the worker is paused (since {_when(tracker.paused, now) or 'before the log'}), and a paused worker starts no transfers"
        elif kind == "fetch: holders busy":
            parts = []
            if busy:
                parts.append(f"{_peers(busy)} answered busy" if len(busy) > 1 else f"{busy[0]} answered busy")
            if flying:
                # in_flight_workers without an unanswered GatherDep to the peer is
                # stale bookkeeping: no reply will come to clear it
                gathers = tracker.open_gathers()
                asked = None if gathers is None else {g.peer for g in gathers}
                stale = [] if asked is None else [w for w in flying if w not in asked]
                under_way = [w for w in flying if w not in stale]
                if under_way:
                    parts.append(f"a transfer from {_peers(under_way)} is already under way")
                if stale:
                    detail["stale_in_flight"] = stale
                    parts.append(
                        f"{_peers(stale)} {'is' if len(stale) == 1 else 'are'} marked in flight "
                        f"(in_flight_workers), but no GatherDep to {'it' if len(stale) == 1 else 'them'} "
                        "awaits an answer: a stale entry, which nothing clears")
            every = "its only holder" if len(holders) == 1 else ("both holders" if len(holders) == 2 else f"all {len(holders)} holders")
            reason = f"fetch: {every} can't send now: " + "; ".join(parts)
        elif not holders:
            reason = "fetch: no holder known"
        else:
            reason = (
                f"fetch: queued for a transfer from {_peers(holders)}; "
                f"{ws.transfer_incoming_count} of {ws.transfer_incoming_count_limit} incoming transfers "
                f"under way, {ws.transfer_incoming_bytes:,} bytes"
            )
    elif state == "flight":
        gathered, peer = tracker.gather.get(key, (since, ts.coming_from or "?"))
        detail.update(gather_step=gathered.step or None, coming_from=ts.coming_from)
        took = elapsed(gathered, now)
        # step 0: issued before what the log holds (a partial history), maybe at a known time
        issued = f"gather issued at step {gathered.step}, " if gathered.step else ""
        reason = (
            f"in flight from {ts.coming_from}: {issued}"
            f"not completed by {by}" + (f" ({took})" if took and (gathered.step or gathered.time) else "")
        )
    elif state == "missing":
        detail["who_has"] = _holders(ts)
        reason = "missing: no worker is known to hold it; the worker asks the scheduler who has it"
    elif state == "constrained":
        need = ts.resource_restrictions or {}
        detail.update(needs=dict(need), available={r: ws.available_resources.get(r, 0) for r in need})
        if kind == "constrained: resources":
            short = [
                (r, n, ws.available_resources.get(r, 0), ws.total_resources.get(r, 0))
                for r, n in need.items() if ws.available_resources.get(r, 0) < n
            ]
            reason = "constrained: needs " + "; ".join(
                f"{literal(r)}: {n:g}, and only {a:g} of {t:g} is free" for r, n, a, t in short
            )
            if any(n > t for _, n, _, t in short):
                reason += " (more than the worker has: it can never run here)"
        elif kind == "constrained: paused":
            reason = f"constrained, and the worker is paused (since {_when(tracker.paused, now) or 'before the log'}): a paused worker starts no tasks"
        else:
            reason = f"constrained: all {ws.nthreads} threads busy ({_running(ws)})"
            named += _running_keys(ws)
    elif state == "ready":
        if kind == "ready: paused":
            detail["paused_step"] = tracker.paused.step if tracker.paused else None
            reason = f"ready, and the worker is paused (since {_when(tracker.paused, now) or 'before the log'}): a paused worker starts no tasks"
        else:
            reason = f"ready: all {ws.nthreads} threads busy ({_running(ws)})"
            named += _running_keys(ws)
    elif state in ("executing", "long-running"):
        started = tracker.execute.get(key, since)
        detail["execute_step"] = started.step or None
        what = "executing" if state == "executing" else "long-running (seceded)"
        took = elapsed(started, now)
        began = f" since step {started.step}" if started.step else ""  # 0: before the log's history
        reason = f"{what}{began}; not finished by {by}" + (f" ({took})" if took and (started.step or started.time)
                                                          else "")
    elif state in ("cancelled", "resumed"):
        detail.update(previous=ts.previous, next=ts.next)
        underway = _UNDERWAY.get(ts.previous or "", f"the {ts.previous}")
        if state == "cancelled":
            reason = (f"cancelled while {ts.previous}: the scheduler released it; the worker forgets "
                      f"it once {underway} ends")
        else:
            reason = (f"resumed while {ts.previous}: the scheduler wants it again; it goes to "
                      f"{ts.next} once {underway} ends")
    else:
        reason = f"{state}: waits for a new stimulus"
    return Verdict(key, state, kind, reason, since, sid, detail, tuple(named))


def _running_keys(ws: wsm.WorkerState) -> list:
    """The executing keys :func:`_running` names."""
    return sorted((ts.key for ts in ws.executing), key=sort_key)[:3]


def _running(ws: wsm.WorkerState) -> str:
    keys = sorted((ts.key for ts in ws.executing), key=sort_key)
    shown = ", ".join(key_text(k) for k in keys[:3])
    return f"executing {shown}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else "none executing"


def _where(ws: wsm.WorkerState, d: wsm.TaskState, tracker: Tracker) -> str:
    if d.state in ("fetch", "missing"):
        return f"({d.state} from {_peers(_holders(d)) if d.who_has else 'no holder'})"
    if d.state == "flight":
        return f"(in flight from {d.coming_from})"
    return f"({d.state})"


# --- the view -----------------------------------------------------------------


@dataclass
class WhyView:
    """Why a worker's unfinished tasks are not finished, at one step."""

    worker: str
    step: int
    stimulus_id: str
    handled: Optional[float]
    running: bool
    #: the PauseEvent in force, if paused
    paused_since: Optional[Moment]
    tasks: list[Verdict]
    #: the key asked about, if one was
    key: Any = None
    #: what the answer rests on, when not a replay (a partial history)
    note: Optional[str] = None
    #: the steps up to this one at which the state machine raised
    raised: list[RaisedStep] = field(default_factory=list)
    #: the verdict of a short continuation from this step (``replay continue``),
    #: when one was cheap enough to run
    continued: Optional[str] = None
    #: show keys in full (``--detail``); JSON always has them in full
    detail: bool = False

    def to_json(self) -> dict:
        out = {"worker": self.worker, "step": self.step, "stimulus_id": self.stimulus_id,
               "handled": self.handled, "running": self.running,
               "paused_since": None if self.paused_since is None else self.paused_since.to_json(),
               "tasks": [v.to_json() for v in self.tasks], "raised": [r.to_json() for r in self.raised]}
        if self.note:
            out["note"] = self.note
        if self.continued:
            out["continued"] = self.continued
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.note:
            yield Text.assemble(("note: ", "yellow"), render.safe(self.note))
        yield from self.raised
        if not self.tasks:
            yield Text.assemble(render.safe(self.worker), f" at step {self.step}: ", ("no task is stuck", "green"),
                                "" if self.running else " (paused)")
            return
        yield render.position(self.worker, self.step, self.stimulus_id, self.handled)
        if not self.running:
            when = f" since step {self.paused_since.step}" if self.paused_since else ""
            yield Text(f"the worker is paused{when}", style="yellow")
        yield verdicts_table(console, self.tasks, Moment(self.step, self.handled), detail=self.detail)
        if self.continued:
            yield Text.assemble(("continued: ", "bold"), render.safe(self.continued))


def verdicts_table(console: Console, verdicts: list[Verdict], now: Moment, *, detail: bool = False,
                   grouped: bool = False) -> Any:
    """Key, state, since when (in steps and recorded time) and why.

    Keys are shortened as dask's dashboard names tasks unless ``detail``;
    ``grouped`` (and not ``detail``) makes one row of the tasks that share a
    state and a reason: "123 tasks", their names, since the oldest."""
    t = render.table(console, "key", "state", "since", "reason")
    for group in (verdict_groups(verdicts) if grouped and not detail else [[v] for v in verdicts]):
        v = min(group, key=lambda g: (g.since.step, sort_key(g.key)))  # the oldest: since when
        ago = elapsed(v.since, now) if v.since.step != now.step else ""
        # step 0: the task got there before the history the log holds, at a
        # time the dump's own clock may know
        since = (f"step {v.since.step}" + (f" ({ago} earlier)" if ago else "")) if v.since.step else \
            f"{render.clock(v.since.time)} UTC ({ago} earlier)" if ago else "unknown"
        reason = Text.assemble(render.safe(v.reason if detail else v.short_reason()))
        facts = {_detail_text(g.detail) for g in group}
        if len(facts) == 1 and facts != {""}:
            reason.append("\n" + facts.pop(), style="dim")
        if len(group) == 1:
            key = render.value(v.key, None) if detail else render.safe(short_key(v.key))
        else:
            since = f"{'oldest ' if v.since.step else ''}{since}"
            key = Text(f"{len(group)} tasks: {task_names(g.key for g in group)}")
        t.add_row(key, render.safe(v.state), since, reason)
    return t


def verdict_groups(verdicts: list[Verdict]) -> list[list[Verdict]]:
    """The verdicts that share a state and a reason (keys shortened), in order of the first."""
    groups: dict[tuple[str, str], list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault((v.state, v.short_reason()), []).append(v)
    return list(groups.values())


def task_names(keys: Iterable[Any], shown: int = 3) -> str:
    """How many tasks of each name (``dask.utils.key_split``): ``combine ×40, map ×83``."""
    counts = Counter(task_name(k) for k in keys)
    names = [f"{name} ×{n}" for name, n in counts.most_common(shown)]
    if len(counts) > shown:
        names.append(f"{len(counts) - shown} other names")
    return ", ".join(names)


def _detail_text(detail: dict) -> str:
    return "; ".join(f"{k.replace('_', ' ')}: {literal(v, 160)}" for k, v in detail.items()
                     if v not in (None, [], {}))


@dataclass
class ClusterWhy:
    """:class:`WhyView` of every worker of a log."""

    workers: list[WhyView]
    #: where the workers disagree about a key (:mod:`replay.disagreements`)
    disagreements: list = field(default_factory=list)

    def to_json(self) -> dict:
        if len(self.workers) == 1 and not self.disagreements:
            return self.workers[0].to_json()
        return {"workers": [w.to_json() for w in self.workers],
                "disagreements": [d.to_json() for d in self.disagreements]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.disagreements
        yield from self.workers


def why(ws: wsm.WorkerState, tracker: Tracker, key: Any = None) -> list[Verdict]:
    """Every task not in a final state, or just ``key`` (whatever its state)."""
    if key is not None:
        ts = ws.tasks.get(key)
        if ts is None:
            raise NotFound(no_such_key({key}, set(ws.tasks), f"{ws.address} at step {tracker.now.step}")
                           + " (not known there: never seen, or forgotten)")
        return [explain(ws, ts, tracker)]
    unfinished = [ts for ts in ws.tasks.values() if ts.state not in FINAL_STATES]
    unfinished.sort(key=lambda ts: sort_key(ts.key))
    return [explain(ws, ts, tracker) for ts in unfinished]


def diagnose(history: Any, stop: int | None = None, *, progress: Any = None) -> tuple[Replayer, Tracker]:
    """Replay ``history`` (a WorkerHistory) to ``stop`` with a tracker; returns the
    :class:`~replay.engine.Replayer` there and the tracker."""
    from replay.views import walk

    tracker = Tracker(history.events)
    r = None
    for applied, r in walk(history, stop, progress=progress):
        tracker.feed(applied)
    if r is None:  # no step to replay: the empty state
        r = history.replayer()
    return r, tracker


def why_view(r: Replayer, tracker: Tracker, key: Any = None) -> WhyView:
    ws = r.ws
    return WhyView(ws.address, r.seq, r.stimulus_id, r.handled, ws.running,
                   tracker.paused if not ws.running else None, why(ws, tracker, key), key,
                   raised=list(tracker.raised))
