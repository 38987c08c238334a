"""The full-screen UI of ``replay step``: a :class:`~replay.step.Stepper` on
a terminal, keyboard only.

Every screen shows views the other commands print (the step view, the story,
the diff, the why diagnosis); this module only moves the stepper and puts
them on the screen. It honours ``NO_COLOR`` (Textual turns the screen
monochrome) and fits 80×24: the key bar always ends with ``? help  q quit``,
and the panes share the rows left so that the task list keeps at least
:data:`TASK_ROWS` of them (see :meth:`StepApp.fit`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, OptionList, Static

from replay.errors import BadInput
from replay.literal import key_text, short_key
from replay.step import BREAK_SYNTAX, Stepper

#: every binding, as the help screen lists them: (keys, what they do); one
#: screen at 80×24
HELP = [
    ("n p  → ←", "next / previous step"),
    ("] [", "jump forwards / backwards by N steps (J sets N, 100 at first)"),
    ("J", "set N, the size of a jump"),
    ("g", "go to a step, +N / -N from here, or a stimulus id's last step"),
    ("G", "go to the last step"),
    ("b", "add a breakpoint (the last line says how)"),
    ("B", "clear every breakpoint"),
    ("c r", "continue forwards / backwards to the nearest breakpoint hit"),
    ("/", "find a key by any part of it; several match: pick one"),
    ("enter", "only the task under the cursor: its full key and detail"),
    ("k", "keys in full, or shortened as dask's key_split names them"),
    ("f", "only tasks in these states, e.g. flight,fetch (empty: all)"),
    ("s", "the story of the found key, or of the one under the cursor"),
    ("d", "the diff to the previous step"),
    ("w", "why: what each unfinished task waits for, at this step"),
    ("tab o", "the next worker, at the same recorded time"),
    ("e", "scroll the step's event (e again: back to the tasks)"),
    ("↑ ↓ PgUp PgDn", "move in the tasks (or the event)"),
    ("?", "this help"),
    ("escape q", "close a window or a prompt; q on this screen quits"),
    ("breakpoints", BREAK_SYNTAX),
]

#: the task list keeps at least this many rows when the screen has them
TASK_ROWS = 5
#: the key bar: what always shows, and what shows as far as the width allows
KEYS_ALWAYS = "? help  q quit"
KEYS_MORE = ("n/p step  [/] ±N  g go  b break  c/r continue  / find  s story  d diff  w why  "
             "tab worker  k keys  f filter")


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
        yield Static(Text(f"{self.title_text}   (escape: close)", no_wrap=True, overflow="ellipsis"), id="title")
        with VerticalScroll():
            yield Static(self.renderable)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    async def action_dismiss(self, result: Any = None) -> None:
        self.dismiss(result)


class PickScreen(ModalScreen):
    """The keys that a search matched, to pick one (enter); escape picks none."""

    #: keys listed at most: past them, typing more of the key narrows the search
    SHOWN = 500
    BINDINGS = [Binding("escape", "dismiss", "close"), Binding("q", "dismiss", "close")]
    DEFAULT_CSS = """
    PickScreen { background: $background; }
    PickScreen #title { height: 1; text-style: bold; background: $boost; }
    PickScreen OptionList { height: 1fr; }
    """

    def __init__(self, text: str, keys: list):
        super().__init__()
        self.text = text
        self.keys = keys[: self.SHOWN]
        self.more = len(keys) - len(self.keys)

    def compose(self) -> ComposeResult:
        more = f"; {self.more} more: type more of the key" if self.more else ""
        yield Static(Text(f"{len(self.keys) + self.more} keys contain {self.text!r}{more}   "
                          "(enter: pick, escape: none)", no_wrap=True, overflow="ellipsis"), id="title")
        # the full key: what tells one match from another
        yield OptionList(*(Text(key_text(k), no_wrap=True, overflow="ellipsis") for k in self.keys))

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.keys[event.option_index])

    async def action_dismiss(self, result: Any = None) -> None:
        self.dismiss(result)


class TaskTable(DataTable, inherit_bindings=False):
    """The task list: up and down move, enter picks; left and right stay the
    stepper's (previous and next step)."""

    BINDINGS = [b for b in DataTable.BINDINGS if b.key not in ("left", "right")]


class _Main(Screen):
    """The stepping screen: tab switches worker here (a screen's own binding,
    checked before the one that moves the focus)."""

    BINDINGS = [Binding("tab", "app.switch", show=False)]


class StepApp(App):
    """``replay step``'s screen."""

    TITLE = "replay step"
    CSS = """
    #head { height: auto; }
    #event { height: auto; }
    #state { height: auto; }
    #tasks { height: 1fr; }
    #message { height: auto; }
    #prompt { display: none; height: 3; }
    #keys { height: 1; background: $boost; }
    #keys-more { width: 1fr; }
    #keys-always { width: auto; text-style: bold; }
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
        Binding("k", "full_keys", show=False),
        Binding("e", "event_focus", show=False),
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
        #: shown once, at the next refresh (an error never outlives the next action)
        self.message = ""
        #: keys in full instead of shortened
        self.full = False
        #: the step view on the screen (tests read it beside the screen's text)
        self.current: Any = None
        #: the keys of the task list's rows, in order
        self.row_keys: list = []
        #: the message line as shown
        self.message_text = Text()
        self.hit: Optional[str] = None

    def get_default_screen(self) -> Screen:
        return _Main(id="_default")

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        with VerticalScroll(id="event"):
            yield Static(id="event-lines")
        yield Static(id="state")
        table = TaskTable(id="tasks", cursor_type="row", zebra_stripes=False)
        table.add_columns("key", "state")
        yield table
        yield Static(id="message")
        yield Input(id="prompt")
        with Horizontal(id="keys"):
            yield Static(Text(KEYS_MORE, no_wrap=True, overflow="ellipsis"), id="keys-more")
            yield Static(Text("  " + KEYS_ALWAYS, no_wrap=True), id="keys-always")

    def on_mount(self) -> None:
        self.query_one("#tasks").focus()
        self.refresh_view()
        s = self.stepper
        unfinished = s.unfinished(s.index) if len(s.history.workers) > 1 else 0
        if unfinished:
            self.say(f"this worker ends with {unfinished} task{'s' if unfinished > 1 else ''} not finished "
                     "(G: its last step, then w: why)")
            self.show_message()

    def on_resize(self) -> None:
        self.fit()

    # --- the screen --------------------------------------------------------------

    def refresh_view(self) -> None:
        s = self.stepper
        view = s.view()
        if self.hit:
            view.hit = self.hit
        self.current = view
        self.query_one("#head", Static).update(Group(*view.head()))
        self.query_one("#event-lines", Static).update(Group(*view.body()))
        self.query_one("#state", Static).update(Group(*view.summary(self.full)))
        table = self.query_one("#tasks", TaskTable)
        row = table.cursor_row
        table.clear()
        spell = key_text if self.full else short_key
        self.row_keys = [t.key for t in view.state.tasks]
        for t in view.state.tasks:
            table.add_row(Text(spell(t.key), no_wrap=True, overflow="ellipsis"), Text(t.state_text()))
        if self.row_keys:
            table.move_cursor(row=min(row, len(self.row_keys) - 1))
        self.show_message()

    def show_message(self) -> None:
        s = self.stepper
        parts = []
        # two lines at most: what just happened first, the breakpoints last
        if self.message:
            parts.append(self.message)
            self.message = ""
        if s.keys:
            parts.append("finding " + ", ".join(key_text(k) for k in s.keys))
            if self.current is not None and not self.current.state.tasks:
                parts.append(f"not on the worker at step {s.pos}")
        if s.states:
            parts.append("states " + ", ".join(s.states))
        if s.breakpoints:
            parts.append("breakpoints: " + "; ".join(str(bp) for bp in s.breakpoints))
        self.message_text = Text("  ·  ".join(parts))
        self.query_one("#message", Static).update(self.message_text)
        self.fit()

    def fit(self) -> None:
        """Share the rows between the panes: the key bar, the heading, the
        message and the prompt take what they need; the task list keeps
        :data:`TASK_ROWS` rows (fewer if it has fewer) and a header; the
        event block and the worker's summary share the rest, the summary
        first up to four lines; the task list takes what remains."""
        if self.current is None:
            return
        width, height = self.size
        console = self.console
        options = console.options.update(width=max(width, 1))

        def lines(renderable: Any) -> int:
            return len(console.render_lines(renderable, options, pad=False))

        view = self.current
        prompt = 3 if self.query_one("#prompt", Input).styles.display != "none" else 0
        message_h = min(lines(self.message_text), 2) if self.message_text.plain else 0
        head_h = lines(Group(*view.head()))
        rows = min(max(len(self.row_keys), 1), TASK_ROWS)
        free = max(height - 1 - prompt - message_h - head_h - (rows + 1), 0)
        state_lines = lines(Group(*view.summary(self.full)))
        event_lines = lines(Group(*view.body()))
        state_h = min(state_lines, 4, free)
        event_h = min(event_lines, free - state_h)
        state_h = min(state_lines, free - event_h)
        self.query_one("#head").styles.height = head_h
        self.query_one("#message").styles.height = message_h
        self.query_one("#state").styles.height = state_h
        self.query_one("#event").styles.height = event_h

    def say(self, message: str) -> None:
        self.message = message

    def moved(self, pos: int, hit: Optional[str] = None) -> None:
        self.stepper.go(pos)
        self.hit = hit
        self.refresh_view()

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
            self.show_message()
            return
        if found is None:
            self.say(f"no breakpoint hit {'after' if forward else 'before'} step {self.stepper.pos}")
            self.show_message()
            return
        self.moved(found[0], str(found[1]))

    def action_clear_breaks(self) -> None:
        self.stepper.breakpoints.clear()
        self.say("breakpoints cleared")
        self.show_message()

    def action_switch(self) -> None:
        if len(self.stepper.history.workers) == 1:
            self.say("the log has one worker")
            self.show_message()
            return
        with self.batch_update():
            # not through go(): the recorded time the user stands at stays
            self.stepper.switch(None)
            self.hit = None
            self.refresh_view()

    # --- the task list ------------------------------------------------------------

    def action_full_keys(self) -> None:
        self.full = not self.full
        self.say("keys in full" if self.full else "keys shortened (k: in full)")
        self.refresh_view()

    def action_event_focus(self) -> None:
        target = "#tasks" if self.focused is self.query_one("#event") else "#event"
        self.query_one(target).focus()

    def cursor_key(self) -> Any:
        """The key of the task under the list's cursor, or None."""
        row = self.query_one("#tasks", TaskTable).cursor_row
        return self.row_keys[row] if 0 <= row < len(self.row_keys) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = self.cursor_key()
        if key is not None:
            self.find(key)

    def find(self, key: Any) -> None:
        self.found = key
        self.stepper.keys = () if key is None else (key,)
        self.refresh_view()

    # --- prompts --------------------------------------------------------------------

    PROMPTS = {
        "go": "go to: step, +N, -N or stimulus id",
        "jump": "jump size N",
        "break": "breakpoint: state:KEY=STATE, stimulus:ID, event:CLASS, instruction:CLASS, raised, invalid",
        "find": "find a key: any part of it (empty: every task)",
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
        self.fit()

    def action_cancel(self) -> None:
        prompt = self.query_one("#prompt", Input)
        if prompt.styles.display != "none":
            self._close_prompt()

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.styles.display = "none"
        self.asking = None
        self.query_one("#tasks").focus()
        self.fit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        what, text = self.asking, event.value.strip()
        self._close_prompt()
        try:
            self.answer(what, text)
        except BadInput as e:  # what the user typed names nothing: say so, stay
            self.say(f"error: {e}")
            self.show_message()

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
            self.show_message()
        elif what == "break":
            bp = s.add_break(text)
            self.say(f"breakpoint added: {bp}")
            self.show_message()
        elif what == "find":
            if not text:
                self.find(None)
                return
            keys = s.find_keys(text)
            if len(keys) == 1:
                self.find(keys[0])
            else:
                self.push_screen(PickScreen(text, keys), lambda key: key is not None and self.find(key))
        elif what == "filter":
            s.states = tuple(x.strip() for x in text.split(",") if x.strip())
            self.refresh_view()
        elif what == "story" and text:
            keys = s.find_keys(text)
            if len(keys) == 1:
                self.show_story(keys[0])
            else:
                self.push_screen(PickScreen(text, keys), lambda key: key is not None and self.show_story(key))

    # --- windows ----------------------------------------------------------------------

    def action_story(self) -> None:
        key = self.found if self.found is not None else self.cursor_key()
        if key is not None:
            self.show_story(key)
        else:
            self.action_ask("story")

    def show_story(self, key: Any) -> None:
        try:
            story = self.stepper.story(key)
        except BadInput as e:
            self.say(f"error: {e}")
            self.show_message()
            return
        self.push_screen(TextScreen(f"story of {key_text(key)}", story))

    def action_diff(self) -> None:
        s = self.stepper
        self.push_screen(TextScreen(f"diff: step {max(s.pos - 1, 0)} → {s.pos}", s.diff()))

    def action_why(self) -> None:
        self.push_screen(TextScreen(f"why, at step {self.stepper.pos}", self.stepper.why()))

    def action_help(self) -> None:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column("keys", style="bold", no_wrap=True)
        t.add_column("what")
        for keys, what in HELP:
            t.add_row(keys, what)
        self.push_screen(TextScreen("replay step: keys", t))


def run(stepper: Stepper, *, jump: int = 100, on_ready: Optional[Callable[[StepApp], None]] = None) -> None:
    StepApp(stepper, jump=jump).run()
