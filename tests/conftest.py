"""Test-wide setup.

Replay is exact only when the replaying process hashes strings with the seed
the recording worker used (FACTS.md). Nanny-started workers run with
PYTHONHASHSEED=6640, so the test session re-executes itself with that seed:
in-process recordings and in-process replays then agree too.
"""
from __future__ import annotations

import os
import sys

from replay.determinism import make_deterministic

NANNY_SEED = "6640"
_REEXEC = os.environ.get("PYTHONHASHSEED") != NANNY_SEED and not os.environ.get("REPLAY_TEST_REEXEC")

if not _REEXEC:
    # before any TaskState exists in this process
    make_deterministic()


def pytest_configure(config):
    if not _REEXEC:
        return
    # give the new process the real stdout/stderr back, not pytest's capture files
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    env = dict(os.environ, PYTHONHASHSEED=NANNY_SEED, REPLAY_TEST_REEXEC="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
