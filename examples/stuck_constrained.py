"""Record a task starved of a resource on its worker: ``fixtures/stuck-constrained.jsonl``.

Re-run from the repository root (about 10 s)::

    .venv/bin/python examples/stuck_constrained.py

One worker with two threads and resource ``R=1``. Task ``hold`` takes R and
blocks on an event nobody sets. Task ``starved`` also needs R: the scheduler
sends it (it fits the worker's total R), and on the worker it stays
``constrained`` behind ``hold`` although a thread is free. Recording stops
while it is stuck.
"""
from __future__ import annotations

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import FIXTURES, finish_stuck, hard_limit, inc, task_states, wait_until, recorded_cluster, stop_recording  # noqa: E402

OUT = os.path.join(FIXTURES, "stuck-constrained.jsonl")
STUCK = {"hold": "executing", "starved": "constrained"}


def block_forever():
    threading.Event().wait()


def main() -> None:
    hard_limit(120)
    with recorded_cluster(1, resources={"R": 1}) as (client, cluster, logdir):
        (a,) = client.scheduler_info()["workers"]
        hold = client.submit(block_forever, key="hold", resources={"R": 1})
        starved = client.submit(inc, 1, key="starved", resources={"R": 1})
        wait_until(lambda: client.run(task_states)[a] == STUCK, lambda: client.run(task_states)[a])
        stop_recording(client)
        del hold, starved
    finish_stuck(logdir, OUT, a, STUCK)


if __name__ == "__main__":
    main()
