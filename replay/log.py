"""A log as workers and their records: one streaming pass builds the index.

``ClusterLog.open(path)`` reads the file once, checks the order of every
worker's records (header first, steps numbered 1, 2, 3 … with no gaps), and
keeps per worker the header, counts, and where its step lines start, so that
later passes can stream one worker's steps without re-reading the others.
"""
from __future__ import annotations

import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import distributed
from pydantic import ValidationError

from replay.logfile import LogError, iter_lines
from schemas.records import FORMAT, RECORD, VERSION

KINDS = ("header", "step", "resources", "end")


@dataclass
class WorkerLog:
    """What one pass over the log learned about one worker."""

    address: str
    index: int
    header: dict
    header_line: int
    events: int = 0
    event_counts: Counter = field(default_factory=Counter)
    first_handled: float | None = None
    last_handled: float | None = None
    ended: bool = False
    errors: int = 0
    #: line number of every step, in order (line numbers fit in 64 bits)
    step_lines: array.array = field(default_factory=lambda: array.array("q"))
    #: last step carrying each stimulus id
    last_step_of: dict[str, int] = field(default_factory=dict)

    @property
    def deterministic(self) -> bool:
        return bool(self.header.get("deterministic"))


def pydantic_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
    return f"{loc}: {err['msg']}" if loc else err["msg"]


class ClusterLog:
    """A log file of one or more workers."""

    def __init__(self, path: str):
        self.path = path
        self.workers: list[WorkerLog] = []
        self.warnings: list[str] = []
        self.lines = 0

    @classmethod
    def open(cls, path: str, *, validate: bool = False) -> ClusterLog:
        """Read ``path`` once. ``validate`` checks every line against the schema."""
        log = cls(path)
        log._scan(validate)
        return log

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def _scan(self, validate: bool) -> None:
        by_address: dict[str, WorkerLog] = {}
        path = self.path
        for lineno, rec in iter_lines(path, warn=self._warn):
            self.lines = lineno
            kind = rec.get("kind")
            if kind not in KINDS:
                raise LogError(path, lineno, f"unknown record kind {kind!r}")
            if validate:
                try:
                    RECORD.validate_python(rec)
                except ValidationError as e:
                    raise LogError(path, lineno, pydantic_error(e)) from None
            address = rec.get("worker")
            if type(address) is not str:
                raise LogError(path, lineno, "worker: missing or not a string")
            w = by_address.get(address)
            if kind == "header":
                if w is not None:
                    raise LogError(path, lineno, f"second header for worker {address}")
                _check_header(path, lineno, rec, self._warn)
                w = by_address[address] = WorkerLog(
                    address, len(self.workers), rec, lineno
                )
                self.workers.append(w)
                continue
            if w is None:
                raise LogError(path, lineno, f"{kind} record before the header of {address}")
            if w.ended:
                raise LogError(path, lineno, f"{kind} record after the end of {address}")
            seq = rec.get("seq")
            if kind == "step":
                if seq != w.events + 1:
                    raise LogError(
                        path, lineno,
                        f"step {seq!r} of {address} out of order (expected {w.events + 1})",
                    )
                ev = rec.get("event")
                if type(ev) is not dict or type(ev.get("cls")) is not str:
                    raise LogError(path, lineno, "event: missing or has no class")
                sid = ev.get("stimulus_id")
                if type(sid) is not str:
                    raise LogError(path, lineno, "event.stimulus_id: missing or not a string")
                handled = rec.get("handled")
                if not isinstance(handled, (int, float)) or isinstance(handled, bool):
                    raise LogError(path, lineno, "handled: missing or not a number")
                w.events = seq
                w.event_counts[ev["cls"]] += 1
                w.step_lines.append(lineno)
                w.last_step_of[sid] = seq
                if w.first_handled is None:
                    w.first_handled = handled
                w.last_handled = handled
                if rec.get("error") is not None:
                    w.errors += 1
            elif kind == "resources":
                if seq != w.events + 1:
                    raise LogError(path, lineno, f"resources record for step {seq!r} of {address} out of order")
            else:  # end
                if seq != w.events:
                    raise LogError(path, lineno, f"end at step {seq!r} of {address}, which has {w.events} steps")
                w.ended = True
        if not self.workers:
            raise LogError(path, None, "no worker header: not a dask-replay log, or empty")

    # --- choosing a worker ---------------------------------------------

    def worker(self, which: str | int | None = None) -> WorkerLog:
        """A worker by index, full address or unique part of one."""
        if which is None or which == "":
            if len(self.workers) == 1:
                return self.workers[0]
            raise KeyError(
                f"the log has {len(self.workers)} workers; choose one with --worker: "
                + ", ".join(w.address for w in self.workers)
            )
        text = str(which)
        if text.isdigit() and int(text) < len(self.workers):
            return self.workers[int(text)]
        exact = [w for w in self.workers if w.address == text]
        if exact:
            return exact[0]
        part = [w for w in self.workers if text in w.address]
        if len(part) == 1:
            return part[0]
        if not part:
            raise KeyError(f"no worker matches {text!r}")
        raise KeyError(f"{text!r} matches several workers: " + ", ".join(w.address for w in part))

    # --- streaming one worker's records --------------------------------

    def records(self, worker: WorkerLog, *, start: int = 1) -> Iterator[tuple[int, dict]]:
        """``(line, record)`` of the worker's steps and resource changes from step ``start``.

        A resources record carries the step it precedes, so it is yielded
        with the steps from ``start`` on.
        """
        address = worker.address
        for lineno, rec in iter_lines(self.path):
            if (
                rec.get("worker") == address
                and rec.get("kind") in ("step", "resources")
                and rec["seq"] >= start
            ):
                yield lineno, rec


def _check_header(path: str, lineno: int, rec: dict, warn: Callable[[str], None]) -> None:
    if rec.get("format") != FORMAT:
        raise LogError(path, lineno, f"format: not a {FORMAT} log ({rec.get('format')!r})")
    version = rec.get("version")
    if type(version) is not int:
        raise LogError(path, lineno, "version: missing or not an integer")
    if version > VERSION:
        raise LogError(
            path, lineno,
            f"version: log format {version} is newer than this dask-replay reads ({VERSION}); upgrade dask-replay",
        )
    if type(rec.get("state")) is not dict:
        raise LogError(path, lineno, "state: missing")
    recorded = rec.get("distributed")
    if recorded != distributed.__version__:
        warn(
            f"{path}:{lineno}: recorded with distributed {recorded}, reading with "
            f"{distributed.__version__}; event classes may differ"
        )


def summary(log: ClusterLog) -> dict[str, Any]:
    """Per-worker facts of a log, as plain data (``replay check``)."""
    return {
        "path": log.path,
        "lines": log.lines,
        "warnings": list(log.warnings),
        "workers": [
            {
                "address": w.address,
                "dask": w.header.get("dask"),
                "distributed": w.header.get("distributed"),
                "deterministic": w.deterministic,
                "from_empty": w.header.get("from_empty"),
                "events": w.events,
                "event_counts": dict(sorted(w.event_counts.items())),
                "first_handled": w.first_handled,
                "last_handled": w.last_handled,
                "duration": (w.last_handled - w.first_handled) if w.events else 0.0,
                "ended": w.ended,
                "errors": w.errors,
            }
            for w in log.workers
        ],
    }
