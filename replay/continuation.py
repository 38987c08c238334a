"""Continue a worker from any step, as a live worker would have gone on.

dask #5736 ends with ``get_worker_from_history``: replay the events, and
"this should now be a functional worker at the given time", driven further
by a fake worker whose peers answer or stay busy. :func:`continue_worker`
does that: it rebuilds the worker at a step with a real ``WorkerState`` (a
replay), then hands it what its surroundings would have sent, with the
simulator's own parts (:mod:`replay.simulate`): the executor finishes every
``Execute``, peers answer each ``GatherDep`` from the keys the log says they
hold (or answer busy, or never), the scheduler answers the worker's
``RequestRefreshWhoHasMsg`` from the same knowledge, and a periodic
``FindMissingEvent`` runs while a task is missing.

The answer is a :class:`Continuation`: did every task finish, and if not,
which key still waits, in which state, on what. With every peer answering,
a task that still waits is a state machine that does not move on from
there (or a wait nothing in the log could end, which it says); a run that
finishes means the hang came from outside the worker: the peer that never
answered, the execution that never ended, the pause never lifted.
"""
from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional

from distributed import worker_state_machine as wsm
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.diagnosis import WHY_MAX_STEPS, Tracker, Verdict, explain
from replay.engine import Applied, Divergence, Replayer, differing_instructions
from replay.errors import BadInput, ReplayError
from replay.history import WorkerHistory
from replay.literal import jsonable, key_text
from replay.logfile import iter_lines, write_records
from replay.reader import Progress, RecordedCall
from replay.simulate.dag import MEMORY, SimTask, TaskGraph
from replay.simulate.faults import Faults, Injector
from replay.simulate.loop import EPOCH, EventLoop, Stalled
from replay.simulate.nodes import FIND_MISSING_PERIOD, Cluster, RecordedWorker, VirtualPeer
from replay.simulate.scheduler import Scheduler
from replay.summary import DivergenceView
from replay.views import FINAL_STATES, Key, Moment
from schemas.convert import encode_event, encode_instruction

#: how the peers answer a ``GatherDep``: with the keys the log says they
#: hold, busy every time, or never
Peers = Literal["answer", "busy", "silent"]
PEERS: tuple[str, ...] = ("answer", "busy", "silent")
#: stimuli handed to the worker at most, unless asked otherwise
DEFAULT_EVENTS = 10_000

#: what the worker can ask of its surroundings that a later stimulus answers
Asked = wsm.GatherDep | wsm.Execute | wsm.RetryBusyWorkerLater


@dataclass(slots=True)
class Outstanding:
    """One thing the worker asked of its surroundings that nothing answered yet."""

    #: the step whose instructions asked it
    step: int
    instruction: Asked

    def describe(self, at: int, end: bool) -> str:
        """What did not come, as known at step ``at`` (``end``: the log's last)."""
        inst = self.instruction
        if isinstance(inst, wsm.GatherDep):
            verb = "never answered" if end else f"had not answered by step {at}"
            return f"{inst.worker} {verb} the gather issued at step {self.step}"
        if isinstance(inst, wsm.Execute):
            verb = "never finished" if end else f"had not finished by step {at}"
            return f"the execution of {key_text(inst.key)} started at step {self.step} {verb}"
        verb = "never came" if end else f"had not come by step {at}"
        return f"the retry of busy {inst.worker} asked at step {self.step} {verb}"

    def to_json(self) -> dict:
        inst = self.instruction
        out: dict[str, Any] = {"step": self.step, "instruction": type(inst).__name__}
        if isinstance(inst, wsm.GatherDep):
            out.update(worker=inst.worker, keys=jsonable(sorted(inst.to_gather, key=repr)))
        elif isinstance(inst, wsm.Execute):
            out["key"] = jsonable(inst.key)
        else:
            out["worker"] = inst.worker
        return out


class Surroundings:
    """What a worker's surroundings owe it, and who holds which key, as its
    own steps tell up to the step fed last.

    Outstanding requests come from the instructions the worker issued (the
    replayed ones, which equal the recorded ones on a faithful replay), never
    from its state: a state machine that forgets to clean its bookkeeping
    must not get the answer it forgot about. Holders are what the scheduler
    told the worker (``who_has`` of compute, replica and refresh events) and
    the data a peer sent, less the peers that left.
    """

    __slots__ = ("gathers", "executes", "retries", "paused", "holders")

    #: peer -> the ``GatherDep`` to it not answered yet (one per peer at a time)
    gathers: dict[str, Outstanding]
    #: key -> the ``Execute`` of it not finished yet
    executes: dict[Key, Outstanding]
    #: peer -> the ``RetryBusyWorkerLater`` not answered yet
    retries: dict[str, Outstanding]
    #: the step of the ``PauseEvent`` in force, if any
    paused: Optional[int]
    #: key -> the peers the log last said hold it, in the order it said so
    holders: dict[Key, dict[str, None]]

    def __init__(self) -> None:
        self.gathers = {}
        self.executes = {}
        self.retries = {}
        self.paused = None
        self.holders = {}

    def feed(self, step: int, ev: wsm.StateMachineEvent, instructions: list[wsm.Instruction]) -> None:
        self._event(step, ev)
        for inst in instructions:
            if isinstance(inst, wsm.GatherDep):
                self.gathers[inst.worker] = Outstanding(step, inst)
            elif isinstance(inst, wsm.Execute):
                self.executes[inst.key] = Outstanding(step, inst)
            elif isinstance(inst, wsm.RetryBusyWorkerLater):
                self.retries[inst.worker] = Outstanding(step, inst)

    def _event(self, step: int, ev: wsm.StateMachineEvent) -> None:
        holders = self.holders
        if isinstance(ev, wsm.GatherDepDoneEvent):
            self.gathers.pop(ev.worker, None)
            if isinstance(ev, wsm.GatherDepSuccessEvent):
                # a key a peer did not send stays its: the scheduler still
                # says so, and the worker asks it again (RequestRefreshWhoHas)
                for key in ev.data:
                    holders.setdefault(key, {})[ev.worker] = None
        elif isinstance(ev, wsm.ExecuteDoneEvent):
            self.executes.pop(ev.key, None)
        elif isinstance(ev, wsm.RetryBusyWorkerEvent):
            self.retries.pop(ev.worker, None)
        elif isinstance(ev, (wsm.ComputeTaskEvent, wsm.AcquireReplicasEvent)):
            for key, peers in ev.who_has.items():
                h = holders.setdefault(key, {})
                for p in peers:
                    h[p] = None
        elif isinstance(ev, wsm.RefreshWhoHasEvent):
            for key, peers in ev.who_has.items():
                holders[key] = dict.fromkeys(peers)
        elif isinstance(ev, wsm.RemoveWorkerEvent):
            for h in holders.values():
                h.pop(ev.worker, None)
        elif isinstance(ev, wsm.PauseEvent):
            self.paused = step
        elif isinstance(ev, wsm.UnpauseEvent):
            self.paused = None

    def outstanding(self) -> list[Outstanding]:
        """Every request not answered, in the order they were issued."""
        out = [*self.gathers.values(), *self.executes.values(), *self.retries.values()]
        out.sort(key=lambda o: o.step)
        return out


@dataclass(slots=True)
class Continuation:
    """A worker continued from a step: did every task finish, and if not,
    which task still waits, on what.

    ``finished`` is the fact; ``normal_wait`` says whether a task still
    waiting is explained by the surroundings (no peer in the log holds what
    it needs, it needs more resources than the worker has, peers that were
    asked to stay busy or silent) rather than by the state machine.
    """

    worker: str
    #: the step continued from: the state after it (0: the empty state)
    at: int
    #: whether ``at`` is the worker's last recorded step
    at_end: bool
    peers: str
    #: every task reached a final state (memory, error, released)
    finished: bool
    #: stimuli handed to the worker after ``at``
    events: int
    #: why driving stopped: "finished", "idle" (nothing more would come),
    #: "budget" (``events`` reached) or "raised" (the state machine raised)
    stopped: str
    #: the unfinished task that best explains the others, after the
    #: continuation; None when every task finished
    stuck: Optional[Verdict]
    #: a task still waits for a reason outside the state machine
    normal_wait: bool
    #: what the worker had asked at ``at`` and nothing had answered
    outstanding: list[Outstanding] = field(default_factory=list)
    #: tasks not in a final state at ``at``
    waiting_at: int = 0
    #: the worker was paused at ``at`` and is continued running: why
    resumed: Optional[str] = None
    #: with ``until_divergence``, the first step whose instructions differed
    #: from the recording (the continuation starts after it)
    divergence: Optional[Divergence] = None
    #: what the state machine raised during the continuation
    raised: Optional[str] = None
    #: the continued steps as log records, each with ``"simulated": true``
    steps: list[dict] = field(default_factory=list, repr=False)
    #: the call replayed last, ``(first step, encoded instructions)``: what
    #: the continued log says where the recording's record of step ``at``
    #: does not (a batch cut at ``at``, a divergence)
    tail: Optional[tuple[int, list[dict]]] = field(default=None, repr=False)
    #: the replay stopped at the first divergence, if any
    until_divergence: bool = False
    #: replayed under a patched state machine (``--import``)
    patched: bool = False

    @property
    def key(self) -> Any:
        """The key still waiting, if any."""
        return None if self.stuck is None else self.stuck.key

    @property
    def gather(self) -> Optional[Outstanding]:
        """The first gather outstanding at ``at``: the peer that did not answer."""
        return next((o for o in self.outstanding if isinstance(o.instruction, wsm.GatherDep)), None)

    @property
    def state_machine_stuck(self) -> bool:
        """The state machine does not move on although its surroundings answer."""
        return not self.finished and (self.raised is not None or not self.normal_wait)

    @property
    def exit_code(self) -> int:
        return 0 if self.finished else 1

    def cause(self) -> str:
        """What outside the worker kept it from finishing, as known at ``at``."""
        if self.outstanding:
            return self.outstanding[0].describe(self.at, self.at_end)
        if self.resumed:
            return self.resumed.partition(": continued")[0]
        return "the scheduler had not said who holds the missing keys"

    def headline(self) -> str:
        """The verdict, in one line."""
        line = self._verdict()
        return f"under the patched state machine, {line}" if self.patched else line

    def _verdict(self) -> str:
        if self.raised is not None:
            return (f"the state machine raised {self.raised} {self.events} events later: "
                    "a state machine bug — `replay shrink` it")
        answering = {"answer": "every peer answering", "busy": "every peer busy",
                     "silent": "no peer answering"}[self.peers]
        if self.finished:
            if not self.waiting_at:
                return f"no task was waiting at step {self.at}: nothing to continue"
            if self.divergence is not None:
                return (f"every task finished {self.events} events after step {self.at}, where the "
                        f"instructions first differ from the recording, with {answering}")
            return (f"every task finished {self.events} events later with {answering}: "
                    f"the hang comes from outside this worker ({self.cause()})")
        v = self.stuck
        assert v is not None
        state = f"in {v.state}" if v.state in ("flight", "fetch") else v.state
        what = f"{key_text(v.key)} is still {state} with {answering}"
        if self.stopped == "budget":
            what += f" after {self.events} events"
        if self.normal_wait:
            if self.peers != "answer":
                return f"{what}, a wait on its peers: {v.reason}"
            return f"{what}, a wait nothing in the log could end: {v.reason}"
        return (f"{what}: the state machine does not move on from here — `replay shrink` it "
                f"({v.reason})")

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "verdict": self.headline(),
            "worker": self.worker, "at": self.at, "peers": self.peers,
            "finished": self.finished, "normal_wait": self.normal_wait,
            "state_machine_stuck": self.state_machine_stuck,
            "events": self.events, "stopped": self.stopped,
            "waiting_at": self.waiting_at,
            "outstanding": [o.to_json() for o in self.outstanding],
            "stuck": None if self.stuck is None else self.stuck.to_json(),
            "resumed": self.resumed, "raised": self.raised,
            "until_divergence": self.until_divergence, "patched": self.patched,
        }
        d = self.divergence
        out["divergence"] = None if d is None else {
            "step": d.seq, "stimulus_id": d.stimulus_id, "kind": d.kind,
            "recorded": jsonable(d.expected), "replayed": jsonable(d.actual)}
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        style = "green" if self.finished else "red" if self.state_machine_stuck else "yellow"
        yield Text(render.safe(self.headline()).plain, style=style)
        d = self.divergence
        if d is None and self.patched:
            yield Text("under the patched state machine, every step did what the recording did")
        if d is not None:
            where = f"step {d.seq} ({render.safe(d.stimulus_id).plain})"
            yield Text(
                f"under the patched state machine, {where} first differs from the recording:" if self.patched
                else f"the replay departs from the recording at {where}"
                + (f" ({render.safe(d.cause).plain})" if d.cause else "") + "; continued from there:"
            )
            # the differing instructions, as verify shows them
            yield DivergenceView(d.seq, d.stimulus_id, d.kind, d.expected, d.actual, d.key, None, None)
        yield Text(f"{render.safe(self.worker).plain}: continued from step {self.at}, "
                   f"{self.events} events, stopped: {self.stopped}", style="dim")
        if self.resumed:
            yield Text(self.resumed, style="yellow")
        for o in self.outstanding[1:6]:
            yield Text("also outstanding: " + o.describe(self.at, self.at_end), style="dim")


class _Raised(Exception):
    """The continued state machine raised; ends the drive."""


class _Driver(Cluster):
    """The simulator's cluster around one continued worker.

    Every stimulus goes through the worker's :class:`~replay.engine.Replayer`
    (the one replay loop), and becomes a step record marked simulated.
    """

    __slots__ = ("replayer", "tracker", "surroundings", "records", "silent", "worker")

    def __init__(self, r: Replayer, tracker: Tracker, surroundings: Surroundings, peers: str, seed: int):
        rng = random.Random(seed)
        faults = Faults.none()
        if peers == "busy":
            faults = replace(faults, busy=1.0)
        loop = EventLoop()
        graph = TaskGraph(rng, 1)
        super().__init__(None, workers=0, peers=0, loop=loop, rng=rng, injector=Injector(faults), graph=graph)
        self.replayer = r
        self.tracker = tracker
        self.surroundings = surroundings
        self.records: list[dict] = []
        self.silent = peers == "silent"
        ws = r.ws
        self.worker = w = RecordedWorker(ws.address, ws, None, dict(ws.total_resources))  # type: ignore[arg-type]
        self.workers.append(w)
        self.nodes[w.address] = w
        # peers hold what the log says they hold; the scheduler knows it too
        for key, peers_of in surroundings.holders.items():
            for p in peers_of:
                if p != w.address:
                    self._peer(p).keys[key] = None
            if peers_of:
                ts = ws.tasks.get(key)
                t = SimTask(key, 0, ts.get_nbytes() if ts is not None else 0, None)
                t.state = MEMORY
                t.who_has = dict(peers_of)
                graph.by_key[key] = t
        self.scheduler = Scheduler(loop, rng, self.injector, graph, self)
        # the clock goes on from the recorded one
        loop.now = (r.handled if r.handled is not None else EPOCH) - EPOCH

    def _peer(self, address: str) -> VirtualPeer:
        node = self.nodes.get(address)
        if node is None:
            node = self.nodes[address] = VirtualPeer(address)
        return node  # type: ignore[return-value]

    def handle_stimulus(self, w: RecordedWorker, ev: wsm.StateMachineEvent) -> None:
        loop = self.loop
        loop.count_step(type(ev).__name__)
        r = self.replayer
        seq = r.seq + 1
        handled = loop.clock()
        record: dict[str, Any] = {"kind": "step", "worker": w.address, "seq": seq, "handled": handled,
                                  "event": encode_event(ev), "simulated": True}
        try:
            applied = r.apply(RecordedCall([ev], seq, [0], handled, [], None, None))
        except ReplayError as e:
            crash = e.__cause__
            record["error"] = repr(crash)
            self.records.append(record)
            raise _Raised from crash
        record["instructions"] = [encode_instruction(i) for i in applied.instructions]
        self.records.append(record)
        self.tracker.feed(applied)
        self.surroundings.feed(seq, ev, applied.instructions)
        table = self._instructions
        for inst in applied.instructions:
            table[type(inst)](w, inst)

    def _gather(self, w: RecordedWorker, inst: wsm.GatherDep) -> None:
        self._peer(inst.worker)
        if not self.silent:
            Cluster._gather(self, w, inst)

    def find_missing(self) -> None:
        w = self.worker
        self.handle_stimulus(w, wsm.FindMissingEvent(stimulus_id=self.loop.stimulus_id("find-missing")))

    def answer_outstanding(self, outstanding: list[Outstanding], unpause: bool) -> None:
        """Answer what was outstanding at the start, as the live worker would have."""
        w = self.worker
        if unpause:
            self.loop.call_later(0.0, self._unpause, w)
        for o in outstanding:
            inst = o.instruction
            if isinstance(inst, wsm.GatherDep):
                self._gather(w, inst)
            elif isinstance(inst, wsm.Execute):
                if inst.key in w.ws.tasks:
                    self._execute(w, inst)
            else:
                self._retry_later(w, inst)

    def drive(self, events: int) -> str:
        """Run until nothing more would come ("idle") or ``events`` stimuli
        were handed ("budget"); "raised" if the state machine raised."""
        loop = self.loop
        ws = self.worker.ws
        asked_at: Optional[int] = None
        try:
            while True:
                try:
                    loop.run(events - loop.steps)
                except Stalled:
                    # Worker.find_missing runs every second while a task is
                    # missing; once a round changes nothing, none ever will
                    if ws.missing_dep_flight and asked_at != ws.transition_counter:
                        asked_at = ws.transition_counter
                        loop.call_later(FIND_MISSING_PERIOD, self.find_missing)
                        continue
                    return "idle"
                return "budget"
        except _Raised:
            return "raised"


def _unfinished(ws: wsm.WorkerState) -> int:
    return sum(ts.state not in FINAL_STATES for ts in ws.tasks.values())


def _normal_wait(ws: wsm.WorkerState, v: Verdict, holders: dict[Key, dict[str, None]], peers: str) -> bool:
    """Whether the wait ``v`` is one the surroundings explain."""
    c = v.category
    if c == "constrained: resources":
        need = ws.tasks[v.key].resource_restrictions or {}
        return any(n > ws.total_resources.get(r, 0) for r, n in need.items())
    if c == "missing":
        return not holders.get(v.key)
    if peers != "answer":
        return c.startswith(("flight", "fetch", "missing")) or c == "waiting: dependencies"
    return False


#: a pause this close to the recorder's teardown came from the worker closing
CLOSING_WITHIN = 1.0


def _paused_closing(history: WorkerHistory, paused: Optional[Moment]) -> bool:
    """Whether the worker paused as it closed: the recorder stopped at the
    worker's teardown (``Worker.close`` pauses the state machine first), and
    the pause came just before."""
    if not history.wlog.ended or paused is None or paused.time is None:
        return False
    for _, rec in iter_lines(history.log.path, source=history.log.source):
        if rec.get("kind") == "end" and rec.get("worker") == history.address:
            return rec.get("reason") == "teardown" and rec["time"] - paused.time < CLOSING_WITHIN
    return False


def _replay_to(
    history: WorkerHistory, stop: int, until_divergence: bool, progress: Progress | None
) -> tuple[Replayer, Tracker, Surroundings, Optional[Divergence], Optional[tuple[int, list[dict]]]]:
    """Replay to ``stop`` (or to the first divergence) feeding a tracker and the surroundings."""
    r = history.replayer(tap_log=True)
    tracker = Tracker(history.events)
    surroundings = Surroundings()
    divergence = None
    applied = None
    if stop <= 0:
        return r, tracker, surroundings, None, None
    for call in history.calls(1, stop):
        try:
            applied = r.apply(call)
        except ReplayError as e:
            if not until_divergence:
                raise
            crash = e.__cause__
            divergence = Divergence(call.last, call.stimulus_id, "error", call.error,
                                    f"{type(crash).__name__}: {crash}", exception=crash)
            applied = None
            break
        _feed(tracker, surroundings, applied)
        if progress is not None:
            progress(r.seq)
        if until_divergence:
            divergence = differing_instructions(call, applied)
            if divergence is not None:
                break
    if divergence is not None:
        divergence.cause = r.cause()
    tail = None
    if applied is not None and applied.exception is None:
        tail = (applied.call.first, [encode_instruction(i) for i in applied.instructions])
    return r, tracker, surroundings, divergence, tail


def _feed(tracker: Tracker, surroundings: Surroundings, applied: Applied) -> None:
    tracker.feed(applied)
    for s in applied.steps():
        surroundings.feed(s.step, s.event, s.instructions)


def continue_worker(
    history: WorkerHistory,
    pos: Any = None,
    *,
    peers: str = "answer",
    events: int = DEFAULT_EVENTS,
    until_divergence: bool = False,
    patched: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> Continuation:
    """Rebuild ``history``'s worker at ``pos`` and drive it onward.

    ``pos`` is a position as everywhere (default: the last step). ``peers``
    is one of :data:`PEERS`. At most ``events`` stimuli are handed to the
    worker. ``until_divergence`` replays the log only until the state
    machine's instructions first differ from the recording (a patched state
    machine: "would my fix have finished this run?"), and continues from
    there. ``patched`` only says so in the verdict (the state machine was
    patched by ``--import``). The same arguments give the same continuation.
    """
    if peers not in PEERS:
        raise ValueError(f"peers must be one of {', '.join(PEERS)}, not {peers!r}")
    if events < 0:
        raise ValueError("events must be >= 0")
    stop = history.position(pos)
    r, tracker, surroundings, divergence, tail = _replay_to(history, stop, until_divergence, progress)
    at = r.seq
    ws = r.ws
    outstanding = surroundings.outstanding()
    waiting_at = _unfinished(ws)
    resumed = None
    if not ws.running:
        since = f" at step {surroundings.paused}" if surroundings.paused else ""
        if at == history.events and _paused_closing(history, tracker.paused):
            resumed = f"the worker paused{since} as it closed (the recorder saw it shut down): continued as running"
        else:
            resumed = f"the worker paused{since} and had not unpaused by step {at}: continued as running"
    tracker.end = None  # past the log: "not completed by step N"
    if divergence is not None and divergence.exception is not None:
        # the state machine raised where the recording did not: nothing to continue
        return Continuation(ws.address, at, at == history.events, peers, False, 0, "raised",
                            None, False, outstanding, waiting_at, resumed, divergence,
                            raised=str(divergence.actual), tail=tail, until_divergence=True,
                            patched=patched)
    driver = _Driver(r, tracker, surroundings, peers, seed)
    driver.answer_outstanding(outstanding, unpause=not ws.running)
    stopped = driver.drive(events)
    left = _unfinished(ws)
    finished = left == 0 and stopped != "raised"
    raised = None
    if stopped == "raised":
        raised = driver.records[-1].get("error")
    elif finished:
        stopped = "finished"
    # the shrinker asks this module whether a wait is normal: imported here, not at the top
    from replay.shrinker import choose_stuck_key

    stuck = None
    normal = False
    key = choose_stuck_key(ws) if left else None
    if key is not None:
        stuck = explain(ws, ws.tasks[key], tracker)
        normal = _normal_wait(ws, stuck, surroundings.holders, peers)
    return Continuation(
        ws.address, at, at == history.events, peers, finished, driver.loop.steps, stopped, stuck, normal,
        outstanding, waiting_at, resumed, divergence, raised, driver.records, tail, until_divergence, patched,
    )


#: ``why`` runs a continuation only on logs this short (:data:`WHY_MAX_STEPS`),
#: this far, and for this long (seconds of replay): cheap
WHY_EVENTS = 1_000
WHY_SECONDS = 2.0


class _TooLong(Exception):
    """The replay before a short continuation ran out of time."""


def short_verdict(history: WorkerHistory, pos: Any = None, seconds: float = WHY_SECONDS) -> Optional[str]:
    """The verdict of a continuation from ``pos`` when it is cheap (a log of
    at most :data:`WHY_MAX_STEPS` steps, replayed within ``seconds``, at most
    :data:`WHY_EVENTS` events driven), for ``why``'s extra line; None otherwise.

    The replay to ``pos`` is checked against the recording as it goes, so
    that a replay under another hash seed than the recording's (``why`` does
    not re-execute for this line) answers only when it took the recorded
    path; None if it departs.
    """
    if history.events > WHY_MAX_STEPS or history.header.get("history") == "partial":
        return None
    deadline = time.monotonic() + seconds

    def in_time(step: int) -> None:
        if time.monotonic() > deadline:
            raise _TooLong

    try:
        c = continue_worker(history, pos, events=WHY_EVENTS, until_divergence=True, progress=in_time)
    except _TooLong:
        return None
    return None if c.divergence is not None else c.headline()


def continued_records(history: WorkerHistory, c: Continuation) -> Iterator[dict]:
    """The continued run as one worker's log: its header (saying from which
    step it continues), the recorded records up to the step continued from,
    the simulated steps, and an end record. Every read command accepts it."""
    # what the shrinker kept a log showing is not what this log shows
    header = {k: v for k, v in history.header.items() if k != "shrunk"}
    header["continued"] = {"from_step": c.at, "peers": c.peers, "events": c.events,
                           "diverged_at": None if c.divergence is None else c.divergence.seq}
    yield header
    for _, rec in history.log.records(history.wlog):
        if rec["seq"] > c.at:
            break
        if rec["kind"] == "step" and rec["seq"] == c.at and c.tail is not None and (
            c.divergence is not None or ("instructions" not in rec and "error" not in rec)
        ):
            # the call ends here now, as this state machine handled it
            first, instructions = c.tail
            rec = {k: v for k, v in rec.items() if k not in ("instructions", "batch", "error")}
            rec["instructions"] = instructions
            if c.at > first:
                rec["batch"] = c.at - first + 1
        yield rec
    yield from c.steps
    last = c.steps[-1]["handled"] if c.steps else (history.wlog.last_handled or history.header["started"])
    yield {"kind": "end", "worker": history.address, "seq": c.at + len(c.steps), "time": last,
           "reason": "continuation end"}


def write_continued(path: str, runs: list[tuple[WorkerHistory, Continuation]]) -> int:
    """Write continued runs as one log (gzip if ``path`` ends with ``.gz``),
    each worker's records in order; returns the number of lines."""
    records = (rec for history, c in runs for rec in continued_records(history, c))
    try:
        return write_records(path, records)
    except OSError as e:
        raise BadInput(f"{path}: cannot write: {e.strerror or e}") from None


def _rank(c: Continuation) -> tuple[bool, bool, bool]:
    # the state machine stuck first, then other waits, then finished runs
    return (not c.state_machine_stuck, c.finished, c.waiting_at == 0)


@dataclass
class ContinuedWorkers:
    """The continuation of each worker asked for, the one that matters most first."""

    workers: list[Continuation]

    def __post_init__(self) -> None:
        self.workers.sort(key=_rank)

    @property
    def exit_code(self) -> int:
        return max((c.exit_code for c in self.workers), default=0)

    def to_json(self) -> dict:
        if len(self.workers) == 1:
            return self.workers[0].to_json()
        return {"workers": [c.to_json() for c in self.workers]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.workers
