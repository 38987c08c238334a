"""The simulated scheduler: where tasks run, and what it does with workers' messages."""
from __future__ import annotations

import itertools
import random
from typing import Any, Callable

from distributed import worker_state_machine as wsm

from replay.simulate.dag import MEMORY, PROCESSING, SimTask, TaskGraph
from replay.simulate.faults import Injector
from replay.simulate.loop import EventLoop, Stalled
from replay.simulate.nodes import Cluster, RecordedWorker, VirtualPeer
from schemas.convert import ERA

#: simulated seconds without a task finishing after which the run is stuck
STALL_AFTER = 120.0


class Scheduler:
    """Places the graph's tasks on nodes and handles the workers' messages.

    It keeps the graph full (:meth:`fill`), submits a task once its
    dependencies are in memory, batches the keys released into one
    ``FreeKeysEvent`` per worker, and injects the scheduler's faults: stealing
    a task just sent, replicating a key just computed, dropping a replica
    just reported, retiring a peer.

    It never drops the last replica of a key, nor the replica of the node
    that computed it, nor one a task processing on that worker needs.
    """

    __slots__ = ("loop", "rng", "injector", "graph", "cluster", "run_ids", "last_progress",
                 "stream_handlers", "_free")

    #: what it does with each message a worker sends, by the message's class
    stream_handlers: dict[type, Callable[[RecordedWorker, Any], None]]
    #: when a task last finished or erred; see :meth:`check_progress`
    last_progress: float
    #: keys released since the last ``FreeKeysEvent``, per worker holding them
    _free: dict[RecordedWorker, list]

    def __init__(
        self, loop: EventLoop, rng: random.Random, injector: Injector, graph: TaskGraph, cluster: Cluster
    ):
        self.loop = loop
        self.rng = rng
        self.injector = injector
        self.graph = graph
        self.cluster = cluster
        self.run_ids = itertools.count(1)
        self.last_progress = 0.0
        self._free = {}
        self.stream_handlers = {
            wsm.TaskFinishedMsg: self._task_finished,
            wsm.TaskErredMsg: self._task_erred,
            wsm.ReleaseWorkerDataMsg: self._release_worker_data,
            wsm.RescheduleMsg: self._reschedule,
            wsm.AddKeysMsg: self._add_keys,
            wsm.RequestRefreshWhoHasMsg: self._refresh_who_has,
            wsm.StealResponseMsg: self._steal_response,
        }

    def check_progress(self) -> None:
        """Raise :class:`Stalled` if no task finished for :data:`STALL_AFTER`."""
        if self.loop.now - self.last_progress > STALL_AFTER:
            raise Stalled(
                f"no task finished for {STALL_AFTER:g} simulated seconds "
                f"(step {self.loop.steps}, {self.graph.live} live tasks)"
            )

    # --- placing tasks --------------------------------------------------

    def fill(self) -> None:
        """Generate tasks until the graph is full; submit those ready."""
        graph = self.graph
        while graph.live < graph.max_live:
            t = graph.generate()
            if not t.waiting_on:
                self.submit(t)

    def submit(self, t: SimTask, avoid: Any = None) -> None:
        """Place a task whose dependencies are all in memory, and send it."""
        rng = self.rng
        run_id = next(self.run_ids)
        t.run_id = run_id
        t.state = PROCESSING
        cluster = self.cluster
        if t.restrictions:
            node: Any = cluster.gpu_workers[rng.randrange(len(cluster.gpu_workers))]
        elif cluster.peers and rng.random() < 0.3:
            node = cluster.peers[rng.randrange(len(cluster.peers))]
        else:
            node = self._pick_worker(t, avoid)
        t.node = node
        if type(node) is VirtualPeer:
            cluster.compute_on_peer(node, t, run_id)
            return
        deps = t.deps
        ev = wsm.ComputeTaskEvent(
            key=t.key,
            run_id=run_id,
            who_has={d.key: list(d.who_has) for d in deps},
            nbytes={d.key: d.nbytes for d in deps},
            priority=(0, 0, t.index),
            run_spec=None,  # only validate=True looks at it
            resource_restrictions=t.restrictions or {},
            actor=False,
            annotations={},
            span_id=None,
            stimulus_id=self.loop.stimulus_id("compute-task"),
            # fields the installed release has and the log format does not
            **ERA.class_only.get("ComputeTaskEvent", {}),
        )
        cluster.send(node, ev)
        if rng.random() < self.injector.faults.steal:
            self.loop.call_later(rng.expovariate(500.0), self._try_steal, t, run_id)

    def _pick_worker(self, t: SimTask, avoid: Any) -> RecordedWorker:
        rng = self.rng
        workers = self.cluster.workers
        candidates = [w for w in workers if w is not avoid and not w.paused]
        if not candidates:
            candidates = [w for w in workers if w is not avoid] or workers
        if t.deps and rng.random() < 0.6:
            # where most of the input already is
            best, best_bytes = None, -1
            for w in candidates:
                b = 0
                for d in t.deps:
                    if w.address in d.who_has:
                        b += d.nbytes
                if b > best_bytes:
                    best, best_bytes = w, b
            return best  # type: ignore[return-value]
        return candidates[rng.randrange(len(candidates))]

    # --- transitions ----------------------------------------------------

    def in_memory(self, t: SimTask, address: str) -> None:
        """``t`` finished on ``address``: run what it unblocks, refill the graph."""
        graph = self.graph
        self.last_progress = self.loop.now
        for d in graph.in_memory(t, address):
            self.submit(d)
        graph.settle(t)
        f = self.injector.faults
        rng = self.rng
        if t.state is MEMORY and rng.random() < f.replicate:
            self._replicate(t)
        peers = self.cluster.peers
        if peers and rng.random() < f.retire:
            self._retire(peers[rng.randrange(len(peers))])
        self._flush_free()
        self.fill()
        self._flush_free()

    def _err(self, t: SimTask, w: RecordedWorker) -> None:
        self.last_progress = self.loop.now
        self.graph.err(t, w)
        self._flush_free()
        self.fill()
        self._flush_free()

    def forget(self, t: SimTask) -> None:
        """``t`` is released: every node holding its key, or asked to, drops it."""
        key = t.key
        holders = dict(t.who_has)
        holders.update(t.fetchers)
        nodes = self.cluster.nodes
        free = self._free
        for address in holders:
            node = nodes[address]
            if type(node) is VirtualPeer:
                node.keys.pop(key, None)
            else:
                free.setdefault(node, []).append(key)
        if t.erred_on is not None and t.erred_on.address not in holders:
            free.setdefault(t.erred_on, []).append(key)

    def _flush_free(self) -> None:
        if self._free:
            free, self._free = self._free, {}
            sid = self.loop.stimulus_id
            for w, keys in free.items():
                self.cluster.send(w, wsm.FreeKeysEvent(keys=keys, stimulus_id=sid("free-keys")))

    # --- the scheduler's faults -----------------------------------------

    def _try_steal(self, t: SimTask, run_id: int) -> None:
        if t.state is PROCESSING and t.run_id == run_id and type(t.node) is RecordedWorker:
            self.injector.count("steal")
            ev = wsm.StealRequestEvent(key=t.key, stimulus_id=self.loop.stimulus_id("steal"))
            self.cluster.send(t.node, ev)

    def _replicate(self, t: SimTask) -> None:
        targets = [
            w for w in self.cluster.workers if w.address not in t.who_has and w.address not in t.fetchers
        ]
        if not targets:
            return
        w = targets[self.rng.randrange(len(targets))]
        t.fetchers[w.address] = None
        self.injector.count("replicate")
        self.cluster.send(
            w,
            wsm.AcquireReplicasEvent(
                who_has={t.key: list(t.who_has)},
                nbytes={t.key: t.nbytes},
                stimulus_id=self.loop.stimulus_id("acquire-replicas"),
            ),
        )

    def _retire(self, peer: VirtualPeer) -> None:
        """Retire a virtual peer gracefully: its data and work move to a new one."""
        self.injector.count("retire")
        cluster = self.cluster
        peer.alive = False
        cluster.peers.remove(peer)
        new = cluster.new_peer()
        by_key = self.graph.by_key
        for key in peer.keys:
            t = by_key[key]
            del t.who_has[peer.address]
            t.who_has[new.address] = None
            new.keys[key] = None
            if t.owner == peer.address:
                t.owner = new.address
        for t in list(peer.processing.values()):
            self.submit(t)
        peer.keys.clear()
        peer.processing.clear()
        sid = self.loop.stimulus_id
        for w in cluster.workers:
            cluster.send(w, wsm.RemoveWorkerEvent(worker=peer.address, stimulus_id=sid("remove-worker")))

    # --- the workers' messages ------------------------------------------

    def _task_finished(self, w: RecordedWorker, msg: wsm.TaskFinishedMsg) -> None:
        t = self.graph.by_key.get(msg.key)
        if t is None:
            return
        if t.state is PROCESSING and t.run_id == msg.run_id and t.node is w:
            self.in_memory(t, w.address)
        elif t.state is MEMORY:
            t.who_has[w.address] = None

    def _task_erred(self, w: RecordedWorker, msg: wsm.TaskErredMsg) -> None:
        t = self.graph.by_key.get(msg.key)
        if t is not None and t.state is PROCESSING and t.run_id == msg.run_id and t.node is w:
            self._err(t, w)

    def _release_worker_data(self, w: RecordedWorker, msg: wsm.ReleaseWorkerDataMsg) -> None:
        t = self.graph.by_key.get(msg.key)
        if t is None:
            return
        t.who_has.pop(w.address, None)
        if t.state is MEMORY and not t.who_has:
            # the scheduler never drops the last replica; this would be its bug
            raise RuntimeError(f"simulated scheduler lost the last replica of {msg.key!r}")

    def _reschedule(self, w: RecordedWorker, msg: wsm.RescheduleMsg) -> None:
        t = self.graph.by_key.get(msg.key)
        if t is not None and t.state is PROCESSING and t.node is w:
            self.submit(t, avoid=w)

    def _add_keys(self, w: RecordedWorker, msg: wsm.AddKeysMsg) -> None:
        f = self.injector.faults
        by_key = self.graph.by_key
        redundant = []
        for key in msg.keys:
            t = by_key.get(key)
            if t is None or t.state is not MEMORY:
                redundant.append(key)
                continue
            t.who_has[w.address] = None
            t.fetchers.pop(w.address, None)
            if (
                self.rng.random() < f.drop
                and w.address != t.owner
                and len(t.who_has) > 1
                and not any(d.state is PROCESSING and d.node is w for d in t.dependents)
            ):
                # as the scheduler does: forget the replica before the worker drops it
                del t.who_has[w.address]
                self.injector.count("drop")
                redundant.append(key)
        if redundant:
            self.cluster.send(
                w,
                wsm.RemoveReplicasEvent(keys=redundant, stimulus_id=self.loop.stimulus_id("remove-replicas")),
            )

    def _refresh_who_has(self, w: RecordedWorker, msg: wsm.RequestRefreshWhoHasMsg) -> None:
        by_key = self.graph.by_key
        who_has = {}
        for key in msg.keys:
            t = by_key.get(key)
            who_has[key] = list(t.who_has) if t is not None else []
        self.cluster.send(
            w, wsm.RefreshWhoHasEvent(who_has=who_has, stimulus_id=self.loop.stimulus_id("refresh-who-has"))
        )

    def _steal_response(self, w: RecordedWorker, msg: wsm.StealResponseMsg) -> None:
        t = self.graph.by_key.get(msg.key)
        if (
            t is not None
            and t.state is PROCESSING
            and t.node is w
            and msg.state in ("ready", "constrained", "waiting")
        ):
            self.submit(t, avoid=w)
