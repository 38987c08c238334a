"""Record a two-worker cluster running through a patched state machine.

    python tests/patched/record.py NAME OUT.jsonl

imports ``tests.patched.NAME`` (the bug), starts an in-process
``LocalCluster`` recorded from its empty state, runs the scenario that shows
the bug, and merges the workers' logs into ``OUT.jsonl``. Run it with
``PYTHONHASHSEED`` set, so that the in-process workers' logs replay exactly.
"""
from __future__ import annotations

import faulthandler
import importlib
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from replay import Recorder  # noqa: E402
from replay.logfile import log_files  # noqa: E402
from replay.merge import merge  # noqa: E402


#: where the workers' logs are written
LOGDIR = ""


def inc(x):
    return x + 1


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the scenario never reached its end state")
        time.sleep(0.05)


def stale_in_flight(client: Client, a: str, b: str, cluster: LocalCluster) -> None:
    # y's transfer from a leaves the entry behind; x2 is then never fetched from a
    x = client.submit(inc, 1, key="x", workers=[a])
    client.submit(inc, x, key="y", workers=[b]).result(timeout=20)
    x2 = client.submit(inc, 2, key="x2", workers=[a])
    x2.result(timeout=20)
    y2 = client.submit(inc, x2, key="y2", workers=[b])  # noqa: F841
    state = cluster.workers[1].state if cluster.workers[1].address == b else cluster.workers[0].state
    wait_for(lambda: "x2" in state.tasks and state.tasks["x2"].state == "fetch")
    time.sleep(0.5)  # long enough for a healthy worker to have fetched it


def dup_gather(client: Client, a: str, b: str, cluster: LocalCluster) -> None:
    x = client.submit(inc, 1, key="x", workers=[a])
    x.result(timeout=20)
    y = client.submit(inc, x, key="y", workers=[b])  # noqa: F841
    # the second reply raises inside b's state machine, which then closes b
    wait_for(lambda: all(w.address != b for w in cluster.workers.values()) or
             any(w.status.name != "running" for w in cluster.workers.values()))
    time.sleep(0.5)


def raising_transition(client: Client, a: str, b: str, cluster: LocalCluster) -> None:
    client.submit(inc, 1, key="fine", workers=[a]).result(timeout=20)
    boom = client.submit(inc, 1, key="boom-1", workers=[a])  # noqa: F841
    # the recorder writes the step that raised with its error
    wait_for(lambda: any(b'"error"' in open(p, "rb").read() for p in log_files(LOGDIR)))
    time.sleep(0.5)


def main() -> None:
    name, out = sys.argv[1], sys.argv[2]
    faulthandler.dump_traceback_later(120, exit=True)
    importlib.import_module(f"tests.patched.{name}")
    global LOGDIR
    logdir = LOGDIR = tempfile.mkdtemp(prefix="dask-replay-patched-")
    with dask.config.set({"distributed.worker.daemon": False, "distributed.scheduler.worker-ttl": None}):
        with LocalCluster(n_workers=0, processes=False, threads_per_worker=1, protocol="tcp://",
                          host="127.0.0.1", dashboard_address=":0") as cluster, Client(cluster) as client:
            client.register_plugin(Recorder(logdir))
            cluster.scale(2)
            client.wait_for_workers(2, timeout=30)
            a, b = sorted(client.scheduler_info()["workers"])
            globals()[name](client, a, b, cluster)
            try:
                client.unregister_worker_plugin(Recorder.name)
            except Exception:  # a worker the bug closed has no plugin to remove
                pass
    merge(log_files(logdir), out)


if __name__ == "__main__":
    main()
