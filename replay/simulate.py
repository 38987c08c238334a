"""A simulated cluster: real ``WorkerState`` objects, a scripted scheduler and peers.

The driver plays everything around the state machine: it submits a task graph
generated from a seed, answers every instruction (``Execute``, ``GatherDep``,
``RetryBusyWorkerLater``, messages to the scheduler) after a seeded delay, and
injects faults (busy or unreachable peers, answers lacking keys, failing or
rescheduled tasks, secession, stealing, pausing, retiring peers, replicas
acquired and dropped). Nothing is re-implemented: each worker is a real
``WorkerState`` recorded by a real :class:`~replay.record.Session`, so the
output is an ordinary cluster log.

It is a discrete-event simulation on a fake clock: pending completions and
messages sit in one heap ordered by their simulated time, which interleaves
workers and events the way a live cluster does, and makes the same seed (with
the same ``PYTHONHASHSEED``) write the same bytes.

The graph is a random DAG over a rolling window: a new task depends only on
tasks among the last ``window`` ones, and the "scheduler" frees a key once no
future task can depend on it and its dependents are done, so the number of
live tasks, and memory, stay bounded however long the run.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import orjson
from distributed import worker_state_machine as wsm
from distributed.protocol.serialize import Serialize

from replay.determinism import make_deterministic
from replay.record import Session
from schemas.convert import SizedValue

#: the fake clock's origin, so that timestamps look like wall-clock times
EPOCH = 1_700_000_000.0
#: how a worker backs off from a busy peer (``Worker.retry_busy_worker_later``)
BUSY_BACKOFF = 0.15
#: the period of ``Worker.find_missing``
FIND_MISSING_PERIOD = 1.0
#: simulated seconds without a task finishing after which the run is stuck
STALL_AFTER = 120.0
#: peer to peer bandwidth, bytes per simulated second
BANDWIDTH = 500e6
NBYTES = (64, 800, 8_000, 80_000, 800_000, 8_000_000)


@dataclass(frozen=True)
class Faults:
    """How often each fault happens, as a probability per occasion."""

    #: a ``GatherDep`` is answered busy
    busy: float = 0.02
    #: a ``GatherDep`` fails with a network error
    network: float = 0.005
    #: a successful ``GatherDep`` answer lacks one of the keys asked for
    missing: float = 0.01
    #: an ``Execute`` fails
    fail: float = 0.002
    #: an ``Execute`` raises ``Reschedule``
    reschedule: float = 0.002
    #: an executing task secedes before it finishes
    secede: float = 0.01
    #: the scheduler tries to steal a task it just sent to a worker
    steal: float = 0.01
    #: a worker pauses after finishing a task (memory pressure)
    pause: float = 0.002
    #: a virtual peer retires after a task finishes (its data moves to a new peer)
    retire: float = 0.0005
    #: the scheduler asks a worker to replicate a key that just finished
    replicate: float = 0.01
    #: the scheduler drops a replica a worker just reported
    drop: float = 0.2
    #: per-peer overrides of ``busy``: "what if this peer were busy"
    peer_busy: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def none(cls) -> Faults:
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name != "peer_busy"})

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``"none,busy=0.1"``: the defaults, or none, then overrides by name."""
        faults = cls()
        names = {f.name for f in fields(cls)} - {"peer_busy"}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part in ("none", "default"):
                faults = cls.none() if part == "none" else cls()
                continue
            name, eq, value = part.partition("=")
            name = name.strip()
            if name not in names:
                raise ValueError(
                    f"unknown fault {name!r}; known: none, default, " + ", ".join(sorted(names))
                )
            try:
                rate = float(value) if eq else getattr(cls(), name)
            except ValueError:
                raise ValueError(f"fault {name}: not a number: {value!r}") from None
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {name}: {rate} is not a probability")
            faults = replace(faults, **{name: rate})
        return faults


class Stalled(RuntimeError):
    """The simulated cluster stopped making progress."""


class SimulationError(RuntimeError):
    """A ``WorkerState`` raised while handling a simulated stimulus."""


class _Done(Exception):
    pass


class LineWriter:
    """``write(record)`` as one JSON line on a binary stream the caller opened.

    The same bytes as :class:`~replay.logfile.LogWriter`, without its flush per
    line: a simulation has no crash to survive.
    """

    def __init__(self, stream: Any):
        self._write = stream.write

    def write(self, record: dict) -> None:
        self._write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))


class ThreadedLineWriter:
    """``write(record)`` in chunks that a thread hands to ``stream``.

    For a compressing stream: zlib releases the GIL, so compression runs on
    another core beside the simulation. ``close()`` writes what is left and
    leaves ``stream`` open.
    """

    def __init__(self, stream: Any, chunk: int = 1 << 20):
        self._stream = stream
        self._parts: list[bytes] = []
        self._size = 0
        self._chunk = chunk
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="replay-simulate-writer", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._parts.append(line)
        self._size += len(line)
        if self._size >= self._chunk:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(b"".join(self._parts))
        self._parts = []
        self._size = 0

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._stream.write(chunk)
                except BaseException as e:  # reported by the next write or close
                    self._error = e

    def close(self) -> None:
        if self._parts:
            self._queue.put(b"".join(self._parts))
            self._parts = []
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


# --- the scheduler's view of tasks and nodes ------------------------------

PENDING, PROCESSING, MEMORY, ERRED, RELEASED = "pending", "processing", "memory", "erred", "released"


class _Task:
    __slots__ = (
        "key", "index", "deps", "dependents", "waiting_on", "dependents_left",
        "nbytes", "restrictions", "state", "node", "run_id", "who_has", "owner",
        "fetchers", "erred_on", "closed",
    )

    def __init__(self, key: Any, index: int, nbytes: int, restrictions: dict | None):
        self.key = key
        self.index = index
        self.deps: list[_Task] = []
        self.dependents: list[_Task] = []
        self.waiting_on = 0  # dependencies not in memory yet
        self.dependents_left = 0  # dependents not finished yet
        self.nbytes = nbytes
        self.restrictions = restrictions
        self.state = PENDING
        self.node: Any = None  # where it is processing
        self.run_id = 0
        self.who_has: dict[str, None] = {}  # insertion-ordered: no hash order
        self.owner: str | None = None  # who computed it; never asked to drop it
        self.fetchers: dict[str, None] = {}  # workers asked to acquire a replica
        self.erred_on: Any = None
        self.closed = False  # no new task can depend on it


class _Worker:
    """A simulated worker: a real ``WorkerState`` and its recording session."""

    __slots__ = ("address", "ws", "session", "down", "up", "paused", "resources")
    alive = True

    def __init__(self, address: str, ws: wsm.WorkerState, session: Session):
        self.address = address
        self.ws = ws
        self.session = session
        self.down = 0.0  # the scheduler->worker stream is FIFO: last delivery time
        self.up = 0.0  # and so is worker->scheduler
        self.paused = False
        self.resources = dict(ws.total_resources)

    def has(self, key: Any) -> bool:
        return key in self.ws.data


class _Peer:
    """A virtual peer: computes what it is given and serves what it holds."""

    __slots__ = ("address", "keys", "processing", "alive")

    def __init__(self, address: str):
        self.address = address
        self.keys: dict[Any, None] = {}
        self.processing: dict[Any, _Task] = {}
        self.alive = True

    def has(self, key: Any) -> bool:
        return key in self.keys


# --- the simulation -----------------------------------------------------


class Simulation:
    """Real ``WorkerState`` objects driven by a seeded scheduler and peers.

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

    def __init__(
        self,
        writer: Any,
        *,
        seed: int,
        workers: int = 2,
        peers: int = 2,
        faults: Faults | None = None,
        window: int = 400,
    ):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if peers < 0 or window < 1:
            raise ValueError("peers must be >= 0 and window >= 1")
        # before the first TaskState exists; Session checks it as well
        make_deterministic()
        self.rng = rng = random.Random(seed)
        self.faults = faults if faults is not None else Faults()
        self.window = window
        self.max_live = 2 * window + 100
        self.now = 0.0
        self.steps = 0
        self.limit = 0
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self.counts: dict[str, int] = {}
        self.injected: dict[str, int] = {}

        # the graph
        self.prefixes = [f"{name}-{rng.getrandbits(32):08x}" for name in ("load", "map", "combine")]
        self.ring: list[_Task | None] = [None] * window
        self.next_index = 0
        self.by_key: dict[Any, _Task] = {}
        self.live = 0
        self.generated = self.finished = self.erred = self.released = 0
        self.last_progress = 0.0
        self.run_ids = itertools.count(1)
        self._free: dict[_Worker, list] = {}

        # the nodes
        self.workers: list[_Worker] = []
        self.nodes: dict[str, _Worker | _Peer] = {}
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
            session = Session(
                ws, writer=writer, clock=self.clock, pid=0, deterministic=True
            )
            w = _Worker(address, ws, session)
            self.workers.append(w)
            self.nodes[address] = w
        self.gpu_workers = [w for w in self.workers if w.resources]
        self.peers: list[_Peer] = []
        self._peer_ids = itertools.count()
        for _ in range(peers):
            self._new_peer()

        self._instruction: dict[type, Callable] = {
            wsm.Execute: self._on_execute,
            wsm.GatherDep: self._on_gather,
            wsm.RetryBusyWorkerLater: self._on_retry_later,
            wsm.TaskFinishedMsg: self._on_task_finished,
            wsm.TaskErredMsg: self._on_task_erred,
            wsm.ReleaseWorkerDataMsg: self._on_release_data,
            wsm.RescheduleMsg: self._on_reschedule,
            wsm.LongRunningMsg: self._on_long_running,
            wsm.AddKeysMsg: self._on_add_keys,
            wsm.RequestRefreshWhoHasMsg: self._on_request_refresh,
            wsm.StealResponseMsg: self._on_steal_response,
        }

    def clock(self) -> float:
        return EPOCH + self.now

    def _sid(self, prefix: str) -> str:
        return f"{prefix}-{EPOCH + self.now}"

    def _at(self, delay: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), fn, args))

    def _inject(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    # --- running --------------------------------------------------------

    def run(self, events: int) -> dict[str, Any]:
        """Handle exactly ``events`` stimuli (fewer only if the cluster stalls)."""
        self.limit = self.steps + events
        for w in self.workers:
            self._at(FIND_MISSING_PERIOD * (1 + self.rng.random()), self._find_missing, w)
        self._fill()
        heap = self._heap
        pop = heapq.heappop
        try:
            while heap:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
            raise Stalled(f"nothing left to do at step {self.steps}")
        except _Done:
            pass
        return self.summary()

    def close(self, reason: str = "simulation end") -> None:
        for w in self.workers:
            w.session.close(reason)

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.steps,
            "workers": {w.address: w.session.seq for w in self.workers},
            "event_counts": dict(sorted(self.counts.items())),
            "faults": dict(sorted(self.injected.items())),
            "tasks": self.generated,
            "finished": self.finished,
            "erred": self.erred,
            "released": self.released,
            "simulated_seconds": self.now,
        }

    def _stim(self, w: _Worker, ev: wsm.StateMachineEvent) -> None:
        if self.steps >= self.limit:
            raise _Done
        self.steps += 1
        name = type(ev).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        try:
            instructions = w.ws.handle_stimulus(ev)
        except Exception as e:
            raise SimulationError(
                f"worker {w.address} raised {e!r} at its step {w.session.seq} "
                f"({name}, stimulus {ev.stimulus_id})"
            ) from e
        table = self._instruction
        for inst in instructions:
            table[type(inst)](w, inst)

    def _to_worker(self, w: _Worker, ev: wsm.StateMachineEvent) -> None:
        # a batched stream: FIFO, a little latency
        t = max(self.now + 0.0002 + self.rng.random() * 0.0003, w.down)
        w.down = t
        heapq.heappush(self._heap, (t, next(self._seq), self._stim, (w, ev)))

    def _to_scheduler(self, w: _Worker, fn: Callable, *args: Any) -> None:
        t = max(self.now + 0.0002 + self.rng.random() * 0.0003, w.up)
        w.up = t
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    # --- the graph ------------------------------------------------------

    def _fill(self) -> None:
        while self.live < self.max_live:
            self._generate()

    def _generate(self) -> None:
        rng = self.rng
        i = self.next_index
        self.next_index += 1
        window = self.window
        slot = i % window
        old = self.ring[slot]
        if old is not None:  # it leaves the window: nothing new will depend on it
            old.closed = True
            self.ring[slot] = None
            self._maybe_release(old)

        r = rng.random()
        n = 0 if r < 0.2 or i == 0 else 1 if r < 0.55 else 2 if r < 0.8 else rng.randint(3, 5)
        deps: list[_Task] = []
        span = min(i, window)
        for _ in range(n):
            d = self.ring[(i - 1 - rng.randrange(span)) % window]
            if d is not None and d.state is not ERRED and d not in deps:
                deps.append(d)
        prefix = self.prefixes[min(len(deps), 2)]
        restrictions = {"GPU": 1.0} if self.gpu_workers and rng.random() < 0.03 else None
        t = _Task((prefix, i), i, rng.choice(NBYTES), restrictions)
        t.deps = deps
        for d in deps:
            d.dependents.append(t)
            d.dependents_left += 1
            if d.state is not MEMORY:
                t.waiting_on += 1
        self.ring[slot] = t
        self.by_key[t.key] = t
        self.live += 1
        self.generated += 1
        if not t.waiting_on:
            self._submit(t)

    def _submit(self, t: _Task, avoid: Any = None) -> None:
        """Place a task whose dependencies are all in memory, and send it."""
        rng = self.rng
        run_id = next(self.run_ids)
        t.run_id = run_id
        t.state = PROCESSING
        if t.restrictions:
            node: Any = self.gpu_workers[rng.randrange(len(self.gpu_workers))]
        elif self.peers and rng.random() < 0.3:
            node = self.peers[rng.randrange(len(self.peers))]
        else:
            node = self._pick_worker(t, avoid)
        t.node = node
        if type(node) is _Peer:
            node.processing[t.key] = t
            self._at(self._duration(), self._peer_done, node, t, run_id)
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
            stimulus_id=self._sid("compute-task"),
        )
        self._to_worker(node, ev)
        if rng.random() < self.faults.steal:
            self._at(rng.expovariate(500.0), self._try_steal, t, run_id)

    def _pick_worker(self, t: _Task, avoid: Any) -> _Worker:
        rng = self.rng
        candidates = [w for w in self.workers if w is not avoid and not w.paused]
        if not candidates:
            candidates = [w for w in self.workers if w is not avoid] or self.workers
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

    def _duration(self) -> float:
        return self.rng.expovariate(200.0)  # 5 ms on average

    def _memory(self, t: _Task, address: str) -> None:
        t.state = MEMORY
        t.node = None
        t.who_has[address] = None
        t.owner = address
        self.finished += 1
        self.last_progress = self.now
        for d in t.dependents:
            d.waiting_on -= 1
            if not d.waiting_on and d.state is PENDING:
                self._submit(d)
        self._dependents_done(t)
        self._maybe_release(t)
        f = self.faults
        rng = self.rng
        if t.state is MEMORY and rng.random() < f.replicate:
            self._replicate(t)
        if self.peers and rng.random() < f.retire:
            self._retire(self.peers[rng.randrange(len(self.peers))])
        self._flush_free()
        self._fill()
        self._flush_free()

    def _err(self, t: _Task, w: _Worker) -> None:
        t.state = ERRED
        t.node = None
        t.erred_on = w
        self.erred += 1
        self.last_progress = self.now
        stack = [t]
        while stack:  # dependents can never run now
            e = stack.pop()
            self._dependents_done(e)
            self._maybe_release(e)
            for d in e.dependents:
                if d.state is PENDING:
                    d.state = ERRED
                    self.erred += 1
                    stack.append(d)
        self._flush_free()
        self._fill()
        self._flush_free()

    def _dependents_done(self, t: _Task) -> None:
        for dep in t.deps:
            dep.dependents_left -= 1
            self._maybe_release(dep)

    def _maybe_release(self, t: _Task) -> None:
        if t.closed and not t.dependents_left and (t.state is MEMORY or t.state is ERRED):
            self._release(t)

    def _release(self, t: _Task) -> None:
        t.state = RELEASED
        del self.by_key[t.key]
        self.live -= 1
        self.released += 1
        key = t.key
        holders = dict(t.who_has)
        holders.update(t.fetchers)
        for address in holders:
            node = self.nodes[address]
            if type(node) is _Peer:
                node.keys.pop(key, None)
            else:
                self._free.setdefault(node, []).append(key)
        if t.erred_on is not None and t.erred_on.address not in holders:
            self._free.setdefault(t.erred_on, []).append(key)
        t.deps = t.dependents = []  # let the graph behind it go

    def _flush_free(self) -> None:
        if self._free:
            free, self._free = self._free, {}
            for w, keys in free.items():
                self._to_worker(w, wsm.FreeKeysEvent(keys=keys, stimulus_id=self._sid("free-keys")))

    # --- the scheduler's side of faults ---------------------------------

    def _try_steal(self, t: _Task, run_id: int) -> None:
        if t.state is PROCESSING and t.run_id == run_id and type(t.node) is _Worker:
            self._inject("steal")
            self._to_worker(t.node, wsm.StealRequestEvent(key=t.key, stimulus_id=self._sid("steal")))

    def _replicate(self, t: _Task) -> None:
        rng = self.rng
        targets = [w for w in self.workers if w.address not in t.who_has and w.address not in t.fetchers]
        if not targets:
            return
        w = targets[rng.randrange(len(targets))]
        t.fetchers[w.address] = None
        self._inject("replicate")
        self._to_worker(
            w,
            wsm.AcquireReplicasEvent(
                who_has={t.key: list(t.who_has)},
                nbytes={t.key: t.nbytes},
                stimulus_id=self._sid("acquire-replicas"),
            ),
        )

    def _retire(self, peer: _Peer) -> None:
        """Retire a virtual peer gracefully: its data and work move to a new one."""
        self._inject("retire")
        peer.alive = False
        self.peers.remove(peer)
        new = self._new_peer()
        for key in peer.keys:
            t = self.by_key[key]
            del t.who_has[peer.address]
            t.who_has[new.address] = None
            new.keys[key] = None
            if t.owner == peer.address:
                t.owner = new.address
        for t in list(peer.processing.values()):
            self._submit(t)
        peer.keys.clear()
        peer.processing.clear()
        for w in self.workers:
            self._to_worker(
                w, wsm.RemoveWorkerEvent(worker=peer.address, stimulus_id=self._sid("remove-worker"))
            )

    def _new_peer(self) -> _Peer:
        n = next(self._peer_ids)
        # peers share hosts with the workers: gathers prefer local peers
        host = n % len(self.workers) + 1
        peer = _Peer(f"tcp://10.0.0.{host}:{41000 + n}")
        self.peers.append(peer)
        self.nodes[peer.address] = peer
        return peer

    def _peer_done(self, peer: _Peer, t: _Task, run_id: int) -> None:
        if t.state is not PROCESSING or t.run_id != run_id or t.node is not peer:
            return
        del peer.processing[t.key]
        peer.keys[t.key] = None
        self._memory(t, peer.address)

    def _find_missing(self, w: _Worker) -> None:
        if self.now - self.last_progress > STALL_AFTER:
            raise Stalled(
                f"no task finished for {STALL_AFTER:g} simulated seconds "
                f"(step {self.steps}, {self.live} live tasks)"
            )
        self._stim(w, wsm.FindMissingEvent(stimulus_id=self._sid("find-missing")))
        self._at(FIND_MISSING_PERIOD, self._find_missing, w)

    # --- answering instructions (the worker's side) ---------------------

    def _on_execute(self, w: _Worker, inst: wsm.Execute) -> None:
        rng = self.rng
        f = self.faults
        key = inst.key
        run_id = w.ws.tasks[key].run_id  # read when the thread starts, as Worker.execute does
        duration = self._duration()
        r = rng.random()
        outcome = "fail" if r < f.fail else "reschedule" if r < f.fail + f.reschedule else "ok"
        if outcome == "ok" and rng.random() < f.secede:
            self._at(duration * 0.5, self._secede, w, key, duration * 0.5)
        self._at(duration, self._execute_done, w, key, run_id, outcome, self.now)

    def _secede(self, w: _Worker, key: Any, elapsed: float) -> None:
        self._inject("secede")
        self._stim(w, wsm.SecedeEvent(key=key, compute_duration=elapsed, stimulus_id=self._sid("secede")))

    def _execute_done(self, w: _Worker, key: Any, run_id: int, outcome: str, start: float) -> None:
        sid = self._sid("task-finished")
        if outcome == "ok":
            t = self.by_key.get(key)
            ev: wsm.StateMachineEvent = wsm.ExecuteSuccessEvent(
                key=key,
                run_id=run_id,
                value=None,
                start=EPOCH + start,
                stop=EPOCH + self.now,
                nbytes=t.nbytes if t is not None else NBYTES[1],
                type=None,
                stimulus_id=sid,
            )
        elif outcome == "fail":
            self._inject("fail")
            ev = wsm.ExecuteFailureEvent(
                key=key,
                run_id=run_id,
                start=EPOCH + start,
                stop=EPOCH + self.now,
                exception=Serialize(RuntimeError("simulated failure")),
                traceback=None,
                exception_text="RuntimeError('simulated failure')",
                traceback_text="",
                stimulus_id=sid,
            )
        else:
            self._inject("reschedule")
            ev = wsm.RescheduleEvent(key=key, stimulus_id=sid)
        self._stim(w, ev)
        if outcome == "ok" and not w.paused and self.rng.random() < self.faults.pause:
            self._pause(w)

    def _pause(self, w: _Worker) -> None:
        self._inject("pause")
        w.paused = True
        self._stim(w, wsm.PauseEvent(stimulus_id=self._sid("worker-status-change")))
        self._at(self.rng.expovariate(20.0), self._unpause, w)

    def _unpause(self, w: _Worker) -> None:
        w.paused = False
        self._stim(w, wsm.UnpauseEvent(stimulus_id=self._sid("worker-status-change")))

    def _on_gather(self, w: _Worker, inst: wsm.GatherDep) -> None:
        latency = 0.0005 + inst.total_nbytes / BANDWIDTH
        self._at(latency, self._gather_done, w, inst.worker, list(inst.to_gather), inst.total_nbytes)

    def _gather_done(self, w: _Worker, address: str, keys: list, total_nbytes: int) -> None:
        rng = self.rng
        f = self.faults
        peer = self.nodes[address]
        busy = f.peer_busy.get(address, f.busy) if f.peer_busy else f.busy
        r = rng.random()
        ev: wsm.StateMachineEvent
        if not peer.alive:
            ev = wsm.GatherDepNetworkFailureEvent(
                worker=address, total_nbytes=total_nbytes,
                stimulus_id=self._sid("gather-dep-network-failure"),
            )
        elif r < busy:
            self._inject("busy")
            ev = wsm.GatherDepBusyEvent(
                worker=address, total_nbytes=total_nbytes, stimulus_id=self._sid("gather-dep-busy")
            )
        elif r < busy + f.network:
            self._inject("network")
            ev = wsm.GatherDepNetworkFailureEvent(
                worker=address, total_nbytes=total_nbytes,
                stimulus_id=self._sid("gather-dep-network-failure"),
            )
        else:
            by_key = self.by_key
            data = {}
            for k in keys:
                if peer.has(k):
                    t = by_key.get(k)
                    data[k] = SizedValue(t.nbytes if t is not None else NBYTES[1])
            if data and rng.random() < f.missing:
                self._inject("missing")
                held = list(data)
                del data[held[rng.randrange(len(held))]]
            ev = wsm.GatherDepSuccessEvent(
                worker=address, total_nbytes=total_nbytes, data=data,
                stimulus_id=self._sid("gather-dep-success"),
            )
        self._stim(w, ev)

    def _on_retry_later(self, w: _Worker, inst: wsm.RetryBusyWorkerLater) -> None:
        self._at(BUSY_BACKOFF, self._retry_busy, w, inst.worker)

    def _retry_busy(self, w: _Worker, address: str) -> None:
        self._stim(w, wsm.RetryBusyWorkerEvent(worker=address, stimulus_id=self._sid("retry-busy-worker")))

    # messages to the scheduler: delivered in order, after a latency

    def _on_task_finished(self, w: _Worker, inst: wsm.TaskFinishedMsg) -> None:
        self._to_scheduler(w, self._task_finished, w, inst.key, inst.run_id)

    def _on_task_erred(self, w: _Worker, inst: wsm.TaskErredMsg) -> None:
        self._to_scheduler(w, self._task_erred, w, inst.key, inst.run_id)

    def _on_release_data(self, w: _Worker, inst: wsm.ReleaseWorkerDataMsg) -> None:
        self._to_scheduler(w, self._release_data, w, inst.key)

    def _on_reschedule(self, w: _Worker, inst: wsm.RescheduleMsg) -> None:
        self._to_scheduler(w, self._reschedule, w, inst.key)

    def _on_long_running(self, w: _Worker, inst: wsm.LongRunningMsg) -> None:
        pass  # the scheduler only stops counting the task's thread

    def _on_add_keys(self, w: _Worker, inst: wsm.AddKeysMsg) -> None:
        self._to_scheduler(w, self._add_keys, w, list(inst.keys))

    def _on_request_refresh(self, w: _Worker, inst: wsm.RequestRefreshWhoHasMsg) -> None:
        self._to_scheduler(w, self._refresh_who_has, w, list(inst.keys))

    def _on_steal_response(self, w: _Worker, inst: wsm.StealResponseMsg) -> None:
        self._to_scheduler(w, self._steal_response, w, inst.key, inst.state)

    # --- the scheduler's handlers ---------------------------------------

    def _task_finished(self, w: _Worker, key: Any, run_id: int) -> None:
        t = self.by_key.get(key)
        if t is None:
            return
        if t.state is PROCESSING and t.run_id == run_id and t.node is w:
            self._memory(t, w.address)
        elif t.state is MEMORY:
            t.who_has[w.address] = None

    def _task_erred(self, w: _Worker, key: Any, run_id: int) -> None:
        t = self.by_key.get(key)
        if t is not None and t.state is PROCESSING and t.run_id == run_id and t.node is w:
            self._err(t, w)

    def _release_data(self, w: _Worker, key: Any) -> None:
        t = self.by_key.get(key)
        if t is None:
            return
        t.who_has.pop(w.address, None)
        if t.state is MEMORY and not t.who_has:
            # the driver never drops the last replica; this would be its bug
            raise RuntimeError(f"simulated scheduler lost the last replica of {key!r}")

    def _reschedule(self, w: _Worker, key: Any) -> None:
        t = self.by_key.get(key)
        if t is not None and t.state is PROCESSING and t.node is w:
            self._submit(t, avoid=w)

    def _add_keys(self, w: _Worker, keys: list) -> None:
        f = self.faults
        redundant = []
        for key in keys:
            t = self.by_key.get(key)
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
                self._inject("drop")
                redundant.append(key)
        if redundant:
            self._to_worker(w, wsm.RemoveReplicasEvent(keys=redundant, stimulus_id=self._sid("remove-replicas")))

    def _refresh_who_has(self, w: _Worker, keys: list) -> None:
        by_key = self.by_key
        who_has = {}
        for key in keys:
            t = by_key.get(key)
            who_has[key] = list(t.who_has) if t is not None else []
        self._to_worker(w, wsm.RefreshWhoHasEvent(who_has=who_has, stimulus_id=self._sid("refresh-who-has")))

    def _steal_response(self, w: _Worker, key: Any, state: str | None) -> None:
        t = self.by_key.get(key)
        if (
            t is not None
            and t.state is PROCESSING
            and t.node is w
            and state in ("ready", "constrained", "waiting")
        ):
            self._submit(t, avoid=w)


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
