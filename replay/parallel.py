"""Replay the workers of one log side by side: local processes, or a dask cluster.

Each worker's log replays on its own, so a cluster log of many workers is a
map over its workers. :func:`map_workers` runs a module-level function
``fn(path, address)`` for every worker and returns the results in the log's
order, whatever order they finish in: the same list a serial loop gives.

- ``jobs=N``: N forked processes on this machine. Forked children inherit
  this process's hash seed, the one the command re-executed itself with.
- ``scheduler=ADDRESS``: a running dask cluster; each worker's log is
  replayed as a task there, reading the log from ``path``, which both sides
  must see. The task replays in a fresh interpreter with this process's hash
  seed (:func:`_fresh`): exact replay needs that seed and key hashing, which
  a dask worker's own process cannot switch to.

Results cross a process boundary by pickle between our own processes, never
from a file.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

from replay import imports
from replay.errors import BadInput


#: the log a forked child replays from: (path, what :func:`replay.open` read),
#: so that children do not read the whole log again to find their worker
_OPENED: Optional[tuple[str, Any]] = None


def map_workers(
    fn: Callable[[str, str], Any],
    path: str,
    addresses: list[str],
    *,
    jobs: Optional[int] = None,
    scheduler: Optional[str] = None,
    history: Any = None,
) -> list[Any]:
    """``[fn(path, address) for address in addresses]``, side by side;
    ``history`` is ``path`` opened already, for local processes to share."""
    global _OPENED
    if scheduler is not None:
        return _on_dask(fn, path, addresses, scheduler)
    _OPENED = None if history is None else (path, history)
    try:
        if not jobs or jobs <= 1 or len(addresses) <= 1:
            return [fn(path, a) for a in addresses]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: the children get this process's seed, its modules and the opened log
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(jobs, len(addresses)), mp_context=context) as pool:
            return list(pool.map(fn, [path] * len(addresses), addresses))
    finally:
        _OPENED = None


def _on_dask(fn: Callable[[str, str], Any], path: str, addresses: list[str], scheduler: str) -> list[Any]:
    from distributed import Client

    from replay.determinism import NANNY_SEED, hash_seed

    try:
        client = Client(scheduler, timeout="10s")
    except OSError as e:
        raise BadInput(f"--scheduler {scheduler}: cannot connect: {e}") from None
    n = len(addresses)
    with client:
        # the modules of --import travel with the task: the worker's environment has none
        patches = {k: os.environ[k] for k in (imports.ENV, imports.PATH_ENV) if k in os.environ}
        futures = client.map(_fresh, [fn.__name__] * n, [os.path.abspath(path)] * n, addresses,
                             [hash_seed() or NANNY_SEED] * n, [patches] * n, pure=False)
        return client.gather(futures)


def _fresh(name: str, path: str, address: str, seed: str, patches: dict[str, str]) -> Any:
    """``name(path, address)`` in a fresh interpreter beside a dask worker.

    A dask worker holds ``TaskState`` objects of its own, hashed by identity,
    so its process cannot switch to the key hashing exact replay needs; and
    it runs with its own hash seed. A child interpreter has neither problem.
    ``patches`` are the variables that name the modules of ``--import``.
    """
    import pickle
    import subprocess
    import sys

    code = ("import pickle, sys; from replay import imports, parallel; imports.apply(); "
            f"sys.stdout.buffer.write(pickle.dumps(parallel.{name}(sys.argv[1], sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, path, address], capture_output=True,
                         env=dict(os.environ, PYTHONHASHSEED=seed, **patches))
    if out.returncode:
        raise RuntimeError(f"replaying {address} of {path} failed:\n{out.stderr.decode(errors='replace')}")
    # written by our own child process just now, never read from a file
    return pickle.loads(out.stdout)


# --- the functions map_workers runs ---------------------------------------------


def _history(path: str, address: str) -> Any:
    import replay

    if _OPENED is not None and _OPENED[0] == path:
        return _OPENED[1].worker(address)
    return replay.open(path).worker(address)


def load_one(path: str, address: str) -> Any:
    """``replay load`` of one worker (a :class:`~replay.summary.WorkerSummary`)."""
    from replay.summary import load_worker

    return load_worker(_history(path, address))


def verify_one(path: str, address: str, validate: bool = False) -> Any:
    """``replay verify`` of one worker, without the dask objects its story holds."""
    from replay.summary import verify_worker

    result = verify_worker(_history(path, address), validate=validate)
    d = getattr(result, "divergence", None)  # a final-state check has none
    if d is not None and d.story is not None:
        for line in d.story.lines:
            line.item = None  # text and payload are kept; exceptions need not pickle
    return result


def verify_one_validating(path: str, address: str) -> Any:
    return verify_one(path, address, validate=True)
