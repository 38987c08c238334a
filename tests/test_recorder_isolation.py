"""The recorder changes nothing in a live worker beyond what it documents.

A real nanny-started worker, with and without ``--preload replay.record``:
the recorder may add its own modules and switch ``TaskState`` to key hashing
(deterministic mode), and nothing else — no pydantic, no replay engine, and
dask's own ``get_address_host``.
"""
from __future__ import annotations

import sys
from operator import add

import cloudpickle
import pytest
from distributed import Client, LocalCluster

import replay

#: what ``import replay.record`` may bring into a worker
RECORDER_MODULES = {
    "replay", "replay.record", "replay.determinism", "replay.errors", "replay.logfile",
    "replay.segments", "replay.snapshot",  # bounded recording: segments and their snapshots
    "schemas", "schemas.codec", "schemas.convert", "schemas.versions",
    "schemas.generated",  # compiles the encoders (no imports of its own)
    "orjson", "orjson.orjson",  # the log writer's JSON encoder
}


def _probe() -> dict:
    import sys

    from distributed import worker_state_machine as wsm

    return {
        "modules": sorted(m for m in sys.modules if not m.startswith("_")),
        "get_address_host": wsm.get_address_host.__module__,
        "task_hash": wsm.TaskState.__hash__.__module__,
    }


def _state_class(dask_worker) -> str:
    return type(dask_worker.state).__module__


def _worker_facts(monkeypatch, preload: bool, logdir: str) -> tuple[dict, str]:
    monkeypatch.setenv("DASK_REPLAY__DIRECTORY", logdir)
    kwargs = {"preload": ["replay.record"]} if preload else {}
    with LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0",
        host="127.0.0.1", **kwargs,
    ) as cluster, Client(cluster) as client:
        assert client.submit(add, 1, 2).result(timeout=60) == 3
        (facts,) = client.run(_probe).values()
        (state_class,) = client.run(_state_class).values()
    return facts, state_class


@pytest.fixture
def probe_by_value():
    # the worker cannot import this test module: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_preloaded_recorder_touches_nothing_else(monkeypatch, tmp_path, probe_by_value):
    bare, bare_class = _worker_facts(monkeypatch, False, str(tmp_path / "bare"))
    rec, rec_class = _worker_facts(monkeypatch, True, str(tmp_path / "rec"))

    added = set(rec["modules"]) - set(bare["modules"])
    assert added <= RECORDER_MODULES, sorted(added - RECORDER_MODULES)
    assert "replay.record" in added  # the preload really ran
    assert not any(m == "pydantic" or m.startswith("pydantic.") for m in rec["modules"])
    assert "replay.engine" not in rec["modules"] and "schemas.records" not in rec["modules"]

    # dask's own function, not the replay engine's offline stand-in
    assert rec["get_address_host"] == bare["get_address_host"] == "distributed.comm.addressing"
    # the two documented changes: key hashing, and the recording subclass
    assert bare["task_hash"] == "distributed.worker_state_machine"
    assert rec["task_hash"] == "replay.determinism"
    assert bare_class == "distributed.worker_state_machine"
    assert rec_class == "replay.record"

    # and it did record: the log replays faithfully
    (log,) = (tmp_path / "rec").glob("*.jsonl")
    (wh,) = replay.open(str(log)).workers
    divergence, _ = wh.verify()
    assert wh.events > 0 and divergence is None


def test_replay_patches_get_address_host_only_while_it_handles_a_call():
    from distributed import worker_state_machine as wsm

    from replay.engine import offline_addresses

    real = wsm.get_address_host
    seen = []
    with offline_addresses():
        seen.append(wsm.get_address_host("inproc://10.0.0.7/123/1"))
    assert seen == ["10.0.0.7"] and wsm.get_address_host is real

    import replay.engine  # noqa: F401  (importing the engine patches nothing)

    assert wsm.get_address_host is real
