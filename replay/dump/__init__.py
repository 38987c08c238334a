"""Import the artefacts of ``Client.dump_cluster_state`` as a dask-replay log.

A cluster dump (``.msgpack.gz`` or ``.yaml``) holds, per worker, its
``WorkerState.stimulus_log`` (the events it handled, capped at
``distributed.admin.low-level-log-length``, without ``FindMissingEvent``), its
transition log, its tasks and its dask config; and the scheduler's view of
every task. :func:`import_dump` turns each worker into the records the
recorder writes (header, steps, end), adds its final state (``final``
records) and the scheduler's view (``scheduler`` records), and says in each
header whether the history is complete, that is, provably starts from the
empty state.

Events are rebuilt field by field through the log format's own codecs and
decoded as replay will decode them, so a dump the importer accepts is a log
the reader accepts. The modules, in the order a dump flows through them:

- :mod:`~replay.dump.read`: the file parsed as plain, bounded data (nothing
  unpickled or evaluated);
- :mod:`~replay.dump.keys`: the dump's mangled tuple keys turned back into
  dask keys;
- :mod:`~replay.dump.convert`: one worker's construction inputs and events in
  the log format;
- :mod:`~replay.dump.records`: the records of a worker (header, steps, final
  state, end) and of the scheduler;
- :mod:`~replay.dump.importer`: :func:`import_dump`, writing the validated
  log whole or not at all;
- :mod:`~replay.dump.final`: what an import wrote, read back, and a replay's
  final states compared with it.
"""
from replay.dump.final import (
    FinalComparison,
    FinalWorkerState,
    SchedulerView,
    compare_final_state,
    compare_worker,
    final_states,
    scheduler_state,
)
from replay.dump.importer import ImportReport, import_dump
from replay.dump.keys import Keys
from replay.dump.read import load_dump
from replay.dump.records import WorkerImport

__all__ = [
    "ImportReport", "WorkerImport", "import_dump", "load_dump", "final_states", "scheduler_state",
    "compare_final_state", "compare_worker", "FinalComparison", "FinalWorkerState", "SchedulerView", "Keys",
]
