"""What a newcomer meets first: a recording directory read as it was left,
how each worker ended, every name typed checked, a load that fits a screen.

The recordings are made now from real ``LocalCluster`` runs
(``tests/recorded/closing.py``): one cluster closed with its recorders
attached, one whose recorder was unregistered while its workers ran.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import typing

import orjson
import pytest
from distributed import worker_state_machine as wsm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("first-hour")
    closed, unregistered = str(folder / "closed"), str(folder / "unregistered")
    p = subprocess.run([sys.executable, "tests/recorded/closing.py", closed, unregistered], cwd=ROOT,
                       env=dict(os.environ, PYTHONHASHSEED="6640"), capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    return {"closed": closed, "unregistered": unregistered}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
    """Where indexes that live in no log's folder go: not the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


def _copy(src: str, dst) -> str:
    shutil.copytree(src, str(dst))
    return str(dst)


def _records(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


QUESTIONS = [["load"], ["load", "--json"], ["why"], ["why", "--json"], ["state", "-w", "0", "--json"],
             ["state", "-w", "1"], ["story", "total"], ["story", "('x', 0)", "--json"], ["diff", "1..5", "-w", "1"]]


def test_a_directory_answers_as_its_merged_log_on_every_path(recordings, tmp_path, cache, cli_run, monkeypatch):
    rec = _copy(recordings["closed"], tmp_path / "rec")
    files = sorted(glob.glob(os.path.join(rec, "*.jsonl")))
    merged = str(tmp_path / "cluster.jsonl")
    assert cli_run(["merge", rec, "-o", merged])[0] == 0
    with open(merged, "rb") as f:
        stdin = f.read()
    assert cli_run(["index", rec])[0] == 0
    # the index lives inside the recording, keyed on each of its files
    assert os.path.exists(os.path.join(rec, ".replay-index"))
    for q in QUESTIONS:
        by_path = {}
        monkeypatch.setenv("REPLAY_INDEX", "required")  # only the directory's index may answer
        by_path["index"] = cli_run([q[0], rec, *q[1:]])
        # every worker log of the directory is the directory: the same index answers
        by_path["files"] = cli_run([q[0], *files, *q[1:]]) if q[0] in ("load", "state") else by_path["index"]
        monkeypatch.setenv("REPLAY_INDEX", "off")
        by_path["replay"] = cli_run([q[0], rec, *q[1:]])
        by_path["merged file"] = cli_run([q[0], merged, *q[1:]])
        by_path["stdin"] = cli_run([q[0], "-", *q[1:]], stdin=stdin)
        monkeypatch.delenv("REPLAY_INDEX")
        names = {"index": rec, "files": rec, "replay": rec, "merged file": merged, "stdin": "<stdin>"}
        got = {path: (code, out.replace(names[path], "LOG")) for path, (code, out, _) in by_path.items()}
        assert got["index"][0] == 0, (q, by_path["index"][2])
        for path, answer in got.items():
            assert answer == got["index"], (q, path, by_path[path][2])


def test_a_directory_s_errors_name_it(tmp_path, cli_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli_run(["load", empty])
    assert code == 2 and str(empty) in err and "no .jsonl" in err
    code, _, err = cli_run(["load", empty, "fixtures/stuck-flight.jsonl"])
    assert code == 2 and "a directory is a log of its own" in err


def test_several_files_that_are_not_a_directory_s_recording(recordings, tmp_path, cache, cli_run, monkeypatch):
    rec = _copy(recordings["closed"], tmp_path / "rec")
    one, other = sorted(glob.glob(os.path.join(rec, "*.jsonl")))
    shutil.copy(one, tmp_path / "a.jsonl")
    shutil.copy(other, tmp_path / "b.jsonl")
    shutil.copy("fixtures/stuck-flight.jsonl", tmp_path / "c.jsonl")  # in the folder, not asked
    pair = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    code, indexed, err = cli_run(["load", "--json", *pair])
    assert code == 0, err
    assert glob.glob(os.path.join(cache, "dask-replay", "*.replay-index"))
    monkeypatch.setenv("REPLAY_INDEX", "off")
    assert cli_run(["load", "--json", rec]) == (0, indexed.replace(" ".join(pair), rec), "")


def _last_pause(path: str) -> int:
    """The step of a worker's last PauseEvent: ``Worker.close`` sets the status
    to closing, which hands the state machine one."""
    steps = [r for r in _records(path) if r["kind"] == "step"]
    return max(r["seq"] for r in steps if r["event"]["cls"] == "PauseEvent")


@pytest.mark.parametrize("index", ["auto", "off"])
def test_a_closed_worker_reads_closed_and_an_unregistered_one_running(recordings, tmp_path, cli_run, monkeypatch,
                                                                       index):
    monkeypatch.setenv("REPLAY_INDEX", index)
    rec = _copy(recordings["closed"], tmp_path / "closed")
    code, out, err = cli_run(["load", "--json", rec])
    assert code == 0, err
    workers = orjson.loads(out)["workers"]
    assert len(workers) == 2
    for w in workers:
        path = os.path.join(rec, w["address"].replace("://", "-").replace(":", "-") + ".jsonl")
        assert w["status"] == "closed" and w["closed_at"] == _last_pause(path) and w["ended"]
    code, text, _ = cli_run(["load", rec])
    assert text.count("(clean shutdown)") == 2 and "paused" not in text
    assert text.rstrip().splitlines()[-1].startswith("2 workers: 2 closed; 0 tasks not finished")
    # the recorder went while the workers ran: they end running, and no PauseEvent says otherwise
    rec = _copy(recordings["unregistered"], tmp_path / "unregistered")
    workers = orjson.loads(cli_run(["load", "--json", rec])[1])["workers"]
    assert [w["status"] for w in workers] == ["running", "running"]
    assert all(w["closed_at"] is None and w["end_reason"] == "teardown" for w in workers)


# --- names ------------------------------------------------------------------------


def test_the_task_states_checked_are_dask_s():
    from replay.views import TASK_STATES

    assert TASK_STATES == set(typing.get_args(wsm.TaskStateState))


@pytest.mark.parametrize("index", ["auto", "off"])
@pytest.mark.parametrize("args, said", [
    (["state", "-w", "43731", "--key", "xx"], "no such key on tcp://127.0.0.1:43731 at step 1: 'xx'; closest: 'x'"),
    (["state", "-w", "43731", "--key", "('x', 1)", "--at", "1"], "closest: 'x'"),
    (["state", "-w", "43731", "--state", "flihgt"], "no task state 'flihgt'; closest: flight"),
    (["state", "-w", "43731", "--state", "queued"], "no task state 'queued'"),
    (["state", "-w", "5"], "no worker 5: the log has 2 workers (0..1), and no port 5"),
    (["state", "-w", "4373"], "no port 4373"),  # part of a port is not a port
    (["state", "-w", "tcp://127.0.0.2:43731"], "closest: tcp://127.0.0.1:43731"),
    (["why", "--at", "compute-task-1795694512.14131", "-w", "1"], "closest: compute-task-1795694512.1413152"),
    (["story", "compute-task-1795694512.14131", "-w", "1"],
     "(nor is it a stimulus id; closest: compute-task-1795694512.1413152)"),
])
def test_an_unknown_name_exits_2_naming_the_closest(args, said, index, tmp_path, cli_run, monkeypatch):
    monkeypatch.setenv("REPLAY_INDEX", index)
    log = str(tmp_path / "stuck-flight.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-flight.jsonl"), log)
    code, out, err = cli_run([args[0], log, *args[1:]])
    # one error line (a log recorded with another release than the installed one
    # adds a warning before it)
    errors = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert (code, out) == (2, "") and said in err and len(errors) == 1, err


def test_a_whole_port_and_an_index_still_choose(fixture_path, cli_run):
    log = fixture_path("stuck-flight.jsonl")
    by_port = cli_run(["state", log, "-w", "43731", "--json"])
    assert by_port[0] == 0
    assert orjson.loads(by_port[1])["worker"] == "tcp://127.0.0.1:43731"
    assert cli_run(["state", log, "-w", "1", "--json"]) == by_port


# --- load at a glance ------------------------------------------------------------

#: keys as dask names them: a name, a token, an index
TOKEN = "3ceb3ffd5a1f4b6e8d0c2a9e7f1b4d6c"


def _busy_worker(record_log, path: str, n: int) -> str:
    """One thread, ``n`` independent tasks: dask runs one and keeps the rest ready."""
    events = [wsm.ComputeTaskEvent.dummy((f"load-{TOKEN}", i), stimulus_id=f"compute-{i}") for i in range(n)]
    return record_log(path, events, nthreads=1)


@pytest.mark.parametrize("index", ["auto", "off"])
def test_load_groups_tasks_waiting_for_one_reason(record_log, tmp_path, cli_run, monkeypatch, index):
    monkeypatch.setenv("REPLAY_INDEX", index)
    log = _busy_worker(record_log, str(tmp_path / "busy.jsonl"), 40)
    code, text, err = cli_run(["load", log])
    assert code == 0, err
    lines = text.rstrip().splitlines()
    (group,) = [ln for ln in lines if "39 tasks: load ×39" in ln]
    # the executing one is named, shortened as the dashboard does
    assert "ready: all 1 threads busy (executing ('load-3ceb…', 0))" in group
    assert f"load-{TOKEN}" not in text
    assert lines[-1] == "1 worker: 1 running; 40 tasks not finished (39 ready, 1 executing); 40 events"
    assert len(lines) < 10
    # --detail: a row per task, every key in full; --json: full keys, never grouped
    detail = cli_run(["load", log, "--detail"])[1]
    assert sum(f"('load-{TOKEN}', " in ln for ln in detail.splitlines()) == 40
    stuck = orjson.loads(cli_run(["load", log, "--json"])[1])["workers"][0]["stuck"]
    assert sorted(v["key"][1] for v in stuck) == list(range(40))
    assert all(v["key"][0] == f"load-{TOKEN}" for v in stuck)


def test_why_shortens_keys_unless_asked(record_log, tmp_path, cli_run):
    log = _busy_worker(record_log, str(tmp_path / "busy.jsonl"), 3)
    def table(out: str) -> str:  # the continuation's line (replay continue) is not the table's
        return "\n".join(ln for ln in out.splitlines() if not ln.startswith("continued:"))

    short, full = table(cli_run(["why", log])[1]), table(cli_run(["why", log, "--detail"])[1])
    assert "('load-3ceb…', 1)" in short and TOKEN not in short
    assert f"('load-{TOKEN}', 1)" in full and "…" not in full


def test_a_cut_says_how_much_in_words():
    from replay.literal import literal

    assert literal("y" * 100, 40).endswith("… (84 characters cut)")
    assert literal(list(range(1000)), 20).endswith(" more]")


# --- imported dumps ----------------------------------------------------------------


def _dump_answers(cli_run, monkeypatch, log: str, args: list[str]) -> tuple[int, str]:
    """One question of an imported log through the default path, a replay's
    (``REPLAY_INDEX=off``) and standard input: one answer."""
    with open(log, "rb") as f:
        data = f.read()
    got = {}
    got["default"] = cli_run([args[0], log, *args[1:]])[:2]
    monkeypatch.setenv("REPLAY_INDEX", "off")
    got["off"] = cli_run([args[0], log, *args[1:]])[:2]
    got["stdin"] = tuple(x.replace("<stdin>", log) if isinstance(x, str) else x
                         for x in cli_run([args[0], "-", *args[1:]], stdin=data)[:2])
    monkeypatch.delenv("REPLAY_INDEX")
    assert got["off"] == got["default"] and got["stdin"] == got["default"], args
    return got["default"]


def test_a_dumped_execution_lasts_to_the_dump(fixture_path, cli_run, monkeypatch):
    from replay.dump import load_dump

    log = fixture_path("cluster-dump.ndjson")
    dump, _ = load_dump(fixture_path("cluster-dump.msgpack.gz"))
    # the scheduler's last heartbeat from the worker said how long ('stuck', 0)
    # had been executing then: by the dump, at least that long
    (address,) = [a for a, w in dump["scheduler"]["workers"].items() if w["executing"]]
    (heartbeat,) = dump["scheduler"]["workers"][address]["executing"].values()
    code, out = _dump_answers(cli_run, monkeypatch, log, ["why", "--json", "-w", address])
    assert code == 0
    (stuck,) = orjson.loads(out)["tasks"]
    assert stuck["key"] == ["stuck", 0] and stuck["state"] == "executing"
    assert stuck["since_step"] == 0 and stuck["since_time"] is not None
    took = float(stuck["reason"].rsplit("(", 1)[1].split(" ms)")[0]) / 1000
    assert heartbeat <= took < heartbeat + 2, stuck["reason"]
    assert "not finished by the dump" in stuck["reason"]
    text = _dump_answers(cli_run, monkeypatch, log, ["load"])[1]
    assert "unknown" not in text.split("('stuck', 0)")[1].splitlines()[0]


def test_a_key_only_the_scheduler_knows_is_answered_from_its_view(fixture_path, cli_run, monkeypatch):
    from replay.dump import load_dump

    log = fixture_path("cluster-dump.ndjson")
    dump, _ = load_dump(fixture_path("cluster-dump.msgpack.gz"))
    state = dump["scheduler"]["tasks"]["['after', 0]"]["state"]
    assert not any("['after', 0]" in w["tasks"] for w in dump["workers"].values())
    for command in ("why", "story"):
        code, out = _dump_answers(cli_run, monkeypatch, log, [command, "('after', 0)", "--json"])
        assert code == 0
        answer = orjson.loads(out)
        assert answer["key"] == ["after", 0] and answer["scheduler"]["state"] == state
    # a key nobody knows is still an error
    assert _dump_answers(cli_run, monkeypatch, log, ["why", "('after', 7)"])[0] == 2
