"""Where the workers of one cluster log disagree about a key.

A hang is rarely one worker's fault. The question dask maintainers keep
asking of cluster dumps is whether two views agree: a worker fetching a key
from a peer whose own log shows it released it, or never held it; a worker
waiting on a peer whose log ended. Each :class:`Finding` names both sides:
the worker, its step and the task's state there; the peer, the step it had
reached at the same recorded time and the key's state there.

Recorded times of different hosts come from different clocks: a finding
between workers on two hosts says so.

With the scheduler's log (:mod:`replay.scheduler_log`), the scheduler's view
at a recorded time is compared with each worker's state at the same time
(:class:`SchedulerFinding`): a task processing on a worker that has no such
task, or has it finished already; ``who_has`` naming a holder without the key
in memory; a task processing on a worker whose log ended. A cluster dump's
scheduler view gives the same findings, at the dump's time only.
:func:`over_run` follows both sides through a whole recording and says when
each disagreement began and whether it resolved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rich.text import Text

from replay import render
from replay.literal import jsonable, key_text
from replay.scheduler_log import SchedulerView, apply

#: states in which a peer can send a key
HOLDS = frozenset({"memory"})
#: a worker's states of a task the scheduler cannot still have processing there
#: (None: no such task)
NOT_PROCESSING = frozenset({None, "memory", "released", "forgotten", "error"})


@dataclass(slots=True)
class Finding:
    """One disagreement between a worker and a peer about a key."""

    #: "not held by the peer"; "peer gone" (its log ended, the worker paused
    #: as ``Worker.close`` leaves it); "peer not recorded" (its recording
    #: stopped while the worker still ran: what it held later is unknown)
    kind: str
    worker: str
    step: int
    key: Any
    #: the task's state on ``worker`` (flight or fetch)
    state: str
    peer: str
    #: the peer's last step at the worker's recorded time, and the key's state
    #: there (None: the peer had no such task, never or no more)
    peer_step: int
    peer_state: Optional[str]
    #: the two workers' clocks are different hosts'
    other_host: bool

    def text(self) -> str:
        held = f"was {self.peer_state}" if self.peer_state else "had no such task (never held, or forgotten)"
        what = "fetches" if self.state == "fetch" else "waits for a transfer of"
        if self.kind == "peer gone":
            out = (f"{self.worker} (step {self.step}, {self.state}) {what} {key_text(self.key)} from "
                   f"{self.peer}, whose log ended at step {self.peer_step}, the worker paused (closing)")
        elif self.kind == "peer not recorded":
            out = (f"{self.worker} (step {self.step}, {self.state}) {what} {key_text(self.key)} from "
                   f"{self.peer}, whose recording stopped at step {self.peer_step} while the worker ran: "
                   "what it held later is not in the log")
        else:
            out = (f"{self.worker} (step {self.step}, {self.state}) {what} {key_text(self.key)} from "
                   f"{self.peer}, where at that time (step {self.peer_step}) it {held}")
        if self.other_host:
            out += "; the two hosts' clocks may differ"
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "worker": self.worker, "step": self.step, "key": jsonable(self.key),
                "state": self.state, "peer": self.peer, "peer_step": self.peer_step,
                "peer_state": self.peer_state, "other_host": self.other_host, "text": self.text()}

    def __rich__(self) -> Text:
        return Text.assemble(("disagreement: ", "bold red"), render.safe(self.text()))


@dataclass(slots=True)
class SchedulerFinding:
    """The scheduler and a worker disagree about a key: from a recording at a
    recorded time (``time``, the worker's ``step``), or from a dump (both None)."""

    key: Any
    #: what the scheduler says
    scheduler: str
    worker: str
    #: the key's state on the worker (None: the worker has no such task)
    state: Optional[str]
    #: the recorded time compared at, and the worker's last step by then
    time: Optional[float] = None
    step: Optional[int] = None
    #: the worker's log had ended by then
    gone: bool = False
    #: the scheduler's last record by then (its step in the scheduler's log)
    scheduler_seq: Optional[int] = None

    @property
    def what(self) -> tuple:
        """The disagreement, whenever found: one key, one claim, one worker."""
        return (repr(self.key), self.scheduler, self.worker)

    def text(self) -> str:
        who = "scheduler" if self.scheduler_seq is None else f"scheduler (record {self.scheduler_seq})"
        if self.gone:
            return f"{who}: {key_text(self.key)} {self.scheduler}, whose log ended at step {self.step}"
        mine = f"has it {self.state}" if self.state else "has no such task"
        at = "" if self.step is None else f" (step {self.step})"
        return f"{who}: {key_text(self.key)} {self.scheduler}; that worker{at} {mine}"

    def to_json(self) -> dict:
        out = {"kind": "scheduler and worker", "key": jsonable(self.key), "scheduler": self.scheduler,
               "worker": self.worker, "state": self.state, "text": self.text()}
        if self.time is not None:
            out.update(time=self.time, step=self.step, gone=self.gone, scheduler_seq=self.scheduler_seq)
        return out

    def __rich__(self) -> Text:
        return Text.assemble(("disagreement: ", "bold red"), render.safe(self.text()))


def same_clock(a: str, b: str) -> bool:
    """Whether two workers' recorded times come from one clock: the same host
    (``tcp://HOST:PORT``), or the same process (``inproc://HOST/PID/N``, as
    ``LocalCluster(processes=False)`` makes)."""
    return _clock(a) == _clock(b)


def _clock(address: str) -> str:
    scheme, _, rest = address.rpartition("://")
    if scheme == "inproc":
        return rest.rsplit("/", 1)[0]
    return rest.rsplit(":", 1)[0]


def find(workers: list, at: dict[str, int], scheduler: Any = None) -> list:
    """Disagreements of ``workers`` (:class:`~replay.source.WorkerAnswers` of
    one log, whatever answers them), each worker at the step ``at`` gives it
    (by address); with ``scheduler`` (a :class:`~replay.scheduler_log.SchedulerLog`),
    also its view at the latest of those steps' recorded times against each worker."""
    out: list = _between_workers(workers, at)
    if scheduler is not None:
        times = [_time_at(w, at[w.address]) for w in workers if at.get(w.address)]
        t = max((x for x in times if x is not None), default=None)
        out += with_scheduler(scheduler.view_at(t), workers, at)
    return out


def _time_at(w: Any, step: int) -> Optional[float]:
    return w.state(step, states=("memory",)).handled if step else None


def with_scheduler(view: Any, workers: list, at: dict[str, int],
                   cache: Optional[dict] = None) -> list[SchedulerFinding]:
    """The scheduler's ``view`` (:class:`~replay.scheduler_log.SchedulerView`)
    against each worker at the step ``at`` names; ``cache`` keeps each
    worker's task states by step across calls."""
    out: list[SchedulerFinding] = []
    states: dict[tuple[str, int], dict[Any, str]] = {} if cache is None else cache
    by_address = {w.address: w for w in workers}

    def state_on(address: str) -> tuple[int, dict[Any, str]]:
        step = at.get(address, 0)
        if (address, step) not in states:
            w = by_address[address]
            states[(address, step)] = {t.key: t.state for t in w.state(step).tasks} if step else {}
        return step, states[(address, step)]

    for key, task in sorted(view.tasks.items(), key=lambda kv: repr(kv[0])):
        on = task.processing_on
        if task.state == "processing" and on in by_address:
            w = by_address[on]
            step, mine = state_on(on)
            last = w.last_handled
            if w.ended and last is not None and view.time is not None and last < view.time:
                out.append(SchedulerFinding(key, f"processing on {on}", on, None, view.time, w.events, True,
                                            view.seq))
            elif step and mine.get(key) in NOT_PROCESSING:
                out.append(SchedulerFinding(key, f"processing on {on}", on, mine.get(key), view.time, step,
                                            scheduler_seq=view.seq))
        for holder in task.who_has:
            if holder in by_address:
                step, mine = state_on(holder)
                if step and mine.get(key) not in HOLDS:
                    out.append(SchedulerFinding(key, f"who_has lists {holder}", holder, mine.get(key),
                                                view.time, step, scheduler_seq=view.seq))
    return out


@dataclass
class Episode:
    """One disagreement over a run: when it was first seen, and until when."""

    finding: SchedulerFinding
    #: the recorded time it was first seen (at a step of either side)
    began: float
    #: the first recorded time it was no longer seen (None: still at the end)
    resolved: Optional[float] = None

    @property
    def lasted(self) -> Optional[float]:
        return None if self.resolved is None else self.resolved - self.began

    def to_json(self) -> dict:
        return {**self.finding.to_json(), "began": self.began, "resolved": self.resolved}


@dataclass
class RunDisagreements:
    """``replay disagreements``: every disagreement between the scheduler and
    a worker over a recording, or those standing at one time."""

    path: str
    episodes: list[Episode] = field(default_factory=list)
    #: the time asked (None: over the whole run)
    at: Optional[float] = None
    #: shorter ones are left out: messages in flight between the scheduler
    #: and a worker make both sides differ for a moment
    grace: float = 0.0
    #: how many instants were compared
    instants: int = 0
    #: why there is nothing to compare
    note: Optional[str] = None

    def to_json(self) -> dict:
        return {"path": self.path, "at": self.at, "grace": self.grace, "instants": self.instants,
                "note": self.note, "disagreements": [e.to_json() for e in self.episodes]}

    def __rich_console__(self, console: Any, options: Any) -> Any:
        if self.note:
            yield Text.assemble(("note: ", "yellow"), render.safe(self.note))
        if not self.episodes:
            yield Text("no disagreement between the scheduler and a worker"
                       + (" at that time" if self.at is not None else f" lasting {self.grace:g} s or more"))
        for e in self.episodes:
            when = f"since {render.clock(e.began)} UTC"
            if e.resolved is not None:
                when += f", resolved after {e.lasted:.3f} s"
            elif self.at is None:
                when += ", not resolved by the end"
            yield Text.assemble(("disagreement: ", "bold red"), render.safe(e.finding.text()), f" ({when})")
        yield Text(f"compared at {self.instants} recorded instants, as each side recorded them; the clocks "
                   "of different hosts may differ", style="dim")


def over_run(path: str, scheduler: Any, workers: list, *, at: Optional[float] = None,
             grace: float = 1.0) -> RunDisagreements:
    """The scheduler's log against every worker's states over the recording,
    at each recorded instant at which either side changed: every disagreement
    that lasted ``grace`` seconds or more, or was never resolved; with ``at``,
    those standing at that time (however young), each with when it began."""
    if scheduler is None:
        return RunDisagreements(path, at=at, grace=grace,
                                note="no scheduler log beside this log: nothing to compare with")
    instants = sorted(set(_instants(scheduler, workers)))
    if at is not None:
        instants = [t for t in instants if t < at] + [at]
    open_: dict[tuple, Episode] = {}
    done: list[Episode] = []
    cache: dict = {}
    view = SchedulerView(None)
    records = scheduler.records()
    pending = next(records, None)
    for t in instants:
        # the scheduler's view as of t: every record stamped at or before it
        while pending is not None and pending.time <= t:
            apply(view, pending)
            pending = next(records, None)
        view.time = t
        found = with_scheduler(view, workers, {w.address: w.step_at_time(t) for w in workers}, cache)
        seen = {f.what: f for f in found}
        for what, e in list(open_.items()):
            if what not in seen:
                e.resolved = t
                done.append(open_.pop(what))
        for what, f in seen.items():
            if what not in open_:
                open_[what] = Episode(f, t)
    if at is not None:
        episodes = list(open_.values())
    else:
        episodes = [e for e in done + list(open_.values()) if e.resolved is None or e.lasted >= grace]
    episodes.sort(key=lambda e: (e.began, e.finding.what))
    return RunDisagreements(path, episodes, at=at, grace=grace, instants=len(instants))


def _instants(scheduler: Any, workers: list) -> list[float]:
    """Every recorded time at which the scheduler or a worker changed."""
    times = [r.time for r in scheduler.transitions] + [c.time for c in scheduler.worker_changes]
    for w in workers:
        times += [t for t in w.step_times() if t is not None]
    return times


def _between_workers(workers: list, at: dict[str, int]) -> list[Finding]:
    if len(workers) < 2:
        return []
    by_address = {w.address: w for w in workers}
    #: (peer, step) -> key -> state, each peer's state read once per step
    held: dict[tuple[str, int], dict[Any, str]] = {}
    #: peer -> whether it still ran at the end of its log
    running_at_end: dict[str, bool] = {}
    out: list[Finding] = []
    for address, step in at.items():
        w = by_address[address]
        if step == 0:
            continue
        view = w.state(step, states=("flight", "fetch"), detail=True)
        now = view.handled
        for row in sorted(view.tasks, key=lambda row: repr(row.key)):
            detail = row.detail or {}
            peers = [detail.get("coming_from")] if row.state == "flight" else list(detail.get("who_has", ()))
            for peer in peers:
                p = by_address.get(peer)
                if p is None or p is w:
                    continue  # a peer this log did not record: nothing to compare with
                other_host = not same_clock(peer, address)
                last = p.last_handled
                if p.ended and last is not None and now is not None and last < now:
                    if peer not in running_at_end:
                        # Worker.close pauses the state machine before the end record
                        running_at_end[peer] = p.state(p.events, states=("executing",)).running
                    kind = "peer not recorded" if running_at_end[peer] else "peer gone"
                    out.append(Finding(kind, address, step, row.key, row.state, peer, p.events, None, other_host))
                    continue
                peer_step = p.step_at_time(now)
                states = held.get((peer, peer_step))
                if states is None:
                    states = held[(peer, peer_step)] = {t.key: t.state for t in p.state(peer_step).tasks}
                state = states.get(row.key)
                if state not in HOLDS:
                    out.append(Finding("not held by the peer", address, step, row.key, row.state, peer,
                                       peer_step, state, other_host))
    return out
