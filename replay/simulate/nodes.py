"""The nodes of a simulated cluster, and how each answers what it is asked.

Recorded workers are real ``WorkerState`` objects: the nodes hand them
stimuli and answer their instructions as ``Worker`` would, after a seeded
delay, faults included. Virtual peers have no state machine: they compute
what the scheduler gives them and serve what they hold.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from distributed import worker_state_machine as wsm
from distributed.protocol.serialize import Serialize

from replay.record import Session
from replay.simulate.dag import NBYTES, PROCESSING, SimTask, TaskGraph
from replay.simulate.faults import Injector
from replay.simulate.loop import EPOCH, EventLoop
from schemas.convert import SizedValue

if TYPE_CHECKING:
    from replay.simulate.scheduler import Scheduler

#: how a worker backs off from a busy peer (``Worker.retry_busy_worker_later``)
BUSY_BACKOFF = 0.15
#: the period of ``Worker.find_missing``
FIND_MISSING_PERIOD = 1.0
#: peer to peer bandwidth, bytes per simulated second
BANDWIDTH = 500e6


class SimulationError(RuntimeError):
    """A ``WorkerState`` raised while handling a simulated stimulus."""


@dataclass(slots=True, eq=False)
class RecordedWorker:
    """A worker of the log: a real ``WorkerState`` and the session recording it."""

    address: str
    ws: wsm.WorkerState
    session: Session
    #: the worker's resources; a restricted task goes only to a worker that has them
    resources: dict[str, float]
    #: the scheduler->worker stream is FIFO: when its last message arrives
    down: float = 0.0
    #: and so is worker->scheduler
    up: float = 0.0
    #: from its PauseEvent to its UnpauseEvent; meanwhile new tasks go elsewhere if they can
    paused: bool = False
    #: recorded workers never leave the cluster
    alive: ClassVar[bool] = True

    def has(self, key: Any) -> bool:
        return key in self.ws.data


@dataclass(slots=True, eq=False)
class VirtualPeer:
    """A peer with no state machine, not recorded: it computes and serves data.

    It is there so that recorded workers gather from more than each other,
    and so that a peer can retire without a recorded worker leaving.
    """

    address: str
    #: the keys it holds a replica of
    keys: dict[Any, None] = field(default_factory=dict)
    #: the tasks running on it, by key
    processing: dict[Any, SimTask] = field(default_factory=dict)
    #: False once retired: a gather from it then fails like a closed connection
    alive: bool = True

    def has(self, key: Any) -> bool:
        return key in self.keys


class Cluster:
    """The recorded workers and the virtual peers, and how each answers.

    A worker's instructions are answered once each, after a delay drawn from
    the run's random stream: an ``Execute`` by exactly one of
    ``ExecuteSuccessEvent``, ``ExecuteFailureEvent`` or ``RescheduleEvent``
    (a ``SecedeEvent`` may come first); a ``GatherDep`` by exactly one of
    ``GatherDepSuccessEvent``, ``GatherDepBusyEvent`` or
    ``GatherDepNetworkFailureEvent``; a ``RetryBusyWorkerLater`` by a
    ``RetryBusyWorkerEvent``. Messages to the scheduler go up a FIFO stream.
    """

    __slots__ = (
        "loop", "rng", "injector", "graph", "scheduler", "workers", "gpu_workers",
        "peers", "nodes", "_peer_ids", "_instructions",
    )

    #: the recorded workers, in address order; none ever leaves
    workers: list[RecordedWorker]
    #: the workers having the resource restricted tasks ask for
    gpu_workers: list[RecordedWorker]
    #: the peers not retired, oldest first
    peers: list[VirtualPeer]
    #: every node ever, retired peers included, by address
    nodes: dict[str, RecordedWorker | VirtualPeer]
    #: who handles the workers' messages; set once it exists
    scheduler: Scheduler

    def __init__(
        self,
        writer: Any,
        *,
        workers: int,
        peers: int,
        loop: EventLoop,
        rng: random.Random,
        injector: Injector,
        graph: TaskGraph,
        segments: tuple[str, Any] | None = None,
    ):
        self.loop = loop
        self.rng = rng
        self.injector = injector
        self.graph = graph
        self.workers = []
        self.nodes = {}
        for i in range(workers):
            address = f"tcp://10.0.0.{i + 1}:{40000 + i}"
            ws = wsm.WorkerState(
                nthreads=rng.choice((1, 2, 4)),
                address=address,
                # one worker has a resource, so that some tasks wait `constrained`
                resources={"GPU": 1.0} if i == 0 and workers > 1 else None,
                transfer_incoming_count_limit=50,
                validate=False,
                transfer_incoming_bytes_limit=400e6,
                transfer_message_bytes_limit=50e6,
            )
            if segments is None:
                session = Session(ws, writer=writer, clock=loop.clock, pid=0, deterministic=True)
            else:  # each worker's rolling segments in a folder (replay.segments)
                session = Session(ws, directory=segments[0], bound=segments[1], clock=loop.clock,
                                  pid=0, deterministic=True)
            w = RecordedWorker(address, ws, session, dict(ws.total_resources))
            self.workers.append(w)
            self.nodes[address] = w
        self.gpu_workers = [w for w in self.workers if w.resources]
        self.peers = []
        self._peer_ids = itertools.count()
        for _ in range(peers):
            self.new_peer()
        self._instructions: dict[type, Callable] = {
            wsm.Execute: self._execute,
            wsm.GatherDep: self._gather,
            wsm.RetryBusyWorkerLater: self._retry_later,
            # the scheduler would only stop counting the task's thread
            wsm.LongRunningMsg: lambda w, inst: None,
            wsm.TaskFinishedMsg: self._to_scheduler,
            wsm.TaskErredMsg: self._to_scheduler,
            wsm.ReleaseWorkerDataMsg: self._to_scheduler,
            wsm.RescheduleMsg: self._to_scheduler,
            wsm.AddKeysMsg: self._to_scheduler,
            wsm.RequestRefreshWhoHasMsg: self._to_scheduler,
            wsm.StealResponseMsg: self._to_scheduler,
        }

    def new_peer(self) -> VirtualPeer:
        n = next(self._peer_ids)
        # peers share hosts with the workers: gathers prefer local peers
        host = n % len(self.workers) + 1
        peer = VirtualPeer(f"tcp://10.0.0.{host}:{41000 + n}")
        self.peers.append(peer)
        self.nodes[peer.address] = peer
        return peer

    def start(self) -> None:
        """Start each worker's periodic ``find_missing``, at a random phase."""
        for w in self.workers:
            self.loop.call_later(FIND_MISSING_PERIOD * (1 + self.rng.random()), self._find_missing, w)

    def close(self, reason: str) -> None:
        for w in self.workers:
            w.session.close(reason)

    # --- the streams between the scheduler and a worker -----------------

    def send(self, w: RecordedWorker, ev: wsm.StateMachineEvent) -> None:
        """Send ``ev`` from the scheduler to ``w``, down a FIFO stream."""
        t = max(self.loop.now + 0.0002 + self.rng.random() * 0.0003, w.down)
        w.down = t
        self.loop.call_at(t, self.handle_stimulus, w, ev)

    def _to_scheduler(self, w: RecordedWorker, msg: wsm.SendMessageToScheduler) -> None:
        t = max(self.loop.now + 0.0002 + self.rng.random() * 0.0003, w.up)
        w.up = t
        self.loop.call_at(t, self.scheduler.stream_handlers[type(msg)], w, msg)

    def handle_stimulus(self, w: RecordedWorker, ev: wsm.StateMachineEvent) -> None:
        """Hand ``ev`` to ``w``'s state machine and answer what it asks for."""
        name = type(ev).__name__
        self.loop.count_step(name)
        try:
            instructions = w.ws.handle_stimulus(ev)
        except Exception as e:
            raise SimulationError(
                f"worker {w.address} raised {e!r} at its step {w.session.seq} "
                f"({name}, stimulus {ev.stimulus_id})"
            ) from e
        table = self._instructions
        for inst in instructions:
            table[type(inst)](w, inst)

    # --- Execute --------------------------------------------------------

    def duration(self) -> float:
        """How long a task computes."""
        return self.rng.expovariate(200.0)  # 5 ms on average

    def _execute(self, w: RecordedWorker, inst: wsm.Execute) -> None:
        rng = self.rng
        f = self.injector.faults
        key = inst.key
        run_id = w.ws.tasks[key].run_id  # read when the thread starts, as Worker.execute does
        duration = self.duration()
        r = rng.random()
        outcome = "fail" if r < f.fail else "reschedule" if r < f.fail + f.reschedule else "ok"
        if outcome == "ok" and rng.random() < f.secede:
            self.loop.call_later(duration * 0.5, self._secede, w, key, duration * 0.5)
        self.loop.call_later(duration, self._execute_done, w, key, run_id, outcome, self.loop.now)

    def _secede(self, w: RecordedWorker, key: Any, elapsed: float) -> None:
        self.injector.count("secede")
        self.handle_stimulus(
            w, wsm.SecedeEvent(key=key, compute_duration=elapsed, stimulus_id=self.loop.stimulus_id("secede"))
        )

    def _execute_done(self, w: RecordedWorker, key: Any, run_id: int, outcome: str, start: float) -> None:
        loop = self.loop
        sid = loop.stimulus_id("task-finished")
        if outcome == "ok":
            t = self.graph.by_key.get(key)
            ev: wsm.StateMachineEvent = wsm.ExecuteSuccessEvent(
                key=key,
                run_id=run_id,
                value=None,
                start=EPOCH + start,
                stop=EPOCH + loop.now,
                nbytes=t.nbytes if t is not None else NBYTES[1],
                type=None,
                stimulus_id=sid,
            )
        elif outcome == "fail":
            self.injector.count("fail")
            ev = wsm.ExecuteFailureEvent(
                key=key,
                run_id=run_id,
                start=EPOCH + start,
                stop=EPOCH + loop.now,
                exception=Serialize(RuntimeError("simulated failure")),
                traceback=None,
                exception_text="RuntimeError('simulated failure')",
                traceback_text="",
                stimulus_id=sid,
            )
        else:
            self.injector.count("reschedule")
            ev = wsm.RescheduleEvent(key=key, stimulus_id=sid)
        self.handle_stimulus(w, ev)
        if outcome == "ok" and not w.paused and self.rng.random() < self.injector.faults.pause:
            self._pause(w)

    def _pause(self, w: RecordedWorker) -> None:
        self.injector.count("pause")
        w.paused = True
        self.handle_stimulus(w, wsm.PauseEvent(stimulus_id=self.loop.stimulus_id("worker-status-change")))
        self.loop.call_later(self.rng.expovariate(20.0), self._unpause, w)

    def _unpause(self, w: RecordedWorker) -> None:
        w.paused = False
        self.handle_stimulus(w, wsm.UnpauseEvent(stimulus_id=self.loop.stimulus_id("worker-status-change")))

    # --- GatherDep ------------------------------------------------------

    def _gather(self, w: RecordedWorker, inst: wsm.GatherDep) -> None:
        latency = 0.0005 + inst.total_nbytes / BANDWIDTH
        self.loop.call_later(
            latency, self._gather_done, w, inst.worker, list(inst.to_gather), inst.total_nbytes
        )

    def _gather_done(self, w: RecordedWorker, address: str, keys: list, total_nbytes: int) -> None:
        rng = self.rng
        f = self.injector.faults
        sid = self.loop.stimulus_id
        peer = self.nodes[address]
        busy = f.peer_busy.get(address, f.busy) if f.peer_busy else f.busy
        r = rng.random()  # drawn even for a retired peer, so that retiring moves no other draw
        ev: wsm.StateMachineEvent
        if not peer.alive:
            ev = wsm.GatherDepNetworkFailureEvent(
                worker=address, total_nbytes=total_nbytes, stimulus_id=sid("gather-dep-network-failure")
            )
        elif r < busy:
            self.injector.count("busy")
            ev = wsm.GatherDepBusyEvent(
                worker=address, total_nbytes=total_nbytes, stimulus_id=sid("gather-dep-busy")
            )
        elif r < busy + f.network:
            self.injector.count("network")
            ev = wsm.GatherDepNetworkFailureEvent(
                worker=address, total_nbytes=total_nbytes, stimulus_id=sid("gather-dep-network-failure")
            )
        else:
            by_key = self.graph.by_key
            data = {}
            for k in keys:
                if peer.has(k):
                    t = by_key.get(k)
                    data[k] = SizedValue(t.nbytes if t is not None else NBYTES[1])
            if data and rng.random() < f.missing:
                self.injector.count("missing")
                held = list(data)
                del data[held[rng.randrange(len(held))]]
            ev = wsm.GatherDepSuccessEvent(
                worker=address, total_nbytes=total_nbytes, data=data, stimulus_id=sid("gather-dep-success")
            )
        self.handle_stimulus(w, ev)

    def _retry_later(self, w: RecordedWorker, inst: wsm.RetryBusyWorkerLater) -> None:
        self.loop.call_later(BUSY_BACKOFF, self._retry_busy, w, inst.worker)

    def _retry_busy(self, w: RecordedWorker, address: str) -> None:
        self.handle_stimulus(
            w,
            wsm.RetryBusyWorkerEvent(worker=address, stimulus_id=self.loop.stimulus_id("retry-busy-worker")),
        )

    # --- periodic callbacks and the peers -------------------------------

    def _find_missing(self, w: RecordedWorker) -> None:
        # the watchdog rides on a periodic callback: a stuck cluster still has one
        self.scheduler.check_progress()
        self.handle_stimulus(w, wsm.FindMissingEvent(stimulus_id=self.loop.stimulus_id("find-missing")))
        self.loop.call_later(FIND_MISSING_PERIOD, self._find_missing, w)

    def compute_on_peer(self, peer: VirtualPeer, t: SimTask, run_id: int) -> None:
        peer.processing[t.key] = t
        self.loop.call_later(self.duration(), self._peer_done, peer, t, run_id)

    def _peer_done(self, peer: VirtualPeer, t: SimTask, run_id: int) -> None:
        if t.state is not PROCESSING or t.run_id != run_id or t.node is not peer:
            return  # the peer retired meanwhile: the task runs elsewhere
        del peer.processing[t.key]
        peer.keys[t.key] = None
        self.scheduler.in_memory(t, peer.address)
