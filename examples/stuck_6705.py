"""Record dask issue 6705 on a real cluster: ``fixtures/stuck-6705.jsonl``.

Re-run from the repository root (about 10 s)::

    .venv/bin/python examples/stuck_6705.py

Worker A computes ``x``, an object that unpickles only in the process that
made it. Worker B must run ``y = inc(x)``; fetching ``x`` fails to
deserialize, B handles a ``GatherDepFailureEvent`` that puts ``x`` in
``error``, and ``y`` stays ``waiting`` forever. Recording stops while B is
stuck.
"""
from __future__ import annotations

import os
import sys

from distributed import wait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import (  # noqa: E402
    FIXTURES, finish_stuck, hard_limit, inc, task_states, wait_until, make_unshippable, recorded_cluster,
    stop_recording,
)

OUT = os.path.join(FIXTURES, "stuck-6705.jsonl")


def main() -> None:
    hard_limit(120)
    with recorded_cluster(2) as (client, cluster, logdir):
        a, b = sorted(client.scheduler_info()["workers"])
        x = client.submit(make_unshippable, key="x", workers=[a])
        wait(x, timeout=30)  # x.result() would fail to unpickle here too
        y = client.submit(inc, x, key="y", workers=[b])
        wait_until(lambda: client.run(task_states, workers=[b])[b].get("x") == "error",
                   "the fetch of x never failed")
        assert not y.done()
        stop_recording(client)
        del x, y
    finish_stuck(logdir, OUT, b, {"x": "error", "y": "waiting"})


if __name__ == "__main__":
    main()
