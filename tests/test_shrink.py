"""``replay shrink``: minimal logs and dask-style reproducers that still show the bug.

Every shrunk result is checked three ways: its own replay shows the
original's fingerprint; removing any single stimulus loses it (1-minimal);
and the generated pytest passes when run by pytest in a process that cannot
import this project, as it would in dask's own test suite.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import time
from operator import add
from pathlib import Path

import orjson
import pytest
from distributed import Client, LocalCluster
from distributed import worker_state_machine as wsm

import replay
from replay import shrinker as s
from replay.record import Recorder

PEER = "tcp://127.0.0.1:1235"


def assert_one_minimal(result: s.Shrunk, predicate: s.Predicate) -> None:
    """The shrunk list shows the bug; without any one of its stimuli, it does
    not, or holds a reply to a request that is gone (a message about nothing)."""
    header = result.header
    target = result.fingerprint
    assert predicate.observe(s.replay_stimuli(header, result.stimuli)) == target
    for i in range(len(result.stimuli)):
        run = s.replay_stimuli(header, result.stimuli[:i] + result.stimuli[i + 1:])
        assert run.unsolicited or predicate.observe(run) != target, (
            f"stimulus {i} ({result.stimuli[i]!r}) is not needed"
        )


def renamed(result: s.Shrunk, predicate: s.Predicate, original_key=None) -> s.Predicate:
    """The predicate as it reads in the shrunk, renamed log."""
    if isinstance(predicate, s.StuckPredicate) and predicate.key is None:
        return s.StuckPredicate(result.outcome.key)
    return predicate.rename({original_key: result.fingerprint[1]} if original_key is not None else {})


@pytest.fixture(scope="module")
def isolated_pytest(tmp_path_factory):
    """Run pytest on files in a process where this project cannot be imported."""
    poison = tmp_path_factory.mktemp("poison")
    for name in ("replay", "schemas"):
        (poison / name).mkdir()
        (poison / name / "__init__.py").write_text(
            'raise ImportError("a reproducer must not import dask-replay")\n'
        )
    (poison / "cli.py").write_text('raise ImportError("a reproducer must not import dask-replay")\n')

    def run(*files: Path) -> subprocess.CompletedProcess:
        import os

        env = dict(os.environ, PYTHONPATH=str(poison))
        env.pop("PYTHONHASHSEED", None)  # dask's suite runs with a random seed
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             "--rootdir", str(files[0].parent), *map(str, files)],
            capture_output=True, text=True, cwd=files[0].parent, env=env, timeout=300,
        )

    return run


def write_test(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"test_{name}.py"
    path.write_text(source)
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"distributed", "pytest", "dask", "math"}, imported
    return path


# --- the shipped fixtures ---------------------------------------------------------

FIXTURE_CASES = [
    # (fixture, worker, predicate, most events a reproducer of it may need)
    ("stuck-6705.jsonl", 1, s.StuckPredicate(), 3),
    ("stuck-flight.jsonl", 1, s.StuckPredicate(), 2),
    ("stuck-constrained.jsonl", 0, s.StuckPredicate(), 2),
    ("cluster-log.jsonl.gz", 1, s.InvalidPredicate(), 3),
]


@pytest.mark.parametrize("name,worker,predicate,most", FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_fixtures_shrink_to_one_minimal_reproducers(name, worker, predicate, most, fixture_path,
                                                    tmp_path, isolated_pytest):
    wh = replay.open(fixture_path(name)).worker(worker)
    result = s.shrink(wh, predicate=predicate)
    assert result.narrative.shrunk_events <= most
    assert result.original_events == wh.events
    assert_one_minimal(result, renamed(result, predicate))
    # the worker and its peers are renamed as in dask's tests
    assert result.header["worker"] == "127.0.0.1:1"

    plain = write_test(tmp_path, "plain", result.test_source)
    styled = write_test(tmp_path, "dask_style", s.shrink(wh, predicate=predicate, dask_style=True,
                                                         hash_check=False).test_source
                        .replace("def test_repro(", "def test_repro_dask_style("))
    # dask's `ws` fixture lives in dask's own conftest; give the styled test one
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "from distributed.worker_state_machine import WorkerState\n\n"
        "@pytest.fixture\n"
        "def ws():\n"
        "    return WorkerState(address='127.0.0.1:1', transition_counter_max=50_000, validate=True)\n"
    )
    proc = isolated_pytest(plain, styled)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_6705_reproducer_is_the_known_sequence(fixture_path):
    """dask #6705: a task whose only dependency fails to transfer waits forever."""
    wh = replay.open(fixture_path("stuck-6705.jsonl")).worker(1)
    result = s.shrink(wh, hash_check=False)
    compute, failure = result.stimuli
    assert isinstance(compute, wsm.ComputeTaskEvent) and isinstance(failure, wsm.GatherDepFailureEvent)
    (dep,) = compute.who_has
    assert failure.worker in compute.who_has[dep]
    assert isinstance(result.outcome, s.Stuck) and result.outcome.key == compute.key
    assert result.outcome.state == "waiting"


def test_shrunk_log_reads_and_diagnoses_like_the_original(fixture_path, tmp_path, cli_run):
    log = fixture_path("stuck-6705.jsonl")
    out = tmp_path / "min.jsonl"
    test = tmp_path / "test_repro.py"
    code, stdout, stderr = cli_run(["shrink", log, "-w", "1", "-o", out, "--pytest", test, "--json"])
    assert code == 0, stderr
    summary = orjson.loads(stdout)
    assert summary["events_before"] == 2 and summary["events_after"] == 2
    (fn,) = [n for n in ast.parse(test.read_text()).body if isinstance(n, ast.FunctionDef)]
    assert fn.name == "test_repro" and ast.get_docstring(fn)

    code, stdout, stderr = cli_run(["why", out, "--json"])
    assert code == 0, stderr
    (task,) = orjson.loads(stdout)["tasks"]
    code, stdout, _ = cli_run(["why", log, "-w", "1", "--json"])
    (original,) = orjson.loads(stdout)["tasks"]
    assert (task["state"], task["category"]) == (original["state"], original["category"])
    code, stdout, stderr = cli_run(["verify", out])
    assert code == 0, stderr  # the shrunk log replays as written


# --- logs recorded on a real cluster, with a fault injected ----------------------------


@pytest.fixture(scope="module")
def paused_worker_log(tmp_path_factory):
    """A real two-worker cluster; one worker is paused (as its memory monitor
    would) while the scheduler keeps sending it tasks, which then wait forever."""
    logdir = tmp_path_factory.mktemp("paused")
    with LocalCluster(n_workers=0, processes=False, threads_per_worker=1,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.register_plugin(Recorder(str(logdir)))
        cluster.scale(2)
        client.wait_for_workers(2, timeout=30)
        a, b = sorted(client.scheduler_info()["workers"])
        futures = client.map(add, range(20), range(20), workers=[a], pure=False)
        client.gather(futures)
        worker = next(w for w in cluster.workers.values() if w.address == a)
        # the fault: pause as memory pressure would, then keep sending work
        worker.handle_stimulus(wsm.PauseEvent(stimulus_id="injected-pause"))
        more = client.map(add, range(5), range(5), workers=[a], pure=False, allow_other_workers=False)
        deadline = time.monotonic() + 30
        while sum(ts.state == "ready" for ts in worker.state.tasks.values()) < 5:
            assert time.monotonic() < deadline, "tasks never reached the paused worker"
            time.sleep(0.02)
        # the logs are taken while the worker hangs, as a user would take them
        for w in cluster.workers.values():
            w.plugins[Recorder.name].teardown(w)
        del more, futures
    (log,) = [str(p) for p in logdir.glob("*.jsonl") if replay.open(str(p)).workers[0].address == a]
    return log


def test_real_cluster_fault_shrinks_to_pause_and_a_task(paused_worker_log, tmp_path, isolated_pytest):
    (wh,) = replay.open(paused_worker_log).workers
    assert wh.events > 40  # a real workload, not a toy
    # a paused worker waits as a correct one would: without a predicate, no test
    with pytest.raises(s.NormalWait, match="normal wait"):
        s.shrink(wh)
    result = s.shrink(wh, predicate=s.StuckPredicate())
    assert isinstance(result.outcome, s.Stuck) and result.outcome.state == "ready"
    kinds = sorted(type(x).__name__ for x in result.stimuli)
    # a task is ready and the worker is paused: nothing more is needed
    assert kinds == ["ComputeTaskEvent", "PauseEvent"]
    assert_one_minimal(result, s.StuckPredicate(result.outcome.key))
    proc = isolated_pytest(write_test(tmp_path, "paused", result.test_source))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_cluster_state_and_expr_predicates(paused_worker_log, tmp_path, isolated_pytest):
    (wh,) = replay.open(paused_worker_log).workers
    ready = next(iter(ts.key for ts in wh.state_at().tasks.values() if ts.state == "ready"))
    by_state = s.shrink(wh, predicate=s.StatePredicate(ready, "ready"))
    assert_one_minimal(by_state, s.StatePredicate(by_state.fingerprint[1], "ready"))

    expr = s.ExprPredicate("not ws.running and len(ws.ready) >= 1")
    by_expr = s.shrink(wh, predicate=expr)
    assert_one_minimal(by_expr, expr)
    assert len(by_expr.stimuli) == 2
    proc = isolated_pytest(write_test(tmp_path, "state", by_state.test_source),
                           write_test(tmp_path, "expr", by_expr.test_source.replace(
                               "def test_repro(", "def test_repro_expr(")))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- hand-written event sequences ------------------------------------------------------


def test_raises_keeps_the_crash_and_drops_the_rest(record_log, tmp_path):
    steps = [wsm.ComputeTaskEvent.dummy(f"t{i}", stimulus_id=f"c{i}") for i in range(5)]
    steps += [wsm.ExecuteSuccessEvent.dummy("t0", stimulus_id="done-t0")]
    # a completion for a task the worker never had: the state machine asserts
    steps += [wsm.ExecuteSuccessEvent.dummy("ghost", stimulus_id="bad")]
    path = str(tmp_path / "raises.jsonl")
    with pytest.raises(AssertionError):
        record_log(path, steps)
    (wh,) = replay.open(path).workers
    result = s.shrink(wh, predicate=s.RaisesPredicate(), hash_check=False)
    assert len(result.stimuli) == 1 and isinstance(result.stimuli[0], wsm.ExecuteSuccessEvent)
    assert result.outcome.exception == "AssertionError"
    # another crash is not this one
    other = s.RaisesPredicate("KeyError")
    with pytest.raises(s.NotReproduced):
        s.shrink(wh, predicate=other, hash_check=False)


@pytest.mark.parametrize("name,worker,waits_on", [
    ("stuck-flight.jsonl", 1, "never answered the gather issued at step 1"),
    ("stuck-constrained.jsonl", 0, "the execution of 'hold' started at step 1 never finished"),
])
def test_a_normal_wait_is_not_written_as_a_bug(name, worker, waits_on, fixture_path, tmp_path, cli_run):
    # a fetch not answered yet, a resource held by a running task: a correct
    # worker waits so too, and the default predicate says so instead of a test
    log = fixture_path(name)
    test = tmp_path / "test_repro.py"
    code, stdout, err = cli_run(["shrink", log, "-w", worker, "--pytest", test])
    assert code == 1 and not test.exists()
    assert "not a bug but a normal wait" in err and waits_on in err
    if name == "stuck-flight.jsonl":  # a cluster log: what the peer's own log shows
        assert "log ends at step 2, before this worker's last step" in err
    # an explicit key still shrinks it
    stuck = {"stuck-flight.jsonl": "x", "stuck-constrained.jsonl": "starved"}[name]
    code, stdout, err = cli_run(["shrink", log, "-w", worker, "--stuck", stuck, "--pytest", test])
    assert code == 0, err
    assert test.exists()


def test_predicate_that_does_not_hold_exits_1(fixture_path, cli_run):
    log = fixture_path("stuck-6705.jsonl")
    code, _, err = cli_run(["shrink", log, "-w", "1", "--state", "y=memory"])
    assert code == 1 and "does not hold on the original log" in err
    code, _, err = cli_run(["shrink", log, "-w", "0"])  # worker 0 finished everything
    assert code == 1 and "no task is stuck" in err


def test_expr_that_does_not_parse_exits_2(fixture_path, cli_run):
    code, _, err = cli_run(["shrink", fixture_path("stuck-6705.jsonl"), "--expr", "ws.tasks[("])
    assert code == 2 and err.startswith("error: --expr") and len(err.splitlines()) == 1


def test_closure_pass_drops_unrelated_work_in_one_try(record_log, tmp_path, gather_failure):
    # a hundred unrelated tasks run to completion around the #6705 sequence
    steps: list = []
    for i in range(100):
        steps.append(wsm.ComputeTaskEvent.dummy(f"busy-{i}", stimulus_id=f"b{i}"))
        steps.append(wsm.ExecuteSuccessEvent.dummy(f"busy-{i}", run_id=0, stimulus_id=f"d{i}"))
    steps.append(wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="compute-y"))
    steps.append(gather_failure(PEER, 1, "fail-x"))
    path = record_log(tmp_path / "busy.jsonl", steps)
    (wh,) = replay.open(path).workers
    result = s.shrink(wh, predicate=s.StuckPredicate("y"), hash_check=False)
    assert len(result.stimuli) == 2
    # closure (one replay) then deletion: far fewer replays than one per event
    assert result.replays < 40, result.replays


def test_python_api_takes_a_path_and_a_worker(fixture_path):
    shrunk = replay.shrink(fixture_path("cluster-log.jsonl.gz"), 1, s.InvalidPredicate())
    assert isinstance(shrunk.outcome, s.Invalid) and shrunk.outcome.file == "worker_state_machine.py"
    assert [r["kind"] for r in shrunk.records] == ["header", "step", "step", "end"]
    assert "def test_repro(" in shrunk.test_source


def test_invalid_fingerprint_is_the_assert_behind_dasks_wrapper(fixture_path):
    # validate_task re-raises every failed check as InvalidTaskState: the
    # fingerprint must name the assert itself, or every invariant would look alike
    try:
        try:
            assert 1 == 2, "the invariant"  # noqa: PLR0133
        except AssertionError as inner:
            raise wsm.InvalidTaskState(key="x", state="waiting", story=[]) from inner
    except wsm.InvalidTaskState as e:
        wrapped = e
    ws = wsm.WorkerState(address="127.0.0.1:1")
    fp = s.InvalidPredicate().observe(s.Run(ws, wrapped, 0, []))
    assert fp[:3] == ("invalid", "AssertionError", "test_shrink.py")
    assert fp[4] == 'assert 1 == 2, "the invariant"  # noqa: PLR0133'
    # a crash that is not a broken invariant is not this predicate's bug
    assert s.InvalidPredicate().observe(s.Run(ws, KeyError("x"), 0, [])) is None


# --- fingerprints that tell one bug from another -------------------------------------


def test_raises_fingerprint_names_the_raise_site_and_message_shape():
    def lookup(d, k):
        return d[k]

    def pop(d, k):
        return d.pop(k)

    fps = []
    for fn, key in ((lookup, "x"), (lookup, "y"), (pop, "x")):
        try:
            fn({}, key)
        except KeyError as e:
            fps.append(s.exception_fingerprint(e))
    # another key at the same line is the same failure; another line is not
    assert fps[0] == fps[1]
    assert fps[0] != fps[2]
    assert fps[0][:2] == ("KeyError", "test_shrink.py") and fps[0][3] == "lookup"


def test_a_deletion_never_leaves_a_reply_without_its_request(record_log, tmp_path):
    # a task computed from a peer's data, then an unrelated one that crashes:
    # without its ComputeTaskEvent, the transfer's reply would be a message
    # about nothing (dask rejects it with a KeyError, another bug)
    steps = [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
        lambda ws: [wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={"x": 1},
                                              stimulus_id="got-x")],
        wsm.ExecuteSuccessEvent.dummy("ghost", stimulus_id="bad"),
    ]
    path = str(tmp_path / "reply.jsonl")
    with pytest.raises(AssertionError):
        record_log(path, steps)
    (wh,) = replay.open(path).workers
    result = s.shrink(wh, predicate=s.RaisesPredicate(), hash_check=False)
    assert [type(x).__name__ for x in result.stimuli] == ["ExecuteSuccessEvent"]
    assert s.replay_stimuli(result.header, result.stimuli).unsolicited == [0]  # as in the log


def test_stuck_evidence_tells_a_stale_mark_from_an_open_transfer():
    ws_events = [wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="s1")]
    header = replay_header()
    run = s.replay_stimuli(header, ws_events)
    open_fp = s.StuckPredicate("x").observe(run)
    # the same worker with the transfer's request answered but the peer still
    # marked in flight (stale bookkeeping): another wait, another fingerprint
    run.open.gathers.clear()
    stale_fp = s.StuckPredicate("x").observe(run)
    assert open_fp[:4] == stale_fp[:4] == ("stuck", "x", "flight", "flight")
    assert open_fp != stale_fp


def replay_header() -> dict:
    from replay.shrinker import _default_state

    return {"kind": "header", "worker": "127.0.0.1:1", "deterministic": True, "hash_seed": "6640",
            "from_empty": True, "state": _default_state()}


# --- reproducers that hold under any hashing ----------------------------------------------


def test_instructions_taken_from_sets_are_asserted_in_any_order(record_log, tmp_path, isolated_pytest):
    # four dependencies on four peers: the GatherDeps come out of sets, in an
    # order that follows TaskState hashing, which plain pytest does by id()
    peers = [f"tcp://127.0.0.{i}:{1000 + i}" for i in range(2, 6)]
    steps = [wsm.ComputeTaskEvent.dummy("z", who_has={f"x{i}": [p] for i, p in enumerate(peers)},
                                        stimulus_id="compute-z")]
    path = record_log(tmp_path / "peers.jsonl", steps)
    (wh,) = replay.open(path).workers
    result = s.shrink(wh, predicate=s.ExprPredicate("len(ws.in_flight_workers) == 4"))
    assert len(result.seen) == 3
    orders = {tuple(i["worker"] for i in x.instructions[0]) for x in result.seen}
    source = result.test_source
    if len(orders) > 1:  # the runs disagreed: the test must not depend on the order
        assert "in instructions" in source and "assert instructions == [" not in source
    test = write_test(tmp_path, "peers", source)
    for _ in range(3):  # each run: a fresh random hash seed, dask's own hashing
        proc = isolated_pytest(test)
        assert proc.returncode == 0, source + proc.stdout + proc.stderr


# --- the command line ------------------------------------------------------------------


def test_stuck_and_raises_take_a_value_only_when_one_follows(fixture_path, tmp_path, cli_run):
    log = fixture_path("stuck-6705.jsonl")
    out = tmp_path / "min.jsonl"
    for args in (["--stuck", "-o", out], ["-o", out, "--stuck"], ["--stuck", "y", "-o", out],
                 ["--stuck", "--key", "y", "-o", out]):
        code, stdout, stderr = cli_run(["shrink", log, "-w", "1", *args, "--json"])
        assert code == 0, (args, stderr)
        assert orjson.loads(stdout)["fingerprint"].startswith("('stuck', 'y', 'waiting'")
    code, _, err = cli_run(["shrink", log, "-w", "1", "--raises", "-o", out])
    assert code == 1 and "--raises does not hold" in err


def test_expr_sees_ws_in_comprehensions_and_reports_its_own_error(fixture_path, cli_run):
    log = fixture_path("stuck-6705.jsonl")
    code, stdout, stderr = cli_run(["shrink", log, "-w", "1", "--json", "--expr",
                                    "any(ws.tasks[k].state == 'waiting' for k in ws.tasks)"])
    assert code == 0, stderr
    code, _, err = cli_run(["shrink", log, "-w", "1", "--expr", "ws.no_such_thing"])
    # one error line, after the warning a log of another release brings
    errors = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert code == 2 and errors == [ln for ln in errors if ln.startswith("error: --expr raises AttributeError")] \
        and len(errors) == 1, err


def test_until_cuts_the_log_before_shrinking(record_log, tmp_path, cli_run):
    steps = [wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="compute-y"),
             wsm.ExecuteSuccessEvent.dummy("ghost", stimulus_id="bad")]
    path = str(tmp_path / "later.jsonl")
    with pytest.raises(AssertionError):
        record_log(path, steps)
    expr = "ws.tasks['x'].state == 'flight'"
    code, _, err = cli_run(["shrink", path, "--expr", expr, "-o", tmp_path / "a.jsonl"])
    assert code == 1 and "it held after stimulus 1" in err and "--until" in err
    code, stdout, err = cli_run(["shrink", path, "--expr", expr, "--until", "compute-y", "--json",
                                 "-o", tmp_path / "b.jsonl"])
    assert code == 0, err
    assert orjson.loads(stdout)["events_after"] == 1


def test_shrinking_to_a_log_needs_no_pytest(fixture_path, tmp_path):
    import os

    # pytest cannot be imported, as on a user's machine without it
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "pytest.py").write_text('raise ImportError("no pytest here")\n')
    out = tmp_path / "min.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cli", "shrink", fixture_path("stuck-6705.jsonl"), "-w", "1",
                           "-o", str(out), "--json"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    summary = orjson.loads(proc.stdout)
    assert summary["pytest"] is None and summary["seconds"] > 0


def test_a_store_that_raised_is_replayed_and_kept_by_the_shrunk_log(tmp_path):
    import orjson

    from replay.logfile import LogWriter
    from replay.record import Session

    class RefusingStore(dict):
        """A third-party mapping that refuses every value."""

        def __setitem__(self, key, value):
            raise OSError(f"no room for {key!r}")

    path = tmp_path / "store.jsonl"
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1, validate=False)
    writer = LogWriter(str(path))
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.data = RefusingStore()
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", who_has={"x": [PEER]}, stimulus_id="s1"))
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("other", stimulus_id="s2"))
    ws.handle_stimulus(wsm.GatherDepSuccessEvent(worker=PEER, total_nbytes=1, data={"x": 123}, stimulus_id="s3"))
    # dask's semantics: the fetched x cannot be stored, so it errs and y waits on it
    assert (ws.tasks["x"].state, ws.tasks["y"].state) == ("error", "waiting")
    session.close("test")
    writer.close()

    (wh,) = replay.open(str(path)).workers
    result = s.shrink(wh, predicate=s.StuckPredicate("y"), hash_check=False)
    assert [type(x).__name__ for x in result.stimuli] == ["ComputeTaskEvent", "GatherDepSuccessEvent"]
    assert result.fingerprint[3] == "waiting: erred dependency"
    # the shrunk log carries the failed store on the transfer's step: replayed, x errs again
    steps = [r for r in result.records if r["kind"] == "step"]
    assert ["store_failed" in r for r in steps] == [False, True]
    assert result.outcome.key == "y" and [f["key"] for f in steps[1]["store_failed"]] == ["x"]
    shrunk = tmp_path / "shrunk.jsonl"
    shrunk.write_bytes(b"\n".join(orjson.dumps(r) for r in result.records) + b"\n")
    worker = replay.open(str(shrunk)).worker()
    assert worker.verify()[0] is None
    end = worker.state_at(None)
    assert end.tasks[result.outcome.key].state == "waiting"
    assert [ts.state for ts in end.tasks[result.outcome.key].dependencies] == ["error"]
