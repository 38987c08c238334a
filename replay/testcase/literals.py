"""Values from a log written as Python literals, read back and compared before use."""
from __future__ import annotations

import ast
import math
from typing import Any

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_MAX_DEPTH = 50


def _literal(v: Any, depth: int = 0) -> str:
    """``v`` as Python source, for plain values only (exact types: no subclass
    can bring its own ``__repr__``)."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply to write")
    t = type(v)
    if v is None or t is bool or t is int:
        return repr(v)
    if t is float:
        if math.isfinite(v):
            return repr(v)
        return f'float("{"nan" if v != v else "inf" if v > 0 else "-inf"}")'
    if t is str or t is bytes:
        r = repr(v)
        p = 1 if t is bytes else 0
        # black's double quotes: repr picks single quotes when v has no single
        # quote or has both kinds, so without a double quote there is neither
        if r[p] == "'" and ('"' if t is str else b'"') not in v:
            r = r[:p] + '"' + r[p + 1 : -1] + '"'
        return r
    items = [_literal(x, depth + 1) for x in v] if t in (tuple, list, set) else None
    if t is tuple:
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if t is list:
        return "[" + ", ".join(items) + "]"
    if t is set:
        return "{" + ", ".join(sorted(items)) + "}" if items else "set()"
    if t is dict:
        pairs = (f"{_literal(k, depth + 1)}: {_literal(x, depth + 1)}" for k, x in v.items())
        return "{" + ", ".join(pairs) + "}"
    raise ValueError(f"cannot write a {t.__name__} as a Python literal")


def _eval_literal(text: str) -> Any:
    """Read back what :func:`_literal` wrote: literals, ``set()`` and ``float("inf")``."""
    try:
        tree = ast.parse(text, mode="eval")
        tree = _NonFinite().visit(tree)
        return ast.literal_eval(tree.body)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as e:
        raise ValueError(f"not a literal: {text[:80]!r}") from e


class _NonFinite(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.AST:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "float"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in _NONFINITE
        ):
            return ast.Constant(_NONFINITE[node.args[0].value])
        return node


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types throughout (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1, a) == math.copysign(1, b) or a != a and b != b
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(
            k in b and _same(k, _key_in(b, k)) and _same(v, b[k]) for k, v in a.items()
        )
    if type(a) is set:
        return len(a) == len(b) and all(x in b and _same(x, _key_in(b, x)) for x in a)
    return a == b


def _key_in(c: Any, k: Any) -> Any:
    return next(x for x in c if x == k)


def checked_literal(v: Any) -> str:
    """``v`` as a Python literal, read back and compared before it is handed out."""
    text = _literal(v)
    if not _same(_eval_literal(text), v):
        raise ValueError(f"{type(v).__name__} does not survive as a literal: {text[:80]}")
    return text


def _is_literal(v: Any) -> bool:
    try:
        checked_literal(v)
    except ValueError:
        return False
    return True


def _regex_literal(text: str) -> str:
    """A pattern matching ``text`` literally, as a Python literal."""
    pattern = "".join("\\" + c if c in ".^$*+?{}[]\\|()" else c for c in text)
    raw = 'r"' + pattern + '"'
    if '"' not in pattern and pattern.isprintable() and not pattern.endswith("\\"):
        if _eval_literal(raw) == pattern:
            return raw
    return checked_literal(pattern)
