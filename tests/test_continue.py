"""Continuing a worker from a step: the verdict on real recorded logs.

Expected values come from dask's semantics: a dependency in flight finishes
once its peer answers (one transfer answer, one execution), an erred
dependency is never released (dask #6705), a peer that never answers or is
always busy leaves the transfer unfinished.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from distributed import worker_state_machine as wsm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replay
from replay.continuation import continue_worker
from replay.logfile import LineWriter
from replay.simulate import Faults, simulate

FLIGHT_STUCK = "43731"  # the worker of stuck-flight.jsonl whose gather was never answered
FLIGHT_PEER = "tcp://127.0.0.1:37371"
ERRED_STUCK = "44313"  # the worker of stuck-6705.jsonl whose dependency erred


def classes(steps: list[dict]) -> list[str]:
    return [s["event"]["cls"] for s in steps]


def test_a_gather_never_answered_finishes_when_the_peer_answers(fixture_path):
    w = replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK)
    c = w.continue_from()
    assert c.finished and c.exit_code == 0 and not c.state_machine_stuck
    assert c.at == w.events and c.at_end
    # x arrives, then y (which waited on it) runs and finishes
    assert classes(c.steps) == ["GatherDepSuccessEvent", "ExecuteSuccessEvent"]
    assert c.events == 2
    assert [s["seq"] for s in c.steps] == [w.events + 1, w.events + 2]
    assert all(s["simulated"] is True for s in c.steps)
    assert c.gather is not None and c.gather.instruction.worker == FLIGHT_PEER and c.gather.step == 1
    assert c.headline().startswith("every task finished 2 events later with every peer answering")
    assert f"{FLIGHT_PEER} never answered the gather issued at step 1" in c.headline()


def test_the_continued_state_is_a_real_worker_state(fixture_path):
    w = replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK)
    c = w.continue_from()
    assert c.stuck is None and c.waiting_at == 2  # x in flight, y waiting
    # the continued steps replayed by hand on the rebuilt worker reach the same end
    ws = w.state_at()
    x = ws.tasks["x"]
    assert x.state == "flight"
    ws.handle_stimulus(wsm.GatherDepSuccessEvent(worker=FLIGHT_PEER, total_nbytes=x.get_nbytes(),
                                                 data={"x": 1}, stimulus_id="s1"))
    assert ws.tasks["y"].state == "executing"


def test_an_erred_dependency_stays_stuck_with_every_peer_answering(fixture_path):
    w = replay.open(fixture_path("stuck-6705.jsonl")).worker(ERRED_STUCK)
    c = w.continue_from()
    assert not c.finished and c.exit_code == 1
    assert c.state_machine_stuck and not c.normal_wait
    assert c.key == "y" and c.stuck.state == "waiting"
    assert c.stuck.category == "waiting: erred dependency"
    assert c.stuck.detail["erred_dependency"] == "x"
    assert c.outstanding == [] and c.events == 0 and c.stopped == "idle"
    assert "the state machine does not move on from here" in c.headline()
    assert c.headline().startswith("'y' is still waiting with every peer answering")


def test_a_silent_or_busy_peer_leaves_the_transfer_unfinished(fixture_path):
    w = replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK)
    silent = w.continue_from(peers="silent")
    assert not silent.finished and silent.stopped == "idle" and silent.events == 0
    assert silent.key == "x" and silent.stuck.state == "flight"
    assert silent.normal_wait and not silent.state_machine_stuck

    busy = w.continue_from(peers="busy", events=40)
    assert not busy.finished and busy.stopped == "budget" and busy.events == 40
    # busy; ask the scheduler who else holds x (only the busy peer); retry later,
    # gather again: nothing else ever happens
    assert set(classes(busy.steps)) == {"GatherDepBusyEvent", "RefreshWhoHasEvent", "RetryBusyWorkerEvent"}
    assert busy.key == "x" and busy.normal_wait
    assert "after 40 events" in busy.headline()


def test_a_worker_with_nothing_waiting_has_nothing_to_continue(fixture_path):
    w = replay.open(fixture_path("stuck-flight.jsonl")).worker("37371")
    c = w.continue_from()
    assert c.finished and c.waiting_at == 0 and c.events == 0
    assert c.headline() == f"no task was waiting at step {w.events}: nothing to continue"


def test_continuing_from_an_earlier_step(fixture_path):
    w = replay.open(fixture_path("stuck-6705.jsonl")).worker(ERRED_STUCK)
    # after step 1 the gather of x is under way: answered, y runs and finishes
    c = w.continue_from(1)
    assert c.at == 1 and not c.at_end
    assert c.finished, c.headline()
    assert classes(c.steps) == ["GatherDepSuccessEvent", "ExecuteSuccessEvent"]
    assert "had not answered by step 1 the gather issued at step 1" in c.headline()
    # from the empty state nothing waits
    assert continue_worker(w, 0).waiting_at == 0


def test_peers_must_be_known(fixture_path):
    w = replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK)
    with pytest.raises(ValueError, match="peers must be one of"):
        w.continue_from(peers="sometimes")


# --- a state machine patched to leave a stale in_flight_workers entry -------------

PEER = "tcp://127.0.0.1:9999"


def _stale_in_flight(original):
    """``_gather_dep_done_common`` that forgets to drop the peer from
    ``in_flight_workers``: the worker thinks a transfer from it is still
    under way and never asks it again."""

    @functools.wraps(original)
    def patched(self, ev):
        yield from original(self, ev)
        self.in_flight_workers[ev.worker] = set()

    return patched


def _two_transfers_from_one_peer():
    return [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, nbytes={"x": 10}, stimulus_id="s1"),
        lambda ws: [wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=10, data={"x": 1}, stimulus_id="s2")],
        wsm.ExecuteSuccessEvent.dummy("y", stimulus_id="s3"),
        wsm.ComputeTaskEvent.dummy("z", who_has={"w": [PEER]}, nbytes={"w": 10}, stimulus_id="s4"),
    ]


@pytest.fixture
def stale_log(tmp_path, record_log, monkeypatch):
    """A log recorded from the patched state machine; the patch is in force
    while the test runs (the recording's behaviour), and the test may undo it."""
    monkeypatch.setattr(wsm.WorkerState, "_gather_dep_done_common",
                        _stale_in_flight(wsm.WorkerState._gather_dep_done_common))
    return record_log(tmp_path / "stale.jsonl", _two_transfers_from_one_peer())


def test_a_stale_bookkeeping_entry_stays_stuck_and_a_fix_finishes(stale_log, monkeypatch):
    w = replay.open(stale_log).worker()
    # under the recording's state machine: w waits for a transfer nobody asked for
    c = w.continue_from()
    assert not c.finished and c.state_machine_stuck
    assert c.key == "w" and c.stuck.state == "fetch" and c.stuck.category == "fetch: holders busy"
    assert c.outstanding == [] and c.events == 0

    monkeypatch.undo()  # the stock state machine: the fix
    fixed = w.continue_from(until_divergence=True)
    d = fixed.divergence
    assert d is not None and d.kind == "instructions"
    # the first difference: the fixed worker asks the peer for w at step 4
    assert d.seq == 4 and d.stimulus_id == "s4"
    assert [i["cls"] for i in d.actual] == ["GatherDep"] and d.expected == []
    assert fixed.at == 4 and fixed.finished, fixed.headline()
    assert fixed.headline() == ("every task finished 2 events after step 4, "
                                "where the instructions first differ from the recording, with every peer answering")
    assert continue_worker(w, until_divergence=True, patched=True).headline().startswith(
        "under the patched state machine, every task finished")
    assert classes(fixed.steps) == ["GatherDepSuccessEvent", "ExecuteSuccessEvent"]


def test_until_divergence_on_a_faithful_log_continues_from_the_end(fixture_path):
    w = replay.open(fixture_path("stuck-6705.jsonl")).worker(ERRED_STUCK)
    c = w.continue_from(until_divergence=True)
    assert c.divergence is None and c.at == w.events and c.key == "y"


# --- the property: stock dask always finishes once its surroundings answer --------


@pytest.fixture(scope="module")
def simulated_logs(tmp_path_factory):
    """Small simulated cluster logs with the default faults, and whether a
    peer may retire in them."""
    logs = []
    for seed, faults in ((1, Faults(retire=0.0)), (2, Faults(retire=0.0)), (3, Faults(retire=0.01))):
        path = tmp_path_factory.mktemp("sim") / f"sim-{seed}.jsonl"
        with open(path, "wb") as f:
            simulate(LineWriter(f), events=1200, seed=seed, workers=2, faults=faults)
        logs.append((str(path), faults.retire > 0))
    return logs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_continuing_a_simulated_log_with_answering_peers_always_finishes(simulated_logs, data):
    path, retiring = data.draw(st.sampled_from(simulated_logs))
    log = replay.open(path)
    w = log.workers[data.draw(st.integers(0, len(log.workers) - 1))]
    at = data.draw(st.integers(0, w.events))
    c = w.continue_from(at)
    assert c.at == at
    where = f"{path} worker {w.address} at step {at}: {c.headline()}"
    # stock dask never stops moving on while its surroundings answer
    assert not c.state_machine_stuck, where
    if not retiring:
        assert c.finished and c.stopped == "finished", where
    else:
        # a retired peer hands its keys to a new one the worker may not have
        # heard of yet: only the scheduler knows, not the log
        assert c.finished or (c.normal_wait and c.stuck.state == "missing"), where


# --- the command line -----------------------------------------------------------


def test_cli_the_flight_fixture_hangs_outside_the_worker(cli_run, fixture_path):
    code, out, err = cli_run(["continue", fixture_path("stuck-flight.jsonl")])
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("every task finished 2 events later with every peer answering: "
                            "the hang comes from outside this worker")
    assert f"({FLIGHT_PEER} never answered the gather issued at step 1)" in first


def test_cli_the_6705_fixture_stays_stuck_inside_the_state_machine(cli_run, fixture_path):
    code, out, err = cli_run(["continue", fixture_path("stuck-6705.jsonl")])
    assert code == 1, err
    first = out.splitlines()[0]
    assert first.startswith("'y' is still waiting with every peer answering: the state machine does not move on")
    assert "'x', which erred" in first

    code, out, _ = cli_run(["continue", fixture_path("stuck-6705.jsonl"), "-w", ERRED_STUCK, "--json"])
    assert code == 1
    answer = orjson.loads(out)
    assert answer["finished"] is False and answer["state_machine_stuck"] is True
    assert answer["stuck"]["key"] == "y" and answer["stuck"]["category"] == "waiting: erred dependency"


def test_cli_peers_and_bad_input(cli_run, fixture_path):
    path = fixture_path("stuck-flight.jsonl")
    code, out, _ = cli_run(["continue", path, "-w", FLIGHT_STUCK, "--peers", "silent"])
    assert code == 1 and out.startswith("'x' is still in flight with no peer answering, a wait on its peers")
    code, _, err = cli_run(["continue", path, "--peers", "sometimes"])
    assert code == 2 and err.startswith("error: --peers: 'sometimes' is not one of answer, busy, silent")
    code, _, err = cli_run(["continue", path, "-w", FLIGHT_STUCK, "--at", "99"])
    assert code == 2 and err.splitlines()[-1] == f"error: step 99 is out of range: tcp://127.0.0.1:{FLIGHT_STUCK} has steps 1..1"


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_cli_output_is_a_log_every_command_reads(cli_run, fixture_path, tmp_path, name):
    out_path = tmp_path / name
    code, _, err = cli_run(["continue", fixture_path("stuck-flight.jsonl"), "-w", FLIGHT_STUCK, "-o", out_path])
    assert code == 0, err
    code, _, err = cli_run(["check", out_path])
    assert code == 0, err
    code, out, err = cli_run(["verify", out_path])
    assert code == 0 and "faithful" in out, err
    log = replay.open(str(out_path))
    w = log.worker()
    assert w.header["continued"] == {"from_step": 1, "peers": "answer", "events": 2, "diverged_at": None}
    steps = [rec for _, rec in log.log.records(w.wlog) if rec["kind"] == "step"]
    assert [s.get("simulated", False) for s in steps] == [False, True, True]
    # the recorded prefix is the recording's, line for line
    original = replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK)
    assert steps[0] == next(rec for _, rec in original.log.records(original.wlog))
    ws = w.state_at()
    assert {k: ts.state for k, ts in ws.tasks.items()} == {"x": "memory", "y": "memory"}
    code, out, err = cli_run(["why", out_path])
    assert code == 0 and "no task is stuck" in out, err
    # continuing the continued log has nothing left to do
    code, out, _ = cli_run(["continue", out_path])
    assert code == 0 and out.startswith("no task was waiting at step 3")


def test_output_of_a_run_continued_from_inside_a_batch(tmp_path, record_log, cli_run):
    # one handle_stimulus call with two events: the continuation starts after the first
    path = record_log(tmp_path / "batch.jsonl", [
        lambda ws: [wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"),
                    wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2")],
    ], nthreads=2)
    out_path = tmp_path / "out.jsonl"
    code, out, err = cli_run(["continue", path, "--at", "1", "-o", out_path])
    assert code == 0, err + out
    log = replay.open(str(out_path))
    w = log.worker()
    assert w.header["continued"]["from_step"] == 1
    # x executes and finishes; y was never sent
    assert w.state_at().tasks["x"].state == "memory" and "y" not in w.state_at().tasks
    code, out, err = cli_run(["verify", out_path])
    assert code == 0, out + err


#: a fix, as a module for --import: the stale entry's patch undone
FIX = """
import distributed.worker_state_machine as wsm

wsm.WorkerState._gather_dep_done_common = wsm.WorkerState._gather_dep_done_common.__wrapped__
"""


def test_cli_import_a_fix_and_the_run_finishes(stale_log, cli_run, tmp_path, monkeypatch):
    # what --import leaves in the environment goes when the test ends
    monkeypatch.setenv("REPLAY_IMPORT", "")
    monkeypatch.setenv("REPLAY_IMPORT_PATH", "")
    code, out, _ = cli_run(["continue", stale_log])
    assert code == 1 and out.startswith("'w' is still in fetch with every peer answering: the state machine does not")

    (tmp_path / "unstale_fix.py").write_text(FIX)
    monkeypatch.chdir(tmp_path)  # --import finds modules from the current directory
    out_path = tmp_path / "fixed.jsonl"
    code, out, err = cli_run(["continue", stale_log, "--import", "unstale_fix", "-o", out_path])
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("under the patched state machine, every task finished 2 events after step 4")
    assert lines[1] == "under the patched state machine, step 4 (s4) first differs from the recording:"
    assert lines[2].startswith("  + replayed GatherDep worker='tcp://127.0.0.1:9999'")
    # the continued log says what the fixed worker did at step 4, and replays under the fix
    log = replay.open(str(out_path))
    assert log.worker().header["continued"]["diverged_at"] == 4
    code, out, err = cli_run(["verify", out_path])
    assert code == 0 and "faithful" in out, out + err


# --- waits the surroundings end, and one they cannot ------------------------------


def test_a_missing_key_is_found_through_find_missing(tmp_path, record_log):
    # the peer answered without x; the scheduler still says the peer has it
    path = record_log(tmp_path / "missing.jsonl", [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, nbytes={"x": 10}, stimulus_id="s1"),
        wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=10, data={}, stimulus_id="s2"),
    ])
    w = replay.open(path).worker()
    assert w.state_at().tasks["x"].state == "missing"
    c = w.continue_from()
    assert c.finished and c.outstanding == []
    # Worker.find_missing asks, the scheduler answers, x is fetched, y runs
    assert classes(c.steps) == ["FindMissingEvent", "RefreshWhoHasEvent", "GatherDepSuccessEvent",
                                "ExecuteSuccessEvent"]
    assert "the scheduler had not said who holds the missing keys" in c.headline()


def test_a_key_nobody_holds_is_a_wait_nothing_in_the_log_ends(tmp_path, record_log):
    path = record_log(tmp_path / "nobody.jsonl", [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": []}, nbytes={"x": 10}, stimulus_id="s1"),
    ])
    c = replay.open(path).worker().continue_from()
    assert not c.finished and c.exit_code == 1
    assert c.key == "x" and c.stuck.state == "missing"
    assert c.normal_wait and not c.state_machine_stuck
    # one round of find_missing that changes nothing, then nothing more would come
    assert classes(c.steps) == ["FindMissingEvent", "RefreshWhoHasEvent"] and c.stopped == "idle"
    assert "a wait nothing in the log could end" in c.headline()


def test_a_paused_worker_is_continued_running(tmp_path, record_log):
    path = record_log(tmp_path / "paused.jsonl", [
        wsm.PauseEvent(stimulus_id="s1"),
        wsm.ComputeTaskEvent.dummy("y", stimulus_id="s2"),
    ])
    c = replay.open(path).worker().continue_from()
    # a paused worker starts no task: unpaused, y runs
    assert c.finished and classes(c.steps) == ["UnpauseEvent", "ExecuteSuccessEvent"]
    assert c.resumed == "the worker paused at step 1 and had not unpaused by step 2: continued as running"
    assert c.headline().endswith("(the worker paused at step 1 and had not unpaused by step 2)")


def test_a_worker_paused_as_it_closed(fixture_path):
    # the recorded cluster's workers pause as they close, just before the recorder stops
    w = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(0)
    assert not w.state_at().running
    c = w.continue_from()
    assert c.resumed is not None and "as it closed (the recorder saw it shut down)" in c.resumed
    assert classes(c.steps)[0] == "UnpauseEvent"


def test_a_state_machine_that_raises_while_continued(tmp_path, record_log, monkeypatch):
    path = record_log(tmp_path / "raises.jsonl", [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, nbytes={"x": 10}, stimulus_id="s1"),
    ])

    def broken(self, ev):
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(wsm.WorkerState, "_gather_dep_done_common", broken)
    c = replay.open(path).worker().continue_from()
    assert not c.finished and c.stopped == "raised" and c.state_machine_stuck
    assert c.raised == "RuntimeError('boom')"
    assert c.steps[-1]["event"]["cls"] == "GatherDepSuccessEvent" and "error" in c.steps[-1]
    assert c.headline().startswith("the state machine raised RuntimeError('boom') 1 events later")


@pytest.mark.parametrize("index", ["off", "on"])
def test_why_adds_the_continuation_verdict(cli_run, fixture_path, tmp_path, monkeypatch, index):
    path = tmp_path / "stuck-flight.jsonl"
    path.write_bytes(open(fixture_path("stuck-flight.jsonl"), "rb").read())  # the index goes beside it
    if index == "off":
        monkeypatch.setenv("REPLAY_INDEX", "off")
    else:
        monkeypatch.delenv("REPLAY_INDEX", raising=False)
    code, out, err = cli_run(["why", path, "--json"])
    assert code == 0, err
    views = {v["worker"]: v for v in orjson.loads(out)["workers"]}
    stuck = views[f"tcp://127.0.0.1:{FLIGHT_STUCK}"]
    assert stuck["continued"] == w_flight_verdict(fixture_path)
    # a worker with nothing stuck has nothing to continue
    assert "continued" not in views[FLIGHT_PEER]
    # about one key, why answers only about it
    code, out, _ = cli_run(["why", path, "x", "-w", FLIGHT_STUCK, "--json"])
    assert "continued" not in orjson.loads(out)


def w_flight_verdict(fixture_path) -> str:
    return replay.open(fixture_path("stuck-flight.jsonl")).worker(FLIGHT_STUCK).continue_from().headline()


def test_cli_a_log_the_stock_state_machine_departs_from(stale_log, cli_run, monkeypatch):
    monkeypatch.undo()  # recorded under the stale entry, continued by stock dask
    code, out, err = cli_run(["continue", stale_log])
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("every task finished 2 events after step 4")
    assert lines[1] == "the replay departs from the recording at step 4 (s4); continued from there:"
    assert lines[2].startswith("  + replayed GatherDep worker='tcp://127.0.0.1:9999'")


def test_cli_the_stepper_and_shrink_read_a_continued_log(cli_run, fixture_path, tmp_path):
    out_path = tmp_path / "flight.jsonl"
    code, _, err = cli_run(["continue", fixture_path("stuck-flight.jsonl"), "-w", FLIGHT_STUCK, "-o", out_path])
    assert code == 0, err
    # the last step is a simulated one: y finishes
    code, out, err = cli_run(["step", out_path, "--to", "3", "--print"])
    assert code == 0 and "step 3 of 3" in out and "ExecuteSuccessEvent key='y'" in out, out + err
    code, out, err = cli_run(["shrink", out_path, "--state", "y=memory", "--json"])
    assert code == 0, out + err
    shrunk = orjson.loads(out)
    # the recorded step and the two simulated ones are all events the shrinker sees
    assert shrunk["events_before"] == 3 and 1 <= shrunk["events_after"] <= 3


# --- a real cluster recorded through a patched state machine ------------------------

ROOT = Path(__file__).resolve().parent.parent


def _replay(*args: str) -> subprocess.CompletedProcess:
    """``replay ARGS`` in a fresh process, as a user runs it (it re-executes
    with the log's hash seed and imports --import modules itself)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHASHSEED", "DASK_REPLAY_SEED_REEXEC", "REPLAY_IMPORT", "REPLAY_IMPORT_PATH")}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          timeout=120, text=True)


@pytest.fixture(scope="module")
def stale_cluster_log(tmp_path_factory):
    """Two in-process LocalCluster workers recorded while
    tests/patched/stale_in_flight.py leaves the stale entry behind."""
    out = str(tmp_path_factory.mktemp("patched") / "stale-cluster.jsonl")
    env = dict(os.environ, PYTHONHASHSEED="6640")
    p = subprocess.run([sys.executable, "tests/patched/record.py", "stale_in_flight", out], cwd=ROOT, env=env,
                       capture_output=True, timeout=180, text=True)
    assert p.returncode == 0, p.stderr
    return out


def test_a_cluster_recorded_through_the_stale_entry_finishes_without_it(stale_cluster_log):
    # under the bug, as recorded: x2 waits for a transfer the worker thinks is under way
    stuck = _replay("continue", stale_cluster_log, "--import", "tests.patched.stale_in_flight")
    assert stuck.returncode == 1, stuck.stdout + stuck.stderr
    first = stuck.stdout.splitlines()[0]
    assert first.startswith("under the patched state machine, 'x2' is still in fetch with every peer answering: "
                            "the state machine does not move on from here")
    # stock dask (this process): the replay departs where the fixed worker asks
    # for x2, and the run finishes
    log = replay.open(stale_cluster_log)
    fixed = [w.continue_from(until_divergence=True) for w in log.workers]
    (departed,) = [c for c in fixed if c.divergence is not None]
    assert all(c.finished for c in fixed), [c.headline() for c in fixed]
    d = departed.divergence
    assert d.kind == "instructions" and d.expected == [] and [i["cls"] for i in d.actual] == ["GatherDep"]
    assert d.actual[0]["to_gather"] == {"set": ["x2"]}
    assert classes(departed.steps) == ["GatherDepSuccessEvent", "ExecuteSuccessEvent"]


def test_why_leaves_out_a_continuation_that_is_not_cheap(fixture_path, monkeypatch):
    from replay.continuation import short_verdict

    w = replay.open(fixture_path("cluster-log.jsonl.gz")).worker(1)
    assert w.events > 100
    # a bound of steps, not of time: a log one step longer than it gets no line
    monkeypatch.setattr("replay.continuation.WHY_MAX_STEPS", w.events - 1)
    assert short_verdict(w) is None
    monkeypatch.setattr("replay.continuation.WHY_MAX_STEPS", w.events)
    assert short_verdict(w) == w.continue_from(events=1_000).headline()


def test_why_leaves_out_a_continuation_whose_replay_departs(stale_log, monkeypatch):
    from replay.continuation import short_verdict

    w = replay.open(stale_log).worker()
    assert short_verdict(w) == w.continue_from().headline()  # under the recording's state machine
    monkeypatch.undo()  # stock dask departs at step 4: the line would not be about this log
    assert short_verdict(w) is None


def test_a_fix_that_stops_a_crash_continues_from_where_the_recording_raised(tmp_path, record_log, monkeypatch):
    original = wsm.WorkerState._gather_dep_done_common

    def broken(self, ev):
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(wsm.WorkerState, "_gather_dep_done_common", broken)
    path = tmp_path / "crash.jsonl"
    with pytest.raises(RuntimeError, match="boom"):
        record_log(path, [
            wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, nbytes={"x": 10}, stimulus_id="s1"),
            wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=10, data={"x": 1}, stimulus_id="s2"),
        ])
    w = replay.open(str(path)).worker()
    # under the bug: replay raises as recorded, the continuation has nothing to answer
    crashed = w.continue_from(until_divergence=True)
    assert crashed.divergence is None and not crashed.finished
    monkeypatch.setattr(wsm.WorkerState, "_gather_dep_done_common", original)
    fixed = w.continue_from(until_divergence=True)
    assert fixed.divergence is not None and fixed.divergence.kind == "error"
    assert fixed.divergence.seq == 2 and fixed.raised is None
    # the fixed worker got x at step 2: y runs and finishes
    assert fixed.finished and classes(fixed.steps) == ["ExecuteSuccessEvent"]
