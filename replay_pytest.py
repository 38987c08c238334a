"""The pytest entry point of dask-replay: ``pytest --replay-record DIR``.

Loaded by every pytest run in an environment that has dask-replay, so it
imports nothing of dask or of ``replay`` until asked: a test run that does not
record (or that must run without dask-replay importable at all, as the
reproducers ``replay shrink`` writes) is left exactly as it was. The recorder
itself is :mod:`replay.pytest_plugin`.
"""
from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dask-replay", "record dask worker state machines")
    group.addoption(
        "--replay-record",
        metavar="DIR",
        default=None,
        help="record every WorkerState a test creates, one log per worker under DIR/<test id>/",
    )
    group.addoption(
        "--replay-keep",
        choices=("failed", "all"),
        default="failed",
        help="keep the logs of failed tests only (default), or of all tests",
    )
    group.addoption(
        "--replay-segment-steps",
        metavar="N",
        type=int,
        default=None,
        help="record each WorkerState as segments of N steps, each from a snapshot "
        "(a bounded recording's format, to check snapshots on a test suite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("--replay-record")
    if directory:
        from replay.pytest_plugin import StateRecorder

        config.pluginmanager.register(
            StateRecorder(os.path.abspath(directory), config.getoption("--replay-keep"),
                          segment_steps=config.getoption("--replay-segment-steps")),
            "dask-replay-recorder",
        )
