"""A log as workers and their records: one streaming pass builds the index.

``ClusterLog.open(path)`` reads the file once, checks the order of every
worker's records (header first, steps numbered 1, 2, 3 … with no gaps), and
keeps per worker the header, counts, and where its step lines start, so that
later passes can stream one worker's steps without re-reading the others.
"""
from __future__ import annotations

import os
import weakref
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import distributed
from pydantic import ValidationError

from replay.determinism import valid_seed
from replay.errors import LogError
from replay.logfile import (
    KINDS,
    SIDE_KINDS,
    LogName,
    iter_lines,
    lines_at,
    log_inputs,
    log_name,
    scan_lines,
    spool_stdin,
)
from replay.merge import Located, merged_lines, records_of
from replay.positions import choose_worker
from schemas.codec import FORMAT, VERSION, CodecError
from schemas.convert import EVENT_FIELDS, decode_event
from schemas.records import RECORD, Header


@dataclass
class WorkerLog:
    """What one pass over the log learned about one worker."""

    address: str
    index: int
    header: dict
    header_line: int
    #: the file holding the worker's records (one of a directory's)
    file: str = ""
    events: int = 0
    event_counts: Counter = field(default_factory=Counter)
    first_handled: float | None = None
    last_handled: float | None = None
    ended: bool = False
    #: why the recorder stopped, as its ``end`` record says ("teardown": the
    #: plugin was torn down, by the worker closing or by being unregistered)
    end_reason: str | None = None
    errors: int = 0
    #: last step carrying each stimulus id; built on first use, since a
    #: million ids cost more memory than the rest of the index
    last_step_of: dict[str, int] | None = None
    #: of each of the worker's step and resources records, in log order: its
    #: line, where the line starts (a byte offset in the uncompressed log) and
    #: its ``seq`` (ascending), so that reading one worker of a cluster log
    #: parses that worker's lines only
    lines: array = field(default_factory=lambda: array("L"))
    offsets: array = field(default_factory=lambda: array("Q"))
    seqs: array = field(default_factory=lambda: array("L"))
    #: the address a worker named before it had one (``pid-N``) got later,
    #: from its ``resources`` or ``end`` records
    later_address: str | None = None

    @property
    def deterministic(self) -> bool:
        return bool(self.header.get("deterministic"))


def pydantic_error(e: ValidationError) -> str:
    errors = e.errors(include_url=False)
    if any(err["type"] in ("recursion_loop", "recursion_depth_exceeded") for err in errors):
        return "nested too deeply"
    err = errors[0]
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        loc = ".".join(str(p) for p in err["loc"][1:])
        what = "event class" if ctx.get("discriminator") == "'cls'" else "tag"
        return f"{loc}: unknown {what} {_short(ctx.get('tag'))}"
    # loc starts with the record kind, the tag pydantic picked the model by
    loc = ".".join(str(p) for p in err["loc"][1:])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _short(x: Any, limit: int = 80) -> str:
    """``repr`` of a value from a log, cut short: a hostile line may hold megabytes."""
    text = repr(x) if not isinstance(x, (list, dict)) or len(x) < 100 else f"<{type(x).__name__} of {len(x)}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_text(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _from_recursion(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, RecursionError):
            return True
        e = e.__cause__ or e.__context__
    return False


def _version_hint(header: dict) -> str:
    recorded = header.get("distributed")
    if recorded == distributed.__version__:
        return ""
    return f" (recorded with distributed {_short(recorded)}, read with {distributed.__version__})"


def check_event(path: str, lineno: int, ev: dict, header: dict) -> None:
    """Is ``ev`` an event of a class, with the fields, this ``distributed`` has?

    Cheap enough for every line of the fast path; it is what tells a log of
    another dask version apart.
    """
    cls = ev.get("cls")
    fields = EVENT_FIELDS.get(cls) if type(cls) is str else None
    if fields is None:
        raise LogError(path, lineno, f"event: unknown event class {_short(cls)}" + _version_hint(header))
    if len(ev) != len(fields) + 2 or not ev.keys() >= fields.keys() or "stimulus_id" not in ev:
        expected = {"cls", "stimulus_id", *fields}
        extra = sorted(map(str, ev.keys() - expected))
        missing = sorted(expected - ev.keys())
        what = ", ".join(
            [f"unknown field(s) {extra}"] * bool(extra) + [f"missing field(s) {missing}"] * bool(missing)
        )
        raise LogError(path, lineno, f"event: {cls} {what}" + _version_hint(header))


def decode_step(path: str, lineno: int, rec: dict, header: dict | None = None):
    """The real dask event of a step record, or a :class:`LogError` naming its line."""
    try:
        return decode_event(rec["event"])
    except CodecError as e:
        msg = "event: nested too deeply" if _from_recursion(e) else f"event: {_short_text(str(e))}"
    except RecursionError:
        msg = "event: nested too deeply"
    raise LogError(path, lineno, msg + (_version_hint(header) if header else ""))


class ClusterLog:
    """A log file of one or more workers."""

    def __init__(self, path: str, source: LogName | None = None, files: list[str] | None = None):
        #: the name messages use; ``<stdin>`` for ``-``
        self.path = path
        #: what is read: the file, a temporary copy of standard input for
        #: ``-``, or the directory (or files) of a log of several files
        self.source: LogName = source or path
        #: the files of a directory or of several files, read merged by time
        self.files = files
        self.workers: list[WorkerLog] = []
        self.warnings: list[str] = []
        self.lines = 0
        #: records the compiled schema parsed and passed (``validate``: the
        #: rest went the pydantic way)
        self.checked = 0

    @classmethod
    def open(cls, path: LogName, *, validate: bool = False) -> ClusterLog:
        """Read ``path`` once: a file, ``-``, a directory of worker logs or
        several files (merged in memory by recorded time). ``validate`` checks
        every line against the schema and decodes every event as the engine will."""
        if path == "-":
            tmp = spool_stdin()
            log = cls("<stdin>", tmp)
            weakref.finalize(log, os.unlink, tmp)
        else:
            files = log_inputs(path)
            log = cls(log_name(path), path, files)
        log._scan(validate)
        return log

    def _lines(self, warn: Callable[[str], None] | None = None) -> Iterator[Located]:
        """``(file, line, record)`` of every record, a directory's merged by time."""
        if self.files is None:
            return records_of(self.path, warn=warn, source=self.source)  # type: ignore[arg-type]
        return merged_lines(self.files, warn=warn)

    def file_of(self, worker: WorkerLog) -> str:
        """The name messages about the worker's lines use."""
        return worker.file if self.files is not None else self.path

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def _scan(self, validate: bool) -> None:
        by_address: dict[str, WorkerLog] = {}
        take = self._take
        if self.files is not None:  # a directory's files merged by time; no
            # offsets: each worker reads its own file again
            for path, lineno, rec in self._lines(self._warn):
                self.lines += 1
                take(path, lineno, 0, rec, by_address, validate)
        else:  # one file, scanned once with the offsets that let a worker's
            # records be read back alone
            path = self.path
            lineno = passed = 0
            if validate:  # its step, resources and end records as the compiled
                # schema's Structs, where it passes them; imported here, for
                # check alone: compiling the schema takes a tenth of a second
                from schemas import compiled

                checked, in_order = compiled.checked, self._checked
                decoded: set[str] = set()
            else:
                checked = None
            for lineno, offset, rec in scan_lines(path, warn=self._warn, source=self.source, checked=checked):
                if type(rec) is not dict:
                    if in_order(lineno, offset, rec, by_address, decoded, compiled):
                        passed += 1
                        continue
                    # not in order: the general path says how
                    rec = compiled.to_dict(rec)
                take(path, lineno, offset, rec, by_address, validate)
            self.lines, self.checked = lineno, passed
        if not self.workers:
            raise LogError(self.path, None, "no worker header: not a dask-replay log, or empty")

    def _take(
        self, path: str, lineno: int, offset: int, rec: dict, by_address: dict[str, WorkerLog], validate: bool
    ) -> None:
        """Check one record (a dict as read) and note what it says of its worker."""
        kind = rec.get("kind")
        if kind not in KINDS:
            if kind not in SIDE_KINDS:
                raise LogError(path, lineno, f"unknown record kind {_short(kind)}")
            if validate:
                validate_record(path, lineno, rec)
            return
        address = rec.get("worker")
        w = by_address.get(address) if type(address) is str else None
        if validate:
            validate_record(path, lineno, rec, _version_hint(w.header) if w is not None else "")
        if type(address) is not str:
            raise LogError(path, lineno, "worker: missing or not a string")
        if kind == "header":
            if w is not None:
                raise LogError(path, lineno, f"second header for worker {address}")
            _check_header(path, lineno, rec, self._warn)
            w = by_address[address] = WorkerLog(
                address, len(self.workers), rec, lineno, path
            )
            snapshot = rec.get("snapshot")
            if type(snapshot) is dict and type(snapshot.get("seq")) is int:
                # a segment of a bounded recording: its steps follow the snapshot's
                w.events = snapshot["seq"]
            self.workers.append(w)
            return
        if w is None:
            raise LogError(path, lineno, f"{kind} record before the header of {address}")
        if w.ended:
            raise LogError(path, lineno, f"{kind} record after the end of {address}")
        seq = rec.get("seq")
        if kind == "step":
            if seq != w.events + 1:
                raise LogError(
                    path, lineno,
                    f"step {_short(seq)} of {address} out of order (expected {w.events + 1})",
                )
            ev = rec.get("event")
            if type(ev) is not dict:
                raise LogError(path, lineno, "event: missing or not an object")
            check_event(path, lineno, ev, w.header)
            sid = ev.get("stimulus_id")
            if type(sid) is not str:
                raise LogError(path, lineno, "event.stimulus_id: missing or not a string")
            if validate:
                # the schema leaves opaque values to the decoder: a valid
                # log is one the engine can decode
                decode_step(path, lineno, rec, w.header)
            handled = rec.get("handled")
            if not isinstance(handled, (int, float)) or isinstance(handled, bool):
                raise LogError(path, lineno, "handled: missing or not a number")
            w.events = seq
            w.event_counts[ev["cls"]] += 1
            if w.first_handled is None:
                w.first_handled = handled
            w.last_handled = handled
            if rec.get("error") is not None:
                w.errors += 1
            w.lines.append(lineno)
            w.offsets.append(offset)
            w.seqs.append(seq)
        elif kind == "resources":
            if seq != w.events + 1:
                raise LogError(path, lineno, f"resources record for step {_short(seq)} of {address} out of order")
            w.lines.append(lineno)
            w.offsets.append(offset)
            w.seqs.append(seq)
            if type(rec.get("address")) is str:
                w.later_address = rec["address"]
        else:  # end
            if seq != w.events:
                raise LogError(path, lineno, f"end at step {_short(seq)} of {address}, which has {w.events} steps")
            w.ended = True
            reason = rec.get("reason")
            w.end_reason = reason if type(reason) is str else None
            if type(rec.get("address")) is str:
                w.later_address = rec["address"]

    def _checked(
        self, lineno: int, offset: int, rec: Any, by_address: dict[str, WorkerLog], decoded: set[str],
        compiled: Any,
    ) -> bool:
        """Take in a record the compiled schema passed (so the pydantic schema
        passes it, and its event decodes), if it comes in order; False leaves
        it to the general path (:meth:`_take`), which names what is wrong."""
        w = by_address.get(rec.worker)
        if w is None or w.ended:
            return False
        t = type(rec)
        if t is compiled.STEP:
            seq = rec.seq
            if seq != w.events + 1:
                return False
            cls = compiled.EVENT_TAGS[type(rec.event)]
            if cls not in decoded:
                # once per class: the decoder and this dask's event classes agree
                decode_step(self.path, lineno, compiled.to_dict(rec), w.header)
                decoded.add(cls)
            w.events = seq
            w.event_counts[cls] += 1
            if w.first_handled is None:  # (a segment's first step is not step 1)
                w.first_handled = rec.handled
            w.last_handled = rec.handled
            if rec.error is not None:
                w.errors += 1
        elif t is compiled.RESOURCES:
            seq = rec.seq
            if seq != w.events + 1:
                return False
            if rec.address is not None:
                w.later_address = rec.address
        else:  # end
            seq = rec.seq
            if seq != w.events:
                return False
            w.ended = True
            w.end_reason = rec.reason
            if rec.address is not None:
                w.later_address = rec.address
            return True
        w.lines.append(lineno)
        w.offsets.append(offset)
        w.seqs.append(seq)
        return True

    def last_step_of(self, worker: WorkerLog, stimulus_id: str) -> int | None:
        """The last step of ``worker`` that carries ``stimulus_id``, if any."""
        if worker.last_step_of is None:
            index: dict[str, dict[str, int]] = {w.address: {} for w in self.workers}
            for _, _, rec in self._lines():
                if rec.get("kind") == "step":
                    index[rec["worker"]][rec["event"]["stimulus_id"]] = rec["seq"]
            for w in self.workers:
                w.last_step_of = index[w.address]
        return worker.last_step_of.get(stimulus_id)

    # --- choosing a worker ---------------------------------------------

    def worker(self, which: str | int | None = None) -> WorkerLog:
        """A worker by index, full address or unique part of one."""
        return self.workers[choose_worker([w.address for w in self.workers], which)]

    # --- streaming one worker's records --------------------------------

    def records(self, worker: WorkerLog, *, start: int = 1) -> Iterator[tuple[int, dict]]:
        """``(line, record)`` of the worker's steps and resource changes from step ``start``.

        A resources record carries the step it precedes, so it is yielded
        with the steps from ``start`` on. Only those lines are parsed, at the
        offsets the scan found them.
        """
        address = worker.address
        if self.files is None:  # one file: the worker's records where the scan found them
            k = bisect_left(worker.seqs, start)
            seqs = worker.seqs
            for i, (lineno, rec) in enumerate(
                lines_at(self.path, worker.lines[k:], worker.offsets[k:], source=self.source), k
            ):
                if rec.get("seq") != seqs[i] or rec.get("worker") != address:
                    raise LogError(self.path, lineno, "not the record read before: the log changed since it was read")
                yield lineno, rec
            return
        # a directory's worker has a file of its own: only that one is read
        for lineno, rec in iter_lines(worker.file, source=worker.file):  # type: ignore[arg-type]
            if rec.get("worker") == address and rec.get("kind") in ("step", "resources"):
                seq = rec.get("seq")
                if type(seq) is not int:  # the file changed since it was indexed
                    raise LogError(worker.file, lineno, "seq: missing or not an integer")
                if seq >= start:
                    yield lineno, rec


def validate_record(path: str, lineno: int, rec: dict, hint: str = "") -> None:
    """``rec`` against the schema of a log line, or a :class:`LogError` naming
    its line (``hint`` follows a schema error: which dask wrote the log)."""
    try:
        RECORD.validate_python(rec)
    except ValidationError as e:
        raise LogError(path, lineno, pydantic_error(e) + hint) from None
    except RecursionError:
        raise LogError(path, lineno, "nested too deeply") from None


def _check_header(path: str, lineno: int, rec: dict, warn: Callable[[str], None]) -> None:
    if rec.get("format") != FORMAT:
        raise LogError(path, lineno, f"format: not a {FORMAT} log ({_short(rec.get('format'))})")
    version = rec.get("version")
    if type(version) is not int:
        raise LogError(path, lineno, "version: missing or not an integer")
    if version > VERSION:
        raise LogError(
            path, lineno,
            f"version: log format {version} is newer than this dask-replay reads ({VERSION}); upgrade dask-replay",
        )
    # one per worker, so both read paths afford the full schema: the engine
    # builds a WorkerState from it
    try:
        Header.model_validate(rec)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise LogError(path, lineno, f"{loc}: {err['msg']}" if loc else err["msg"]) from None
    seed = rec["hash_seed"]
    # replay re-executes itself with this seed: Python accepts only these
    if seed is not None and not valid_seed(seed):
        raise LogError(path, lineno, f"hash_seed: not a PYTHONHASHSEED value ({_short(seed)})")
    recorded = rec.get("distributed")
    if recorded != distributed.__version__:
        warn(
            f"{path}:{lineno}: recorded with distributed {_short(recorded)}, reading with "
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
                "later_address": w.later_address,
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
