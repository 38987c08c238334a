"""The replaying commands as a user runs them: JSON contracts, exit codes,
worker choice, keys typed on the command line, and the hash-seed re-exec."""
from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from distributed import worker_state_machine as wsm

ComputeTask = wsm.ComputeTaskEvent.dummy
REPLAY = os.path.join(os.path.dirname(sys.executable), "replay")
ADDRESS = "tcp://127.0.0.1:1234"
PEER = "tcp://127.0.0.1:1235"
SECOND = "tcp://127.0.0.1:2345"


def spawn(*args: str, env: dict | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The installed command in a new process."""
    return subprocess.run(
        [REPLAY, *args], capture_output=True, timeout=120, input=stdin,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def run_json(cli_run):
    """The command in this process, with ``--json``: what it printed, parsed.
    (Its logs carry this process's hash seed, so it does not re-execute.)"""
    def run_json(*args: str, code: int = 0) -> dict:
        returncode, out, err = cli_run([*args, "--json"])
        assert returncode == code, err
        return orjson.loads(out)

    return run_json


@pytest.fixture(scope="module")
def logs(tmp_path_factory, record_log, gather_failure):
    d = tmp_path_factory.mktemp("cli")
    stuck = record_log(d / "6705.jsonl", [
        ComputeTask(("y", 0), who_has={("x", 0): [PEER]}, stimulus_id="compute-y"),
        gather_failure(PEER, 1, "gather-failed"),
    ], address=ADDRESS)
    done = record_log(d / "done.jsonl", [
        ComputeTask("a", stimulus_id="compute-a"),
        wsm.ExecuteSuccessEvent.dummy("a", stimulus_id="a-done"),
        ComputeTask("b", stimulus_id="compute-b"),
    ], address=SECOND)
    # a cluster log: both workers in one file
    cluster = d / "cluster.jsonl"
    cluster.write_bytes(open(stuck, "rb").read() + open(done, "rb").read())
    return {"stuck": stuck, "done": done, "cluster": str(cluster)}


def test_load_json_contract(logs, run_json):
    data = run_json("load", logs["cluster"])
    w0, w1 = data["workers"]
    assert w0["address"] == ADDRESS and w1["address"] == SECOND
    assert (w0["events"], w0["event_counts"]) == (2, {"ComputeTaskEvent": 1, "GatherDepFailureEvent": 1})
    assert w0["task_states"] == {"error": 1, "waiting": 1}
    (s,) = w0["stuck"]
    assert set(s) >= {"key", "state", "reason", "since_step"}
    assert (s["key"], s["state"], s["since_step"]) == (["y", 0], "waiting", 1)
    assert type(s["reason"]) is str and "erred" in s["reason"]
    assert w1["task_states"] == {"executing": 1, "memory": 1}
    assert [(s["key"], s["state"]) for s in w1["stuck"]] == [("b", "executing")]
    for w in data["workers"]:
        assert type(w["events"]) is int and all(type(n) is int for n in w["event_counts"].values())


def test_state_json_contract_and_worker_choice(logs, run_json):
    # by index, by unique part of the address, and by the whole address
    for which in ("1", "2345", SECOND):
        v = run_json("state", logs["cluster"], "--worker", which, "--at", "compute-b")
        assert (v["worker"], v["step"], v["stimulus_id"]) == (SECOND, 3, "compute-b")
        # unfinished tasks first
        assert v["tasks"] == [{"key": "b", "state": "executing"}, {"key": "a", "state": "memory"}]
    v = run_json("state", logs["stuck"], "--at", "1")
    # in the order a task moves through the states: flight before waiting
    assert v["tasks"] == [{"key": ["x", 0], "state": "flight"}, {"key": ["y", 0], "state": "waiting"}]
    assert v["in_flight_workers"] == {PEER: [["x", 0]]}
    for f in ("ready", "constrained", "data_needed", "busy_workers", "executing", "long_running",
              "missing", "resources", "running", "nbytes"):
        assert f in v


def test_diff_story_why(logs, cli_run, run_json):
    d = run_json("diff", logs["stuck"], "compute-y..2")
    assert d["tasks"]["changed"] == [{"key": ["x", 0], "from": "flight", "to": "error"}]
    assert d["collections"]["in_flight_workers"] == {PEER: {"removed": [["x", 0]]}}

    s = run_json("story", logs["stuck"], "('x', 0)")
    assert s["key"] == ["x", 0]
    assert [(e["step"], e["kind"]) for e in s["story"] if e["kind"] != "log"] == [
        (1, "event"), (1, "transition"), (1, "transition"), (1, "instruction"),
        (2, "event"), (2, "transition"), (2, "instruction"),
    ]
    s = run_json("story", logs["stuck"], "gather-failed")
    assert s["stimulus_id"] == "gather-failed"
    assert [e["step"] for e in s["story"] if e["kind"] == "event"] == [2]

    w = run_json("why", logs["stuck"], "('y', 0)", "--at", "gather-failed")
    assert (w["step"], w["stimulus_id"]) == (2, "gather-failed")
    assert w["tasks"][0]["detail"]["erred_dependency"] == ["x", 0]
    # text output names the reason too
    code, out, err = cli_run(["why", logs["stuck"]])
    assert code == 0 and "erred at step 2" in out


def test_verify(logs, run_json):
    assert run_json("verify", logs["cluster"])["faithful"] is True
    data = run_json("verify", logs["stuck"], "--validate", code=1)
    (w,) = data["workers"]
    d = w["divergence"]
    assert (d["step"], d["stimulus_id"], d["kind"]) == (2, "gather-failed", "invariant")
    assert d["key"] == ["x", 0]
    # the uncapped story of the broken key and of its dependent
    assert {tuple(e["transition"]["key"]) for e in d["story"] if e["kind"] == "transition"} == {("x", 0), ("y", 0)}
    # the assert that failed, where dask has it
    f = d["failure"]
    assert f["file"] == "worker_state_machine.py" and f["source"].startswith("assert ")
    p = spawn("verify", logs["stuck"], "--validate")
    assert p.returncode == 1 and b"validate_state() fails: worker_state_machine.py:" in p.stdout
    assert b"expected None" not in p.stdout


def test_bad_input_exits_2(logs, tmp_path, cli_run):
    for args in (
        ("state", logs["cluster"]),  # two workers, none chosen
        ("state", logs["cluster"], "--worker", "9.9.9.9"),
        ("state", logs["stuck"], "--at", "99"),
        ("state", logs["stuck"], "--at", "no-such-stimulus"),
        ("story", logs["stuck"], "never-seen"),
        ("why", logs["stuck"], "nope"),
        ("load", str(tmp_path / "missing.jsonl")),
        ("diff", logs["stuck"], "1"),
    ):
        code, out, err = cli_run(args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
    # and as a user sees it, from the installed command
    p = spawn("state", logs["cluster"], "--at", "1")
    assert p.returncode == 2 and p.stderr.startswith(b"error: the log has 2 workers")
    assert b"Traceback" not in p.stderr


def test_reexec_with_recorded_seed(logs, tmp_path):
    # replay is exact only with the recorded PYTHONHASHSEED: the CLI re-executes itself
    p = spawn("verify", logs["stuck"], "--json", env={"PYTHONHASHSEED": "1"})
    assert p.returncode == 0 and orjson.loads(p.stdout)["workers"][0]["warnings"] == []
    assert p.stderr == b""
    # standard input is copied to a file that the re-executed command reads: as exact
    p = spawn("verify", "-", "--json", env={"PYTHONHASHSEED": "1", "TMPDIR": str(tmp_path)},
              stdin=open(logs["stuck"], "rb").read())
    assert p.returncode == 0 and orjson.loads(p.stdout)["workers"][0]["warnings"] == []
    assert p.stderr == b""
    # and the copy is gone with the command
    assert not [n for n in os.listdir(tmp_path) if n.startswith("replay-stdin-")]


def test_standard_input_answers_as_the_file_does(fixture_path):
    # a real cluster log piped in, under another hash seed than the recording's:
    # the command re-executes with the recorded one and answers as for the file
    import gzip

    log = fixture_path("cluster-log.jsonl.gz")
    data = gzip.decompress(open(log, "rb").read())
    env = {"PYTHONHASHSEED": "1", "REPLAY_INDEX": "off"}
    by_file = spawn("load", log, "--json", env=env)
    assert by_file.returncode == 0, by_file.stderr
    expected = {**orjson.loads(by_file.stdout), "path": "<stdin>"}
    for _ in range(2):
        piped = spawn("load", "-", "--json", env=env, stdin=data)
        # no word of the hash seed: the piped log replayed under the recorded one
        assert piped.returncode == 0 and b"PYTHONHASHSEED" not in piped.stderr, piped.stderr
        assert orjson.loads(piped.stdout) == expected


def test_log_without_deterministic_mode_is_checked_with_a_warning(tmp_path, cli_run, run_json, record_log):
    path = record_log(tmp_path / "loose.jsonl", [
        ComputeTask("a", stimulus_id="compute-a"),
        wsm.ExecuteSuccessEvent.dummy("a", stimulus_id="a-done"),
    ], deterministic=False)
    code, out, err = cli_run(["verify", path])
    assert code == 0 and "faithful" in out
    assert "warning:" in err and "without deterministic mode" in err
    data = run_json("verify", path)
    assert data["faithful"] is True
    assert any("deterministic" in w for w in data["workers"][0]["warnings"])


def test_verify_reports_instruction_divergence_as_a_diff(tmp_path, logs, cli_run, run_json):
    # the recording says step 1 asked for nothing; replay asks to execute a
    lines = open(logs["done"], "rb").read().splitlines()
    step1 = orjson.loads(lines[1])
    assert step1["seq"] == 1
    recorded = step1["instructions"]
    step1["instructions"] = []
    lines[1] = orjson.dumps(step1)
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = run_json("verify", str(path), code=1)
    d = data["workers"][0]["divergence"]
    assert (d["step"], d["stimulus_id"], d["kind"]) == (1, "compute-a", "instructions")
    assert d["diff"] == {"missing": [], "unexpected": recorded, "reordered": False}
    assert cli_run(["verify", str(path)])[1].count("+ replayed") == 1


def test_text_output_is_safe_from_hostile_keys(tmp_path, cli_run, record_log):
    key = "\x1b[2J[bold]x[/bold]"
    path = record_log(tmp_path / "hostile.jsonl", [
        ComputeTask(key, resource_restrictions={"\x1bR": 2}, stimulus_id="\x1b]0;title\x07"),
    ], resources={"\x1bR": 1})
    for cmd in (("state", path), ("why", path), ("story", path, key), ("load", path)):
        code, out, err = cli_run(cmd)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out
        assert "[bold]x[/bold]" in out  # shown literally, not as markup


def test_why_answers_for_every_worker(logs, cli_run, run_json):
    data = run_json("why", logs["cluster"])
    by_worker = {w["worker"]: w for w in data["workers"]}
    assert set(by_worker) == {ADDRESS, SECOND}
    assert [t["key"] for t in by_worker[ADDRESS]["tasks"]] == [["y", 0]]
    assert [(t["key"], t["state"]) for t in by_worker[SECOND]["tasks"]] == [("b", "executing")]
    code, out, _ = cli_run(["why", logs["cluster"]])
    assert code == 0 and ADDRESS in out and SECOND in out


def test_state_filters_and_detail(logs, run_json, cli_run):
    v = run_json("state", logs["cluster"], "-w", SECOND, "--state", "memory")
    assert [t["key"] for t in v["tasks"]] == ["a"] and v["task_states"] == {"executing": 1, "memory": 1}
    v = run_json("state", logs["stuck"], "--key", "('x', 0)")
    (x,) = v["tasks"]
    assert x["key"] == ["x", 0] and x["detail"]["who_has"] == [PEER]
    assert v["counters"]["nthreads"] == 1
    code, out, _ = cli_run(["state", logs["stuck"], "--detail"])
    assert code == 0 and f"who_has=['{PEER}']" in out


def test_diff_lists_the_steps_between(logs, run_json, cli_run):
    d = run_json("diff", logs["stuck"], "0..2")
    assert [s["step"] for s in d["steps"]] == [1, 2] and d["steps_total"] == 2
    assert [s["cls"] for s in d["steps"]] == ["ComputeTaskEvent", "GatherDepFailureEvent"]
    code, out, _ = cli_run(["diff", logs["stuck"], "0..2"])
    assert code == 0 and "2 steps between" in out and "GatherDepFailureEvent" in out
    code, _, err = cli_run(["diff", logs["stuck"], "2..1"])
    assert code == 2 and "comes after" in err


def test_load_says_paused_and_since_when(tmp_path, run_json, cli_run, record_log):
    path = record_log(tmp_path / "paused.jsonl", [
        ComputeTask("x", stimulus_id="compute-x"),
        wsm.PauseEvent(stimulus_id="pause"),
        ComputeTask("y", stimulus_id="compute-y"),
    ])
    (w,) = run_json("load", path)["workers"]
    assert w["status"] == "paused" and w["paused_since"]["step"] == 2
    assert [(t["key"], t["category"]) for t in w["stuck"]] == [("x", "executing"), ("y", "ready: paused")]
    code, out, _ = cli_run(["load", path])
    assert code == 0 and "paused since step 2" in out.splitlines()[0]


def test_pictures_and_plain_text(logs, tmp_path, cli_run):
    svg, html = tmp_path / "why.svg", tmp_path / "why.html"
    code, out, err = cli_run(["why", logs["stuck"], "--svg", svg, "--html", html])
    assert code == 0, err
    assert svg.read_text().lstrip().startswith("<svg") and "erred" in svg.read_text()
    assert "<html" in html.read_text() and "erred" in html.read_text()
    # piped, the answer is plain text: no colours and no box to cut mid-line
    assert "\x1b" not in out and not set("─│┃━") & set(out)
    assert all(line == line.rstrip() for line in out.splitlines())
    code, _, err = cli_run(["why", logs["stuck"], "--svg", tmp_path / "no" / "such" / "dir.svg"])
    assert code == 2 and "cannot write" in err


def test_no_color_on_a_terminal(logs):
    # a real terminal: rich draws boxes, NO_COLOR keeps colours out
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child runs the command on the terminal
        os.environ["NO_COLOR"] = "1"
        os.environ["COLUMNS"] = "100"
        os.execv(REPLAY, [REPLAY, "why", logs["stuck"]])
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "erred" in text
    assert "\x1b[3" not in text and "\x1b[9" not in text  # no foreground colour codes


def test_story_across_the_workers_of_a_cluster(fixture_path, run_json):
    # a key computed on one worker and fetched by another: one timeline
    s = run_json("story", fixture_path("cluster-log.jsonl.gz"), "('tree', 2, 30)")
    lines = s["story"]
    assert len(s["workers"]) >= 2
    (computed,) = {e["worker"] for e in lines if e.get("instruction", {}).get("cls") == "TaskFinishedMsg"}
    gathers = [e for e in lines if e.get("instruction", {}).get("cls") == "GatherDep"]
    assert gathers and all(g["worker"] != computed and g["instruction"]["worker"] == computed for g in gathers)
    # the fetching worker gets it after the computing one finished it (same host: one clock)
    finished = min(e["handled"] for e in lines if e.get("instruction", {}).get("cls") == "TaskFinishedMsg")
    assert all(g["handled"] >= finished for g in gathers)
    # one worker's lines in step order; a stimulus id shared by workers is told in one place
    for w in s["workers"]:
        steps = [e["step"] for e in lines if e["worker"] == w]
        assert steps == sorted(steps)
    sids = [e["stimulus_id"] for e in lines]
    for sid in set(sids):
        at = [i for i, x in enumerate(sids) if x == sid]
        assert at == list(range(at[0], at[-1] + 1)), sid
