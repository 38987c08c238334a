"""dask-replay: record and replay the dask.distributed worker state machine."""
from replay.logfile import LogError
from replay.record import Recorder

__all__ = ["LogError", "Recorder"]
