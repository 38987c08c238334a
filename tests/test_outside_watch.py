"""The check for changes made outside ``handle_stimulus`` watches what changed
instead of scanning the worker; a property test holds it to the answer of a
full scan before and after every call (the way it was checked before)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from distributed import worker_state_machine as wsm

from replay.record import OutsideWatch, Session

STATES = ("released", "waiting", "ready", "executing", "memory", "error", "fetch", "flight")


class ListWriter:
    def __init__(self):
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)


def scan(ws: wsm.WorkerState) -> tuple[dict, set]:
    """The slow way: every task's state and every data key."""
    return {k: ts.state for k, ts in ws.tasks.items()}, set(ws.data)


def scanned_changes(before: tuple[dict, set], after: tuple[dict, set]) -> list[str]:
    (states0, data0), (states1, data1) = before, after
    out = [f"task {k!r}: {states0[k]} -> {states1[k]}" for k in states1 if states0.get(k) not in (None, states1[k])]
    out += [f"data {k!r}: {'removed' if k in data0 else 'added'}" for k in data0 ^ data1]
    return sorted(out)


def test_the_hook_is_there_only_while_a_session_watches():
    dasks = wsm.TaskState.__setattr__
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1)
    session = Session(ws, writer=ListWriter(), watch_tasks=True)
    assert wsm.TaskState.__setattr__ is dasks  # not before the header
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    assert wsm.TaskState.__setattr__ is not dasks
    unwatched = Session(wsm.WorkerState(address="tcp://127.0.0.1:2"), writer=ListWriter())
    unwatched.ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", stimulus_id="s1"))
    session.close("test")
    assert wsm.TaskState.__setattr__ is dasks
    assert "__setattr__" not in wsm.TaskState.__dict__
    unwatched.close("test")


def test_what_the_state_machine_does_is_not_an_outside_change():
    writer = ListWriter()
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1)
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
    # another worker of the same process, not recorded, between two calls
    other = wsm.WorkerState(address="tcp://127.0.0.1:2", nthreads=1)
    other.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="o1"))
    # assigned and put back: nothing changed
    ws.tasks["x"].state = "error"
    ws.tasks["x"].state = "memory"
    ws.handle_stimulus(wsm.FreeKeysEvent(keys=["x"], stimulus_id="s3"))
    session.close("test")
    assert [r for r in writer.records if r["kind"] == "resources"] == []


def test_a_data_key_written_directly_and_a_task_dropped_directly_are_named():
    writer = ListWriter()
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=2)
    session = Session(ws, writer=writer, watch_tasks=True)
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    ws.handle_stimulus(wsm.ExecuteSuccessEvent.dummy("x", stimulus_id="s2"))
    ws.data["z"] = 1  # upload_file and tests write worker memory so
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("y", stimulus_id="s3"))
    del ws.tasks["y"]
    ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("w", stimulus_id="s4"))
    session.close("test")
    notes = [(r["seq"], r["outside"]) for r in writer.records if r["kind"] == "resources"]
    assert notes == [(3, ["data 'z': added"]), (4, ["tasks: 2 -> 1"])]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("compute"), st.integers(0, 5)),
        st.tuples(st.just("finish"), st.integers(0, 5)),
        st.tuples(st.just("free"), st.integers(0, 5)),
        st.tuples(st.just("assign"), st.integers(0, 5), st.sampled_from(STATES)),
        st.tuples(st.just("write"), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_the_watch_names_what_a_full_scan_finds(actions):
    writer = ListWriter()
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=2, validate=False)
    session = Session(ws, writer=writer, watch_tasks=True)
    expected: dict[int, list[str]] = {}
    after = ({}, set())
    written = 0
    try:
        for action in actions:
            kind, n = action[0], action[1]
            key = f"t{n}"
            if kind == "assign":
                if key in ws.tasks:
                    ws.tasks[key].state = action[2]
                continue
            if kind == "write":
                if written < 3:  # at most a few per gap: the record names five
                    ws.data[f"direct-{len(ws.data)}-{n}"] = n
                    written += 1
                continue
            event = {
                "compute": lambda: wsm.ComputeTaskEvent.dummy(key, stimulus_id=f"s{session.seq}"),
                "finish": lambda: wsm.ExecuteSuccessEvent.dummy(key, stimulus_id=f"s{session.seq}"),
                "free": lambda: wsm.FreeKeysEvent(keys=[key], stimulus_id=f"s{session.seq}"),
            }[kind]()
            changes = scanned_changes(after, scan(ws))
            if len(changes) > 5:
                break  # the record would cut the list short
            if changes:
                expected[session.seq + 1] = changes
            try:
                ws.handle_stimulus(event)
            except Exception:  # a state assigned by hand may break the next transition
                pass
            after = scan(ws)
            written = 0
    finally:
        session.close("test")
    found = {r["seq"]: sorted(r["outside"]) for r in writer.records if r["kind"] == "resources"}
    assert found == expected


def test_an_outside_watch_alone_reports_since_it_remembered():
    ws = wsm.WorkerState(address="tcp://127.0.0.1:1", nthreads=1)
    watch = OutsideWatch(ws)
    try:
        ws.handle_stimulus(wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"))
        # not inside a recorded call: the state machine's own assignments count
        assert watch.changes() == ["task 'x': absent -> executing", "tasks: 0 -> 1"]
        watch.remember()
        assert watch.changes() == []
    finally:
        watch.close()
