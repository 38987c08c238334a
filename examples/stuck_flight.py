"""Record a worker stuck with a dependency in ``flight``: ``fixtures/stuck-flight.jsonl``.

Re-run from the repository root (about 10 s)::

    .venv/bin/python examples/stuck_flight.py

Worker A holds ``x``; its ``get_data`` handler is replaced by one that never
answers. Worker B must run ``y = inc(x)``, asks A for ``x`` and waits for a
reply that never comes: ``x`` stays in ``flight``, ``y`` in ``waiting``.
Recording stops while B is stuck.
"""
from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import FIXTURES, finish_stuck, hard_limit, inc, wait_until, recorded_cluster, stop_recording  # noqa: E402

OUT = os.path.join(FIXTURES, "stuck-flight.jsonl")


def hang_get_data(dask_worker):
    async def never(comm, **kwargs):
        await asyncio.Event().wait()

    dask_worker.handlers["get_data"] = never


def flight_keys(dask_worker):
    return [ts.key for ts in dask_worker.state.in_flight_tasks]


def main() -> None:
    hard_limit(120)
    with recorded_cluster(2) as (client, cluster, logdir):
        a, b = sorted(client.scheduler_info()["workers"])
        x = client.submit(inc, 1, key="x", workers=[a])
        x.result(timeout=30)
        client.run(hang_get_data, workers=[a])
        y = client.submit(inc, x, key="y", workers=[b])
        wait_until(lambda: client.run(flight_keys, workers=[b])[b] == ["x"], "x never went in flight")
        stop_recording(client)
        del y
    finish_stuck(logdir, OUT, b, {"x": "flight", "y": "waiting"})


if __name__ == "__main__":
    main()
