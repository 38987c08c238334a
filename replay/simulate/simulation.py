"""A simulated run: the graph, the nodes and the scheduler on one event loop."""
from __future__ import annotations

import random
from typing import Any


from replay.determinism import make_deterministic
from replay.engine import state_machine_clock
from replay.simulate.dag import SimTask, TaskGraph
from replay.simulate.faults import Faults, Injector
from replay.simulate.loop import EventLoop
from replay.simulate.nodes import Cluster, RecordedWorker, VirtualPeer
from replay.simulate.scheduler import Scheduler


class Simulation:
    """Real ``WorkerState`` objects driven by a seeded scheduler and peers.

    What a simulated log can contain
    --------------------------------
    Only what a live cluster could send a worker, one stimulus per step:

    - Every ``Execute`` is answered exactly once, by an
      ``ExecuteSuccessEvent``, ``ExecuteFailureEvent`` or ``RescheduleEvent``
      carrying the run_id the task had when it started; a ``SecedeEvent`` may
      come halfway. Every ``GatherDep`` is answered exactly once, by a
      ``GatherDepSuccessEvent``, ``GatherDepBusyEvent`` or
      ``GatherDepNetworkFailureEvent``; every ``RetryBusyWorkerLater`` by a
      ``RetryBusyWorkerEvent``. An answer still pending when the run ends is
      not in the log.
    - Between the scheduler and each worker, messages go both ways in FIFO
      order, after a short latency. The scheduler acts on a task's result or
      failure only for the run and worker it last chose; a late result only
      adds a replica.
    - The scheduler never drops the last replica of a key, nor the replica of
      the node that computed it, nor one that a task processing on the same
      worker needs (a worker releasing the last replica by itself stops the
      run). A key is freed on every node holding it only once nothing can
      need it (see :class:`~replay.simulate.dag.TaskGraph`).
    - A fault (:class:`~replay.simulate.faults.Faults`) is a stimulus a live
      cluster can send, at a rate per occasion: a busy, failed or incomplete
      gather, a failed, rescheduled or seceding task, a steal request, a
      pause and its unpause, a replica to acquire or to remove, a peer that
      retires. A fault never kills a recorded worker, loses data the graph
      needs, or breaks the scheduler's own bookkeeping. A retiring peer hands
      its data and tasks to a new peer before workers hear of it; a gather
      from it afterwards fails like a closed connection.

    It cannot contain: a recorded worker leaving or restarting, spilling,
    actors, batched stimuli, real task values (outputs are sized
    placeholders) or run specs.

    If a ``WorkerState`` raises, the run stops with
    :class:`~replay.simulate.nodes.SimulationError`; if no task finishes for
    two simulated minutes, or nothing is left to do, with
    :class:`~replay.simulate.loop.Stalled`.
    The same arguments under the same ``PYTHONHASHSEED`` write the same
    bytes, and every worker's log replays faithfully.

    Parameters
    ----------
    writer:
        Anything with ``write(record: dict)``; every worker's session shares it.
    seed:
        Seeds the graph, the placement, the timings and the faults.
    workers:
        How many ``WorkerState`` objects to simulate and record.
    peers:
        How many virtual peers (not recorded) compute and serve data too.
    window:
        A task depends only on the last ``window`` tasks; at most
        ``2 * window + 100`` tasks are live at once.
    """

    __slots__ = ("loop", "injector", "graph", "cluster", "scheduler")

    def __init__(
        self,
        writer: Any,
        *,
        seed: int,
        workers: int = 2,
        peers: int = 2,
        faults: Faults | None = None,
        window: int = 400,
        segments: tuple[str, Any] | None = None,
    ):
        """``segments``: ``(directory, bound)`` records each worker as a
        bounded recording (:mod:`replay.segments`) instead of into ``writer``."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if peers < 0 or window < 1:
            raise ValueError("peers must be >= 0 and window >= 1")
        # before the first TaskState exists; Session checks it as well
        make_deterministic()
        # one random stream for everything: what draws from it, in which order, is the log
        rng = random.Random(seed)
        self.loop = loop = EventLoop()
        self.injector = injector = Injector(faults if faults is not None else Faults())
        self.graph = graph = TaskGraph(rng, window)
        self.cluster = cluster = Cluster(
            writer, workers=workers, peers=peers, loop=loop, rng=rng, injector=injector, graph=graph,
            segments=segments,
        )
        graph.restricted = bool(cluster.gpu_workers)
        self.scheduler = scheduler = Scheduler(loop, rng, injector, graph, cluster)
        # the two ends reach each other: wired once both exist
        graph.on_release = scheduler.forget
        cluster.scheduler = scheduler

    def run(self, events: int) -> dict[str, Any]:
        """Handle exactly ``events`` stimuli (fewer only if the cluster stalls)."""
        self.cluster.start()
        self.scheduler.fill()
        with state_machine_clock(self.loop.clock):
            self.loop.run(events)
        return self.summary()

    def close(self, reason: str = "simulation end") -> None:
        self.cluster.close(reason)

    def summary(self) -> dict[str, Any]:
        loop = self.loop
        graph = self.graph
        return {
            "events": loop.steps,
            "workers": {w.address: w.session.seq for w in self.cluster.workers},
            "event_counts": dict(sorted(loop.counts.items())),
            "faults": dict(sorted(self.injector.injected.items())),
            "tasks": graph.generated,
            "finished": graph.finished,
            "erred": graph.erred,
            "released": graph.released,
            "simulated_seconds": loop.now,
        }

    @property
    def faults(self) -> Faults:
        return self.injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.injector.faults = faults

    @property
    def workers(self) -> list[RecordedWorker]:
        return self.cluster.workers

    @property
    def peers(self) -> list[VirtualPeer]:
        return self.cluster.peers

    @property
    def by_key(self) -> dict[Any, SimTask]:
        return self.graph.by_key

    @property
    def live(self) -> int:
        return self.graph.live

    @property
    def generated(self) -> int:
        return self.graph.generated

    @property
    def max_live(self) -> int:
        return self.graph.max_live


def simulate(
    writer: Any,
    *,
    events: int,
    seed: int,
    workers: int = 2,
    peers: int = 2,
    faults: Faults | None = None,
    window: int = 400,
) -> dict[str, Any]:
    """Write a cluster log of ``events`` steps to ``writer``; return the counts.

    The same arguments under the same ``PYTHONHASHSEED`` write the same
    records. The log is faithful (every worker verifies) whatever the seed.
    """
    sim = Simulation(writer, seed=seed, workers=workers, peers=peers, faults=faults, window=window)
    try:
        return sim.run(events)
    finally:
        sim.close()
