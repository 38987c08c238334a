"""The records an imported worker becomes: its header (with whether its
history is complete, see :func:`_completeness`), its steps, its ``final``
records (the state when dumped) and its end; and the scheduler's records.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from replay.dump.convert import EventConverter, Refused, get_typed, resources_of, state_inputs
from replay.dump.keys import Keys, short, value_key
from schemas import convert as cv
from schemas.codec import FORMAT, VERSION, CodecError, decode_key, encode_key, encode_value

#: tasks per ``final`` or ``scheduler`` record: keeps every line far below
#: the reader's line limit
TASKS_PER_RECORD = 5_000
#: the ``source`` of every record an import writes
SOURCE = "cluster-dump"


@dataclass
class WorkerImport:
    address: str
    #: steps written (the dump's stimulus_log)
    events: int
    #: "complete" or "partial"
    history: str
    reason: str
    tasks: int
    keys_repaired: int
    sizes_guessed: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _python_version(text: Any) -> str:
    # dask reports "3.11.7.final.0"
    if type(text) is not str:
        return "unknown"
    return ".".join(text.split(".")[:3])


_STATUS = re.compile(r"^<Status\.\w+: '(\w+)'>$")
_WORKER_STATE = re.compile(r"^<WorkerState '([^']*)'")


def _status(text: Any) -> str | None:
    if type(text) is not str:
        return None
    m = _STATUS.match(text)
    return m.group(1) if m else text[:100]


def _log_stimulus_ids(log: list) -> set[str]:
    out = set()
    for entry in log:
        if type(entry) is list and len(entry) >= 2 and type(entry[-2]) is str:
            out.add(entry[-2])
    return out


def _transitions_logged(log: list) -> int:
    # (key, start, recommended, final, recommendations, stimulus_id, time)
    return sum(1 for e in log if type(e) is list and len(e) == 7 and type(e[4]) is dict)


def _completeness(w: dict, events: int, cap: int | None) -> tuple[bool, str]:
    """Whether the dump's ``stimulus_log`` provably holds every event the
    worker handled since its empty state, and why (or why not).

    ``stimulus_log`` and the transition log ``log`` are deques of the same
    maximum length, created with the ``WorkerState``; a deque drops entries
    only once full, and stays full after. So the stimulus log is whole if it
    holds fewer entries than the transition log (which no deque can exceed),
    or if the transition log is itself whole (it accounts for every
    transition the worker counted) and names no stimulus the stimulus log
    lacks. The configured cap is checked as well. ``FindMissingEvent`` is
    never logged by dask; it changes no task state (it only asks the
    scheduler for who_has), so a replay without it ends in the same states.
    """
    if "stimulus_log" not in w:
        return False, "the dump excludes the worker's stimulus_log"
    if cap is not None and events >= cap:
        return False, (
            f"the stimulus_log is full ({events} events, distributed.admin.low-level-log-length="
            f"{cap}): earlier events were dropped"
        )
    log = w.get("log")
    counter = w.get("transition_counter")
    if type(log) is not list or type(counter) is not int:
        return False, "the dump lacks the worker's transition log to prove nothing was dropped"
    missing = _log_stimulus_ids(log) - set(_sids(w["stimulus_log"]))
    if missing:
        return False, (
            f"the transition log names {len(missing)} stimulus id(s) the stimulus_log lacks "
            f"(e.g. {short(min(missing))}): events are missing"
        )
    if events < len(log):
        return True, (
            f"all {events} events since the worker started: the stimulus_log never filled "
            f"(it holds fewer entries than the transition log, {len(log)}, of the same cap)"
        )
    logged = _transitions_logged(log)
    if logged == counter:
        return True, (
            f"all {events} events since the worker started: the transition log holds all "
            f"{counter} transitions the worker made, and every stimulus it names"
        )
    return False, (
        f"cannot prove nothing was dropped: the transition log holds {logged} of "
        f"{counter} transitions"
    )


def _sids(stimulus_log: list) -> Iterator[str]:
    for ev in stimulus_log:
        if isinstance(ev, dict) and type(ev.get("stimulus_id")) is str:
            yield ev["stimulus_id"]


def _key_list(keys: Keys, v: Any, where: str, *, as_text: bool = False) -> list:
    if v is None:
        return []
    if isinstance(v, dict):
        v = list(v)
        as_text = True
    if type(v) is not list:
        raise Refused(f"{where}: expected a list of keys, got {short(v)}")
    try:
        return [encode_key(keys.text(k) if as_text else keys.value(k)) for k in v]
    except CodecError as e:
        raise Refused(f"{where}: {e}") from None


def _keys_by(keys: Keys, v: Any, where: str) -> list:
    if v is None:
        return []
    if type(v) is not dict:
        raise Refused(f"{where}: expected a mapping, got {short(v)}")
    out = []
    for address, ks in v.items():
        if type(address) is not str:
            raise Refused(f"{where}: worker {short(address)} is not an address")
        out.append([address, _key_list(keys, ks, f"{where}.{address}")])
    return out


def _task_refs(keys: Keys, v: Any, where: str) -> list:
    if v is None:
        return []
    if type(v) is not list:
        raise Refused(f"{where}: expected a list of tasks, got {short(v)}")
    try:
        return [encode_key(keys.task_repr(t)) for t in v]
    except CodecError as e:
        raise Refused(f"{where}: {e}") from None


def _opt(d: dict, name: str, types: type | tuple, where: str) -> Any:
    return get_typed(d, name, types + (type(None),) if isinstance(types, tuple) else (types, type(None)), where, None)


def _final_task(keys: Keys, name: Any, t: Any, where: str) -> dict:
    if not isinstance(t, dict):
        raise Refused(f"{where}: expected a task mapping, got {short(t)}")
    key = keys.value(t["key"]) if "key" in t else keys.text(name)
    out: dict[str, Any] = {"key": encode_key(key), "state": get_typed(t, "state", str, where)}
    for f in ("previous", "next", "coming_from", "exception_text"):
        v = _opt(t, f, str, where)
        if v is not None:
            out[f] = v
    run_id = _opt(t, "run_id", int, where)
    if run_id is not None:
        out["run_id"] = run_id
    nbytes = _opt(t, "nbytes", int, where)
    if nbytes is not None and nbytes >= 0:
        out["nbytes"] = nbytes
    priority = _opt(t, "priority", list, where)
    if priority is not None:
        out["priority"] = [encode_value(x) for x in priority]
    who_has = _opt(t, "who_has", list, where)
    if who_has:
        if not all(type(a) is str for a in who_has):
            raise Refused(f"{where}.who_has: expected addresses")
        out["who_has"] = who_has
    for f in ("dependencies", "dependents", "waiting_for_data"):
        refs = _task_refs(keys, t.get(f), f"{where}.{f}")
        if refs:
            out[f] = refs
    rr = t.get("resource_restrictions")
    if rr:
        out["resource_restrictions"] = resources_of(rr, f"{where}.resource_restrictions")
    return out


def _time(x: Any) -> float | None:
    return float(x) if type(x) in (int, float) and math.isfinite(x) and x > 0 else None


def _entered(keys: Keys, log: Any) -> dict[Any, tuple[str, float]]:
    """Per key, the state its last transition in the worker's transition log
    (``log``) ended in, and when: ``(key, start, finish, recs, stimulus_id,
    time)``, or ``(key, start, recommended, final, recs, stimulus_id, time)``."""
    out: dict[Any, tuple[str, float]] = {}
    for e in log if type(log) is list else ():
        if type(e) is not list or len(e) not in (6, 7) or type(e[-3 if len(e) == 6 else -4]) is not dict:
            continue
        finish, t = e[2] if len(e) == 6 else e[3], _time(e[-1])
        if type(finish) is not str or t is None:
            continue
        try:
            out[keys.value(e[0])] = (finish, t)
        except (CodecError, Refused, TypeError):  # not a key this dump names: not a task's transition
            continue
    return out


def _dumped(w: dict, sched_worker: dict | None) -> float | None:
    """The latest time the dump records for a worker (its transition and
    stimulus logs, its transfers, the scheduler's last heartbeat from it): when
    the dump was taken, at the earliest."""
    times: list[float | None] = []
    for e in w.get("log") if type(w.get("log")) is list else ():
        times.append(_time(e[-1]) if type(e) is list and e else None)
    for ev in w.get("stimulus_log") if type(w.get("stimulus_log")) is list else ():
        times.append(_time(ev.get("handled")) if isinstance(ev, dict) else None)
    for f in ("transfer_incoming_log", "transfer_outgoing_log"):
        for tr in w.get(f) if type(w.get(f)) is list else ():
            times.append(_time(tr.get("stop")) if isinstance(tr, dict) else None)
    if isinstance(sched_worker, dict):
        times.append(_time(sched_worker.get("last_seen")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _final_records(keys: Keys, address: str, seq: int, w: dict, where: str,
                   sched_worker: dict | None = None) -> list[dict]:
    tasks_obj = get_typed(w, "tasks", dict, where, {})
    tasks = [_final_task(keys, name, t, f"{where}.tasks.{short(name, 40)}") for name, t in tasks_obj.items()]
    # since when each task is in its state, by the dump's own clock: its last
    # transition there, or (executing) when its execution started
    entered = _entered(keys, w.get("log"))
    for task, (name, t) in zip(tasks, tasks_obj.items()):
        key = decode_key(task["key"])
        finish, when = entered.get(key, (None, None))
        if finish == task["state"]:
            task["since"] = when
        elif task["state"] in ("executing", "long-running") and _time(t.get("start_time")) is not None:
            task["since"] = _time(t["start_time"])
    busy = w.get("busy_workers") or []
    if type(busy) is not list or not all(type(a) is str for a in busy):
        raise Refused(f"{where}.busy_workers: expected addresses")
    head: dict[str, Any] = {
        "kind": "final", "worker": address, "seq": seq, "part": 0, "source": SOURCE,
        "status": _status(w.get("status")),
        "running": w.get("running") if type(w.get("running")) is bool else None,
        "transition_counter": w.get("transition_counter") if type(w.get("transition_counter")) is int else None,
        "tasks": tasks[:TASKS_PER_RECORD],
        "data": _key_list(keys, w.get("data"), f"{where}.data", as_text=True),
        "busy_workers": busy,
        "dumped": _dumped(w, sched_worker),
    }
    for f in ("ready", "constrained", "executing", "long_running", "in_flight_tasks", "missing_dep_flight"):
        head[f] = _key_list(keys, w.get(f), f"{where}.{f}")
    for f in ("data_needed", "in_flight_workers", "has_what"):
        head[f] = _keys_by(keys, w.get(f), f"{where}.{f}")
    out = [head]
    for part, i in enumerate(range(TASKS_PER_RECORD, len(tasks), TASKS_PER_RECORD), 1):
        out.append({"kind": "final", "worker": address, "seq": seq, "part": part, "source": SOURCE,
                    "tasks": tasks[i:i + TASKS_PER_RECORD]})
    return out


def scheduler_records(keys: Keys, s: dict) -> list[dict]:
    where = "scheduler"
    workers = []
    for address, sw in get_typed(s, "workers", dict, where, {}).items():
        if type(address) is not str:
            raise Refused(f"{where}.workers: {short(address)} is not an address")
        if not isinstance(sw, dict):
            workers.append({"address": address})
            continue
        entry: dict[str, Any] = {"address": address, "status": _status(sw.get("status"))}
        if type(sw.get("nthreads")) is int and sw["nthreads"] >= 0:
            entry["nthreads"] = sw["nthreads"]
        if isinstance(sw.get("resources"), dict):
            entry["resources"] = resources_of(sw["resources"], f"{where}.workers.{address}.resources")
        workers.append(entry)
    tasks = []
    for name, t in get_typed(s, "tasks", dict, where, {}).items():
        w = f"{where}.tasks.{short(name, 40)}"
        if not isinstance(t, dict):
            raise Refused(f"{w}: expected a task mapping, got {short(t)}")
        key = keys.value(t["key"]) if "key" in t else keys.text(name)
        task: dict[str, Any] = {"key": encode_key(key), "state": get_typed(t, "state", str, w)}
        on = t.get("processing_on")
        if on is not None:
            task["processing_on"] = _worker_ref(on, f"{w}.processing_on")
        who_has = t.get("who_has")
        if who_has:
            if type(who_has) is not list:
                raise Refused(f"{w}.who_has: expected a list, got {short(who_has)}")
            task["who_has"] = [_worker_ref(x, f"{w}.who_has") for x in who_has]
        if type(t.get("nbytes")) is int:
            task["nbytes"] = t["nbytes"]
        tasks.append(task)
    head: dict[str, Any] = {
        "kind": "scheduler", "part": 0, "source": SOURCE,
        "address": s.get("address") if type(s.get("address")) is str else None,
        "transition_counter": s.get("transition_counter")
        if type(s.get("transition_counter")) is int and s["transition_counter"] >= 0 else None,
        "workers": workers, "tasks": tasks[:TASKS_PER_RECORD],
    }
    out = [head]
    for part, i in enumerate(range(TASKS_PER_RECORD, len(tasks), TASKS_PER_RECORD), 1):
        out.append({"kind": "scheduler", "part": part, "source": SOURCE, "tasks": tasks[i:i + TASKS_PER_RECORD]})
    return out


def _worker_ref(x: Any, where: str) -> str:
    # the scheduler's TaskState refers to its WorkerState objects, dumped as repr
    if type(x) is str:
        m = _WORKER_STATE.match(x)
        if m:
            return m.group(1)
        if "://" in x and len(x) < 1000 and not x.startswith("<"):
            return x
    raise Refused(f"{where}: not a worker: {short(x)}")


def learn_keys(keys: Keys, dump: dict) -> None:
    """Every key the dump holds as a value: tasks' keys, event keys."""
    key_fields = {
        name: [f for f, codec in table.items() if codec is cv.KEY or codec is cv.KEYS]
        for name, table in cv.EVENT_FIELDS.items()
    }
    tasks_of = [dump["scheduler"].get("tasks")]
    for w in dump["workers"].values():
        if not isinstance(w, dict):
            continue
        tasks_of.append(w.get("tasks"))
        for ev in w.get("stimulus_log") or ():
            if not isinstance(ev, dict):
                continue
            for f in key_fields.get(ev.get("cls"), ()):  # type: ignore[arg-type]
                v = ev.get(f)
                if f == "keys" and type(v) is list:
                    for k in v:
                        keys.learn(k)
                else:
                    keys.learn(v)
        for entry in w.get("log") or ():
            if type(entry) is list and entry:
                keys.learn(entry[0])
    for tasks in tasks_of:
        if isinstance(tasks, dict):
            for t in tasks.values():
                if isinstance(t, dict) and "key" in t:
                    keys.learn(t["key"])


def _versions(dump: dict, address: str) -> dict:
    versions = dump.get("versions")
    if not isinstance(versions, dict):
        return {}
    for src in ((versions.get("workers") or {}).get(address) if isinstance(versions.get("workers"), dict) else None,
                versions.get("scheduler")):
        if isinstance(src, dict) and isinstance(src.get("packages"), dict):
            return src["packages"]
    return {}


def worker_records(
    dump: dict, file: str, address: str, w: dict, keys: Keys, sched_worker: dict | None
) -> tuple[list[dict], WorkerImport]:
    where = f"workers.{address}"
    packages = _versions(dump, address)
    inputs = state_inputs(w, sched_worker, where)
    stimulus_log = get_typed(w, "stimulus_log", list, where, [])
    events = len(stimulus_log)
    complete, reason = _completeness(w, events, inputs["log_length"])
    # sizes the dump knows: the worker's tasks, then the scheduler's
    sizes: dict[Any, int] = {}
    for tasks in (w.get("tasks"), dump["scheduler"].get("tasks")):
        if isinstance(tasks, dict):
            for t in tasks.values():
                if isinstance(t, dict) and type(t.get("nbytes")) is int and t["nbytes"] >= 0 and "key" in t:
                    try:
                        sizes.setdefault(value_key(t["key"]), t["nbytes"])
                    except CodecError:
                        pass
    conv = EventConverter(keys, sizes, inputs["default_data_size"])
    repaired_before = keys.repaired
    converted = [conv.convert(ev, f"{where}.stimulus_log[{i}]") for i, ev in enumerate(stimulus_log)]
    pid = sched_worker.get("pid") if sched_worker is not None else None
    header = {
        "kind": "header", "format": FORMAT, "version": VERSION, "worker": address,
        "dask": packages.get("dask") if type(packages.get("dask")) is str else "unknown",
        "distributed": packages.get("distributed"),
        "python": _python_version(packages.get("python")),
        "pid": pid if type(pid) is int and pid >= 0 else 0,
        "started": converted[0][1] if converted else 0.0,
        # the dumped worker hashed tasks by identity: no replay can promise its order
        "deterministic": False,
        "hash_seed": None,
        "from_empty": complete,
        # unknown for a partial history: what the first step found is not in the dump
        "initial_tasks": 0,
        "state": inputs,
        "history": "complete" if complete else "partial",
        "history_reason": reason,
    }
    if type(header["distributed"]) is not str:
        raise Refused(f"versions: no distributed version for worker {address}")
    records: list[dict] = [header]
    for seq, (ev, handled) in enumerate(converted, 1):
        records.append({"kind": "step", "worker": address, "seq": seq, "handled": handled, "event": ev})
    # events of one handle_stimulus call share its time: one batch, whose last
    # step ends the call (instructions null: the dump has none)
    i = 1
    while i < len(records):
        j = i
        while j + 1 < len(records) and records[j + 1]["handled"] == records[i]["handled"]:
            j += 1
        records[j]["instructions"] = None
        if j > i:
            records[j]["batch"] = j - i + 1
        i = j + 1
    final = _final_records(keys, address, events, w, where, sched_worker)
    header["imported"] = {
        "source": SOURCE, "file": file, "events": events, "log_length": inputs["log_length"],
        "instructions": False, "keys_repaired": keys.repaired - repaired_before,
        "sizes_guessed": conv.guessed,
    }
    last = converted[-1][1] if converted else header["started"]
    end = {"kind": "end", "worker": address, "seq": events, "time": last,
           "reason": "imported from a cluster dump; the final records hold the state when dumped"}
    records += final
    records.append(end)
    report = WorkerImport(
        address, events, header["history"], reason, sum(len(r["tasks"]) for r in final),
        header["imported"]["keys_repaired"], conv.guessed,
    )
    return records, report
