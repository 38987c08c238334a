"""Why a task is stuck: for every task not in a final state, what it waits for.

A :class:`Tracker` follows a tapped replay (:func:`replay.views.walk`) and
remembers, per key, the step of its last transition, of the last GatherDep
and Execute that named it, and when the worker paused. :func:`why` then reads
the real ``WorkerState`` at that point and explains each unfinished task.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from distributed import worker_state_machine as wsm

from replay.engine import Applied
from replay.errors import NotFound
from replay.views import FINAL_STATES, ek, is_transition


class Tracker:
    """Steps that explain the current state of each key."""

    def __init__(self) -> None:
        #: key -> (step, stimulus id) of its last transition
        self.transition: dict[Any, tuple[int, str]] = {}
        #: key -> (step, peer) of the last GatherDep that asked for it
        self.gather: dict[Any, tuple[int, str]] = {}
        #: key -> step of the last Execute
        self.execute: dict[Any, int] = {}
        #: step of the PauseEvent still in force
        self.paused: int | None = None

    def feed(self, applied: Applied) -> None:
        call = applied.call
        for i, ev in enumerate(call.events):
            if isinstance(ev, wsm.PauseEvent):
                self.paused = call.first + i
            elif isinstance(ev, wsm.UnpauseEvent):
                self.paused = None
        for entry in applied.log:
            if is_transition(entry):
                sid = entry[5]
                self.transition[entry[0]] = (call.step_of(sid), sid)
        for inst in applied.instructions:
            if isinstance(inst, wsm.GatherDep):
                step = call.step_of(inst.stimulus_id)
                for key in inst.to_gather:
                    self.gather[key] = (step, inst.worker)
            elif isinstance(inst, wsm.Execute):
                self.execute[inst.key] = call.step_of(inst.stimulus_id)

    def follow(self, walked: Iterable[tuple[Applied, Any]]) -> wsm.WorkerState | None:
        """Consume a walk; return the state it ends at."""
        ws = None
        for applied, r in walked:
            self.feed(applied)
            ws = r.ws
        return ws


def category(ws: wsm.WorkerState, ts: wsm.TaskState) -> str:
    """What kind of wait ``ts`` is in: its state and, within it, the branch
    of :func:`explain` that holds. Two states share a category when the same
    kind of thing keeps the task where it is (``replay shrink --stuck``
    requires the shrunk log to end in the original's category)."""
    state = ts.state
    if state in FINAL_STATES:
        return state
    if state == "waiting":
        deps = [d for d in ts.dependencies if d.state != "memory"]
        if any(d.state == "error" for d in deps):
            return "waiting: erred dependency"
        return "waiting: dependencies" if deps else "waiting: dependencies in memory"
    if state == "fetch":
        holders = ts.who_has
        if not ws.running:
            return "fetch: paused"
        if holders and all(w in ws.busy_workers or w in ws.in_flight_workers for w in holders):
            return "fetch: holders busy"
        return "fetch: queued"
    if state == "constrained":
        need = ts.resource_restrictions or {}
        if any(ws.available_resources.get(r, 0) < n for r, n in need.items()):
            return "constrained: resources"
        return "constrained: paused" if not ws.running else "constrained: threads busy"
    if state == "ready":
        return "ready: paused" if not ws.running else "ready: threads busy"
    if state in ("cancelled", "resumed"):
        return f"{state}: while {ts.previous}"
    return state


def _holders(ts: wsm.TaskState) -> list[str]:
    return sorted(ts.who_has)


def _fmt(value: float) -> str:
    return f"{value:g}"


def explain(ws: wsm.WorkerState, ts: wsm.TaskState, tracker: Tracker) -> dict:
    """Why ``ts`` cannot progress, with the step that put it where it is."""
    key = ts.key
    since, sid = tracker.transition.get(key, (0, ""))
    detail: dict[str, Any] = {}
    state = ts.state
    kind = category(ws, ts)  # which branch below holds

    if state in FINAL_STATES:
        reason = f"{state}: final state"
    elif state == "waiting":
        deps = [d for d in ts.dependencies if d.state != "memory"]
        detail["waiting_on"] = [
            {"key": ek(d.key), "state": d.state, "who_has": _holders(d),
             "since_step": tracker.transition.get(d.key, (0, ""))[0]}
            for d in sorted(deps, key=lambda d: str(d.key))
        ]
        if kind == "waiting: erred dependency":
            d = next(d for d in deps if d.state == "error")
            at = tracker.transition.get(d.key, (0, ""))[0]
            reason = (
                f"waiting on {d.key!r}, which erred at step {at}: nothing will "
                "ever release or reschedule it (dask #6705)"
            )
            detail["erred_dependency"] = ek(d.key)
        elif kind == "waiting: dependencies":
            parts = [f"{d.key!r} ({_where(ws, d)})" for d in deps]
            noun = "dependency" if len(deps) == 1 else "dependencies"
            reason = f"waiting on {len(deps)} {noun}: " + ", ".join(parts)
        else:
            reason = "waiting with every dependency in memory"
    elif state == "fetch":
        holders = _holders(ts)
        detail["who_has"] = holders
        detail["busy"] = sorted(set(holders) & ws.busy_workers)
        detail["in_flight"] = sorted(set(holders) & set(ws.in_flight_workers))
        if kind == "fetch: paused":
            reason = f"fetch: the worker is paused{_since(tracker.paused)}, no transfers start"
        elif kind == "fetch: holders busy":
            reason = "fetch: every holder is busy or already in flight: " + ", ".join(holders)
        else:
            reason = (
                "fetch: queued for a transfer from " + ", ".join(holders)
                + f" ({ws.transfer_incoming_count}/{ws.transfer_incoming_count_limit} "
                "incoming transfers)"
            )
    elif state == "flight":
        step, peer = tracker.gather.get(key, (since, ts.coming_from or "?"))
        detail["gather_step"] = step
        detail["coming_from"] = ts.coming_from
        reason = f"flight from {ts.coming_from}: gather issued at step {step} never completed"
    elif state == "missing":
        detail["who_has"] = _holders(ts)
        reason = "missing: no worker is known to hold it; waiting for the scheduler to name one"
    elif state == "constrained":
        need = ts.resource_restrictions or {}
        short = {
            r: (n, ws.available_resources.get(r, 0), ws.total_resources.get(r, 0))
            for r, n in need.items()
            if ws.available_resources.get(r, 0) < n
        }
        detail["needs"] = {r: n for r, n in need.items()}
        detail["available"] = {r: ws.available_resources.get(r, 0) for r in need}
        if kind == "constrained: resources":
            parts = [f"{r}={_fmt(n)} while only {_fmt(a)} of {_fmt(t)} is free" for r, (n, a, t) in short.items()]
            reason = "constrained: needs " + "; ".join(parts)
            if any(n > t for n, _, t in short.values()):
                reason += " (more than the worker has: it can never run)"
        elif kind == "constrained: paused":
            reason = f"constrained while the worker is paused{_since(tracker.paused)}"
        else:
            reason = f"constrained: all {ws.nthreads} threads busy"
    elif state == "ready":
        if kind == "ready: paused":
            detail["paused_step"] = tracker.paused
            reason = f"ready while the worker is paused{_since(tracker.paused)}"
        else:
            reason = f"ready: all {ws.nthreads} threads busy ({len(ws.executing)} executing)"
    elif state in ("executing", "long-running"):
        step = tracker.execute.get(key, since)
        detail["execute_step"] = step
        what = "executing" if state == "executing" else "long-running (seceded)"
        reason = f"{what} since step {step}: no completion since"
    elif state in ("cancelled", "resumed"):
        detail["previous"] = ts.previous
        detail["next"] = ts.next
        reason = f"{state} while {ts.previous}: waits for the {ts.previous} to finish"
        if state == "resumed":
            reason += f", then goes to {ts.next}"
    else:
        reason = f"{state}: waiting for a new stimulus"

    out = {"key": ek(key), "state": state, "category": kind, "reason": reason,
           "since_step": since, "stimulus_id": sid}
    if detail:
        out["detail"] = detail
    return out


def _since(step: int | None) -> str:
    return f" (since step {step})" if step else ""


def _where(ws: wsm.WorkerState, d: wsm.TaskState) -> str:
    if d.state in ("fetch", "missing"):
        holders = ", ".join(_holders(d)) or "no holder"
        return f"{d.state} from {holders}"
    if d.state == "flight":
        return f"in flight from {d.coming_from}"
    return d.state


def why(ws: wsm.WorkerState, tracker: Tracker, key: Any = None) -> list[dict]:
    """Every task not in a final state, or just ``key`` (whatever its state)."""
    if key is not None:
        ts = ws.tasks.get(key)
        if ts is None:
            raise NotFound(f"{key!r} is not known to {ws.address} at this step (never seen or forgotten)")
        return [explain(ws, ts, tracker)]
    return [explain(ws, ts, tracker) for ts in ws.tasks.values() if ts.state not in FINAL_STATES]


def diagnose(history: Any, stop: int | None = None, *, progress: Any = None) -> tuple[Any, Tracker]:
    """Replay ``history`` (a WorkerHistory) to ``stop`` with a tracker; returns the
    :class:`~replay.engine.Replayer` there and the tracker."""
    from replay.views import walk

    tracker = Tracker()
    r = None
    for applied, r in walk(history, stop, progress=progress):
        tracker.feed(applied)
    if r is None:  # no step to replay: the empty state
        r = history.replayer()
    return r, tracker


def load_report(history: Any, *, progress: Any = None) -> dict:
    """A worker's log facts, final task states and stuck tasks (``replay load``)."""
    r, tracker = diagnose(history, progress=progress)
    ws = r.ws
    wlog = history.wlog
    states: dict[str, int] = {}
    for ts in ws.tasks.values():
        states[ts.state] = states.get(ts.state, 0) + 1
    return {
        "address": history.address,
        "events": history.events,
        "event_counts": dict(sorted(wlog.event_counts.items())),
        "first_handled": wlog.first_handled,
        "last_handled": wlog.last_handled,
        "duration": (wlog.last_handled - wlog.first_handled) if wlog.events else 0.0,
        "deterministic": bool(history.header.get("deterministic")),
        "ended": wlog.ended,
        "task_states": dict(sorted(states.items())),
        "running": ws.running,
        "stuck": why(ws, tracker),
        "warnings": list(r.warnings),
    }
