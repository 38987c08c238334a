"""Which release changed a reproducer's outcome: a search over releases.

``git bisect`` for releases instead of commits. The releases from ``--good``
to ``--bad`` are ordered oldest first; the older end's outcome is one side
of the boundary, the newer end's the other. A *fix* has ``--bad`` older than
``--good`` and the answer is the first good release; a *regression* has it
the other way round and the answer is the first bad one. A release counts
as good when its outcome is the one ``--good`` gives, anything else counts as
bad (the table shows each outcome as it was).

Pure: :func:`search` never installs or runs anything. It hands rounds of
releases to a :data:`Runner` (``replay/releases.py`` is the real one: a
cached venv per release and a subprocess each) and decides from the
:class:`Trial` s that come back. A release the runner could not use (not
installable, not importable, outside the versions a log reads under) is a
skipped trial: the search moves to its nearest neighbour, and an answer next
to skipped releases says which ones it could not tell apart.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from replay.errors import BadInput

#: pytest's verdict on a test file (``pass``, ``fail``, ``error``), a log's
#: predicate (``holds``, ``gone``), or ``timeout``
Outcome = str


@dataclass(frozen=True, slots=True)
class Trial:
    """One release tried."""

    release: str
    #: what the reproducer gave under it; None: skipped (``note`` says why)
    outcome: Optional[Outcome]
    #: wall time of installing (when not cached) and running it
    seconds: float
    #: why it was skipped, or what the outcome looked like (a failure's first line)
    note: str = ""
    #: of ``seconds``, those spent making the release's venv; 0: it was reused
    setup: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.outcome is None


#: runs one round of releases (side by side, if it can) and returns a trial of each
Runner = Callable[[Sequence[str]], Iterable[Trial]]


@dataclass
class Bisection:
    """What a search found; renders itself as the table of releases tried and the answer."""

    #: every release from the older end to the newer one, oldest first
    releases: list[str]
    good: str
    bad: str
    #: the trials made, by release
    trials: dict[str, Trial] = field(default_factory=dict)
    #: the last release with the older end's outcome, and the first after it
    #: with the newer end's; None when both ends give the same outcome
    last: Optional[str] = None
    first: Optional[str] = None
    #: releases between ``last`` and ``first`` that were skipped: the
    #: boundary may be at any of them
    unresolved: list[str] = field(default_factory=list)

    @property
    def kind(self) -> Literal["fix", "regression"]:
        return "fix" if self.releases.index(self.bad) < self.releases.index(self.good) else "regression"

    @property
    def found(self) -> bool:
        return self.first is not None

    def answer(self) -> str:
        if not self.found:
            outcomes = sorted({t.outcome for t in self.trials.values() if t.outcome is not None})
            return f"every release tried gives {', '.join(outcomes)}: no boundary between {self.bad} and {self.good}"
        if self.kind == "fix":
            text = f"first good: {self.first} (last bad: {self.last})"
        else:
            text = f"first bad: {self.first} (last good: {self.last})"
        if self.unresolved:
            text += f"; skipped between them, so it may be any of: {', '.join(self.unresolved)}"
        return text

    def to_json(self) -> dict:
        return {
            "good": self.good,
            "bad": self.bad,
            "kind": self.kind,
            "releases": self.releases,
            "trials": [
                {"release": t.release, "outcome": t.outcome, "skipped": t.skipped,
                 "seconds": round(t.seconds, 3), "setup_seconds": round(t.setup, 3), "note": t.note}
                for t in self.tried()
            ],
            "found": self.found,
            "first": self.first,
            "last": self.last,
            "unresolved": self.unresolved,
            "answer": self.answer(),
        }

    def tried(self) -> list[Trial]:
        return [self.trials[r] for r in self.releases if r in self.trials]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(box=None, pad_edge=False, show_edge=False)
        table.add_column("release")
        table.add_column("outcome")
        table.add_column("seconds", justify="right")
        table.add_column("venv")
        table.add_column("")
        for t in self.tried():
            ends = " (good)" if t.release == self.good else " (bad)" if t.release == self.bad else ""
            outcome = "skipped" if t.skipped else t.outcome
            venv = f"made in {t.setup:.1f} s" if t.setup else "" if t.skipped else "reused"
            # notes come from a reproducer's output: plain text, never markup
            table.add_row(Text(t.release + ends), Text(outcome, style=_style(self, t)),
                          f"{t.seconds:.1f}", venv, Text(t.note))
        yield table
        yield Text(self.answer(), style="bold")


def _style(b: Bisection, t: Trial) -> str:
    if t.skipped:
        return "dim"
    good = b.trials.get(b.good)
    return "green" if good is not None and t.outcome == good.outcome else "red"


def between(releases: Sequence[str], good: str, bad: str) -> list[str]:
    """The releases from ``good`` to ``bad`` (either order), oldest first;
    ``releases`` is oldest first and holds both."""
    for end, option in ((good, "--good"), (bad, "--bad")):
        if end not in releases:
            raise BadInput(f"{option} {end}: not a release in the package index "
                           f"(it has {_around(releases, end)})")
    if good == bad:
        raise BadInput(f"--good and --bad are the same release ({good})")
    i, j = sorted((releases.index(good), releases.index(bad)))
    return list(releases[i: j + 1])


def _around(releases: Sequence[str], version: str) -> str:
    near = [r for r in releases if r.split(".")[0] == version.split(".")[0]] or list(releases[-5:])
    return ", ".join(near[:12]) + (", …" if len(near) > 12 else "")


def search(
    releases: Sequence[str], good: str, bad: str, run: Runner, *, jobs: int = 1, keep_going: bool = False,
) -> Bisection:
    """Find where the outcome changes between ``good`` and ``bad``.

    ``releases`` is every release there is, oldest first. Each round hands up
    to ``jobs`` releases to ``run``: first the two ends, then releases spread
    evenly over the range still in doubt (one round of ``jobs`` releases
    cuts it into ``jobs + 1`` parts), until the last release with the older
    end's outcome is next to the first with the newer end's, or only skipped
    releases lie between them. With ``keep_going`` every release is run and
    the answer is the last change of outcome.
    """
    b = Bisection(between(releases, good, bad), good, bad)
    order = b.releases

    def round_(todo: Sequence[str]) -> None:
        for t in run(list(todo)):
            b.trials[t.release] = t

    round_([order[0], order[-1]])
    for end, option in ((good, "--good"), (bad, "--bad")):
        t = b.trials[end]
        if t.skipped:
            raise BadInput(f"{option} {end} cannot be used: {t.note}")
    older, good_outcome = b.trials[order[0]].outcome, b.trials[good].outcome
    if keep_going:
        rest = order[1:-1]
        for i in range(0, len(rest), max(jobs, 1)):
            round_(rest[i: i + max(jobs, 1)])
    if b.trials[order[-1]].outcome == older:
        return b  # both ends agree: nothing to look for (the table says what the middle gave)

    def like_older(i: int) -> bool:
        # good is the one outcome --good gives; any other is bad
        is_good = b.trials[order[i]].outcome == good_outcome
        return is_good if b.kind == "regression" else not is_good

    lo, hi = 0, len(order) - 1
    while True:
        lo, hi = _narrow(b, order, lo, hi, like_older)
        todo = _spread([i for i in range(lo + 1, hi) if order[i] not in b.trials], lo, hi, jobs)
        if not todo:
            break
        round_([order[i] for i in todo])
    b.last, b.first = order[lo], order[hi]
    b.unresolved = [order[i] for i in range(lo + 1, hi)]
    return b


def _narrow(b: Bisection, order: Sequence[str], lo: int, hi: int,
            like_older: Callable[[int], bool]) -> tuple[int, int]:
    """The range still in doubt after the trials made: ``lo`` the last tried
    release with the older end's outcome, ``hi`` the next one tried after it.
    Taking the last such release keeps the answer at the last change when
    the outcome flips back and forth (a full table): a fix since when the
    reproducer passes for good."""
    tried = [i for i in range(lo, hi + 1)
             if order[i] in b.trials and not b.trials[order[i]].skipped]
    last = max(i for i in tried if like_older(i))
    return last, min(i for i in tried if i > last)


def _spread(candidates: list[int], lo: int, hi: int, jobs: int) -> list[int]:
    """Up to ``jobs`` of ``candidates`` (untried indices between ``lo`` and
    ``hi``), each the nearest to one of the points cutting the range into
    ``jobs + 1`` equal parts: one job is the midpoint, as in a binary search."""
    picked: list[int] = []
    free = list(candidates)
    for k in range(1, max(jobs, 1) + 1):
        if not free:
            break
        point = lo + (hi - lo) * k / (max(jobs, 1) + 1)
        best = min(free, key=lambda i: (abs(i - point), i))
        picked.append(best)
        free.remove(best)
    return sorted(picked)
