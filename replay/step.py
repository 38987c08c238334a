"""``replay step``: move through a worker's steps, forwards and backwards,
stopping at breakpoints.

A :class:`Stepper` answers every position from forked snapshots
(:class:`~replay.seek.Seeker`). Its first pass also writes down, per step,
the little that breakpoints ask about (:class:`Scan`: recorded time, event
class, stimulus id, instruction classes, which key reached which state,
where the state machine raised or an invariant broke), so that continuing
forwards or backwards to a breakpoint is a search of those columns and one
seek to the hit, never a view per step.
"""
from __future__ import annotations

import array
import bisect
import difflib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from distributed import worker_state_machine as wsm

from replay.diagnosis import Tracker, why_view
from replay.errors import BadInput, NotFound
from replay.literal import key_text, sort_key
from replay.stepview import StepView, step_view
from replay.story import no_such_key
from replay.views import FINAL_STATES, StateView, changed_states, departed_note, departure


class Column:
    """An append-only column of ints, in chunks that never change once full:
    a snapshot forked during the first pass shares them instead of keeping a
    copy of a column that a reallocation moved."""

    CHUNK = 1 << 16

    def __init__(self, typecode: str = "q"):
        self.typecode = typecode
        self.chunks: list[array.array] = [array.array(typecode)]
        self.n = 0

    def append(self, v: Any) -> None:
        last = self.chunks[-1]
        if len(last) == self.CHUNK:
            last = array.array(self.typecode)
            self.chunks.append(last)
        last.append(v)
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.chunks[i // self.CHUNK][i % self.CHUNK]

    def bisect_right(self, v: Any) -> int:
        """Where ``v`` goes in an ascending column, after its equals."""
        starts = [c[0] for c in self.chunks if len(c)]
        k = bisect.bisect_right(starts, v) - 1
        if k < 0:
            return 0
        return k * self.CHUNK + bisect.bisect_right(self.chunks[k], v)

    def find(self, v: Any, lo: int, hi: int | None = None) -> int:
        """The first index in ``lo..hi-1`` holding ``v``, or -1 (in C, chunk by chunk)."""
        hi = self.n if hi is None else min(hi, self.n)
        while lo < hi:
            k, o = divmod(lo, self.CHUNK)
            chunk = self.chunks[k]
            end = min(len(chunk), hi - k * self.CHUNK)
            try:
                return k * self.CHUNK + chunk.index(v, o, end)
            except ValueError:
                lo = k * self.CHUNK + end
        return -1

    def rfind(self, v: Any, lo: int, hi: int) -> int:
        """The last index in ``lo..hi-1`` holding ``v``, or -1."""
        hi = min(hi, self.n)
        while hi > lo:
            k = (hi - 1) // self.CHUNK
            chunk = self.chunks[k]
            base = k * self.CHUNK
            o, end = max(lo - base, 0), hi - base
            data = chunk[o:end].tobytes()
            pattern = array.array(self.typecode, [v]).tobytes()
            size = len(pattern)
            at = data.rfind(pattern)
            while at >= 0 and at % size:  # a match across two items
                at = data.rfind(pattern, 0, at + size - 1)
            if at >= 0:
                return base + o + at // size
            hi = base + o
        return -1


class Names:
    """Strings as small ints."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.names: list[Any] = []

    def id(self, name: Any) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i


class Scan:
    """What the first pass saw at each step, in columns indexed by step."""

    def __init__(self, worker: str = "", validate: bool = False) -> None:
        self.worker = worker
        self.validate = validate
        #: per step (index 0 is the empty state): recorded time, event class, stimulus id
        self.handled = Column("d")
        self.handled.append(float("-inf"))
        self.cls = Column("l")
        self.cls.append(-1)
        self.sid = Column("l")
        self.sid.append(-1)
        self.classes = Names()
        self.sids = Names()
        self.instructions = Names()
        #: instruction class id -> the steps that issued one, ascending
        self.issued: dict[int, Column] = {}
        #: per state change: step, key id, state id (a key "reaches" a state
        #: at a step that leaves it there having found it elsewhere)
        self.t_step = Column("l")
        self.t_key = Column("l")
        self.t_state = Column("l")
        self.keys = Names()
        self.states = Names()
        #: steps whose call raised (as recorded), and where validate_state() started failing
        self.raised: list[int] = []
        self.invalid: list[tuple[int, str]] = []
        self._valid = True

    def observe(self, applied: Any, replayer: Any) -> None:
        handled = applied.call.handled
        for s in applied.steps():
            step, ev = s.step, s.event
            self.handled.append(handled)
            self.cls.append(self.classes.id(type(ev).__name__))
            self.sid.append(self.sids.id(ev.stimulus_id))
            for inst in s.instructions:
                i = self.instructions.id(type(inst).__name__)
                col = self.issued.get(i)
                if col is None:
                    col = self.issued[i] = Column("l")
                if not len(col) or col[len(col) - 1] != step:
                    col.append(step)
            for key, state in changed_states(s.log).items():
                self.t_step.append(step)
                self.t_key.append(self.keys.id(key))
                self.t_state.append(self.states.id(state))
        if applied.exception is not None:
            self.raised.append(applied.call.first + (len(applied.ends) if applied.ends is not None else 0))
        if self.validate:
            try:
                replayer.ws.validate_state()
                self._valid = True
            except Exception as e:  # any failure of validate_state is a broken invariant
                if self._valid:
                    self.invalid.append((applied.call.last, f"{type(e).__name__}: {str(e)[:200]}"))
                self._valid = False

    def step_at_time(self, t: Optional[float]) -> int:
        """The last step handled at or before recorded time ``t`` (0 if none)."""
        if t is None:
            return 0
        return max(self.handled.bisect_right(t) - 1, 0)


# --- breakpoints --------------------------------------------------------------

#: how a breakpoint is written (``--break`` and the UI's prompt)
BREAK_SYNTAX = ("state:KEY=STATE (a key reaches a state), stimulus:ID, event:CLASS, "
                "instruction:CLASS, raised (the state machine raised), invalid (with --validate: "
                "an invariant broke)")


@dataclass(frozen=True)
class Breakpoint:
    kind: str
    #: the key (for state), the stimulus id or class name
    what: Any = None
    state: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> Breakpoint:
        from schemas.codec import parse_key

        text = text.strip()
        if text in ("raised", "invalid"):
            return cls(text)
        kind, sep, rest = text.partition(":")
        if not sep or not rest:
            raise BadInput(f"breakpoint {text!r}: expected {BREAK_SYNTAX}")
        if kind == "state":
            key, eq, state = rest.rpartition("=")
            if not eq or not key or not state:
                raise BadInput(f"breakpoint {text!r}: expected state:KEY=STATE, e.g. state:x=flight")
            return cls("state", parse_key(key), state)
        if kind in ("stimulus", "event", "instruction"):
            return cls(kind, rest)
        raise BadInput(f"breakpoint {text!r}: expected {BREAK_SYNTAX}")

    def __str__(self) -> str:
        if self.kind == "state":
            return f"{key_text(self.what)} reaches {self.state}"
        if self.kind == "raised":
            return "the state machine raised"
        if self.kind == "invalid":
            return "an invariant broke"
        return f"{self.kind} {self.what}"

    def check(self, scan: Scan, validate: bool) -> None:
        """Refuse what can never hit, naming what could."""
        if self.kind == "invalid" and not validate:
            raise BadInput("an invalid breakpoint needs --validate")
        if self.kind == "state":
            states = typing.get_args(wsm.TaskStateState)
            if self.state not in states:
                close = difflib.get_close_matches(self.state, states, n=3, cutoff=0.6)
                raise BadInput(f"no task state {self.state!r}; "
                               + (f"closest: {', '.join(close)}" if close else f"the states: {', '.join(states)}"))
            if self.what not in scan.keys.ids:  # never changed state on this worker: could never hit
                raise NotFound(no_such_key({self.what}, set(scan.keys.names), scan.worker))
        if self.kind in ("event", "instruction"):
            base = wsm.StateMachineEvent if self.kind == "event" else wsm.Instruction
            known = {c.__name__ for c in _subclasses(base)}
            if self.what not in known:
                close = difflib.get_close_matches(self.what, sorted(known), n=3)
                raise BadInput(f"no {self.kind} class {self.what!r}" + (f"; closest: {', '.join(close)}" if close else ""))

    def hit(self, scan: Scan, pos: int, forward: bool) -> Optional[int]:
        """The nearest step after (or before) ``pos`` where this breakpoint hits."""
        n = len(scan.handled)
        if self.kind == "stimulus":
            sid = scan.sids.ids.get(self.what)
            return None if sid is None else _found(
                scan.sid.find(sid, pos + 1) if forward else scan.sid.rfind(sid, 1, pos))
        if self.kind == "event":
            cid = scan.classes.ids.get(self.what)
            return None if cid is None else _found(
                scan.cls.find(cid, pos + 1) if forward else scan.cls.rfind(cid, 1, pos))
        if self.kind == "instruction":
            iid = scan.instructions.ids.get(self.what)
            col = scan.issued.get(iid) if iid is not None else None
            if col is None:
                return None
            i = col.bisect_right(pos)
            if forward:
                return col[i] if i < len(col) else None
            i = col.bisect_right(pos - 1) - 1
            return col[i] if i >= 0 else None
        if self.kind in ("raised", "invalid"):
            steps = scan.raised if self.kind == "raised" else [s for s, _ in scan.invalid]
            if forward:
                i = bisect.bisect_right(steps, pos)
                return steps[i] if i < len(steps) else None
            i = bisect.bisect_left(steps, pos) - 1
            return steps[i] if i >= 0 else None
        # state: the key's state changes, by their index in the transition columns
        kid = scan.keys.ids.get(self.what)
        sid = scan.states.ids.get(self.state)
        if kid is None or sid is None:
            return None
        cols = scan.t_step
        if forward:
            i = cols.bisect_right(pos)
            while (i := scan.t_key.find(kid, i)) >= 0:
                if scan.t_state[i] == sid:
                    return cols[i]
                i += 1
            return None
        hi = cols.bisect_right(pos - 1)
        while (i := scan.t_key.rfind(kid, 0, hi)) >= 0:
            if scan.t_state[i] == sid:
                return cols[i]
            hi = i
        del n
        return None


def _found(i: int) -> Optional[int]:
    return None if i < 0 else i


def _subclasses(cls: type) -> Iterable[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# --- the stepper ------------------------------------------------------------------


def _why(replayer: Any, applied: Any, tracker: Tracker) -> Any:
    return why_view(replayer, tracker)


def _state(replayer: Any) -> StateView:
    return StateView.of(replayer)


def _unfinished(replayer: Any) -> int:
    return sum(ts.state not in FINAL_STATES for ts in replayer.ws.tasks.values())


#: from how many steps of replay a view comes from the index instead (when
#: current): a fresh fork replays ~80 µs a step, the index answers in ~100-300 ms
FAR = 3000


class Stepper:
    """Where the user stands in a log: a worker and a step, with breakpoints."""

    def __init__(self, history: Any, worker: Any = None, *, validate: bool = False,
                 budget_mb: int = 2048, progress: Any = None):
        self.history = history
        self.validate = validate
        self.budget_mb = budget_mb
        #: ``progress(worker_history)`` gives a progress callback (or a context) for a first pass
        self.progress = progress
        self.seekers: dict[int, Any] = {}
        self.scans: dict[int, Scan] = {}
        self.end: dict[int, int] = {}
        self.failures: dict[int, str] = {}
        self.breakpoints: list[Breakpoint] = []
        self.states: tuple = ()
        self.keys: tuple = ()
        #: the recorded time the user stands at (None: before every step);
        #: moving sets it, switching worker keeps it
        self.time: Optional[float] = None
        #: per worker, where the user left it: (time, step)
        self.left: dict[int, tuple[Optional[float], int]] = {}
        #: the log's index, once looked for (False: not yet; None: none current)
        self._index: Any = False
        self.pos = 0
        if worker is None:
            # no worker named: the first one whose log ends with a task not
            # finished (what a user opens a stepper for), else the first
            self.index = 0
            for i in range(len(history.workers)):
                self.open_worker(i)
            self.index = next((i for i in range(len(history.workers)) if self.unfinished(i)), 0)
        else:
            self.index = history.workers.index(history.worker(worker))
            self.open_worker(self.index)

    # --- workers ----------------------------------------------------------------

    @property
    def wh(self) -> Any:
        return self.history.workers[self.index]

    @property
    def scan(self) -> Scan:
        return self.scans[self.index]

    @property
    def seeker(self) -> Any:
        return self.seekers[self.index]

    @property
    def last(self) -> int:
        """The last step that can be shown (earlier than the log's end if replay failed)."""
        return self.end[self.index]

    def open_worker(self, i: int) -> None:
        if i in self.seekers:
            return
        from replay.errors import ReplayError
        from replay.seek import Seeker

        wh = self.history.workers[i]
        scan = Scan(wh.address, self.validate)
        seeker = Seeker(wh, tap_log=True, observe=scan.observe, follower=Tracker(wh.events),
                        budget_mb=self.budget_mb // max(len(self.history.workers), 1), follow_recording=True)
        self.seekers[i], self.scans[i] = seeker, scan
        try:
            if self.progress is not None:
                with self.progress(wh) as cb:
                    seeker.prepare(cb)
            else:
                seeker.prepare()
            self.end[i] = wh.events
        except ReplayError as e:
            # the steps before the one replay cannot follow can still be shown
            self.end[i] = len(scan.handled) - 1
            self.failures[i] = str(e)
            seeker.prepared = True

    def unfinished(self, i: int) -> int:
        """How many tasks worker ``i`` leaves not finished at its last step."""
        self.open_worker(i)
        return self.seekers[i].view(self.end[i], _unfinished)

    def switch(self, which: Any) -> int:
        """Show another worker at the recorded time the user stands at: its
        last step handled by then. The time stays: switching round every
        worker comes back to the same moment, never earlier, and to the step
        the user left a worker at when that was at this moment."""
        i = (self.index + 1) % len(self.history.workers) if which is None else \
            self.history.workers.index(self.history.worker(which))
        self.left[self.index] = (self.time, self.pos)
        self.open_worker(i)
        self.index = i
        t, pos = self.left.get(i, (None, -1))
        if t != self.time or pos < 0:
            pos = 0 if self.time is None else self.scan.step_at_time(self.time)
        self.pos = min(pos, self.last)
        return self.pos

    # --- moving -----------------------------------------------------------------

    def go(self, pos: int) -> int:
        self.pos = max(0, min(pos, self.last))
        self.time = None if self.pos == 0 else self.scan.handled[self.pos]
        return self.pos

    def find_keys(self, text: str) -> list:
        """The worker's keys (every key that changed state in its log) that
        ``text`` names: the key itself, as a Python literal or plain string,
        else every key whose spelling contains ``text`` (case aside), in
        the views' order. None: :class:`NotFound` with the closest keys."""
        from schemas.codec import parse_key

        known = self.scan.keys.ids
        exact = parse_key(text)
        if exact in known:
            return [exact]
        low = text.lower()
        found = [k for k in self.scan.keys.names if low in key_text(k).lower()]
        if not found:
            raise NotFound(no_such_key({exact}, set(self.scan.keys.names), self.wh.address))
        return sorted(found, key=sort_key)

    def position(self, text: str) -> int:
        """A step number, ``+N``/``-N`` from here, or a stimulus id (its last step)."""
        text = text.strip()
        if text[:1] in "+-" and text[1:].isdigit():
            return max(0, min(self.pos + int(text), self.last))
        if text.isdigit():
            step = int(text)
            if step > self.wh.events:
                raise NotFound(f"step {step} is out of range: {self.wh.address} has steps 1..{self.wh.events}")
            return min(step, self.last)
        sid = self.scan.sids.ids.get(text)
        if sid is None:
            raise NotFound(f"no step of {self.wh.address} has stimulus id {text!r}")
        return self.scan.sid.rfind(sid, 1, self.last + 1)

    def add_break(self, text: str) -> Breakpoint:
        bp = Breakpoint.parse(text)
        bp.check(self.scan, self.validate)
        if bp not in self.breakpoints:
            self.breakpoints.append(bp)
        return bp

    def next_hit(self, forward: bool = True) -> Optional[tuple[int, Breakpoint]]:
        """The nearest step after (before) the current one where a breakpoint hits."""
        best: Optional[tuple[int, Breakpoint]] = None
        for bp in self.breakpoints:
            step = bp.hit(self.scan, self.pos, forward)
            if step is None or step > self.last:
                continue
            if best is None or (step < best[0] if forward else step > best[0]):
                best = (step, bp)
        return best

    def hits_here(self) -> list[Breakpoint]:
        return [bp for bp in self.breakpoints if bp.hit(self.scan, self.pos - 1, True) == self.pos]

    # --- what is shown ---------------------------------------------------------

    def indexed(self) -> Any:
        """The current worker in the log's index, if the log has a current one."""
        if self._index is False:
            from replay.index import Index

            self._index = Index.open(self.history.path) if self.history.path != "<stdin>" else None
        return None if self._index is None else self._index.workers[self.index]

    def far(self) -> bool:
        """Whether a seek to here would replay long enough that the index
        (when there is one) answers sooner: it costs a few hundred ms at most."""
        return self.indexed() is not None and self.seeker.distance(self.pos) > FAR

    def view(self) -> StepView:
        wh = self.wh
        start = self.scan.handled[1] if self.last >= 1 else None
        if self.far():
            from replay.stepview import indexed_step_view

            v = indexed_step_view(self.indexed(), self.pos, wh.events, start, self.states, self.keys)
        else:
            v = self.seeker.view_step(self.pos, step_view, wh.events, start, self.states, self.keys)
        v.state.note = self.departed_note()
        if self.time is not None and (v.state.handled is None or v.state.handled < self.time):
            v.moment = self.time
        hits = self.hits_here()
        if hits:
            v.hit = "; ".join(str(bp) for bp in hits)
        if self.index in self.failures and self.pos == self.last:
            v.note = f"replay cannot go further: {self.failures[self.index]}"
        for step, what in self.scan.invalid:
            if step == self.pos:
                v.note = f"validate_state() fails from here: {what}"
        return v

    def departed_note(self) -> Optional[str]:
        """What a view here says of where replay departed from the recording
        (the seeker's first pass compared every call, as ``replay state`` does)."""
        return departed_note(departure(self.seeker.departed), self.pos)

    def why(self) -> Any:
        if self.far():
            return self.indexed().why(self.pos)
        view = self.seeker.view_step(self.pos, _why)
        view.note = self.departed_note()
        return view

    def diff(self) -> Any:
        from replay.views import DiffView, StepBrief

        first = max(self.pos - 1, 0)
        before = self.seeker.view(first, _state)
        now = self.seeker.view_step(self.pos, step_view, self.wh.events, None)
        steps = []
        if now.event is not None:  # the step between, as its own view read it
            ev = now.event.event
            steps.append(StepBrief(now.step, ev.handled, ev.stimulus_id, now.event.cls, ev.text))
        return DiffView(before, now.state, steps, len(steps))

    def answers(self) -> Any:
        """The current worker's :class:`~replay.source.WorkerAnswers`: the log's
        index when it is current, else a replay, as every read command has them."""
        from replay.source import ReplayedWorker

        if self._index is None:  # none was current: one may have been built since
            self._index = False
        return self.indexed() or ReplayedWorker(self.wh)

    def story(self, key: Any) -> Any:
        """The story of ``key`` over the whole log."""
        return self.answers().key_story(self.last, key)

    def close(self) -> None:
        for s in self.seekers.values():
            s.close()
        self.seekers.clear()
