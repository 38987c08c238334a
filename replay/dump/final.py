"""What an import wrote, read back: each worker's final state and the
scheduler's view, without replay; and a replay's final states compared with
them."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from replay.log import validate_record
from replay.merge import records_of
from schemas.codec import decode_key


@dataclass
class FinalWorkerState:
    """A worker's final state as an imported log holds it (keys decoded)."""

    worker: str
    #: the state after this step
    seq: int
    status: str | None
    running: bool | None
    #: key -> the task's fields (``key`` decoded, others as stored)
    tasks: dict[Any, dict]
    #: the worker-level fields of the record, keys decoded
    fields: dict[str, Any]


def _decode_keys(v: list) -> list:
    return [decode_key(k) for k in v]


def final_states(path: Any) -> dict[str, FinalWorkerState]:
    """Each worker's ``final`` records, merged: the state when the dump was
    taken, without replay. Empty for a recorded (not imported) log."""
    out: dict[str, FinalWorkerState] = {}
    for _, rec in _side_records(path, "final"):
        address = rec["worker"]
        fw = out.get(address)
        if fw is None:
            fields = {}
            for f in ("data", "ready", "constrained", "executing", "long_running", "in_flight_tasks",
                      "missing_dep_flight"):
                fields[f] = _decode_keys(rec.get(f, []))
            for f in ("data_needed", "in_flight_workers", "has_what"):
                fields[f] = {a: _decode_keys(ks) for a, ks in rec.get(f, [])}
            fields["busy_workers"] = list(rec.get("busy_workers", []))
            fields["transition_counter"] = rec.get("transition_counter")
            fields["dumped"] = rec.get("dumped")
            fw = out[address] = FinalWorkerState(
                address, rec["seq"], rec.get("status"), rec.get("running"), {}, fields
            )
        for t in rec.get("tasks", []):
            task = dict(t)
            task["key"] = decode_key(t["key"])
            for f in ("dependencies", "dependents", "waiting_for_data"):
                if f in task:
                    task[f] = _decode_keys(task[f])
            fw.tasks[task["key"]] = task
    return out


@dataclass
class SchedulerView:
    """The scheduler's part of a dump as an imported log holds it."""

    address: str | None
    workers: list[dict]
    #: key -> {"state", "processing_on", "who_has", "nbytes"}
    tasks: dict[Any, dict]


def scheduler_state(path: Any) -> SchedulerView | None:
    """The ``scheduler`` records of an imported log, merged; None if it has none."""
    view: SchedulerView | None = None
    for _, rec in _side_records(path, "scheduler"):
        if view is None:
            view = SchedulerView(rec.get("address"), list(rec.get("workers", [])), {})
        for t in rec.get("tasks", []):
            task = dict(t)
            task["key"] = decode_key(t["key"])
            view.tasks[task["key"]] = task
    return view


def _side_records(path: Any, kind: str) -> Iterator[tuple[int, dict]]:
    """``kind`` records of a log (a file, a directory, several files)."""
    for file, lineno, rec in records_of(path):
        if rec.get("kind") == kind:
            validate_record(file, lineno, rec)
            yield lineno, rec


@dataclass
class FinalComparison:
    """A replayed worker's final task states against the dump's."""

    worker: str
    #: False when the history is partial: nothing was replayed
    compared: bool
    reason: str
    tasks: int = 0
    #: (key, what, the dump's value, the replay's value)
    differences: list[tuple[Any, str, Any, Any]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.compared and not self.differences


def compare_final_state(log: Any) -> list[FinalComparison]:
    """Replay every worker of an imported log whose history is complete, with
    the project's engine from the empty state, and compare each task's state
    (and size, once in memory) with the dump's final state.

    ``log`` is a path or what :func:`replay.open` returned. A worker with a
    partial history is not replayed: its comparison says why.
    """
    import replay  # the package imports this module: its open() only once loaded

    history = replay.open(log) if isinstance(log, (str, os.PathLike)) else log
    finals = final_states(history.log.source)
    return [compare_worker(w, finals.get(w.address)) for w in history.workers]


def compare_worker(w: Any, final: FinalWorkerState | None = None) -> FinalComparison:
    """:func:`compare_final_state` of one worker (a ``WorkerHistory``);
    ``final`` is its final state, read from the log when not given."""
    header = w.header
    if header.get("history", "complete") != "complete":
        return FinalComparison(w.address, False, f"history partial: {header.get('history_reason')}")
    if final is None:
        final = final_states(w.log.source).get(w.address)
    if final is None:
        return FinalComparison(w.address, False, "the log holds no final state to compare with")
    ws = w.state_at(final.seq)
    diffs: list[tuple[Any, str, Any, Any]] = []
    for key in sorted(final.tasks.keys() | ws.tasks.keys(), key=repr):
        dumped = final.tasks.get(key)
        ts = ws.tasks.get(key)
        if dumped is None or ts is None:
            diffs.append((key, "present", dumped is not None, ts is not None))
            continue
        if dumped["state"] != ts.state:
            diffs.append((key, "state", dumped["state"], ts.state))
        elif ts.state == "memory" and dumped.get("nbytes") is not None and dumped["nbytes"] != ts.nbytes:
            diffs.append((key, "nbytes", dumped["nbytes"], ts.nbytes))
    return FinalComparison(w.address, True, "replayed from the empty state", len(final.tasks), diffs)
