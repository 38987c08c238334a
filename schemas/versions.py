"""The ``distributed`` releases dask-replay records and replays, and how their
state machines differ: the one place that knows.

A log has one format whatever release recorded it: the event and instruction
fields of the newest supported release (the tables of :mod:`schemas.convert`).
So a log of any supported release reads, and replays, under any other, and one
JSON Schema describes them all. Each :class:`Era` is a range of releases whose
classes differ from that format in the same way; :mod:`schemas.convert` builds
the installed release's encoders and decoders from its era, and nothing else
in the project asks which release is installed.

Found by comparing the dataclasses of ``distributed/worker_state_machine.py``
at every release tag from 2024.1.0 on: only the three differences below. The
``WorkerState`` constructor and the set of event and instruction classes are
the same throughout.

Free of pydantic: the recorder imports it inside live workers.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import distributed

#: the oldest and newest release dask-replay records with and replays under;
#: pyproject.toml declares the same range
OLDEST = "2024.1.0"
NEWEST = "2026.8.0"

Release = tuple[int, int, int]

_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_PLAIN = re.compile(r"[0-9A-Za-z.+_-]{1,40}")


def release(version: str) -> Release | None:
    """``(year, month, patch)`` of a version string; dev and local parts, as in
    ``2026.8.0+12.gabc``, count as the release they build on. None if it is
    not a version."""
    m = _RELEASE.match(version) if isinstance(version, str) else None
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


@dataclass(frozen=True)
class Era:
    """Releases ``first`` to ``last`` (inclusive), whose classes differ from
    the log format as described."""

    first: str
    last: str
    #: fields the era's classes have and the log format does not: not
    #: recorded; a decoded event gets this value
    class_only: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: fields of the log format the era's classes lack: recorded as null,
    #: left out when decoding
    log_only: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``ComputeTaskEvent.dummy_runspec`` takes the key (a ``Task``) or
    #: nothing (a tuple)
    runspec_takes_key: bool = True

    def __contains__(self, version: str) -> bool:
        r = release(version)
        return r is not None and release(self.first) <= r <= release(self.last)  # type: ignore[operator]


#: ``ComputeTaskEvent.duration``, the scheduler's estimate of the run time,
#: went in 2025.2.0: the state machine only stores it on the task, so a replay
#: under an older release gives it ``ComputeTaskEvent.dummy``'s value.
#: ``LongRunningMsg.run_id`` came in 2025.2.0.
_BEFORE_2025_2 = {
    "class_only": {"ComputeTaskEvent": {"duration": 1.0}},
    "log_only": {"LongRunningMsg": ("run_id",)},
}

ERAS: tuple[Era, ...] = (
    Era("2024.1.0", "2024.10.0", **_BEFORE_2025_2, runspec_takes_key=False),
    # run_spec became a Task
    Era("2024.11.0", "2025.1.0", **_BEFORE_2025_2),
    Era("2025.2.0", NEWEST),
)

#: fields of the log format that some supported release lacks: a replay under
#: another release cannot be compared on them
VERSIONED: dict[str, frozenset[str]] = {}
for _era in ERAS:
    for _cls, _fields in _era.log_only.items():
        VERSIONED[_cls] = VERSIONED.get(_cls, frozenset()) | frozenset(_fields)


def supported(version: str) -> bool:
    r = release(version)
    return r is not None and release(OLDEST) <= r <= release(NEWEST)  # type: ignore[operator]


def era_of(version: str) -> Era | None:
    for era in ERAS:
        if version in era:
            return era
    return None


def installed_era() -> Era:
    """The era of the installed ``distributed``; an installation outside the
    range is refused outright (pip would not have made one)."""
    era = era_of(distributed.__version__)
    if era is None:
        raise ImportError(
            f"dask-replay supports distributed {OLDEST} to {NEWEST}; "
            f"{distributed.__version__} is installed"
        )
    return era


def unsupported_message(recorded: Any) -> str | None:
    """Why a log recorded with ``recorded`` cannot be read here, in one line
    naming both versions; None if it can."""
    if isinstance(recorded, str) and supported(recorded):
        return None
    # the text comes from a log: shown as is only when it looks like a version
    plain = isinstance(recorded, str) and _PLAIN.fullmatch(recorded)
    shown = recorded if plain else repr(recorded)[:60]
    return (
        f"recorded with distributed {shown}, outside the releases this "
        f"dask-replay reads ({OLDEST} to {NEWEST}); distributed {distributed.__version__} "
        "is installed"
    )
