"""Record a real three-worker LocalCluster into ``fixtures/cluster-log.jsonl.gz``.

Re-run from the repository root (about 15 s; it stops itself after 5 minutes)::

    .venv/bin/python examples/record_cluster.py

Every stimulus below reaches the workers through dask's own code paths: the
scheduler, the peers' ``get_data`` replies, the worker's status setter and its
periodic ``find_missing``. Faults are made real rather than simulated: a peer
that answers ``busy`` (its outgoing transfer limit set to 0) and a peer whose
``get_data`` drops the connection. ``cancel-compute`` is a worker stream op
the 2026.8 scheduler never sends; the script sends it on the scheduler's
stream to the worker, so the worker's own handler receives it.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import FIXTURES, finish, hard_limit, make_unshippable, recorded_cluster  # noqa: E402

import dask  # noqa: E402
from distributed import Reschedule, get_worker, secede, rejoin, wait, worker_client  # noqa: E402
from distributed.core import Status  # noqa: E402

OUT = os.path.join(FIXTURES, "cluster-log.jsonl.gz")
T = 60  # seconds any single wait may take


def results(futures):
    return [f.result(timeout=T) for f in futures]


def inc(x):
    return x + 1


def add(*xs):
    return sum(xs)


def slow_inc(x, delay=0.05):
    time.sleep(delay)
    return x + 1


def fail(x):
    raise ValueError(f"bad input {x}")


def reschedule_once(flag):
    # the first attempt asks the scheduler to run it elsewhere
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise Reschedule()
    return get_worker().address


def fan_out(n):
    # a task that submits more work and waits for it: the worker secedes
    with worker_client() as c:
        return sum(c.gather(c.map(inc, range(n), key=[f"inner-{n}-{i}" for i in range(n)])))


def long_running(x):
    secede()
    time.sleep(0.1)
    rejoin()
    return x


def tree(client, prefix, n, workers):
    """A reduction whose leaves sit on alternating workers, so that every
    level fetches data from the other worker."""
    layer = [
        client.submit(slow_inc, i, 0.001, key=(prefix, 0, i), workers=[workers[i % len(workers)]])
        for i in range(n)
    ]
    level = 0
    while len(layer) > 1:
        level += 1
        layer = [
            client.submit(add, *layer[i : i + 2], key=(prefix, level, i // 2))
            for i in range(0, len(layer), 2)
        ]
    return layer[0]


def cancel_compute(dask_scheduler, worker, key):
    dask_scheduler.stream_comms[worker].send(
        {"op": "cancel-compute", "key": key, "stimulus_id": f"cancel-compute-{time.time()}"}
    )


def set_status(status, dask_worker=None):
    dask_worker.status = status


def set_outgoing_limit(limit, dask_worker=None):
    dask_worker.transfer_outgoing_count_limit = limit


def break_get_data(dask_worker):
    # the peer drops the connection: the requester sees an OSError
    original = dask_worker.handlers["get_data"]
    dask_worker._fixture_get_data = original

    async def dropped(comm, **kwargs):
        comm.abort()
        return Status.dont_reply

    dask_worker.handlers["get_data"] = dropped


def restore_get_data(dask_worker):
    dask_worker.handlers["get_data"] = dask_worker._fixture_get_data


def find_missing(dask_worker):
    dask_worker.find_missing()


async def add_resources(dask_worker):
    await dask_worker.set_resources(R=2)


def scenario(client, a, b, c, scratch):
    # scattered data and dependency transfers, tuple keys
    data = client.scatter(list(range(20)), workers=[a])
    total = client.submit(add, *data, key="scatter-sum", workers=[b])
    assert total.result(timeout=T) == sum(range(20))

    # int, float and tuple keys, through submit and dask.delayed
    assert client.submit(inc, 1, key=5).result(timeout=T) == 2
    assert client.submit(inc, 2, key=2.5).result(timeout=T) == 3
    d = dask.delayed(add)(
        *[dask.delayed(inc)(i, dask_key_name=("delayed", i)) for i in range(10)],
        dask_key_name=("delayed", "sum", 1.5),
    )
    assert client.compute(d).result(timeout=T) == sum(range(1, 11))

    # the bulk: reductions across workers
    assert tree(client, "tree", 200, [a, b, c]).result(timeout=T) == sum(range(1, 201))

    # failures
    f = client.submit(fail, 1, key="fail-1")
    wait(f, timeout=T)
    assert f.status == "error"
    del f

    # secede: worker_client and an explicit secede/rejoin
    assert client.submit(fan_out, 8, key="fan-out").result(timeout=T) == sum(range(1, 9))
    assert client.submit(long_running, 3, key="long-running").result(timeout=T) == 3

    # reschedule
    flag = os.path.join(scratch, "rescheduled")
    assert client.submit(reschedule_once, flag, key="reschedule").result(timeout=T)

    # resource restrictions, and a resources change outside handle_stimulus
    rs = client.map(slow_inc, range(12), resources={"R": 1}, key=[("res", i) for i in range(12)])
    assert results(rs) == list(range(1, 13))
    client.run(add_resources, workers=[c])
    rs2 = client.map(slow_inc, range(6), resources={"R": 2}, key=[("res2", i) for i in range(6)])
    assert results(rs2) == list(range(1, 7))
    del rs, rs2

    # pause: tasks sent to a paused worker wait until it runs again
    client.run(set_status, Status.paused, workers=[b])
    paused = client.map(inc, range(4), workers=[b], key=[("paused", i) for i in range(4)])
    time.sleep(0.5)
    client.run(set_status, Status.running, workers=[b])
    assert results(paused) == [1, 2, 3, 4]
    del paused

    # replicas up and down
    reps = client.scatter([("rep", i) for i in range(6)], workers=[a])
    client.replicate(reps, n=3)
    client.replicate(reps, n=1)
    client.rebalance(reps)

    # a busy peer, then a peer that drops the connection
    held = client.submit(inc, 100, key="held", workers=[a])
    held.result(timeout=T)
    client.run(set_outgoing_limit, 0, workers=[a])
    busy = client.submit(inc, held, key="after-busy", workers=[b])
    time.sleep(1.0)
    client.run(set_outgoing_limit, 10, workers=[a])
    assert busy.result(timeout=T) == 102

    held2 = client.submit(inc, 200, key="held-2", workers=[a])
    held2.result(timeout=T)
    client.run(break_get_data, workers=[a])
    dropped = client.submit(inc, held2, key="after-drop", workers=[c], allow_other_workers=True)
    time.sleep(1.0)
    client.run(find_missing, workers=[b, c])
    client.run(restore_get_data, workers=[a])
    client.run(find_missing, workers=[b, c])
    assert dropped.result(timeout=T) == 202

    # work stealing: many small tasks all depending on data held by one worker
    seed = client.scatter(1, workers=[a])
    steal = client.map(slow_inc, [seed] * 150, [0.02] * 150, key=[("steal", i) for i in range(150)])
    assert sum(results(steal)) == 2 * 150
    del steal, seed

    # cancel-compute for a task that waits on a slow dependency, then release it
    slow = client.submit(slow_inc, 0, 1.0, key="slow-dep", workers=[c])
    waiter = client.submit(inc, slow, key="cancelled", workers=[c])
    time.sleep(0.3)
    client.run_on_scheduler(cancel_compute, worker=c, key="cancelled")
    client.cancel([waiter])
    del waiter
    slow.result(timeout=T)
    del slow

    # one more round so that late frees are recorded, then a worker retires
    assert tree(client, "tree-final", 64, [a, b]).result(timeout=T) == sum(range(1, 65))
    client.run(find_missing)
    client.retire_workers([c], close_workers=True)
    assert client.submit(inc, 41, key="after-retire").result(timeout=T) == 42
    # last, as it leaves the receiving worker inconsistent: a dependency that
    # fails to deserialize there (dask issue 6705); the dependent would wait
    # forever, so it is released
    bad = client.submit(make_unshippable, key="unshippable", workers=[a])
    wait(bad, timeout=T)
    stuck = client.submit(inc, bad, key="never-runs", workers=[b])
    time.sleep(1.0)
    client.cancel([stuck, bad])
    del stuck, bad
    time.sleep(0.3)
    del data, total, reps, held, held2, busy, dropped
    time.sleep(0.5)


def main() -> None:
    hard_limit(300)
    with tempfile.TemporaryDirectory() as scratch:
        with recorded_cluster(3, resources={"R": 1}) as (client, cluster, logdir):
            a, b, c = sorted(client.scheduler_info()["workers"])
            scenario(client, a, b, c, scratch)
        finish(logdir, OUT)


if __name__ == "__main__":
    main()
