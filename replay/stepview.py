"""One step of a worker, as ``replay step`` shows it: the step's event, what
it caused, and the worker's state after it.

:class:`StepEvent` holds the step's own story lines (the event, the
transitions with their recommendations and other ``ws.log`` entries it
caused, its instructions, the exception its call raised); :class:`StepView`
adds the :class:`~replay.views.StateView` after the step. Both are plain data
built in whichever process replayed to the step (:func:`step_view` is what a
:class:`~replay.seek.Seeker` calls), and render themselves like every view.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay import render
from replay.literal import key_text, literal, short_key
from replay.story import StoryLine
from replay.views import FINAL_STATES, STATE_ORDER, StateView, is_transition

if TYPE_CHECKING:
    from replay.engine import Applied, Replayer

#: from how many tasks the step view lists only the unfinished ones, unless filtered
MANY_TASKS = 500

_STYLE = {"event": "cyan", "transition": "magenta", "log": "dim", "instruction": "green", "raised": "red"}
_LABEL = {"transition": "  → ", "log": "  · ", "instruction": "  ⇒ ", "raised": "  ! "}


@dataclass
class StepEvent:
    """What one step was and what it caused, in the state machine's order."""

    step: int
    #: the event's line, then the transitions, log entries and instructions it caused
    lines: list[StoryLine] = field(default_factory=list)

    @classmethod
    def of(cls, applied: Applied, step: int, worker: str) -> Optional[StepEvent]:
        """The step ``step`` of a call replayed with ``ws.log`` tapped."""
        handled = applied.call.handled
        done = next((s for s in applied.steps() if s.step == step), None)
        if done is None:
            return None
        sid = done.event.stimulus_id
        # the dask objects stay in the process that replayed: a line's text
        # and payload say everything a screen needs
        lines = [_plain(StoryLine.of(step, handled, worker, sid, "event", done.event))]
        for entry in done.log:
            kind = "transition" if is_transition(entry) else "log"
            lines.append(_plain(StoryLine.of(step, handled, worker, sid, kind, entry)))
        for inst in done.instructions:
            lines.append(_plain(StoryLine.of(step, handled, worker, sid, "instruction", inst)))
        if applied.exception is not None and step == _raising_step(applied):
            lines.append(_plain(StoryLine.of(step, handled, worker, sid, "raised", applied.exception)))
        return cls(step, lines)

    @property
    def event(self) -> StoryLine:
        return self.lines[0]

    @property
    def cls(self) -> str:
        return self.event.text.split(" ", 1)[0]

    def of_kind(self, kind: str) -> list[StoryLine]:
        return [line for line in self.lines if line.kind == kind]

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "event": self.event.data["event"],
            "caused": [{"kind": ln.kind, **ln.data, "text": ln.text} for ln in self.lines[1:]],
        }

    def texts(self) -> list[Text]:
        """One text per line, as the step view shows them."""
        out = []
        for line in self.lines:
            if line.kind == "event":
                out.append(Text.assemble(("event ", "bold"), (line.text.split(" ", 1)[0], "bold cyan"),
                                         render.safe(line.text[len(line.text.split(" ", 1)[0]):])))
            else:
                out.append(Text.assemble((_LABEL[line.kind], _STYLE[line.kind]),
                                         (line.kind + " ", _STYLE[line.kind]), render.safe(line.text)))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.texts()


def _plain(line: StoryLine) -> StoryLine:
    return dataclasses.replace(line, item=None)


def _raising_step(applied: Applied) -> int:
    # a batch stops at the event that raised: the events before it each left an end
    call = applied.call
    return call.first + (len(applied.ends) if applied.ends is not None else 0)


@dataclass
class StepView:
    """The screen of ``replay step``: one step and the state after it."""

    worker: str
    #: the worker's last step, and its first recorded time (elapsed times count from it)
    events: int
    start: Optional[float]
    state: StateView
    #: the step's event and what it caused (None at step 0, the empty state)
    event: Optional[StepEvent]
    #: what stopped here: a breakpoint's description, or None
    hit: Optional[str] = None
    #: something the user should know about this position, e.g. "no breakpoint hit"
    note: Optional[str] = None
    #: the recorded time the user stands at, when later than this step's
    #: (another worker shown at that moment: its last step by then)
    moment: Optional[float] = None

    @property
    def step(self) -> int:
        return self.state.step

    def to_json(self) -> dict:
        return {
            "worker": self.worker,
            "step": self.step,
            "events": self.events,
            "stimulus_id": self.state.stimulus_id,
            "handled": self.state.handled,
            "elapsed": None if self.start is None or self.state.handled is None
            else round(self.state.handled - self.start, 6),
            "hit": self.hit,
            "note": self.note,
            "event": None if self.event is None else self.event.to_json(),
            "state": self.state.to_json(),
        }

    def heading(self) -> Text:
        """``step 12 of 40  worker …  running``, then when and which stimulus."""
        s = self.state
        text = Text.assemble((f"step {s.step} of {self.events}", "bold"), "  worker ",
                             render.safe(self.worker), "  ")
        text.append(s.status, "bold" if s.running else "bold yellow")
        text.append("\n")
        if s.handled is not None:
            text.append(f"{render.clock(s.handled)} UTC")
            if self.start is not None:
                text.append(f" (+{s.handled - self.start:.3f} s)")
            text.append("  ")
        text.append_text(Text.assemble(("stimulus ", "bold"), render.safe(s.stimulus_id or "(the empty state)")))
        return text

    # --- the full screen's panes (the same data, each pane to fit 80×24) ----

    def head(self) -> list[Text]:
        """The heading, then what stopped here and what to know about it."""
        lines = [self.heading()]
        if self.moment is not None:
            lines.append(Text(f"as of {render.clock(self.moment)} UTC: " + (
                "this worker's last step by then" if self.step else "before this worker's first step"), style="dim"))
        if self.hit:
            lines.append(Text.assemble(("breakpoint: ", "bold reverse"), render.safe(self.hit)))
        if self.note:
            lines.append(Text.assemble(("note: ", "bold"), render.safe(self.note)))
        return lines

    def body(self) -> list[Text]:
        """The step's event and what it caused."""
        if self.event is None:
            return [Text("no event: the state before the first step", style="dim")]
        return self.event.texts()

    def summary(self, full: bool = False) -> list[Text]:
        """The worker after the step, but its task list: running or paused,
        counters, tasks per state, peers; keys as :func:`~replay.literal.short_key`
        spells them unless ``full``, and a found task's detail in full."""
        st = self.state
        spell = key_text if full else short_key
        lines = [Text.assemble((st.status, "bold" if st.running else "bold yellow"), "; ", st.counters.__rich__()),
                 *(r.__rich__() for r in st.raised),
                 Text("tasks: " + (", ".join(f"{s} {n}" for s, n in st.task_states.items()) or "none"))]
        for t in st.tasks:
            if t.detail is not None:
                lines.append(Text.assemble(("key ", "bold"), render.safe(key_text(t.key)), "  ",
                                           render.safe(t.state_text())))
                lines.append(render.safe(", ".join(f"{k}={literal(v, 160)}" for k, v in t.detail.items())))
        for title, peers in (("in flight from", st.in_flight_workers), ("queued for transfer from", st.data_needed)):
            for peer, keys in peers.items():
                lines.append(_keys_line(f"{title} {peer}", keys, spell))
        for g in st.gathers:
            lines.append(_keys_line(f"gather of step {g.step} to {g.peer}, not answered", list(g.keys), spell))
        if st.busy_workers:
            lines.append(Text.assemble(("busy peers: ", "bold"), render.safe(", ".join(st.busy_workers))))
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.heading()
        if self.hit:
            yield Text.assemble(("breakpoint: ", "bold reverse"), render.safe(self.hit))
        if self.note:
            yield Text.assemble(("note: ", "bold"), render.safe(self.note))
        if self.event is None:
            yield Text("no event: the state before the first step", style="dim")
        else:
            yield self.event
        yield Text("")
        # the state view without its heading, which says what the lines above say
        parts = self.state.__rich_console__(console, options)
        next(parts, None)
        yield from parts


def _keys_line(label: str, keys: list, spell: Any) -> Text:
    """``label (n): key, key, … m more``, keys spelled by ``spell``."""
    t = Text.assemble((f"{label} ({len(keys)}): ", "bold"))
    t.append_text(render.safe(", ".join(spell(k) for k in keys[:20])))
    if len(keys) > 20:
        t.append(f", … {len(keys) - 20} more", style="dim")
    return t


def step_view(replayer: Replayer, applied: Optional[Applied], follower: Any, events: int,
              start: Optional[float], states: tuple = (), keys: tuple = ()) -> StepView:
    """The step view where a seek stands (what :meth:`Seeker.view_step
    <replay.seek.Seeker.view_step>` calls)."""
    ws = replayer.ws
    step = replayer.seq
    event = None if applied is None or step == 0 else StepEvent.of(applied, step, ws.address)
    view = _with_state(replayer, event, events, start, states, keys)
    if follower is not None:
        # the tracker alone knows what raised and which gathers are unanswered,
        # as it does for ``replay state``
        view.state.raised = list(follower.raised)
        view.state.gathers = follower.open_gathers()
    return view


def indexed_step_view(worker: Any, step: int, events: int, start: Optional[float],
                      states: tuple = (), keys: tuple = ()) -> StepView:
    """The step view read from a log's index (an :class:`~replay.index.IndexedWorker`):
    no replay, whatever the distance to a snapshot."""
    r = worker.frozen(step)
    event = None
    if step > 0:
        event = StepEvent(step, [StoryLine(step, r.handled, worker.address, r.stimulus_id, kind, text, data)
                                 for kind, text, data, _ in worker.lines_of(step)])
    view = _with_state(r, event, events, start, states, keys)
    view.state.raised = worker.raised(step)
    view.state.gathers = worker.open_gathers(step)
    return view


def _with_state(replayer: Any, event: Optional[StepEvent], events: int, start: Optional[float],
                states: tuple, keys: tuple) -> StepView:
    ws = replayer.ws
    many = not states and not keys and len(ws.tasks) > MANY_TASKS
    if many:
        # a row per finished task costs more than the rest of a step (tens of
        # ms for thousands) and a screen shows twenty of them: their counts
        # stay in the tasks line, and a state filter lists them
        states = tuple(s for s in STATE_ORDER if s not in FINAL_STATES)
    state = StateView.of(replayer, states=states, keys=keys)
    if many:
        state.filters = {"state": f"unfinished (of {len(ws.tasks)} tasks; f filters by state)"}
    return StepView(ws.address, events, start, state, event)
