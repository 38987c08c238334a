"""Logs whose history is partial: what they tell without a replay.

A log imported from ``Client.dump_cluster_state`` usually holds only the last
stimuli of each worker (dask caps its stimulus log), so it cannot be replayed
from the empty state. It still holds the events it kept and, in its
``final`` records, every task's state when the dump was taken. A
:class:`PartialLog` answers the read commands from those: ``load``, ``why``
and ``state`` at the last step read the dump's final state into the same
stand-in ``WorkerState`` the index uses (:class:`~replay.index.FrozenWorker`)
and explain it with the same code as a replay; ``story`` lists the recorded
events that name the key, without transitions. Each answer says that the
history is partial; what needs a replay (another step, a diff) is refused
with the reason. The scheduler's view, kept in the ``scheduler`` record, is
compared with each worker's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import orjson
from rich.text import Text

from replay import render
from replay.diagnosis import why, why_view
from replay.disagreements import SchedulerFinding
from replay.errors import BadInput, NotFound
from replay.index import FrozenReplayer, FrozenWorker, frozen_row
from replay.literal import jsonable, key_text
from replay.positions import choose_worker
from replay.scheduler_log import attach_scheduler_log
from replay.story import Story, StoryLine, event_keys, no_such_key
from replay.summary import WorkerSummary
from replay.views import Moment, RaisedStep, StateView, _state_rank
from schemas.codec import decode_float, decode_resources, encode_key


def is_partial(history: Any) -> bool:
    return any(w.header.get("history") == "partial" for w in history.workers)


class _NoHistory:
    """A :class:`~replay.diagnosis.Tracker` that knows only the end: no step
    says when a task got where it is; the dump's own clock may (``since``:
    key -> when it entered its state), and the end is when it was dumped."""

    #: what the durations run to
    end_name = "the dump"

    def __init__(self, now: Moment, raised: Optional[list] = None, final: Any = None):
        self.now = now
        self.raised = raised or []
        self.end = now.step
        self.changed: dict = {}
        self.gather: dict = {}
        self.execute: dict = {}
        self.paused: Optional[Moment] = None
        for key, t in (final.tasks.items() if final is not None else ()):
            if t.get("since") is None:
                continue
            # step 0: before the history the log holds, at a time the dump knows
            at = Moment(0, t["since"])
            self.changed[key] = (at, "")
            if t["state"] in ("executing", "long-running"):
                self.execute[key] = at
            elif t["state"] == "flight":
                self.gather[key] = (at, t.get("coming_from") or "?")

    def open_gathers(self) -> None:
        """Unknown: a dump keeps no instructions."""
        return None


def _dumped(final: Any, last_handled: Optional[float]) -> Optional[float]:
    """When the worker's final state was dumped (at the earliest); its last step's time if unknown."""
    dumped = None if final is None else final.fields.get("dumped")
    return dumped if dumped is not None else last_handled


class PartialLog:
    """A log with a partial history, read without replay: a :class:`~replay.source.Source`."""

    kind = "partial"

    def __init__(self, history: Any):
        # the dump's reader needs the schemas: not on the index's query path
        from replay.dump import final_states, scheduler_state

        self.history = history
        self.path: str = history.path
        self.warnings: list[str] = list(history.warnings)
        finals = final_states(history.log.source)
        self.workers = [PartialWorker(wh, finals.get(wh.address)) for wh in history.workers]
        self.scheduler = scheduler_state(history.log.source)
        #: a recorded scheduler's log beside this one: a dump's history is
        #: partial, so only its final state is compared with it
        self.scheduler_log = attach_scheduler_log(self.path, [w.address for w in self.workers])

    def scheduler_task(self, key: Any) -> Optional[SchedulerTaskView]:
        """A key no worker has, as the scheduler saw it."""
        if self.scheduler is None or key not in self.scheduler.tasks:
            return None
        return SchedulerTaskView(key, self.scheduler.tasks[key])

    def worker(self, which: Any = None) -> PartialWorker:
        return self.workers[choose_worker([w.address for w in self.workers], which)]

    def disagreements(self, at: dict[str, int]) -> list:
        """The scheduler's view against each worker's final state."""
        if self.scheduler is None:
            return []
        finals = {w.address: w.final for w in self.workers if w.final is not None}
        out = []
        for key, task in sorted(self.scheduler.tasks.items(), key=lambda kv: repr(kv[0])):
            on = task.get("processing_on")
            if task.get("state") == "processing" and on in finals:
                mine = finals[on].tasks.get(key)
                if mine is None or mine["state"] in ("memory", "released", "forgotten", "error"):
                    out.append(SchedulerFinding(key, f"processing on {on}", on,
                                                None if mine is None else mine["state"]))
            for holder in task.get("who_has") or ():
                if holder in finals:
                    mine = finals[holder].tasks.get(key)
                    if mine is None or mine["state"] != "memory":
                        out.append(SchedulerFinding(key, f"who_has lists {holder}", holder,
                                                    None if mine is None else mine["state"]))
        return out


@dataclass(slots=True)
class SchedulerTaskView:
    """A key no worker has, as the scheduler's view in a cluster dump holds it."""

    key: Any
    #: the scheduler's fields: state, processing_on, who_has, nbytes
    task: dict

    def text(self) -> str:
        t = self.task
        parts = [t["state"]]
        if t.get("processing_on"):
            parts.append(f"processing on {t['processing_on']}")
        if t.get("who_has"):
            parts.append("who_has " + ", ".join(t["who_has"]))
        if t.get("nbytes") not in (None, -1):
            parts.append(f"{t['nbytes']:,} bytes")
        return f"{key_text(self.key)}: no worker has it; the scheduler's view when dumped: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {"key": jsonable(self.key), "scheduler": jsonable({k: v for k, v in self.task.items() if k != "key"}),
                "text": self.text()}

    def __rich__(self) -> Text:
        return Text.assemble(("scheduler: ", "bold"), render.safe(self.text()))


def scheduler_task(log: Any, key: Any) -> Optional[SchedulerTaskView]:
    """The scheduler's view of ``key`` in the log read from ``log`` (an imported
    dump's ``scheduler`` records), or None."""
    from replay.dump import scheduler_state

    view = scheduler_state(log)
    task = None if view is None else view.tasks.get(key)
    return None if task is None else SchedulerTaskView(key, task)


def _containers(fields: dict, tasks: dict) -> dict:
    """The worker's containers as the dump recorded them (the real worker's,
    as :class:`replay.index.Containers` has them); one the dump left out is
    read from the tasks' states instead."""
    def keys(ks: Any) -> frozenset:
        return frozenset(orjson.dumps(encode_key(k)).decode() for k in ks)

    def pairs(by_peer: dict) -> frozenset:
        return frozenset(orjson.dumps([w, encode_key(k)]).decode() for w, ks in by_peer.items() for k in ks)

    def entries(by_peer: dict) -> frozenset:  # in_flight_workers: each peer is an entry
        return pairs(by_peer) | {orjson.dumps([w]).decode() for w in by_peer}

    def in_state(*states: str) -> list:
        return [k for k, t in tasks.items() if t["state"] in states]

    def field(name: str, state: str) -> frozenset:
        return keys(fields[name] if name in fields else in_state(state))

    out = {
        "busy_workers": sorted(fields.get("busy_workers", [])),
        "executing": field("executing", "executing"),
        "long_running": field("long_running", "long-running"),
        "ready": field("ready", "ready"),
        "constrained": field("constrained", "constrained"),
        "missing": field("missing_dep_flight", "missing"),
        "strays": {},
    }
    if "in_flight_workers" in fields:
        out["in_flight_workers"] = entries(fields["in_flight_workers"])
    else:
        flying: dict = {}
        for k, t in tasks.items():
            if t["state"] == "flight":
                flying.setdefault(t.get("coming_from"), []).append(k)
        out["in_flight_workers"] = entries(flying)
    if "data_needed" in fields:
        out["data_needed"] = pairs(fields["data_needed"])
    else:
        needed: dict = {}
        for k, t in tasks.items():
            if t["state"] == "fetch":
                for w in t.get("who_has") or ():
                    needed.setdefault(w, []).append(k)
        out["data_needed"] = pairs(needed)
    return out


class PartialWorker:
    """One worker of a :class:`PartialLog`."""

    def __init__(self, wh: Any, final: Any):
        self.wh = wh
        self.final = final
        self.address = wh.address
        self.events = wh.events
        header = wh.header
        self.reason = header.get("history_reason") or "its log does not start from the empty state"

    def position(self, pos: Any) -> int:
        return self.wh.position(pos)

    @property
    def ended(self) -> bool:
        return self.wh.wlog.ended

    @property
    def last_handled(self) -> Optional[float]:
        return self.wh.wlog.last_handled

    def step_at_time(self, t: Optional[float]) -> int:
        return self.events  # only the final state is known

    def step_times(self) -> list[Optional[float]]:
        return [self.last_handled]  # one state, the final one

    def raised(self, stop: int) -> list:
        """The recorded steps up to ``stop`` whose call raised (what the dump kept)."""

        out = []
        for call in self.wh.calls(1, stop, instructions=False):
            if call.error is not None:
                ev = call.events[-1]
                out.append(RaisedStep(call.last, call.handled, ev.stimulus_id, call.error,
                                      getattr(ev, "key", None)))
        return out

    def _refuse(self, what: str) -> BadInput:
        return BadInput(f"{self.address}: history partial ({self.reason}): {what} needs a replay from the "
                        "empty state; load, why and state show the final state, story the recorded events")

    def _at_end(self, step: int, what: str) -> None:
        if step != self.events:
            raise self._refuse(f"{what} at step {step}")
        if self.final is None:
            raise BadInput(f"{self.address}: history partial ({self.reason}) and no final state recorded")

    def frozen(self, step: int) -> Any:
        self._at_end(step, "a state")
        f, s = self.final, self.wh.header["state"]
        rows = {
            key: frozen_row(t["state"], t.get("previous"), t.get("next"), priority=t.get("priority"),
                            nbytes=t.get("nbytes"), who_has=t.get("who_has") or (), coming_from=t.get("coming_from"),
                            dependencies=[encode_key(k) for k in t.get("dependencies") or ()],
                            resource_restrictions=t.get("resource_restrictions"), run_id=t.get("run_id"),
                            exception_text=t.get("exception_text"))
            for key, t in f.tasks.items()
        }
        total = sorted(decode_resources(s["resources"]).items())
        limit = decode_float(s["transfer_incoming_bytes_limit"])
        counters = {
            "running": f.running if f.running is not None else True, "nthreads": s["nthreads"],
            "transfers": len(f.fields.get("in_flight_tasks", [])),
            "transfers_limit": s["transfer_incoming_count_limit"], "transfer_bytes": 0,
            "transfer_bytes_limit": None if limit in (None, float("inf")) else limit,
            "nbytes": sum(t.get("nbytes") or 0 for t in f.tasks.values() if t["state"] == "memory"),
            # the dump gives the worker's resources, not what its running tasks took
            "total_resources": total, "available_resources": total,
            **_containers(f.fields, f.tasks),
        }
        last = _dumped(self.final, self.wh.wlog.last_handled)
        sid = ""
        if self.events:
            for call in self.wh.calls(self.events, self.events, instructions=False):
                sid = call.events[-1].stimulus_id
        return FrozenReplayer(FrozenWorker(self.address, rows, counters), self.events, sid, last)

    def state(self, step: int, states: Any = (), keys: Any = (), detail: bool = False) -> Any:
        view = StateView.of(self.frozen(step), states=states, keys=keys, detail=detail, strict=True)
        view.raised = self.raised(step)
        return view

    def diff(self, first: int, last: int) -> Any:
        raise self._refuse("a diff")

    def why(self, step: int, key: Any = None) -> Any:
        r = self.frozen(step)
        view = why_view(r, _NoHistory(Moment(r.seq, r.handled), self.raised(step), self.final), key)
        view.note = (f"history partial ({self.reason}): the final state is the dump's; since when is the "
                     "dump's transition log's, to when it was dumped (unknown where it does not say)")
        return view

    def summary(self) -> Any:
        wlog = self.wh.wlog
        if self.final is None:
            raise BadInput(f"{self.address}: history partial ({self.reason}) and no final state recorded")
        r = self.frozen(self.events)
        states: dict[str, int] = {}
        for ts in r.ws.tasks.values():
            states[ts.state] = states.get(ts.state, 0) + 1
        return WorkerSummary(
            address=self.address, events=self.events, event_counts=dict(sorted(wlog.event_counts.items())),
            first_handled=wlog.first_handled, last_handled=wlog.last_handled,
            deterministic=bool(self.wh.header.get("deterministic")), ended=wlog.ended,
            end_reason=wlog.end_reason,
            task_states=dict(sorted(states.items(), key=lambda kv: _state_rank(kv[0]))),
            running=r.ws.running, paused_since=None,
            stuck=why(r.ws, _NoHistory(Moment(r.seq, r.handled), final=self.final)),
            warnings=[f"history partial ({self.reason}): the final state is the dump's, not a replay's"],
            step=self.events, raised=self.raised(self.events), end_time=r.handled,
        )

    def _event_lines(self, stop: int, wanted: Any) -> tuple[list, set, Optional[float]]:
        """The recorded events up to ``stop`` that ``wanted(event, keys it
        names)`` accepts, as story lines; every key named; the first time."""

        lines, known, start = [], set(), None
        for call in self.wh.calls(1, stop, records=True, instructions=False):
            start = call.handled if start is None else start
            for i, ev in enumerate(call.events):
                named = event_keys(ev)
                known |= named
                if wanted(ev, named):
                    lines.append(StoryLine.of(call.first + i, call.handled, self.address, ev.stimulus_id,
                                              "event", ev, call.records[i]))
        return lines, known, start

    def key_story(self, stop: int, key: Any) -> Any:
        lines, known, start = self._event_lines(stop, lambda ev, named: key in named)
        if not lines:
            raise NotFound(no_such_key({key}, known, self.address))
        return Story(key_text(key), lines, start, keys=[key],
                     note=f"history partial ({self.reason}): recorded events only, no replay")

    def stimulus_story(self, stop: int, stimulus_id: str) -> Any:
        lines, _, start = self._event_lines(stop, lambda ev, named: ev.stimulus_id == stimulus_id)
        if not lines:
            raise NotFound(f"no step of {self.address} has stimulus id {stimulus_id!r}")
        return Story(f"stimulus {stimulus_id}", lines, start, stimulus_id=stimulus_id,
                     note=f"history partial ({self.reason}): recorded events only, no replay")
