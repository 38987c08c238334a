"""JSON-level types shared by the event, instruction and record schemas."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from typing_extensions import TypeAliasType


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatTag(Model):
    """A float JSON cannot spell."""

    float: Literal["nan", "-nan", "inf", "-inf"]


Number = Union[StrictInt, StrictFloat, FloatTag]

#: str | int | float | tuple-as-array, nested. Left-to-right: str keys are
#: by far the most common, and the first member that fits is the only one
EncodedKey = TypeAliasType(
    "EncodedKey",
    Annotated[
        Union[StrictStr, StrictInt, StrictFloat, list["EncodedKey"], FloatTag],
        Field(union_mode="left_to_right"),
    ],
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

#: annotations, metadata, startstops: any JSON, in which every object is a
#: one-entry tag {"tuple"|"set"|"dict"|"float"|"repr": ...}. Replay does not
#: act on them, so the schema checks only that they are JSON; the decoder
#: (schemas.codec.decode_value) rejects a bad tag.
Value = Any

Resources = dict[StrictStr, Number]
