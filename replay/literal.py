"""dask values as dask prints them: the one formatter for keys and event fields.

Every view shows keys, peers and event fields as Python literals, the way a
dask maintainer reads them in ``ws.story()`` or a test: tuples as tuples,
sets as sets, ``who_has={('x', 0): ('tcp://…',)}``. Never the log codec's
tags. A long value is cut at a token boundary (a whole element, never half a
key) and says how much was cut, in words: ``['a', 'b', … 98 more]``,
``'random_sample-a3e0… (28 characters cut)'``.

Strings go through ``repr``, which escapes control characters, so a hostile
key prints as its literal and cannot move the cursor or inject markup.
"""
from __future__ import annotations

import dataclasses
from typing import Any

#: how long a value may get before it is cut, unless the caller says otherwise
LIMIT = 200


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int):
        self.left = left


def literal(value: Any, limit: int | None = LIMIT) -> str:
    """``value`` as a Python literal, at most about ``limit`` characters."""
    out: list[str] = []
    _write(value, out, _Budget(limit if limit is not None else 1 << 62))
    return "".join(out)


def key_text(key: Any) -> str:
    """A task key as ``repr`` shows it in dask: ``'x'``, ``5``, ``('x', 0)``; never cut."""
    return literal(key, None)


def short_key(key: Any, token: int = 4) -> str:
    """A task key as short as dask's dashboard names tasks, still telling
    graphs apart: the name ``dask.utils.key_split`` finds, the first
    ``token`` characters of what follows it (the graph's token), every
    index whole: ``('random_sample-a3e0…', 6, 4)``, ``'int-c0a8…'``;
    ``'x-1'`` and ``('tree', 2, 30)`` stay as they are. :func:`key_text` is
    the full key."""
    name = key_name(key)
    if type(name) is str:
        prefix = task_name(name)
        if name.startswith(prefix + "-") and len(name) - len(prefix) - 1 > token + 1:
            name = f"{name[:len(prefix) + 1 + token]}…"
        elif prefix == "data" and name != "data":  # key_split's name for a bare token
            name = f"{name[:token]}…"
    if type(key) is tuple and key:
        return literal((name, *key[1:]), None)
    return literal(name, None)


#: ``dask.utils.key_split`` of each key name met: answered here, or learnt
#: from a log's index, which wrote down every name of its log (importing
#: dask costs ~100 ms, more than a fresh process's answer from the index)
_key_names: dict[str, str] = {}


def key_name(key: Any) -> Any:
    """The part of a key dask names its tasks by: the first of a tuple, else the key."""
    return key[0] if type(key) is tuple and key else key


def task_name(key: Any) -> str:
    """``dask.utils.key_split(key)``: what dask names the tasks of ``key``,
    ``'random_sample'`` for ``('random_sample-a3e0…', 6, 4)``."""
    name = key_name(key)
    split = _key_names.get(name) if type(name) is str else None
    if split is None:
        from dask.utils import key_split

        split = key_split(key)
        if type(name) is str:
            _key_names[name] = split
    return split


def learn_key_names(names: dict[str, str]) -> None:
    """Names ``key_split`` gave key names (in a process with the same dask),
    so that :func:`task_name` need not import dask for them."""
    _key_names.update(names)


_PLAIN = (str, int, float, bool, type(None))


def _write(value: Any, out: list[str], budget: _Budget) -> None:
    if type(value) in _PLAIN and (type(value) is not str or len(value) < budget.left):
        # the common case, first: most of what views print are short keys and numbers
        text = repr(value)
        out.append(text)
        budget.left -= len(text)
        return
    if isinstance(value, (tuple, list, set, frozenset, dict)):
        _container(value, out, budget)
        return
    if hasattr(value, "key") and type(value).__name__ == "TaskState":
        _write(value.key, out, budget)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _dataclass(value, out, budget)
        return
    text = repr(value)
    if len(text) > budget.left and isinstance(value, (str, bytes)) and budget.left > 24:
        keep = budget.left - 22
        text = f"{text[:keep]}… ({len(text) - keep} characters cut)"
    out.append(text)
    budget.left -= len(text)


def _flat(x: Any) -> bool:
    """A plain value, or a tuple of them (a key): ``repr`` spells it as we do."""
    t = type(x)
    return t in _PLAIN or (t is tuple and all(type(y) in _PLAIN or (type(y) is tuple and _flat(y)) for y in x))


def _container(value: Any, out: list[str], budget: _Budget) -> None:
    t = type(value)
    if (t is tuple or t is list or t is dict) and len(value) < budget.left:
        # most values are keys, lists of keys and who_has maps: repr, in C,
        # spells them exactly as below when nothing needs cutting
        if all(map(_flat, value)) and (t is not dict or all(map(_flat, value.values()))):
            text = repr(value)
            if len(text) <= budget.left:
                out.append(text)
                budget.left -= len(text)
                return
    if isinstance(value, dict):
        items: list = list(value.items())
        opening, closing = "{", "}"
    elif isinstance(value, (set, frozenset)):
        if not value:
            text = "set()" if isinstance(value, set) else "frozenset()"
            out.append(text)
            budget.left -= len(text)
            return
        # sets print in hash order: sorted, the same in every process
        items = sorted(value, key=_order)
        opening, closing = "{", "}"
    elif isinstance(value, tuple):
        items = list(value)
        opening, closing = "(", ",)" if len(value) == 1 else ")"
    else:
        items = list(value)
        opening, closing = "[", "]"
    out.append(opening)
    budget.left -= len(opening) + len(closing)
    for i, item in enumerate(items):
        if i:
            out.append(", ")
            budget.left -= 2
        if budget.left <= 0:
            n = len(items) - i
            out.append(f"… {n} more" if i else f"{n} element{'' if n == 1 else 's'} cut")
            break
        if isinstance(value, dict):
            _write(item[0], out, budget)
            out.append(": ")
            budget.left -= 2
            _write(item[1], out, budget)
        else:
            _write(item, out, budget)
    out.append(closing)


def _dataclass(value: Any, out: list[str], budget: _Budget) -> None:
    name = type(value).__name__
    out.append(name + "(")
    budget.left -= len(name) + 2
    first = True
    for f in dataclasses.fields(value):
        if not f.repr:
            continue
        if not first:
            out.append(", ")
            budget.left -= 2
        first = False
        if budget.left <= 0:
            out.append("…")
            break
        out.append(f.name + "=")
        budget.left -= len(f.name) + 1
        _write(getattr(value, f.name), out, budget)
    out.append(")")


def _order(x: Any) -> tuple:
    # keys of one worker mix str, int and tuples: by type name, then value
    t = type(x)
    # the common types first, by identity: a view sorts thousands of keys
    if t is str:
        return ("str", 0, repr(x))
    if t is tuple:
        return ("tuple", 0, tuple([_order(v) for v in x]))
    if t is int or t is float:
        return ("number", x, "")
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ("number", x, "")
    if isinstance(x, tuple):
        return ("tuple", 0, tuple(_order(v) for v in x))
    return (type(x).__name__, 0, repr(x))


def sort_key(key: Any) -> tuple:
    """The order views list keys in: stable across processes and types."""
    return _order(key)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: tuples (keys too) as arrays, sets as
    sorted arrays, dicts with other than string keys as ``[key, value]``
    pairs, a task as its key. What the codec does to events, for the values
    views hold; non-finite floats become strings, as the codec spells them."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=_order)]
    if isinstance(value, dict):
        if all(type(k) is str for k in value):
            return {k: jsonable(v) for k, v in value.items()}
        return [[jsonable(k), jsonable(v)] for k, v in value.items()]
    if hasattr(value, "key") and type(value).__name__ == "TaskState":
        return jsonable(value.key)
    return repr(value)
