"""The rolling random task graph: its tasks, the window, and when a key can go."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

#: a task's states, as the simulated scheduler sees them; compared with ``is``
PENDING, PROCESSING, MEMORY, ERRED, RELEASED = "pending", "processing", "memory", "erred", "released"
#: the sizes a task's output may have, in bytes
NBYTES = (64, 800, 8_000, 80_000, 800_000, 8_000_000)


@dataclass(slots=True, eq=False)
class SimTask:
    """A task as the simulated scheduler sees it.

    Equal only to itself: tasks reference each other both ways.
    """

    #: ``(prefix, index)``; the prefix says how many dependencies it has (0, 1, more)
    key: tuple[str, int]
    #: its place in generation order; also its priority on the workers
    index: int
    #: the size of its output, the same in every replica
    nbytes: int
    #: ``{"GPU": 1.0}`` or None; only a worker with the resource may run it
    restrictions: dict[str, float] | None
    #: distinct dependencies; emptied once the task is released
    deps: list[SimTask] = field(default_factory=list)
    #: the tasks depending on it, in generation order; emptied once it is released
    dependents: list[SimTask] = field(default_factory=list)
    #: dependencies not in memory yet; it is submitted when this reaches 0
    waiting_on: int = 0
    #: dependents neither in memory nor erred yet; the key stays while this is > 0
    dependents_left: int = 0
    #: one of PENDING, PROCESSING, MEMORY, ERRED, RELEASED
    state: str = PENDING
    #: the worker or peer it is processing on, while PROCESSING; else None
    node: Any = None
    #: the run_id of its latest submission; answers about older ones are stale
    run_id: int = 0
    #: the addresses holding a replica, in the order they got it (no hash order)
    who_has: dict[str, None] = field(default_factory=dict)
    #: the address that computed it; the scheduler never drops that replica
    owner: str | None = None
    #: workers asked to acquire a replica that have not reported it yet
    fetchers: dict[str, None] = field(default_factory=dict)
    #: the worker its execution failed on, which keeps the key until released
    erred_on: Any = None
    #: out of the window: no new task can depend on it
    closed: bool = False


@dataclass(slots=True, eq=False)
class TaskGraph:
    """A random DAG generated one task at a time, over a rolling window.

    A new task depends only on tasks among the last ``window`` ones. A key is
    released once it left the window and each of its dependents is in memory
    or erred: nothing can need it any more. So at most :attr:`max_live` tasks
    are live at once, however long the run.

    The graph keeps the tasks' states; placing tasks, and telling nodes to
    drop keys (:attr:`on_release`), is the scheduler's business.
    """

    #: the run's one random stream; the graph draws its shape from it
    rng: random.Random
    #: how far back a new task may pick its dependencies
    window: int
    #: whether some worker has the resource a task may be restricted to
    restricted: bool = False
    #: called with each task released, before it lets its edges go
    on_release: Callable[[SimTask], None] = lambda t: None
    #: the graph keeps generating while fewer tasks are live
    max_live: int = field(init=False)
    #: the key prefixes of tasks with 0, 1 and more dependencies, unique per seed
    prefixes: list[str] = field(init=False)
    #: the window: task ``i`` is at ``ring[i % window]`` until task ``i + window`` comes
    ring: list[SimTask | None] = field(init=False)
    #: the index of the next task
    next_index: int = 0
    #: every live task, i.e. not released yet
    by_key: dict[tuple[str, int], SimTask] = field(default_factory=dict)
    #: ``len(by_key)``
    live: int = 0
    #: counts of tasks generated, finished (in memory), erred and released
    generated: int = 0
    finished: int = 0
    erred: int = 0
    released: int = 0

    def __post_init__(self) -> None:
        self.max_live = 2 * self.window + 100
        self.prefixes = [f"{name}-{self.rng.getrandbits(32):08x}" for name in ("load", "map", "combine")]
        self.ring = [None] * self.window

    def generate(self) -> SimTask:
        """Add the next task. It pushes the oldest task out of the window."""
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
        deps: list[SimTask] = []
        span = min(i, window)
        for _ in range(n):
            d = self.ring[(i - 1 - rng.randrange(span)) % window]
            if d is not None and d.state is not ERRED and d not in deps:
                deps.append(d)
        prefix = self.prefixes[min(len(deps), 2)]
        restrictions = {"GPU": 1.0} if self.restricted and rng.random() < 0.03 else None
        t = SimTask((prefix, i), i, rng.choice(NBYTES), restrictions)
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
        return t

    def in_memory(self, t: SimTask, address: str) -> list[SimTask]:
        """``t``'s output is on ``address``, which computed it.

        Returns the dependents now ready to run. Call :meth:`settle` once they
        are submitted.
        """
        t.state = MEMORY
        t.node = None
        t.who_has[address] = None
        t.owner = address
        self.finished += 1
        ready = []
        for d in t.dependents:
            d.waiting_on -= 1
            if not d.waiting_on and d.state is PENDING:
                ready.append(d)
        return ready

    def settle(self, t: SimTask) -> None:
        """``t`` is in memory: its dependencies have one dependent fewer to wait for."""
        self._dependents_done(t)
        self._maybe_release(t)

    def err(self, t: SimTask, node: Any) -> None:
        """``t`` failed on ``node``; no dependent of it can run now: they err too."""
        t.state = ERRED
        t.node = None
        t.erred_on = node
        self.erred += 1
        stack = [t]
        while stack:
            e = stack.pop()
            self._dependents_done(e)
            self._maybe_release(e)
            for d in e.dependents:
                if d.state is PENDING:
                    d.state = ERRED
                    self.erred += 1
                    stack.append(d)

    def _dependents_done(self, t: SimTask) -> None:
        for dep in t.deps:
            dep.dependents_left -= 1
            self._maybe_release(dep)

    def _maybe_release(self, t: SimTask) -> None:
        if t.closed and not t.dependents_left and (t.state is MEMORY or t.state is ERRED):
            self._release(t)

    def _release(self, t: SimTask) -> None:
        t.state = RELEASED
        del self.by_key[t.key]
        self.live -= 1
        self.released += 1
        self.on_release(t)
        t.deps = t.dependents = []  # let the graph behind it go
