"""Pydantic schemas of dask-replay logs and their exact dask conversions.

Names are imported on first use: the recorder, which runs inside live
workers, needs :mod:`schemas.codec` and :mod:`schemas.convert` only, and must
not load pydantic into the worker.
"""
from __future__ import annotations

from typing import Any

_CODEC = ("CodecError", "decode_key", "encode_key", "parse_key", "FORMAT", "VERSION")
_CONVERT = (
    "EVENT_FIELDS", "INSTRUCTION_FIELDS", "SizedValue", "UnknownClass", "comparable",
    "decode_event", "decode_instruction", "encode_event", "encode_instruction",
)
_RECORDS = (
    "RECORD", "Record", "End", "Header", "ResourcesChange", "StateInputs", "Step",
    "record_json_schema",
)

__all__ = sorted(_CODEC + _CONVERT + _RECORDS)


def __getattr__(name: str) -> Any:
    if name in _CODEC:
        from schemas import codec as module
    elif name in _CONVERT:
        from schemas import convert as module
    elif name in _RECORDS:
        from schemas import records as module
    else:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(module, name)
