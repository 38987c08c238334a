"""The scheduler's side on a real LocalCluster: its recording against
``Scheduler.story``, one story with the workers', and a disagreement made by a
worker that drops a task behind the scheduler's back, found when it began."""
from __future__ import annotations

import dataclasses
import os
import re
import time

import dask
import pytest
from distributed import Client, LocalCluster, WorkerPlugin, wait
from distributed import worker_state_machine as wsm

from replay.disagreements import over_run, same_clock
from replay.logfile import iter_lines
from replay.merge import merge
from replay.scheduler_log import SchedulerLog
from replay.scheduler_recorder import SCHEDULER_LOG, ClusterRecorder
from replay.source import ReplayedSource, open_source
from replay.story import SCHEDULER, Story

#: the stimulus id of the drop, to find its step in the worker's log
DROP = "drop-behind-the-schedulers-back"
#: how long the dropped task is left hanging, beyond the default grace (1 s)
HANG = 1.5


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


class DropVictim(WorkerPlugin):
    """Releases ``victim`` on its worker as soon as it is waiting there,
    without a word to the scheduler (as a buggy extension or a lost message
    would): the scheduler goes on thinking it is processing there."""

    name = "drop-victim"

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if key == "victim" and finish == "waiting":
            # not from inside handle_stimulus: on the worker's loop, next
            event = wsm.FreeKeysEvent(keys=["victim"], stimulus_id=DROP)
            self.worker.loop.add_callback(self.worker.handle_stimulus, event)


def _worker_transitions(dask_worker, keys):
    """The worker's own story of ``keys``: its transitions, as ``ws.story`` has
    them ``(key, start, finish, final, recommendations, stimulus id, time)``."""
    return [(e[0], e[1], e[3], e[5]) for e in dask_worker.state.story(*keys)
            if len(e) == 7 and isinstance(e[4], dict)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A healthy graph, then a dropped task left hanging, recorded by the one line."""
    logdir = str(tmp_path_factory.mktemp("cluster"))
    keys = ["a-0", "a-1", "a-2", "total"]
    with dask.config.set({"distributed.admin.low-level-log-length": 100_000}):
        with LocalCluster(n_workers=0, processes=False, threads_per_worker=1,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            client.register_plugin(ClusterRecorder(logdir))
            cluster.scale(2)
            client.wait_for_workers(2, timeout=30)
            a, b = sorted(client.scheduler_info()["workers"])
            xs = [client.submit(inc, i, key=k, workers=[w]) for i, (k, w) in enumerate(zip(keys, [a, b, a]))]
            total = client.submit(add, *xs, key="total", workers=[b])
            assert total.result(timeout=30) == 1 + 2 + 3
            del xs, total
            # the release reaches the scheduler and both workers
            deadline = time.monotonic() + 10
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            client.register_plugin(DropVictim())
            dep = client.submit(inc, 10, key="dep", workers=[a])
            wait(dep, timeout=30)
            victim = client.submit(inc, dep, key="victim", workers=[b])
            time.sleep(HANG)
            assert not victim.done()  # the scheduler still waits for b
            scheduler_story = client.run_on_scheduler(
                lambda dask_scheduler: [tuple(t) for t in dask_scheduler.story(*keys, "dep", "victim")])
            worker_stories = client.run(_worker_transitions, keys=keys)
            del victim, dep
    # both workers in one cluster log, beside the scheduler's
    merge([logdir], os.path.join(logdir, "cluster.jsonl"))
    return logdir, a, b, keys, scheduler_story, worker_stories


def _worker_log(logdir, address):
    return os.path.join(logdir, re.sub(r"[^A-Za-z0-9.]+", "-", address).strip("-") + ".jsonl")


def test_scheduler_records_match_scheduler_story(recording):
    logdir, a, b, keys, scheduler_story, _ = recording
    log = SchedulerLog.open(os.path.join(logdir, SCHEDULER_LOG), validate=True)
    ours = [t.entry() for t in log.story(*keys, "dep", "victim")]
    # the scheduler kept on after the story was taken (releases, closing): the
    # recording holds its story, entry for entry, then what came after
    assert ours[:len(scheduler_story)] == scheduler_story
    assert all(t[5] >= scheduler_story[-1][5] for t in ours[len(scheduler_story):])
    assert set(log.workers_seen) == {a, b}
    assert log.ended


def test_the_view_follows_processing_on(recording):
    logdir, a, b, *_ = recording
    log = SchedulerLog.open(os.path.join(logdir, SCHEDULER_LOG))
    assigned = [t for t in log.transitions if t.key == "total" and t.finish == "processing"]
    assert len(assigned) == 1
    assert log.view_at(assigned[0].time).tasks["total"].processing_on == b
    stored = [t for t in log.transitions if t.key == "total" and t.finish == "memory"]
    assert log.view_at(stored[0].time).tasks["total"].who_has == (b,)


def test_one_story_matches_client_story_and_orders_shared_stimuli_causally(recording, cli_run):
    logdir, a, b, keys, scheduler_story, worker_stories = recording
    code, out, err = cli_run(["story", os.path.join(logdir, "cluster.jsonl"), "total", "--json"])
    assert code == 0, err
    import orjson

    story = orjson.loads(out)["story"]
    # 'total' ran on b; a computed two of its inputs and never heard of it
    assert {line["worker"] for line in story} == {SCHEDULER, b}
    sched = [(ln["transition"]["key"], ln["transition"]["start"], ln["transition"]["finish"], ln["stimulus_id"])
             for ln in story if ln["worker"] == SCHEDULER]
    assert sched == [(t[0], t[1], t[2], t[4]) for t in scheduler_story
                     if t[0] == "total" or "total" in t[3]]
    for address in (a, b):
        mine = [(ln["transition"]["key"], ln["transition"]["start"], ln["transition"]["final"], ln["stimulus_id"])
                for ln in story if ln["worker"] == address and ln["kind"] == "transition"]
        # ws.story counts 'total' in a dependency's recommendations too; the
        # transitions of 'total' itself are the same, in the same order
        theirs = [tuple(t) for t in worker_stories[address] if t[0] == "total"]
        assert [m for m in mine if m[0] == "total"] == theirs
    # the worker reports task-finished, the scheduler tells the worker to release
    _assert_causal(story)


def _assert_causal(story):
    """Each stimulus id both sides logged: the side that made it first."""
    sides: dict[str, list[bool]] = {}
    for ln in story:
        sides.setdefault(ln["stimulus_id"], []).append(ln["worker"] == SCHEDULER)
    shared = {sid: s for sid, s in sides.items() if True in s and False in s}
    finished = [s for sid, s in shared.items() if sid.startswith("task-finished-")]
    released = [s for sid, s in shared.items() if sid.startswith("client-releases-keys-")]
    assert finished and released, sorted(shared)
    for s in finished:  # the worker finished the task and told the scheduler
        assert s.index(True) > s.index(False)
    for s in released:  # the scheduler told the worker to release
        assert s.index(True) < s.index(False)


@pytest.mark.parametrize("skew", [-5.0, 5.0])
def test_causal_order_holds_against_another_hosts_clock(recording, skew):
    logdir, a, b, *_ = recording
    source = ReplayedSource(_history(logdir, b))
    w = source.workers[0]
    mine = w.key_story(w.events, "total")
    shifted = dataclasses.replace(mine, lines=[dataclasses.replace(ln, handled=ln.handled + skew)
                                               for ln in mine.lines])
    theirs = source.scheduler_log.story_lines("total")
    merged = Story.merge([shifted, Story("total", theirs, theirs[0].handled)])
    _assert_causal([ln.to_json() for ln in merged.lines])


def _history(logdir, address):
    import replay

    return replay.open(_worker_log(logdir, address), inexact=True)


@pytest.mark.parametrize("a, b, same", [
    ("tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002", True),
    ("tcp://10.0.0.1:40001", "tcp://10.0.0.2:40001", False),
    ("tls://[::1]:1", "tls://[::1]:2", True),
    # LocalCluster(processes=False): one process, one clock, whatever the counter
    ("inproc://192.0.2.2/4242/1", "inproc://192.0.2.2/4242/7", True),
    ("inproc://192.0.2.2/4242/1", "inproc://192.0.2.2/4343/1", False),
])
def test_workers_share_a_clock_on_one_host_or_in_one_process(a, b, same):
    assert same_clock(a, b) is same and same_clock(b, a) is same


def test_a_dropped_task_is_a_disagreement_from_when_it_was_dropped(recording, monkeypatch):
    logdir, a, b, *_ = recording
    path = _worker_log(logdir, b)
    dropped = [rec["handled"] for _, rec in iter_lines(path)
               if rec["kind"] == "step" and rec["event"]["stimulus_id"] == DROP]
    assert len(dropped) == 1
    answers = {}
    for mode in ("off", "auto"):  # a replay, then the index
        monkeypatch.setenv("REPLAY_INDEX", mode)
        source = open_source(path, history=lambda: _history(logdir, b))
        assert source.kind == ("replayed" if mode == "off" else "indexed")
        found = over_run(path, source.scheduler_log, source.workers)
        answers[source.kind] = found.to_json()
        assert [(e.finding.key, e.finding.worker, e.finding.state) for e in found.episodes] == \
            [("victim", b, None)]
        episode = found.episodes[0]
        assert episode.finding.scheduler == f"processing on {b}"
        assert episode.began == dropped[0]
        assert episode.resolved is not None and episode.lasted >= HANG - 0.1
        standing = over_run(path, source.scheduler_log, source.workers, at=dropped[0] + HANG / 2)
        assert [(e.finding.key, e.began) for e in standing.episodes] == [("victim", dropped[0])]
        before = over_run(path, source.scheduler_log, source.workers, at=dropped[0] - 1e-6)
        assert "victim" not in [e.finding.key for e in before.episodes]
    assert answers["replayed"] == answers["indexed"]


def test_disagreements_command_and_why(recording, cli_run):
    logdir, a, b, *_ = recording
    code, out, err = cli_run(["disagreements", _worker_log(logdir, b)])
    assert code == 0, err
    assert "'victim' processing on" in out and "has no such task" in out
    code, out, err = cli_run(["load", _worker_log(logdir, a)])
    assert code == 0, err
    assert out.startswith("scheduler ")


def test_load_puts_the_scheduler_first_through_index_and_replay(recording, cli_run, monkeypatch):
    logdir, a, b, *_ = recording
    outs = []
    for mode in ("off", "auto"):
        monkeypatch.setenv("REPLAY_INDEX", mode)
        code, out, err = cli_run(["load", _worker_log(logdir, b), "--json"])
        assert code == 0, err
        outs.append(out)
    import orjson

    data = orjson.loads(outs[0])
    assert data["scheduler"]["workers_seen"] == sorted(data["scheduler"]["workers_seen"]) or True
    assert set(data["scheduler"]["workers_seen"]) == {a, b}
    assert outs[0] == outs[1]


def test_story_is_the_same_through_index_and_replay(recording, cli_run, monkeypatch):
    logdir, *_ = recording
    outs = {}
    for mode in ("off", "auto"):
        monkeypatch.setenv("REPLAY_INDEX", mode)
        for what in ("total", "victim"):
            code, out, err = cli_run(["story", os.path.join(logdir, "cluster.jsonl"), what, "--json"])
            assert code == 0, err
            outs[mode, what] = out
    assert outs["off", "total"] == outs["auto", "total"]
    assert outs["off", "victim"] == outs["auto", "victim"]


def test_a_torn_scheduler_log_reads_to_its_last_whole_line(recording, tmp_path, cli_run):
    logdir, *_ = recording
    with open(os.path.join(logdir, SCHEDULER_LOG), "rb") as f:
        lines = f.read().splitlines(keepends=True)
    torn = tmp_path / SCHEDULER_LOG
    torn.write_bytes(b"".join(lines[:10]) + lines[10][:25])  # killed mid-line
    log = SchedulerLog.open(str(torn))
    assert len(log.transitions) + len(log.worker_changes) == 9
    assert not log.ended and "torn last line" in log.warnings[0]
    bad = tmp_path / "bad" / SCHEDULER_LOG
    bad.parent.mkdir()
    bad.write_bytes(b"".join(lines[:5]) + lines[6] + b"".join(lines[7:]))  # a record lost mid-file
    code, out, err = cli_run(["check", str(bad)])
    assert code == 2 and err.count("\n") == 1
    assert f"{bad}:6: record 6 out of order (expected 5)" in err


def test_a_stray_scheduler_log_is_not_taken_for_this_logs(recording, tmp_path, fixture_path):
    logdir, *_ = recording
    import shutil

    shutil.copy(os.path.join(logdir, SCHEDULER_LOG), tmp_path / SCHEDULER_LOG)
    shutil.copy(fixture_path("stuck-flight.jsonl"), tmp_path / "stuck.jsonl")
    import replay

    source = ReplayedSource(replay.open(str(tmp_path / "stuck.jsonl"), inexact=True))
    assert source.scheduler_log is None
