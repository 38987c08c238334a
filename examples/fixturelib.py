"""Shared plumbing of the fixture scripts: a recorded LocalCluster, bounded in time.

Workers are nanny processes, so they run with the nanny's fixed
PYTHONHASHSEED (6640) and their logs replay exactly (header
``"deterministic": true``).
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator

import cloudpickle
import dask
from distributed import Client, LocalCluster

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from replay import Recorder  # noqa: E402
from replay.log import ClusterLog  # noqa: E402
from replay.logfile import log_files  # noqa: E402
from replay.merge import merge  # noqa: E402
from schemas.convert import EVENT_FIELDS  # noqa: E402

FIXTURES = os.path.join(ROOT, "fixtures")

# worker processes cannot import this module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: keep every stimulus in the worker's own stimulus_log too, for comparison
CONFIG = {
    "distributed.admin.low-level-log-length": 1_000_000,
    "distributed.worker.daemon": False,
    "distributed.scheduler.worker-ttl": None,
    "distributed.comm.timeouts.connect": "10s",
}


def hard_limit(seconds: int) -> None:
    """Dump the stacks and exit if the script runs longer than ``seconds``."""
    faulthandler.dump_traceback_later(seconds, exit=True)


@contextlib.contextmanager
def recorded_cluster(
    n_workers: int, *, config: dict | None = None, **kwargs
) -> Iterator[tuple[Client, LocalCluster, str]]:
    """A LocalCluster whose workers record from their empty state into a temp dir."""
    logdir = tempfile.mkdtemp(prefix="dask-replay-")
    with dask.config.set({**CONFIG, **(config or {})}):
        cluster = LocalCluster(
            n_workers=0,
            processes=True,
            threads_per_worker=kwargs.pop("threads_per_worker", 2),
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            **kwargs,
        )
        client = Client(cluster)
        try:
            # before any worker joins: each one is recorded from the empty state
            client.register_plugin(Recorder(logdir))
            cluster.scale(n_workers)
            client.wait_for_workers(n_workers, timeout=60)
            yield client, cluster, logdir
        finally:
            client.close(timeout=10)
            cluster.close(timeout=20)


def stop_recording(client: Client) -> None:
    """Write every worker's end record now, whatever state it is stuck in."""
    client.unregister_worker_plugin(Recorder.name)


def finish(logdir: str, out: str) -> ClusterLog:
    """Merge the worker logs of ``logdir`` into ``out`` and print what it holds."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    n = merge(log_files(logdir), out)
    shutil.rmtree(logdir, ignore_errors=True)
    log = ClusterLog.open(out, validate=True)
    counts: Counter = Counter()
    for w in log.workers:
        counts.update(w.event_counts)
        print(
            f"  {w.address}: {w.events} events, deterministic={w.deterministic}, "
            f"hash_seed={w.header['hash_seed']}, ended={w.ended}"
        )
        assert w.deterministic, f"{w.address} was not recorded deterministically"
    size = os.path.getsize(out)
    print(f"{out}: {n} records, {sum(counts.values())} events, {size:,} bytes")
    present = [c for c in EVENT_FIELDS if counts[c]]
    missing = [c for c in EVENT_FIELDS if not counts[c]]
    print(f"event classes ({len(present)}/{len(EVENT_FIELDS)}):")
    for c in present:
        print(f"  {c:32} {counts[c]}")
    print("missing: " + (", ".join(missing) or "none"))
    return log


def _revive(pid: int) -> "Unshippable":
    if os.getpid() != pid:
        raise RuntimeError(f"an Unshippable made in process {pid} cannot be unpickled here")
    return Unshippable()


class Unshippable:
    """A task result that unpickles only in the process that made it.

    A peer that fetches it fails to deserialize it: the GatherDepFailureEvent
    of dask issue 6705.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __reduce__(self):
        return _revive, (self.pid,)


def make_unshippable(_: object = None) -> Unshippable:
    return Unshippable()


def replayed_states(path: str) -> dict[str, dict]:
    """Task states of each worker at the end of its replay: a quick check that
    a fixture shows what it claims."""
    import replay

    return {
        w.address: {k: ts.state for k, ts in w.state_at(None).tasks.items()}
        for w in replay.open(path).workers
    }


def wait_until(condition, message, timeout: float = 10) -> None:
    """Poll ``condition`` until true, then let the cluster settle a moment."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.1)
    time.sleep(0.5)


def finish_stuck(logdir: str, out: str, worker: str, expected: dict) -> None:
    """Merge the logs, replay them, and check the stuck worker is stuck as it should be."""
    finish(logdir, out)
    states = replayed_states(out)
    print("replayed:", states)
    assert states[worker] == expected, states[worker]


def inc(x):
    return x + 1


def task_states(dask_worker) -> dict:
    """The state of every task on a worker, for ``client.run``."""
    return {k: ts.state for k, ts in dask_worker.state.tasks.items()}
