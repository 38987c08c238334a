"""A worker's log over the worker's life: fed before it has an address, and
closed when the worker closes."""
from __future__ import annotations

import asyncio
import os

import pytest
from distributed import Client, Scheduler, Worker
from distributed import worker_state_machine as wsm
from distributed.core import Status

import replay
from replay.log import ClusterLog
from replay.logfile import LogWriter, iter_lines, log_files
from replay.record import Recorder, Session


def inc(x: int) -> int:
    return x + 1


def records(path) -> list[dict]:
    return [rec for _, rec in iter_lines(str(path))]


def open_files() -> set[str]:
    """What this process's file descriptors point at, and the files it maps."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed while listing
            pass
    with open("/proc/self/maps") as f:
        out.update(line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_the_log_is_closed_when_the_worker_closes(tmp_path):
    logs = tmp_path / "logs"

    async def run() -> tuple[str, bool]:
        async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1") as s:
            w = await Worker(s.address, nthreads=1, plugins={Recorder(str(logs))})
            async with Client(s.address, asynchronous=True) as c:
                assert await c.submit(inc, 1, key="x") == 2
            (path,) = log_files(str(logs))
            was_open = os.path.realpath(path) in open_files()
            # stored through a map of its current chunk, allocated ahead
            assert (w.plugins[Recorder.name]._sessions[id(w)].writer.mapped
                    and os.path.getsize(path) % LogWriter.CHUNK == 0)
            await w.close()
            # right after close returns, not at some later teardown
            assert os.path.realpath(path) not in open_files()
            return path, was_open

    path, was_open = asyncio.run(run())
    assert was_open  # the check above can fail: the log was open before
    # cut to its lines on close: no chunk's zero tail left
    raw = open(path, "rb").read()
    assert raw.endswith(b"\n") and b"\0" not in raw
    recs = records(path)
    assert recs[-1]["kind"] == "end" and recs[-1]["seq"] == max(r.get("seq", 0) for r in recs)
    assert replay.open(path).worker().verify()[0] is None


def test_a_worker_fed_before_it_has_an_address_keeps_its_name(tmp_path, cli_run):
    logs = tmp_path / "logs"

    async def run() -> str:
        async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1") as s:
            w = Worker(s.address, nthreads=1)
            session = Session(w.state, directory=str(logs), watch_tasks=True)
            # scattered to before it starts; released again, or it may not join
            w.update_data(data={"y": 3})
            w.handle_stimulus(wsm.FreeKeysEvent(keys=["y"], stimulus_id="free-y"))
            async with w:
                async with Client(s.address, asynchronous=True) as c:
                    assert await c.submit(inc, 1, key="z") == 2
            session.close("test")
            return w.address

    address = asyncio.run(run())
    (path,) = log_files(str(logs))
    recs = records(path)
    header = recs[0]
    assert header["worker"] == f"pid-{os.getpid()}" and header["address"] is None
    assert {r["worker"] for r in recs} == {header["worker"]}
    (named,) = [r for r in recs if r["kind"] == "resources" and "address" in r]
    assert named["address"] == address
    assert named["seq"] == 3  # before the first stimulus after start
    assert recs[-1]["kind"] == "end" and recs[-1]["address"] == address

    assert ClusterLog.open(path, validate=True).workers[0].later_address == address
    for command in ("check", "load", "verify"):
        code, out, err = cli_run([command, path])
        assert code == 0, (command, out, err)
    worker = replay.open(path).worker()
    assert worker.verify()[0] is None
    # replay starts without an address, as the worker did, and gets it at step 3
    assert getattr(worker.state_at(2), "address", None) is None
    assert worker.state_at(3).address == address


def test_a_worker_rejected_for_arriving_with_data_leaves_a_log_that_verifies(tmp_path):
    logs = tmp_path / "logs"

    async def run() -> None:
        async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1") as s:
            w = Worker(s.address, nthreads=1)
            session = Session(w.state, directory=str(logs), watch_tasks=True)
            w.update_data(data={"y": 3})
            assert w.state.tasks["y"].state == "memory"
            # dask refuses a worker that holds data when it registers
            with pytest.raises(RuntimeError, match="Worker failed to start"):
                await w
            assert w.status == Status.failed
            session.close("test")

    asyncio.run(run())
    (path,) = log_files(str(logs))
    recs = records(path)
    assert {r["worker"] for r in recs} == {f"pid-{os.getpid()}"}
    worker = replay.open(path).worker()
    assert worker.verify()[0] is None
    assert worker.state_at(None).tasks["y"].state == "memory"
