"""Make a ``WorkerState`` replay exactly (FACTS.md, "Replay determinism").

``TaskState.__hash__`` is ``id(self)``, so ``set[TaskState]`` iterates in
memory-address order and two runs of the same events can hand the free thread
to different tasks. Hashing by key, with the same ``PYTHONHASHSEED`` in the
recording and the replaying process, removes that.
"""
from __future__ import annotations

import os
import sys

from distributed.worker_state_machine import TaskState


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
