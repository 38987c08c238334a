"""Ask one log every read question by every path, in a process of its own.

    python tests/patched/answers.py LOG [MODULE]

imports ``MODULE`` (a patched state machine; through ``--import``, as a user
would) and prints one JSON object: for each question, what each path
answered. Paths: ``index`` (built on the first question, then
``REPLAY_INDEX=required``, so that only the index answers), ``replay``
(``REPLAY_INDEX=off``), ``stdin`` (the log piped in), ``jobs`` (``--jobs 2``,
for ``load``) and ``api`` (``replay.open`` and a real ``WorkerState``, for
``state``). A process of its own, because a patch changes the state machine
of the process that imports it.
"""
from __future__ import annotations

import io
import os
import sys

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import cli  # noqa: E402
import replay  # noqa: E402


def run(args: list[str], *, index: str, stdin: bytes | None = None) -> dict:
    """``replay ARGS`` through ``cli.main``: exit code, stdout, stderr."""
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, os.environ.get("REPLAY_INDEX")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    sys.argv = ["replay", *args]
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout, sys.stderr = out, err
    os.environ["REPLAY_INDEX"] = index
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr, mode = saved
        if mode is None:
            os.environ.pop("REPLAY_INDEX", None)
        else:
            os.environ["REPLAY_INDEX"] = mode
    return {"code": code, "out": out.buffer.getvalue().decode(), "err": err.buffer.getvalue().decode()}


def final_state(w):
    """The real ``WorkerState`` at the end, or where replay stops short of it."""
    try:
        return w.state_at(None)
    except replay.ReplayError as e:
        if e.step is None:
            raise
        return w.state_at(e.step - 1)


def reached(w) -> int:
    """The last step replay reaches (past a crash, none is answered)."""
    try:
        w.state_at(None)
    except replay.ReplayError as e:
        if e.step is None:
            raise
        return e.step - 1
    return w.events


#: steps of each worker at which the stepper is asked (each answer forks a seeker)
STEPPED = 12


def questions(log: str) -> dict[str, list[str]]:
    """Every read command, for every worker, at the end and half-way."""
    history = replay.open(log, inexact=True)
    qs: dict[str, list[str]] = {"load": ["load"], "load --json": ["load", "--json"]}
    for w in history.workers:
        n = w.events
        for what in ("state", "why"):
            qs[f"{what} {w.address}"] = [what, "-w", w.address, "--json"]
            qs[f"{what} {w.address} text"] = [what, "-w", w.address]
            for at in sorted({1, n // 2} & set(range(1, n + 1))):
                qs[f"{what} {w.address} at {at}"] = [what, "-w", w.address, "--at", str(at), "--json"]
        # the stepper stands at every step replay reaches: its state pane is
        # another way to ask ``state --at``
        for at in range(1, min(reached(w), STEPPED) + 1):
            qs[f"state {w.address} at {at}"] = ["state", "-w", w.address, "--at", str(at), "--json"]
            qs[f"step {w.address} at {at}"] = ["step", "-w", w.address, "--to", str(at), "--print", "--json"]
        qs[f"diff {w.address}"] = ["diff", "-w", w.address, f"{n // 2}..{n}", "--json"]
        ws = final_state(w)
        for key in sorted(ws.tasks, key=repr)[:2]:
            qs[f"story {key!r} {w.address}"] = ["story", "-w", w.address, repr(key), "--json"]
    qs["why"] = ["why", "--json"]
    return qs


def main() -> None:
    # the log was recorded with this process's seed: nothing to re-execute for
    os.environ["DASK_REPLAY_SEED_REEXEC"] = "1"
    log = sys.argv[1]
    patch = ["--import", sys.argv[2]] if len(sys.argv) > 2 else []
    data = open(log, "rb").read()
    answers: dict[str, dict] = {}
    run([*patch, "index", log], index="auto")
    for name, args in questions(log).items():
        answers[name] = {
            "index": run([*patch, *args[:1], log, *args[1:]], index="required"),
            "replay": run([*patch, *args[:1], log, *args[1:]], index="off"),
            "stdin": run([*patch, *args[:1], "-", *args[1:]], index="auto", stdin=data),
        }
        if args[0] == "load":
            answers[name]["jobs"] = run([*patch, "load", log, "--jobs", "2", *args[1:]], index="off")
    # the Python API: a real WorkerState at the end
    api = {}
    for w in replay.open(log).workers:
        ws = final_state(w)
        api[w.address] = {
            "tasks": {repr(k): ts.state for k, ts in ws.tasks.items()},
            "in_flight_workers": {p: sorted(map(repr, ks)) for p, ks in ws.in_flight_workers.items()},
        }
    sys.stdout.buffer.write(orjson.dumps({"answers": answers, "api": api}))


if __name__ == "__main__":
    main()
