"""JSON-level types shared by the event, instruction and record schemas."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from schemas.versions import unsupported_message


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


def _readable_release(version: str) -> str:
    message = unsupported_message(version)
    if message is not None:
        # a custom error keeps the message one line, without pydantic's prefix
        raise PydanticCustomError("unsupported_release", message)
    return version


#: the ``distributed`` version of a header: one whose logs this installation reads
DistributedRelease = Annotated[StrictStr, AfterValidator(_readable_release)]
