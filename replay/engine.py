"""The replay engine: a fresh, real ``WorkerState`` fed a worker's recorded calls.

Pure and synchronous, like the state machine it drives: it takes
:class:`~replay.reader.RecordedCall` objects and returns plain data. Reading
files, choosing workers and printing happen elsewhere.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import dask.config
import distributed
from dask.sizeof import sizeof as dask_sizeof
from distributed import worker_state_machine as wsm
from distributed.comm import get_address_host as _get_address_host

from replay.collector import rare_collections
from replay.determinism import is_deterministic, prepare_replay
from replay.errors import ReplayError
from replay.reader import Progress, RecordedCall
from replay.segments import kept_from
from replay.snapshot import restore
from schemas.codec import decode_float, decode_key, decode_resources, decode_settings
from schemas.convert import SizedValue, comparable, encode_instruction


@dask_sizeof.register(SizedValue)
def _sizeof_sized(v: SizedValue) -> int:
    return v.nbytes


def _offline_address_host(address: str) -> str:
    # The inproc backend checks that the address belongs to this process;
    # a replay runs elsewhere. Its host part is the recorded machine's IP.
    if address.startswith("inproc://"):
        return address[len("inproc://"):].split("/", 1)[0]
    return _get_address_host(address)


@contextlib.contextmanager
def offline_addresses() -> Iterator[None]:
    """Let the state machine read the host of recorded ``inproc://`` addresses.

    The state machine prefers peers on its own host, and asks
    ``get_address_host``, which refuses an inproc address of another process.
    Installed only while a replay handles a call, never at import.
    """
    real = wsm.get_address_host
    wsm.get_address_host = _offline_address_host
    try:
        yield
    finally:
        wsm.get_address_host = real


class StoreRaised(Exception):
    """What storing a value in the recorded worker's data raised, raised again
    for the same key by a replay's data (:class:`RecordedData`): its ``repr``
    is the recorded ``exception_text``, which dask puts in ``TaskErredMsg``."""

    def __str__(self) -> str:
        # never long: dask would otherwise rebuild it as a "Long error message"
        return "raised as recorded"

    def __repr__(self) -> str:
        return self.args[0]


class RecordedData(dict):
    """A replay's ``ws.data``: a dict that raises for a key what storing its
    value raised in the recorded worker, on the call where it did."""

    __slots__ = ("raising",)

    def __init__(self) -> None:
        super().__init__()
        #: key -> exception, armed for one call
        self.raising: dict[Any, StoreRaised] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.raising and key in self.raising:
            raise self.raising.pop(key)
        dict.__setitem__(self, key, value)


#: what verify compares, said when a difference has no known cause
COMPARED = (
    "every instruction of every step, field by field (threads, result types, "
    "timings and the traceback of a failed data store are not compared)"
)


class state_machine_clock:
    """Within ``with``: ``clock`` answers the state machine's own ``time()`` reads.

    ``WorkerState`` reads the wall clock itself: ``_put_key_in_memory`` times
    storing a value and, past 5 ms (a GC pause, a busy box), adds a
    ``disk-write`` to the task's ``startstops``, which ``TaskFinishedMsg``
    carries. A replay answers the recorded time of each call, a simulation
    its simulated clock, so neither depends on how loaded the machine is.
    A class, not a generator: a replay enters it once per call.
    """

    __slots__ = ("clock", "_real")

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock

    def __enter__(self) -> None:
        self._real, wsm.time = wsm.time, self.clock

    def __exit__(self, *exc: object) -> None:
        wsm.time = self._real


class _RecordedClock:
    """``time()`` for the state machine while a recorded call is replayed:
    the time the recorded worker handled it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now: float = 0.0

    def __call__(self) -> float:
        return self.now


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
    #: what replay raised (kinds "error" and "invariant"), for where it failed
    exception: Optional[BaseException] = field(default=None, repr=False, compare=False)
    #: why the replay may differ without the log being wrong: "state changed
    #: outside handle_stimulus before step N", or "behaviour change between
    #: distributed A and B" (recorded with A, replayed under B); None: the
    #: replay should have matched
    cause: Optional[str] = None

    def explanation(self) -> str:
        """The cause, or what was compared and that no cause is known."""
        if self.cause:
            return self.cause
        return (f"no cause known: verify compared {COMPARED}, and nothing recorded "
                "(an outside change, another release of distributed) explains the difference")


@dataclass(slots=True)
class Applied:
    """What replaying one recorded call did."""

    call: RecordedCall
    #: what ``handle_stimulus`` returned; empty if it raised
    instructions: list[wsm.Instruction]
    #: the exception it raised, where the recorded call raised too
    exception: Optional[BaseException] = None
    #: ``ws.log`` entries the call appended, uncapped (with ``tap_log``;
    #: empty without); valid until the next call is applied
    log: Sequence[tuple] = ()
    #: of a batch, where each event's instructions and log entries end:
    #: ``(len(instructions), len(log))`` after each event; None for one event
    ends: Optional[list[tuple[int, int]]] = None

    def steps(self) -> Iterator[StepDone]:
        """Each event of the call with the instructions and log entries it
        caused, in the order the state machine handled them."""
        call = self.call
        records = call.records
        if self.ends is None:
            yield StepDone(call.first, call.events[0], records[0] if records else None,
                           self.instructions, self.log)
            return
        i0 = l0 = 0
        for n, (i1, l1) in enumerate(self.ends):
            yield StepDone(call.first + n, call.events[n], records[n] if records else None,
                           self.instructions[i0:i1], self.log[l0:l1])
            i0, l0 = i1, l1
        for n in range(len(self.ends), len(call.events)):
            # the call raised before handling these: they did nothing
            yield StepDone(call.first + n, call.events[n], records[n] if records else None, [], ())


@dataclass(slots=True)
class StepDone:
    """One step of an :class:`Applied` call: an event and what it caused."""

    step: int
    event: wsm.StateMachineEvent
    #: the step record as read (with ``records=True``)
    record: Optional[dict]
    instructions: list[wsm.Instruction]
    log: Sequence[tuple]


#: the log of an untapped call: nothing to hand out
_UNTAPPED: tuple = ()


class Replayer:
    """One worker's state machine, advanced one recorded call at a time.

    Parameters
    ----------
    header:
        The worker's header record.
    validate:
        Build the ``WorkerState`` with ``validate=True``; default: as recorded.
    check_invariants:
        :meth:`verify` also runs ``validate_state()`` after every call.
    tap_log:
        Hand every ``ws.log`` entry a call appends to :attr:`Applied.log`: the
        worker's own log is capped, stories must not be.
    follow_recording:
        Compare each call's instructions with the recorded ones, as
        :meth:`verify` does, and keep the first difference in
        :attr:`departed`: views of later steps then come from a replay that
        departed from the recording there.
    """

    def __init__(
        self,
        header: dict,
        *,
        validate: bool | None = None,
        check_invariants: bool = False,
        tap_log: bool = False,
        follow_recording: bool = False,
    ):
        if header.get("history") == "partial":
            raise ReplayError(
                f"worker {header.get('worker')}: history partial ({header.get('history_reason')}): "
                "it cannot be replayed from the empty state"
            )
        #: where a segment of a bounded recording starts (:mod:`replay.snapshot`)
        snapshot = header.get("snapshot")
        if not header.get("from_empty", True) and snapshot is None:
            raise ReplayError(
                f"worker {header.get('worker')} was recorded from a state that already "
                f"held {header.get('initial_tasks')} tasks; it cannot be replayed"
            )
        self.header = header
        #: why this replay may depart from the recording (empty: it is exact)
        self.warnings: list[str] = prepare_replay(header)
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
                # a worker named before it had an address started without one
                address=header.get("address", header["worker"]),
                data=RecordedData(),
                resources=decode_resources(s["resources"]),
                transfer_incoming_count_limit=s["transfer_incoming_count_limit"],
                validate=s["validate"] if validate is None else validate,
                transition_counter_max=s["transition_counter_max"],
                transfer_incoming_bytes_limit=decode_float(s["transfer_incoming_bytes_limit"]),
                transfer_message_bytes_limit=decode_float(s["transfer_message_bytes_limit"]),
            )
        #: an explicit ``validate`` outlasts the recorded one's later changes
        self._validate = validate
        threshold = s.get("transfer_incoming_bytes_throttle_threshold")
        if threshold is not None:  # older logs: the constructor's default
            self.set_settings(decode_settings({"transfer_incoming_bytes_throttle_threshold": threshold}))
        if snapshot is not None:
            restore(self.ws, snapshot)
            self.warnings.append(kept_from(header))
            if validate is not None:
                self.ws.validate = validate
        #: the first step before which the recording noted task state changed
        #: outside ``handle_stimulus`` (a test assigning it): replay cannot follow
        self.outside_before: int | None = None
        #: the last step applied, its stimulus id ("" for the empty state) and
        #: when the recorded worker handled it (None for the empty state)
        self.seq = 0 if snapshot is None else snapshot["seq"]
        self.stimulus_id = ""
        self.handled: float | None = None if snapshot is None else snapshot["handled"]
        self._tap: list[tuple] | None = None
        if tap_log:
            self._tap = []
            self.ws.log = _TapDeque(self._tap, maxlen=self.ws.log.maxlen)
        #: the worker's data (checked before every call for stores armed to raise)
        self._data: RecordedData = self.ws.data
        self._clock = _RecordedClock()
        self._recorded_time = state_machine_clock(self._clock)
        #: ``handle_stimulus``, with offline addresses for an inproc recording
        self._handle = self.ws.handle_stimulus
        if header["worker"].startswith("inproc://"):
            self._handle = self._handle_offline
        self.deterministic = bool(header.get("deterministic")) and is_deterministic()
        self.follow_recording = follow_recording
        #: with ``follow_recording``: the first step whose replay did not
        #: match the recording (its cause set as :meth:`verify` sets it)
        self.departed: Divergence | None = None

    def set_resources(self, total: dict[str, float], available: dict[str, float]) -> None:
        """A recorded ``Worker.set_resources`` change, which bypasses ``handle_stimulus``."""
        ws = self.ws
        ws.total_resources.clear()
        ws.total_resources.update(total)
        ws.available_resources.clear()
        ws.available_resources.update(available)

    def set_settings(self, settings: dict[str, Any]) -> None:
        """Recorded ``WorkerState`` attributes assigned between two stimuli."""
        for name, value in settings.items():
            if name == "validate" and self._validate is not None:
                continue
            setattr(self.ws, name, value)

    def cause(self) -> str | None:
        """Why a divergence found now need not mean a wrong log (see
        :attr:`Divergence.cause`)."""
        if self.outside_before is not None:
            return f"state changed outside handle_stimulus before step {self.outside_before}"
        recorded = self.header.get("distributed")
        if recorded != distributed.__version__:
            return f"behaviour change between distributed {recorded} and {distributed.__version__}"
        snapshot = self.header.get("snapshot")
        if snapshot is not None:
            # every later step follows from the rebuilt state: a bounded
            # recording's replay departs only where that rebuild did
            return (f"inexact from the snapshot at step {snapshot['seq']:,}: the WorkerState rebuilt "
                    "from it departs from the recorded one")
        return None

    def apply(self, call: RecordedCall) -> Applied:
        """Replay one recorded call: its resource changes, then its events.

        Returns the instructions, or the exception where the recorded call
        raised too. A crash the recording did not have is a
        :class:`~replay.errors.ReplayError` whose ``__cause__`` is the crash.
        """
        if call.resources or call.store_failed or self._data.raising:
            self._before(call)
        if not self.follow_recording or self.departed is not None or call.cut:
            # (a cut call: the recorded result is the whole call's, not comparable)
            return self._apply(call)
        try:
            applied = self._apply(call)
        except ReplayError as crash:
            self.departed = self._crashed(call, crash)
            self.departed.cause = self.cause()
            raise
        d = self._compare(call, applied)
        if d is not None:
            d.cause = self.cause()
            self.departed = d
        return applied

    def _before(self, call: RecordedCall) -> None:
        """What the recording says happened before the call, or during it
        outside the state machine: resource and setting changes, the address
        assigned, the data stores that raise."""
        for change in call.resources:
            self.set_resources(change[0], change[1])
            if len(change) > 2:  # (total, available, settings, outside[, address])
                if change[2]:
                    self.set_settings(change[2])
                if change[3] and self.outside_before is None:
                    self.outside_before = call.first
                if len(change) > 4 and change[4] is not None:
                    self._set_address(change[4])
        data = self.ws.data
        if call.store_failed:
            data.raising = {key: StoreRaised(text) for key, text, _ in call.store_failed}
        elif data.raising:  # a recorded failure this replay did not meet
            data.raising = {}

    def _set_address(self, address: str) -> None:
        """The address a worker named before it had one got later
        (``Worker.start_unsafe`` assigns it)."""
        self.ws.address = address
        if address.startswith("inproc://"):
            self._handle = self._handle_offline

    def _apply(self, call: RecordedCall) -> Applied:
        tap = self._tap
        if tap is not None:
            tap.clear()
        log = tap if tap is not None else _UNTAPPED
        events = call.events
        self.seq = call.first + len(events) - 1
        self.stimulus_id = events[-1].stimulus_id
        self.handled = call.handled
        # the state machine's own time() reads answer the recorded time: a
        # store slower than 5 ms here (a busy box) would otherwise add a
        # "disk-write" of this machine's clock to the replayed instructions
        self._clock.now = call.handled
        with self._recorded_time:
            if len(events) > 1:
                return self._apply_batch(call, log)
            try:
                return Applied(call, self._handle(events[0]), None, log)
            except Exception as e:
                return self._raised(call, e, log)

    def _apply_batch(self, call: RecordedCall, log: Sequence[tuple]) -> Applied:
        # handle_stimulus(a, b) is handle_stimulus(a) then handle_stimulus(b),
        # their instructions concatenated: one event at a time gives every
        # step of a batch its own transitions and instructions
        instructions: list[wsm.Instruction] = []
        ends: list[tuple[int, int]] = []
        try:
            for event in call.events:
                instructions += self._handle(event)
                ends.append((len(instructions), len(log)))
        except Exception as e:
            applied = self._raised(call, e, log, call.first + len(ends))
            applied.ends = ends
            return applied
        return Applied(call, instructions, None, log, ends)

    def _raised(self, call: RecordedCall, e: Exception, log: Sequence[tuple], step: int | None = None) -> Applied:
        if call.error is None:
            raise ReplayError(
                f"step {call.last if step is None else step} ({call.stimulus_id}) of {self.header['worker']}: the "
                f"state machine raised {type(e).__name__}: {_first_line(e)} where the "
                "recorded worker did not; run `replay verify --validate` to find where "
                "the state went wrong"
                + (f" (state changed outside handle_stimulus before step {self.outside_before})"
                   if self.outside_before is not None else ""),
                step=call.first if step is None else step,
            ) from e
        # a call that raises returns nothing, as in the recorded worker
        return Applied(call, [], e, log)

    def _handle_offline(self, *events: wsm.StateMachineEvent) -> list[wsm.Instruction]:
        with offline_addresses():
            return self.ws.handle_stimulus(*events)

    def feed(self, calls: Iterable[RecordedCall], progress: Progress | None = None) -> Iterator[Applied]:
        """Apply ``calls`` in order, yielding what each did: the one replay loop."""
        with rare_collections():
            for call in calls:
                applied = self.apply(call)
                if progress is not None:
                    progress(self.seq)
                yield applied

    def run(self, calls: Iterable[RecordedCall], progress: Progress | None = None) -> Replayer:
        """Apply ``calls`` in order; returns this replayer."""
        for _ in self.feed(calls, progress):
            pass
        return self

    def verify(self, call: RecordedCall) -> Divergence | None:
        """Replay one recorded call and compare it with what the worker did."""
        self._before(call)
        try:
            applied = self._apply(call)
        except ReplayError as crash:
            d = self._crashed(call, crash)
        else:
            d = self._compare(call, applied)
        if d is not None:
            d.cause = self.cause()
        return d

    def _crashed(self, call: RecordedCall, crash: ReplayError) -> Divergence:
        e = crash.__cause__
        key, story = _key_story(self.ws, e)
        return Divergence(call.last, call.stimulus_id, "error", None, _describe(e, key), key, story, e)

    def _compare(self, call: RecordedCall, applied: Applied) -> Divergence | None:
        seq, sid = call.last, call.stimulus_id
        d = differing_instructions(call, applied)
        if d is not None or applied.exception is not None:
            return d
        if self.check_invariants:
            try:
                self.ws.validate_state()
            except Exception as e:  # whatever validation raises, the state is broken
                key, story = _key_story(self.ws, e)
                return Divergence(seq, sid, "invariant", None, _describe(e, key), key, story, e)
        return None


def differing_instructions(call: RecordedCall, applied: Applied) -> Divergence | None:
    """Whether a replayed call did what the recorded one did: the same
    instructions, or raised as the recording did (kind "error" if only one
    of them raised)."""
    if applied.exception is not None:
        return None  # raised as recorded
    seq, sid = call.last, call.stimulus_id
    if call.error is not None:
        return Divergence(seq, sid, "error", call.error, None)
    expected = [comparable(d) for d in call.instructions or ()]
    actual = [comparable(encode_instruction(i)) for i in applied.instructions]
    if call.store_failed:
        # where the recorded data store raised is its own code, which a
        # replay does not have: that traceback text is not compared
        keys = {key for key, _, _ in call.store_failed}
        expected, actual = _drop_store_traceback(expected, keys), _drop_store_traceback(actual, keys)
    if expected != actual:
        return Divergence(seq, sid, "instructions", expected, actual)
    return None


def _drop_store_traceback(instructions: list[dict], keys: set) -> list[dict]:
    return [
        {k: v for k, v in d.items() if k != "traceback_text"}
        if d.get("cls") == "TaskErredMsg" and decode_key(d.get("key")) in keys else d
        for d in instructions
    ]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


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


def raised_at(e: BaseException) -> tuple[str, int, str, str]:
    """File name, line, function and source line of the innermost frame ``e``
    was raised in (all empty if it carries no traceback)."""
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "", 0, "", ""
    f = tb[-1]
    return os.path.basename(f.filename), f.lineno or 0, f.name, (f.line or "").strip()


def failed_assert(e: BaseException | None) -> AssertionError | None:
    """The ``assert`` that failed behind ``e``: ``e`` itself, or the one dask's
    ``InvalidTaskState`` wraps (``validate_task`` re-raises every check so)."""
    while isinstance(e, wsm.InvalidTaskState):
        e = e.__cause__
    return e if isinstance(e, AssertionError) else None
