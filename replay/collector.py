"""How often the garbage collector runs while the project works.

A replay and an index answer both make many objects that live a while and
few reference cycles: a replay's state machine and read-ahead, an answer's
keyframes and blocks kept for the next question. At CPython's default first
threshold (700) the collector runs every few events of a replay, and a few
hundred times in one answer of the index, each time walking whatever is
kept; :func:`rare_collections` runs it every :data:`RARE_GEN0` allocations
instead, and gives the process its thresholds back when the last such
stretch ends. Nothing here imports the state machine: the index's query
path uses it too.
"""
from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

#: the collector's first threshold while replaying or answering. At 700 it
#: scans the calls a replay has read ahead but not yet replayed (about a
#: tenth of a replay's time) and an index's kept keyframes (half of an
#: answer's); at this one it runs every few thousand events and finds them gone
RARE_GEN0 = 50_000
#: stretches of rare collection running in this process, nested or
#: interleaved (a replay's feed is a generator)
_active = 0
#: the thresholds before the first of them, restored after the last
_thresholds: tuple[int, int, int] = gc.get_threshold()

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """Collect garbage rarely within ``with``. A threshold of 0 (automatic
    collection off) is left alone."""
    global _active, _thresholds
    if _active == 0:
        _thresholds = gc.get_threshold()
        if _thresholds[0]:
            gc.set_threshold(max(_thresholds[0], RARE_GEN0), *_thresholds[1:])
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0:
            gc.set_threshold(*_thresholds)


def collecting_rarely(answer: F) -> F:
    """``answer`` runs under :func:`rare_collections`."""

    @functools.wraps(answer)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with rare_collections():
            return answer(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
