"""A stale ``in_flight_workers`` entry: after a transfer from a peer ends, the
worker still believes one is under way, so it never fetches from that peer
again and a later dependency stays in ``fetch`` for good."""
from distributed import worker_state_machine as wsm

_done_common = wsm.WorkerState._gather_dep_done_common


def _gather_dep_done_common(self, ev):
    yield from _done_common(self, ev)
    self.in_flight_workers[ev.worker] = set()  # the bug: the entry outlives its transfer


wsm.WorkerState._gather_dep_done_common = _gather_dep_done_common
