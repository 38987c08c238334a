"""One question, one answer, whatever the path that answers it.

Every read command is asked of each log through every path — the index
(``REPLAY_INDEX=required``, so nothing else can answer), a replay
(``REPLAY_INDEX=off``), standard input, ``--jobs 2`` for ``load``, and the
Python API's real ``WorkerState`` — and the answers must be equal. The logs
include state machines with a bookkeeping bug (``tests/patched/``), recorded
from a real ``LocalCluster`` running through the patch and replayed through
it with ``--import``: those are the logs a debugger exists for, and each
answer must show the bug, not a tidier state derived from task states.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import orjson
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCHES = ("stale_in_flight", "dup_gather", "raising_transition")
#: asked too, through the stock state machine: shipped fixtures, and a
#: simulated cluster with every kind of fault
STOCK = ("stuck-flight.jsonl", "stuck-6705.jsonl", "simulated.jsonl")


def _env() -> dict:
    # the in-process workers record this seed; replays must hash with it too
    return dict(os.environ, PYTHONHASHSEED="6640")


def _started(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finished(p: subprocess.Popen, what: str) -> bytes:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"{what} failed:\n{err.decode(errors='replace')[-3000:]}"
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory, fixture_path) -> dict[str, tuple[str, str | None]]:
    """name -> (log, the module to replay it through); the patched ones are
    recorded now, side by side."""
    folder = tmp_path_factory.mktemp("one-answer")
    recording = {name: _started(["tests/patched/record.py", name, str(folder / f"{name}.jsonl")])
                 for name in PATCHES}
    out: dict[str, tuple[str, str | None]] = {}
    simulating = _started(["cli.py", "simulate", "-o", str(folder / "simulated.jsonl"), "--events", "600",
                           "--seed", "5"])
    for name, p in recording.items():
        _finished(p, f"recording {name}")
        out[name] = (str(folder / f"{name}.jsonl"), f"tests.patched.{name}")
    _finished(simulating, "simulating")
    # the stale entry's log through the stock state machine: replay departs from it
    # (a copy: each process keeps the index of its own state machine beside its log)
    out["stale_unpatched"] = (shutil.copy(out["stale_in_flight"][0], str(folder / "stale_unpatched.jsonl")), None)
    # a log that says the raising step did not raise: replay stops there
    out["replay_crash"] = (_without_errors(out["dup_gather"][0], str(folder / "crash.jsonl")),
                           "tests.patched.dup_gather")
    for name in STOCK:
        copy = str(folder / name)
        if name != "simulated.jsonl":
            shutil.copy(fixture_path(name), copy)
        out[name] = (copy, None)
    return out


def _without_errors(src: str, dst: str) -> str:
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            rec = orjson.loads(line)
            if rec.get("kind") == "step" and "error" in rec:
                del rec["error"]
                rec["instructions"] = []
            out.write(orjson.dumps(rec) + b"\n")
    return dst


@pytest.fixture(scope="module")
def answers(logs) -> dict[str, dict]:
    """name -> every question's answers by every path (``tests/patched/answers.py``)."""
    running = {name: _started(["tests/patched/answers.py", log, *([module] if module else [])])
               for name, (log, module) in logs.items()}
    return {name: orjson.loads(_finished(p, f"asking {name}")) for name, p in running.items()}


@pytest.mark.parametrize("name", PATCHES + STOCK + ("replay_crash", "stale_unpatched"))
def test_every_path_gives_the_same_answer(answers, logs, name):
    log = logs[name][0]
    asked = answers[name]["answers"]
    assert len(asked) >= 10
    for question, by_path in asked.items():
        # standard input is named <stdin> where the file is named by its path
        got = {path: (a["code"], a["out"].replace("<stdin>", log)) for path, a in by_path.items()}
        assert got["index"][0] == 0, (question, by_path["index"]["err"])
        for path, answer in got.items():
            assert answer == got["index"], (question, path)


@pytest.mark.parametrize("name", PATCHES + STOCK)
def test_the_python_api_holds_the_same_state(answers, name):
    asked = answers[name]
    for address, api in asked["api"].items():
        state = orjson.loads(asked["answers"][f"state {address}"]["index"]["out"])
        assert {repr(_key(t["key"])): t["state"] for t in state["tasks"]} == api["tasks"]
        assert {p: sorted(map(repr, map(_key, ks))) for p, ks in state["in_flight_workers"].items()} == \
            api["in_flight_workers"]


@pytest.mark.parametrize("name", PATCHES + STOCK + ("replay_crash", "stale_unpatched"))
def test_the_stepper_shows_the_state_that_state_shows(answers, name):
    """``replay step`` at a step is ``replay state --at`` that step: the raised
    steps and unanswered gathers included, on a broken state machine too."""
    asked = answers[name]["answers"]
    stepped = [q for q in asked if q.startswith("step ")]
    assert stepped
    for question in stepped:
        state = orjson.loads(asked[question.replace("step ", "state ", 1)]["index"]["out"])
        step = orjson.loads(asked[question]["index"]["out"])["state"]
        assert step == state, question


def _key(k):
    return tuple(map(_key, k)) if isinstance(k, list) else k


def _json(answers, name, question) -> dict:
    return orjson.loads(answers[name]["answers"][question]["index"]["out"])


def _why(answer: dict) -> dict:
    """One worker's ``why --json``: alone, or with the disagreements found
    (a peer whose recorder stopped first, say), under ``workers``."""
    return answer["workers"][0] if "workers" in answer else answer


def _worker_with(answers, name, key) -> str:
    """The worker of the patched log whose final state has ``key``."""
    for address, api in answers[name]["api"].items():
        if repr(key) in api["tasks"]:
            return address
    raise AssertionError(f"no worker of {name} has {key!r}")


def test_a_stale_in_flight_entry_shows(answers):
    b = _worker_with(answers, "stale_in_flight", "y2")
    a = next(w for w in answers["stale_in_flight"]["api"] if w != b)
    state = _json(answers, "stale_in_flight", f"state {b}")
    # the state machine holds an entry for a without a transfer: that is the bug
    assert state["in_flight_workers"] == {a: []}
    assert {t["key"]: t["state"] for t in state["tasks"]}["x2"] == "fetch"
    (x2,) = [v for v in _why(_json(answers, "stale_in_flight", f"why {b}"))["tasks"] if v["key"] == "x2"]
    assert x2["category"] == "fetch: holders busy"
    # no GatherDep to a is unanswered: the entry is stale, not a transfer under way
    assert "already under way" not in x2["reason"]
    assert f"{a} is marked in flight (in_flight_workers), but no GatherDep to it awaits an answer" in x2["reason"]
    assert x2["detail"]["stale_in_flight"] == [a]


def test_a_duplicated_gather_shows_twice_and_its_raise_is_named(answers):
    name = "dup_gather"
    b = _worker_with(answers, name, "y")
    a = next(w for w in answers[name]["api"] if w != b)
    # after the compute-task that asked for x: two requests for one transfer
    state = _json(answers, name, f"state {b} at 1")
    assert [(g["peer"], g["keys"]) for g in state["gathers"]] == [(a, ["x"]), (a, ["x"])]
    assert state["in_flight_workers"] == {a: ["x"]}
    # the second answer finds no transfer from a under way: KeyError, recorded and replayed
    load = _json(answers, name, "load --json")
    (worker,) = [w for w in load["workers"] if w["address"] == b]
    (raised,) = worker["raised"]
    assert raised["exception"].startswith("KeyError") and a in raised["exception"]
    why = _why(_json(answers, name, f"why {b}"))
    assert why["raised"] == [raised]


def test_a_raising_transition_is_named(answers):
    name = "raising_transition"
    a = _worker_with(answers, name, "boom-1")
    load = _json(answers, name, "load --json")
    (worker,) = [w for w in load["workers"] if w["address"] == a]
    (raised,) = worker["raised"]
    assert raised["exception"] == "TypeError: cannot store 'boom-1'" and raised["key"] == "boom-1"
    assert "raised TypeError: cannot store 'boom-1'" in answers[name]["answers"]["load"]["index"]["out"]
    assert _json(answers, name, f"state {a}")["raised"] == [raised]


def test_past_a_crash_every_path_answers_at_the_last_step_replay_reaches(answers, logs):
    name = "replay_crash"
    b = _worker_with(answers, name, "y")
    # the step the recording says raised, which this log says did not
    (n,) = [rec["seq"] for rec in map(orjson.loads, open(logs["dup_gather"][0], "rb"))
            if rec.get("kind") == "step" and "error" in rec and rec["worker"] == b]
    load = _json(answers, name, "load --json")
    (worker,) = [w for w in load["workers"] if w["address"] == b]
    assert worker["crash"].startswith(f"step {n} ") and worker["step"] == n - 1
    why = _why(_json(answers, name, f"why {b}"))
    assert why["step"] == n - 1 and why["note"].startswith(f"replay stops at step {n - 1}: step {n} ")
    state = _json(answers, name, f"state {b}")
    assert state["step"] == n - 1 and state["note"] == why["note"]


def test_a_replay_that_departs_from_the_recording_says_so_on_every_path(answers):
    # the stock state machine fetches x2 where the patched worker, believing a
    # transfer from its holder under way, did not: from that step on, what a
    # replay shows is not what the worker did
    name = "stale_unpatched"
    b = _worker_with(answers, name, "y2")
    load = _json(answers, name, "load --json")
    (worker,) = [w for w in load["workers"] if w["address"] == b]
    step = worker["departed"]["step"]
    assert worker["departed"]["text"].startswith("its instructions differ from the recorded ones")
    why = _why(_json(answers, name, f"why {b}"))
    assert why["note"].startswith(f"from step {step} on, this replay departed from the recording")
    # through the patch it was recorded with, nothing departs
    patched = _json(answers, "stale_in_flight", "load --json")
    assert all(w["departed"] is None for w in patched["workers"])


def test_a_stock_and_a_patched_state_machine_never_share_an_index(logs, tmp_path, cli_run):
    log = str(tmp_path / "stale.jsonl")
    shutil.copy(logs["stale_in_flight"][0], log)
    patched = ["--import", "tests.patched.stale_in_flight"]
    # indexed through the patch: the stock state machine finds no index of its own
    _finished(_started(["cli.py", *patched, "index", log]), "indexing through the patch")
    os.environ["REPLAY_INDEX"] = "required"
    try:
        code, _, err = cli_run(["load", log])
        assert code == 2 and "no current index" in err
        # indexed by the stock one: the patch finds none either
        os.environ["REPLAY_INDEX"] = "auto"
        assert cli_run(["index", log])[0] == 0
        p = subprocess.run([sys.executable, "cli.py", *patched, "load", log], cwd=ROOT, capture_output=True,
                           env=dict(_env(), REPLAY_INDEX="required"))
        assert p.returncode == 2 and b"no current index" in p.stderr
    finally:
        os.environ.pop("REPLAY_INDEX", None)
