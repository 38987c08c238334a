"""Shrunk events written as a dask-style pytest, and that test run for real.

Every generated test runs in one pytest subprocess whose import path shadows
``replay``, ``schemas`` and ``cli`` with packages that refuse to import: the
reproducer must need nothing but ``distributed`` and ``pytest``.
"""
from __future__ import annotations

import ast
import inspect
import math
import os
import re
import subprocess
import sys

import pytest
from distributed import worker_state_machine as wsm
from distributed.protocol.serialize import Serialize
from distributed.worker_state_machine import (
    ComputeTaskEvent,
    ExecuteSuccessEvent,
    GatherDepBusyEvent,
    GatherDepFailureEvent,
    PauseEvent,
    SecedeEvent,
    UpdateDataEvent,
)

from replay.testcase import (
    Expr,
    InState,
    Invalid,
    Narrative,
    Raises,
    Resources,
    Stuck,
    checked_literal,
    pytest_source,
)
from schemas.convert import SizedValue

WS2 = "127.0.0.1:2"
WS3 = "127.0.0.2:3"
NARRATIVE = Narrative(
    worker="tcp://10.0.0.5:40123",
    log="cluster.jsonl.gz",
    original_events=1234,
    shrunk_events=2,
    distributed="2026.8.0",
    predicate="--stuck",
)
REFUSE = 'raise ImportError("the reproducer must not import dask-replay")\n'


def inputs(**changes) -> dict:
    """Construction inputs of a worker recorded with dask's defaults."""
    base = {
        "address": "127.0.0.1:1",
        "nthreads": 1,
        "resources": {},
        "transfer_incoming_count_limit": 9999,
        "validate": True,
        "transition_counter_max": False,
        "transfer_incoming_bytes_limit": math.inf,
        "transfer_message_bytes_limit": math.inf,
        "default_data_size": 1024,
        "log_length": 1000,
    }
    return {**base, **changes}


def line_of(text: str) -> int:
    """The line of the state machine's source that holds ``text``."""
    lines, _ = inspect.getsourcelines(wsm)
    return next(i for i, line in enumerate(lines, start=1) if text in line)


def gather_dep_failure() -> list:
    """dask#6705: the only replica of 'x' fails to arrive; 'y' waits on an erred task."""
    return [
        ComputeTaskEvent.dummy("y", who_has={"x": [WS2]}, stimulus_id="s1"),
        GatherDepFailureEvent.from_exception(
            Exception("boom"), worker=WS2, total_nbytes=1, stimulus_id="s2"
        ),
    ]


WAITING_FOR_DATA = "assert ts_wait.state in WAITING_FOR_DATA"
INVALID_6705 = Invalid("worker_state_machine.py", line_of(WAITING_FOR_DATA), WAITING_FOR_DATA)

K = "x')\nimport os#\"\"\"\\"
K2 = "__import__('os').system('echo pwned')"
HOSTILE_PEER = "127.0.0.2');import os#\n\u202e:2"
HOSTILE_TEXT = "boom')\nimport os\n#\"\"\"\r\x00"

#: name -> (inputs, stimuli, outcome); every one is written plain and dask-style
CASES: dict[str, tuple] = {
    "6705_stuck": (
        inputs(),
        gather_dep_failure(),
        Stuck("y", "waiting", "waiting on 'x', which erred"),
    ),
    "6705_invalid": (inputs(validate=False), gather_dep_failure(), INVALID_6705),
    # the peer never answers: 'x' stays in flight
    "flight": (
        inputs(),
        [ComputeTaskEvent.dummy("y", who_has={"x": [WS2]}, stimulus_id="s1")],
        Stuck("x", "flight", "the transfer from 127.0.0.1:2 never ends"),
    ),
    "constrained": (
        inputs(resources={"R": 1.0}),
        [ComputeTaskEvent.dummy("x", resource_restrictions={"R": 2.0}, stimulus_id="s1")],
        Stuck("x", "constrained", "needs R=2, the worker has R=1"),
    ),
    "paused": (
        inputs(),
        [PauseEvent(stimulus_id="s1"), ComputeTaskEvent.dummy("x", stimulus_id="s2")],
        Stuck("x", "ready", "the worker is paused"),
    ),
    "in_state": (
        inputs(),
        [
            ComputeTaskEvent.dummy("x", stimulus_id="s1"),
            ExecuteSuccessEvent.dummy("x", stimulus_id="s2"),
        ],
        InState("x", "memory"),
    ),
    "expr": (
        inputs(),
        [PauseEvent(stimulus_id="s1"), ComputeTaskEvent.dummy("x", stimulus_id="s2")],
        Expr("not ws.running and len(ws.ready) == 1"),
    ),
    # seceding is a transition out of 'executing' only
    "raises": (
        inputs(),
        [
            UpdateDataEvent(data={"x": 1}, stimulus_id="s1"),
            SecedeEvent(key="x", compute_duration=1.0, stimulus_id="s2"),
        ],
        Raises("InvalidTransition", key="x", start="memory", finish="long-running"),
    ),
    # the worker validates its handlers' input: an unknown key fails an assert
    "raises_in_handler": (
        inputs(),
        [ExecuteSuccessEvent.dummy("x", stimulus_id="s1")],
        Invalid("worker_state_machine.py", line_of("assert ts, self.story(ev.key)"), ""),
    ),
    # the constrained task runs once the resources grow and another task is ready
    "tuple_keys": (
        inputs(resources={"R": 1.0}),
        [
            ComputeTaskEvent.dummy(("x", 0), resource_restrictions={"R": 2.0}, stimulus_id="s1"),
            Resources(total={"R": 2.0}, available={"R": 2.0}),
            ComputeTaskEvent.dummy(("z", 1), priority=(1,), stimulus_id="s2"),
        ],
        InState(("x", 0), "executing"),
    ),
    # both dependencies come from one busy peer: ask the scheduler for others
    "busy": (
        inputs(),
        [
            ComputeTaskEvent.dummy("z", who_has={"x": [WS2], "y": [WS2]}, stimulus_id="s1"),
            GatherDepBusyEvent(worker=WS2, total_nbytes=2, stimulus_id="s2"),
        ],
        InState("x", "fetch"),
    ),
    # a log's exception text from a class the test cannot build: written as is
    "exception_text": (
        inputs(),
        [
            ComputeTaskEvent.dummy("y", who_has={"x": [WS2]}, stimulus_id="s1"),
            GatherDepFailureEvent(
                worker=WS2,
                total_nbytes=1,
                exception=Serialize(Exception("CommClosedError('gone')")),
                traceback=None,
                exception_text="CommClosedError('gone')",
                traceback_text="",
                stimulus_id="s2",
            ),
        ],
        InState("x", "error"),
    ),
    # an unknown size is the configured default; data of a recorded size only
    "data_size": (
        inputs(default_data_size=2048),
        [
            ComputeTaskEvent.dummy(
                "y", who_has={"x": [WS2]}, nbytes={"x": None}, stimulus_id="s1"
            ),
            wsm.GatherDepSuccessEvent(
                worker=WS2, data={"x": SizedValue(100)}, total_nbytes=2048, stimulus_id="s2"
            ),
            ExecuteSuccessEvent(
                key="y", run_id=0, value=None, start=10.5, stop=11.0, nbytes=4,
                type=None, stimulus_id="s3",
            ),
        ],
        Expr("ws.tasks['x'].nbytes == 100 and ws.nbytes == 104"),
    ),
    # runs after data_size in the same process: dask's default is back
    "data_size_zz_after": (
        inputs(),
        [ComputeTaskEvent.dummy("y", who_has={"x": [WS2]}, nbytes={"x": None}, stimulus_id="s1")],
        Stuck("x", "flight", "the transfer never ends"),
    ),
    # every event class once; a peer on another host; a peer leaves mid-transfer
    "every_event": (
        inputs(),
        [
            ComputeTaskEvent.dummy("y", who_has={"x": [WS2]}, stimulus_id="s1"),
            wsm.GatherDepNetworkFailureEvent(worker=WS2, total_nbytes=1, stimulus_id="s2"),
            wsm.RefreshWhoHasEvent(who_has={"x": [WS3]}, stimulus_id="s3"),
            GatherDepBusyEvent(worker=WS3, total_nbytes=1, stimulus_id="s4"),
            wsm.RetryBusyWorkerEvent(worker=WS3, stimulus_id="s5"),
            wsm.GatherDepSuccessEvent(
                worker=WS3, data={"x": SizedValue(50)}, total_nbytes=1, stimulus_id="s6"
            ),
            SecedeEvent(key="y", compute_duration=0.5, stimulus_id="s7"),
            wsm.ExecuteFailureEvent.dummy("y", stimulus_id="s8"),
            wsm.AcquireReplicasEvent(who_has={"z": [WS2]}, nbytes={"z": 5}, stimulus_id="s9"),
            wsm.RemoveWorkerEvent(worker=WS2, stimulus_id="s10"),
            wsm.FindMissingEvent(stimulus_id="s11"),
            UpdateDataEvent(data={"w": 1}, stimulus_id="s12"),
            wsm.RemoveReplicasEvent(keys=["w"], stimulus_id="s13"),
            wsm.FreeKeysEvent(keys=["y"], stimulus_id="s14"),
            ComputeTaskEvent.dummy("a", stimulus_id="s15"),
            ComputeTaskEvent.dummy("b", stimulus_id="s16"),
            wsm.StealRequestEvent(key="b", stimulus_id="s17"),
            PauseEvent(stimulus_id="s18"),
            ExecuteSuccessEvent.dummy("a", stimulus_id="s19"),
            wsm.UnpauseEvent(stimulus_id="s20"),
            wsm.CancelComputeEvent(key="a", stimulus_id="s21"),
            ComputeTaskEvent.dummy("c", stimulus_id="s22"),
            wsm.RescheduleEvent.dummy("c", stimulus_id="s23"),
        ],
        InState("z", "flight"),
    ),
    "hostile": (
        inputs(),
        [
            ComputeTaskEvent.dummy(K2, who_has={K: [HOSTILE_PEER]}, stimulus_id="s1\n#"),
            GatherDepFailureEvent.from_exception(
                Exception(HOSTILE_TEXT), worker=HOSTILE_PEER, total_nbytes=1, stimulus_id="s2'"
            ),
        ],
        Stuck(K2, "waiting", "waiting on " + K + "\nimport os"),
    ),
}
HOSTILE_NARRATIVE = Narrative('w"""\nimport os', "log'\n.jsonl", 10, 2, "2026.8.0\n", '"""\nx')
PLAIN_ONLY = {
    # dask's ws fixture keeps the whole log; only a plain test can set its length
    "log_length": (
        inputs(log_length=7),
        [PauseEvent(stimulus_id="s1")],
        Expr("ws.log.maxlen == 7 and not ws.running"),
    ),
}
CANARY = '''import pytest


def test_canary():
    for name in ("replay", "schemas", "cli"):
        with pytest.raises(ImportError, match="must not import dask-replay"):
            __import__(name)
'''


def _source(name: str, dask_style: bool) -> str:
    inp, stimuli, outcome = {**CASES, **PLAIN_ONLY}[name]
    narrative = HOSTILE_NARRATIVE if name == "hostile" else NARRATIVE
    test_name = f"test_{name}" + ("_dask_style" if dask_style else "")
    return pytest_source(inp, stimuli, outcome, narrative, dask_style=dask_style, name=test_name)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[tuple[str, bool], str]:
    """(case, dask_style) -> source, once every source passed in a clean process."""
    root = tmp_path_factory.mktemp("reproducers")
    shadow = root / "shadow"
    for package in ("replay", "schemas"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(REFUSE)
    (shadow / "cli.py").write_text(REFUSE)
    tests = root / "tests"
    tests.mkdir()
    # dask's own conftest makes its fixtures available the same way
    (tests / "conftest.py").write_text("from distributed.utils_test import ws  # noqa: F401\n")
    (tests / "test_00_canary.py").write_text(CANARY)
    sources = {}
    keys = [(n, s) for n in CASES for s in (False, True)] + [(n, False) for n in PLAIN_ONLY]
    for name, dask_style in keys:
        sources[name, dask_style] = _source(name, dask_style)
        suffix = "_dask_style" if dask_style else ""
        (tests / f"test_{name}{suffix}.py").write_text(sources[name, dask_style])
    files = sorted(p.name for p in tests.glob("test_*.py"))
    # another hash seed than this session's: the test must not depend on it
    env = {**os.environ, "PYTHONPATH": str(shadow), "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *files],
        cwd=tests, env=env, capture_output=True, text=True, timeout=120,
    )
    passed = set(re.findall(r"^PASSED (\S+)::", proc.stdout, re.M))
    assert "test_00_canary.py" in passed, proc.stdout + proc.stderr
    failed = [f for f in files if f not in passed]
    assert not failed, f"{failed}\n{proc.stdout[-6000:]}"
    return sources


def calls(source: str) -> set[str]:
    """Dotted names of everything the source calls."""
    def dotted(node):
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return "?"

    return {dotted(n.func) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)}


def imported_modules(source: str) -> set[str]:
    tree = ast.parse(source)
    out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return out | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def has(source: str, *snippets: str) -> None:
    for snippet in snippets:
        assert snippet in source, f"{snippet!r} not in:\n{source}"


def test_every_reproducer_passes_without_dask_replay(generated):
    allowed = {
        "pytest",
        "dask",
        "distributed.worker_state_machine",
        "distributed.protocol.serialize",
        "distributed.utils_test",
    }
    for name, source in generated.items():
        assert imported_modules(source) <= allowed, name


def test_6705_stuck(generated):
    source = generated["6705_stuck", False]
    has(
        source,
        "def test_6705_stuck():\n",
        'ws = WorkerState(address="127.0.0.1:1")\n',
        'ws2 = "127.0.0.1:2"\n',
        "# the scheduler asks the worker to compute 'y', whose dependency 'x' is on\n",
        'ComputeTaskEvent.dummy("y", who_has={"x": [ws2]}, stimulus_id="s1")',
        # one instruction: black's layout, no trailing comma
        "    assert instructions == [\n"
        '        GatherDep(worker=ws2, to_gather={"x"}, total_nbytes=1, stimulus_id="s1")\n'
        "    ]\n",
        "# the transfer of 'x' from 127.0.0.1:2 fails with Exception('boom')",
        'Exception("boom"), worker=ws2, total_nbytes=1, stimulus_id="s2"',
        # the exception object and traceback are not reproducible: matched loosely
        'TaskErredMsg.match(\n            key="x",\n            run_id=-1,',
        '\n    assert ws.tasks["y"].state == "waiting"\n',
        "flip this assertion",
        "Shrunk from 1234 to 2 events",
        "'--stuck'",
    )
    # a plain test builds its own state; nothing to switch off
    assert "ws.validate = False" not in source


def test_6705_dask_style(generated):
    source = generated["6705_stuck", True]
    has(source, "def test_6705_stuck_dask_style(ws):\n", 'ws2 = "127.0.0.1:2"\n')
    assert "WorkerState(" not in source
    # the state is broken and dask's fixture validates it on teardown
    assert source.rstrip().endswith("ws.validate = False")


def test_6705_invalid(generated):
    for dask_style in (False, True):
        has(
            generated["6705_invalid", dask_style],
            "import pytest\n",
            "    with pytest.raises(AssertionError):\n        ws.validate_state()\n",
            f"worker_state_machine.py:{INVALID_6705.line}",
        )
    has(generated["6705_invalid", False], 'WorkerState(address="127.0.0.1:1", validate=False)')
    has(generated["6705_invalid", True], "recorded with validate=False")


def test_flight_constrained_paused(generated):
    has(generated["flight", False], 'assert ws.tasks["x"].state == "flight"')
    has(
        generated["constrained", False],
        'WorkerState(address="127.0.0.1:1", resources={"R": 1.0})',
        'resource_restrictions={"R": 2.0}',
        "assert instructions == []",
        'assert ws.tasks["x"].state == "constrained"',
    )
    has(
        generated["constrained", True],
        'ws.total_resources = {"R": 1.0}\n    ws.available_resources = {"R": 1.0}\n',
    )
    paused = generated["paused", False]
    has(paused, 'ws.handle_stimulus(PauseEvent(stimulus_id="s1"))', '["x"].state == "ready"')
    assert paused.count("assert instructions == []") == 2


def test_in_state_and_expr(generated):
    has(
        generated["in_state", False],
        '[Execute(key="x", stimulus_id="s1")]',
        'ExecuteSuccessEvent.dummy("x", stimulus_id="s2")',
        'TaskFinishedMsg.match(key="x", run_id=1, nbytes=1, stimulus_id="s2")',
        'assert ws.tasks["x"].state == "memory"',
    )
    has(generated["expr", True], "\n    assert not ws.running and len(ws.ready) == 1\n")


def test_raises(generated):
    has(
        generated["raises", False],
        "with pytest.raises(InvalidTransition, match=r\"'x' :: memory->long-running\"):",
        'SecedeEvent(key="x", compute_duration=1.0, stimulus_id="s2")',
    )
    has(
        generated["raises_in_handler", True],
        "with pytest.raises(AssertionError):\n        ws.handle_stimulus(",
        "but the worker has no task 'x'",
    )


def test_tuple_keys_and_resources(generated):
    has(
        generated["tuple_keys", False],
        'ComputeTaskEvent.dummy(\n            ("x", 0), resource_restrictions={"R": 2.0}',
        'ws.total_resources = {"R": 2.0}\n    ws.available_resources = {"R": 2.0}\n',
        '[Execute(key=("x", 0), stimulus_id="s2")]',
        'assert ws.tasks[("x", 0)].state == "executing"',
    )


def test_every_event_class(generated):
    source = generated["every_event", True]
    has(
        source,
        'ws3 = "127.0.0.2:3"\n',
        'GatherDep(worker=ws3, to_gather={"x"}, total_nbytes=1, stimulus_id="s3")',
        'LongRunningMsg(key="y", run_id=0, compute_duration=0.5, stimulus_id="s7")',
        'StealResponseMsg(key="b", state="ready", stimulus_id="s17")',
        'ReleaseWorkerDataMsg(key="w", stimulus_id="s13")',
        '[RescheduleMsg(key="c", stimulus_id="s23")]',
        # dask's sizeof of bytes is their length
        'data={"x": b"' + "x" * 50 + '"}',
    )
    for line in source.splitlines():
        assert len(line) <= 88, line


def test_keys_from_a_set_are_compared_as_a_set(generated):
    has(
        generated["busy", False],
        'RetryBusyWorkerLater(worker=ws2, stimulus_id="s2")',
        'RequestRefreshWhoHasMsg.match(stimulus_id="s2")',
        'assert set(instructions[1].keys) == {"x", "y"}',
    )


def test_constructor_when_no_shortcut_fits(generated):
    has(
        generated["exception_text", False],
        "exception=Serialize(Exception(\"CommClosedError('gone')\"))",
        "exception_text=\"CommClosedError('gone')\"",
    )
    has(
        generated["data_size", False],
        '{"distributed.scheduler.default-data-size": 2048}',
        "_default_data_size.cache_clear()",
        "total_nbytes=2048",
        'data={"x": SizeOf(100)}',
        "start=10.5",
        "stop=11.0",
    )
    has(generated["data_size_zz_after", False], "total_nbytes=1024")
    has(
        generated["log_length", False],
        'with dask.config.set({"distributed.admin.low-level-log-length": 7}):',
    )


def test_hostile_log_content_stays_inert(generated):
    for dask_style in (False, True):
        source = generated["hostile", dask_style]
        tree = ast.parse(source)
        expected = {
            "ComputeTaskEvent.dummy",
            "GatherDepFailureEvent.from_exception",
            "Exception",
            "GatherDep",
            "TaskErredMsg.match",
            "ws.handle_stimulus",
        } | ({"WorkerState"} if not dask_style else set())
        assert calls(source) == expected
        assert imported_modules(source) == {"distributed.worker_state_machine"}
        func = tree.body[-1]
        assert isinstance(func, ast.FunctionDef) and len(tree.body) == 2
        # the texts survive exactly, as data
        constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert {K, K2, HOSTILE_PEER, "s1\n#", "s2'"} <= constants
        assert not any(line.lstrip().startswith(("import os", "__import__")) for line in source.splitlines())
        for line in source.splitlines():
            assert line.isprintable() or not line, line
        assert 'w"""\nimport os' not in ast.get_docstring(func)


def test_unparsable_expression_is_refused():
    events = [PauseEvent(stimulus_id="s1")]
    for bad in ("ws.running ==", "x')\nimport os", "1; 2"):
        with pytest.raises(ValueError, match="not a Python expression"):
            pytest_source(inputs(), events, Expr(bad), NARRATIVE)


def test_outcome_that_does_not_hold_is_refused():
    events = [ComputeTaskEvent.dummy("x", stimulus_id="s1")]
    with pytest.raises(ValueError, match="do not reproduce"):
        pytest_source(inputs(), events, InState("x", "memory"), NARRATIVE)
    with pytest.raises(ValueError, match="does not hold"):
        pytest_source(inputs(), events, Expr("ws.tasks['x'].state == 'memory'"), NARRATIVE)
    with pytest.raises(ValueError, match="name the test lacks"):
        pytest_source(inputs(), events, Expr("os.getcwd()"), NARRATIVE)
    with pytest.raises(ValueError, match="does not raise"):
        pytest_source(inputs(), events, Raises("KeyError"), NARRATIVE)
    with pytest.raises(ValueError, match="passes"):
        pytest_source(inputs(), events, INVALID_6705, NARRATIVE)


def test_literals_round_trip_or_are_refused():
    for value in (math.inf, -math.inf, ("x", 0, 1.5), set(), {"a": [1, (2,)]}, b"\x00'\"", "é\u2028"):
        text = checked_literal(value)
        assert "\n" not in text
    assert checked_literal(math.inf) == 'float("inf")'
    assert checked_literal(set()) == "set()"
    assert checked_literal(("x",)) == '("x",)'

    class Sneaky(str):
        def __repr__(self):
            return "__import__('os')"

    for bad in (Sneaky("x"), object(), frozenset({1}), SizedValue(3)):
        with pytest.raises(ValueError):
            checked_literal(bad)
    with pytest.raises(ValueError, match="cannot write"):
        pytest_source(inputs(), [ComputeTaskEvent.dummy(Sneaky("x"), stimulus_id="s1")],
                      InState("x", "executing"), NARRATIVE)


def _waiting_ready_unqueued(self, ts, *, stimulus_id):
    # the bug under test: the task is marked ready but never queued
    ts.state = "ready"
    self.waiting.discard(ts)
    return {}, []


def test_dask_style_expects_an_assertion_its_validation_trips(monkeypatch):
    monkeypatch.setitem(wsm.WorkerState._TRANSITIONS_TABLE, ("waiting", "ready"), _waiting_ready_unqueued)
    stimuli = [wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1")]
    outcome = Stuck("x", "ready", "ready, never queued")
    # recorded without validation, the task just stays ready; dask's ws
    # fixture validates, and the first call trips validate_task: the test
    # expects the assertion at that step instead of failing to be written
    plain = pytest_source(inputs(validate=False), stimuli, outcome, NARRATIVE)
    assert 'assert ws.tasks["x"].state == "ready"' in plain
    styled = pytest_source(inputs(validate=False), stimuli, outcome, NARRATIVE, dask_style=True)
    assert "with pytest.raises(InvalidTaskState) as excinfo:" in styled
    assert "assert isinstance(excinfo.value.__cause__, AssertionError)" in styled
    assert "ws.validate = False" in styled and "ws.tasks[" not in styled.split('"""')[-1]
    # and it holds: run it as dask's suite would, with its ws fixture
    namespace: dict = {}
    exec(compile(styled, "<reproducer>", "exec"), namespace)  # our own source, just written
    namespace["test_repro"](wsm.WorkerState(address="127.0.0.1:1", transition_counter_max=50_000, validate=True))


# --- the expected behaviour, as a commented alternative ------------------------------------


def _cancelled_memory_raises(self, ts, value, run_id, *, stimulus_id):
    # the bug under test: a cancelled task whose execution ends raises
    # instead of being forgotten
    raise RuntimeError(f"cannot forget cancelled task {ts.key!r}")


def _run_test(source: str) -> None:
    namespace: dict = {}
    exec(compile(source, "<reproducer>", "exec"), namespace)  # our own source, just written
    namespace["test_repro"]()


def test_a_raising_transition_carries_what_a_correct_worker_does(monkeypatch):
    from replay import shrinker as s
    from replay.testcase import once_fixed

    stimuli = [
        ComputeTaskEvent.dummy("x", stimulus_id="s1"),
        wsm.FreeKeysEvent(keys=["x"], stimulus_id="s2"),
        ExecuteSuccessEvent.dummy("x", stimulus_id="s3"),
    ]
    header = {"kind": "header", "worker": "127.0.0.1:1", "deterministic": True, "hash_seed": "6640",
              "from_empty": True, "state": s._default_state()}
    with monkeypatch.context() as m:
        m.setitem(wsm.WorkerState._TRANSITIONS_TABLE, ("cancelled", "memory"), _cancelled_memory_raises)
        run = s.replay_stimuli(header, stimuli)
        assert isinstance(run.exception, RuntimeError)
        # the execution's end answers the one Execute the task got: a correct
        # worker receives it too, so the cause is in how it is handled
        outcome = s.RaisesPredicate().outcome(run)
        assert outcome.handled_when_fixed
        source = pytest_source(inputs(), stimuli, outcome, NARRATIVE)
        fixed = once_fixed(source)
        _run_test(source)  # the bug's test passes with the bug
        with pytest.raises(RuntimeError, match="cannot forget cancelled task"):
            _run_test(fixed)  # the expected behaviour does not hold with it
    assert "# expected, once fixed: a correct worker handles this event without raising" in source
    assert "with pytest.raises" not in fixed and "\n    ws.validate_state()\n" in fixed
    # stock dask is the correct worker here: the expected behaviour holds, the bug's test fails
    _run_test(fixed)
    with pytest.raises(pytest.fail.Exception):
        _run_test(source)


def test_no_alternative_when_the_raising_event_answers_a_repeated_request(monkeypatch):
    from replay import shrinker as s

    original = wsm.WorkerState._ensure_computing

    def twice(self):  # the bug under test: every Execute is issued twice
        recs, instructions = original(self)
        return recs, instructions + [i for i in instructions if isinstance(i, wsm.Execute)]

    stimuli = [ComputeTaskEvent.dummy("x", stimulus_id="s1"), ExecuteSuccessEvent.dummy("x", stimulus_id="s2"),
               ExecuteSuccessEvent.dummy("x", stimulus_id="s3")]
    header = {"kind": "header", "worker": "127.0.0.1:1", "deterministic": True, "hash_seed": "6640",
              "from_empty": True, "state": s._default_state()}
    monkeypatch.setattr(wsm.WorkerState, "_ensure_computing", twice)
    run = s.replay_stimuli(header, stimuli)
    # the second reply answers the repeated Execute: once that is fixed it
    # never comes, so nothing says how a correct worker would handle it
    assert run.exception is not None and run.stopped == 2
    assert not s.RaisesPredicate().outcome(run).handled_when_fixed
