"""Make a ``WorkerState`` replay exactly.

The state machine keeps tasks in sets (``ready``, ``executing``, a task's
``dependents``…) and acts on them in iteration order: which task gets a free
thread, which dependency is fetched first. ``TaskState.__hash__`` is
``id(self)``, so that order follows memory addresses and differs between two
runs of the same events; long logs replayed in another process take other
transitions within a few thousand steps. Hashing a task by its key instead
makes the order a function of the keys and of the string hash seed: with the
same ``PYTHONHASHSEED`` in the recording and the replaying process, a replay
takes the recorded transitions step for step.

Workers started by a nanny (``dask worker``, ``LocalCluster(processes=True)``)
already run with a fixed seed, ``6640``: the nanny sets it so that string
hashing agrees across a cluster. In-process workers inherit the seed of their
host process, random unless ``PYTHONHASHSEED`` is set.

This module is imported by the recorder inside live workers: it changes
nothing until :func:`make_deterministic` is called.
"""
from __future__ import annotations

import os
import sys

from distributed.worker_state_machine import TaskState

#: the seed nanny-started workers run with
NANNY_SEED = "6640"
#: set in the environment of a process this module re-executed, so that it
#: never re-executes twice
REEXEC_GUARD = "DASK_REPLAY_SEED_REEXEC"


def _key_hash(self: TaskState) -> int:
    return hash(self.key)


def is_deterministic() -> bool:
    return TaskState.__hash__ is _key_hash


def make_deterministic() -> bool:
    """Switch ``TaskState`` to key hashing in this process.

    Only safe while no ``TaskState`` exists: a set built with identity hashes
    could no longer find its members. Returns whether key hashing is on.
    """
    if is_deterministic():
        return True
    if len(TaskState._instances):
        return False
    TaskState.__hash__ = _key_hash  # type: ignore[method-assign,assignment]
    return True


def hash_seed() -> str | None:
    """The ``PYTHONHASHSEED`` this interpreter runs with, or None if random."""
    if not sys.flags.hash_randomization:
        return "0"
    seed = os.environ.get("PYTHONHASHSEED")
    if seed and seed != "random" and seed.isdigit():
        return seed
    return None


def valid_seed(seed: object) -> bool:
    """Is ``seed`` a ``PYTHONHASHSEED`` value Python accepts (0 to 2**32 - 1)?"""
    return isinstance(seed, str) and seed.isascii() and seed.isdigit() and int(seed) < 2**32


def reexec_with_seed(seed: str) -> None:
    """Run this very command again in a fresh interpreter hashing with ``seed``.

    A running interpreter cannot change its own string hashing. Returns (and
    does nothing) when the seed is already ``seed``, is not one Python
    accepts, or this process is itself such a re-execution.
    """
    if not valid_seed(seed) or seed == hash_seed() or os.environ.get(REEXEC_GUARD):
        return
    env = dict(os.environ, PYTHONHASHSEED=seed, **{REEXEC_GUARD: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def prepare_replay(header: dict) -> list[str]:
    """Switch this process to key hashing if the worker of ``header`` was
    recorded so, and say why a replay here may still depart from the
    recording: the returned warnings are empty when it will be exact."""
    if not header.get("deterministic"):
        return ["recorded without deterministic mode; replay may depart from the recording"]
    return inexact_reasons(header)


def inexact_reasons(header: dict) -> list[str]:
    """Why this process cannot replay a deterministic recording exactly (empty:
    it can); switches it to key hashing first if it still may."""
    if not header.get("deterministic"):
        return []
    out = []
    if not make_deterministic():
        out.append("TaskState objects already exist in this process; replay may differ")
    recorded, ours = header.get("hash_seed"), hash_seed()
    if recorded != ours:
        out.append(
            f"recorded with PYTHONHASHSEED={recorded}, replaying with "
            f"{ours or 'a random seed'}; replay may differ"
        )
    return out
