"""Seeking must land on exactly the state a linear replay from step 1 reaches."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import replay
from replay.seek import Seeker

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "cluster-log.jsonl.gz")


def fingerprint_ws(ws) -> dict:
    """Everything observable, in iteration order: order decides later transitions."""
    keys = lambda tss: [ts.key for ts in tss]  # noqa: E731
    return {
        "tasks": [(k, ts.state, ts.previous, ts.next, ts.nbytes) for k, ts in ws.tasks.items()],
        "ready": keys(ws.ready.sorted()),
        "constrained": keys(ws.constrained.sorted()),
        "executing": keys(ws.executing),
        "long_running": keys(ws.long_running),
        "waiting": keys(ws.waiting),
        "in_flight_tasks": keys(ws.in_flight_tasks),
        "in_flight_workers": {w: sorted(map(repr, ks)) for w, ks in ws.in_flight_workers.items()},
        "data_needed": {w: keys(h.sorted()) for w, h in ws.data_needed.items() if h},
        "busy_workers": sorted(ws.busy_workers),
        "missing": keys(ws.missing_dep_flight),
        "has_what": {w: list(ks) for w, ks in ws.has_what.items() if ks},
        "resources": (dict(ws.total_resources), dict(ws.available_resources)),
        "running": ws.running,
        "nbytes": ws.nbytes,
        "transition_counter": ws.transition_counter,
    }


def fingerprint(replayer) -> dict:
    return fingerprint_ws(replayer.ws)


@pytest.fixture(scope="module")
def history():
    if not os.path.exists(FIXTURE):
        pytest.fail(f"missing fixture {FIXTURE}: run examples/record_cluster.py")
    return max(replay.open(FIXTURE).workers, key=lambda w: w.events)


@pytest.fixture(scope="module")
def seeker(history):
    with Seeker(history, every=97) as s:
        s.prepare()
        yield s


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_seek_equals_linear_replay(history, seeker, data):
    pos = data.draw(st.integers(0, history.events))
    assert seeker.view(pos, fingerprint) == fingerprint_ws(history.state_at(pos))


def test_seek_by_stimulus_id_is_after_its_last_step(history, seeker):
    step = history.events // 2
    call = next(history.calls(step, step))
    sid = call.events[step - call.first].stimulus_id
    last = history.position(sid)
    assert last >= step
    assert seeker.view(sid, fingerprint) == seeker.view(last, fingerprint)


def test_backward_then_forward_in_process(history):
    late = fingerprint_ws(history.state_at(history.events))
    early = fingerprint_ws(history.state_at(3))
    assert early != late
    assert fingerprint_ws(history.state_at(history.events)) == late
