"""The log's schema compiled to msgspec Structs: parse and validate in one pass.

``replay check`` validates every line against the pydantic models of
:mod:`schemas.records` and decodes every event; done record by record in
Python that is ten times the cost of parsing. :func:`checked` parses a line
straight into Structs generated here *from those pydantic models* (so there
is still one schema), checking as it parses. Its contract:

- it answers only for ``step``, ``resources`` and ``end`` records (a header,
  once per worker, and a dump's side records go the pydantic way);
- what it accepts, the pydantic schema accepts and the event decoder
  decodes: it is never looser. Where msgspec cannot say what pydantic says
  (an unbounded recursive type, a union of two JSON objects) the compiled
  type is narrower (recursion unrolled to :data:`DEPTH` levels, one Struct
  taking either object's fields) or checked after decoding (one entry per tag);
- it may be stricter: a line it rejects (``None``) is read the pydantic way,
  which names the bad field and line, or accepts the line after all.

Events additionally follow the codec's grammar for loose values
(:func:`schemas.codec.decode_value`), which the pydantic schema leaves to the
decoder: so a checked event needs no decoding to be known decodable.
"""
from __future__ import annotations

import keyword
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union

import msgspec
import orjson
from annotated_types import Ge
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typing_extensions import TypeAliasType

from schemas.generated import function
from schemas.records import End, ResourcesChange, Step
from schemas.types import Value

__all__ = ["DEPTH", "RECORD_STRUCTS", "EVENT_TAGS", "checked", "to_dict"]

#: nesting a compiled recursive type follows (tuple keys of tuples, values in
#: values); deeper lines are left to the pydantic schema
DEPTH = 6
#: what ``orjson`` reads as an integer (it reads a larger literal as a float),
#: within what msgspec bounds: from 2**63 on, the pydantic way answers
INT64 = msgspec.Meta(ge=-(2**63), le=2**63 - 1)

_UNSET = msgspec.UNSET
_Unset = msgspec.UnsetType
_SCALARS = (None, bool, Annotated[int, INT64], float, str)


class _Checked(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True, gc=False):
    """A Struct the compiled schema decoded into."""


def _one_entry(fields: Iterable[str]) -> Callable[[Any], None]:
    """A tag Struct's ``__post_init__``: like the pydantic union of one-field
    models, or the codec's one-entry tags, exactly one of ``fields`` is given.
    Generated with the fields spelled out: it runs for every tag object of
    every line ``check`` reads, where a loop over the fields cost a tenth of
    the pass."""
    assert all(f.isidentifier() and not keyword.iskeyword(f) for f in fields), fields
    given = " + ".join(f"(self.{f} is not _UNSET)" for f in fields)
    return function("def __post_init__(self):\n"
                    f"    if {given} != 1:\n"
                    "        raise ValueError('a tag object has exactly one entry')\n",
                    {"_UNSET": _UNSET}, "one-entry check")


def _tag_struct(name: str, fields: dict[str, Any]) -> type:
    """A Struct of tag objects: one of ``fields`` (name: type) given."""
    ns = {"__annotations__": {f: Union[t, _Unset] for f, t in fields.items()},
          "__post_init__": _one_entry(fields), "__module__": __name__,
          **{f: _UNSET for f in fields}}
    return types.new_class(name, (_Checked,), {}, lambda d: d.update(ns))


# Loose values of events: the grammar of schemas.codec.decode_value ------------

_NONFINITE = Literal["nan", "-nan", "inf", "-inf"]


def _hashable_value(depth: int) -> Any:
    """A value that decodes to something hashable (a set member, a dict key)."""
    fields: dict[str, Any] = {"float": _NONFINITE, "repr": str}
    if depth:
        fields["tuple"] = list[_hashable_value(depth - 1)]
    return Union[(*_SCALARS, _tag_struct(f"HashableTag{depth}", fields))]


def _value(depth: int) -> Any:
    """Any value :func:`schemas.codec.decode_value` decodes."""
    fields: dict[str, Any] = {"float": _NONFINITE, "repr": str}
    if not depth:
        return Union[(*_SCALARS, _tag_struct("ValueTag0", fields))]
    inner = _value(depth - 1)
    key = _hashable_value(depth - 1)
    fields.update(tuple=list[inner], set=list[key], dict=list[tuple[key, inner]])
    return Union[(*_SCALARS, list[inner], _tag_struct(f"ValueTag{depth}", fields))]


EVENT_VALUE = _value(DEPTH)


# From pydantic models to Structs -----------------------------------------------


class _Compiler:
    """Translates the annotations of pydantic models into msgspec types."""

    def __init__(self) -> None:
        self.structs: dict[tuple, type] = {}
        #: of each Struct decoded as one member of a tagged union: its tag
        self.tags: dict[type, str] = {}
        #: the same, of events only
        self.events: dict[type, str] = {}
        #: recursive aliases being expanded, and how deep they may still go
        self.aliases: dict[str, tuple[TypeAliasType, int]] = {}

    def model(self, model: type[BaseModel], tag_field: str | None = None, in_event: bool = False) -> type:
        key = (model, tag_field, in_event)
        if key in self.structs:
            return self.structs[key]
        in_event = in_event or model.__module__ == "schemas.events"
        annotations: dict[str, Any] = {}
        ns: dict[str, Any] = {}
        tag = None
        for name, info in model.model_fields.items():
            if name == tag_field:
                (tag,) = typing.get_args(info.annotation)
                continue
            tp = self.field(info, in_event)
            if not info.is_required():
                default = info.get_default(call_default_factory=False)
                if isinstance(default, (list, dict)):  # fresh per record
                    ns[name] = msgspec.field(default_factory=type(default), name=info.alias)
                else:
                    ns[name] = msgspec.field(default=default, name=info.alias)
            elif info.alias:
                ns[name] = msgspec.field(name=info.alias)
            annotations[name] = tp
        ns["__annotations__"] = annotations
        ns["__module__"] = __name__
        kwds = {"tag_field": tag_field, "tag": tag} if tag_field else {}
        struct = types.new_class(model.__name__, (_Checked,), kwds, lambda d: d.update(ns))
        if tag_field:
            self.tags[struct] = tag
            if in_event:
                self.events[struct] = tag
        self.structs[key] = struct
        return struct

    def field(self, info: FieldInfo, in_event: bool) -> Any:
        tp = info.annotation
        if info.metadata:
            tp = Annotated[(tp, *info.metadata)]
        if info.discriminator:
            return self.tagged(typing.get_args(info.annotation), info.discriminator, in_event)
        return self.type(tp, in_event)

    def tagged(self, members: tuple, tag_field: str, in_event: bool) -> Any:
        return Union[tuple(self.model(m, tag_field, in_event) for m in members)]

    def type(self, tp: Any, in_event: bool) -> Any:
        if tp is Value or tp is Any:
            # an event's loose values are decoded: the codec's grammar; an
            # instruction's or extras' are any JSON, as pydantic says
            return EVENT_VALUE if in_event else Any
        if isinstance(tp, TypeAliasType):
            return self.alias(tp, in_event)
        if isinstance(tp, (str, typing.ForwardRef)):
            name = tp if isinstance(tp, str) else tp.__forward_arg__
            alias, depth = self.aliases[name]
            return self.alias(alias, in_event, depth)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is Annotated:
            return self.annotated(args[0], args[1:], in_event)
        if origin is Literal:
            return tp
        if origin in (Union, types.UnionType):
            return self.union(args, in_event)
        if origin is list:
            return list[self.type(args[0], in_event)]
        if origin is tuple:
            return tuple[tuple(self.type(a, in_event) for a in args)]
        if origin is dict:
            return dict[self.type(args[0], in_event), self.type(args[1], in_event)]
        if tp is int:
            return Annotated[int, INT64]
        if tp is float:  # pydantic's strict float takes an integer too
            return Union[Annotated[int, INT64], float]
        if tp in (str, bool, type(None), None):
            return tp
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.model(tp, None, in_event)
        raise TypeError(f"the compiled schema has no translation of {tp!r}")

    def annotated(self, tp: Any, metadata: tuple, in_event: bool) -> Any:
        bounds: dict[str, Any] = {}
        flat: list[Any] = []
        for m in metadata:
            if isinstance(m, FieldInfo):
                if m.discriminator:
                    return self.tagged(typing.get_args(tp), m.discriminator, in_event)
                flat += m.metadata
            else:
                flat.append(m)
        for m in flat:
            if isinstance(m, Ge):
                bounds["ge"] = m.ge
            elif type(m).__name__ == "Strict":
                continue  # msgspec never coerces
            elif getattr(m, "__dict__", None) == {"union_mode": "left_to_right"}:
                continue  # msgspec picks a union's member by JSON type
            else:
                raise TypeError(f"the compiled schema has no translation of {m!r}")
        if bounds:
            if tp is not int or bounds["ge"] < INT64.ge:
                raise TypeError(f"bounds on {tp!r}")
            return Annotated[int, msgspec.Meta(**{"le": INT64.le, **bounds})]
        return self.type(tp, in_event)

    def alias(self, alias: TypeAliasType, in_event: bool, depth: int = DEPTH) -> Any:
        name = alias.__name__
        outer = self.aliases.get(name)
        self.aliases[name] = (alias, depth - 1)
        try:
            value = alias.__value__
            if depth <= 0:  # unrolled far enough: the recursive members go
                value = _without_recursion(value, name)
            return self.type(value, in_event)
        finally:
            if outer is None:
                del self.aliases[name]
            else:
                self.aliases[name] = outer

    def union(self, args: tuple, in_event: bool) -> Any:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        rest = [self.type(a, in_event) for a in args if a not in models]
        if len(models) > 1:
            # msgspec tells union members apart by JSON type: two objects
            # become one Struct of either's fields, exactly one of them given
            fields: dict[str, Any] = {}
            for m in models:
                (name, info), = m.model_fields.items()  # one-field tags only
                fields[name] = self.field(info, in_event)
            rest.append(_tag_struct("Or".join(m.__name__ for m in models), fields))
        elif models:
            rest.append(self.model(models[0], None, in_event))
        return Union[tuple(rest)]


def _without_recursion(tp: Any, name: str) -> Any:
    """``tp`` without the union members that refer to alias ``name``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _without_recursion(args[0], name)
    if origin in (Union, types.UnionType):
        return Union[tuple(a for a in args if not _refers_to(a, name))]
    return tp


def _refers_to(tp: Any, name: str) -> bool:
    if isinstance(tp, str):
        return tp == name
    if isinstance(tp, typing.ForwardRef):
        return tp.__forward_arg__ == name
    return any(_refers_to(a, name) for a in typing.get_args(tp))


_compiler = _Compiler()
#: the records :func:`checked` answers for, by their ``kind``
RECORD_STRUCTS: dict[str, type] = {
    m.model_fields["kind"].annotation.__args__[0]: _compiler.model(m, "kind")
    for m in (Step, ResourcesChange, End)
}
STEP, RESOURCES, END = RECORD_STRUCTS["step"], RECORD_STRUCTS["resources"], RECORD_STRUCTS["end"]
#: each event Struct's class name (the dask event class)
EVENT_TAGS: dict[type, str] = dict(_compiler.events)
_decode = msgspec.json.Decoder(Union[tuple(RECORD_STRUCTS.values())]).decode
_encode = msgspec.json.Encoder().encode


def checked(line: bytes) -> Any:
    """The record on ``line`` as a Struct, checked against the schema; None
    when this pass does not answer (see the module's contract)."""
    try:
        return _decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # ValidationError too
        return None


def to_dict(record: Any) -> dict:
    """A checked record as the dict ``orjson`` reads from its line, less the
    fields left at their defaults (for the general path's messages about a
    record the schema passes, and decoding one event)."""
    return orjson.loads(_encode(record))
