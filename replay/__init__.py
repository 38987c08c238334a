"""dask-replay: record and replay the dask.distributed worker state machine.

The public names load on first use, so that ``import replay.record`` inside a
live worker brings in the recorder alone, not the replay engine.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "BadInput", "ClusterHistory", "ClusterRecorder", "Divergence", "InexactReplay", "LogError", "NotFound", "Recorder",
    "ReplayError", "Replayer", "WorkerHistory", "open", "shrink",
]


def __getattr__(name: str) -> Any:
    if name in ("open", "ClusterHistory", "WorkerHistory"):
        from replay import history as module
    elif name in ("Replayer", "Divergence"):
        from replay import engine as module
    elif name in ("BadInput", "InexactReplay", "LogError", "NotFound", "ReplayError"):
        from replay import errors as module
    elif name == "Recorder":
        from replay import record as module
    elif name == "ClusterRecorder":
        from replay import scheduler_recorder as module
    elif name == "shrink":
        from replay import shrinker as module
    else:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    return getattr(module, name)
