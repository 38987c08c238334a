"""The one kind of error a user of ``replay`` is shown as a single line.

Everything that is the input's fault — a log that cannot be read, a position
or worker that does not exist, a log that cannot be replayed — is a
:class:`BadInput`, and the command line prints it as ``error: …`` and exits
with code 2. Any other exception is a bug in this project and keeps its
traceback. Nothing here imports beyond the standard library, so the recorder
can use it inside a live worker.
"""
from __future__ import annotations


class BadInput(Exception):
    """Input ``replay`` cannot use. ``str()`` is one line, naming the file and
    line where there is one."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        if path is None:
            text = message
        else:
            text = f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"
        super().__init__(text)


class LogError(BadInput):
    """A log cannot be read as a dask-replay log."""

    def __init__(self, path: str, line: int | None, message: str):
        super().__init__(message, path, line)


class NotFound(BadInput):
    """A worker, step, stimulus id or key the log does not have."""


class ReplayError(BadInput):
    """A log cannot be replayed: it does not start from the empty state, or the
    state machine raised where the recorded worker did not (at ``step``)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, *,
                 step: int | None = None):
        super().__init__(message, path, line)
        #: the step at which the state machine raised, when that is the reason
        self.step = step


class InexactReplay(ReplayError):
    """This process cannot replay a deterministic recording exactly: it hashes
    strings with another ``PYTHONHASHSEED``, or tasks by identity already.
    A replay here could take other transitions and report findings that are
    not in the log."""
