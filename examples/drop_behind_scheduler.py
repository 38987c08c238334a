"""Record a cluster, scheduler included, in which a worker drops a task
behind the scheduler's back: a recording to try ``replay disagreements`` on.

Run from the repository root (about 10 s)::

    .venv/bin/python examples/drop_behind_scheduler.py /tmp/dropped
    .venv/bin/replay merge /tmp/dropped -o /tmp/dropped/cluster.jsonl
    .venv/bin/replay disagreements /tmp/dropped/cluster.jsonl
    .venv/bin/replay story /tmp/dropped/cluster.jsonl victim

``ClusterRecorder`` records the scheduler into ``scheduler.jsonl`` and every
worker beside it. A worker plugin releases ``victim`` on its worker as soon as
it waits there for its dependency, without telling the scheduler (as in
dask/distributed#3761: the scheduler thinks a task is running while the
worker has no idea about it); the scheduler waits for it until the client lets
go of it 2 s later.
"""
from __future__ import annotations

import os
import sys
import time

from distributed import Client, LocalCluster, WorkerPlugin, wait
from distributed import worker_state_machine as wsm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from replay import ClusterRecorder  # noqa: E402


def inc(x):
    return x + 1


class DropVictim(WorkerPlugin):
    """Releases ``victim`` when it starts waiting, without a word to the scheduler."""

    name = "drop-victim"

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if key == "victim" and finish == "waiting":
            event = wsm.FreeKeysEvent(keys=["victim"], stimulus_id="drop-behind-the-schedulers-back")
            self.worker.loop.add_callback(self.worker.handle_stimulus, event)


def main(directory: str) -> None:
    with LocalCluster(n_workers=0, processes=False, threads_per_worker=1,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.register_plugin(ClusterRecorder(directory))
        cluster.scale(2)
        client.wait_for_workers(2, timeout=30)
        a, b = sorted(client.scheduler_info()["workers"])
        client.register_plugin(DropVictim())
        dep = client.submit(inc, 1, key="dep", workers=[a])
        wait(dep, timeout=30)
        victim = client.submit(inc, dep, key="victim", workers=[b])
        time.sleep(2)
        print(f"victim done: {victim.done()} (the scheduler still has it processing on {b})")
        del victim, dep
    print(f"recorded into {directory}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dropped-logs")
