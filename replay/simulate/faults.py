"""Which faults a simulated run injects, how often, and how many it did."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True, slots=True)
class Faults:
    """How often each fault happens, as a probability per occasion.

    Each fault is a stimulus a live cluster can send, or an answer it can
    give; the occasion is named with each rate.
    """

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


@dataclass(slots=True, eq=False)
class Injector:
    """The fault rates in force, and how many faults of each kind were injected.

    The scheduler and the nodes share one, so that rates replaced between
    events ("what if this peer were busy") reach both at once.
    """

    #: the rates in force; may be replaced between events
    faults: Faults
    #: fault name -> times injected; a name is present once it happened
    injected: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1
