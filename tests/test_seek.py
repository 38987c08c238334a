"""Seeking must land on exactly the state a linear replay from step 1 reaches."""
from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import replay
from replay.seek import Seeker

def of_state(replayer, fn):
    """A view for :meth:`Seeker.view`: ``fn`` of the worker state there."""
    return fn(replayer.ws)


@pytest.fixture(scope="module")
def history(fixture_path):
    return max(replay.open(fixture_path("cluster-log.jsonl.gz")).workers, key=lambda w: w.events)


@pytest.fixture(scope="module")
def seeker(history):
    with Seeker(history, every=97) as s:
        s.prepare()
        yield s


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_seek_equals_linear_replay(history, seeker, data, fingerprint_ws):
    pos = data.draw(st.integers(0, history.events))
    assert seeker.view(pos, of_state, fingerprint_ws) == fingerprint_ws(history.state_at(pos))


def test_seek_by_stimulus_id_is_after_its_last_step(history, seeker, fingerprint_ws):
    step = history.events // 2
    call = next(history.calls(step, step))
    sid = call.events[step - call.first].stimulus_id
    last = history.position(sid)
    assert last >= step
    assert seeker.view(sid, of_state, fingerprint_ws) == seeker.view(last, of_state, fingerprint_ws)


def test_backward_then_forward_in_process(history, fingerprint_ws):
    late = fingerprint_ws(history.state_at(history.events))
    early = fingerprint_ws(history.state_at(3))
    assert early != late
    assert fingerprint_ws(history.state_at(history.events)) == late


def _spin(replayer, seconds):
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return replayer.seq


def test_a_seek_reports_the_cpu_time_of_the_fork_that_answered(seeker):
    # the view burns 50 ms of CPU in the fork: the seeker is told of it, not
    # of the wall time (and this process spent next to none)
    import time

    c = time.process_time()
    assert seeker.view(5, _spin, 0.05) == 5
    here = time.process_time() - c
    assert seeker.seek_cpu >= 0.05
    assert here < seeker.seek_cpu
    seeker.view(5, _spin, 0.0)
    assert seeker.seek_cpu < 0.05  # each seek's own


def test_the_first_pass_keeps_its_snapshots_within_the_budget(history, fingerprint_ws):
    """Fewer snapshots than are taken between two measures of their memory
    (a long log spreads them out) are still measured once the pass ends: a
    budget they pass thins them, and seeks still land on the replayed state."""
    from replay.seek import MEASURE_EVERY

    every = history.events // 5
    with Seeker(history, every=every, budget_mb=1) as s:
        s.prepare()
        assert s.every > every, "a budget of 1 MB is passed by any snapshot: they were thinned"
        assert len(s.snapshots) <= 2 < history.events // every < MEASURE_EVERY
        pos = history.events - 3
        assert s.view(pos, of_state, fingerprint_ws) == fingerprint_ws(history.state_at(pos))
