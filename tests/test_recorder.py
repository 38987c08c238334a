"""The recorder on a real LocalCluster, and the CLI on recorded logs."""
from __future__ import annotations

import logging
import shutil

import dask
import orjson
import pytest
from distributed import Client, LocalCluster, wait

import replay.record
from replay import Recorder
from replay.log import ClusterLog
from replay.logfile import iter_lines, log_files
from replay.merge import merge
from schemas.convert import decode_event

KEYS = [("t", 1), ("t", (2, "n")), 3, 4.5]

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def fail(x):
    raise ValueError(x)


def snapshot(dask_worker):
    """The worker's own stimulus log and the recorder's step count, at one instant
    of the worker's event loop (no stimulus is half handled then)."""
    plugin = dask_worker.plugins[Recorder.name]
    session = plugin._sessions[id(dask_worker)]
    return {
        "stimuli": [(type(e).__name__, e.stimulus_id) for e in dask_worker.state.stimulus_log],
        "seq": session.seq,
        "path": session.path,
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One small recorded run of two in-process workers."""
    logdir = str(tmp_path_factory.mktemp("logs"))
    with dask.config.set({"distributed.admin.low-level-log-length": 100_000}):
        with LocalCluster(
            n_workers=0, processes=False, threads_per_worker=2, dashboard_address="127.0.0.1:0"
        ) as cluster, Client(cluster) as client:
            client.register_plugin(Recorder(logdir))
            cluster.scale(2)
            client.wait_for_workers(2, timeout=30)
            a, b = sorted(client.scheduler_info()["workers"])
            data = client.scatter([1, 2, 3], workers=[a])
            xs = [client.submit(inc, d, key=k, workers=[b]) for d, k in zip(data, KEYS)]
            xs.append(client.submit(inc, 0, key=KEYS[-1], workers=[a]))
            total = client.submit(add, *xs, key="total", workers=[a])
            # dask before 2024.11 reads the int and float keys in add's
            # arguments as literals: only the sum's parts differ
            assert total.result(timeout=30) in (2 + 3 + 4 + 1, 2 + 3 + 3 + 4.5)
            bad = client.submit(fail, 1, key="bad")
            wait(bad, timeout=30)
            del xs, total, bad, data
            client.run(lambda dask_worker: dask_worker.find_missing())
            snaps = client.run(snapshot)
    return logdir, snaps


def steps(path: str) -> list[dict]:
    return [rec for _, rec in iter_lines(path) if rec["kind"] == "step"]


def test_recorded_events_are_the_workers_stimulus_log(recorded):
    logdir, snaps = recorded
    assert len(snaps) == 2
    for address, snap in snaps.items():
        recorded_steps = steps(snap["path"])[: snap["seq"]]
        events = [(s["event"]["cls"], s["event"]["stimulus_id"]) for s in recorded_steps]
        # FindMissingEvent is handled but never put in stimulus_log
        assert any(cls == "FindMissingEvent" for cls, _ in events)
        assert [e for e in events if e[0] != "FindMissingEvent"] == snap["stimuli"]
        assert len(snap["stimuli"]) > 3
        assert [s["seq"] for s in recorded_steps] == list(range(1, snap["seq"] + 1))


def test_tuple_int_and_float_keys_survive_recording(recorded):
    logdir, _ = recorded
    computed = []
    for path in log_files(logdir):
        for s in steps(path):
            ev = decode_event(s["event"])
            if type(ev).__name__ == "ComputeTaskEvent":
                computed.append(ev.key)
    for key in KEYS:
        # repr tells 3 from 3.0 and a tuple from a list
        assert repr(key) in {repr(k) for k in computed}, key


def test_merge_keeps_each_workers_order(recorded, tmp_path):
    logdir, _ = recorded
    out = str(tmp_path / "cluster.jsonl.gz")
    n = merge([logdir], out)
    files = log_files(logdir)
    per_file = [[rec for _, rec in iter_lines(p)] for p in files]
    assert n == sum(map(len, per_file))
    merged = [rec for _, rec in iter_lines(out)]
    for records in per_file:
        address = records[0]["worker"]
        assert [r for r in merged if r["worker"] == address] == records
    kinds = [r["kind"] for r in merged]
    assert kinds[: len(files)] == ["header"] * len(files)
    handled = [r["handled"] for r in merged if r["kind"] == "step"]
    assert handled == sorted(handled)
    log = ClusterLog.open(out, validate=True)
    assert len(log.workers) == 2


def test_recorder_io_failure_keeps_the_cluster_computing(tmp_path, monkeypatch, caplog):
    real_write = replay.record.LogWriter.write
    writes = []

    def write(self, record):
        writes.append(record["kind"])
        if len(writes) > 3:
            raise OSError(28, "No space left on device")
        real_write(self, record)

    monkeypatch.setattr(replay.record.LogWriter, "write", write)
    with caplog.at_level(logging.WARNING, logger="replay.record"):
        with LocalCluster(
            n_workers=0, processes=False, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        ) as cluster, Client(cluster) as client:
            client.register_plugin(Recorder(str(tmp_path)))
            cluster.scale(1)
            client.wait_for_workers(1, timeout=30)
            futs = client.map(inc, range(20))
            assert client.submit(add, *futs).result(timeout=30) == sum(range(1, 21))
    warnings = [r for r in caplog.records if r.name == "replay.record"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "stopped after step 2" in warnings[0].getMessage()
    (path,) = log_files(str(tmp_path))
    assert [r["kind"] for _, r in iter_lines(path)] == ["header", "step", "step"]


# --- the CLI on recorded logs ---------------------------------------------


def test_check_accepts_every_fixture(cli_run, shipped_fixture):
    code, out, err = cli_run(["check", shipped_fixture])
    assert code == 0, err
    assert "valid" in out


@pytest.fixture
def fixture_lines(fixture_path):
    def fixture_lines(name: str) -> list[bytes]:
        with open(fixture_path(name), "rb") as f:
            return f.readlines()
    return fixture_lines


def test_torn_last_line_warns_and_check_passes(tmp_path, cli_run, fixture_lines):
    lines = fixture_lines("stuck-6705.jsonl")
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    log = ClusterLog.open(str(path), validate=True)
    assert any("torn last line" in w for w in log.warnings)
    code, out, err = cli_run(["check", str(path)])
    assert code == 0
    assert f"{path}:{len(lines)}: torn last line" in err


def test_malformed_line_in_the_middle_exits_2_naming_file_and_line(tmp_path, cli_run, fixture_lines):
    lines = fixture_lines("stuck-6705.jsonl")
    lines[2] = lines[2][:20] + b"\n"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    code, out, err = cli_run(["check", str(path)])
    assert code == 2
    assert f"{path}:3:" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_event_class_exits_2_naming_file_and_line(tmp_path, cli_run, fixture_lines):
    lines = fixture_lines("stuck-flight.jsonl")
    n = next(i for i, line in enumerate(lines) if b'"kind":"step"' in line)
    rec = orjson.loads(lines[n])
    rec["event"]["cls"] = "NoSuchEvent"
    lines[n] = orjson.dumps(rec) + b"\n"
    path = tmp_path / "unknown.jsonl"
    path.write_bytes(b"".join(lines))
    code, out, err = cli_run(["check", str(path)])
    assert code == 2
    assert f"{path}:{n + 1}:" in err
    assert "Traceback" not in err


def test_merge_command_writes_a_cluster_log(tmp_path, cli_run, fixture_path):
    # split a fixture into per-worker files, as the recorder writes them
    src = fixture_path("stuck-6705.jsonl")
    by_worker: dict[str, list[bytes]] = {}
    for _, rec in iter_lines(src):
        by_worker.setdefault(rec["worker"], []).append(orjson.dumps(rec) + b"\n")
    logdir = tmp_path / "logs"
    logdir.mkdir()
    for i, lines in enumerate(by_worker.values()):
        (logdir / f"w{i}.jsonl").write_bytes(b"".join(lines))
    out = tmp_path / "merged.jsonl"
    code, _, err = cli_run(["merge", str(logdir), "-o", str(out)])
    assert code == 0, err
    assert sorted(out.read_bytes().splitlines()) == sorted(
        line.rstrip(b"\n") for lines in by_worker.values() for line in lines
    )
    # the same worker twice is refused, and no output is left behind
    shutil.copy(logdir / "w0.jsonl", logdir / "w0-again.jsonl")
    out2 = tmp_path / "merged2.jsonl"
    code, _, err = cli_run(["merge", str(logdir), "-o", str(out2)])
    assert code == 2 and "also in" in err
    assert not out2.exists()
