"""JSON-level types shared by the event, instruction and record schemas."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from typing_extensions import TypeAliasType


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatTag(Model):
    """A float JSON cannot spell."""

    float: Literal["nan", "-nan", "inf", "-inf"]


Number = Union[StrictInt, StrictFloat, FloatTag]

#: str | int | float | tuple-as-array, nested
EncodedKey = TypeAliasType(
    "EncodedKey", Union[StrictStr, StrictInt, StrictFloat, FloatTag, list["EncodedKey"]]
)


class TupleOfKeys(Model):
    tuple: list[EncodedKey]


class SetOfKeys(Model):
    set: list[EncodedKey]


#: A collection of keys; a bare array is a list
KeyCollection = Union[list[EncodedKey], TupleOfKeys, SetOfKeys]


class TupleOfStr(Model):
    tuple: list[StrictStr]


class SetOfStr(Model):
    set: list[StrictStr]


Workers = Union[list[StrictStr], TupleOfStr, SetOfStr]

#: dict[Key, list[address]] as [[key, workers], ...]
WhoHas = list[tuple[EncodedKey, Workers]]
#: dict[Key, int] as [[key, n], ...]
KeySizes = list[tuple[EncodedKey, Annotated[StrictInt, Field(ge=0)]]]

#: annotations, metadata: JSON with one-entry tags {"tuple"|"set"|"dict"|"float"|"repr": ...}
Value = TypeAliasType(
    "Value",
    Union[
        None,
        StrictBool,
        StrictInt,
        StrictFloat,
        StrictStr,
        list["Value"],
        dict[Literal["tuple", "set", "dict", "float", "repr"], Union[list["Value"], StrictStr]],
    ],
)

Resources = dict[StrictStr, Number]
