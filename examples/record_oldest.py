"""Record a log with the oldest supported distributed: ``fixtures/stuck-flight-2024.1.0.jsonl``.

Run it in an environment with distributed 2024.1.0 (about 10 s)::

    python3 -m venv .venv-oldest
    .venv-oldest/bin/pip install -e '.[test]' distributed==2024.1.0 dask==2024.1.0 'numpy<2'
    .venv-oldest/bin/python examples/record_oldest.py

The stuck-flight scene of ``stuck_flight.py``, plus a task that secedes (a
``LongRunningMsg``, whose ``run_id`` that release did not send) and a task
scheduled with a duration estimate (``ComputeTaskEvent.duration``, which later
releases dropped): the two places where the releases' state machines differ.
Worker A holds ``x`` and never answers ``get_data``; worker B runs ``y =
inc(x)`` and waits for ``x`` in ``flight``.
"""
from __future__ import annotations

import os
import sys

import distributed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixturelib import FIXTURES, finish_stuck, hard_limit, inc, recorded_cluster, stop_recording, wait_until  # noqa: E402
from stuck_flight import flight_keys, hang_get_data  # noqa: E402

OUT = os.path.join(FIXTURES, f"stuck-flight-{distributed.__version__}.jsonl")


def seceding(x):
    from distributed import secede

    secede()
    return x + 1


def main() -> None:
    hard_limit(120)
    if distributed.__version__ != "2024.1.0":
        sys.exit(f"record with distributed 2024.1.0, not {distributed.__version__}")
    with recorded_cluster(2) as (client, cluster, logdir):
        a, b = sorted(client.scheduler_info()["workers"])
        x = client.submit(inc, 1, key="x", workers=[a])
        s = client.submit(seceding, x, key="s", workers=[a])
        assert s.result(timeout=30) == 3
        client.run(hang_get_data, workers=[a])
        y = client.submit(inc, x, key="y", workers=[b])
        wait_until(lambda: client.run(flight_keys, workers=[b])[b] == ["x"], "x never went in flight")
        stop_recording(client)
        del y, s
    finish_stuck(logdir, OUT, b, {"x": "flight", "y": "waiting"})


if __name__ == "__main__":
    main()
