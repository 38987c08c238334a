"""The worker's state at a step, and what changed between two steps.

A view is a small dataclass built from a replayed ``WorkerState``: plain data
holding dask values (real keys, tuples, sets). ``to_json()`` gives the
``--json`` form (keys as arrays, see :func:`replay.literal.jsonable`);
rendering on a terminal is the view's own ``__rich_console__``. Nothing here
opens files or prints: :func:`walk` replays a worker's recorded calls, with
their step records, through a tapped :class:`~replay.engine.Replayer`.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.errors import BadInput, NotFound, ReplayError
from replay.literal import jsonable, key_text, literal, sort_key

if TYPE_CHECKING:  # views also answer from an index, which needs no state machine
    from distributed import worker_state_machine as wsm

    from replay.engine import Applied, Replayer
    from replay.reader import Progress, RecordedCall

#: what views call a task key: any dask key (str, int, float or tuple)
Key = Any

#: states a task can stay in forever without anything being wrong
FINAL_STATES = frozenset({"memory", "error", "released", "forgotten"})

#: the order views list states in: what is still to happen first, in the
#: order a task moves through them, then the final states
STATE_ORDER = (
    "executing", "long-running", "cancelled", "resumed", "flight", "fetch", "missing",
    "ready", "constrained", "waiting", "memory", "error", "released", "forgotten",
)


#: every state dask's ``TaskStateState`` names (``rescheduled`` is passed
#: through, never stayed in); a test holds it to dask's list, which the index's
#: query path cannot import
TASK_STATES = frozenset(STATE_ORDER) | {"rescheduled"}


def check_states(states: Iterable[str]) -> None:
    """Refuse a state dask does not know, naming the closest."""
    for state in states:
        if state not in TASK_STATES:
            close = difflib.get_close_matches(state, sorted(TASK_STATES), n=3, cutoff=0.5)
            raise BadInput(f"no task state {state!r}; "
                           + (f"closest: {', '.join(close)}" if close else f"the states: {', '.join(STATE_ORDER)}"))


_RANKS = {state: i for i, state in enumerate(STATE_ORDER)}


def _state_rank(state: str) -> int:
    # a state this list does not know: with the unfinished ones
    return _RANKS.get(state, _RANKS["waiting"])


def _in_view_order(tasks: Iterable[Any]) -> list:
    """Tasks by (:func:`_state_rank`, :func:`~replay.literal.sort_key` of the
    key): each rank's tasks sorted apart, the ranks in order (no pair of
    tasks is compared by rank; the order of one sort by both)."""
    by_rank: dict[int, list] = {}
    for ts in tasks:
        by_rank.setdefault(_state_rank(ts.state), []).append(ts)
    out: list = []
    for rank in sorted(by_rank):
        group = by_rank[rank]
        group.sort(key=lambda ts: sort_key(ts.key))
        out += group
    return out


@dataclass(frozen=True, slots=True)
class Moment:
    """A step of a worker and when the recorded worker handled it."""

    step: int
    #: the recorded ``handled`` time; None for step 0, the empty state
    time: Optional[float]

    def to_json(self) -> dict:
        return {"step": self.step, "time": self.time}


@dataclass(frozen=True, slots=True)
class RaisedStep:
    """A step at which ``handle_stimulus`` raised, in the recorded worker and
    in replay alike: the state after it is whatever the handler left behind
    when it stopped half-way."""

    step: int
    handled: Optional[float]
    stimulus_id: str
    #: the exception's class and the first line of its message
    exception: str
    #: the task it is about, if known: the exception's ``key``, else the event's
    key: Any = None

    @classmethod
    def of(cls, step: int, handled: Optional[float], event: Any, e: BaseException) -> RaisedStep:
        lines = str(e).strip().splitlines()
        text = type(e).__name__ + (f": {lines[0][:200]}" if lines else "")
        key = getattr(e, "key", None)
        if key is None:
            key = getattr(event, "key", None)
        return cls(step, handled, event.stimulus_id, text, key)

    def text(self) -> str:
        about = f" (about {key_text(self.key)})" if self.key is not None else ""
        return f"step {self.step} ({self.stimulus_id}) raised {self.exception}{about}, as the recorded worker did"

    def to_json(self) -> dict:
        return {"step": self.step, "handled": self.handled, "stimulus_id": self.stimulus_id,
                "exception": self.exception, "key": jsonable(self.key)}

    def __rich__(self) -> Text:
        return Text.assemble(("raised: ", "bold red"), render.safe(self.text()))


@dataclass(frozen=True, slots=True)
class Gather:
    """A ``GatherDep`` the worker issued and has had no answer to yet."""

    step: int
    handled: Optional[float]
    peer: str
    keys: tuple

    def to_json(self) -> dict:
        return {"step": self.step, "handled": self.handled, "peer": self.peer, "keys": jsonable(list(self.keys))}

    def text(self) -> str:
        return f"step {self.step}: {self.peer} for " + ", ".join(key_text(k) for k in self.keys)


#: where replay stopped because the state machine raised as the recorded
#: worker did not: that step, and the error's text
Crash = Optional[tuple[int, str]]


#: where a replay that follows the recording first departed from it: that
#: step, and what differed and why
Departure = Optional[tuple[int, str]]

_DEPARTED = {"instructions": "its instructions differ from the recorded ones",
             "error": "replay and recording disagree on an exception", "invariant": "an invariant breaks"}


def departure(d: Any) -> Departure:
    """The facts of a :class:`~replay.engine.Divergence` a followed replay met."""
    if d is None:
        return None
    return d.seq, f"{_DEPARTED.get(d.kind, d.kind)} ({d.cause or 'no cause known'})"


def notes(*texts: Optional[str]) -> Optional[str]:
    """Notes on one answer, as one line."""
    return "; ".join(t for t in texts if t) or None


def departed_note(dep: Departure, step: int) -> Optional[str]:
    """What an answer about ``step`` must say of a departure (nothing before it)."""
    if dep is None or step < dep[0]:
        return None
    return f"from step {dep[0]} on, this replay departed from the recording: {dep[1]}"


def reach(step: int, events: int, crash: Crash) -> tuple[int, Optional[str]]:
    """The step an answer about ``step`` comes from, and a note when it is not
    ``step``: past a crash, "the end of the log" is the last step replay
    reached; any other step past it cannot be answered."""
    if crash is None or step < crash[0]:
        return step, None
    at, text = crash
    if step == events:
        return at - 1, f"replay stops at step {at - 1}: {text}"
    raise ReplayError(f"{text}; replay cannot reach step {step}", step=at)


def elapsed(since: Optional[Moment], now: Optional[Moment]) -> str:
    """``12.3 s`` of recorded time between two moments ('' if unknown)."""
    if since is None or now is None or since.time is None or now.time is None:
        return ""
    seconds = now.time - since.time
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.1f} s"


# --- replaying with the worker's log tapped --------------------------------


def walk(
    history: Any,
    stop: int | None = None,
    *,
    progress: Progress | None = None,
) -> Iterator[tuple[Applied, Replayer]]:
    """Replay a worker from its empty state to step ``stop``, one call at a time.

    Yields what each call did (with its step records and its uncapped
    ``ws.log`` entries; :meth:`Applied.steps` splits it by event) and the
    replayer after it; ``applied.log`` is only valid until the next item is
    requested. A batch that ``stop`` falls inside is replayed up to ``stop``.
    """
    # following the recording: a view past where replay departed from it says so
    r = history.replayer(tap_log=True, follow_recording=True)
    if stop is None:
        stop = history.events
    if stop <= 0:
        return
    for applied in r.feed(history.calls(1, stop, records=True), progress):
        yield applied, r


def is_transition(entry: tuple) -> bool:
    """A ``ws.log`` transition: (key, start, finish, final, recommendations,
    stimulus_id, time)."""
    return len(entry) == 7 and isinstance(entry[4], dict)


def changed_states(log: Iterable[tuple]) -> dict[Key, str]:
    """The tasks one step's ``ws.log`` entries left in another state, and that
    state: a ``flight → fetch → flight`` within the step is no change."""
    before: dict[Key, str] = {}
    after: dict[Key, str] = {}
    for entry in log:
        if is_transition(entry):
            before.setdefault(entry[0], entry[1])
            after[entry[0]] = entry[3]
    return {key: state for key, state in after.items() if before[key] != state}


# --- state --------------------------------------------------------------------


@dataclass(slots=True)
class TaskRow:
    """One task as the state view shows it."""

    key: Key
    state: str
    #: of a cancelled or resumed task: what it was doing, and where it goes next
    previous: Optional[str] = None
    next: Optional[str] = None
    #: with ``detail``: who_has, dependencies, priority, nbytes, restrictions…
    detail: Optional[dict[str, Any]] = None

    @classmethod
    def of(cls, ts: wsm.TaskState, detail: bool = False) -> TaskRow:
        row = cls(ts.key, ts.state)
        if ts.state in ("cancelled", "resumed"):
            row.previous, row.next = ts.previous, ts.next
        if detail:
            d: dict[str, Any] = {
                "priority": ts.priority,
                "nbytes": ts.nbytes,
                "who_has": sorted(ts.who_has),
                "dependencies": sorted((t.key for t in ts.dependencies), key=sort_key),
                "resource_restrictions": ts.resource_restrictions or None,
                "coming_from": ts.coming_from,
                "run_id": ts.run_id,
                "exception_text": ts.exception_text or None,
            }
            row.detail = {k: v for k, v in d.items() if v not in (None, [], "")}
        return row

    def to_json(self) -> dict:
        d: dict[str, Any] = {"key": jsonable(self.key), "state": self.state}
        if self.previous is not None or self.next is not None:
            d["previous"], d["next"] = self.previous, self.next
        if self.detail is not None:
            d["detail"] = jsonable(self.detail)
        return d

    def state_text(self) -> str:
        if self.previous is None:
            return self.state
        return f"{self.state} (was {self.previous}, next {self.next})"


@dataclass(slots=True)
class Counters:
    """The worker's own counters and limits."""

    nthreads: int
    executing: int
    long_running: int
    transfers: int
    transfers_limit: int
    transfer_bytes: int
    transfer_bytes_limit: Optional[float]
    #: bytes in memory (``ws.nbytes``)
    nbytes: int
    total_resources: dict[str, float]
    available_resources: dict[str, float]

    @classmethod
    def of(cls, ws: wsm.WorkerState) -> Counters:
        limit = ws.transfer_incoming_bytes_limit
        return cls(
            nthreads=ws.nthreads,
            executing=len(ws.executing),
            long_running=len(ws.long_running),
            transfers=ws.transfer_incoming_count,
            transfers_limit=ws.transfer_incoming_count_limit,
            transfer_bytes=ws.transfer_incoming_bytes,
            transfer_bytes_limit=None if limit in (None, float("inf")) else limit,
            nbytes=ws.nbytes,
            total_resources=dict(sorted(ws.total_resources.items())),
            available_resources=dict(sorted(ws.available_resources.items())),
        )

    def to_json(self) -> dict:
        return jsonable({f: getattr(self, f) for f in self.__slots__})

    def __rich__(self) -> Text:
        limit = "no limit" if self.transfer_bytes_limit is None else f"{self.transfer_bytes_limit:,.0f}"
        text = (
            f"threads: {self.executing} of {self.nthreads} busy"
            + (f", {self.long_running} seceded" if self.long_running else "")
            + f"; transfers in: {self.transfers} of {self.transfers_limit},"
            f" {self.transfer_bytes:,} bytes of {limit}; memory: {self.nbytes:,} bytes"
        )
        if self.total_resources:
            res = ", ".join(
                f"{literal(r)}: {self.available_resources.get(r, 0):g} of {n:g} free"
                for r, n in self.total_resources.items()
            )
            text += f"; resources {res}"
        return Text(text)


#: the state view's collections of keys, in the order they are shown
_QUEUES = ("executing", "long_running", "ready", "constrained", "missing")


@dataclass
class StateView:
    """Everything a debugger asks of a worker at one step."""

    worker: str
    step: int
    stimulus_id: str
    #: recorded time of the step (None at step 0)
    handled: Optional[float]
    running: bool
    counters: Counters
    #: every task, unfinished states first (see :data:`STATE_ORDER`), or the
    #: ones the filters chose
    tasks: list[TaskRow]
    #: task count per state, of every task, whatever the filters
    task_states: dict[str, int]
    #: key lists of the worker's queues; ready and constrained by priority
    queues: dict[str, list[Key]]
    #: peer -> keys queued for a transfer from it
    data_needed: dict[str, list[Key]]
    #: peer -> keys being transferred from it
    in_flight_workers: dict[str, list[Key]]
    busy_workers: list[str]
    #: what chose the tasks, e.g. ``{"state": ["flight"]}``
    filters: dict[str, Any] = field(default_factory=dict)
    #: the steps up to this one at which the state machine raised
    raised: list[RaisedStep] = field(default_factory=list)
    #: the ``GatherDep`` instructions issued and not yet answered, oldest first
    #: (two for one transfer are a bug ``in_flight_workers`` cannot show)
    gathers: list[Gather] = field(default_factory=list)
    #: why this is not the step asked for (replay stopped before it)
    note: Optional[str] = None

    @classmethod
    def of(
        cls,
        replayer: Replayer,
        *,
        states: Iterable[str] = (),
        keys: Iterable[Key] = (),
        detail: bool = False,
        strict: bool = False,
    ) -> StateView:
        """``strict``: an unknown state, or a key the worker does not have at
        the step, is an error naming the closest (what a user typed)."""
        ws = replayer.ws
        states, keys = set(states), list(keys)
        if strict:
            check_states(states)
            missing = {k for k in keys if k not in ws.tasks}
            if missing:
                from replay.story import no_such_key  # replay.story imports this module

                raise NotFound(no_such_key(missing, set(ws.tasks), f"{ws.address} at step {replayer.seq}"))
        counts: dict[str, int] = {}
        for ts in ws.tasks.values():
            counts[ts.state] = counts.get(ts.state, 0) + 1
        chosen = _in_view_order(
            ts for ts in ws.tasks.values()
            if (not states or ts.state in states) and (not keys or ts.key in keys)
        )
        filters: dict[str, Any] = {}
        if states:
            filters["state"] = sorted(states)
        if keys:
            filters["key"] = keys
        return cls(
            worker=ws.address,
            step=replayer.seq,
            stimulus_id=replayer.stimulus_id,
            handled=replayer.handled,
            running=ws.running,
            counters=Counters.of(ws),
            tasks=[TaskRow.of(ts, detail or bool(keys)) for ts in chosen],
            task_states=dict(sorted(counts.items(), key=lambda kv: _state_rank(kv[0]))),
            queues={
                "executing": sorted((ts.key for ts in ws.executing), key=sort_key),
                "long_running": sorted((ts.key for ts in ws.long_running), key=sort_key),
                "ready": _by_priority(ws.ready),
                "constrained": _by_priority(ws.constrained),
                "missing": sorted((ts.key for ts in ws.missing_dep_flight), key=sort_key),
            },
            # validate=True can leave empty entries behind: not a peer we need
            data_needed={w: _by_priority(tss) for w, tss in sorted(ws.data_needed.items()) if tss},
            in_flight_workers={
                w: sorted(keys, key=sort_key) for w, keys in sorted(ws.in_flight_workers.items())
            },
            busy_workers=sorted(ws.busy_workers),
            filters=filters,
        )

    @property
    def status(self) -> str:
        return "running" if self.running else "paused"

    def to_json(self) -> dict:
        c = self.counters
        return {
            "worker": self.worker,
            "step": self.step,
            "stimulus_id": self.stimulus_id,
            "handled": self.handled,
            "status": self.status,
            "running": self.running,
            "nthreads": c.nthreads,
            "nbytes": c.nbytes,
            "task_states": self.task_states,
            "tasks": [t.to_json() for t in self.tasks],
            **{name: jsonable(keys) for name, keys in self.queues.items()},
            "data_needed": {w: jsonable(k) for w, k in self.data_needed.items()},
            "in_flight_workers": {w: jsonable(k) for w, k in self.in_flight_workers.items()},
            "busy_workers": self.busy_workers,
            "resources": {
                "total": jsonable(c.total_resources),
                "available": jsonable(c.available_resources),
            },
            "counters": c.to_json(),
            "filters": jsonable(self.filters),
            "raised": [r.to_json() for r in self.raised],
            "gathers": [g.to_json() for g in self.gathers],
            **({"note": self.note} if self.note else {}),
        }

    # --- rendering ------------------------------------------------------

    def heading(self) -> Text:
        return render.position(self.worker, self.step, self.stimulus_id, self.handled)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.note:
            yield Text.assemble(("note: ", "yellow"), render.safe(self.note))
        yield self.heading()
        yield Text.assemble(
            (self.status, "bold" if self.running else "bold yellow"), "; ", self.counters.__rich__()
        )
        yield from self.raised
        yield Text("tasks: " + (", ".join(f"{s} {n}" for s, n in self.task_states.items()) or "none"))
        if self.filters:
            yield Text("showing " + ", ".join(f"{k} {literal(v)}" for k, v in self.filters.items()))
        yield from self._task_groups(console)
        for name, keys in self.queues.items():
            if keys:
                yield render.keys_line(name.replace("_", "-"), keys)
        for title, peers in (("queued for transfer from", self.data_needed),
                             ("in flight from", self.in_flight_workers)):
            for peer, keys in peers.items():
                yield render.keys_line(f"{title} {peer}", keys)
        for g in self.gathers:
            yield render.keys_line(f"gather of step {g.step} to {g.peer}, not answered", list(g.keys))
        if self.busy_workers:
            yield Text.assemble(("busy peers: ", "bold"), render.safe(", ".join(self.busy_workers)))

    def _task_groups(self, console: Console) -> RenderResult:
        detailed = any(t.detail for t in self.tasks)
        groups: dict[str, list[TaskRow]] = {}
        for t in self.tasks:
            groups.setdefault(t.state, []).append(t)
        for state, rows in groups.items():
            if state in FINAL_STATES and not detailed:
                # the many finished tasks: one line per state
                yield render.keys_line(state, [t.key for t in rows])
                continue
            table = render.table(console, "key", "state", *(["detail"] if detailed else []),
                                 title=f"{state} ({len(rows)})")
            for t in rows:
                cells = [render.value(t.key, None), render.safe(t.state_text())]
                if detailed:
                    cells.append(render.safe(", ".join(
                        f"{k}={literal(v, 120)}" for k, v in (t.detail or {}).items())))
                table.add_row(*cells)
            yield table


def _by_priority(tasks: Iterable[Any]) -> list[Key]:
    # the state machine's heaps break ties of priority by insertion; a view
    # breaks them by key, so that it reads the same however it was built
    return [ts.key for ts in sorted(tasks, key=lambda ts: (ts.priority, sort_key(ts.key)))]


def state_of(replayer: Replayer, states: Iterable[str] = (), keys: Iterable[Key] = (),
             detail: bool = False) -> StateView:
    """:meth:`StateView.of`, as a function of where a replay stands (what a
    :class:`~replay.seek.Seeker` calls)."""
    return StateView.of(replayer, states=states, keys=keys, detail=detail, strict=True)


# --- diff ---------------------------------------------------------------------


@dataclass(slots=True)
class StepBrief:
    """One recorded step, shortly: its event class and fields in words."""

    step: int
    handled: float
    stimulus_id: str
    cls: str
    #: the event in one line (:func:`replay.render.event_text`)
    text: str

    @classmethod
    def of(cls, step: int, handled: float, event: Any) -> StepBrief:
        return cls(step, handled, event.stimulus_id, type(event).__name__, render.event_text(event))

    def to_json(self) -> dict:
        return {"step": self.step, "handled": self.handled, "stimulus_id": self.stimulus_id,
                "cls": self.cls, "text": self.text}


#: how many of the steps between two positions a diff keeps
DIFF_STEPS = 1000


def steps_between(calls: Iterable[RecordedCall], limit: int = DIFF_STEPS) -> tuple[list[StepBrief], int]:
    """The first ``limit`` steps of ``calls``, and how many there are in all."""
    kept: list[StepBrief] = []
    total = 0
    for call in calls:
        for i, ev in enumerate(call.events):
            total += 1
            if len(kept) < limit:
                kept.append(StepBrief.of(call.first + i, call.handled, ev))
    return kept, total


@dataclass
class TaskChange:
    key: Key
    before: Optional[TaskRow]
    after: Optional[TaskRow]

    def to_json(self) -> dict:
        return {"key": jsonable(self.key),
                "from": None if self.before is None else self.before.state_text(),
                "to": None if self.after is None else self.after.state_text()}


@dataclass
class DiffView:
    """What changed in a worker from one step to a later one, and the steps between."""

    before: StateView
    after: StateView
    #: the steps after ``before`` up to ``after`` (the first :data:`DIFF_STEPS`)
    steps: list[StepBrief]
    steps_total: int

    @property
    def tasks(self) -> list[TaskChange]:
        a = {t.key: t for t in self.before.tasks}
        b = {t.key: t for t in self.after.tasks}
        changed = []
        for key in a.keys() | b.keys():
            ta, tb = a.get(key), b.get(key)
            if ta is None or tb is None or (ta.state, ta.previous, ta.next) != (tb.state, tb.previous, tb.next):
                changed.append(key)
        # only the changed keys sorted: two steps apart, a few of thousands
        return [TaskChange(key, a.get(key), b.get(key)) for key in sorted(changed, key=sort_key)]

    @property
    def collections(self) -> dict[str, Any]:
        """Keys added to and removed from each queue: ``{name: {"added": keys,
        "removed": keys}}``, and per peer for the peer maps ``{name: {peer: …}}``."""
        out: dict[str, Any] = {}
        a, b = self.before, self.after

        def change(xs: list, ys: list) -> dict[str, list]:
            sx, sy = set(xs), set(ys)
            ch = {"added": [y for y in ys if y not in sx], "removed": [x for x in xs if x not in sy]}
            return {k: v for k, v in ch.items() if v}

        for name in _QUEUES:
            if ch := change(a.queues[name], b.queues[name]):
                out[name] = ch
        if ch := change(a.busy_workers, b.busy_workers):
            out["busy_workers"] = ch
        for name in ("data_needed", "in_flight_workers"):
            pa, pb = getattr(a, name), getattr(b, name)
            peers = {}
            for peer in sorted(pa.keys() | pb.keys()):
                if ch := change(pa.get(peer, []), pb.get(peer, [])):
                    peers[peer] = ch
            if peers:
                out[name] = peers
        return out

    def to_json(self) -> dict:
        a, b = self.before, self.after
        changes = self.tasks
        out: dict[str, Any] = {
            "worker": b.worker,
            "from": {"step": a.step, "stimulus_id": a.stimulus_id, "handled": a.handled},
            "to": {"step": b.step, "stimulus_id": b.stimulus_id, "handled": b.handled},
            "steps": [s.to_json() for s in self.steps],
            "steps_total": self.steps_total,
            "tasks": {
                "added": [c.after.to_json() for c in changes if c.before is None],
                "removed": [c.before.to_json() for c in changes if c.after is None],
                "changed": [c.to_json() for c in changes if c.before is not None and c.after is not None],
            },
            "collections": jsonable(self.collections),
            **self._counters(),
        }
        return out

    def _counters(self) -> dict[str, Any]:
        """What changed of the resources (always there), running and nbytes (when changed)."""
        a, b = self.before, self.after
        out: dict[str, Any] = {"resources": {}}
        for part in ("total_resources", "available_resources"):
            ra, rb = getattr(a.counters, part), getattr(b.counters, part)
            ch = {r: [ra.get(r), rb.get(r)] for r in sorted(ra.keys() | rb.keys()) if ra.get(r) != rb.get(r)}
            if ch:
                out["resources"][part.split("_")[0]] = ch
        if a.running != b.running:
            out["running"] = [a.running, b.running]
        if a.counters.nbytes != b.counters.nbytes:
            out["nbytes"] = [a.counters.nbytes, b.counters.nbytes]
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        a, b = self.before, self.after
        yield Text.assemble(
            ("worker ", "bold"), render.safe(b.worker), f"  step {a.step} → {b.step}",
            f" ({elapsed(Moment(a.step, a.handled), Moment(b.step, b.handled))})" if a.handled and b.handled else "",
        )
        n = self.steps_total
        yield Text(f"{n} step{'' if n == 1 else 's'} between:", style="bold")
        yield from self._steps()
        # each computed once: the JSON of every change is not needed here
        data, changes, collections = self._counters(), self.tasks, self.collections
        if changes:
            yield Text("what changed:", style="bold")
        for c in changes:
            if c.before is None:
                yield Text.assemble(("+ ", "green"), render.value(c.key, None), " ", render.safe(c.after.state_text()))
            elif c.after is None:
                yield Text.assemble(("- ", "red"), render.value(c.key, None), " ", render.safe(c.before.state_text()))
            else:
                yield Text.assemble(("~ ", "yellow"), render.value(c.key, None), " ",
                                    render.safe(c.before.state_text()), " → ", render.safe(c.after.state_text()))
        for name, ch in collections.items():
            per_peer = ch if name in ("data_needed", "in_flight_workers") else {"": ch}
            for peer, c in per_peer.items():
                label = f"{name.replace('_', '-')} {peer}".rstrip()
                if c.get("added"):
                    yield render.keys_line(f"{label} +", c["added"])
                if c.get("removed"):
                    yield render.keys_line(f"{label} -", c["removed"])
        for part, ch in data["resources"].items():
            for r, (x, y) in ch.items():
                yield Text.assemble(f"resources {part} ", render.safe(r), f": {x} → {y}")
        for f in ("running", "nbytes"):
            if f in data:
                yield Text(f"{f}: {data[f][0]} → {data[f][1]}")
        if not (changes or collections or data["resources"] or "running" in data or "nbytes" in data):
            yield Text("no change")

    def _steps(self) -> RenderResult:
        shown = self.steps
        # many steps: the first and last few, the rest counted
        head, tail = (shown, []) if self.steps_total <= 20 else (shown[:8], shown[-8:] if len(shown) == self.steps_total else [])
        for s in head:
            yield render.step_line(s)
        if tail or self.steps_total > len(head):
            cut = self.steps_total - len(head) - len(tail)
            if cut:
                yield Text(f"  … {cut} more step{'' if cut == 1 else 's'}", style="dim")
        for s in tail:
            yield render.step_line(s)
