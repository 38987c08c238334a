"""Choosing a worker and reading a position: one way for the replay and the index.

A position is a step number (1-based per worker, 0 = the empty initial state)
or a stimulus id, meaning the state after the last step carrying it: stimulus
ids are not unique. A worker is named by index, full address, a whole port, or a unique
part of an address (a number is an index or a port, never part of one).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, Optional

from replay.errors import NotFound


def choose_worker(addresses: list[str], which: str | int | None = None) -> int:
    """The index of the worker ``which`` names; None chooses the only worker."""
    if which is None or which == "":
        if len(addresses) == 1:
            return 0
        raise NotFound(
            f"the log has {len(addresses)} workers; choose one with --worker: " + ", ".join(addresses)
        )
    text = str(which)
    if text in addresses:
        return addresses.index(text)
    if text.isdigit():
        # a number is an index, or a whole port: never part of one
        if int(text) < len(addresses):
            return int(text)
        port = [i for i, a in enumerate(addresses) if a.rsplit(":", 1)[-1] == text]
        if len(port) == 1:
            return port[0]
        if not port:
            raise NotFound(f"no worker {text}: the log has {len(addresses)} worker"
                           f"{'' if len(addresses) == 1 else 's'} (0..{len(addresses) - 1}), and no port "
                           f"{text}: " + ", ".join(addresses))
        raise NotFound(f"port {text} names several workers: " + ", ".join(addresses[i] for i in port))
    part = [i for i, a in enumerate(addresses) if text in a]
    if len(part) == 1:
        return part[0]
    if not part:
        close = difflib.get_close_matches(text, addresses, n=3, cutoff=0.5)
        raise NotFound(f"no worker matches {text!r}; "
                       + (f"closest: {', '.join(close)}" if close else "the workers: " + ", ".join(addresses)))
    raise NotFound(f"{text!r} matches several workers: " + ", ".join(addresses[i] for i in part))


def step_of(pos: Any, address: str, events: int, last_step_of: Callable[[str], Optional[int]],
            known: Optional[Callable[[], Iterable[str]]] = None) -> int:
    """The step ``pos`` names on a worker with ``events`` steps; None is the last.
    ``known()`` lists the worker's stimulus ids, to name the closest to an unknown one."""
    if pos is None:
        return events
    if isinstance(pos, int) or (isinstance(pos, str) and pos.isdigit()):
        step = int(pos)
        if not 0 <= step <= events:
            raise NotFound(f"step {step} is out of range: {address} has steps 1..{events}")
        return step
    step = last_step_of(pos)
    if step is None:
        raise NoSuchStimulus(address, pos, known)
    return step


class NoSuchStimulus(NotFound):
    """No step of a worker carries this stimulus id. The message names the
    closest ids, looked for when it is first read: a caller that tries a text
    as a stimulus id and then as a key (``replay story``) seldom shows it, and
    a long log has hundreds of thousands of ids to compare."""

    def __init__(self, address: str, pos: Any, known: Optional[Callable[[], Iterable[str]]] = None):
        super().__init__(f"no step of {address} has stimulus id {pos!r}")
        self.pos, self._known = pos, known
        self._text: Optional[str] = None

    def __str__(self) -> str:
        if self._text is None:
            close = difflib.get_close_matches(str(self.pos), list(self._known()), n=3, cutoff=0.6) \
                if self._known else []
            self._text = self.message + (f"; closest: {', '.join(close)}" if close else "")
            self._known = None
        return self._text

    def __reduce__(self) -> tuple:
        # across processes as the plain error it reads as
        return NotFound, (str(self),)
