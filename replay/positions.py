"""Choosing a worker and reading a position: one way for the replay and the index.

A position is a step number (1-based per worker, 0 = the empty initial state)
or a stimulus id, meaning the state after the last step carrying it: stimulus
ids are not unique. A worker is named by index, full address, or a unique
part of one.
"""
from __future__ import annotations

from collections.abc import Callable
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
    if text.isdigit() and int(text) < len(addresses):
        return int(text)
    if text in addresses:
        return addresses.index(text)
    part = [i for i, a in enumerate(addresses) if text in a]
    if len(part) == 1:
        return part[0]
    if not part:
        raise NotFound(f"no worker matches {text!r}")
    raise NotFound(f"{text!r} matches several workers: " + ", ".join(addresses[i] for i in part))


def step_of(pos: Any, address: str, events: int, last_step_of: Callable[[str], Optional[int]]) -> int:
    """The step ``pos`` names on a worker with ``events`` steps; None is the last."""
    if pos is None:
        return events
    if isinstance(pos, int) or (isinstance(pos, str) and pos.isdigit()):
        step = int(pos)
        if not 0 <= step <= events:
            raise NotFound(f"step {step} is out of range: {address} has steps 1..{events}")
        return step
    step = last_step_of(pos)
    if step is None:
        raise NotFound(f"no step of {address} has stimulus id {pos!r}")
    return step
