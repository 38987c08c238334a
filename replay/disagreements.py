"""Where the workers of one cluster log disagree about a key.

A hang is rarely one worker's fault. The question dask maintainers keep
asking of cluster dumps is whether two views agree: a worker fetching a key
from a peer whose own log shows it released it, or never held it; a worker
waiting on a peer whose log ended. Each :class:`Finding` names both sides:
the worker, its step and the task's state there; the peer, the step it had
reached at the same recorded time and the key's state there.

Recorded times of different hosts come from different clocks: a finding
between workers on two hosts says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rich.text import Text

from replay import render
from replay.literal import jsonable, key_text

#: states in which a peer can send a key
HOLDS = frozenset({"memory"})


@dataclass(slots=True)
class Finding:
    """One disagreement between a worker and a peer about a key."""

    #: "not held by the peer" or "peer gone"
    kind: str
    worker: str
    step: int
    key: Any
    #: the task's state on ``worker`` (flight or fetch)
    state: str
    peer: str
    #: the peer's last step at the worker's recorded time, and the key's state
    #: there (None: the peer had no such task, never or no more)
    peer_step: int
    peer_state: Optional[str]
    #: the two workers' clocks are different hosts'
    other_host: bool

    def text(self) -> str:
        held = f"was {self.peer_state}" if self.peer_state else "had no such task (never held, or forgotten)"
        what = "fetches" if self.state == "fetch" else "waits for a transfer of"
        if self.kind == "peer gone":
            out = (f"{self.worker} (step {self.step}, {self.state}) {what} {key_text(self.key)} from "
                   f"{self.peer}, whose log ended at step {self.peer_step}")
        else:
            out = (f"{self.worker} (step {self.step}, {self.state}) {what} {key_text(self.key)} from "
                   f"{self.peer}, where at that time (step {self.peer_step}) it {held}")
        if self.other_host:
            out += "; the two hosts' clocks may differ"
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "worker": self.worker, "step": self.step, "key": jsonable(self.key),
                "state": self.state, "peer": self.peer, "peer_step": self.peer_step,
                "peer_state": self.peer_state, "other_host": self.other_host, "text": self.text()}

    def __rich__(self) -> Text:
        return Text.assemble(("disagreement: ", "bold red"), render.safe(self.text()))


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0]


def find(workers: list, at: dict[str, int]) -> list[Finding]:
    """Disagreements of ``workers`` (:class:`~replay.source.WorkerAnswers` of
    one log, whatever answers them), each worker at the step ``at`` gives it
    (by address)."""
    if len(workers) < 2:
        return []
    by_address = {w.address: w for w in workers}
    #: (peer, step) -> key -> state, each peer's state read once per step
    held: dict[tuple[str, int], dict[Any, str]] = {}
    out: list[Finding] = []
    for address, step in at.items():
        w = by_address[address]
        if step == 0:
            continue
        view = w.state(step, states=("flight", "fetch"), detail=True)
        now = view.handled
        for row in sorted(view.tasks, key=lambda row: repr(row.key)):
            detail = row.detail or {}
            peers = [detail.get("coming_from")] if row.state == "flight" else list(detail.get("who_has", ()))
            for peer in peers:
                p = by_address.get(peer)
                if p is None or p is w:
                    continue  # a peer this log did not record: nothing to compare with
                other_host = _host(peer) != _host(address)
                last = p.last_handled
                if p.ended and last is not None and now is not None and last < now:
                    out.append(Finding("peer gone", address, step, row.key, row.state, peer, p.events, None,
                                       other_host))
                    continue
                peer_step = p.step_at_time(now)
                states = held.get((peer, peer_step))
                if states is None:
                    states = held[(peer, peer_step)] = {t.key: t.state for t in p.state(peer_step).tasks}
                state = states.get(row.key)
                if state not in HOLDS:
                    out.append(Finding("not held by the peer", address, step, row.key, row.state, peer,
                                       peer_step, state, other_host))
    return out
