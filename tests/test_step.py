"""``replay step``: its screen at a step, breakpoints forwards and backwards,
the UI driven by Textual's pilot and once through a real terminal (tmux).

The fixture ``stuck-flight.jsonl`` has two workers: A (``…:37371``) computes
``x``; B (``…:43731``) gets ``y = inc(x)`` in its only step, a
ComputeTaskEvent that makes B fetch ``x`` from A: ``x`` goes released →
fetch → flight and B issues a GatherDep to A that never completes.
"""
from __future__ import annotations

import asyncio
import collections
import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest

import replay
from replay.literal import key_text, short_key
from replay.step import Stepper
from replay.views import state_of, walk

A = "tcp://127.0.0.1:37371"
B = "tcp://127.0.0.1:43731"
#: B's only step: y arrives, naming x on A
COMPUTE_Y = "compute-task-1795694512.1413152"
REPLAY = os.path.join(os.path.dirname(sys.executable), "replay")


@pytest.fixture(scope="module")
def flight(fixture_path):
    return fixture_path("stuck-flight.jsonl")


# --- --print --------------------------------------------------------------------


def test_print_at_stimulus_shows_the_gather_issued(flight, cli_run):
    # no --worker: the stimulus id is B's, so B is shown
    code, out, err = cli_run(["step", flight, "--to", COMPUTE_Y, "--print"])
    assert code == 0, err
    assert out.startswith(f"step 1 of 1  worker {B}  running")
    assert "event ComputeTaskEvent key='y'" in out
    assert "transition 'x': fetch → flight" in out
    assert f"instruction GatherDep worker='{A}' to_gather={{'x'}}" in out
    # the state after the step: x in flight from A, y waiting for it
    assert f"in flight from {A} (1): 'x'" in out
    assert "'y'  waiting" in out


def test_without_a_worker_the_one_with_an_unfinished_task_opens(flight, cli_run, fixture_path):
    # B ends with x in flight and y waiting for it; A, the first, ends with x in memory
    unfinished = {wh.address: unfinished_at_end(wh) for wh in replay.open(flight).workers}
    assert unfinished == {A: 0, B: 2}
    code, out, err = cli_run(["step", flight, "--print"])
    assert code == 0, err
    assert out.startswith(f"step 0 of 1  worker {B}")
    # every worker of the cluster fixture ends with its tasks finished: the first opens
    history = replay.open(fixture_path("cluster-log.jsonl.gz"))
    assert not any(unfinished_at_end(wh) for wh in history.workers)
    s = Stepper(history)
    try:
        assert s.index == 0 and [s.unfinished(i) for i in range(3)] == [0, 0, 0]
    finally:
        s.close()


def unfinished_at_end(wh) -> int:
    """Tasks a worker leaves neither in memory, erred, released nor forgotten."""
    ws = None
    for _, r in walk(wh):
        ws = r.ws
    return sum(ts.state not in ("memory", "error", "released", "forgotten") for ts in ws.tasks.values())


def test_print_json_has_the_step_and_its_state(flight, cli_run):
    code, out, err = cli_run(["step", flight, "-w", B, "--to", "1", "--print", "--json"])
    assert code == 0, err
    data = orjson.loads(out)
    assert (data["worker"], data["step"], data["events"]) == (B, 1, 1)
    assert data["event"]["event"]["cls"] == "ComputeTaskEvent"
    caused = data["event"]["caused"]
    transitions = [(c["transition"]["key"], c["transition"]["start"], c["transition"]["finish"])
                   for c in caused if c["kind"] == "transition"]
    assert transitions == [("y", "released", "waiting"), ("x", "released", "fetch"), ("x", "fetch", "flight")]
    # the recommendation that explains the cascade: y waiting recommends fetching x
    assert caused[[c["kind"] for c in caused].index("transition")]["transition"]["recommendations"] == {"x": "fetch"}
    gathers = [c["instruction"] for c in caused if c["kind"] == "instruction"]
    assert [g["cls"] for g in gathers] == ["GatherDep"] and gathers[0]["worker"] == A
    assert {t["key"]: t["state"] for t in data["state"]["tasks"]} == {"x": "flight", "y": "waiting"}
    assert data["state"]["in_flight_workers"] == {A: ["x"]}


@pytest.mark.parametrize("spec, step, hit", [
    ("state:x=executing", 1, "'x' reaches executing"),
    ("state:x=memory", 2, "'x' reaches memory"),
    ("event:ExecuteSuccessEvent", 2, "event ExecuteSuccessEvent"),
    ("instruction:Execute", 1, "instruction Execute"),
    ("instruction:TaskFinishedMsg", 2, "instruction TaskFinishedMsg"),
])
def test_print_stops_at_the_first_hit(flight, cli_run, spec, step, hit):
    # on A, compute-task takes x to executing (an Execute), its success to memory
    code, out, err = cli_run(["step", flight, "-w", A, "--break", spec, "--print", "--json"])
    assert code == 0, err
    data = orjson.loads(out)
    assert (data["step"], data["hit"]) == (step, hit)


def test_print_without_a_hit_says_so_and_exits_1(flight, cli_run):
    # x never goes in flight on A, which computes it
    code, out, err = cli_run(["step", flight, "-w", A, "--break", "state:x=flight", "--print"])
    assert code == 1
    assert "no breakpoint hit after step 0" in out


@pytest.mark.parametrize("args, message", [
    (["--break", "flight"], "breakpoint 'flight': expected"),
    (["--break", "event:GatherDepSucess"], "no event class 'GatherDepSucess'; closest: GatherDepSuccessEvent"),
    (["--break", "invalid"], "an invalid breakpoint needs --validate"),
    (["--to", "no-such-stimulus"], "no step of"),
    # a state the state machine has not, a key the worker never had: a hit never comes
    (["--break", "state:x=flite"], "no task state 'flite'; closest: flight"),
    (["--break", "state:x=notastate"], "no task state 'notastate'; the states: cancelled, constrained"),
    (["--break", "state:y=memory"], f"no such key on {A}: 'y'"),
    (["--break", "state:xx=memory"], f"no such key on {A}: 'xx'; closest: 'x'"),
])
def test_bad_input_is_one_line_naming_the_file(flight, cli_run, args, message):
    code, out, err = cli_run(["step", flight, "-w", A, *args, "--print"])
    assert code == 2
    # under another release than the recording's, a warning says so first
    lines = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flight}: ") and message in lines[0], err


# --- breakpoints against a linear replay ------------------------------------------


def state_of_key(replayer, key):
    ts = replayer.ws.tasks.get(key)
    return None if ts is None else ts.state


@pytest.fixture(scope="module")
def cluster(fixture_path):
    history = replay.open(fixture_path("cluster-log.jsonl.gz"))
    wh = max(history.workers, key=lambda w: w.events)
    stepper = Stepper(history, wh.address)
    yield stepper
    stepper.close()


def test_continue_both_ways_finds_every_step_a_key_reaches_a_state(cluster):
    s = cluster
    wh = s.wh
    # the key whose state changes most often, and its states step by step from a linear replay
    fresh = replay.open(wh.log.path).worker(wh.address)
    changes = collections.Counter(s.scan.t_key[i] for i in range(len(s.scan.t_key)))
    key = s.scan.keys.names[changes.most_common(1)[0][0]]
    states = [fresh.view(step, state_of_key, key) for step in range(wh.events + 1)]
    target = "memory" if "memory" in states else next(x for x in states if x)
    expected = [i for i in range(1, len(states)) if states[i] == target and states[i - 1] != target]
    assert expected
    s.breakpoints[:] = []
    s.add_break(f"state:{key!r}={target}")
    s.go(0)
    forwards = []
    while (hit := s.next_hit(True)) is not None:
        forwards.append(s.go(hit[0]))
    assert forwards == expected
    s.go(s.last)
    backwards = []
    while (hit := s.next_hit(False)) is not None:
        backwards.append(s.go(hit[0]))
    assert backwards == expected[::-1]


def test_event_and_stimulus_breakpoints_match_the_recorded_steps(cluster):
    s = cluster
    steps = [(c.first + i, type(ev).__name__, ev.stimulus_id)
             for c in s.wh.calls(instructions=False) for i, ev in enumerate(c.events)]
    cls = steps[len(steps) // 2][1]
    sid = steps[len(steps) // 3][2]
    for spec, want in ((f"event:{cls}", [n for n, c, _ in steps if c == cls]),
                       (f"stimulus:{sid}", [n for n, _, i in steps if i == sid])):
        s.breakpoints[:] = []
        s.add_break(spec)
        s.go(0)
        got = []
        while (hit := s.next_hit(True)) is not None:
            got.append(s.go(hit[0]))
        assert got == want
        back = []
        while (hit := s.next_hit(False)) is not None:
            back.append(s.go(hit[0]))
        assert back == want[::-1][1:]  # from the last hit, the earlier ones


def test_step_view_equals_a_linear_replay_and_switching_keeps_the_time(cluster, fingerprint_ws):
    s = cluster
    wh = s.wh
    fresh = replay.open(wh.log.path).worker(wh.address)
    for pos in (s.last, 1, s.last // 2, s.last // 2 - 1):
        s.go(pos)
        view = s.view()
        linear = fresh.view(pos, state_of_all_keys)
        assert {(t.key, t.state) for t in view.state.tasks} == linear
        assert view.event is not None and view.event.step == pos
    # another worker, at the same recorded moment: its last step handled by then
    t = s.scan.handled[s.pos]
    before = s.index
    other = s.switch(None)
    assert s.index != before
    assert s.scan.handled[other] <= t
    if other < s.last:
        assert s.scan.handled[other + 1] > t
    s.switch(s.history.workers[before].address)


def test_tab_keeps_the_recorded_time(cluster):
    """Round the workers, twice, from several moments: each worker shows its
    last step handled by the moment the user stands at, which never moves,
    and the worker the user started from comes back at the same step."""
    s = cluster
    history = s.history
    # each worker's recorded (step, handled), read from its log, not from the stepper
    recorded = [[(c.first + i, c.handled) for c in wh.calls(instructions=False) for i in range(len(c.events))]
                for wh in history.workers]
    start = s.index
    positions = (1, s.last // 3, s.last // 2 + 1, s.last)
    for pos in positions:
        s.go(pos)
        moment = recorded[start][pos - 1][1]
        assert s.time == moment
        for _ in range(2 * len(history.workers)):
            s.switch(None)
            assert s.time == moment
            by_then = [step for step, handled in recorded[s.index] if handled <= moment]
            assert s.pos == (by_then[-1] if by_then else 0)
            if s.index == start:
                assert s.pos == pos
            elif pos in positions[:3:2]:  # the heading says which moment it shows
                shown = dict(recorded[s.index]).get(s.pos)
                assert s.view().moment == (moment if shown is None or shown < moment else None)
        assert s.index == start and s.pos == pos


def test_find_keys_by_any_part(cluster):
    s = cluster
    s.go(0)
    every = set()
    for _, r in walk(s.wh):
        every |= set(r.ws.tasks)
    for part in ("tree", "TREE", "4, 1", "int-0", "held-"):
        want = sorted((k for k in every if part.lower() in key_text(k).lower()), key=key_text)
        assert want and sorted(s.find_keys(part), key=key_text) == want
    # a key itself, typed as its literal, is that key alone though others contain it
    tree = next(k for k in every if isinstance(k, tuple) and k[0] == "tree")
    assert s.find_keys(key_text(tree)) == [tree]
    assert {"held", "held-2"} <= every and s.find_keys("held") == ["held"]
    with pytest.raises(replay.errors.NotFound, match=rf"no such key on {s.wh.address}: 'no-such-key'"):
        s.find_keys("no-such-key")


def test_short_key_keeps_what_key_split_names(cluster):
    from dask.base import tokenize
    from dask.utils import key_split

    token = tokenize("x", 1)
    made = [f"random_sample-{token}", (f"random_sample-{token}", 6, 4), f"sum-aggregate-{token}", token]
    for key in [*made, *cluster.scan.keys.names]:
        name = key[0] if isinstance(key, tuple) else key
        short = short_key(key)
        if isinstance(key, tuple):  # every index whole
            assert short.endswith(key_text(key[1:])[1:]) or short.endswith(key_text(key[1:])[1:-2] + ")")
        if not isinstance(name, str) or len(name) <= len(key_split(name)) + 6:
            assert short == key_text(key)  # nothing to cut: a name, a short token
        else:
            split = key_split(name)
            kept = split + "-" + name[len(split) + 1:][:4] if split != "data" else name[:4]
            assert short.startswith(("(" if isinstance(key, tuple) else "") + repr(kept + "…"))
    assert short_key((f"random_sample-{token}", 6, 4)) == f"('random_sample-{token[:4]}…', 6, 4)"


def state_of_all_keys(replayer):
    return {(k, ts.state) for k, ts in replayer.ws.tasks.items()}


# --- the UI -------------------------------------------------------------------------


def screen_text(app) -> str:
    """The screen as plain text, as Textual's own screenshot renders it."""
    from rich.console import Console

    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def test_ui_with_the_pilot(flight):
    from replay.stepui import StepApp

    async def session() -> list[str]:
        stepper = Stepper(replay.open(flight), B)
        app = StepApp(stepper)
        shots = []
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                shots.append(screen_text(app))
                await pilot.press("g", *COMPUTE_Y, "enter")
                shots.append(screen_text(app))
                await pilot.press("p", "b", *"state:x=flight", "enter", "c")
                shots.append(screen_text(app))
                await pilot.press("p")
                shots.append(screen_text(app))
                await pilot.press("s", "x", "enter")
                shots.append(screen_text(app))
                await pilot.press("escape", "n", "tab")
                shots.append(screen_text(app))
                await pilot.press("question_mark")
                shots.append(screen_text(app))
                await pilot.press("escape", "q")
        finally:
            stepper.close()
        return shots

    start, at_sid, hit, back, story, other, help_ = asyncio.run(session())
    assert start.startswith(f"step 0 of 1  worker {B}")
    assert "tasks: none" in start
    # the stimulus id: B's step 1, after which x is in flight from A
    assert at_sid.startswith(f"step 1 of 1  worker {B}")
    assert "instruction GatherDep" in at_sid and re.search(r"^ 'x' +flight", at_sid, re.MULTILINE)
    # continue from step 0 stops where x reached flight, saying why
    assert hit.startswith("step 1 of 1") and "breakpoint: 'x' reaches flight" in hit
    assert "breakpoints: 'x' reaches flight" in hit
    # a step back: the empty state, nothing in flight
    assert back.startswith("step 0 of 1") and "flight" not in back.split("breakpoints:")[0]
    # x's story: created by y's ComputeTaskEvent, fetched, the GatherDep to A
    assert "story of 'x'" in story
    assert "transition 'x': fetch → flight" in story and "instruction GatherDep" in story
    # A at the time of B's step 1: A had already computed x (its step 2, earlier)
    assert other.startswith(f"step 2 of 2  worker {A}")
    assert re.search(r"^ 'x' +memory", other, re.MULTILINE)
    for keys, _ in __import__("replay.stepui", fromlist=["HELP"]).HELP:
        assert keys in help_


def crowded_step(stepper) -> tuple[int, list[tuple[str, str]], Any]:
    """The step of the stepper's worker whose event changed the most tasks'
    states while the worker holds at least five, the first five rows a task
    list shows there, read from a linear replay (short key, state), and the
    first row's key."""
    changes = collections.Counter(stepper.scan.t_step[i] for i in range(len(stepper.scan.t_step)))
    fresh = replay.open(stepper.wh.log.path).worker(stepper.wh.address)
    best = None
    for step in sorted(step for step, _ in changes.most_common(30)):
        tasks = fresh.view(step, state_of).tasks
        if len(tasks) >= 5 and (best is None or changes[step] > changes[best[0]]):
            best = (step, [(short_key(t.key), t.state_text()) for t in tasks[:5]], tasks[0].key)
    assert best is not None and changes[best[0]] >= 3
    return best


def task_rows_shown(shot: str, rows: list[tuple[str, str]]) -> bool:
    """Whether the screen has the task list's header, then ``rows`` right under it."""
    lines = shot.splitlines()
    at = next((i for i, line in enumerate(lines) if re.match(r"^ key +state(\s|$)", line)), None)
    return at is not None and all(
        # (a scroll bar may end the line)
        re.match(rf"^ {re.escape(key)} +{re.escape(state)}(\s|$)", lines[at + 1 + i])
        for i, (key, state) in enumerate(rows)
    )


def test_ui_fits_80x24(cluster):
    """The busiest step at 80×24: the event block shrinks, the task list keeps
    five rows, the key bar ends with help and quit. Then / finds keys by a
    part: several go to a picker; an unknown one is an error, which the next
    search clears."""
    from replay.stepui import StepApp

    s = cluster
    step, rows, first = crowded_step(s)
    tree = s.find_keys("tree")
    assert len(tree) > 2

    async def session() -> list[str]:
        app = StepApp(s)
        shots = []
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("g", *str(step), "enter")
            shots.append(screen_text(app))
            await pilot.press("k")
            shots.append(screen_text(app))
            await pilot.press("k", "enter")  # the first task, in full
            shots.append(screen_text(app))
            await pilot.press("slash", "enter", "slash", *"tree", "enter")
            shots.append(screen_text(app))
            await pilot.press("down", "enter")
            shots.append(screen_text(app))
            await pilot.press("slash", *"no-such-key", "enter")
            shots.append(screen_text(app))
            await pilot.press("slash", *key_text(tree[0]), "enter")
            shots.append(screen_text(app))
            await pilot.press("q")
        return shots

    crowded, full, detail, picker, picked, unknown, found = asyncio.run(session())
    for shot in (crowded, full, detail, picked, unknown, found):
        lines = shot.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        assert lines[-1].rstrip().endswith("? help  q quit")
    assert crowded.startswith(f"step {step} of {s.wh.events}")
    assert "\nevent " in crowded and task_rows_shown(crowded, rows), crowded
    assert rows[0][0] != key_text(first)  # the fixture's first row is a key that shortens
    assert task_rows_shown(full, [(key_text(first), rows[0][1])]) and "keys in full" in full
    assert f"finding {key_text(first)}" in detail and f"\nkey {key_text(first)}  {rows[0][1]}" in detail
    assert task_rows_shown(detail, rows[:1])
    assert f"{len(tree)} keys contain 'tree'" in picker and key_text(tree[1]) in picker
    assert f"finding {key_text(tree[1])}" in picked
    assert "error: no such key" in unknown
    assert "error:" not in found and f"finding {key_text(tree[0])}" in found


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ui_in_a_real_terminal_fits_80x24(cluster):
    """``q quit`` and five task rows at the busiest step, on a real terminal."""
    step, rows, _ = crowded_step(cluster)
    # its own tmux server (-L): other terminals on the machine cannot disturb it
    name = f"replay-step-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "-L", name, "new-session", "-d", "-s", name, "-x", "80", "-y", "24",
                    f"env NO_COLOR=1 TERM=xterm-256color {REPLAY} step {cluster.history.path} "
                    f"-w {cluster.wh.address} --to {step}; sleep 30"], check=True)
    try:
        end = time.monotonic() + 60
        shot = ""
        while time.monotonic() < end:
            shot = subprocess.run(["tmux", "-L", name, "capture-pane", "-p", "-t", name], capture_output=True,
                                  text=True, check=True).stdout
            if "q quit" in shot and f"step {step} of" in shot:
                break
            time.sleep(0.2)
        lines = shot.rstrip("\n").splitlines()
        assert len(lines) == 24 and lines[-1].rstrip().endswith("? help  q quit"), shot
        assert task_rows_shown(shot, rows), shot
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ui_in_a_real_terminal(flight):
    """80×24, keys only, NO_COLOR: open B's log, go to the stimulus id, break
    where x reaches flight, continue, step back, story, switch worker."""
    # its own tmux server (-L): other terminals on the machine cannot disturb it
    name = f"replay-step-{uuid.uuid4().hex[:8]}"
    env = "NO_COLOR=1 TERM=xterm-256color"
    subprocess.run(["tmux", "-L", name, "new-session", "-d", "-s", name, "-x", "80", "-y", "24",
                    f"env {env} {REPLAY} step {flight} -w {B}; sleep 30"], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "-L", name, "capture-pane", "-p", "-t", name], capture_output=True,
                              text=True, check=True).stdout

    def until(text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shot = screen()
            if text in shot:
                return shot
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{screen()}")

    def keys(*k: str) -> None:
        subprocess.run(["tmux", "-L", name, "send-keys", "-t", name, *k], check=True)

    try:
        shot = until("step 0 of 1")
        assert len(shot.splitlines()) <= 24 and all(len(line) <= 80 for line in shot.splitlines())
        keys("g")
        until("go to")
        keys("-l", COMPUTE_Y)
        keys("Enter")
        shot = until("step 1 of 1")
        assert "instruction GatherDep" in shot
        keys("p")
        until("step 0 of 1")
        keys("b")
        until("breakpoint:")
        keys("-l", "state:x=flight")
        keys("Enter")
        until("breakpoints: 'x' reaches flight")
        keys("c")
        shot = until("breakpoint: 'x' reaches flight")
        assert "step 1 of 1" in shot and re.search(r"^ 'x' +flight", shot, re.MULTILINE)
        keys("p")
        until("step 0 of 1")
        keys("s")
        until("story of key")
        keys("x", "Enter")
        shot = until("story of 'x'")
        assert "fetch → flight" in shot
        keys("Escape")
        until("step 0 of 1")
        keys("n", "Tab")
        shot = until(f"step 2 of 2  worker {A}")
        assert re.search(r"^ 'x' +memory", shot, re.MULTILINE)
        keys("q")
        end = time.monotonic() + 10
        while "q quit" in screen() and time.monotonic() < end:
            time.sleep(0.1)
        assert "q quit" not in screen()
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def test_story_from_the_index_equals_the_replayed_one(fixture_path, tmp_path, monkeypatch):
    from replay import index as index_module
    from replay.index import Index, build
    from replay.story import key_story
    from replay.views import walk

    log = str(tmp_path / "cluster.jsonl.gz")
    shutil.copy(fixture_path("cluster-log.jsonl.gz"), log)
    history = replay.open(log)
    wh = history.workers[1]
    s = Stepper(history, wh.address)
    try:
        key = ("tree", 2, 30)
        replayed = s.story(key).to_json()  # no index yet: a replay
        build(history)
        opened = []
        real_open = Index.open
        monkeypatch.setattr(index_module.Index, "open", classmethod(
            lambda cls, path: opened.append(path) or real_open.__func__(cls, path)))
        from_index = s.story(key).to_json()
        assert opened == [log] and real_open(log) is not None  # a current index answered
        assert from_index == replayed == key_story(walk(wh), wh.address, key).to_json()
    finally:
        s.close()


def test_far_views_from_the_index_equal_the_replayed_ones(fixture_path, tmp_path, monkeypatch):
    from replay import step as step_module
    from replay.index import build

    log = str(tmp_path / "cluster.jsonl.gz")
    shutil.copy(fixture_path("cluster-log.jsonl.gz"), log)
    history = replay.open(log)
    build(history)
    wh = max(history.workers, key=lambda w: w.events)
    s = Stepper(history, wh.address)
    try:
        for pos in (0, 1, 417, 892, wh.events):
            s.go(pos)
            monkeypatch.setattr(step_module, "FAR", 10**9)  # a seek replays
            assert not s.far()
            replayed, why_replayed = s.view(), s.why()
            monkeypatch.setattr(step_module, "FAR", -1)  # the index answers
            assert s.far()
            indexed, why_indexed = s.view(), s.why()
            assert indexed.state.to_json() == replayed.state.to_json()
            lines = lambda v: None if v.event is None else [(x.kind, x.text) for x in v.event.lines]  # noqa: E731
            assert lines(indexed) == lines(replayed)
            assert why_indexed.to_json() == why_replayed.to_json()
    finally:
        s.close()
