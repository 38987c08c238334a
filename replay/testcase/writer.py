"""The writer: one shrunk event sequence, run here, written as one test."""
from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import os
import re
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask.config
from dask.sizeof import sizeof
from dask.utils import parse_bytes
from distributed import worker_state_machine as wsm

from replay.engine import raised_at
from replay.hashcheck import agreed, instructions_json
from replay.testcase.audit import _audit
from replay.testcase.events import (
    _SMALL_DATA, _builtin_exception, _data_size, _equivalent, _exception_class, _parse_expr,
)
from replay.testcase.layout import WIDTH, _Atom, _container, _dict, _flat, _lit, _Pair, _render, _Seq
from replay.testcase.literals import _eval_literal, _regex_literal, _same, checked_literal
from replay.testcase.outcomes import Expr, Invalid, InState, Narrative, Outcome, Raises, Resources, Stimulus, Stuck
from replay.testcase.prose import _comment, _describe, _kt, _prose, _shown
from schemas.convert import UNREPRODUCIBLE

LOG_LENGTH = "distributed.admin.low-level-log-length"
DATA_SIZE = "distributed.scheduler.default-data-size"
#: what dask's ``ws`` fixture builds (distributed.utils_test)
FIXTURE_ADDRESS = "127.0.0.1:1"
FIXTURE_COUNTER_MAX = 50_000


def pytest_source(
    inputs: dict,
    stimuli: Sequence[Stimulus],
    outcome: Outcome,
    narrative: Narrative,
    *,
    dask_style: bool = False,
    name: str = "test_repro",
    variants: Sequence[list] = (),
) -> str:
    """The source of a test module holding one test that replays ``stimuli``.

    ``inputs`` are the recorded ``WorkerState`` construction inputs.
    ``variants`` are the instructions per stimulus that other runs of the same
    events saw (under other hashing, :mod:`replay.hashcheck`), encoded as
    in a log: where they
    differ from this run's, only what all runs agree on is asserted. With
    ``dask_style`` the test takes dask's ``ws`` fixture instead of building its
    own state. Raises ValueError when something cannot be written safely or
    when the events, run here, do not end in ``outcome``; an exception raised
    by a stimulus other than the one ``outcome`` expects propagates.
    """
    if not name.isidentifier() or not name.startswith("test"):
        raise ValueError(f"not a pytest test name: {name!r}")
    if not stimuli:
        raise ValueError("no events to write")
    missing = _INPUTS - set(inputs)
    if missing:
        raise ValueError(f"the construction inputs lack {sorted(missing)}")
    for s in stimuli:
        if not isinstance(s, (wsm.StateMachineEvent, Resources)):
            raise ValueError(f"not a stimulus: {type(s).__name__}")
    expr = _parse_expr(outcome.expr) if isinstance(outcome, Expr) else None
    writer = _Writer(inputs, outcome, narrative, dask_style, name, expr)
    writer.variants = list(variants)
    return writer.write(stimuli)


#: the comment opening a commented alternative (:meth:`_Writer.expected`)
EXPECTED = "# expected, once fixed: "


def once_fixed(source: str) -> str:
    """``source``, a reproducer, as it reads once the bug is fixed: each
    commented alternative uncommented in place of the bug's assertion
    (from its ``# the bug:`` comment on). Raises ValueError without one."""
    lines = source.splitlines()
    out: list[str] = []
    done = 0
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(EXPECTED):
            i += 1
            continue
        pad = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        bug = max(j for j in range(done, i) if lines[j].startswith(pad + "# the bug"))
        while not lines[i].endswith(":"):  # the sentence may wrap
            i += 1
        i += 1
        code = []
        while i < len(lines) and lines[i].startswith(pad + "# "):
            code.append(pad + lines[i][len(pad) + 2:])
            i += 1
        out += lines[done:bug] + code
        done = i
    if not done:
        raise ValueError("the test has no expected behaviour to uncomment")
    return "\n".join(out + lines[done:]) + "\n"


#: the inputs that are ``WorkerState`` arguments; the other two are dask config
_ARGUMENTS = (
    "address", "nthreads", "resources", "transfer_incoming_count_limit", "validate",
    "transition_counter_max", "transfer_incoming_bytes_limit", "transfer_message_bytes_limit",
)
_INPUTS = frozenset({*_ARGUMENTS, "default_data_size", "log_length"})


@dataclass(slots=True)
class _Step:
    """One written stimulus and what it did."""

    comment: str
    #: the event's code, or None for a Resources change
    node: Any = None
    #: (target, value node) assignments of a Resources change
    assigns: list = dataclasses.field(default_factory=list)
    instructions: list | None = None
    error: BaseException | None = None


class _Writer:
    """Turns one shrunk event sequence into the source of one test."""

    def __init__(
        self,
        inputs: dict,
        outcome: Outcome,
        narrative: Narrative,
        dask_style: bool,
        name: str,
        expr: ast.Expression | None,
    ):
        self.inputs = inputs
        self.outcome = outcome
        self.narrative = narrative
        self.dask_style = dask_style
        self.name = name
        self.expr = expr
        self.address = inputs["address"]
        if type(self.address) is not str:
            raise ValueError("the worker address must be a string")
        #: module -> names imported from it
        self.imports: dict[str, set[str]] = {}
        #: address -> variable name
        self.peers: dict[str, str] = {}
        self.uses_pytest = False
        self.uses_dask = False
        #: other runs' instructions per stimulus (see :func:`pytest_source`)
        self.variants: list[list] = []

    # names ---------------------------------------------------------------

    def use(self, module: str, name: str) -> str:
        self.imports.setdefault(module, set()).add(name)
        return name

    def call(
        self,
        callee: str,
        fn: Callable,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> _Seq:
        """A call node; its value is ``fn`` applied to the argument values."""
        kwargs = kwargs or {}
        value = fn(*(a.value for a in args), **{k: v.value for k, v in kwargs.items()})
        items = [*args, *(_Pair(k + "=", v) for k, v in kwargs.items())]
        return _Seq(callee + "(", items, ")", value)

    def wsm_call(self, cls: type, method: str | None, args=(), kwargs=None) -> _Seq:
        name = self.use("distributed.worker_state_machine", cls.__name__)
        fn = getattr(cls, method) if method else cls
        return self.call(f"{name}.{method}" if method else name, fn, args, kwargs)

    def addr(self, address: Any) -> _Atom:
        if type(address) is not str:
            raise ValueError(f"a worker address must be a string, not {type(address).__name__}")
        if address == self.address:
            return _Atom("ws.address", address)
        if address not in self.peers:
            taken = set(self.peers.values())
            m = re.fullmatch(r".*:(\d{1,6})", address, re.S)
            var = f"ws{int(m.group(1))}" if m and int(m.group(1)) >= 2 else ""
            n = 2
            while not var or var in taken:
                var, n = f"ws{n}", n + 1
            checked_literal(address)
            self.peers[address] = var
        return _Atom(self.peers[address], address)

    def who_has(self, who_has: dict) -> _Seq:
        pairs = []
        for key, workers in who_has.items():
            pairs.append((_lit(key), _container(type(workers), [self.addr(w) for w in workers])))
        if type(who_has) is not dict:
            raise ValueError("who_has must be a dict")
        return _dict(pairs)

    def data_value(self, v: Any) -> Any:
        """A value for ``data``: itself if it is a literal, else one of its size."""
        try:
            return _lit(v)
        except ValueError:
            pass
        n = _data_size(v)
        if n <= _SMALL_DATA:
            return _lit(b"x" * n)
        from distributed.utils_test import SizeOf  # pulls in pytest: only when needed

        node = self.call(self.use("distributed.utils_test", "SizeOf"), SizeOf, [_lit(n)])
        if sizeof(node.value) != n:
            raise ValueError(f"cannot build a value of {n} bytes")
        return node

    # events --------------------------------------------------------------

    def event(self, ev: wsm.StateMachineEvent) -> Any:
        """The first way of writing ``ev`` that builds an equivalent event."""
        for build in (self._shortcut, self._constructor):
            node = build(ev)
            if node is not None and _equivalent(node.value, ev):
                return node
        raise ValueError(f"cannot write {type(ev).__name__} {ev.stimulus_id!r} exactly")

    def _field(self, ev: Any, f: str, v: Any) -> Any:
        if f == "worker":
            return self.addr(v)
        if f == "who_has":
            return self.who_has(v)
        if f == "run_spec":
            if v is None:
                return _lit(None)
            return self.wsm_call(wsm.ComputeTaskEvent, "dummy_runspec", [_lit(ev.key)])
        if f == "value":
            return self.data_value(v)
        if f == "data":
            if type(v) is not dict:
                raise ValueError("data must be a dict")
            return _dict([(_lit(k), self.data_value(x)) for k, x in v.items()])
        if f == "exception":
            return self._exception_object(ev)
        if f == "traceback":
            return _lit(None)  # never recorded; only passed on to TaskErredMsg
        if f == "type":
            # the result's type is only passed on to TaskFinishedMsg
            return _lit(None)
        return _lit(v)

    def _exception_object(self, ev: Any) -> _Seq:
        name = self.use("distributed.protocol.serialize", "Serialize")
        from distributed.protocol.serialize import Serialize

        # The object itself is only passed on to TaskErredMsg (matched loosely):
        # write it back when it is a plain built-in exception, else its text.
        data = ev.exception.data if isinstance(ev.exception, Serialize) else ev.exception
        if data is None:
            return self.call(name, Serialize, [_lit(None)])
        exc = _builtin_exception(repr(data)) if isinstance(data, BaseException) else None
        if exc is None:
            exc = Exception(ev.exception_text)
        return self.call(name, Serialize, [self._exception_node(exc)])

    def _exception_node(self, exc: BaseException) -> _Seq:
        cls = type(exc)
        return self.call(cls.__name__, cls, [_lit(a) for a in exc.args])

    def _constructor(self, ev: wsm.StateMachineEvent) -> _Seq:
        cls = type(ev)
        if getattr(wsm, cls.__name__, None) is not cls:
            raise ValueError(f"{cls.__name__} is not a dask state machine event")
        names = [f.name for f in dataclasses.fields(ev) if f.name != "stimulus_id"]
        kwargs = {f: self._field(ev, f, getattr(ev, f)) for f in names}
        kwargs["stimulus_id"] = _lit(ev.stimulus_id)
        return self.wsm_call(cls, None, (), kwargs)

    def _shortcut(self, ev: wsm.StateMachineEvent) -> _Seq | None:
        """``.dummy(...)`` or ``.from_exception(...)``, passing only what differs."""
        sid = {"stimulus_id": _lit(ev.stimulus_id)}
        if type(ev) is wsm.ComputeTaskEvent:
            kw: dict[str, Any] = {}
            if ev.run_id != 0:
                kw["run_id"] = _lit(ev.run_id)
            if ev.who_has:
                kw["who_has"] = self.who_has(ev.who_has)
            if ev.nbytes and not _same(ev.nbytes, {k: 1 for k in ev.who_has or ()}):
                kw["nbytes"] = _lit(ev.nbytes)
            if not _same(ev.priority, (0,)):
                kw["priority"] = _lit(ev.priority)
            for f in ("resource_restrictions", "annotations"):
                if getattr(ev, f):
                    kw[f] = _lit(getattr(ev, f))
            if ev.actor:
                kw["actor"] = _lit(ev.actor)
            return self.wsm_call(type(ev), "dummy", [_lit(ev.key)], {**kw, **sid})
        if type(ev) is wsm.ExecuteSuccessEvent:
            args = [_lit(ev.key)] + ([self.data_value(ev.value)] if ev.value is not None else [])
            kw = {"run_id": _lit(ev.run_id)} if ev.run_id != 1 else {}
            if ev.nbytes != 1:
                kw["nbytes"] = _lit(ev.nbytes)
            return self.wsm_call(type(ev), "dummy", args, {**kw, **sid})
        if type(ev) is wsm.RescheduleEvent:
            return self.wsm_call(type(ev), "dummy", [_lit(ev.key)], sid)
        if type(ev) is wsm.ExecuteFailureEvent:
            if not (ev.exception_text or ev.traceback_text or ev.start or ev.stop):
                kw = {"run_id": _lit(ev.run_id)} if ev.run_id != 1 else {}
                return self.wsm_call(type(ev), "dummy", [_lit(ev.key)], {**kw, **sid})
            exc = _builtin_exception(ev.exception_text)
            if exc is None or ev.traceback_text:
                return None
            kw = {"key": _lit(ev.key), "run_id": _lit(ev.run_id)}
            for f in ("start", "stop"):
                if getattr(ev, f) is not None:
                    kw[f] = _lit(getattr(ev, f))
            return self.from_exception(ev, exc, {**kw, **sid})
        if type(ev) is wsm.GatherDepFailureEvent:
            exc = _builtin_exception(ev.exception_text)
            if exc is None or ev.traceback_text:
                return None
            kw = {"worker": self.addr(ev.worker), "total_nbytes": _lit(ev.total_nbytes)}
            return self.from_exception(ev, exc, {**kw, **sid})
        return None

    def from_exception(self, ev: Any, exc: BaseException, kwargs: dict) -> _Seq:
        return self.wsm_call(type(ev), "from_exception", [self._exception_node(exc)], kwargs)

    # instructions --------------------------------------------------------

    def instruction(self, inst: wsm.Instruction, i: int, checks: list) -> Any:
        """``inst`` as code; ``checks`` gets (index, keys) to assert apart."""
        cls = type(inst)
        if getattr(wsm, cls.__name__, None) is not cls:
            raise ValueError(f"{cls.__name__} is not a dask state machine instruction")
        skip = UNREPRODUCIBLE.get(cls.__name__, frozenset())
        if cls is wsm.RequestRefreshWhoHasMsg and len(inst.keys) > 1:
            # the keys come out of a set: their order differs between processes
            skip = frozenset({"keys"})
            checks.append((i, _lit(set(inst.keys))))
        names = [f.name for f in dataclasses.fields(inst) if f.name not in skip]
        names = [f for f in names if f != "stimulus_id"] + ["stimulus_id"]
        kwargs = {
            f: self.addr(getattr(inst, f)) if f == "worker" else _lit(getattr(inst, f))
            for f in names
        }
        return self.wsm_call(cls, "match" if skip else None, (), kwargs)

    # the run -------------------------------------------------------------

    def settings(self) -> tuple[dict, dict, int | None, int]:
        """(constructor arguments, attributes set afterwards, log length, data size)."""
        inp = self.inputs
        want = {k: inp[k] for k in _ARGUMENTS}
        want["resources"] = dict(want["resources"])
        defaults = {
            k: p.default for k, p in inspect.signature(wsm.WorkerState).parameters.items()
        }
        defaults["resources"] = {}
        if not self.dask_style:
            ctor = {"address": self.address}
            ctor.update((k, v) for k, v in want.items() if not _same(v, defaults[k]))
            return ctor, {}, inp["log_length"], inp["default_data_size"]
        ctor = {"address": FIXTURE_ADDRESS, "transition_counter_max": FIXTURE_COUNTER_MAX}
        fixture = {**defaults, **ctor}
        # the fixture always validates and keeps its counter limit unless one was set
        want["validate"] = True
        if want["transition_counter_max"] is False:
            want["transition_counter_max"] = FIXTURE_COUNTER_MAX
        attrs = {}
        for k, v in want.items():
            if not _same(v, fixture[k]):
                if k == "resources":
                    attrs["total_resources"] = dict(v)
                    attrs["available_resources"] = dict(v)
                else:
                    attrs[k] = v
        return ctor, attrs, None, inp["default_data_size"]

    def run(self, stimuli: Sequence[Stimulus]) -> list[_Step]:
        """Every stimulus through a real ``WorkerState`` set up as the test sets it up."""
        ctor, attrs, log_length, data_size = self.settings()
        with _configured(log_length, data_size):
            ws = wsm.WorkerState(**ctor)
            for k, v in attrs.items():
                setattr(ws, k, v)
            steps = []
            last = len(stimuli) - 1
            for i, stim in enumerate(stimuli):
                # what the event does, told from the state before it
                said = "" if isinstance(stim, Resources) else _describe(ws, stim, self.address)
                try:
                    steps.append(self.step(ws, stim, expect_error=i == last))
                except _BROKEN as e:
                    if not self.dask_style or i == last and self.expected_errors():
                        raise
                    # dask's ws fixture validates as it goes: the bug trips an
                    # assertion at this step, and the test expects it there
                    steps.append(_Step(said, self.event(stim), error=e))
                    self.final = {"validation": True, "error": e, "site": _sites(e)[-1],
                                  "disable_validation": True}
                    return steps
            self.final = self.conclude(ws, steps)
        return steps

    def step(self, ws: wsm.WorkerState, stim: Stimulus, expect_error: bool) -> _Step:
        if isinstance(stim, Resources):
            total, available = _lit(dict(stim.total)), _lit(dict(stim.available))
            ws.total_resources = dict(stim.total)
            ws.available_resources = dict(stim.available)
            comment = (
                "the worker's resources change (Worker.set_resources): total "
                f"{_shown(total.value)}, available {_shown(available.value)}"
            )
            assigns = [("ws.total_resources = ", total), ("ws.available_resources = ", available)]
            return _Step(comment, assigns=assigns)
        node = self.event(stim)
        step = _Step(_describe(ws, node.value, self.address), node)
        catch = self.expected_errors() if expect_error else ()
        try:
            step.instructions = ws.handle_stimulus(node.value)
        except catch as e:
            step.error = e
        return step

    def expected_errors(self) -> tuple[type[BaseException], ...]:
        if isinstance(self.outcome, Raises):
            return (_exception_class(self.outcome.exception),)
        if isinstance(self.outcome, Invalid):
            return (AssertionError, wsm.InvalidTaskState)
        return ()

    def conclude(self, ws: wsm.WorkerState, steps: list[_Step]) -> dict:
        """Check ``outcome`` against the real run; return what the ending needs."""
        o = self.outcome
        error = steps[-1].error
        out: dict[str, Any] = {}
        if isinstance(o, (Stuck, InState)):
            ts = ws.tasks.get(o.key)
            if ts is None or ts.state != o.state:
                got = "is not there" if ts is None else f"is in state {ts.state!r}"
                raise ValueError(f"the events do not reproduce it: {o.key!r} {got}")
        elif isinstance(o, Raises):
            if error is None:
                raise ValueError(f"the last event does not raise {o.exception}")
            _check_raises(o, error)
            out["match"] = _raises_pattern(o, error)
        elif isinstance(o, Invalid):
            if error is None:
                try:
                    ws.validate_state()
                except _BROKEN as e:
                    error = e
                else:
                    raise ValueError("validate_state() passes after the events")
                out["in_validate"] = True
            sites = _sites(error)
            if (os.path.basename(o.file), o.line) not in [s[:2] for s in sites]:
                raise ValueError(
                    f"the events fail validation elsewhere: {[s[:2] for s in sites]}, "
                    f"not {(o.file, o.line)}"
                )
            out["error"] = error
            # the innermost assert says most: a cause's rather than validate_task's raise
            out["site"] = sites[-1]
        else:
            namespace = {"ws": ws, **{v: a for a, v in self.peers.items()}}
            for module, names in self.imports.items():
                namespace.update((n, getattr(_module(module), n)) for n in names)
            try:
                ok = eval(compile(self.expr, "<expression>", "eval"), namespace)  # noqa: S307
            except NameError as e:
                raise ValueError(f"the expression uses a name the test lacks: {e}") from None
            if not ok:
                raise ValueError("the expression does not hold after the events")
        if self.dask_style:
            # dask's ws fixture validates the state again on teardown
            broken = isinstance(o, Invalid) and out.get("in_validate", False)
            if not broken:
                try:
                    ws.validate_state()
                except _BROKEN:
                    broken = True
            out["disable_validation"] = broken
        return out

    # the source ----------------------------------------------------------

    def write(self, stimuli: Sequence[Stimulus]) -> str:
        steps = self.run(stimuli)
        ctor, attrs, log_length, data_size = self.settings()
        body: list[str] = []
        indent = 4
        need_data_size = data_size != _dask_default_bytes(DATA_SIZE)
        need_log_length = not self.dask_style and log_length != _dask_default(LOG_LENGTH)
        if need_data_size:
            self.uses_dask = True
            self.use("distributed.worker_state_machine", "_default_data_size")
            conf = {DATA_SIZE: data_size}
            if need_log_length:
                conf[LOG_LENGTH] = log_length
            body += _comment(
                "the recorded worker's default data size differs from dask's; the state "
                "machine caches it, so clear the cache before and after this test",
                indent,
            )
            body += _render(_lit(conf), indent, "with dask.config.set(", "):")
            body += [" " * (indent + 4) + "_default_data_size.cache_clear()"]
            body += [" " * (indent + 4) + "try:"]
            indent += 8
        if not self.dask_style:
            kwargs = {k: _lit(v) for k, v in ctor.items()}
            name = self.use("distributed.worker_state_machine", "WorkerState")
            node = _Seq(name + "(", [_Pair(k + "=", v) for k, v in kwargs.items()], ")")
            if need_log_length and not need_data_size:
                self.uses_dask = True
                conf_node = _lit({LOG_LENGTH: log_length})
                body += _render(conf_node, indent, "with dask.config.set(", "):")
                body += _render(node, indent + 4, "ws = ")
            else:
                body += _render(node, indent, "ws = ")
        else:
            if not self.inputs["validate"]:
                body += _comment(
                    "the worker was recorded with validate=False; the ws fixture validates",
                    indent,
                )
            recorded_length = self.inputs["log_length"]
            if recorded_length != _dask_default(LOG_LENGTH):
                body += _comment(
                    f"the worker was recorded with a log length of {_shown(recorded_length)}; "
                    "the ws fixture keeps the whole log",
                    indent,
                )
            for k, v in attrs.items():
                body += _render(_lit(v), indent, f"ws.{k} = ")
        for address, var in self.peers.items():
            body += _render(_lit(address), indent, f"{var} = ")
        final = self.final
        for i, step in enumerate(steps):
            if body and body[-1].strip() and not body[-1].endswith(":"):
                body.append("")
            body += _comment(step.comment, indent)
            for target, value in step.assigns:
                body += _render(value, indent, target)
            node = step.node
            if node is None:
                continue
            if step.error is not None:
                body += self.raising_call(node, step.error, final, indent)
                continue
            call = _Seq("ws.handle_stimulus(", [node], ")")
            others = [v[i] for v in self.variants if i < len(v)]
            if others and any(x != instructions_json(step.instructions) for x in others):
                body += _render(call, indent, "instructions = ")
                body += self.unordered(step.instructions, others, indent)
                continue
            checks: list = []
            expected = [self.instruction(x, j, checks) for j, x in enumerate(step.instructions)]
            if step.instructions != [n.value for n in expected]:
                raise ValueError(f"cannot write the instructions of {node.value.stimulus_id!r}")
            body += _render(call, indent, "instructions = ")
            # several instructions: one a line, as dask's tests list them
            listed = _Seq("[", expected, "]", explode=len(expected) > 1)
            body += _render(listed, indent, "assert instructions == ")
            for j, keys in checks:
                if set(step.instructions[j].keys) != keys.value:
                    raise ValueError("cannot write the instructions' keys")
                body += _render(keys, indent, f"assert set(instructions[{j}].keys) == ")
        body += self.ending(final, indent)
        if need_data_size:
            indent -= 8
            body += [" " * (indent + 4) + "finally:"]
            body += [" " * (indent + 8) + "_default_data_size.cache_clear()"]
        return self.assemble(body)

    def unordered(self, own: list, others: list[list], indent: int) -> list[str]:
        """Assertions on what every run's instructions hold, in any order: the
        state machine takes them from sets, whose order follows hashing.
        ``others`` are other runs' instructions, encoded as in a log."""
        common, same = agreed([instructions_json(own), *others])
        pad = " " * indent
        if same:
            lines = _comment("the order of these instructions follows set iteration, which "
                             "differs between runs", indent)
            lines.append(pad + f"assert len(instructions) == {len(common)}")
        else:
            lines = _comment("which of these instructions come, besides the ones below, follows "
                             "set iteration, which differs between runs", indent)
        for j in common:
            node = self.instruction(own[j], j, [])
            if not node.value == own[j]:
                raise ValueError("cannot write an instruction exactly")
            lines += _render(node, indent, "assert ", " in instructions")
        return lines

    def raising_call(
        self, node: Any, error: BaseException, final: dict, indent: int
    ) -> list[str]:
        """The last call, inside ``pytest.raises``."""
        self.uses_pytest = True
        cls = type(error)
        cls_name = self.exception_name(cls)
        o = self.outcome
        lines = []
        if final.get("validation"):
            lines += _comment(
                f"with validation on (dask's ws fixture), the bug trips {self.site_text(final)} "
                "here; once fixed, flip this: make the call without pytest.raises",
                indent,
            )
            lines.append(" " * indent + f"with pytest.raises({self.exception_name(type(error))}){_as(error)}:")
            lines += _render(_Seq("ws.handle_stimulus(", [node], ")"), indent + 4)
            lines += self.cause_check(error, indent)
            return lines
        if isinstance(o, Raises):
            lines += _comment(
                f"the bug: this raises {_prose(cls.__name__)}; once fixed, flip this: call "
                "handle_stimulus without pytest.raises and assert its instructions",
                indent,
            )
            match = final.get("match")
            head = f"with pytest.raises({cls_name}"
            head += f", match={match}):" if match else "):"
            lines.append(" " * indent + head)
            lines += _render(_Seq("ws.handle_stimulus(", [node], ")"), indent + 4)
            if o.handled_when_fixed:
                lines += self.expected(
                    "a correct worker handles this event without raising, and its state stays valid",
                    _render(_Seq("ws.handle_stimulus(", [node], ")"), indent) + [" " * indent + "ws.validate_state()"],
                    indent,
                )
            return lines
        lines += self.invalid_comment(final, indent, "handle_stimulus")
        lines.append(" " * indent + f"with pytest.raises({cls_name}){_as(error)}:")
        lines += _render(_Seq("ws.handle_stimulus(", [node], ")"), indent + 4)
        lines += self.cause_check(error, indent)
        return lines

    def expected(self, what: str, code: list[str], indent: int) -> list[str]:
        """What a correct worker does instead, from dask's semantics, as a
        commented alternative to the bug's assertion: uncommented in its
        place once the bug is fixed, it passes."""
        pad = " " * indent
        return _comment(EXPECTED[2:] + what + ":", indent) + [
            pad + "# " + line[indent:] for line in code
        ]

    def peer_name(self, address: str) -> str:
        """A peer's variable in the test, or its address where it has none."""
        if address == self.address:
            return "ws.address"
        return self.peers.get(address) or repr(address)

    def exception_name(self, cls: type) -> str:
        if getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
        if getattr(wsm, cls.__name__, None) is not cls:
            raise ValueError(f"cannot import {cls.__qualname__} in the test")
        return self.use("distributed.worker_state_machine", cls.__name__)

    def cause_check(self, error: BaseException, indent: int) -> list[str]:
        if not isinstance(error.__cause__, AssertionError):
            return []
        # validate_task reports the failed assert as InvalidTaskState
        return [" " * indent + "assert isinstance(excinfo.value.__cause__, AssertionError)"]

    def invalid_comment(self, final: dict, indent: int, where: str) -> list[str]:
        return _comment(
            f"the bug: {where} fails at {self.site_text(final)}; once fixed, flip this: "
            "make the call without pytest.raises",
            indent,
        )

    def site_text(self, final: dict) -> str:
        """Where validation fails: the innermost assert, a cause's if there is one."""
        file, line, source = final["site"]
        assertion = source.strip() or getattr(self.outcome, "assertion", "")
        return f"{_prose(file)}:{line}" + (f", `{_prose(assertion, 200)}`" if assertion else "")

    def ending(self, final: dict, indent: int) -> list[str]:
        """The final assertion, which holds while the bug is there."""
        o = self.outcome
        pad = " " * indent
        lines = [""]
        if final.get("validation"):
            lines = []
        elif isinstance(o, (Stuck, InState)):
            key, state = _lit(o.key), _lit(o.state)
            text = f"the bug: {_kt(o.key)} ends in state {_prose(repr(o.state))}"
            if isinstance(o, Stuck):
                text = f"the bug: {_kt(o.key)} never leaves state {_prose(repr(o.state))}"
                text += f": {_prose(o.reason)}"
            lines += _comment(text + "; once fixed, flip this assertion (== to !=)", indent)
            lines += _render(state, indent, f"assert ws.tasks[{_flat(key)}].state == ")
            stale = getattr(o, "stale_in_flight", ())
            if stale:
                lines += self.expected(
                    "a peer is marked in flight only for keys coming from it",
                    [pad + f"assert all(ws.tasks[k].coming_from == {v} for k in ws.in_flight_workers.get({v}, ()))"
                     for v in map(self.peer_name, stale)],
                    indent,
                )
        elif isinstance(o, Invalid) and final.get("in_validate"):
            self.uses_pytest = True
            error = final["error"]
            cls_name = self.exception_name(type(error))
            lines += self.invalid_comment(final, indent, "validate_state()")
            lines.append(pad + f"with pytest.raises({cls_name}){_as(error)}:")
            lines.append(pad + "    ws.validate_state()")
            lines += self.cause_check(error, indent)
            lines += self.expected("the state machine's invariants hold", [pad + "ws.validate_state()"], indent)
        elif isinstance(o, Expr):
            text = _expr_source(self.expr, self.outcome.expr)
            lines += _comment(
                "the bug, as given to shrink; once fixed, flip this assertion (assert not)",
                indent,
            )
            lines.append(pad + "assert " + text)
        else:
            lines = []
        if final.get("disable_validation"):
            lines += [""] + _comment(
                "the state is left broken on purpose: keep the ws fixture from validating "
                "it again on teardown",
                indent,
            )
            lines.append(pad + "ws.validate = False")
        return lines

    def docstring(self) -> str:
        o, n = self.outcome, self.narrative
        detail = ""
        if isinstance(o, (Stuck, InState)):
            key, state = _kt(o.key), _prose(repr(o.state))
            head = f"{key} {'is stuck' if isinstance(o, Stuck) else 'ends'} in state {state}."
            if isinstance(o, Stuck):
                detail = f"Why: {_prose(o.reason)}."
            fix = (
                f"{key} should no longer end in state {state}: flip the assertion marked "
                "below (== to !=); which state it should reach depends on the fix."
            )
        elif isinstance(o, Raises):
            head = f"handle_stimulus raises {_prose(o.exception)} on the last event."
            if o.key is not None:
                detail = f"It concerns key {_kt(o.key)}"
                if o.start is not None and o.finish is not None:
                    detail += f", moving from {_prose(o.start)} to {_prose(o.finish)}"
                detail += "."
            fix = (
                "the last event should be handled without an exception: call "
                "ws.handle_stimulus without pytest.raises and assert its instructions."
            )
        elif isinstance(o, Invalid):
            head = "The worker state breaks an invariant."
            detail = f"Failing: {self.site_text(self.final)}."
            fix = "the state should pass validation: make the marked call without pytest.raises."
        else:
            head = "A condition given to shrink holds at the end."
            detail = f"Condition: {_prose(_expr_source(self.expr, self.outcome.expr), 200)}"
            fix = "the condition should no longer hold: flip the assertion marked below."
        paragraphs = [
            head,
            detail,
            f"Shrunk from {int(n.original_events)} to {int(n.shrunk_events)} events of "
            f"worker {_prose(repr(n.worker), 120)} in log {_prose(repr(n.log), 120)}, "
            f"recorded with distributed {_prose(n.distributed, 40)}; shrink predicate: "
            f"{_prose(repr(n.predicate), 120)}.",
            f"This test passes while the bug is present. Once it is fixed, {fix}",
        ]
        out: list[str] = []
        for p in paragraphs:
            if p:
                out += textwrap.wrap(p, WIDTH - 4, break_long_words=False, break_on_hyphens=False)
                out.append("")
        return "\n".join(out[:-1])

    def assemble(self, body: list[str]) -> str:
        doc = self.docstring()
        escaped = doc.replace("\\", "\\\\")
        if '"""' in doc or doc.endswith('"'):
            escaped = escaped.replace('"', '\\"')
        doc_lines = escaped.split("\n")
        doc_src = ['    """' + doc_lines[0]] + [("    " + x).rstrip() for x in doc_lines[1:]]
        doc_src[-1] += '"""' if len(doc_lines) == 1 else ""
        if len(doc_lines) > 1:
            doc_src.append('    """')
        head = [
            "import pytest\n" if self.uses_pytest else "",
            "import dask\n" if self.uses_dask else "",
        ]
        imports = [x for x in head if x]
        froms = []
        for module in sorted(self.imports):
            names = sorted(self.imports[module], key=lambda s: (s.startswith("_"), s))
            one = f"from {module} import {', '.join(names)}"
            if len(one) <= WIDTH:
                froms.append(one)
            else:
                lines = [f"from {module} import (", *(f"    {x}," for x in names), ")"]
                froms.append("\n".join(lines))
        parts = [*imports, "\n".join(froms) + "\n"]
        args = "ws" if self.dask_style else ""
        func = [f"def {self.name}({args}):", *doc_src, *body]
        source = "\n".join(parts) + "\n\n" + "\n".join(line.rstrip() for line in func) + "\n"
        _audit(source, self.name, doc, self.expr, set(self.peers.values()))
        return source


def _as(error: BaseException) -> str:
    """``as excinfo`` when the test looks at the exception's cause."""
    return " as excinfo" if isinstance(error.__cause__, AssertionError) else ""


def _expr_source(tree: ast.Expression, typed: str) -> str:
    """The user's expression as written after ``assert``: as typed when that is
    one line meaning the same, else normalised by ``ast.unparse``."""
    for text in (typed.strip(), ast.unparse(tree), f"({ast.unparse(tree)})"):
        if "\n" in text or "\r" in text or not text.isprintable():
            continue
        try:
            body = ast.parse("assert " + text).body
        except SyntaxError:
            continue
        if len(body) == 1 and ast.dump(body[0].test) == ast.dump(tree.body):
            return text
    raise ValueError("cannot write the expression on one line")


#: what ``validate_state()`` raises on a broken state: its asserts, the
#: InvalidTaskState that ``validate_task`` wraps them in, or a lookup that
#: fails on inconsistent collections
_BROKEN = (AssertionError, wsm.InvalidTaskState, LookupError, AttributeError, TypeError)


def _sites(e: BaseException) -> list[tuple[str, int, str]]:
    """(file, line, source) where ``e`` was raised, then where its cause was."""
    return [
        (file, line, source)
        for file, line, _, source in (raised_at(x) for x in (e, e.__cause__) if x is not None)
        if line
    ]


def _check_raises(o: Raises, e: BaseException) -> None:
    if type(e).__name__ != o.exception:
        raise ValueError(f"the last event raises {type(e).__name__}, not {o.exception}")
    for attr in ("key", "start", "finish"):
        want = getattr(o, attr)
        if want is not None and hasattr(e, attr) and not _same(getattr(e, attr), want):
            raise ValueError(f"the exception's {attr} is {getattr(e, attr)!r}, not {want!r}")
    if o.function is not None:
        names = [f.name for f in traceback.extract_tb(e.__traceback__)]
        if o.function not in names:
            raise ValueError(f"the exception does not pass through {o.function}()")


def _raises_pattern(o: Raises, e: BaseException) -> str | None:
    """``match=`` for pytest.raises, when the key shows in the message."""
    if o.key is None:
        return None
    text = repr(o.key)
    if isinstance(e, wsm.InvalidTransition) and o.start and o.finish:
        text = f"{o.key!r} :: {o.start}->{o.finish}"
    elif isinstance(e, wsm.InvalidTaskState):
        text = f"{o.key!r} :: {e.state}"
    if len(text) > 200 or text not in str(e):
        return None
    literal = _regex_literal(text)
    if not re.search(_eval_literal(literal), str(e)):
        return None
    return literal


# Config ---------------------------------------------------------------------


def _dask_default(key: str) -> Any:
    """dask's own default for ``key``, whatever this process has configured."""
    return dask.config.get(key, config=dask.config.merge(*dask.config.defaults))


def _dask_default_bytes(key: str) -> int:
    return parse_bytes(_dask_default(key))


@contextmanager
def _configured(log_length: int | None, data_size: int) -> Iterator[None]:
    """Run with the recorded config, then leave the data-size cache as it was."""
    cache = wsm._default_data_size
    previous = cache() if cache.cache_info().currsize else None
    with dask.config.set({DATA_SIZE: data_size, LOG_LENGTH: log_length}):
        cache.cache_clear()
        try:
            yield
        finally:
            cache.cache_clear()
    if previous is not None:
        with dask.config.set({DATA_SIZE: previous}):
            cache()


def _module(name: str) -> Any:
    """One of the modules a reproducer may import, by name."""
    if name == "distributed.worker_state_machine":
        return wsm
    if name == "distributed.protocol.serialize":
        from distributed.protocol import serialize

        return serialize
    if name == "distributed.utils_test":
        from distributed import utils_test

        return utils_test
    raise ValueError(f"a reproducer does not import {name}")
