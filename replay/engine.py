"""The replay engine: a fresh, real ``WorkerState`` fed a worker's recorded steps.

Pure and synchronous, like the state machine it drives: it takes decoded log
records and returns plain data. Reading files, choosing workers and printing
happen elsewhere.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.config
from distributed import worker_state_machine as wsm
from distributed.comm import get_address_host as _get_address_host

from replay.determinism import hash_seed, is_deterministic, make_deterministic
from schemas.codec import decode_float
from schemas.convert import comparable, decode_event, encode_instruction


def _offline_address_host(address: str) -> str:
    # The inproc backend checks that the address belongs to this process;
    # a replay runs elsewhere. Its host part is the recorded machine's IP.
    if address.startswith("inproc://"):
        return address[len("inproc://"):].split("/", 1)[0]
    return _get_address_host(address)


wsm.get_address_host = _offline_address_host


def _resources(d: dict) -> dict[str, float]:
    return {k: decode_float(v) for k, v in d.items()}


@dataclass
class Divergence:
    """The first step whose replay does not match the recording."""

    seq: int
    stimulus_id: str
    #: "instructions", "error" (replay raised, recording did not, or the other
    #: way round) or "invariant" (``validate_state`` failed)
    kind: str
    expected: Any
    actual: Any
    key: Any = None
    story: list = field(default_factory=list)


class ReplayError(Exception):
    """A log cannot be replayed (e.g. the recording did not start from the empty state)."""


class Replayer:
    """One worker's state machine, advanced one recorded step at a time.

    Parameters
    ----------
    header:
        The worker's header record.
    validate:
        Build the ``WorkerState`` with ``validate=True`` and run
        ``validate_state()`` after every step; default: as recorded.
    """

    def __init__(
        self,
        header: dict,
        *,
        validate: bool | None = None,
        check_invariants: bool = False,
        tap_log: bool = False,
    ):
        if not header.get("from_empty", True):
            raise ReplayError(
                f"worker {header.get('worker')} was recorded from a state that already "
                f"held {header.get('initial_tasks')} tasks; it cannot be replayed"
            )
        self.header = header
        self.warnings: list[str] = []
        if header.get("deterministic"):
            if not make_deterministic():
                self.warnings.append(
                    "TaskState objects already exist in this process; replay may differ"
                )
            if header.get("hash_seed") != hash_seed():
                self.warnings.append(
                    f"recorded with PYTHONHASHSEED={header.get('hash_seed')}, replaying with "
                    f"{hash_seed() or 'a random seed'}; replay may differ"
                )
        else:
            self.warnings.append(
                "recorded without deterministic mode; replay may depart from the recording"
            )
        s = header["state"]
        self.check_invariants = check_invariants
        with dask.config.set(
            {
                "distributed.admin.low-level-log-length": s["log_length"],
                "distributed.scheduler.default-data-size": s["default_data_size"],
            }
        ):
            # read once and cached by the state machine: prime it with the recorded value
            wsm._default_data_size.cache_clear()
            wsm._default_data_size()
            self.ws = wsm.WorkerState(
                nthreads=s["nthreads"],
                address=header["worker"],
                resources=_resources(s["resources"]),
                transfer_incoming_count_limit=s["transfer_incoming_count_limit"],
                validate=s["validate"] if validate is None else validate,
                transition_counter_max=s["transition_counter_max"],
                transfer_incoming_bytes_limit=decode_float(s["transfer_incoming_bytes_limit"]),
                transfer_message_bytes_limit=decode_float(s["transfer_message_bytes_limit"]),
            )
        #: the last step applied, and its stimulus id ("" for the empty state)
        self.seq = 0
        self.stimulus_id = ""
        #: ``ws.log`` entries the last call appended (with ``tap_log``): the
        #: worker's own log is capped, stories must not be
        self.new_log: list[tuple] = []
        if tap_log:
            self.ws.log = _TapDeque(self.new_log, maxlen=self.ws.log.maxlen)
        self.deterministic = bool(header.get("deterministic")) and is_deterministic()

    def set_resources(self, rec: dict) -> None:
        """A recorded ``Worker.set_resources`` change, which bypasses ``handle_stimulus``."""
        ws = self.ws
        ws.total_resources.clear()
        ws.total_resources.update(_resources(rec["total"]))
        ws.available_resources.clear()
        ws.available_resources.update(_resources(rec["available"]))

    def handle(self, events: Sequence[wsm.StateMachineEvent]) -> list[wsm.Instruction]:
        """Feed one recorded call of ``handle_stimulus`` (usually one event)."""
        self.new_log.clear()
        self.stimulus_id = events[-1].stimulus_id
        instructions = self.ws.handle_stimulus(*events)
        self.seq += len(events)
        return instructions

    def verify(
        self, steps: Sequence[dict], events: Sequence[wsm.StateMachineEvent] | None = None
    ) -> Divergence | None:
        """Replay one recorded call and compare it with what the worker did."""
        last = steps[-1]
        seq = last["seq"]
        sid = last["event"]["stimulus_id"]
        if events is None:
            events = [decode_event(r["event"]) for r in steps]
        recorded_error = last.get("error")
        try:
            instructions = self.handle(events)
        except Exception as e:
            self.seq = seq
            if recorded_error is not None:
                return None
            key, story = _key_story(self.ws, e)
            return Divergence(seq, sid, "error", None, _describe(e, key), key, story)
        if recorded_error is not None:
            return Divergence(seq, sid, "error", recorded_error, None)
        expected = [comparable(d) for d in last.get("instructions") or ()]
        actual = [comparable(encode_instruction(i)) for i in instructions]
        if expected != actual:
            return Divergence(seq, sid, "instructions", expected, actual)
        if self.check_invariants:
            try:
                self.ws.validate_state()
            except Exception as e:
                key, story = _key_story(self.ws, e)
                return Divergence(seq, sid, "invariant", None, _describe(e, key), key, story)
        return None


class _TapDeque(deque):
    """``ws.log`` that also hands every entry to a list."""

    __slots__ = ("tap",)

    def __init__(self, tap: list, maxlen: int | None):
        super().__init__(maxlen=maxlen)
        self.tap = tap

    def append(self, entry: tuple) -> None:
        super().append(entry)
        self.tap.append(entry)


def _describe(e: BaseException, key: Any = None) -> str:
    name = type(e).__name__
    detail = e.args[0] if e.args else ""
    if isinstance(detail, list):  # validate_state's asserts carry a story
        return f"{name}: validate_state() fails for {key!r}"
    text = str(e)
    if len(text) > 500:
        text = text[:500] + "…"
    return f"{name}: {text}" if text else name


def _key_story(ws: wsm.WorkerState, e: BaseException) -> tuple[Any, list]:
    """The key an exception is about, and its story with its dependents'."""
    key = getattr(e, "key", None)
    if key is None:
        key = _story_key(ws, e) if isinstance(e, AssertionError) else None
    if key is None:
        key = _broken_task(ws)
    if key is None:
        return None, []
    ts = ws.tasks.get(key)
    dependents = [d.key for d in ts.dependents] if ts is not None else []
    return key, ws.story(key, *dependents)


def _story_key(ws: wsm.WorkerState, e: AssertionError) -> Any:
    # validate_state's asserts carry ws.story(ts) as their message
    story = e.args[0] if e.args else None
    if isinstance(story, list):
        for entry in story:
            if isinstance(entry, tuple) and entry and _is_task(ws, entry[0]):
                return entry[0]
    return None


def _is_task(ws: wsm.WorkerState, key: Any) -> bool:
    try:
        return key in ws.tasks
    except TypeError:  # unhashable
        return False


def _broken_task(ws: wsm.WorkerState) -> Any:
    for key, ts in ws.tasks.items():
        try:
            ws.validate_task(ts)
        except Exception:
            return key
    return None
