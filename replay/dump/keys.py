"""The dump's mangled keys, turned back into dask keys.

``recursive_to_dict`` writes a tuple key as a list where it is a value
(``['y', 0]``) and as that list's ``str`` where it is a dict key
(``"['y', 0]"``). A dask key is never a list, so a list is always a tuple; a
dict key's text is mapped back through the keys the dump itself names (its
tasks, its events), and only text no key of the dump explains is read as a
literal, never evaluated.
"""
from __future__ import annotations

import ast
from typing import Any

from schemas.codec import CodecError, decode_key, encode_key

#: longest dict-key text read as a literal key
MAX_KEY_TEXT = 10_000


class Keys:
    """Turns the dump's mangled keys back into dask keys (see the module doc)."""

    def __init__(self) -> None:
        #: ``str(list form)`` of every tuple key the dump names as a value
        self.by_text: dict[str, tuple] = {}
        #: every string key the dump names as a value
        self.strings: set[str] = set()
        #: ``repr(key)`` of every key, to read ``<TaskState ...>`` texts
        self.by_repr: dict[str, Any] = {}
        self.repaired = 0
        self.inferred = 0

    def learn(self, value: Any) -> None:
        """Note a key the dump holds as a value (list form or scalar)."""
        try:
            key = value_key(value)
        except CodecError:
            return
        if type(key) is tuple:
            self.by_text.setdefault(str(_listed(key)), key)
        elif type(key) is str:
            self.strings.add(key)
        self.by_repr.setdefault(repr(key), key)

    def value(self, v: Any) -> Any:
        """A key the dump holds as a value: a list is a tuple key."""
        key = value_key(v)
        if type(key) is tuple:
            self.repaired += 1
        return key

    def text(self, k: Any) -> Any:
        """A key the dump holds as a dict key: a tuple key is its list's ``str``."""
        if type(k) is not str:
            return value_key(k)
        key = self.by_text.get(k)
        if key is not None:
            self.repaired += 1
            return key
        if k in self.strings or not (k.startswith("[") and k.endswith("]")) or len(k) > MAX_KEY_TEXT:
            return k
        # a key the dump names nowhere else (a released dependency): its text
        # is the only evidence; a literal, never evaluated
        try:
            parsed = ast.literal_eval(k)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return k
        try:
            key = value_key(parsed)
        except CodecError:
            return k
        if type(key) is tuple:
            self.repaired += 1
            self.inferred += 1
        return key

    def task_repr(self, text: Any) -> Any:
        """The key of a ``<TaskState KEY STATE>`` text."""
        if type(text) is not str or not text.startswith("<TaskState ") or not text.endswith(">"):
            raise CodecError(f"not a task: {short(text)}")
        inner = text[len("<TaskState "):-1].rsplit(" ", 1)[0]
        if inner in self.by_repr:
            return self.by_repr[inner]
        if len(inner) > MAX_KEY_TEXT:
            raise CodecError(f"not a task: {short(text)}")
        try:
            return value_key(_literal_key(ast.literal_eval(inner)))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise CodecError(f"not a task: {short(text)}") from None


def _literal_key(x: Any) -> Any:
    # a task repr spells tuples as tuples; the key codec wants them as lists
    if type(x) is tuple:
        return [_literal_key(v) for v in x]
    return x


def _listed(key: Any) -> Any:
    return [_listed(k) for k in key] if type(key) is tuple else key


def value_key(v: Any) -> Any:
    """A dump value as a dask key; raises CodecError if it cannot be one."""
    if type(v) is bool:  # an int subclass, never a key
        raise CodecError(f"not a dask key: {v!r}")
    return decode_key(encode_key(_tuples(v)))


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if type(v) is list else v


def short(x: Any, limit: int = 80) -> str:
    text = repr(x) if not isinstance(x, (list, dict)) or len(x) < 20 else f"<{type(x).__name__} of {len(x)}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
