"""The written test may only import and call what the writer writes."""
from __future__ import annotations

import ast
import builtins

_ALLOWED_MODULES = frozenset(
    {
        "distributed.worker_state_machine",
        "distributed.protocol.serialize",
        "distributed.utils_test",
    }
)
_ALLOWED_ATTR_CALLS = frozenset(
    {"ws.handle_stimulus", "ws.validate_state", "pytest.raises", "dask.config.set",
     "_default_data_size.cache_clear"}
)
_ALLOWED_METHODS = frozenset({"dummy", "from_exception", "match", "dummy_runspec"})
_BUILTIN_CALLS = frozenset({"float", "set", "isinstance", "len"})


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _audit(source: str, name: str, doc: str, expr: ast.Expression | None, peers: set[str]) -> None:
    """The written test may only import and call what this module writes."""
    tree = ast.parse(source)
    *imports, func = tree.body
    imported: set[str] = set()
    for node in imports:
        if isinstance(node, ast.Import):
            if any(a.name not in ("pytest", "dask") or a.asname for a in node.names):
                raise AssertionError("unexpected import in the written test")
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module in _ALLOWED_MODULES:
            imported.update(a.name for a in node.names)
        else:
            raise AssertionError("unexpected statement before the test")
    if not isinstance(func, ast.FunctionDef) or func.name != name or func.decorator_list:
        raise AssertionError("the written module is not one test function")
    if ast.get_docstring(func) != doc:
        raise AssertionError("the docstring did not survive")
    skip = set()
    if expr is not None:
        user = ast.dump(expr.body)
        for a in ast.walk(func):
            if isinstance(a, ast.Assert) and ast.dump(a.test) == user:
                skip |= {id(n) for n in ast.walk(a.test)}
    exceptions = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    for node in ast.walk(func):
        if id(node) in skip:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Lambda, ast.Global, ast.Nonlocal)):
            raise AssertionError("unexpected statement in the written test")
        if isinstance(node, ast.Call):
            callee = _dotted(node.func) or ""
            base, _, method = callee.rpartition(".")
            ok = (
                callee in _ALLOWED_ATTR_CALLS
                or callee in _BUILTIN_CALLS
                or callee in exceptions
                or callee in imported and callee not in {"dask", "pytest"}
                or base in imported and method in _ALLOWED_METHODS
            )
            if not ok:
                raise AssertionError(f"unexpected call in the written test: {callee or '?'}")
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id not in {"ws", "instructions", "excinfo", *peers}:
                raise AssertionError(f"unexpected assignment in the written test: {node.id}")
