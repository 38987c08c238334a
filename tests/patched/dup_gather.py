"""A duplicated ``GatherDep``: every transfer is asked for twice, so the
second reply finds no transfer under way and the state machine raises."""
from distributed import worker_state_machine as wsm

_ensure_communicating = wsm.WorkerState._ensure_communicating


def ensure_communicating(self, *, stimulus_id):
    recs, instructions = _ensure_communicating(self, stimulus_id=stimulus_id)
    doubled = []
    for inst in instructions:
        doubled.append(inst)
        if isinstance(inst, wsm.GatherDep):
            doubled.append(inst)  # the bug: the same request once more
    return recs, doubled


wsm.WorkerState._ensure_communicating = ensure_communicating
