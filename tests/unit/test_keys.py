"""Order-preserving key encoding: memcmp order must equal the BSON comparator."""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any

import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import (
    UNDEFINED,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
    invert,
)
from lauradb.bsonkit.order import compare
from lauradb.errors import ErrorCode, LauraError

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def bytes_cmp(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


# ----------------------------------------------------------------------------- strategies

_INTERESTING_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 10, 100]

ints = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.sampled_from(_INTERESTING_INTS),
)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Int64)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0.0, -0.0, 1.0, -1.0, 0.1, 9.223372036854776e18, -9.223372036854776e18, 5e-324, 1e308]
    ),
)
_dec_strings = st.one_of(
    st.sampled_from(
        [
            "NaN", "-NaN", "Infinity", "-Infinity", "0", "-0", "0E+10", "1.0", "1", "-1.00",
            "1E+6144", "-1E+6144", "1E-6176", "9.999999999999999999999999999999999E+6144",
            "0.1", "9223372036854775807", "9223372036854775808", "1.5", "-2.5E-30",
        ]
    ),
    st.builds(
        lambda m, e: f"{m}E{e}",
        st.integers(min_value=-(10**34) + 1, max_value=10**34 - 1),
        st.integers(min_value=-6176, max_value=6111),
    ),
    st.builds(lambda m, e: f"{m}E{e}", st.integers(-1000, 1000), st.integers(-5, 5)),
)
decimals = _dec_strings.map(Decimal128)
strings = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "\x00", "a\x00", "a\x00b", "a", "ab", "\x00\x00", "é", "\U0001f600"]),
    st.text(alphabet="ab\x00\x01\xff", max_size=4),
)
binaries = st.one_of(
    st.binary(max_size=6),
    st.builds(Binary, st.binary(max_size=6), st.sampled_from([0, 1, 4, 5, 128])),
)
oids = st.binary(min_size=12, max_size=12).map(ObjectId)
dates = st.datetimes(
    min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)
)
timestamps = st.builds(
    Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
)
regexes = st.builds(
    Regex, st.text(alphabet="ab.*\x00", max_size=3), st.sampled_from(["", "i", "im", "msx"])
)

scalars = st.one_of(
    st.just(None),
    st.just(MinKey()),
    st.just(MaxKey()),
    st.booleans(),
    ints,
    int64s,
    floats,
    decimals,
    strings,
    binaries,
    oids,
    dates,
    timestamps,
    regexes,
)

field_names = st.one_of(st.sampled_from(["a", "b", "", "a\x00", "é", "_id"]), st.text(max_size=3))

bson_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(field_names, children, max_size=4),
    ),
    max_leaves=12,
)

# Small, collision-prone values so that ties and near-ties are exercised.
small_scalars = st.one_of(
    st.just(None),
    st.sampled_from([MinKey(), MaxKey(), True, False]),
    st.sampled_from([0, 1, -1, 2, Int64(1), Int64(2), 1.0, -0.0, 0.5, 2.0, float("nan")]),
    st.sampled_from([Decimal128("1"), Decimal128("1.0"), Decimal128("NaN"), Decimal128("0.5")]),
    st.sampled_from(["", "a", "a\x00", "b", "ab"]),
)
small_values = st.recursive(
    small_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2),
    ),
    max_leaves=6,
)


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(bson_values, bson_values)
def test_memcmp_order_equals_comparator(a: Any, b: Any) -> None:
    assert bytes_cmp(encode_value(a), encode_value(b)) == compare(a, b)


@SETTINGS
@given(small_values, small_values)
def test_memcmp_order_on_near_ties(a: Any, b: Any) -> None:
    ea, eb = encode_value(a), encode_value(b)
    assert bytes_cmp(ea, eb) == compare(a, b)
    if compare(a, b) == 0:
        assert ea == eb


@SETTINGS
@given(st.one_of(ints, int64s, floats, decimals), st.one_of(ints, int64s, floats, decimals))
def test_number_order_is_exact(a: Any, b: Any) -> None:
    assert bytes_cmp(encode_value(a), encode_value(b)) == compare(a, b)


@SETTINGS
@given(bson_values)
def test_decode_round_trip(v: Any) -> None:
    enc = encode_value(v)
    back, used = decode_value(enc)
    assert used == len(enc)
    assert compare(back, v) == 0
    assert encode_value(back) == enc


@SETTINGS
@given(st.lists(st.tuples(bson_values, st.sampled_from([1, -1])), min_size=1, max_size=3))
def test_compound_key_round_trip(parts: list[tuple[Any, int]]) -> None:
    values = [p[0] for p in parts]
    directions = [p[1] for p in parts]
    enc = encode_key(values, directions)
    back = decode_key(enc, directions)
    assert len(back) == len(values)
    for x, y in zip(back, values, strict=True):
        assert compare(x, y) == 0


@SETTINGS
@given(
    st.lists(small_values, min_size=2, max_size=2),
    st.lists(small_values, min_size=2, max_size=2),
    st.lists(st.sampled_from([1, -1]), min_size=2, max_size=2),
)
def test_compound_key_order(a: list[Any], b: list[Any], dirs: list[int]) -> None:
    expected = 0
    for x, y, d in zip(a, b, dirs, strict=True):
        c = compare(x, y) * d
        if c:
            expected = c
            break
    assert bytes_cmp(encode_key(a, dirs), encode_key(b, dirs)) == expected


# ----------------------------------------------------------------------------- examples


def test_equal_numbers_share_bytes() -> None:
    one = encode_value(1)
    for v in (1.0, Int64(1), Decimal128("1.0"), Decimal128("1"), Decimal128("0.01E2")):
        assert encode_value(v) == one
    assert encode_value(0) == encode_value(-0.0) == encode_value(Decimal128("-0E+5"))
    assert encode_value(float("nan")) == encode_value(Decimal128("NaN"))
    assert encode_value(float("inf")) == encode_value(Decimal128("Infinity"))


def test_int64_max_vs_float() -> None:
    big = 2**63 - 1
    f = 9.223372036854776e18  # == 2**63
    assert encode_value(Int64(big)) < encode_value(f)
    assert encode_value(2**53 + 1) > encode_value(float(2**53))
    assert encode_value(Decimal128("0.1")) < encode_value(0.1)


def test_type_order() -> None:
    ordered = [
        MinKey(), UNDEFINED, None, float("nan"), -math.inf, -1, 0, 1, math.inf, "", "a", {},
        {"a": 1},
        [], [1], b"", Binary(b"", 5), b"a", ObjectId(b"\x00" * 12), False, True,
        datetime.datetime(1970, 1, 1), Timestamp(0, 0), Regex("a"), MaxKey(),
    ]
    encs = [encode_value(v) for v in ordered]
    assert encs == sorted(encs)
    assert len(set(encs)) == len(encs)


def test_strings_with_nul() -> None:
    assert encode_value("a") < encode_value("a\x00") < encode_value("a\x00\x00")
    assert encode_value("a\x00") < encode_value("a\x01")
    assert decode_value(encode_value("a\x00b"))[0] == "a\x00b"


def test_descending_inverts() -> None:
    assert encode_key([1], [-1]) > encode_key([2], [-1])
    assert encode_key([1, "b"], [1, -1]) < encode_key([1, "a"], [1, -1])
    assert invert(invert(b"abc")) == b"abc"
    assert encode_key([1, 2]) == encode_value(1) + encode_value(2)


def test_errors() -> None:
    with pytest.raises(LauraError) as exc:
        encode_value(object())
    assert exc.value.code == ErrorCode.BAD_VALUE
    with pytest.raises(LauraError):
        encode_key([1, 2], [1])
    with pytest.raises(LauraError):
        decode_key(b"\x0c\x05")
    with pytest.raises(LauraError):
        encode_value(decimal.Decimal("1E+99999"))
    with pytest.raises(LauraError):
        encode_value({1: 2})


def test_decoded_types() -> None:
    assert decode_key(encode_key([1, Int64(2**40), 0.5, Decimal128("0.1"), "x"])) == [
        1, 2**40, 0.5, Decimal128("0.1"), "x",
    ]
    assert type(decode_key(encode_key([Int64(2**40)]))[0]) is Int64
    assert decode_key(encode_key([{"a": [1, {"b": None}]}, b"xy", Binary(b"z", 4)])) == [
        {"a": [1, {"b": None}]}, b"xy", Binary(b"z", 4),
    ]
