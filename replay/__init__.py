"""dask-replay: record and replay the dask.distributed worker state machine."""
from replay.engine import Divergence, Replayer, ReplayError
from replay.history import ClusterHistory, WorkerHistory, open
from replay.logfile import LogError
from replay.record import Recorder

__all__ = [
    "ClusterHistory",
    "Divergence",
    "LogError",
    "Recorder",
    "ReplayError",
    "Replayer",
    "WorkerHistory",
    "open",
]
