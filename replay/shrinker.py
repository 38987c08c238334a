"""Shrink one worker's log to a minimal event sequence that still shows a bug.

A :class:`Predicate` says what the bug looks like on a replayed worker (a
task stuck in some kind of wait, a task in a state, an exception, a broken
invariant, a user's expression over ``ws``) as a *fingerprint*. The
:class:`Shrinker` takes the fingerprint of the original log and searches for
the shortest, simplest list of stimuli whose replay, through a fresh real
``WorkerState`` built from the recorded construction inputs, shows the same
fingerprint. A candidate that fails in another way (another exception,
another assertion, another kind of wait) does not show it.
"""
from __future__ import annotations

import builtins
import dataclasses
import itertools
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import dask.config
from dask.utils import parse_bytes
from distributed import worker_state_machine as wsm
from distributed.comm import get_address_host

from replay.continuation import continue_worker
from replay.diagnosis import FINAL_STATES, Tracker, category, explain
from replay.engine import Replayer
from replay.errors import BadInput, ReplayError
from replay.hashcheck import Seen, elsewhere, salted
from replay.history import WorkerHistory
from replay.reader import RecordedCall
from replay.requests import OpenRequests
from replay.testcase import Expr, Invalid, InState, Narrative, Outcome, Raises, Resources, Stuck
from replay.engine import failed_assert, raised_at
from replay.testcase import pytest_source
from schemas.codec import decode_float, decode_key, decode_resources, encode_float, encode_key, encode_resources
from schemas.convert import encode_event, encode_instruction

#: one entry of the list being shrunk: an event fed in its own
#: ``handle_stimulus`` call, or a ``Worker.set_resources`` change
Stimulus = Union[wsm.StateMachineEvent, Resources]
#: what a predicate sees on a replayed worker; None: nothing of the bug
Fingerprint = Optional[Hashable]


# --- replaying a candidate -------------------------------------------------------


#: events that answer an instruction: without the request that asked for
#: them, they are messages about nothing (dask rejects them, as another bug)
REPLIES = (wsm.GatherDepDoneEvent, wsm.ExecuteSuccessEvent, wsm.ExecuteFailureEvent,
           wsm.RescheduleEvent, wsm.SecedeEvent, wsm.RetryBusyWorkerEvent)


@dataclass(slots=True)
class Run:
    """A candidate replayed: where it stopped and what it left."""

    ws: wsm.WorkerState
    #: the exception the last stimulus raised, if one did (the run stops there)
    exception: Optional[BaseException]
    #: index of the last stimulus handled
    stopped: int
    #: the instructions each stimulus returned (resources changes: none)
    instructions: list[list[wsm.Instruction]]
    #: what ``why`` needs to explain the end state, when asked for
    tracker: Optional[Tracker] = None
    #: the requests no event has answered yet, each tagged with the index of
    #: the stimulus that issued it and the keys it concerns
    open: OpenRequests = dataclasses.field(default_factory=OpenRequests)
    #: for each stimulus, the index of the one whose call issued what it answers
    parent: list[Optional[int]] = dataclasses.field(default_factory=list)
    #: indexes of replies that answer no request of the run
    unsolicited: list[int] = dataclasses.field(default_factory=list)
    #: transfer replies whose ``total_nbytes`` is not what their ``GatherDep``
    #: asked for (a peer's reply repeats it): index -> the asked size
    resized: dict[int, int] = dataclasses.field(default_factory=dict)
    #: the stimuli fed, in order (with ``repair``, fewer or resized ones)
    fed: list = dataclasses.field(default_factory=list)
    #: how many of the given stimuli the run went through
    consumed: int = 0
    #: (given, fed instead) for each reply ``repair`` resized
    replaced: list = dataclasses.field(default_factory=list)
    #: indexes of tasks told this worker alone holds a dependency it does not
    #: (:func:`_without_lost_deps`), fed as they are
    lost: list = dataclasses.field(default_factory=list)
    #: with ``repair``: replies still waiting for their request when the run
    #: stopped (never asked for, unless the run stopped early)
    deferred: list = dataclasses.field(default_factory=list)


#: a request's tag in :attr:`Run.open`: (issuing stimulus, keys asked for,
#: bytes asked for by a ``GatherDep``)
Tag = tuple[int, frozenset, Optional[int]]


def _request_keys(inst: wsm.Instruction) -> frozenset:
    if isinstance(inst, wsm.GatherDep):
        return frozenset(inst.to_gather)
    key = getattr(inst, "key", None)
    return frozenset() if key is None else frozenset([key])


def replay_stimuli(
    header: dict,
    stimuli: Sequence[Stimulus],
    *,
    each: Callable[[int, Run], bool] | None = None,
    track: bool = False,
    repair: set[int] | None = None,
    store_failed: dict[int, list] | None = None,
) -> Run:
    """Feed ``stimuli`` one call each to a fresh ``WorkerState`` built from ``header``.

    ``each(i, run)``, if given, is asked after every stimulus, with the run
    so far, and stops the run by returning true. An exception stops it too,
    and is kept: for a candidate, a crash is an outcome like any other. With
    ``track``, a :class:`~replay.diagnosis.Tracker` follows the run, for
    ``why``'s reasons. ``store_failed`` gives, by ``id()``, the stores into
    the worker's data that raised while a stimulus was handled (as the log
    recorded them for its call): a replay's data raises the same.

    With ``repair`` (the ``id()`` of stimuli kept as recorded: replies that
    may answer nothing, tasks with a lost dependency in the original), the
    world answers the candidate as it asks: a reply answering no request yet
    waits until its request is issued and comes right after that call (a
    deletion moved the request: on one thread, another task ran first); one
    never asked for is left out; a transfer reply takes the size its
    ``GatherDep`` asked for; a task's dependency that only this worker held,
    and that it no longer knows, is dropped (:func:`_without_lost_deps`). The run is then the one of :attr:`Run.fed`,
    what was fed, and its indexes are ``fed``'s.
    """
    r = Replayer(header, tap_log=track)
    run = Run(r.ws, None, -1, [], Tracker() if track else None)
    requests: OpenRequests[Tag] = run.open
    fed = run.fed
    waiting = run.deferred  # replies whose request is not issued yet (repair)
    step = 0  # numbered as in the shrunk log: events only

    def feed(s: Stimulus, failed: Optional[list] = None) -> bool:
        """Handle one stimulus; true when the run stops there."""
        nonlocal step
        i = len(fed)
        if type(s) is Resources:
            run.stopped = i
            fed.append(s)
            r.set_resources(dict(s.total), dict(s.available))
            run.instructions.append([])
            run.parent.append(None)
        else:
            answered = requests.answered(s)
            if answered is None and isinstance(s, REPLIES):
                run.unsolicited.append(i)
            elif isinstance(s, wsm.GatherDepDoneEvent) and answered[2] != s.total_nbytes:
                if repair is not None:
                    old, s = s, dataclasses.replace(s, total_nbytes=answered[2])
                    run.replaced.append((old, s))
                else:
                    run.resized[i] = answered[2]
            run.stopped = i
            fed.append(s)
            run.parent.append(None if answered is None else answered[0])
            step += 1
            call = RecordedCall([s], step, [0], 0.0, [], None, None, store_failed=failed)
            try:
                applied = r.apply(call)
            except ReplayError as crash:
                run.exception = crash.__cause__
                return True
            run.instructions.append(applied.instructions)
            for inst in applied.instructions:
                requests.issued(inst, (i, _request_keys(inst), getattr(inst, "total_nbytes", None)))
            if run.tracker is not None:
                run.tracker.feed(applied)
        return each is not None and each(i, run)

    def answer_waiting() -> bool:
        """Feed the waiting replies whose request is now open, oldest first."""
        while True:
            j = next((j for j, w in enumerate(waiting) if requests.answers(w)), None)
            if j is None:
                return False
            w = waiting.pop(j)
            if feed(w, failures(w)):
                return True

    def failures(s: Stimulus) -> Optional[list]:
        return store_failed.get(id(s)) if store_failed else None

    for n, s in enumerate(stimuli):
        run.consumed = n + 1
        failed = failures(s)
        if isinstance(s, wsm.ComputeTaskEvent) and s.who_has:
            fixed = _without_lost_deps(r.ws, s)
            if fixed is not s:
                if repair is None or id(s) in repair:
                    run.lost.append(len(fed))  # as recorded: kept
                else:
                    run.replaced.append((s, fixed))
                    s = fixed
        if (repair is not None and isinstance(s, REPLIES) and id(s) not in repair
                and not requests.answers(s)):
            waiting.append(s)
            continue
        if feed(s, failed) or (waiting and answer_waiting()):
            break
    return run


def _without_lost_deps(ws: wsm.WorkerState, ev: wsm.ComputeTaskEvent) -> wsm.ComputeTaskEvent:
    """``ev`` without the dependencies it says this worker holds alone while
    the worker does not know them: the stimuli that made them went with a
    deletion, and no peer can send them (dask would wait for them forever)."""
    lost = [d for d, holders in ev.who_has.items() if set(holders) <= {ws.address} and _nowhere(ws, d)]
    if not lost:
        return ev
    return dataclasses.replace(ev, who_has={d: h for d, h in ev.who_has.items() if d not in lost},
                               nbytes={d: n for d, n in ev.nbytes.items() if d not in lost})


def _nowhere(ws: wsm.WorkerState, key: Any) -> bool:
    """Does the worker not hold ``key``? (Told it does, dask drops a task it
    is computing and looks for peers: there are none.)"""
    ts = ws.tasks.get(key)
    return ts is None or ts.state != "memory"


# --- predicates ---------------------------------------------------------------


class Predicate:
    """What the bug looks like, as a fingerprint of a replayed candidate."""

    #: as typed on the command line, for the narrative
    text: str = ""
    #: the original's fingerprint is taken at the first step showing one
    #: (a crash, a broken invariant), not at the end of the log
    first_hit: bool = False

    def observe(self, run: Run) -> Fingerprint:
        raise NotImplementedError

    def keys(self) -> set:
        """The keys the bug is about, if known: the closure pass keeps these."""
        return set()

    def subjects(self, run: Run) -> set:
        """The keys the bug is about on ``run``, with those its state points
        at (a stuck task's :func:`wait_subjects`): the closure pass keeps these."""
        return self.keys()

    def rename(self, keys: dict) -> Predicate:
        """This predicate in a log whose keys were renamed by ``keys``."""
        return self

    def outcome(self, run: Run) -> Outcome:
        """What the reproducer asserts at its end."""
        raise NotImplementedError


@dataclass
class StuckPredicate(Predicate):
    """``key`` ends in a non-final state, in the same category of wait, with
    the same evidence of that wait (:func:`wait_evidence`)."""

    key: Any = None
    text: str = "--stuck"

    def observe(self, run: Run) -> Fingerprint:
        if run.exception is not None or self.key is None:
            return None
        ts = run.ws.tasks.get(self.key)
        if ts is None or ts.state in FINAL_STATES:
            return None
        return ("stuck", self.key, ts.state, category(run.ws, ts), wait_evidence(run, ts))

    def keys(self) -> set:
        return {self.key}

    def subjects(self, run: Run) -> set:
        ts = run.ws.tasks.get(self.key)
        return {self.key} | (set() if ts is None else wait_subjects(run.ws, ts))

    def rename(self, keys: dict) -> Predicate:
        return dataclasses.replace(self, key=keys.get(self.key, self.key))

    def outcome(self, run: Run) -> Outcome:
        ts = run.ws.tasks[self.key]
        # a peer marked in flight without a GatherDep to it unanswered
        stale = tuple(sorted(w for w in run.ws.in_flight_workers if not run.open.gathers.get(w)))
        return Stuck(self.key, ts.state, explain(run.ws, ts, run.tracker or Tracker()).reason, stale)


def _asked(run: Run, peer: str, key: Any) -> bool:
    """Is a ``GatherDep`` for ``key`` to ``peer`` still unanswered in the run?"""
    return any(key in tag[1] for tag in run.open.gathers.get(peer, ()))


def wait_evidence(run: Run, ts: wsm.TaskState) -> tuple:
    """What keeps ``ts`` where it is, named by role rather than by peer or
    key (so renaming keeps it): whether the worker runs; for a task that
    needs data, each holder's role (the peer it comes from, busy, marked in
    flight, with this key, with an unanswered ``GatherDep`` for it: a mark
    without a request is stale bookkeeping, a request is an ordinary wait);
    for a waiting task, its dependencies' states other than memory; for a
    constrained task, the resources short; for an executing one, whether an
    ``Execute`` for it is unanswered."""
    ws = run.ws
    state = ts.previous if ts.state in ("cancelled", "resumed") else ts.state
    evidence: list = [ws.running]
    if state in ("fetch", "flight", "missing"):
        peers = set(ts.who_has)
        if ts.coming_from:
            peers.add(ts.coming_from)
        evidence.append(tuple(sorted({
            (w == ts.coming_from, w in ws.busy_workers, w in ws.in_flight_workers,
             ts.key in ws.in_flight_workers.get(w, ()), _asked(run, w, ts.key))
            for w in peers
        })))
    elif state == "waiting":
        evidence.append(tuple(sorted({d.state for d in ts.dependencies} - {"memory"})))
    elif state == "constrained":
        need = ts.resource_restrictions or {}
        evidence.append(tuple(sorted(str(r) for r, n in need.items() if ws.available_resources.get(r, 0) < n)))
    elif state in ("executing", "long-running"):
        evidence.append(ts.key in run.open.executing)
    return tuple(evidence)


def wait_subjects(ws: wsm.WorkerState, ts: wsm.TaskState) -> set:
    """The other tasks ``ts``'s wait is about: those holding the threads it
    needs, those in flight from its holders, its dependencies not in memory."""
    state = ts.previous if ts.state in ("cancelled", "resumed") else ts.state
    if state in ("ready", "constrained"):
        return {t.key for t in ws.executing}
    if state in ("fetch", "flight", "missing"):
        peers = set(ts.who_has) | ({ts.coming_from} if ts.coming_from else set())
        return {k for w in peers for k in ws.in_flight_workers.get(w, ())}
    if state == "waiting":
        return {d.key for d in ts.dependencies if d.state != "memory"}
    return set()


@dataclass
class StatePredicate(Predicate):
    key: Any = None
    state: str = ""
    text: str = "--state"

    def observe(self, run: Run) -> Fingerprint:
        if run.exception is not None:
            return None
        ts = run.ws.tasks.get(self.key)
        return ("state", self.key, self.state) if ts is not None and ts.state == self.state else None

    def keys(self) -> set:
        return {self.key}

    def rename(self, keys: dict) -> Predicate:
        return dataclasses.replace(self, key=keys.get(self.key, self.key))

    def outcome(self, run: Run) -> Outcome:
        return InState(self.key, self.state)


#: what varies between two raises of the same failure in its message:
#: addresses, quoted names and keys, numbers
_MESSAGE_VALUES = re.compile(
    r"""\w+://[^\s'",)\]}]+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?"""
)


def message_shape(e: BaseException) -> str:
    """The first line of ``e``'s message with its values blanked: the same
    for the same failure about other keys, peers or sizes."""
    lines = str(e).strip().splitlines()
    return _MESSAGE_VALUES.sub("…", lines[0][:500]) if lines else ""


def exception_fingerprint(e: BaseException) -> tuple:
    """The same failure, whatever the run: the exception's class, the file,
    line and function it was raised in and the shape of its message; dask's
    transition errors also by key and states."""
    file, line, function, _ = raised_at(e)
    where = (type(e).__name__, file, line, function, message_shape(e))
    if isinstance(e, wsm.InvalidTransition):  # and TransitionCounterMaxExceeded
        return (*where, e.key, e.start, e.finish)
    if isinstance(e, wsm.InvalidTaskState):
        return (*where, e.key, e.state)
    return where


@dataclass
class RaisesPredicate(Predicate):
    """Replaying raises the same failure (:func:`exception_fingerprint`);
    ``name`` narrows it to one exception class."""

    name: Optional[str] = None
    text: str = "--raises"
    first_hit: bool = True

    def observe(self, run: Run) -> Fingerprint:
        e = run.exception
        if e is None or (self.name is not None and type(e).__name__ != self.name):
            return None
        return ("raises", *exception_fingerprint(e))

    def outcome(self, run: Run) -> Outcome:
        e = run.exception
        assert e is not None
        fixed = _asked_once(run)
        if isinstance(e, wsm.InvalidTransition):
            return Raises(type(e).__name__, key=e.key, start=e.start, finish=e.finish, handled_when_fixed=fixed)
        if isinstance(e, wsm.InvalidTaskState):
            return Raises(type(e).__name__, key=e.key, start=e.state, handled_when_fixed=fixed)
        return Raises(type(e).__name__, function=raised_at(e)[2], handled_when_fixed=fixed)


def _asked_once(run: Run) -> bool:
    """Is the last stimulus of ``run`` one a correct worker receives too: not
    a reply, or the reply to a request no other instruction of the run
    repeats (a duplicated ``Execute`` or ``GatherDep`` is a bug of its own,
    and its reply does not happen once that is fixed)?"""
    i = run.stopped
    s = run.fed[i]
    if not isinstance(s, REPLIES):
        return True
    if run.parent[i] is None:
        return False  # a reply about nothing

    def about(x: wsm.Instruction) -> bool:
        if isinstance(s, wsm.GatherDepDoneEvent):
            return isinstance(x, wsm.GatherDep) and x.worker == s.worker
        if isinstance(s, wsm.RetryBusyWorkerEvent):
            return isinstance(x, wsm.RetryBusyWorkerLater) and x.worker == s.worker
        return isinstance(x, wsm.Execute) and x.key == s.key

    asked = [x for x in run.instructions[run.parent[i]] if about(x)]
    keys = set().union(*(_request_keys(x) for x in asked)) if asked else set()
    same = [x for insts in run.instructions for x in insts if about(x) and _request_keys(x) & keys]
    return len(asked) == 1 and len(same) == 1


@dataclass
class InvalidPredicate(Predicate):
    """``WorkerState.validate_state()`` fails at the same ``assert``."""

    text: str = "--invalid"
    first_hit: bool = True
    #: keys the first break was about (from the assertion's story)
    about: frozenset = frozenset()

    def observe(self, run: Run) -> Fingerprint:
        e = run.exception
        if e is None:
            try:
                run.ws.validate_state()
                return None
            except Exception as broken:  # whatever validation raises, the state is broken
                e = failed_assert(broken) or broken
        else:
            # with validate=True the state machine checks tasks as it goes
            e = failed_assert(e)
            if e is None:
                return None  # another failure, not a broken invariant
        file, line, _, source = raised_at(e)
        return ("invalid", type(e).__name__, file, line, source)

    def keys(self) -> set:
        return set(self.about)

    def rename(self, keys: dict) -> Predicate:
        return dataclasses.replace(self, about=frozenset(keys.get(k, k) for k in self.about))

    def outcome(self, run: Run) -> Outcome:
        fp = self.observe(run)
        assert fp is not None
        return Invalid(fp[2], fp[3], fp[4])


@dataclass
class ExprPredicate(Predicate):
    """A Python expression over the final ``WorkerState``, named ``ws``.

    Only the user's own command line is evaluated, never anything from a log.
    """

    expr: str = ""
    text: str = "--expr"

    def __post_init__(self) -> None:
        try:
            self._code = compile(self.expr, "<--expr>", "eval")
        except SyntaxError as e:
            raise BadInput(f"--expr: not a Python expression: {e.msg}: {self.expr!r}") from None

    def value(self, ws: wsm.WorkerState) -> Any:
        # ws in the globals: a comprehension's own scope sees it there
        return eval(self._code, {"__builtins__": builtins, "ws": ws})  # the user's own text

    def observe(self, run: Run) -> Fingerprint:
        if run.exception is not None:
            return None
        try:
            return ("expr", True) if self.value(run.ws) else None
        except Exception:  # on a candidate, an expression that fails does not hold
            return None

    def outcome(self, run: Run) -> Outcome:
        return Expr(self.expr)


def predicate_record(p: Predicate) -> dict:
    """``p`` as a shrunk log's header keeps it (``schemas.records.ShrunkBy``),
    and as the hash check's interpreters receive it: the one serialisation."""
    if isinstance(p, StuckPredicate):
        return {"predicate": "stuck", "text": p.text, "key": encode_key(p.key)}
    if isinstance(p, StatePredicate):
        return {"predicate": "state", "text": p.text, "key": encode_key(p.key), "state": p.state}
    if isinstance(p, RaisesPredicate):
        return {"predicate": "raises", "text": p.text, "name": p.name}
    if isinstance(p, InvalidPredicate):
        return {"predicate": "invalid", "text": p.text}
    if isinstance(p, ExprPredicate):
        return {"predicate": "expr", "text": p.text, "expr": p.expr}
    raise TypeError(f"no record for {type(p).__name__}")


def predicate_from_record(rec: dict, *, expr: Optional[str] = None) -> Predicate:
    """The predicate a shrunk log's header keeps. An ``--expr`` is never
    evaluated from a log: ``expr`` is the user's own, from the command line."""
    kind, text = rec["predicate"], rec["text"]
    if kind == "stuck":
        return StuckPredicate(key=decode_key(rec["key"]), text=text)
    if kind == "state":
        return StatePredicate(key=decode_key(rec["key"]), state=rec["state"], text=text)
    if kind == "raises":
        return RaisesPredicate(name=rec.get("name"), text=text)
    if kind == "invalid":
        return InvalidPredicate(text=text)
    if expr is None:
        raise BadInput(f"the log was shrunk with {text!r}: an expression is never evaluated "
                       "from a log; give it on the command line")
    return ExprPredicate(expr=expr, text=f"--expr {expr}")


# --- the shrinker ---------------------------------------------------------------


@dataclass
class Shrunk:
    """The result of a shrink."""

    #: the shrunk stimuli, renamed and simplified
    stimuli: list[Stimulus]
    #: the construction inputs of the reproducer's ``WorkerState``
    inputs: dict
    #: the header of ``log``: the original's, with the worker renamed
    header: dict
    #: what the reproducer asserts at its end
    outcome: Outcome
    #: the shrunk log's records (header, steps, end), ready to be written
    records: list[dict]
    original_events: int
    passes: int
    replays: int
    seconds: float
    #: the fingerprint the shrunk log shows (the original's, renamed)
    fingerprint: Fingerprint
    narrative: Narrative
    dask_style: bool = False
    #: what fresh interpreters with stock hashing and random seeds saw
    #: replaying ``stimuli`` (empty: not checked)
    seen: list[Seen] = dataclasses.field(default_factory=list)
    _source: Optional[str] = dataclasses.field(default=None, repr=False)

    @property
    def test_source(self) -> str:
        """The reproducer, as pytest source: written (and checked) on first use,
        so a shrunk log alone needs neither pytest nor the checks."""
        if self._source is None:
            self._source = pytest_source(self.inputs, self.stimuli, self.outcome, self.narrative,
                                         dask_style=self.dask_style,
                                         variants=[x.instructions for x in self.seen])
        return self._source


class Shrinker:
    """Shrinks a list of stimuli while the predicate shows the same fingerprint.

    The contract every pass keeps: it proposes candidates, and the current
    list (or the worker's construction inputs) is replaced only by a
    candidate that passes the one gate, :meth:`shows`: its replay from the
    empty state shows ``target``, the original's fingerprint (under the
    renaming made so far), it holds no reply whose request was deleted
    (unless the original log had that unsolicited reply), and, once hashing
    proved to matter, it shows the target under several hash orders too. So
    at every moment the current list reproduces the bug, each accepted change
    makes it shorter or simpler, and the passes run until none of them
    changes anything: the result is a fixed point, in which removing any
    single stimulus loses the bug (1-minimal).

    The passes, in order: cut after the first step showing the bug (before
    the shrinker starts; not for ``--stuck`` without a key, whose task is
    chosen at the end of the log); keep the closure of the bug's keys and
    of what its wait is about, else delete the longest prefix that can go
    (galloping from the end); then, to a fixed point, delete runs of stimuli, delete single stimuli, simplify
    inside events (drop a dependency, a key, a holder, a resource
    restriction) and reset the construction inputs to ``WorkerState()``'s
    and dask's defaults; then rename keys, peers and stimulus ids and reset
    fields (annotations, texts, nbytes, timings, run ids, priorities); then
    the deleting and in-event passes once more, to a fixed point.

    Stimuli that belong together are removed together: a deletion (or a
    dependency dropped) is repaired in the replay that checks it. A reply it
    leaves answering no request (``Execute*Event``, ``RescheduleEvent``,
    ``SecedeEvent``, ``GatherDep*Event``, ``RetryBusyWorkerEvent``) waits
    until its request is issued, so that it stays when another call asks in
    its place (one thread freed by a deleted task runs the next one), and
    goes if none does; a task told this worker alone holds a dependency it
    does not know any more loses that dependency. What the original itself
    had of these is kept as recorded.
    """

    def __init__(self, header: dict, stimuli: list[Stimulus], predicate: Predicate,
                 target: Fingerprint, *, progress: Callable[[str], None] | None = None):
        self.header = header
        self.current = list(stimuli)
        self.predicate = predicate
        self.target = target
        self.replays = 0
        self.passes = 0
        self.progress = progress
        #: recorded time of each stimulus, by ``id()`` of the stimuli in ``current``
        self.handled: dict[int, float] = {}
        #: the stores into the worker's data that raised while a stimulus was
        #: handled, by ``id()``, as the log recorded them for its call
        self.store_failed: dict[int, list] = {}
        #: accepted changes so far: a pass that leaves it alone changed nothing
        self.changes = 0
        #: hash salts every candidate must also show the bug under
        #: (:func:`~replay.hashcheck.salted`); empty until hashing proved to matter
        self.salts: tuple[int, ...] = ()
        #: ``id()`` of the stimuli in ``current`` kept as recorded: replies that
        #: answer no request, as they did in the original log (the only ones a
        #: candidate may hold), and tasks told of a dependency lost there too
        self.unsolicited: set[int] = set()
        #: what the original's replay told of ``current`` as given: each
        #: stimulus's parent (:attr:`Run.parent`) and the predicate's
        #: :meth:`~Predicate.subjects` (None: the closure pass replays to learn them)
        self.known: Optional[tuple[list, set]] = None
        #: original key -> current name, original peer -> current address
        self.keys: dict = {}
        self.peers: dict = {}

    # --- candidates -----------------------------------------------------

    def run(self, stimuli: Sequence[Stimulus], header: dict | None = None) -> Run:
        self.replays += 1
        return replay_stimuli(header or self.header, stimuli, store_failed=self.store_failed)

    def shows(self, stimuli: Sequence[Stimulus], *, header: dict | None = None,
              predicate: Predicate | None = None, target: Fingerprint = None,
              origin: Sequence[Stimulus] | None = None) -> bool:
        """The one gate: does ``stimuli`` show the target, with no reply whose
        request is gone, and (once hashing proved to matter) under every salt?
        ``origin[i]`` is the stimulus of the current list that ``stimuli[i]``
        rewrites (default: ``stimuli`` are current ones)."""
        run = self.run(stimuli, header)
        origin = stimuli if origin is None else origin
        if any(id(origin[i]) not in self.unsolicited for i in run.unsolicited):
            return False
        return self.holds(run, stimuli, header, predicate, target)

    def holds(self, run: Run, stimuli: Sequence[Stimulus], header: dict | None = None,
              predicate: Predicate | None = None, target: Fingerprint = None) -> bool:
        """Does ``run`` (of ``stimuli``) show the target, under every salt too?"""
        p = predicate or self.predicate
        want = target if target is not None else self.target
        if p.observe(run) != want:
            return False
        for salt in self.salts:
            with salted(salt):
                if p.observe(self.run(stimuli, header)) != want:
                    return False
        return True

    def deleted(self, drop: Iterable[int]) -> list[Stimulus] | None:
        """The current list without ``drop``, :meth:`repaired`, if it passes the gate."""
        gone = set(drop)
        candidate = [x for j, x in enumerate(self.current) if j not in gone]
        if len(candidate) >= len(self.current):
            return None
        return self.repaired(candidate, shorter=True)

    def repaired(self, candidate: list[Stimulus], *, shorter: bool = False) -> list[Stimulus] | None:
        """``candidate`` without the replies that then answer nothing (an
        ``Execute`` or ``GatherDep`` whose call went, or that a change moved to
        another call), the others coming once asked for, each transfer reply
        carrying the size its ``GatherDep`` now asks for, each task without a
        dependency only this worker held and no longer knows (one replay
        repairs it as it goes, :func:`replay_stimuli`): returned if it passes
        the gate (and, with ``shorter``, is shorter than the current list), else None."""
        self.replays += 1
        run = replay_stimuli(self.header, candidate, repair=self.unsolicited, store_failed=self.store_failed)
        # a run stops at a crash: what it did not reach stays as it was
        repaired = run.fed + (run.deferred + candidate[run.consumed:] if run.consumed < len(candidate) else [])
        new = self.inherit(run.replaced)
        if (shorter and len(repaired) >= len(self.current)) or not self.holds(run, repaired):
            self.forget(new)
            return None
        return repaired

    def inherit(self, pairs: Iterable[tuple[Stimulus, Stimulus]], keys: dict | None = None) -> list[int]:
        """Give each new stimulus of ``pairs`` (old, new) what its old one
        carries outside itself: its recorded time, being kept as recorded,
        its store failures (keys renamed by ``keys``). Returns the new ``id()``s,
        for :meth:`forget` when the candidate is refused."""
        out = []
        for old, new in pairs:
            if old is new:
                continue
            out.append(id(new))
            self.handled[id(new)] = self.handled.get(id(old), 0.0)
            if id(old) in self.unsolicited:
                self.unsolicited.add(id(new))
            failed = self.store_failed.get(id(old))
            if failed is not None:
                self.store_failed[id(new)] = failed if keys is None else [
                    (keys.get(k, k), text, tb) for k, text, tb in failed]
        return out

    def forget(self, ids: Iterable[int]) -> None:
        """Drop what :meth:`inherit` gave stimuli that go (their ids are reused)."""
        for i in ids:
            self.handled.pop(i, None)
            self.unsolicited.discard(i)
            self.store_failed.pop(i, None)

    def accept(self, candidate: list[Stimulus] | None) -> bool:
        """Make ``candidate`` (from :meth:`deleted`) current, if there is one."""
        if candidate is None:
            return False
        self.current = candidate
        self.changes += 1
        return True

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    # --- the passes -----------------------------------------------------

    def shrink(self) -> None:
        """Run the passes to a fixed point."""
        self.keep_closure()
        self.delete_prefix()
        self.reduce()
        self.simplify()
        self.reduce()

    def reduce(self) -> None:
        """Delete and simplify inside events until nothing changes."""
        changed = True
        while changed:
            self.passes += 1
            before = self.changes
            self.delete_chunks()
            self.delete_single()
            self.shrink_events()
            self.default_inputs()
            changed = self.changes != before
            if self.progress is not None:
                self.progress(f"pass {self.passes}: {len(self.current)} stimuli, {self.replays} replays")

    def shrink_events(self) -> None:
        """Each event with one part fewer (:func:`smaller_events`), kept when
        the bug still shows."""
        i = 0
        while i < len(self.current):
            for smaller in smaller_events(self.current[i]):
                if self._try_replace(i, smaller):
                    break  # the event changed: its parts are enumerated afresh
            else:
                i += 1

    def default_inputs(self) -> None:
        """The worker's construction inputs reset to what ``WorkerState()``
        and dask's configuration give, all at once or one at a time."""
        state = self.header["state"]
        defaults = {k: v for k, v in _default_state().items() if k in state and state[k] != v}
        if not defaults:
            return
        for change in [defaults, *({k: v} for k, v in defaults.items())] if len(defaults) > 1 else [defaults]:
            header = {**self.header, "state": {**self.header["state"], **change}}
            if header["state"] != self.header["state"] and self.shows(self.current, header=header):
                self.header = header
                self.changes += 1
                if change is defaults:
                    return

    def causes(self, stimuli: Sequence[Stimulus]) -> list[int | None]:
        """For each stimulus, the one whose call issued what it completes."""
        parent = self.run(stimuli).parent
        return parent + [None] * (len(stimuli) - len(parent))

    def keep_closure(self) -> None:
        """Keep only the stimuli about the bug's keys and what its wait waits
        on (:func:`wait_subjects`), their dependencies and their dependents,
        and what completes them; drop the rest in one try."""
        if not self.predicate.keys():
            return
        if self.known is not None:
            parent, keys = self.known
        else:
            run = self.run(self.current)
            parent, keys = run.parent, self.predicate.subjects(run)
        deps: dict = defaultdict(set)
        for s in self.current:
            if isinstance(s, wsm.ComputeTaskEvent):
                deps[s.key].update(s.who_has)
        dependents: dict = defaultdict(set)
        for k, ds in deps.items():
            for d in ds:
                dependents[d].add(k)
        parent = parent + [None] * (len(self.current) - len(parent))
        keyless = {i for i, x in enumerate(self.current) if not stimulus_keys(x) and parent[i] is None}
        # the keys' neighbours first: a stuck task's story rarely needs its
        # whole ancestry, and in a long run that ancestry is most of the log
        for closure in (_neighbours(keys, deps, dependents, 1), _neighbours(keys, deps, dependents, None)):
            keep = {i for i, x in enumerate(self.current) if stimulus_keys(x) & closure}
            # what completes a kept stimulus stays with it
            changed = True
            while changed:
                changed = False
                for i, p in enumerate(parent):
                    if p in keep and i not in keep and not stimulus_keys(self.current[i]):
                        keep.add(i)
                        changed = True
            for extra in (set(), keyless):
                chosen = keep | extra
                if len(chosen) < len(self.current) and self.accept(
                    self.deleted(i for i in range(len(self.current)) if i not in chosen)
                ):
                    self._say(f"closure: {len(self.current)} stimuli")
                    return
        self._say("closure: refused")

    def delete_prefix(self) -> None:
        """Delete the longest run of stimuli from the start that can go,
        galloping: keep the last 16, 32, 64… stimuli until the bug shows,
        then bisect. The bug is at the end of the list (cut after its first
        hit), so the replays cost what its history needs, not the log's length."""
        n = len(self.current)
        keep, best = 16, None
        while keep < n:
            best = self.deleted(range(n - keep))
            if best is not None:
                break
            keep *= 2
        if best is None:
            return
        lo, hi = keep // 2 if keep > 16 else 0, keep  # lo: tried (or too few), hi: works
        while hi - lo > 1:
            mid = (lo + hi) // 2
            candidate = self.deleted(range(n - mid))
            if candidate is not None:
                hi, best = mid, candidate
            else:
                lo = mid
        self.accept(best)
        self._say(f"prefix: {len(self.current)} stimuli")

    def delete_chunks(self) -> None:
        """Delete runs of stimuli (with the replies left answering nothing),
        growing the run while deletions succeed: k neighbours that can all go
        cost O(log k) replays (adaptive deletion)."""
        i = len(self.current) - 1
        while i >= 0:
            found: dict[int, list[Stimulus] | None] = {}

            def works(k: int) -> bool:
                if k not in found:
                    found[k] = self.deleted(range(i - k + 1, i + 1)) if i - k + 1 >= 0 else None
                return found[k] is not None

            if not works(1):
                i -= 1
                continue
            # 1 works: find the largest k that works by doubling, then bisecting
            lo, hi = 1, 2
            while works(hi):
                lo, hi = hi, hi * 2
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if works(mid):
                    lo = mid
                else:
                    hi = mid
            self.accept(found[lo])
            i = min(i - lo, len(self.current) - 1)

    def delete_single(self) -> None:
        """Try deleting each stimulus on its own (with the replies it leaves
        answering nothing)."""
        i = len(self.current) - 1
        while i >= 0:
            self.accept(self.deleted([i]))
            i = min(i - 1, len(self.current) - 1)

    # --- simplification -------------------------------------------------

    def simplify(self) -> None:
        """Make what remains read like a hand-written test, one kind of change
        at a time, each kept only if the bug still shows."""
        self.rename_keys()
        self.rename_peers()
        self.rename_stimulus_ids()
        for fn in (_no_annotations, _no_span, _no_restrictions, _short_texts, _default_nbytes,
                   _default_result_nbytes, _default_timings):
            self.try_map(fn)
        self.small_run_ids()
        self.match_total_nbytes()
        if not self.try_map(_no_priorities):
            self.rank_priorities()

    def small_run_ids(self) -> None:
        """Run ids 1, 2, 3… in order of first use (a task's events share one)."""
        ids: dict = {}
        for x in self.current:
            if hasattr(x, "run_id") and x.run_id not in ids:
                ids[x.run_id] = len(ids) + 1
        self.try_map(lambda x: _replace(x, run_id=ids[x.run_id]) if hasattr(x, "run_id") else x)

    def match_total_nbytes(self) -> None:
        """Each transfer's outcome carries the size its ``GatherDep`` asked for
        (the recorded one may predate simplified ``nbytes``)."""
        parent = self.causes(self.current)
        run = self.run(self.current)
        sizes: dict[int, list[int]] = defaultdict(list)
        for i, insts in enumerate(run.instructions):
            for inst in insts:
                if isinstance(inst, wsm.GatherDep):
                    sizes[i].append((inst.worker, inst.total_nbytes))
        candidate = list(self.current)
        for i, x in enumerate(candidate):
            p = parent[i]
            if isinstance(x, wsm.GatherDepDoneEvent) and p is not None:
                asked = [n for w, n in sizes[p] if w == x.worker]
                if len(asked) == 1 and asked[0] != x.total_nbytes:
                    candidate[i] = _replace(x, total_nbytes=asked[0])
        if candidate != self.current:
            self.attempt(candidate)

    def rank_priorities(self) -> None:
        """Priorities as ``(0,)``, ``(1,)``…: the ready queue's order, no more."""
        ranks = {p: (i,) for i, p in enumerate(sorted({
            s.priority for s in self.current if isinstance(s, wsm.ComputeTaskEvent)
        }))}
        self.try_map(lambda s: _replace(s, priority=ranks[s.priority])
                     if isinstance(s, wsm.ComputeTaskEvent) else s)

    def try_map(self, fn: Callable[[Stimulus], Stimulus], keys: dict | None = None, **shown: Any) -> bool:
        candidate = [fn(s) for s in self.current]
        if candidate == self.current:
            return False
        return self.attempt(candidate, keys, **shown)

    def attempt(self, candidate: list[Stimulus], keys: dict | None = None, **shown: Any) -> bool:
        """Make ``candidate``, the current list changed stimulus by stimulus,
        current if it passes the gate; each new stimulus inherits what the one
        it replaces carries (:meth:`inherit`)."""
        new = self.inherit(zip(self.current, candidate), keys)
        if not self.shows(candidate, origin=self.current, **shown):
            self.forget(new)
            return False
        self.current = candidate
        self.changes += 1
        return True

    def rename_keys(self) -> None:
        """``x``, ``y``, ``z``…, tuple keys as short tuples, in order of first use."""
        order: list = []
        seen: set = set()
        for s in self.current:
            for k in stimulus_keys_ordered(s):
                if k not in seen:
                    seen.add(k)
                    order.append(k)
        names = _short_names()
        prefixes: dict = {}
        mapping: dict = {}
        counters: dict = defaultdict(itertools.count)
        for k in order:
            if isinstance(k, tuple) and k:
                head = k[0] if isinstance(k[0], str) else None
                if head not in prefixes:
                    prefixes[head] = next(names)
                rest = tuple(next(counters[head]) if i == 0 else v for i, v in enumerate(k[1:2]))
                mapping[k] = (prefixes[head], *rest, *k[2:])
            else:
                mapping[k] = next(names)
        if len(set(mapping.values())) != len(mapping) or all(k == v for k, v in mapping.items()):
            return
        predicate = self.predicate.rename(mapping)
        target = _rename_fingerprint(self.target, mapping)
        if self.try_map(lambda s: map_stimulus(s, key=mapping.get), mapping, predicate=predicate, target=target):
            self.predicate, self.target = predicate, target
            self.keys = mapping

    def rename_peers(self) -> None:
        """The worker ``127.0.0.1:1``, peers ``127.0.0.1:2``, ``127.0.0.1:3``…;
        peers on other hosts than the worker's get hosts of their own, so the
        state machine's preference for same-host peers sees the same thing."""
        me = self.header["worker"]
        peers: list[str] = []
        for s in self.current:
            for w in stimulus_peers(s):
                if w not in peers and w != me:
                    peers.append(w)
        host = _host(me)
        hosts: dict = {host: "127.0.0.1"}
        mapping = {me: "127.0.0.1:1"}
        port = itertools.count(2)
        for w in peers:
            h = _host(w)
            if h not in hosts:
                hosts[h] = f"127.0.0.{len(hosts) + 1}"
            mapping[w] = f"{hosts[h]}:{next(port)}"
        header = {**self.header, "worker": mapping[me]}
        candidate = [map_stimulus(s, peer=mapping.get) for s in self.current]
        if self.attempt(candidate, header=header):
            self.header = header
            self.peers = mapping

    def rename_stimulus_ids(self) -> None:
        ids: dict = {}
        for s in self.current:
            if type(s) is not Resources and s.stimulus_id not in ids:
                ids[s.stimulus_id] = f"s{len(ids) + 1}"
        self.try_map(lambda s: map_stimulus(s, sid=ids.get))

    def _try_replace(self, i: int, s: Stimulus) -> bool:
        """``current[i]`` replaced by ``s``, :meth:`repaired` (a dependency
        dropped takes its transfer's reply along)."""
        new = self.inherit([(self.current[i], s)])
        if self.accept(self.repaired(self.current[:i] + [s] + self.current[i + 1:])):
            return True
        self.forget(new)
        return False


def _neighbours(keys: set, deps: dict, dependents: dict, depth: int | None) -> set:
    """``keys`` with their dependencies and dependents up to ``depth`` links
    away (None: all the way)."""
    out = set(keys)
    for graph in (deps, dependents):
        frontier = set(keys)
        level = 0
        while frontier and (depth is None or level < depth):
            level += 1
            frontier = {n for k in frontier for n in graph.get(k, ()) if n not in out}
            out |= frontier
    return out


#: where a fingerprint names a key, by its first item
_KEY_AT = {"stuck": 1, "state": 1, "raises": 6}


def _rename_fingerprint(fp: Fingerprint, mapping: dict) -> Fingerprint:
    """``fp`` with the key it names (if any) renamed; nothing else is a key,
    even where it looks like one (a line number, a state)."""
    if not isinstance(fp, tuple) or not fp or fp[0] not in _KEY_AT:
        return fp
    i = _KEY_AT[fp[0]]
    if len(fp) <= i or not _hashable(fp[i]):
        return fp
    return (*fp[:i], mapping.get(fp[i], fp[i]), *fp[i + 1:])


def _hashable(v: Any) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


def _short_names() -> Iterable[str]:
    letters = "xyzabcdefghijklmnopqrstuvw"
    yield from letters
    for n in itertools.count(1):
        for c in letters:
            yield f"{c}{n}"


def _host(address: str) -> str:
    if address.startswith("inproc://"):
        return address[len("inproc://"):].split("/", 1)[0]
    return get_address_host(address)


# --- what a stimulus names, and renaming it ----------------------------------------


def stimulus_keys_ordered(s: Stimulus) -> list:
    """The keys a stimulus names, in the order they appear."""
    if type(s) is Resources:
        return []
    # dependencies before the task that needs them: x before y, as in dask's tests
    out: list = []
    for f in ("who_has", "nbytes", "data"):
        value = getattr(s, f, None)
        if isinstance(value, dict):
            out.extend(value)
    key = getattr(s, "key", None)
    if key is not None:
        out.append(key)
    out.extend(getattr(s, "keys", None) or ())
    return out


def stimulus_keys(s: Stimulus) -> set:
    return set(stimulus_keys_ordered(s))


def stimulus_peers(s: Stimulus) -> list[str]:
    if type(s) is Resources:
        return []
    out = []
    w = getattr(s, "worker", None)
    if isinstance(w, str):
        out.append(w)
    for holders in (getattr(s, "who_has", None) or {}).values():
        out.extend(holders)
    return out


def _same(x: Any) -> Any:
    return None  # map nothing


def map_stimulus(
    s: Stimulus,
    *,
    key: Callable[[Any], Any] = _same,
    peer: Callable[[Any], Any] = _same,
    sid: Callable[[Any], Any] = _same,
) -> Stimulus:
    """``s`` with its keys, peer addresses and stimulus id mapped (a mapping
    returning None leaves the value as it is); containers keep their type."""
    if type(s) is Resources:
        return s
    k = lambda v: _or(key(v), v)  # noqa: E731
    p = lambda v: _or(peer(v), v)  # noqa: E731
    changes: dict[str, Any] = {"stimulus_id": _or(sid(s.stimulus_id), s.stimulus_id)}
    names = {f.name for f in dataclasses.fields(s)}
    if "key" in names:
        changes["key"] = k(s.key)
    if "worker" in names:
        changes["worker"] = p(s.worker)
    if "who_has" in names:
        changes["who_has"] = {k(d): type(ws)(p(w) for w in ws) for d, ws in s.who_has.items()}
    for f in ("nbytes", "data"):
        if f in names and isinstance(getattr(s, f), dict):
            changes[f] = {k(d): v for d, v in getattr(s, f).items()}
    if "keys" in names:
        changes["keys"] = type(s.keys)(k(d) for d in s.keys)
    return dataclasses.replace(s, **changes)


def _or(v: Any, default: Any) -> Any:
    return default if v is None else v


def _no_annotations(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ComputeTaskEvent) and s.annotations:
        return _replace(s, annotations={})
    return s


def _no_span(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ComputeTaskEvent) and s.span_id is not None:
        return _replace(s, span_id=None)
    return s


def _no_restrictions(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ComputeTaskEvent) and s.resource_restrictions is None:
        return _replace(s, resource_restrictions={})
    return s


def _short_texts(s: Stimulus) -> Stimulus:
    if isinstance(s, (wsm.ExecuteFailureEvent, wsm.GatherDepFailureEvent)):
        if s.exception_text != "boom" or s.traceback_text:
            from distributed.protocol.serialize import Serialize

            return _replace(s, exception=Serialize(Exception("boom")), traceback=None,
                            exception_text="boom", traceback_text="")
    return s


def _no_priorities(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ComputeTaskEvent) and s.priority != (0,):
        return _replace(s, priority=(0,))
    return s


def _default_nbytes(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ComputeTaskEvent) and s.nbytes != {k: 1 for k in s.who_has}:
        return _replace(s, nbytes={k: 1 for k in s.who_has})
    return s


def _default_result_nbytes(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ExecuteSuccessEvent) and s.nbytes != 1:
        return _replace(s, nbytes=1)  # ExecuteSuccessEvent.dummy's
    return s


def _default_timings(s: Stimulus) -> Stimulus:
    if isinstance(s, wsm.ExecuteSuccessEvent) and (s.start, s.stop) != (0.0, 1.0):
        return _replace(s, start=0.0, stop=1.0)
    return s


_replace = dataclasses.replace


def smaller_events(s: Stimulus) -> Iterable[Stimulus]:
    """``s`` with one part fewer, each way: a dependency (with its nbytes),
    a holder of a key, a key of a keyed event, a data entry, a resource
    restriction."""
    if type(s) is Resources:
        return
    names = {f.name for f in dataclasses.fields(s)}
    if "who_has" in names and isinstance(s.who_has, dict):
        for dep, holders in s.who_has.items():
            rest = {k: v for k, v in s.who_has.items() if k != dep}
            if isinstance(s, wsm.ComputeTaskEvent):
                yield _replace(s, who_has=rest, nbytes={k: v for k, v in s.nbytes.items() if k != dep})
            elif rest:
                yield _replace(s, who_has=rest)
        for dep, holders in s.who_has.items():
            for w in list(holders)[1:] if len(holders) > 1 else ():
                fewer = type(holders)(h for h in holders if h != w)
                yield _replace(s, who_has={**s.who_has, dep: fewer})
    if "keys" in names and len(s.keys) > 1:
        for k in s.keys:
            yield _replace(s, keys=type(s.keys)(x for x in s.keys if x != k))
    if "data" in names and isinstance(s.data, dict) and len(s.data) > 1:
        for k in s.data:
            yield _replace(s, data={x: v for x, v in s.data.items() if x != k})
    if isinstance(s, wsm.ComputeTaskEvent) and s.resource_restrictions:
        for r in s.resource_restrictions:
            yield _replace(s, resource_restrictions={x: v for x, v in s.resource_restrictions.items() if x != r})


def _default_state() -> dict:
    """A header's ``state`` as ``WorkerState()`` and dask's configuration
    build it; the resources and the limits the constructor leaves unbounded."""
    return {
        "nthreads": 1,
        "resources": encode_resources({}),
        "transfer_incoming_count_limit": 9999,
        "validate": True,
        "transition_counter_max": False,
        "transfer_incoming_bytes_limit": encode_float(math.inf),
        "transfer_message_bytes_limit": encode_float(math.inf),
        "default_data_size": parse_bytes(dask.config.get(
            "distributed.scheduler.default-data-size", config=dask.config.merge(*dask.config.defaults))),
        "log_length": dask.config.get(
            "distributed.admin.low-level-log-length", config=dask.config.merge(*dask.config.defaults)),
    }


# --- from a log to a reproducer ------------------------------------------------------


class NotReproduced(Exception):
    """The predicate does not hold on the original log: nothing to shrink."""


class NormalWait(NotReproduced):
    """The log ends in a wait a correct worker is in too: waiting on the
    outside (a transfer not answered yet, a resource held, a pause), not a bug."""


def _refuse_normal_wait(history: WorkerHistory) -> None:
    """Raise :class:`NormalWait` when a continuation of the worker, its
    peers answering, finishes or stays in a wait its surroundings explain."""
    c = continue_worker(history)
    if c.state_machine_stuck:
        return
    lines = [f"not a bug but a normal wait: {c.headline()}"]
    gather = c.gather
    if gather is not None:
        lines.append(_peer_log(history, gather.instruction.worker, gather.instruction.to_gather))
    lines.append("give a predicate (e.g. --stuck KEY) to shrink it anyway")
    raise NormalWait("; ".join(x for x in lines if x))


def _peer_log(history: WorkerHistory, peer: str, keys: Any) -> str:
    """What the log of ``peer``, if the log recorded it, says about its answer."""
    others = {w.address: w for w in history.log.workers if w.address != history.address}
    wlog = others.get(peer)
    if wlog is None:
        return f"the log has no record of {peer}" if others else ""
    mine = history.wlog.last_handled
    if wlog.ended and wlog.last_handled is not None and mine is not None and wlog.last_handled < mine:
        return f"{peer}'s log ends at step {wlog.events}, before this worker's last step: it never answered"
    return f"{peer}'s log goes on to step {wlog.events}; `replay why` compares what it held"


def stimuli_of(history: WorkerHistory, store_failed: dict[int, list] | None = None,
               ) -> tuple[list[Stimulus], list[float]]:
    """Every stimulus of a worker's log in order, one per ``handle_stimulus``
    call (a batch handles its events one after another, exactly so), with
    the time each was handled. ``store_failed``, if given, is filled with
    each event's failed stores (its call's: only a store of those keys
    raises), for :func:`replay_stimuli`."""
    stimuli: list[Stimulus] = []
    handled: list[float] = []
    for call in history.calls():
        if store_failed is not None and call.store_failed:
            store_failed.update((id(e), list(call.store_failed)) for e in call.events)
        for change in call.resources:
            # settings assigned between stimuli are not part of a reproducer:
            # a log whose bug needs them may not shrink (NotReproduced says so)
            stimuli.append(Resources(change[0], change[1]))
            handled.append(call.handled)
        stimuli.extend(call.events)
        handled.extend([call.handled] * len(call.events))
    return stimuli, handled


#: hash salts of the gate once hashing proved to matter
_SALTS = (1, 2, 3, 4)

#: stuck categories in the order ``--stuck`` without a key picks its task:
#: a wait with a cause of its own before one that only waits on another task
_ROOT_FIRST = ("waiting: erred dependency", "flight", "missing", "fetch", "constrained: resources",
               "ready: paused", "constrained", "ready", "executing", "long-running", "cancelled",
               "resumed", "fetch: holders busy", "waiting")


def choose_stuck_key(ws: wsm.WorkerState) -> Any:
    """The stuck task that best explains the others, or None if none is stuck."""
    stuck = [ts for ts in ws.tasks.values() if ts.state not in FINAL_STATES]
    if not stuck:
        return None

    def rank(ts: wsm.TaskState) -> tuple:
        c = category(ws, ts)
        r = next((i for i, p in enumerate(_ROOT_FIRST) if c.startswith(p)), len(_ROOT_FIRST))
        return (r, str(ts.key))

    return min(stuck, key=rank).key


def _first_hit(header: dict, stimuli: Sequence[Stimulus], predicate: Predicate,
               store_failed: dict[int, list]) -> tuple[int, Fingerprint, list[int], tuple[list, set]]:
    """The first stimulus after which the original shows the predicate's
    fingerprint, that fingerprint, the stimuli up to there a candidate keeps
    as they are (replies that answer no request, tasks with a lost
    dependency: :func:`replay_stimuli`'s ``repair``), and what the closure pass needs there (the stimuli's
    parents, the predicate's subjects); for end-of-log predicates, the
    fingerprint is the one at the end of the log."""
    fps: list[Fingerprint] = []
    subjects: dict = {}  # fingerprint -> the predicate's subjects where it first showed

    def each(i: int, run: Run) -> bool:
        fp = predicate.observe(run)
        fps.append(fp)
        if fp is not None and fp not in subjects:
            subjects[fp] = predicate.subjects(run)
        return predicate.first_hit and fp is not None

    run = replay_stimuli(header, stimuli, each=each, store_failed=store_failed)
    if run.exception is not None:
        fp = predicate.observe(run)
        if fp is None:
            held = next((i for i, f in enumerate(fps) if f is not None), None)
            hint = "" if held is None else (
                f"; it held after stimulus {held + 1}: cut the log there with --until"
            )
            raise NotReproduced(
                f"replaying the log raises {type(run.exception).__name__} at stimulus "
                f"{run.stopped + 1} ({_first_line(run.exception)}), which is not what "
                f"{predicate.text} asks for" + hint
            )
        return run.stopped, fp, run.unsolicited + run.lost, (run.parent, predicate.subjects(run))
    target = fps[-1] if fps else None
    if target is None:
        if isinstance(predicate, ExprPredicate):
            try:
                predicate.value(run.ws)
            except Exception as e:  # the user's expression, reported as theirs
                raise BadInput(f"--expr raises {type(e).__name__}: {_first_line(e)}") from None
        raise NotReproduced(f"{predicate.text} does not hold on the original log")
    cut = fps.index(target)
    odd = [i for i in run.unsolicited + run.lost if i <= cut]
    return cut, target, odd, (run.parent[: cut + 1], subjects[target])


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""


def _kept_note(kept_from: int | None) -> str:
    """What a failure to reproduce says of a bounded recording's missing history."""
    if kept_from is None:
        return ""
    return (f" (replayed from the empty state, as a reproducer starts: this bounded recording "
            f"keeps its history from step {kept_from} on, and what its snapshot held is not replayed)")


def shrink(
    log: str | WorkerHistory,
    worker: str | int | None = None,
    predicate: Predicate | None = None,
    *,
    dask_style: bool = False,
    progress: Callable[[str], None] | None = None,
    until: str | int | None = None,
    hash_check: bool = True,
) -> Shrunk:
    """Shrink one worker of ``log`` to a minimal reproducer of ``predicate``.

    ``log`` is a path (``worker`` then chooses the worker, as ``--worker``
    does) or one worker's :class:`~replay.history.WorkerHistory`. Without a
    predicate: ``--stuck``, on the task that best explains the others, if
    the log ends with tasks stuck. ``until`` (a step or a stimulus id, as
    ``--until``) cuts the log there first. With ``hash_check``, the result
    is replayed in fresh interpreters under dask's own hashing and random
    seeds; when the bug does not show in all of them, the log is shrunk
    again with every candidate checked under several hash orders. Raises :class:`NotReproduced` when the
    predicate does not hold on the original log.

    >>> import replay
    >>> from replay.shrinker import InvalidPredicate
    >>> shrunk = replay.shrink("cluster-log.jsonl.gz", 1, InvalidPredicate())
    >>> print(shrunk.test_source)
    """
    start = time.perf_counter()
    if isinstance(log, WorkerHistory):
        history = log
    else:
        from replay.history import open as open_log

        history = open_log(log).worker(worker)
    header = history.header
    kept_from = None if header.get("snapshot") is None else header["snapshot"]["seq"]
    if kept_from is not None:
        # a reproducer starts from WorkerState(): the kept history of a bounded
        # recording is shrunk from the empty state, not from its snapshot
        header = {k: v for k, v in header.items() if k not in ("snapshot", "segment")}
        header["from_empty"] = True
    failed: dict[int, list] = {}
    stimuli, handled = stimuli_of(history, failed)
    if until is not None:
        stimuli, handled = _until(stimuli, handled, history.position(until))
    replays = 0
    if predicate is None or (isinstance(predicate, StuckPredicate) and predicate.key is None):
        end = replay_stimuli(header, stimuli, store_failed=failed)
        replays += 1
        key = None if end.exception is not None else choose_stuck_key(end.ws)
        if key is None:
            raise NotReproduced("no task is stuck at the end of the log; say what to look for "
                                "(--stuck KEY, --state, --raises, --invalid or --expr)" + _kept_note(kept_from))
        if predicate is None and until is None:
            _refuse_normal_wait(history)
        predicate = StuckPredicate(key, text=predicate.text if predicate else "--stuck")
        # the task was chosen at the end: its wait is the end's, and the log is
        # not cut where it first showed (that would take a second replay of
        # the whole log); the deletions drop what follows
        cut, target = len(stimuli) - 1, predicate.observe(end)
        unsolicited, known = end.unsolicited + end.lost, (end.parent, predicate.subjects(end))
    else:
        try:
            cut, target, unsolicited, known = _first_hit(header, stimuli, predicate, failed)
        except NormalWait:
            raise
        except NotReproduced as e:
            raise NotReproduced(f"{e}{_kept_note(kept_from)}") from None
        replays += 1
    if isinstance(predicate, InvalidPredicate):
        run = replay_stimuli(header, stimuli[: cut + 1], store_failed=failed)
        replays += 1
        predicate = dataclasses.replace(predicate, about=frozenset(_invalid_keys(run)))
        known = (known[0], predicate.subjects(run))

    def shrinker(salts: tuple[int, ...] = ()) -> Shrinker:
        s = Shrinker(header, stimuli[: cut + 1], predicate, target, progress=progress)
        s.handled = {id(x): t for x, t in zip(stimuli, handled)}
        s.unsolicited = {id(stimuli[i]) for i in unsolicited}
        s.salts = salts
        s.known = known
        s.store_failed = dict(failed)
        return s

    s = shrinker()
    if progress is not None:
        progress(f"cut after stimulus {cut + 1} of {len(stimuli)}")
    s.shrink()
    seen: list[Seen] = []
    if hash_check:
        seen = _elsewhere(s)
        if not all(x.shows(s.target) for x in seen):
            # the bug shows only under some set orders: shrink again, every
            # candidate checked under several hash orders too
            if progress is not None:
                progress("the shrunk log depends on hashing; shrinking again under several hash orders")
            replays += s.replays
            s = shrinker(_SALTS)
            if not s.shows(s.current):
                raise NotReproduced(f"{predicate.text} holds on the log only in some orders of the state "
                                    "machine's sets (its hashing): no reproducer holds under every hash seed")
            s.shrink()
            seen = _elsewhere(s)
            bad = [x.seed for x in seen if not x.shows(s.target)]
            if bad:
                raise NotReproduced(f"the shrunk log shows {predicate.text} only under some hash seeds "
                                    f"(not with PYTHONHASHSEED={bad[0]} and dask's own TaskState hashing)")
    final = replay_stimuli(s.header, s.current, track=True, store_failed=s.store_failed)
    assert s.predicate.observe(final) == s.target, "the shrunk list must show the bug"
    outcome = s.predicate.outcome(final)
    # the predicate goes with the shrunk log, keys renamed as the log names them
    new_header = {**s.header, "shrunk": predicate_record(s.predicate)}
    inputs = construction_inputs(new_header)
    narrative = Narrative(
        worker=history.address,
        log=os.path.basename(history.log.path),
        original_events=history.events,
        shrunk_events=sum(type(x) is not Resources for x in s.current),
        distributed=str(header.get("distributed")),
        predicate=predicate.text,
    )
    return Shrunk(
        stimuli=s.current,
        inputs=inputs,
        header=new_header,
        outcome=outcome,
        records=log_records(new_header, s.current, [s.handled.get(id(x), 0.0) for x in s.current], final,
                            s.store_failed),
        original_events=history.events,
        passes=s.passes,
        replays=replays + s.replays + 1,
        seconds=time.perf_counter() - start,
        fingerprint=s.target,
        narrative=narrative,
        dask_style=dask_style,
        seen=seen,
    )


def _elsewhere(s: Shrinker) -> list[Seen]:
    """What fresh interpreters with dask's own hashing see replaying ``s``'s list."""
    run = replay_stimuli(s.header, s.current, store_failed=s.store_failed)
    return elsewhere(log_records(s.header, s.current, [0.0] * len(s.current), run, s.store_failed),
                     predicate_record(s.predicate))


def _until(stimuli: list[Stimulus], handled: list[float], step: int) -> tuple[list[Stimulus], list[float]]:
    """The stimuli up to event ``step`` (1-based), with the resource changes before it."""
    if step == 0:
        return [], []
    events = 0
    for i, x in enumerate(stimuli):
        if type(x) is not Resources:
            events += 1
            if events == step:
                return stimuli[: i + 1], handled[: i + 1]
    return stimuli, handled


def _invalid_keys(run: Run) -> set:
    from replay.engine import _key_story

    e = run.exception
    if e is None:
        try:
            run.ws.validate_state()
            return set()
        except Exception as broken:  # whatever validation raises, the state is broken
            e = broken
    key, _ = _key_story(run.ws, e)
    return set() if key is None else {key}


def construction_inputs(header: dict) -> dict:
    """The ``WorkerState`` construction inputs of a header, as Python values."""
    s = header["state"]
    return {
        "address": header["worker"],
        "nthreads": s["nthreads"],
        "resources": decode_resources(s["resources"]),
        "transfer_incoming_count_limit": s["transfer_incoming_count_limit"],
        "validate": s["validate"],
        "transition_counter_max": s["transition_counter_max"],
        "transfer_incoming_bytes_limit": decode_float(s["transfer_incoming_bytes_limit"]),
        "transfer_message_bytes_limit": decode_float(s["transfer_message_bytes_limit"]),
        "default_data_size": s["default_data_size"],
        "log_length": s["log_length"],
    }


def log_records(header: dict, stimuli: Sequence[Stimulus], handled: Sequence[float], run: Run,
                store_failed: dict[int, list] | None = None) -> list[dict]:
    """A log of ``stimuli``: ``header``, one step per event with what its
    replay returned (or raised) and the stores that raised while it was
    handled (``store_failed``, by ``id()``), and an end record."""
    worker = header["worker"]
    out: list[dict] = [header]
    seq = 0
    for i, (s, t) in enumerate(zip(stimuli, handled)):
        if type(s) is Resources:
            out.append({"kind": "resources", "worker": worker, "seq": seq + 1,
                        "total": encode_resources(s.total), "available": encode_resources(s.available)})
            continue
        seq += 1
        rec: dict[str, Any] = {"kind": "step", "worker": worker, "seq": seq, "handled": t,
                               "event": encode_event(s)}
        if run.exception is not None and i == run.stopped:
            rec["error"] = repr(run.exception)
        else:
            rec["instructions"] = [encode_instruction(x) for x in run.instructions[i]]
        failed = store_failed.get(id(s)) if store_failed else None
        if failed:
            rec["store_failed"] = [{"key": encode_key(k), "exception_text": text, "traceback_text": tb}
                                   for k, text, tb in failed]
        out.append(rec)
        if i == run.stopped and run.exception is not None:
            break
    out.append({"kind": "end", "worker": worker, "seq": seq, "time": float(handled[-1]) if handled else 0.0,
                "reason": "shrunk by replay shrink"})
    return out
