"""Does a shrunk candidate show its bug under any hashing, as a plain pytest would run it?

The shrinker replays candidates with ``TaskState`` hashed by key and the
recorded string hash seed (:mod:`replay.determinism`), so set iteration, and
with it which task gets a thread or which peer's ``GatherDep`` comes first,
is the recording's. A reproducer runs in plain pytest: ``TaskState`` hashes
by ``id()`` and the seed is random. :func:`elsewhere` replays a candidate,
written as an ordinary log, in fresh interpreters, each with stock hashing and
a random seed (and the ``--import`` patches of this command, which travel in
the environment), and returns what each saw, as JSON: the test writer asserts
only what they all agree on.

:func:`salted` is the cheap stand-in used inside the shrinker's gate once a
candidate proved hash-dependent: tasks hashed by key and a salt, so that
several salts give several iteration orders in this very process.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import orjson
from distributed import worker_state_machine as wsm

from replay.determinism import is_deterministic
from replay.logfile import write_records
from schemas.convert import encode_instruction

#: how many fresh interpreters check a candidate
SEEDS = 3
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return orjson.loads(orjson.dumps(value, default=repr))


def instructions_json(instructions: Sequence[wsm.Instruction]) -> list:
    return as_json([encode_instruction(x) for x in instructions])


@dataclass(frozen=True, slots=True)
class Seen:
    """What one fresh interpreter saw replaying a candidate, as JSON."""

    seed: str
    #: the predicate's fingerprint at the end (or at the crash)
    fingerprint: Any
    #: the encoded instructions each stimulus returned, up to where the run stopped
    instructions: list

    def shows(self, fingerprint: Any) -> bool:
        return self.fingerprint == as_json(fingerprint)


def elsewhere(records: list[dict], predicate: dict, seeds: int = SEEDS,
              rng: Optional[random.Random] = None) -> list[Seen]:
    """Replay the one-worker log ``records`` in ``seeds`` fresh interpreters,
    stock ``TaskState`` hashing and a random ``PYTHONHASHSEED`` each, and
    observe the predicate ``predicate`` describes (as
    :func:`~replay.shrinker.predicate_record` writes it); what each saw, in order."""
    rng = rng or random.Random()
    # stock hashing: the child must not switch TaskState to key hashing
    header = {**records[0], "deterministic": False}
    path = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="dask-replay-hashcheck-") as folder:
        log = os.path.join(folder, "candidate.jsonl")
        write_records(log, iter([header, *records[1:]]))
        payload = orjson.dumps({"log": log, "predicate": predicate})
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
            seen = orjson.loads(stdout)
            out.append(Seen(seed, seen["fingerprint"], seen["instructions"]))
    return out


def child() -> None:
    """The fresh interpreter's side: replay the log stdin names and write
    what the predicate saw, and every step's instructions, to stdout."""
    # the shrinker imports this module: import it only here, in the child
    import replay
    from replay import imports
    from replay.shrinker import predicate_from_record, replay_stimuli, stimuli_of

    imports.apply()
    asked = orjson.loads(sys.stdin.buffer.read())
    (history,) = replay.open(asked["log"]).workers
    # the parent's predicate, as a shrunk log's header keeps it; an --expr is
    # the user's own, passed on by the parent, not read from the log
    predicate = predicate_from_record(asked["predicate"], expr=asked["predicate"].get("expr"))
    failed: dict[int, list] = {}
    run = replay_stimuli(history.header, stimuli_of(history, failed)[0], store_failed=failed)
    assert not is_deterministic(), "the check needs dask's own identity hashing"
    sys.stdout.buffer.write(orjson.dumps({
        "fingerprint": as_json(predicate.observe(run)),
        "instructions": [instructions_json(x) for x in run.instructions],
    }))


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


def agreed(lists: Sequence[list]) -> tuple[list[int], bool]:
    """Which items of the first list every list holds too (as many times),
    by index, and whether all lists hold the same items in some order."""
    first = lists[0]
    common: list[int] = []
    for i, x in enumerate(first):
        taken = sum(1 for j in common if first[j] == x)
        if all(sum(1 for y in other if y == x) > taken for other in lists[1:]):
            common.append(i)
    same = len(common) == len(first) and all(len(other) == len(first) for other in lists)
    return common, same
