"""Record two LocalClusters' workers into directories, as a user's recording is left.

    python tests/recorded/closing.py CLOSED_DIR UNREGISTERED_DIR

Both run a small graph with a transfer between their two in-process workers.
The first cluster is closed with its recorders attached (each worker's log
ends as ``Worker.close`` leaves it); the second has its recorder unregistered
while the workers still run. Run it with ``PYTHONHASHSEED`` set, so that the
in-process workers' logs replay exactly.
"""
from __future__ import annotations

import faulthandler
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from replay import Recorder  # noqa: E402

CONFIG = {"distributed.scheduler.worker-ttl": None, "distributed.admin.low-level-log-length": 100_000}


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def run(out: str, *, close: bool) -> None:
    logdir = tempfile.mkdtemp(prefix="dask-replay-")
    with dask.config.set(CONFIG), LocalCluster(
        n_workers=0, processes=False, threads_per_worker=2, protocol="tcp://", host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster, Client(cluster) as client:
        client.register_plugin(Recorder(logdir))
        cluster.scale(2)
        client.wait_for_workers(2, timeout=30)
        a, b = sorted(client.scheduler_info()["workers"])
        xs = [client.submit(inc, i, key=("x", i), workers=[a]) for i in range(6)]
        ys = [client.submit(add, x, 1, key=("y", i), workers=[b]) for i, x in enumerate(xs)]
        assert client.submit(add, *ys, key="total", workers=[b]).result(timeout=30) == 27
        if not close:
            client.unregister_worker_plugin(Recorder.name)
    shutil.copytree(logdir, out)
    shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    faulthandler.dump_traceback_later(120, exit=True)
    run(sys.argv[1], close=True)
    run(sys.argv[2], close=False)
