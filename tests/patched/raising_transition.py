"""A transition that raises: storing the result of a task whose key starts
with ``boom`` raises ``TypeError`` half-way through ``handle_stimulus``."""
from distributed import worker_state_machine as wsm

_executing_memory = wsm.WorkerState._transition_executing_memory


def _transition_executing_memory(self, ts, value, run_id, *, stimulus_id):
    if isinstance(ts.key, str) and ts.key.startswith("boom"):
        raise TypeError(f"cannot store {ts.key!r}")  # the bug
    return _executing_memory(self, ts, value, run_id, stimulus_id=stimulus_id)


wsm.WorkerState._transition_executing_memory = _transition_executing_memory
# the state machine looks transitions up in this table, not by name
wsm.WorkerState._TRANSITIONS_TABLE[("executing", "memory")] = _transition_executing_memory
