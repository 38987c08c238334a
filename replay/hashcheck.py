"""Does a shrunk candidate show its bug under any hashing, as a plain pytest would run it?

The shrinker replays candidates with ``TaskState`` hashed by key and the
recorded string hash seed (:mod:`replay.determinism`), so set iteration, and
with it which task gets a thread or which peer's ``GatherDep`` comes first,
is the recording's. A reproducer runs in plain pytest: ``TaskState`` hashes
by ``id()`` and the seed is random. :func:`elsewhere` replays a candidate in
fresh interpreters, each with stock hashing and a random seed (and the
``--import`` patches of this command, which travel in the environment), and
returns what each saw; the test writer asserts only what they all agree on.

:func:`salted` is the cheap stand-in used inside the shrinker's gate once a
candidate proved hash-dependent: tasks hashed by key and a salt, so that
several salts give several iteration orders in this very process.
"""
from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from distributed import worker_state_machine as wsm

from replay.determinism import is_deterministic

#: how many fresh interpreters check a candidate
SEEDS = 3
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True, slots=True)
class Seen:
    """What one fresh interpreter saw replaying a candidate."""

    seed: str
    #: the predicate's fingerprint at the end (or at the crash)
    fingerprint: Any
    #: the instructions each stimulus returned, up to where the run stopped
    instructions: list


def elsewhere(header: dict, stimuli: Sequence[Any], predicate: Any, seeds: int = SEEDS,
              rng: Optional[random.Random] = None) -> list[Seen]:
    """Replay ``stimuli`` in ``seeds`` fresh interpreters, stock ``TaskState``
    hashing and a random ``PYTHONHASHSEED`` each; what each saw, in order."""
    rng = rng or random.Random()
    # stock hashing: the child must not switch TaskState to key hashing
    payload = pickle.dumps(({**header, "deterministic": False}, list(stimuli), predicate))
    path = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    procs = []
    for _ in range(seeds):  # side by side: each spends most of its time importing
        seed = str(rng.randrange(1, 2**32))
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path}
        procs.append((seed, subprocess.Popen(
            [sys.executable, "-c", "from replay.hashcheck import child; child()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )))
    out = []
    for seed, proc in procs:
        stdout, stderr = proc.communicate(payload, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the hash check failed (PYTHONHASHSEED={seed}):\n"
                               + stderr.decode(errors="replace")[-4000:])
        fingerprint, instructions = pickle.loads(stdout)
        out.append(Seen(seed, fingerprint, instructions))
    return out


def child() -> None:
    """The fresh interpreter's side: read the candidate from stdin, replay it,
    write (fingerprint, instructions) to stdout."""
    from replay import imports
    from replay.shrinker import replay_stimuli

    imports.apply()
    header, stimuli, predicate = pickle.loads(sys.stdin.buffer.read())
    run = replay_stimuli(header, stimuli)
    assert not is_deterministic(), "the check needs dask's own identity hashing"
    sys.stdout.buffer.write(pickle.dumps((predicate.observe(run), run.instructions)))


@contextmanager
def salted(salt: int) -> Iterator[None]:
    """``TaskState`` hashed by ``(salt, key)`` inside the block. Only the tasks
    created inside may be looked up inside: sets built under another hash
    cannot find their members."""
    before = wsm.TaskState.__dict__.get("__hash__")
    wsm.TaskState.__hash__ = lambda self: hash((salt, self.key))  # type: ignore[method-assign]
    try:
        yield
    finally:
        if before is None:
            del wsm.TaskState.__hash__
        else:
            wsm.TaskState.__hash__ = before  # type: ignore[method-assign]


def agreed(lists: Sequence[list]) -> tuple[list, bool]:
    """The instructions every run returned, in the first run's order, and
    whether the runs returned the same ones (in any order)."""
    first = lists[0]
    common = [x for x in first if all(_count(x, other) >= _count(x, first) for other in lists[1:])]
    common = _dedupe_counts(common, lists)
    same = all(len(other) == len(first) for other in lists) and len(common) == len(first)
    return common, same


def _count(x: Any, xs: list) -> int:
    return sum(1 for y in xs if y == x)


def _dedupe_counts(common: list, lists: Sequence[list]) -> list:
    out: list = []
    for x in common:
        if _count(x, out) < min(_count(x, xs) for xs in lists):
            out.append(x)
    return out
