"""Take a real cluster dump of a hung LocalCluster and import it.

Writes ``fixtures/cluster-dump.msgpack.gz`` (``Client.dump_cluster_state``, as
a user attaches it to a bug report) and ``fixtures/cluster-dump.ndjson`` (what
``replay.dump.import_dump`` makes of it). Re-run from the repository root
(about 10 s; it stops itself after 3 minutes)::

    .venv/bin/python examples/make_cluster_dump.py

Two nanny workers, no recorder: the dump is all there is. The graph has tuple
keys (``('x', i)``, ``('sum', j)``), which the dump mangles; the stimulus log
cap is lowered to 200 so that the workers' logs overflow, as they do with the
default cap of 1000 on any real workload, and the history is partial. Then
``('stuck', 0)`` blocks its thread on a ``distributed.Event`` that is only set
after the dump, and ``('after', 0)`` waits for it.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import FIXTURES, ROOT, hard_limit  # noqa: E402

import dask  # noqa: E402
from distributed import Client, Event, LocalCluster  # noqa: E402

sys.path.insert(0, ROOT)
from replay.dump import final_states, import_dump  # noqa: E402

DUMP = os.path.join(FIXTURES, "cluster-dump")
#: not ``.jsonl``: the suite replays every shipped ``*.jsonl`` from the empty
#: state, which a partial history cannot be
OUT = os.path.join(FIXTURES, "cluster-dump.ndjson")
LOG_LENGTH = 200
T = 60


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def block(*deps):
    Event("cluster-dump-gate").wait(T)
    return 0


def main() -> None:
    hard_limit(180)
    config = {
        "distributed.admin.low-level-log-length": LOG_LENGTH,
        "distributed.worker.daemon": False,
        "distributed.scheduler.worker-ttl": None,
    }
    with dask.config.set(config), LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as client:
        xs = [client.submit(inc, i, key=("x", i)) for i in range(300)]
        sums = [client.submit(add, *xs[j:j + 10], key=("sum", j // 10)) for j in range(0, len(xs), 10)]
        total = client.submit(add, *sums, key=("total", 0))
        print("total:", total.result(timeout=T))
        stuck = client.submit(block, xs[0], key=("stuck", 0))
        after = client.submit(add, stuck, sums[1], key=("after", 0))
        deadline = time.monotonic() + T
        while not any(("stuck", 0) in keys for keys in client.processing().values()):
            assert time.monotonic() < deadline, "('stuck', 0) never started"
            time.sleep(0.05)
        time.sleep(1)  # the worker is executing it
        for path in (DUMP + ".msgpack.gz", OUT):
            if os.path.exists(path):
                os.unlink(path)
        client.dump_cluster_state(DUMP, format="msgpack")
        Event("cluster-dump-gate", client=client).set()
        after.result(timeout=T)

    report = import_dump(DUMP + ".msgpack.gz", OUT)
    print("\n".join(report.lines()))
    states = {k: t["state"] for f in final_states(OUT).values() for k, t in f.tasks.items()}
    assert states[("stuck", 0)] == "executing", states.get(("stuck", 0))
    assert not report.complete, "the stimulus logs should have overflowed"
    for path in (DUMP + ".msgpack.gz", OUT):
        print(f"{os.path.relpath(path, ROOT)}: {os.path.getsize(path):,} bytes")


if __name__ == "__main__":
    main()
