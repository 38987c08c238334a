import math

import pytest
from hypothesis import given, strategies as st

from schemas.codec import (
    CodecError, decode_collection, decode_key, decode_value, encode_collection,
    encode_key, encode_value, parse_key,
)
import orjson

scalars = st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats())
keys = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=12)


def same(a, b):
    """Equality that also holds for NaN and tells 1 from 1.0 and True, -0.0 from
    0.0, and a tuple from a list, at any depth."""
    if isinstance(a, (tuple, list)):
        return type(b) is type(a) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    if isinstance(a, (set, frozenset)):
        return type(b) is type(a) and a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    if isinstance(a, float):
        return type(b) is float and (a == b or (math.isnan(a) and math.isnan(b))) and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


@given(keys)
def test_key_round_trip_through_json(key):
    assert same(decode_key(orjson.loads(orjson.dumps(encode_key(key)))), key)


@given(st.lists(keys, max_size=5), st.sampled_from([list, tuple]))
def test_key_collections_keep_their_container(items, container):
    coll = container(items)
    back = decode_collection(orjson.loads(orjson.dumps(encode_collection(coll))))
    assert type(back) is container
    assert len(back) == len(coll)
    assert all(same(a, b) for a, b in zip(back, coll))


def test_lists_are_not_keys():
    with pytest.raises(CodecError):
        encode_key(["x", 1])


def test_values_keep_tuples_and_nonstring_dict_keys():
    v = {("a", 1): (1, 2.5, math.inf), "s": {1, 2}, "l": [None, True]}
    back = decode_value(orjson.loads(orjson.dumps(encode_value(v))))
    assert back == v
    assert same(back, v)  # == takes True for 1 and a float 1.0 for an int


def test_parse_key_from_command_line():
    assert parse_key("('x-1', 0)") == ("x-1", 0)
    assert parse_key("x-1") == "x-1"
    assert parse_key("3") == 3
    assert parse_key("__import__('os')") == "__import__('os')"
