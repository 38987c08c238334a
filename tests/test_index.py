"""The index answers every view as a fresh replay does, at any step.

Each view is computed twice: from a replay (the views' own code fed a real
``WorkerState``) and from the index (the same code fed the index's stand-in),
and the JSON forms must be equal. Steps are drawn at random by hypothesis, on
the shipped fixtures and on simulated logs with faults.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replay
from replay.diagnosis import diagnose
from replay.errors import NotFound
from replay.index import Index, build, index_path
from replay.source import ReplayedWorker, no_progress
from replay.summary import load_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def indexed_copy(src: str, tmp_path) -> tuple[object, Index]:
    """A copy of a log, its history, and its index."""
    log = str(tmp_path / os.path.basename(src))
    shutil.copy(src, log)
    history = replay.open(log)
    build(history)
    index = Index.open(log)
    assert index is not None
    return history, index


def same_views(wh, iw, step: int) -> None:
    """Every view of ``wh`` at ``step``: replayed, and read from the index
    (both :class:`~replay.source.WorkerAnswers`)."""
    rw = ReplayedWorker(wh, no_progress)
    assert iw.state(step, detail=True).to_json() == rw.state(step, detail=True).to_json()
    assert iw.why(step).to_json() == rw.why(step).to_json()
    first = step // 2
    assert iw.diff(first, step).to_json() == rw.diff(first, step).to_json()
    # the story of a task the worker holds, and of the step's stimulus
    r, _ = diagnose(wh, step)
    ws = r.ws
    if ws.tasks:
        key = sorted(ws.tasks, key=repr)[step % len(ws.tasks)]
        assert iw.key_story(step, key).to_json() == rw.key_story(step, key).to_json()
    if step:
        sid = iw.frozen(step).stimulus_id
        assert iw.stimulus_story(step, sid).to_json() == rw.stimulus_story(step, sid).to_json()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fixture_path):
    return indexed_copy(fixture_path("cluster-log.jsonl.gz"), tmp_path_factory.mktemp("cluster"))


def same_views_somewhere(data, history, index) -> None:
    """:func:`same_views` at a worker and step hypothesis draws."""
    n = data.draw(st.integers(0, len(history.workers) - 1))
    wh, iw = history.workers[n], index.workers[n]
    same_views(wh, iw, data.draw(st.integers(0, wh.events)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_index_equals_replay_on_a_real_cluster(cluster, data):
    same_views_somewhere(data, *cluster)


def test_index_equals_replay_on_every_fixture(shipped_fixture, tmp_path):
    history, index = indexed_copy(shipped_fixture, tmp_path)
    for wh, iw in zip(history.workers, index.workers):
        for step in sorted({0, 1, wh.events // 2, wh.events}):
            same_views(wh, iw, step)
        assert iw.summary().to_json() == load_worker(wh).to_json()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated two-worker cluster with every kind of fault, as `replay simulate` writes it."""
    log = str(tmp_path_factory.mktemp("sim") / "sim.jsonl")
    subprocess.run([sys.executable, "-m", "cli", "simulate", "-o", log, "--events", "3000", "--seed", "7"],
                   cwd=ROOT, check=True, capture_output=True)
    history = replay.open(log)
    build(history)
    return history, Index.open(log)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_index_equals_replay_on_a_simulated_log_with_faults(simulated, data):
    same_views_somewhere(data, *simulated)


def test_keyframes_whole_and_between(simulated, tmp_path, monkeypatch):
    """Keyframes every 100 steps, every third whole (those between hold the
    rows changed since it): the views read through both kinds, and the log's
    events read again, equal the replay's."""
    import replay.index as ix

    monkeypatch.setattr(ix, "KEYFRAME", 100)
    monkeypatch.setattr(ix, "CHANGES", 50)
    monkeypatch.setattr(ix, "FULL", 3)
    log = str(tmp_path / "sim.jsonl")
    shutil.copy(simulated[0].path, log)
    history = replay.open(log)
    build(history)
    index = Index.open(log)
    for wh, iw in zip(history.workers, index.workers):
        frames = {step: "base" in iw._unpack("keyframes", data) for step, data in index.db.execute(
            "SELECT step, data FROM keyframes WHERE wid = ?", (iw.wid,))}
        # both kinds were written, and a worker's first keyframe is whole
        assert set(frames.values()) == {True, False} and not frames[min(frames)]
        # just after a whole keyframe, after one between, and far from either
        for step in (300, 301, 499, 500, 777, wh.events):
            same_views(wh, iw, min(step, wh.events))


def test_batch_steps_from_the_index(tmp_path, record_log):
    from distributed import worker_state_machine as wsm

    path = record_log(tmp_path / "batch.jsonl", [
        wsm.ComputeTaskEvent.dummy("a", stimulus_id="c-a"),
        lambda ws: [
            wsm.ComputeTaskEvent.dummy("b", stimulus_id="c-b"),
            wsm.ExecuteSuccessEvent.dummy("a", run_id=0, stimulus_id="done-a"),
        ],
    ])
    history = replay.open(path)
    build(history)
    iw = Index.open(path).worker()
    # between the events of one call: a is still executing, b is ready
    assert {t.key: t.state for t in iw.state(2).tasks} == {"a": "executing", "b": "ready"}
    assert {t.key: t.state for t in iw.state(3).tasks} == {"a": "memory", "b": "executing"}
    for step in range(4):
        same_views(history.worker(), iw, step)


def test_a_changed_log_is_indexed_anew(tmp_path, record_log, cli_run):
    from distributed import worker_state_machine as wsm

    path = record_log(tmp_path / "x.jsonl", [wsm.ComputeTaskEvent.dummy("x", stimulus_id="c-x")])
    # the first read command builds the index; with it, no replay is needed
    assert cli_run(["why", path])[0] == 0
    assert os.path.exists(index_path(path))
    os.environ["REPLAY_INDEX"] = "required"
    try:
        code, out, err = cli_run(["state", path, "--json"])
        assert code == 0, err and orjson.loads(out)["tasks"] == [{"key": "x", "state": "executing"}]
        # the log changed: its old index must not answer
        os.utime(path, ns=(1, 1))
        code, _, err = cli_run(["state", path])
        assert code == 2 and "no current index" in err
    finally:
        del os.environ["REPLAY_INDEX"]
    assert cli_run(["state", path])[0] == 0  # indexed anew
    assert Index.open(path) is not None


def test_unknown_key_and_stimulus_from_the_index(cluster):
    _, index = cluster
    iw = index.workers[0]
    with pytest.raises(NotFound, match=r"no such key.*closest: \('tree'"):
        iw.key_story(iw.events, ("tree", 99, 99))
    with pytest.raises(NotFound, match="no step of"):
        iw.stimulus_story(iw.events, "no-such-stimulus")


def test_the_query_path_imports_no_state_machine(cluster):
    # an answer from the index needs neither distributed nor the pydantic
    # models, nor dask to shorten keys in its text (the index knows their names)
    _, index = cluster
    code = (
        "import io, sys, cli; from rich.console import Console; from replay.index import Index; "
        "from replay.stepview import indexed_step_view; import replay.literal as L; "
        "L.asked = []; real = L.task_name; L.task_name = lambda k: L.asked.append(k) or real(k); "
        f"ix = Index.open({index.log!r}); w = ix.workers[0]; out = Console(file=io.StringIO(), width=100); "
        "w.state(w.events // 2, detail=True); w.key_story(w.events, ('tree', 1, 61)); "
        "w.diff(1, w.events); [x.summary() for x in ix.workers]; "
        "[out.print(x.why(s)) for x in ix.workers for s in (x.events // 2, x.events)]; "
        "[out.print(*indexed_step_view(x, s, x.events, x.info['first_handled']).summary()) "
        " for x in ix.workers for s in range(0, x.events, 97)]; "
        "assert L.asked, 'no key was shortened'; "
        "print(sorted(m for m in ('distributed', 'dask', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_answers_collect_rarely_and_leave_no_cycles(cluster, monkeypatch):
    """An answer keeps keyframes and blocks for the next one: at CPython's
    default threshold the collector walked them a few hundred times per
    answer (half a warm ``state``'s time). Answers run under
    :func:`~replay.collector.rare_collections`, and make no reference
    cycles, so nothing waits for the collector to be freed."""
    import gc

    import replay.views as views
    from replay.collector import RARE_GEN0

    _, index = cluster
    w = max(index.workers, key=lambda w: w.events)
    seen = []
    real = views.StateView.of.__func__

    def noting(cls, *args, **kwargs):
        seen.append(gc.get_threshold()[0])
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(views.StateView, "of", classmethod(noting))
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    gc.disable()
    try:
        view = w.state(w.events // 2, detail=True)
        w.why(w.events)
        w.diff(1, w.events)
        assert gc.collect() == 0  # every object the answers made and dropped is gone already
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.enable()
        gc.set_threshold(*saved)
    assert view.tasks and any(t.detail.get("dependencies") for t in view.tasks)
    assert seen and set(seen) == {RARE_GEN0}


def test_a_state_parses_the_rest_of_the_rows_it_reads(cluster, monkeypatch):
    """A row's fields past state, previous and next are text parsed when
    read: a state without detail reads them only for the tasks it orders by
    priority (the queues), and with detail for every task it shows."""
    import replay.views as views
    from replay.index import FrozenTask

    _, index = cluster
    w = max(index.workers, key=lambda w: w.events)
    step = max(range(0, w.events, 50), key=lambda s: len(w.frozen(s).ws.ready))
    frozen = []
    real = views.StateView.of.__func__

    def keeping(cls, replayer, **kwargs):
        frozen.append(replayer.ws)
        return real(cls, replayer, **kwargs)

    monkeypatch.setattr(views.StateView, "of", classmethod(keeping))

    def parsed(detail: bool) -> tuple[set, set, set]:
        frozen.clear()
        view = w.state(step, detail=detail)
        (ws,) = frozen
        queued = {ts.key for q in (ws.ready, ws.constrained, *ws.data_needed.values()) for ts in q}
        assert all(isinstance(ts, FrozenTask) for ts in ws.tasks.values())
        return {k for k, ts in ws.tasks.items() if ts._fields is not None}, queued, {t.key for t in view.tasks}

    done, queued, _ = parsed(False)
    assert queued and done <= queued  # read: the queues' priorities, nothing else
    done, _, shown = parsed(True)
    assert shown and shown <= done


def test_the_key_names_the_index_knows_are_key_splits(cluster, monkeypatch):
    """The names an index writes down for shortening keys are what the
    installed dask's ``key_split`` says; a name it does not know is asked
    of ``key_split`` itself."""
    from dask.utils import key_split

    import replay.literal as literal

    _, index = cluster
    (stored,) = index.db.execute("SELECT value FROM meta WHERE name = 'key_names'").fetchone()
    names = orjson.loads(stored)
    keys = {t.key for w in index.workers for t in w.frozen(w.events).ws.tasks.values()}
    assert {k[0] if isinstance(k, tuple) else k for k in keys if isinstance(k, (str, tuple))} <= set(names)
    assert names and all(split == key_split(name) for name, split in names.items())
    # a learnt name answers without asking dask; an unknown one asks it
    monkeypatch.setattr(literal, "_key_names", {"random_sample-a3e0c5d7": "learnt"})
    assert literal.task_name(("random_sample-a3e0c5d7", 6, 4)) == "learnt"
    assert literal.task_name(("finalize-0123abcd-ffee", 1)) == key_split(("finalize-0123abcd-ffee", 1))
    assert literal.task_name(7) == key_split(7)


def _two_workers(tmp_path, record_log, clock_a, clock_b, closing=False):
    """A computes x and, told to, forgets it (then computes z; ``closing``:
    then pauses, as ``Worker.close`` does first); B, told that A holds x,
    fetches it from A. One cluster log of both."""
    from distributed import worker_state_machine as wsm

    a, b = "tcp://127.0.0.1:1001", "tcp://127.0.0.1:1002"
    path_a = record_log(tmp_path / "a.jsonl", [
        wsm.ComputeTaskEvent.dummy("x", stimulus_id="c-x"),
        wsm.ExecuteSuccessEvent.dummy("x", run_id=0, stimulus_id="done-x"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="free-x"),
        wsm.ComputeTaskEvent.dummy("z", stimulus_id="c-z"),
        *([wsm.PauseEvent(stimulus_id="worker-close")] if closing else []),
    ], address=a, clock=clock_a)
    path_b = record_log(tmp_path / "b.jsonl", [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [a]}, stimulus_id="c-y"),
    ], address=b, clock=clock_b)
    log = tmp_path / "cluster.jsonl"
    log.write_bytes(open(path_a, "rb").read() + open(path_b, "rb").read())
    return log, a, b


def test_disagreement_a_peer_that_released_the_key(tmp_path, record_log, cli_run):
    import itertools

    # A: header 1000, steps at 1005, 1010, 1015 (x forgotten), 1020, end 1025;
    # B's step at 1018: A is alive, and no longer has x
    log, a, b = _two_workers(tmp_path, record_log, itertools.count(1000.0, 5.0).__next__,
                             itertools.count(1017.0).__next__)
    code, out, err = cli_run(["why", log, "--json"])
    assert code == 0, err
    (d,) = orjson.loads(out)["disagreements"]
    assert (d["kind"], d["worker"], d["key"], d["state"], d["peer"]) == ("not held by the peer", b, "x", "flight", a)
    assert (d["peer_step"], d["peer_state"]) == (3, None)
    code, out, _ = cli_run(["why", log])
    assert "disagreement:" in out and "had no such task" in out


def test_disagreement_a_peer_that_left(tmp_path, record_log, cli_run, monkeypatch):
    import itertools

    # A closes (pauses) and its log ends at 1030, before B's step at 1036
    log, a, b = _two_workers(tmp_path, record_log, itertools.count(1000.0, 5.0).__next__,
                             itertools.count(1035.0).__next__, closing=True)
    for mode in ("auto", "off"):  # the index, and a replay
        monkeypatch.setenv("REPLAY_INDEX", mode)
        (d,) = orjson.loads(cli_run(["why", log, "--json"])[1])["disagreements"]
        assert (d["kind"], d["worker"], d["peer"], d["peer_step"]) == ("peer gone", b, a, 5)


def test_disagreement_a_peer_whose_recording_stopped(tmp_path, record_log, cli_run, monkeypatch):
    import itertools

    # A's log ends at 1025 with A still running: its recorder stopped, not the worker
    log, a, b = _two_workers(tmp_path, record_log, itertools.count(1000.0, 5.0).__next__,
                             itertools.count(1030.0).__next__)
    for mode in ("auto", "off"):
        monkeypatch.setenv("REPLAY_INDEX", mode)
        (d,) = orjson.loads(cli_run(["why", log, "--json"])[1])["disagreements"]
        assert (d["kind"], d["worker"], d["peer"], d["peer_step"]) == ("peer not recorded", b, a, 4)
        assert "while the worker ran" in d["text"]


def test_no_disagreement_while_the_peer_holds_it(tmp_path, record_log, cli_run):
    import itertools

    # B's step at 1012: A holds x in memory (done at 1010, freed at 1015)
    log, a, b = _two_workers(tmp_path, record_log, itertools.count(1000.0, 5.0).__next__,
                             itertools.count(1011.0).__next__)
    assert orjson.loads(cli_run(["why", log, "--json"])[1])["disagreements"] == []


def _background_pid(err: str) -> int:
    """The pid a command's note names for the indexer it started."""
    found = re.search(r"indexing .* in the background \(pid (\d+)\)", err)
    assert found, err
    return int(found.group(1))


def _said(err: str) -> str:
    """A command's stderr without the warning every read of a fixture recorded
    under another ``distributed`` release gives (CI also runs the oldest one)."""
    return "".join(line for line in err.splitlines(keepends=True)
                   if not re.search(r": recorded with distributed .*; event classes may differ$", line))


@pytest.mark.parametrize("how", ["later", "big"])
def test_the_first_answer_replays_and_the_index_follows(how, tmp_path, cli_run, monkeypatch):
    log = str(tmp_path / "stuck.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-6705.jsonl"), log)
    if how == "later":
        monkeypatch.setenv("REPLAY_INDEX", "later")
    else:  # auto: a log of LATER_BYTES or more is indexed afterwards
        monkeypatch.delenv("REPLAY_INDEX", raising=False)
        monkeypatch.setattr("replay.source.LATER_BYTES", os.path.getsize(log))
    code, first, err = cli_run(["load", "--json", log])
    assert code == 0, err
    pid = _background_pid(err)
    # the answer was given before the index was started: a replay gave it
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert Index.open(log) is not None and not os.path.exists(index_path(log) + ".lock")
    monkeypatch.setenv("REPLAY_INDEX", "required")  # only the index may answer now
    code, again, err = cli_run(["load", "--json", log])
    assert (code, again, _said(err)) == (0, first, "")


def test_a_failed_background_indexer_is_reported_by_the_next_command(tmp_path, cli_run, monkeypatch):
    log = str(tmp_path / "stuck.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-6705.jsonl"), log)
    # a module every replaying process imports (--import), refusing in the indexer alone
    (tmp_path / "refuse_index.py").write_text(
        'import sys\nif "index" in sys.argv:\n    raise RuntimeError("this indexer is refused")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("REPLAY_IMPORT", "refuse_index")
    monkeypatch.setenv("REPLAY_IMPORT_PATH", str(tmp_path))
    monkeypatch.setenv("REPLAY_INDEX", "later")
    code, first, err = cli_run(["load", "--json", log])
    assert code == 0 and "warning" not in _said(err), err
    _, status = os.waitpid(_background_pid(err), 0)
    assert os.waitstatus_to_exitcode(status) != 0 and Index.open(log) is None
    # the next command answers as before, says what became of the indexer, and tries again
    code, again, err = cli_run(["load", "--json", log])
    assert code == 0 and again == first
    assert ("stopped without writing its index: RuntimeError: this indexer is refused; "
            "`replay index` on the log shows why") in " ".join(err.split()), err
    os.waitpid(_background_pid(err), 0)
    # an index written since: nothing left to say
    monkeypatch.delenv("REPLAY_IMPORT")
    assert cli_run(["index", log])[0] == 0
    monkeypatch.setenv("REPLAY_INDEX", "auto")
    code, again, err = cli_run(["load", "--json", log])
    assert (code, again, _said(err)) == (0, first, "")
    assert not os.path.exists(index_path(log) + ".stderr")


def test_a_small_log_is_indexed_in_the_same_pass(tmp_path, cli_run, monkeypatch):
    from replay.source import open_source

    log = str(tmp_path / "stuck.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-6705.jsonl"), log)
    monkeypatch.delenv("REPLAY_INDEX", raising=False)
    code, _, err = cli_run(["load", log])
    assert code == 0 and "background" not in err, err
    assert Index.open(log) is not None
    # the Python API indexes in the same pass whatever the size
    os.unlink(index_path(log))
    monkeypatch.setattr("replay.source.LATER_BYTES", 1)
    assert open_source(log, history=lambda: replay.open(log)).kind == "indexed"


def test_an_unknown_index_mode_is_bad_input(tmp_path, cli_run, monkeypatch):
    monkeypatch.setenv("REPLAY_INDEX", "sometimes")
    code, _, err = cli_run(["load", os.path.join(ROOT, "fixtures", "stuck-6705.jsonl")])
    assert code == 2 and "REPLAY_INDEX='sometimes'" in err


def test_the_stepper_takes_an_index_written_after_it_opened(tmp_path, monkeypatch):
    from replay.step import Stepper

    log = str(tmp_path / "stuck.jsonl")
    shutil.copy(os.path.join(ROOT, "fixtures", "stuck-6705.jsonl"), log)
    monkeypatch.setattr("replay.step.LOOK_AGAIN", 3600.0)
    s = Stepper(replay.open(log))
    try:
        assert s.indexed() is None
        build(replay.open(log))  # as the background indexer does
        assert s.indexed() is None  # not looked for again yet
        monkeypatch.setattr("replay.step.LOOK_AGAIN", 0.0)
        s._look_again = 0.0
        iw = s.indexed()
        assert iw is not None and iw.address == s.wh.address
    finally:
        s.close()
