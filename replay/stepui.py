"""The full-screen UI of ``replay step``: a :class:`~replay.step.Stepper` on
a terminal, keyboard only.

Every screen shows views the other commands print (the step view, the story,
the diff, the why diagnosis); this module only moves the stepper and puts
them on the screen. It works in 80×24 and honours ``NO_COLOR`` (Textual
turns the screen monochrome).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from replay.errors import BadInput
from replay.step import BREAK_SYNTAX, Stepper

#: every binding, as the help screen lists them: (keys, what they do)
HELP = [
    ("n  →", "next step"),
    ("p  ←", "previous step"),
    ("]  [", "jump forwards / backwards by N steps (N: the J key, default 100)"),
    ("J", "set N, the size of a jump"),
    ("g", "go to: a step number, +N / -N from here, or a stimulus id (its last step)"),
    ("G", "go to the last step"),
    ("b", f"add a breakpoint: {BREAK_SYNTAX}"),
    ("B", "clear every breakpoint"),
    ("c", "continue forwards to the next breakpoint hit"),
    ("r", "reverse-continue: backwards to the previous breakpoint hit"),
    ("/", "find a key: show only it, with its detail (empty: every task)"),
    ("f", "filter the tasks by state, e.g. flight,fetch (empty: every state)"),
    ("s", "the story of a key (the found key, or asks)"),
    ("d", "the diff to the previous step"),
    ("w", "why: what each unfinished task waits for, at this step"),
    ("tab  o", "the next worker, at the same recorded time"),
    ("↑ ↓ PgUp PgDn", "scroll"),
    ("?", "this help"),
    ("escape", "close a window or a prompt"),
    ("q", "quit (or close a window)"),
]


class TextScreen(ModalScreen):
    """A view over the whole screen (story, diff, why, help); escape or q closes it."""

    BINDINGS = [Binding("escape", "dismiss", "close"), Binding("q", "dismiss", "close")]
    DEFAULT_CSS = """
    TextScreen { background: $background; }
    TextScreen #title { height: 1; text-style: bold; background: $boost; }
    TextScreen VerticalScroll { height: 1fr; }
    """

    def __init__(self, title: str, renderable: Any):
        super().__init__()
        self.title_text = title
        self.renderable = renderable

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.title_text}   (escape: close)"), id="title")
        with VerticalScroll():
            yield Static(self.renderable)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    async def action_dismiss(self, result: Any = None) -> None:
        self.dismiss(result)


class _Main(Screen):
    """The stepping screen: tab switches worker here (a screen's own binding,
    checked before the one that moves the focus)."""

    BINDINGS = [Binding("tab", "app.switch", show=False)]


class StepApp(App):
    """``replay step``'s screen."""

    TITLE = "replay step"
    CSS = """
    #body { height: 1fr; }
    #message { height: auto; max-height: 3; }
    #prompt { display: none; height: 3; }
    #keys { height: 1; background: $boost; }
    """
    BINDINGS = [
        Binding("n,right", "move(1)", "next", show=False),
        Binding("p,left", "move(-1)", "previous", show=False),
        Binding("right_square_bracket", "jump(1)", show=False),
        Binding("left_square_bracket", "jump(-1)", show=False),
        Binding("J", "ask('jump')", show=False),
        Binding("g", "ask('go')", show=False),
        Binding("G", "last", show=False),
        Binding("b", "ask('break')", show=False),
        Binding("B", "clear_breaks", show=False),
        Binding("c", "cont(True)", show=False),
        Binding("r", "cont(False)", show=False),
        Binding("slash", "ask('find')", show=False),
        Binding("f", "ask('filter')", show=False),
        Binding("s", "story", show=False),
        Binding("d", "diff", show=False),
        Binding("w", "why", show=False),
        Binding("o", "switch", show=False),
        Binding("question_mark", "help", show=False),
        Binding("q", "quit", show=False),
        Binding("escape", "cancel", show=False),
    ]

    def __init__(self, stepper: Stepper, *, jump: int = 100, **kwargs: Any):
        super().__init__(**kwargs)
        self.stepper = stepper
        self.jump_size = jump
        self.found: Any = None
        self.asking: Optional[str] = None
        self.message = ""
        #: the step view on the screen (tests read it beside the screen's text)
        self.current: Any = None
        self.hit: Optional[str] = None

    def get_default_screen(self) -> Screen:
        return _Main(id="_default")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="body"):
            yield Static(id="view")
        yield Static(id="message")
        yield Input(id="prompt")
        yield Static(Text("n/p step  [/] ±N  g go  b break  c/r continue  s story  d diff  w why  "
                          "tab worker  ? help  q quit", no_wrap=True, overflow="ellipsis"), id="keys")

    def on_mount(self) -> None:
        self.query_one("#body").focus()
        self.refresh_view()

    # --- the screen --------------------------------------------------------------

    def refresh_view(self) -> None:
        s = self.stepper
        view = s.view()
        if self.hit:
            view.hit = self.hit
        self.current = view
        self.query_one("#view", Static).update(view)
        parts = []
        if s.breakpoints:
            parts.append("breakpoints: " + "; ".join(str(bp) for bp in s.breakpoints))
        if s.keys:
            parts.append("finding " + ", ".join(repr(k) for k in s.keys))
        if s.states:
            parts.append("states " + ", ".join(s.states))
        if self.message:
            parts.append(self.message)
        self.query_one("#message", Static).update(Text("  ·  ".join(parts)))

    def say(self, message: str) -> None:
        self.message = message

    def moved(self, pos: int, hit: Optional[str] = None) -> None:
        self.stepper.go(pos)
        self.hit = hit
        self.refresh_view()
        self.message = ""

    # --- moving ------------------------------------------------------------------

    def action_move(self, n: int) -> None:
        self.moved(self.stepper.pos + n)

    def action_jump(self, sign: int) -> None:
        self.moved(self.stepper.pos + sign * self.jump_size)

    def action_last(self) -> None:
        self.moved(self.stepper.last)

    def action_cont(self, forward: bool) -> None:
        found = self.stepper.next_hit(forward)
        if not self.stepper.breakpoints:
            self.say("no breakpoint: add one with b")
            self.refresh_view()
            return
        if found is None:
            self.say(f"no breakpoint hit {'after' if forward else 'before'} step {self.stepper.pos}")
            self.refresh_view()
            return
        self.moved(found[0], str(found[1]))

    def action_clear_breaks(self) -> None:
        self.stepper.breakpoints.clear()
        self.say("breakpoints cleared")
        self.refresh_view()

    def action_switch(self) -> None:
        if len(self.stepper.history.workers) == 1:
            self.say("the log has one worker")
            self.refresh_view()
            return
        with self.batch_update():
            pos = self.stepper.switch(None)
            self.moved(pos)

    # --- prompts --------------------------------------------------------------------

    PROMPTS = {
        "go": "go to: step, +N, -N or stimulus id",
        "jump": "jump size N",
        "break": "breakpoint: state:KEY=STATE, stimulus:ID, event:CLASS, instruction:CLASS, raised, invalid",
        "find": "find a key (empty: every task)",
        "filter": "states, comma separated (empty: every state)",
        "story": "story of key",
    }

    def action_ask(self, what: str, value: str = "") -> None:
        self.asking = what
        prompt = self.query_one("#prompt", Input)
        prompt.placeholder = self.PROMPTS[what]
        prompt.border_title = self.PROMPTS[what]
        prompt.value = value
        prompt.styles.display = "block"
        prompt.focus()

    def action_cancel(self) -> None:
        prompt = self.query_one("#prompt", Input)
        if prompt.styles.display != "none":
            self._close_prompt()

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.styles.display = "none"
        self.asking = None
        self.query_one("#body").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        what, text = self.asking, event.value.strip()
        self._close_prompt()
        try:
            self.answer(what, text)
        except BadInput as e:  # what the user typed names nothing: say so, stay
            self.say(f"error: {e}")
            self.refresh_view()

    def answer(self, what: Optional[str], text: str) -> None:
        s = self.stepper
        if what == "go":
            if text:
                self.moved(s.position(text))
        elif what == "jump":
            if not text.isdigit() or int(text) < 1:
                raise BadInput(f"a jump is a positive number of steps, not {text!r}")
            self.jump_size = int(text)
            self.say(f"jumps of {self.jump_size} steps")
            self.refresh_view()
        elif what == "break":
            bp = s.add_break(text)
            self.say(f"breakpoint added: {bp}")
            self.refresh_view()
        elif what == "find":
            from schemas.codec import parse_key

            self.found = parse_key(text) if text else None
            s.keys = () if self.found is None else (self.found,)
            self.refresh_view()
        elif what == "filter":
            s.states = tuple(x.strip() for x in text.split(",") if x.strip())
            self.refresh_view()
        elif what == "story" and text:
            from schemas.codec import parse_key

            self.show_story(parse_key(text))

    # --- windows ----------------------------------------------------------------------

    def action_story(self) -> None:
        if self.found is not None:
            self.show_story(self.found)
        else:
            self.action_ask("story")

    def show_story(self, key: Any) -> None:
        try:
            story = self.stepper.story(key)
        except BadInput as e:
            self.say(f"error: {e}")
            self.refresh_view()
            return
        self.push_screen(TextScreen(f"story of {key!r}", story))

    def action_diff(self) -> None:
        s = self.stepper
        self.push_screen(TextScreen(f"diff: step {max(s.pos - 1, 0)} → {s.pos}", s.diff()))

    def action_why(self) -> None:
        self.push_screen(TextScreen(f"why, at step {self.stepper.pos}", self.stepper.why()))

    def action_help(self) -> None:
        from rich.table import Table

        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column("keys", style="bold", no_wrap=True)
        t.add_column("what")
        for keys, what in HELP:
            t.add_row(keys, what)
        self.push_screen(TextScreen("replay step: keys", t))


def run(stepper: Stepper, *, jump: int = 100, on_ready: Optional[Callable[[StepApp], None]] = None) -> None:
    StepApp(stepper, jump=jump).run()
