"""Pydantic schemas of dask-replay logs and their exact dask conversions."""
from schemas.codec import CodecError, decode_key, encode_key, parse_key
from schemas.convert import (
    EVENT_FIELDS,
    INSTRUCTION_FIELDS,
    SizedValue,
    UnknownClass,
    comparable,
    decode_event,
    decode_instruction,
    encode_event,
    encode_instruction,
)
from schemas.records import (
    FORMAT,
    RECORD,
    VERSION,
    End,
    Header,
    Record,
    ResourcesChange,
    StateInputs,
    Step,
    record_json_schema,
)

__all__ = [
    "CodecError", "decode_key", "encode_key", "parse_key", "EVENT_FIELDS",
    "INSTRUCTION_FIELDS", "SizedValue", "UnknownClass", "comparable",
    "decode_event", "decode_instruction", "encode_event", "encode_instruction",
    "FORMAT", "RECORD", "VERSION", "End", "Header", "Record", "ResourcesChange",
    "StateInputs", "Step", "record_json_schema",
]
