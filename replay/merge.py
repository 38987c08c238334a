"""Merge per-worker logs into one cluster log, streaming.

The recorder writes one file per worker. A cluster log interleaves them by
wall-clock time (``handled`` of a step, ``time`` of an end record) so that a
reader sees the cluster's stimuli roughly as they happened. Every header comes
first; each worker's own records keep their exact order, whatever its clock
did, because ``heapq.merge`` takes an input's next record only after the
previous one was written. A ``resources`` record travels with the step it
precedes.
"""
from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Iterator

from replay.log import SIDE_KINDS
from replay.logfile import SCHEDULER_LOG_NAME, LogError, iter_lines, log_files, write_records

Warn = Callable[[str], None]


def expand(paths: list[str]) -> list[str]:
    """Files as given; a directory stands for the worker logs in it."""
    out: list[str] = []
    for p in paths:
        if p == "-":  # each input is read twice: its header first
            raise LogError(p, None, "merge reads files, not standard input")
        if os.path.isdir(p):
            found = log_files(p)
            if not found:
                raise LogError(p, None, "no .jsonl or .jsonl.gz worker logs in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def _groups(path: str, index: int, warn: Warn | None) -> Iterator[tuple]:
    """``(sort key, input index, n, records)``; a resources record waits for its step."""
    pending: list[dict] = []
    n = 0
    for lineno, rec in iter_lines(path, warn=warn):
        kind = rec.get("kind")
        if kind == "header":
            key = -math.inf
        elif kind == "resources":
            pending.append(rec)
            continue
        elif kind == "step":
            key = rec.get("handled")
        elif kind == "end":
            key = rec.get("time")
        elif kind in SIDE_KINDS:  # a dump's end states: after every step, in order
            key = math.inf
        else:
            raise LogError(path, lineno, f"unknown record kind {kind!r}")
        if isinstance(key, bool) or not isinstance(key, (int, float)):
            raise LogError(path, lineno, f"{kind}: missing or non-numeric time")
        n += 1
        yield key, index, n, [*pending, rec]
        pending = []
    if pending:  # a worker stopped between set_resources and its next stimulus
        yield math.inf, index, n + 1, pending


def _workers(paths: list[str], warn: Warn | None) -> None:
    """Refuse inputs whose records two workers would share an address."""
    seen: dict[str, str] = {}
    for path in paths:
        for lineno, rec in iter_lines(path, warn=warn):
            if rec.get("kind") != "header":
                raise LogError(path, lineno, "a worker log must start with its header")
            address = rec.get("worker")
            if address in seen:
                raise LogError(
                    path, lineno,
                    f"worker {address} also in {seen[address]}; merge logs of one run only",
                )
            seen[address] = path
            break
        else:
            raise LogError(path, None, "empty log")


def merged(paths: list[str], *, warn: Warn | None = None) -> Iterator[dict]:
    """The records of ``paths`` interleaved by time, one at a time."""
    _workers(paths, warn)
    # (key, input index, n) is unique, so the record lists are never compared
    streams = [_groups(p, i, warn) for i, p in enumerate(paths)]
    for _, _, _, records in heapq.merge(*streams):
        yield from records


def merge(paths: list[str], out: str, *, warn: Warn | None = None) -> int:
    """Write the cluster log of ``paths`` to ``out`` (gzip if it ends in .gz).
    A scheduler's log given among them is no worker's: it is left out (the
    read commands find it beside the cluster log, in the same folder)."""
    paths = expand(paths)
    for p in [p for p in paths if SCHEDULER_LOG_NAME.fullmatch(os.path.basename(p))]:
        paths.remove(p)
        if warn:
            warn(f"{p}: the scheduler's log is not merged; keep it beside {out}")
    if not paths:
        raise LogError(out, None, "nothing to merge")
    if any(os.path.exists(out) and os.path.samefile(p, out) for p in paths):
        raise LogError(out, None, "the output is also an input")
    # a failed merge leaves no half-written cluster log behind
    part = out + ".part"
    try:
        n = write_records(part, merged(paths, warn=warn), compress=out.endswith(".gz"))
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    os.replace(part, out)
    return n


__all__ = ["expand", "merge", "merged"]
