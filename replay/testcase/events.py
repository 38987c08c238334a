"""Events as the test writes them: when a written event is the recorded one."""
from __future__ import annotations

import ast
import builtins
import dataclasses
from typing import Any

from dask.sizeof import sizeof
from distributed import worker_state_machine as wsm

from replay.testcase.literals import _is_literal, _same
from replay.testcase.prose import _prose
from schemas.convert import SizedValue

# Events and instructions ----------------------------------------------------

#: Event fields whose objects the log does not keep and the state machine only
#: passes on (to TaskErredMsg / TaskFinishedMsg, which are matched loosely)
_PASSED_ON = frozenset({"exception", "traceback", "type"})
_SMALL_DATA = 64


def _equivalent(a: wsm.StateMachineEvent, b: wsm.StateMachineEvent) -> bool:
    """Would the state machine treat ``a`` (written) and ``b`` (given) alike?"""
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name in _PASSED_ON:
            continue
        if f.name == "run_spec":
            # only whether there is one matters: the code is never run
            if (x is None) != (y is None):
                return False
        elif f.name == "data":
            if not (_same(list(x), list(y)) and all(_same_data(x[k], y[k]) for k in x)):
                return False
        elif f.name == "value":
            if not _same_data(x, y):
                return False
        elif not _same(x, y):
            return False
    return True


def _same_data(written: Any, original: Any) -> bool:
    """Data values are opaque to the state machine, except for their size."""
    if _is_literal(original):
        return _same(written, original)
    return _data_size(written) == _data_size(original)


def _data_size(v: Any) -> int:
    """What the state machine's ``sizeof`` makes of a data value."""
    # a decoded log's stand-in knows its size, registered with dask or not
    return v.nbytes if type(v) is SizedValue else sizeof(v)


def _parse_expr(expr: str) -> ast.Expression:
    if type(expr) is not str:
        raise ValueError("the expression must be a string")
    try:
        return ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a Python expression: {_prose(expr, 80)} ({e.msg})") from None


def _exception_class(name: str) -> type[BaseException]:
    cls = getattr(wsm, name, None) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise ValueError(f"unknown exception class {name!r}")
    return cls


def _builtin_exception(text: str) -> BaseException | None:
    """The built-in exception whose repr is ``text``, e.g. ``Exception('boom')``."""
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and not call.keywords
        and isinstance(getattr(builtins, call.func.id, None), type)
        and issubclass(getattr(builtins, call.func.id), BaseException)
    ):
        return None
    try:
        args = [ast.literal_eval(a) for a in call.args]
        exc = getattr(builtins, call.func.id)(*args)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None  # not literals, or e.g. an ExceptionGroup without exceptions
    return exc if repr(exc) == text else None
