"""Code nodes: what a piece of source evaluates to, and how it is laid out (black's way)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replay.testcase.literals import _literal, checked_literal

WIDTH = 88

@dataclass(slots=True)
class _Atom:
    """Source text that is never split, and its value."""

    text: str
    value: Any = None


@dataclass(slots=True)
class _Pair:
    """``head`` glued to a node: a keyword argument or a dict entry."""

    head: str
    node: Any

    @property
    def value(self) -> Any:
        return self.node.value


@dataclass(slots=True)
class _Seq:
    """Bracketed items: a call, list, dict, set or tuple."""

    open: str
    items: list
    close: str
    value: Any = None
    #: one item per line whenever it does not fit on one line
    explode: bool = False
    one_tuple: bool = False


def _flat(n: Any) -> str:
    if isinstance(n, _Atom):
        return n.text
    if isinstance(n, _Pair):
        return n.head + _flat(n.node)
    body = ", ".join(_flat(i) for i in n.items) + ("," if n.one_tuple else "")
    return n.open + body + n.close


def _render(n: Any, indent: int, prefix: str = "", suffix: str = "") -> list[str]:
    """Lines for ``prefix + n + suffix``, split like black splits brackets."""
    pad = " " * indent
    flat = prefix + _flat(n) + suffix
    forced = isinstance(n, _Seq) and n.explode and len(n.items) > 1
    if indent + len(flat) <= WIDTH and not forced or isinstance(n, _Atom):
        return [pad + flat]
    if isinstance(n, _Pair):
        return _render(n.node, indent, prefix + n.head, suffix)
    if not n.items:
        return [pad + flat]
    body = ", ".join(_flat(i) for i in n.items)
    if not n.explode and indent + 4 + len(body) <= WIDTH and not n.one_tuple:
        inner = [" " * (indent + 4) + body]
    elif not n.explode and len(n.items) == 1 and not n.one_tuple:
        inner = _render(n.items[0], indent + 4)
    else:
        inner = [line for i in n.items for line in _render(i, indent + 4, suffix=",")]
    return [pad + prefix + n.open, *inner, pad + n.close + suffix]


def _lit(v: Any) -> Any:
    """A checked literal; containers stay splittable across lines."""
    text = checked_literal(v)
    t = type(v)
    if not v or t not in (dict, list, tuple, set):
        return _Atom(text, v)
    if t is dict:
        items: list = [_Pair(_literal(k) + ": ", _lit(x)) for k, x in v.items()]
    else:
        items = [_lit(x) for x in v]
        if t is set:
            items.sort(key=_flat)
    brackets = {list: "[]", tuple: "()"}.get(t, "{}")
    return _Seq(brackets[0], items, brackets[1], v, one_tuple=t is tuple and len(v) == 1)


def _container(kind: type, nodes: list) -> Any:
    value = kind(n.value for n in nodes)
    if kind is list:
        return _Seq("[", nodes, "]", value)
    if kind is tuple:
        return _Seq("(", nodes, ")", value, one_tuple=len(nodes) == 1)
    if kind is set:
        nodes = sorted(nodes, key=_flat)
        return _Seq("{", nodes, "}", value) if nodes else _Atom("set()", set())
    raise ValueError(f"cannot write a {kind.__name__} of addresses")


def _dict(pairs: list[tuple[Any, Any]]) -> _Seq:
    """A dict node from (key node, value node) pairs."""
    items = [_Pair(_flat(k) + ": ", v) for k, v in pairs]
    return _Seq("{", items, "}", {k.value: v.value for k, v in pairs})
