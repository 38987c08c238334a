"""Functions written as source at import, the one place the project runs ``exec``.

The recorder's encoders, the replay's decoders and the compiled schema's tag
checks are each generated per class, with its fields spelled out: a loop over
the fields costs as much as the fields' own work, on every event of every log.
The source is made from the project's own names (dask's dataclass field
names, the schema's tag names), never from a log.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def function(source: str, env: dict[str, Any], label: str) -> Callable:
    """The one function ``source`` defines, with ``env`` as its globals;
    tracebacks name its file ``<label>``."""
    before = set(env)
    exec(compile(source, f"<{label}>", "exec"), env)
    (made,) = [v for k, v in env.items() if k not in before and k != "__builtins__"]
    return made
