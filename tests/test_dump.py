"""Importing ``Client.dump_cluster_state`` artefacts (replay/dump/).

The dumps are real: taken from an in-process ``LocalCluster`` that ran a
graph with tuple keys. Hostile dumps are made from real ones, changed in one
place each, or written as the bytes an attacker would write.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import time
from pathlib import Path

import dask
import msgpack
import orjson
import pytest
from distributed import Client, Event, LocalCluster

import replay
from replay.dump import compare_final_state, final_states, import_dump, load_dump, scheduler_state
from replay.errors import BadInput, ReplayError


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def block(*deps):
    # holds its thread until the test lets go: a task stuck in executing
    Event("dump-gate").wait(30)
    return 0


def _take_dumps(folder: Path, *, stuck: bool, tasks: int = 4, log_length: int | None = None) -> dict[str, str]:
    """Run a graph with tuple keys on a 2-worker in-process cluster and dump it
    in both formats; returns {format: path}."""
    config = {} if log_length is None else {"distributed.admin.low-level-log-length": log_length}
    with dask.config.set(config), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        xs = [client.submit(inc, i, key=("x", i)) for i in range(tasks)]
        y = client.submit(add, *xs, key=("y", 0))
        # a string key that reads like a mangled tuple key: must stay a string
        s = client.submit(inc, 1, key="['s', 1]")
        client.submit(inc, y, key="z").result(timeout=30)
        s.result(timeout=30)
        if stuck:
            b = client.submit(block, xs[0], key=("stuck", 0))
            after = client.submit(inc, b, key=("after", 0))  # noqa: F841 - held, so it waits
            deadline = time.monotonic() + 10
            while client.processing() and not any(
                ("stuck", 0) in keys for keys in client.processing().values()
            ) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # the worker has started executing it
        out = {}
        for fmt, suffix in (("msgpack", ".msgpack.gz"), ("yaml", ".yaml")):
            client.dump_cluster_state(str(folder / "dump"), format=fmt)
            out[fmt] = str(folder / ("dump" + suffix))
        if stuck:
            Event("dump-gate", client=client).set()
    return out


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> dict[str, str]:
    """Dumps of a run far below the stimulus log's cap."""
    return _take_dumps(tmp_path_factory.mktemp("short"), stuck=False)


@pytest.fixture(scope="module")
def capped_run(tmp_path_factory) -> dict[str, str]:
    """Dumps of a run whose stimulus logs hit a small cap, with a stuck task."""
    return _take_dumps(tmp_path_factory.mktemp("capped"), stuck=True, tasks=30, log_length=12)


def _keys_of(history) -> set:
    keys = set()
    for w in history.workers:
        for call in w.calls():
            for ev in call.events:
                if hasattr(ev, "key"):
                    keys.add(ev.key)
    return keys


@pytest.mark.parametrize("fmt", ["msgpack", "yaml"])
def test_short_run_imports_complete_with_tuple_keys(short_run, fmt, tmp_path):
    out = str(tmp_path / "imported.jsonl")
    report = import_dump(short_run[fmt], out)
    assert report.format == fmt
    assert len(report.workers) == 2 and report.complete, report.lines()
    history = replay.open(out, validate=True)
    assert {w.header["history"] for w in history.workers} == {"complete"}
    keys = _keys_of(history)
    assert ("y", 0) in keys and ("x", 0) in keys and "z" in keys
    assert not any(isinstance(k, list) or (isinstance(k, str) and k.startswith("['x'")) for k in keys)
    # the real string key is left a string
    finals = final_states(out)
    final_keys = set().union(*(f.tasks for f in finals.values()))
    assert "['s', 1]" in final_keys and ("y", 0) in final_keys
    sched = scheduler_state(out)
    assert sched.tasks[("y", 0)]["state"] == "memory"
    assert sched.tasks[("y", 0)]["who_has"]
    assert {w["address"] for w in sched.workers} == {w.address for w in history.workers}
    # who_has and nbytes maps keep tuple keys too
    compute_y = next(
        ev for w in history.workers for c in w.calls() for ev in c.events
        if getattr(ev, "key", None) == ("y", 0) and type(ev).__name__ == "ComputeTaskEvent"
    )
    assert set(compute_y.who_has) == {("x", i) for i in range(4)}


@pytest.mark.parametrize("fmt", ["msgpack", "yaml"])
def test_complete_history_replays_to_the_dumps_final_state(short_run, fmt, tmp_path):
    out = str(tmp_path / "imported.jsonl.gz")
    import_dump(short_run[fmt], out)
    comparisons = compare_final_state(out)
    assert len(comparisons) == 2
    for c in comparisons:
        assert c.compared and c.equal, (c.worker, c.differences)
        assert c.tasks > 0
    ws = replay.open(out).worker(0).state_at(None)
    assert all(type(k) is not list for k in ws.tasks)


def test_capped_dump_is_partial_and_keeps_the_stuck_tasks_final_state(capped_run, tmp_path):
    out = str(tmp_path / "capped.jsonl")
    report = import_dump(capped_run["msgpack"], out)
    assert not report.complete
    history = replay.open(out)
    partial = [w for w in history.workers if w.header["history"] == "partial"]
    assert partial, report.lines()
    for w in partial:
        assert "low-level-log-length=12" in w.header["history_reason"]
        assert w.header["from_empty"] is False
        assert w.events == 12
        with pytest.raises(ReplayError):
            w.state_at(None)
    finals = final_states(out)
    stuck = [f for f in finals.values() if ("stuck", 0) in f.tasks]
    assert len(stuck) == 1
    assert stuck[0].tasks[("stuck", 0)]["state"] == "executing"
    assert stuck[0].fields["executing"] == [("stuck", 0)]
    sched = scheduler_state(out)
    assert sched.tasks[("stuck", 0)]["state"] == "processing"
    assert sched.tasks[("stuck", 0)]["processing_on"] == stuck[0].worker
    assert sched.tasks[("after", 0)]["state"] == "waiting"
    assert not any(c.compared for c in compare_final_state(out) if c.worker in {w.address for w in partial})


def test_yaml_and_msgpack_of_one_state_import_alike(capped_run, tmp_path):
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    import_dump(capped_run["msgpack"], a)
    import_dump(capped_run["yaml"], b)
    # two dumps a moment apart: the same workers, histories and stuck task
    ha, hb = replay.open(a), replay.open(b)
    assert [w.address for w in ha.workers] == [w.address for w in hb.workers]
    assert [w.header["history"] for w in ha.workers] == [w.header["history"] for w in hb.workers]
    fa, fb = final_states(a), final_states(b)
    assert {k: {key: t["state"] for key, t in f.tasks.items()} for k, f in fa.items()} == {
        k: {key: t["state"] for key, t in f.tasks.items()} for k, f in fb.items()
    }


def test_shipped_dump_fixture_imports(fixture_path, tmp_path):
    # fixtures/cluster-dump.msgpack.gz, written by examples/make_cluster_dump.py
    dump = fixture_path("cluster-dump.msgpack.gz")
    out = str(tmp_path / "shipped.jsonl")
    report = import_dump(dump, out)
    assert not report.complete
    finals = final_states(out)
    states = {k: t["state"] for f in finals.values() for k, t in f.tasks.items()}
    assert states[("stuck", 0)] == "executing"
    shipped = dump.replace(".msgpack.gz", ".ndjson")
    with open(out, "rb") as f1, open(shipped, "rb") as f2:
        assert f1.read() == f2.read(), "the shipped import differs from importing the shipped dump"


# --- hostile dumps ------------------------------------------------------------------------


def _refused(dump: str, tmp_path, match: str, **kwargs) -> BadInput:
    out = tmp_path / "never.jsonl"
    with pytest.raises(BadInput) as info:
        import_dump(dump, str(out), **kwargs)
    text = str(info.value)
    assert "\n" not in text and text.startswith(dump + ": "), text
    assert match in text, text
    assert not out.exists()
    return info.value


def _write_msgpack(path: Path, obj) -> str:
    with gzip.open(path, "wb") as f:
        f.write(msgpack.packb(obj))
    return str(path)


def _real(short_run) -> dict:
    obj, _ = load_dump(short_run["msgpack"])
    return obj


def test_not_a_dump_is_refused(tmp_path):
    text = tmp_path / "notes.yaml"
    text.write_text("just some notes\n")
    _refused(str(text), tmp_path, "not a cluster dump")
    binary = tmp_path / "image.msgpack.gz"
    binary.write_bytes(os.urandom(64))
    _refused(str(binary), tmp_path, "not gzip")
    log = tmp_path / "log.yaml"
    log.write_text("scheduler: {}\nworkers: [1, 2]\n")
    _refused(str(log), tmp_path, "not a cluster dump")


def test_truncated_gzip_is_refused(short_run, tmp_path):
    data = Path(short_run["msgpack"]).read_bytes()
    cut = tmp_path / "cut.msgpack.gz"
    cut.write_bytes(data[: len(data) // 2])
    _refused(str(cut), tmp_path, "truncated")
    corrupt = tmp_path / "corrupt.msgpack.gz"
    corrupt.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    _refused(str(corrupt), tmp_path, "corrupt")


def test_pickled_blobs_are_refused_never_unpickled(short_run, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    obj = _real(short_run)
    w = next(iter(obj["workers"].values()))
    w["stimulus_log"][0]["run_spec"] = pickle.dumps(Boom())
    _refused(_write_msgpack(tmp_path / "pickle.msgpack.gz", obj), tmp_path, "binary data")
    # YAML's object tags are refused by the safe loader
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"scheduler: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\nworkers: {{}}\n")
    _refused(str(evil), tmp_path, "not a YAML cluster dump")
    blob = tmp_path / "blob.yaml"
    blob.write_text("scheduler: {}\nworkers:\n  a: !!binary gASVAAAAAAAAAAA=\n")
    _refused(str(blob), tmp_path, "binary data")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("where, value, match", [
    ("nthreads", "four", "nthreads: expected int"),
    ("stimulus_log", {"not": "a list"}, "stimulus_log: expected list"),
    ("event key", {"a": 1}, "key"),
    ("event class", "os.system", "unknown event class"),
    ("event handled", "yesterday", "handled"),
    ("who_has", [1, 2], "who_has"),
    ("task", ["memory"], "expected a task mapping"),
])
def test_wrong_types_are_refused(short_run, tmp_path, where, value, match):
    obj = _real(short_run)
    w = next(iter(obj["workers"].values()))
    first = w["stimulus_log"][0]
    if where == "nthreads":
        w["nthreads"] = value
    elif where == "stimulus_log":
        w["stimulus_log"] = value
    elif where == "event key":
        first["key"] = value
    elif where == "event class":
        first["cls"] = value
    elif where == "event handled":
        first["handled"] = value
    elif where == "who_has":
        compute = next(
            e for w in obj["workers"].values() for e in w["stimulus_log"] if e.get("who_has")
        )
        compute["who_has"][next(iter(compute["who_has"]))] = value[0]
    else:
        w["tasks"][next(iter(w["tasks"]))] = value
    _refused(_write_msgpack(tmp_path / "typed.msgpack.gz", obj), tmp_path, match)


def test_huge_and_deep_dumps_are_refused_cheaply(short_run, tmp_path):
    # an array header claiming two billion items: refused before allocating
    huge = tmp_path / "huge.msgpack.gz"
    with gzip.open(huge, "wb") as f:
        f.write(b"\x82\xa9scheduler\x80\xa7workers\xdd\x7f\xff\xff\xff\x00")
    _refused(str(huge), tmp_path, "not a msgpack cluster dump")
    # a gzip bomb: bounded by what is decompressed
    _refused(short_run["msgpack"], tmp_path, "larger than 1000 bytes", max_bytes=1000)
    # YAML aliases: a billion laughs in a few hundred bytes
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text("\n".join(lines) + "\nscheduler: {}\nworkers: {w: *a8}\n")
    _refused(str(laughs), tmp_path, "used twice")
    deep = tmp_path / "deep.yaml"
    deep.write_text("scheduler: {}\nworkers: " + "[" * 500 + "]" * 500 + "\n")
    _refused(str(deep), tmp_path, "nested deeper")


def test_a_worker_that_failed_to_dump_is_skipped_not_fatal(short_run, tmp_path):
    obj = _real(short_run)
    first = next(iter(obj["workers"]))
    obj["workers"][first] = "OSError('Timed out trying to connect')"
    out = str(tmp_path / "one.jsonl")
    report = import_dump(_write_msgpack(tmp_path / "one.msgpack.gz", obj), out)
    assert list(report.skipped) == [first]
    assert [w.address for w in replay.open(out).workers] != [first]
    assert len(report.workers) == 1


def test_dump_text_keys_map_back_through_the_dumps_own_keys(short_run):
    from replay.dump import Keys

    keys = Keys()
    keys.learn(["y", 0])
    keys.learn("['s', 1]")
    assert keys.text("['y', 0]") == ("y", 0)
    assert keys.text("['s', 1]") == "['s', 1]"
    assert keys.value(["y", ["a", 1]]) == ("y", ("a", 1))
    # a key named nowhere else: read as a literal, never evaluated
    assert keys.text("['q', 2]") == ("q", 2)
    assert keys.text("[__import__('os')]") == "[__import__('os')]"
    assert keys.task_repr("<TaskState ('y', 0) memory>") == ("y", 0)


def test_an_unwritable_output_is_one_line(short_run, tmp_path):
    with pytest.raises(BadInput) as info:
        import_dump(short_run["msgpack"], str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert "\n" not in str(info.value) and "cannot write" in str(info.value)


def test_import_copies_nothing_it_should_not(short_run, tmp_path):
    # the source dump is left as it was; the output is whole or absent
    before = Path(short_run["yaml"]).read_bytes()
    out = tmp_path / "x.jsonl"
    import_dump(short_run["yaml"], str(out))
    assert Path(short_run["yaml"]).read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".import-")]
    shutil.copy(out, tmp_path / "copy.jsonl")
    assert replay.open(str(tmp_path / "copy.jsonl")).workers


# --- the commands on an imported log ------------------------------------------------


def test_commands_on_a_partial_dump_say_what_they_know(capped_run, tmp_path, cli_run):
    log = str(tmp_path / "capped.jsonl")
    code, out, err = cli_run(["import-dump", capped_run["msgpack"], "-o", log])
    assert code == 0, err and "history partial" in out
    # load and why read the dump's final state: the blocked task is executing
    data = orjson.loads(cli_run(["load", log, "--json"])[1])
    stuck = [(w["address"], t) for w in data["workers"] for t in w["stuck"] if t["key"] == ["stuck", 0]]
    assert len(stuck) == 1 and stuck[0][1]["state"] == "executing"
    assert any("history partial" in x for w in data["workers"] for x in w["warnings"])
    why = orjson.loads(cli_run(["why", log, "--json"])[1])
    (w,) = [w for w in why["workers"] if w["worker"] == stuck[0][0]]
    assert "history partial" in w["note"] and any(t["key"] == ["stuck", 0] for t in w["tasks"])
    # the story of a key: the recorded events that name it, said to be no replay
    story = orjson.loads(cli_run(["story", log, "('stuck', 0)", "-w", stuck[0][0], "--json"])[1])
    assert "recorded events only" in story["note"] and {e["kind"] for e in story["story"]} == {"event"}
    # what needs a replay from the empty state is refused with the reason, exit 2
    for args in (["diff", log, "1..2", "-w", "0"], ["verify", log], ["state", log, "--at", "1", "-w", "0"]):
        code, _, err = cli_run(args)
        assert code == 2 and "history partial" in err and "low-level-log-length=12" in err, err


def test_scheduler_and_worker_agree_on_a_consistent_dump(capped_run, tmp_path, cli_run):
    # taken while the scheduler and workers were in step: no disagreement to report
    log = str(tmp_path / "capped.jsonl")
    import_dump(capped_run["msgpack"], log)
    assert orjson.loads(cli_run(["why", log, "--json"])[1])["disagreements"] == []


def test_verify_of_a_complete_import_compares_final_states(short_run, tmp_path, cli_run):
    log = str(tmp_path / "short.jsonl")
    assert cli_run(["import-dump", short_run["msgpack"], "-o", log])[0] == 0
    code, out, err = cli_run(["verify", log, "--json"])
    assert code == 0, err
    data = orjson.loads(out)
    assert data["faithful"] and all(w["compared"] == "final state" and w["tasks"] > 0 for w in data["workers"])


def test_scheduler_processing_on_a_worker_that_finished_it(capped_run, tmp_path, cli_run):
    # the scheduler's view as it is when a task-finished message is lost: the
    # scheduler still has the task processing on a worker that holds it in memory
    log = tmp_path / "capped.jsonl"
    import_dump(capped_run["msgpack"], str(log))
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    holder = next(f["worker"] for f in lines if f["kind"] == "final"
                  for t in f["tasks"] if t["key"] == ["x", 1] and t["state"] == "memory")
    for rec in lines:
        if rec["kind"] == "scheduler":
            for t in rec["tasks"]:
                if t["key"] == ["x", 1]:
                    t.update(state="processing", processing_on=holder, who_has=[])
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    (d,) = orjson.loads(cli_run(["why", str(log), "--json"])[1])["disagreements"]
    assert (d["key"], d["worker"], d["state"]) == (["x", 1], holder, "memory")
    assert d["scheduler"] == f"processing on {holder}"
