"""The import: a dump in, a validated log written whole or not at all, and
the report of what was written."""
from __future__ import annotations

import gzip
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from replay.dump.convert import Refused
from replay.dump.keys import Keys, short
from replay.dump.read import MAX_BYTES, load_dump
from replay.dump.records import WorkerImport, learn_keys, scheduler_records, worker_records
from replay.errors import BadInput
from replay.log import pydantic_error
from replay.logfile import MAX_LINE, encode_line
from schemas.codec import CodecError
from schemas.records import RECORD, Header


@dataclass
class ImportReport:
    """What :func:`import_dump` wrote."""

    dump: str
    out: str
    #: "msgpack" or "yaml"
    format: str
    workers: list[WorkerImport] = field(default_factory=list)
    #: workers the dump holds an error for instead of a state, with the error
    skipped: dict[str, str] = field(default_factory=dict)
    scheduler_tasks: int = 0
    records: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every worker's history is complete."""
        return all(w.history == "complete" for w in self.workers)

    def to_json(self) -> dict:
        return {
            "dump": self.dump, "out": self.out, "format": self.format,
            "workers": [w.to_json() for w in self.workers], "skipped": dict(self.skipped),
            "scheduler_tasks": self.scheduler_tasks, "records": self.records,
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        """Plain-text summary, one line per worker."""
        out = [f"{self.out}: {len(self.workers)} worker(s) from {self.dump} ({self.format}), "
               f"{self.scheduler_tasks} scheduler task(s)"]
        for w in self.workers:
            out.append(f"  {w.address}: {w.events} events, {w.tasks} tasks at the end; "
                       f"history {w.history}: {w.reason}")
        for address, error in self.skipped.items():
            out.append(f"  {address}: skipped, the dump holds an error: {error}")
        out.extend(f"warning: {w}" for w in self.warnings)
        return out


def import_dump(dump_path: str, out_path: str, *, max_bytes: int = MAX_BYTES) -> ImportReport:
    """Convert a ``Client.dump_cluster_state`` artefact into a dask-replay log.

    Writes ``out_path`` (``.gz``: compressed) whole or not at all. Per worker:
    a header (construction inputs from the dump's config, ``history``
    complete or partial with the reason), one step per ``stimulus_log``
    event (instructions null), its ``final`` records and an ``end``; then the
    scheduler's records. Raises :class:`~replay.errors.BadInput` naming the
    dump for anything that is not a well-formed dump.
    """
    dump, fmt = load_dump(dump_path, max_bytes=max_bytes)
    keys = Keys()
    learn_keys(keys, dump)
    report = ImportReport(dump_path, out_path, fmt)
    sched_workers = dump["scheduler"].get("workers")
    if not isinstance(sched_workers, dict):
        sched_workers = {}
    records: list[dict] = []
    file = os.path.basename(dump_path)
    try:
        for address, w in dump["workers"].items():
            if type(address) is not str:
                raise Refused(f"workers: {short(address)} is not an address")
            if type(w) is str:  # dask writes a worker's failure to dump as its repr
                report.skipped[address] = w[:300]
                continue
            if not isinstance(w, dict):
                raise Refused(f"workers.{address}: expected a worker mapping, got {short(w)}")
            sw = sched_workers.get(address)
            recs, wi = worker_records(dump, file, address, w, keys, sw if isinstance(sw, dict) else None)
            records += recs
            report.workers.append(wi)
        sched = scheduler_records(keys, dump["scheduler"])
        records += sched
        report.scheduler_tasks = sum(len(r["tasks"]) for r in sched)
    except Refused as e:
        raise BadInput(str(e), dump_path) from None
    except CodecError as e:
        raise BadInput(str(e), dump_path) from None
    if not report.workers:
        raise BadInput("no worker state in the dump", dump_path)
    if keys.inferred:
        report.warnings.append(
            f"{keys.inferred} key(s) read from their text alone (no task of the dump names them)"
        )
    guessed = sum(w.sizes_guessed for w in report.workers)
    if guessed:
        report.warnings.append(f"{guessed} data size(s) unknown to the dump, set to the default data size")
    for rec in records:
        _validated(dump_path, rec, RECORD)
    report.records = _write(out_path, records)
    return report


def _validated(dump_path: str, rec: dict, adapter: Any) -> None:
    # the schema the reader checks: a dump the importer accepts is a log it reads
    try:
        if rec["kind"] == "header":
            Header.model_validate(rec)
        else:
            adapter.validate_python(rec)
    except ValidationError as e:
        where = rec.get("worker") or rec["kind"]
        raise BadInput(f"{where}: {pydantic_error(e)}", dump_path) from None
    except RecursionError:
        raise BadInput("nested too deeply", dump_path) from None


def _write(out_path: str, records: list[dict]) -> int:
    compress = out_path.endswith(".gz")
    folder = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".import-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise BadInput(f"cannot write: {e.strerror or e}", out_path) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            out: Any = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
            for rec in records:
                line = encode_line(rec)
                if len(line) > MAX_LINE:
                    raise BadInput(
                        f"a {rec['kind']} record of {rec.get('worker', 'the scheduler')} would be a "
                        f"line longer than the reader's limit ({MAX_LINE} bytes)", out_path)
                out.write(line)
            if compress:
                out.close()
        os.replace(tmp, out_path)
    except OSError as e:
        raise BadInput(f"cannot write: {e.strerror or e}", out_path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(records)
