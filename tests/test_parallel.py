"""Replaying the workers of a log side by side gives what one after another gives."""
from __future__ import annotations

import orjson
import pytest


@pytest.fixture(scope="module")
def cluster_log(fixture_path):
    return fixture_path("cluster-log.jsonl.gz")


def test_local_processes_equal_serial(cluster_log, cli_run, monkeypatch):
    monkeypatch.setenv("REPLAY_INDEX", "off")  # the serial answer by replaying too
    for command in (["load"], ["verify", "--validate"]):
        serial = cli_run([*command, cluster_log, "--json"])
        parallel = cli_run([*command, cluster_log, "--json", "--jobs", "2"])
        assert parallel[0] == serial[0], parallel[2]
        assert orjson.loads(parallel[1]) == orjson.loads(serial[1])
    # the cluster fixture's second worker breaks an invariant: found side by side too
    data = orjson.loads(cli_run(["verify", cluster_log, "--json", "--validate", "-j", "2"])[1])
    assert [w["faithful"] for w in data["workers"]].count(False) == 1


def test_on_a_dask_cluster_equals_serial(cluster_log, cli_run, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setenv("REPLAY_INDEX", "off")
    # nanny-started workers run with the seed the fixture was recorded with
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        for command in (["load"], ["verify"]):
            serial = cli_run([*command, cluster_log, "--json"])
            remote = cli_run([*command, cluster_log, "--json", "--scheduler", cluster.scheduler_address],
                             timeout=120)
            assert remote[0] == serial[0], remote[2]
            assert orjson.loads(remote[1]) == orjson.loads(serial[1])


def test_jobs_and_scheduler_exclude_each_other(cluster_log, cli_run):
    code, _, err = cli_run(["load", cluster_log, "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2 and "not both" in err
