"""Comments and docstrings: text from a log made safe, and what each event does in words."""
from __future__ import annotations

import re
import textwrap
from typing import Any

from distributed import worker_state_machine as wsm

from replay.testcase.layout import WIDTH
from replay.testcase.literals import _literal

def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prose(text: str, limit: int = 300) -> str:
    """Text from a log or a user, safe inside a comment or a docstring line."""
    flat = " ".join(str(text).split())
    if not flat.isprintable():
        flat = repr(flat)
    return _short(flat, limit)


def _shown(v: Any, limit: int = 60) -> str:
    """A value as prose shows it: ``'x'``, ``{'R': 1.0}``."""
    _literal(v)  # only plain built-in values, whose repr is safe
    return _short(repr(v), limit)


def _kt(key: Any) -> str:
    return _shown(key, 40)


def _keys_text(keys: Any) -> str:
    shown = [_kt(k) for k in keys]
    if not shown:
        return "nothing"
    if len(shown) > 4:
        shown = shown[:3] + [f"{len(shown) - 3} more"]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _addr_text(addr: Any) -> str:
    if type(addr) is str and re.fullmatch(r"[\w.:/\[\]@-]{1,80}", addr, re.ASCII):
        return addr
    return _short(_literal(addr), 40) if type(addr) is str else repr(type(addr).__name__)


def _comment(text: str, indent: int) -> list[str]:
    text = _prose(text, 2000)
    lines = textwrap.wrap(text, WIDTH - indent - 2, break_long_words=False, break_on_hyphens=False)
    return [" " * indent + "# " + line for line in lines]


def _describe(ws: wsm.WorkerState, ev: wsm.StateMachineEvent, own: str) -> str:
    """What ``ev`` does, in the words of dask's tests, given the state before it."""
    k = _kt(getattr(ev, "key", None))
    t = type(ev)
    worker = getattr(ev, "worker", None)
    w = _addr_text(worker)
    flying = _keys_text(sorted(ws.in_flight_workers.get(worker, ()), key=repr)) if worker else ""

    def where(who_has: dict) -> str:
        if not who_has:
            return "nothing"
        parts = []
        for dep, holders in list(who_has.items())[:3]:
            on = ", ".join(_addr_text(h) for h in holders) or "no worker"
            parts.append(f"{_kt(dep)} (on {on})")
        if len(who_has) > 3:
            parts.append(f"{len(who_has) - 3} more")
        return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]

    def running() -> str:
        ts = ws.tasks.get(ev.key)
        if ts is None:
            return f", but the worker has no task {k}"
        if ts.state not in ("executing", "long-running"):
            return f", while {k} is in state {ts.state!r}"
        return ""

    if t is wsm.ComputeTaskEvent:
        s = f"the scheduler asks the worker to compute {k}"
        if ev.key in ws.tasks:
            s += f" (known here, in state {ws.tasks[ev.key].state!r})"
        if len(ev.who_has) == 1:
            (dep, holders), = ev.who_has.items()
            on = ", ".join(_addr_text(h) for h in holders) or "no worker"
            s += f", whose dependency {_kt(dep)} is on {on}"
        elif ev.who_has:
            s += f", whose dependencies are {where(ev.who_has)}"
        if ev.resource_restrictions:
            s += f", needing resources {_shown(ev.resource_restrictions)}"
        return s
    if t is wsm.ExecuteSuccessEvent:
        return f"the execution of {k} succeeds" + running()
    if t is wsm.ExecuteFailureEvent:
        text = f" with {_prose(ev.exception_text, 60)}" if ev.exception_text else ""
        return f"the execution of {k} fails{text}" + running()
    if t is wsm.RescheduleEvent:
        return f"the execution of {k} raises Reschedule" + running()
    if t is wsm.GatherDepSuccessEvent:
        if worker not in ws.in_flight_workers:
            return f"{w} sends data the worker never asked it for"
        if not ev.data:
            return f"{w} answers the transfer of {flying} without any data"
        return f"the transfer of {_keys_text(ev.data)} from {w} succeeds"
    unasked = worker not in ws.in_flight_workers
    if worker is not None and t.__name__.startswith("GatherDep") and unasked:
        return f"{w} answers a transfer the worker never asked it for"
    if t is wsm.GatherDepBusyEvent:
        return f"{w} is too busy to send {flying}"
    if t is wsm.GatherDepNetworkFailureEvent:
        return f"the connection to {w} breaks during the transfer of {flying}"
    if t is wsm.GatherDepFailureEvent:
        text = f" with {_prose(ev.exception_text, 60)}" if ev.exception_text else ""
        return f"the transfer of {flying} from {w} fails{text}"
    if t is wsm.RetryBusyWorkerEvent:
        return f"the worker tries {w} again, which was busy"
    if t is wsm.RemoveWorkerEvent:
        return f"the scheduler reports that {w} has left the cluster"
    if t is wsm.PauseEvent:
        return "the worker pauses (e.g. its memory is nearly full)"
    if t is wsm.UnpauseEvent:
        return "the worker unpauses"
    if t is wsm.FindMissingEvent:
        return "the worker asks the scheduler again where its missing data is"
    if t is wsm.RefreshWhoHasEvent:
        return "the scheduler tells the worker where to find " + where(ev.who_has)
    if t is wsm.AcquireReplicasEvent:
        if len(ev.who_has) == 1:
            (key, holders), = ev.who_has.items()
            on = ", ".join(_addr_text(h) for h in holders) or "no worker"
            return f"the scheduler asks the worker to fetch a replica of {_kt(key)} from {on}"
        return "the scheduler asks the worker to fetch replicas of " + where(ev.who_has)
    if t is wsm.RemoveReplicasEvent:
        return f"the scheduler asks the worker to drop its replica of {_keys_text(ev.keys)}"
    if t is wsm.FreeKeysEvent:
        return f"the scheduler releases {_keys_text(ev.keys)}"
    if t is wsm.StealRequestEvent:
        return f"the scheduler asks to steal {k} away from the worker"
    if t is wsm.CancelComputeEvent:
        return f"the scheduler cancels {k}"
    if t is wsm.UpdateDataEvent:
        verb = "is" if len(ev.data) == 1 else "are"
        return f"{_keys_text(ev.data)} {verb} put straight into the worker's memory (e.g. scatter)"
    if t is wsm.SecedeEvent:
        return f"{k} secedes from its thread"
    return f"a {t.__name__}"
