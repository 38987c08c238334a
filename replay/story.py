"""Stories: every event, transition and instruction about a key or a stimulus id.

dask's ``WorkerState.story`` reads the worker's capped ``ws.log`` and stamps
each entry with the wall clock of whoever ran the state machine. A story here
is built from a tapped replay, so it is uncapped, and each line carries what
dask cannot give: the step, the *recorded* time the worker handled it, the
worker, and the event itself. Lines of one step come in the order the state
machine produced them: the event, the transitions (with the recommendations
that explain a cascade) and log entries it caused, then its instructions.

A key matches exactly: ``5`` is not ``('x', 5)``. dask's ``worker_story``
counts a key found inside any tuple of a log entry, which makes every tuple
key holding ``5`` part of the story of ``5``; here a tuple that is itself a
key of the worker is a key, not a collection of keys.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.errors import NotFound
from replay.literal import jsonable, key_text, literal, sort_key
from replay.views import Key, is_transition

if TYPE_CHECKING:  # an index tells stories without the state machine
    from distributed import worker_state_machine as wsm

    from replay.engine import Applied, StepDone

#: what a story line is: an event, a transition, another ``ws.log`` entry,
#: an instruction, or the exception a call raised
KINDS = ("event", "transition", "log", "instruction", "raised")


@dataclass(slots=True)
class StoryLine:
    """One line of a story."""

    step: int
    #: when the recorded worker handled the step
    handled: float
    worker: str
    stimulus_id: str
    kind: str
    #: the line in words (:func:`line_text`)
    text: str
    #: the line as JSON-ready data (:func:`line_data`): the event or instruction
    #: as the log encodes it, a transition's fields, a log entry
    data: dict
    #: the dask object, when the line comes from a replay (None from an index)
    item: Any = None

    @classmethod
    def of(cls, step: int, handled: float, worker: str, stimulus_id: str, kind: str, item: Any,
           record: Optional[dict] = None) -> StoryLine:
        """The line of ``item``; an event's payload is its ``record`` as the log
        holds it when given (decoding drops what replay cannot rebuild)."""
        data = {"event": record["event"]} if record is not None else line_data(kind, item)
        return cls(step, handled, worker, stimulus_id, kind, line_text(kind, item), data, item)

    def to_json(self, start: Optional[float] = None) -> dict:
        d: dict[str, Any] = {
            "step": self.step, "handled": self.handled, "worker": self.worker,
            "stimulus_id": self.stimulus_id, "kind": self.kind,
        }
        if start is not None:
            d["elapsed"] = round(self.handled - start, 6)
        d.update(self.data)
        d["text"] = self.text
        return d


def line_data(kind: str, item: Any) -> dict:
    """A story line's payload as JSON-ready data."""
    from schemas.convert import encode_event, encode_instruction

    if kind == "event":
        return {"event": encode_event(item)}
    if kind == "transition":
        key, start, finish, final, recs, _, _ = item
        return {"transition": {"key": jsonable(key), "start": start, "finish": finish, "final": final,
                               "recommendations": jsonable(recs)}}
    if kind == "log":
        # the entry without its stimulus id and the replaying process's clock
        return {"entry": jsonable(list(item[:-2]))}
    if kind == "instruction":
        return {"instruction": encode_instruction(item)}
    return {"raised": f"{type(item).__name__}: {item}"}


def transition_text(data: dict) -> str:
    """:func:`line_text` of a transition from its payload (:func:`line_data`)."""
    from schemas.codec import decode_key

    recs = data["recommendations"]
    pairs = recs.items() if isinstance(recs, dict) else recs
    recs = {decode_key(k): v for k, v in pairs}
    return _transition_text(decode_key(data["key"]), data["start"], data["finish"], data["final"], recs)


def _transition_text(key: Any, start: str, finish: str, final: str, recs: dict) -> str:
    text = f"{key_text(key)}: {start} → {finish}"
    if final != finish:
        text += f" (ends {final})"
    if recs:
        text += f"  recommends {literal(recs)}"
    return text


def line_text(kind: str, item: Any) -> str:
    """A story line in words: dask values as literals."""
    if kind in ("event", "instruction"):
        return render.event_text(item)
    if kind == "transition":
        key, start, finish, final, recs, _, _ = item
        return _transition_text(key, start, finish, final, recs)
    if kind == "log":
        return literal(item[:-2])
    return f"raised {type(item).__name__}: {item}"


#: the ``worker`` of the scheduler's lines (:mod:`replay.scheduler_log`), as
#: ``Client.story`` names them
SCHEDULER = "scheduler"

#: the worker events whose stimulus id the scheduler made: a message from it
#: (``compute-task``, ``free-keys``, ``acquire-replicas``, ``remove-replicas``,
#: ``steal-request``, ``refresh-who-has``, ``cancel-compute``)
SCHEDULER_SENT = frozenset({
    "ComputeTaskEvent", "FreeKeysEvent", "AcquireReplicasEvent", "RemoveReplicasEvent",
    "StealRequestEvent", "RefreshWhoHasEvent", "CancelComputeEvent",
})


def caused_by(lines: list[StoryLine]) -> dict[str, str]:
    """For each stimulus id both the scheduler and a worker logged, the side
    that caused it: the scheduler when a worker's event with that id is one
    the scheduler sends, else the worker (its own event, such as
    ``ExecuteSuccessEvent``'s ``task-finished-…``, which it reports). Without
    a worker's event line, the side whose line was recorded first."""
    sides: dict[str, set] = {}
    first: dict[str, str] = {}
    for ln in sorted(lines, key=lambda ln: ln.handled):
        sides.setdefault(ln.stimulus_id, set()).add(ln.worker == SCHEDULER)
        first.setdefault(ln.stimulus_id, SCHEDULER if ln.worker == SCHEDULER else "worker")
    out: dict[str, str] = {}
    for ln in lines:
        sid = ln.stimulus_id
        if len(sides[sid]) < 2 or ln.kind != "event" or ln.worker == SCHEDULER:
            continue
        cls = (ln.data.get("event") or {}).get("cls")
        out[sid] = SCHEDULER if cls in SCHEDULER_SENT else "worker"
    for sid, both in sides.items():
        if len(both) == 2:
            out.setdefault(sid, first[sid])
    return out


_STYLE = {"event": "cyan", "transition": "magenta", "log": "dim", "instruction": "green", "raised": "red"}


@dataclass
class Story:
    """Every line about what was asked, in order."""

    #: what the story is of, in words
    about: str
    lines: list[StoryLine] = field(default_factory=list)
    #: recorded time of the worker's first event: elapsed times count from it
    start: Optional[float] = None
    #: the keys it is the story of, or the stimulus id
    keys: Optional[list] = None
    stimulus_id: Optional[str] = None
    #: what the story rests on, when not a replay (a partial history)
    note: Optional[str] = None

    @property
    def workers(self) -> list[str]:
        return sorted({line.worker for line in self.lines})

    @classmethod
    def merge(cls, stories: list[Story]) -> Story:
        """One timeline of several workers' (and the scheduler's) stories of
        the same thing, as ``Client.story`` tells it.

        Ordered by recorded time, lines sharing a stimulus id kept together
        (the scheduler sends one id to every worker it concerns, and a worker's
        ``task-finished-…`` becomes the scheduler's), the side that caused a
        shared id first (:func:`caused_by`), and one side's lines in the order
        of its steps. Each side's time is its own host's clock.
        """
        lines = [line for story in stories for line in story.lines]
        first_seen: dict[str, float] = {}
        for line in sorted(lines, key=lambda ln: ln.handled):
            first_seen.setdefault(line.stimulus_id, line.handled)
        cause = caused_by(lines)
        position = {id(line): i for i, line in enumerate(lines)}

        def side(ln: StoryLine) -> int:
            first = cause.get(ln.stimulus_id)
            if first is None:
                return 0
            return 0 if (ln.worker == SCHEDULER) == (first == SCHEDULER) else 1

        lines.sort(key=lambda ln: (first_seen[ln.stimulus_id], ln.stimulus_id, side(ln), ln.worker, ln.step,
                                   position[id(ln)]))
        starts = [s.start for s in stories if s.start is not None]
        first = next((s for s in stories if s.lines and s.lines[0].worker != SCHEDULER), stories[0])
        return cls(first.about, lines, min(starts) if starts else None, keys=first.keys,
                   stimulus_id=first.stimulus_id, note=first.note)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"about": self.about}
        if self.keys is not None:
            out["keys"] = jsonable(self.keys)
            if len(self.keys) == 1:
                out["key"] = jsonable(self.keys[0])
        if self.stimulus_id is not None:
            out["stimulus_id"] = self.stimulus_id
        if self.note:
            out["note"] = self.note
        out.update(start=self.start, workers=self.workers,
                   story=[line.to_json(self.start) for line in self.lines])
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cluster = len(self.workers) > 1
        if self.note:
            yield Text.assemble(("note: ", "yellow"), render.safe(self.note))
        t = render.table(console, "step", "time", *(["worker"] if cluster else []), "stimulus", "what",
                         title=Text.assemble("story of ", render.safe(self.about)))
        for line in self.lines:
            since = "" if self.start is None else f"+{line.handled - self.start:.3f}s"
            cells = [str(line.step), since]
            if cluster:
                cells.append(render.safe(line.worker))
            what = Text.assemble((line.kind + " ", _STYLE[line.kind]), render.safe(line.text))
            cells += [render.safe(line.stimulus_id), what]
            t.add_row(*cells)
        yield t
        if cluster:
            who = "the scheduler's and each worker's" if SCHEDULER in self.workers else "each worker's"
            yield Text(f"time: recorded by {who} own clock, since the first event of any; the "
                       "clocks of different hosts may differ", style="dim")
        elif self.start is not None:
            yield Text(f"time: recorded, since the worker's first event at {render.clock(self.start)} UTC",
                       style="dim")


# --- matching -----------------------------------------------------------------


def event_keys(ev: wsm.StateMachineEvent) -> set:
    """Every key an event names."""
    keys: set = set()
    key = getattr(ev, "key", None)
    if key is not None:
        keys.add(key)
    for name in ("who_has", "nbytes", "data"):
        d = getattr(ev, name, None)
        if isinstance(d, dict):
            keys.update(d)
    for k in getattr(ev, "keys", None) or ():
        keys.add(k)
    return keys


def instruction_keys(inst: wsm.Instruction) -> set:
    from distributed import worker_state_machine as wsm

    if isinstance(inst, wsm.GatherDep):
        return set(inst.to_gather)
    if isinstance(inst, (wsm.AddKeysMsg, wsm.RequestRefreshWhoHasMsg)):
        return set(inst.keys)
    key = getattr(inst, "key", None)
    return set() if key is None else {key}


def entry_keys(entry: tuple, known: set) -> list:
    """The keys a ``ws.log`` entry names, as dask's ``worker_story`` finds them
    (an item, or an element of a collection item), except that a tuple which
    is itself a known key is a key, not a collection of keys."""
    out = []
    for item in entry[:-2]:  # the stimulus id and the clock are not keys
        try:
            if item in known:
                out.append(item)
                continue
        except TypeError:  # unhashable: a list or a set of keys
            pass
        if isinstance(item, (tuple, list, set, frozenset)):
            for x in item:
                try:
                    if x in known:
                        out.append(x)
                except TypeError:
                    pass
    return out


# --- building -----------------------------------------------------------------


class KeyStoryBuilder:
    """Follows a tapped replay and keeps the lines about some keys."""

    def __init__(self, worker: str, keys: Iterable[Key]):
        self.worker = worker
        self.target = set(keys)
        self.lines: list[StoryLine] = []
        #: every key the worker was told about: tells a tuple key from a
        #: tuple of keys, and suggests a key to who asked for an unknown one
        self.known: set = set()
        from replay.requests import OpenRequests

        # a GatherDep*Event names only the peer: it is about the keys its gather asked for
        self._gathers: OpenRequests[set] = OpenRequests()
        self.start: Optional[float] = None

    def feed(self, applied: Applied) -> None:
        handled = applied.call.handled
        if self.start is None:
            self.start = handled
        for s in applied.steps():
            self._step(s, handled)
        if applied.exception is not None and self._about(applied.call.events[-1]):
            last = applied.call.last
            self.lines.append(StoryLine.of(last, handled, self.worker, applied.call.stimulus_id,
                                           "raised", applied.exception))

    def _about(self, event: Any) -> bool:
        return not self.target.isdisjoint(event_keys(event))

    def _step(self, s: StepDone, handled: float) -> None:
        from distributed import worker_state_machine as wsm

        ev, target, lines = s.event, self.target, self.lines
        named = event_keys(ev)
        self.known |= named
        answered = self._gathers.answered(ev) or set()
        sid = ev.stimulus_id
        if not target.isdisjoint(named) or not target.isdisjoint(answered):
            lines.append(StoryLine.of(s.step, handled, self.worker, sid, "event", ev, s.record))
        for entry in s.log:
            if not target.isdisjoint(entry_keys(entry, self.known)):
                kind = "transition" if is_transition(entry) else "log"
                lines.append(StoryLine.of(s.step, handled, self.worker, sid, kind, entry))
        for inst in s.instructions:
            if not target.isdisjoint(instruction_keys(inst)):
                lines.append(StoryLine.of(s.step, handled, self.worker, sid, "instruction", inst))
            self._gathers.issued(inst, set(inst.to_gather) if isinstance(inst, wsm.GatherDep) else set())

    def story(self) -> Story:
        if not self.lines:
            raise NotFound(no_such_key(self.target, self.known, self.worker))
        about = ", ".join(sorted(key_text(k) for k in self.target))
        return Story(about, self.lines, self.start, keys=sorted(self.target, key=sort_key))


def no_such_key(target: set, known: set, worker: str) -> str:
    """'no such key' with the keys that look most like it."""
    wanted = ", ".join(sorted(key_text(k) for k in target))
    spelled = {key_text(k): k for k in known}
    close: list[str] = []
    for k in target:
        close += difflib.get_close_matches(key_text(k), list(spelled), n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(dict.fromkeys(close))}" if close else ""
    return f"no such key on {worker}: {wanted}{hint}"


def key_story(walked: Iterable[tuple[Applied, Any]], worker: str, *keys: Key) -> Story:
    """The uncapped story of ``keys`` over a walk (:func:`replay.views.walk`);
    :class:`~replay.errors.NotFound` with the closest keys when none matched."""
    b = KeyStoryBuilder(worker, keys)
    for applied, _ in walked:
        b.feed(applied)
    return b.story()


def stimulus_story(walked: Iterable[tuple[Applied, Any]], worker: str, stimulus_id: str) -> Story:
    """Every step carrying ``stimulus_id``, each with what it caused."""
    lines: list[StoryLine] = []
    start = None
    for applied, _ in walked:
        handled = applied.call.handled
        if start is None:
            start = handled
        for s in applied.steps():
            if s.event.stimulus_id != stimulus_id:
                continue
            lines.append(StoryLine.of(s.step, handled, worker, stimulus_id, "event", s.event, s.record))
            for entry in s.log:
                kind = "transition" if is_transition(entry) else "log"
                lines.append(StoryLine.of(s.step, handled, worker, stimulus_id, kind, entry))
            for inst in s.instructions:
                lines.append(StoryLine.of(s.step, handled, worker, stimulus_id, "instruction", inst))
        if applied.exception is not None and applied.call.stimulus_id == stimulus_id:
            lines.append(StoryLine.of(applied.call.last, handled, worker, stimulus_id, "raised", applied.exception))
    if not lines:
        raise NotFound(f"no step of {worker} has stimulus id {stimulus_id!r}")
    return Story(f"stimulus {stimulus_id}", lines, start, stimulus_id=stimulus_id)
