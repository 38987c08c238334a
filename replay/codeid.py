"""Which state machine replays: an identity of its code, not its version string.

An index holds what one replay observed; a replay through other code (a fix
imported with ``--import``, a patched or locally built ``distributed`` of the
same version) may observe something else, so an index is keyed on the code
that replays. :func:`live_digest` hashes the code objects reachable from
``distributed.worker_state_machine`` as imported — its functions, and the
methods, handlers and transition tables of its classes, including any
replaced by a patch. :func:`file_digest` hashes the same functions compiled
from the module's source file, so that a process which has not imported
``distributed`` (the index's query path never does) can still tell whether a
stock index fits: the installed file is unchanged and nothing patched it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable, Iterator
from types import CodeType, FunctionType, ModuleType
from typing import Any, Optional

MODULE = "distributed.worker_state_machine"


def _nested(code: CodeType) -> Iterator[CodeType]:
    yield code
    for c in code.co_consts:
        if isinstance(c, CodeType):
            yield from _nested(c)


#: left out on both sides: replay always hashes tasks by key (:mod:`replay.determinism`)
_REPLACED = frozenset({"TaskState.__hash__", "_key_hash"})


def _digest(codes: Iterable[CodeType]) -> str:
    """One hash of a set of function code objects (lambdas and comprehensions
    inside them included), independent of the order they were found in."""
    parts = set()
    for top in codes:
        if getattr(top, "co_qualname", top.co_name) in _REPLACED:
            continue
        for c in _nested(top):
            consts = tuple(_const(x) for x in c.co_consts if not isinstance(x, CodeType))
            parts.add(repr((c.co_qualname if hasattr(c, "co_qualname") else c.co_name, c.co_code,
                            consts, c.co_names, c.co_varnames)))
    h = hashlib.sha256()
    for p in sorted(parts):
        h.update(p.encode())
    return h.hexdigest()


def _const(x: Any) -> str:
    """A constant's text, the same under any hash seed (a frozenset's repr is not)."""
    if isinstance(x, frozenset):
        return "frozenset(" + ",".join(sorted(map(_const, x))) + ")"
    if isinstance(x, tuple):
        return "(" + ",".join(map(_const, x)) + ")"
    return repr(x)


def _functions(value: Any) -> Iterator[FunctionType]:
    """The functions behind a class attribute: methods, static and class
    methods, properties, single-dispatch registries, tables of functions."""
    if isinstance(value, FunctionType):
        yield value
    elif isinstance(value, (staticmethod, classmethod)):
        yield from _functions(value.__func__)
    elif isinstance(value, property):
        for f in (value.fget, value.fset, value.fdel):
            yield from _functions(f)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _functions(v)
    elif hasattr(value, "dispatcher") and hasattr(value.dispatcher, "registry"):  # singledispatchmethod
        for f in value.dispatcher.registry.values():
            yield from _functions(f)
    elif hasattr(value, "registry"):  # a single-dispatch function
        for f in value.registry.values():
            yield from _functions(f)
    elif hasattr(value, "__wrapped__"):  # lru_cache, wraps
        yield from _functions(value.__wrapped__)


#: the standard library's folder: its wrappers (dataclasses' repr guard) are no patch
_STDLIB = os.path.dirname(os.__file__)


def _generated(code: CodeType) -> bool:
    # dataclasses write __init__, __repr__, __eq__… from source text, and wrap
    # __repr__ in a function of their own: neither is the module's code
    return code.co_filename.startswith("<") or code.co_filename.startswith(_STDLIB)


@functools.lru_cache(maxsize=1)
def live_digest() -> str:
    """The digest of the state machine as this process has it.

    Computed once: ``--import`` patches before anything replays or reads an
    index, and a stepper asks for every view."""
    return _live_digest(sys.modules.get(MODULE) or importlib.import_module(MODULE))


def _live_digest(mod: ModuleType) -> str:
    # the names the source defines, whatever now stands behind them: a patch
    # replaces a method, a function or a whole class under the same name
    defined = _defined_names(mod.__file__)
    codes: dict[int, CodeType] = {}
    for name in defined:
        value = vars(mod).get(name)
        if inspect.isclass(value):
            for cls in value.__mro__[:-1]:  # not object
                for attr in vars(cls).values():
                    for f in _functions(attr):
                        codes[id(f.__code__)] = f.__code__
        else:
            for f in _functions(value):
                codes[id(f.__code__)] = f.__code__
    return _digest(c for c in codes.values() if not _generated(c))


@functools.lru_cache(maxsize=4)
def _defined_names(path: str) -> frozenset[str]:
    """Top-level names bound by ``def`` and ``class`` statements in ``path``."""
    with open(path, "rb") as f:
        module = compile(f.read(), path, "exec", dont_inherit=True)
    out = set()
    for c in module.co_consts:
        if isinstance(c, CodeType):
            out.add(c.co_name)
    return frozenset(out)


def file_digest(path: str) -> str:
    """The digest :func:`live_digest` gives for the module compiled from
    ``path``, unpatched."""
    with open(path, "rb") as f:
        source = f.read()
    module = compile(source, path, "exec", dont_inherit=True)
    return _digest(_function_codes(module))


def _function_codes(code: CodeType) -> Iterator[CodeType]:
    """The function code objects a module or class body defines (not nested
    ones: :func:`_digest` walks into those)."""
    for c in code.co_consts:
        if isinstance(c, CodeType):
            if c.co_flags & inspect.CO_NEWLOCALS:  # a function; a class body is not
                yield c
            else:
                yield from _function_codes(c)


def module_file() -> Optional[str]:
    """Where the state machine's source is, found without importing ``distributed``."""
    spec = importlib.util.find_spec("distributed")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "worker_state_machine.py")
    return path if os.path.exists(path) else None


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
