"""Stable 64-bit hashing of BSON values."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import HealthCheck, given, settings

from lauradb.bsonkit.keys import encode_value
from lauradb.bsonkit.order import compare
from lauradb.sharding.hashing import hash_encoded, hash_value
from tests.unit.test_keys import bson_values, small_values

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Pinned: these must never change (chunk bounds of hashed collections depend on them).
PINNED = [
    (1, -2829618447142025386),
    ("abc", -3229240438112741955),
    (None, 2685988208328501129),
    (ObjectId("0123456789abcdef01234567"), 3741814759409034651),
    ({"a": [1, "x"]}, 3408555019245769672),
]


def test_pinned_values() -> None:
    for value, expected in PINNED:
        assert hash_value(value) == expected, value


def test_definition() -> None:
    digest = hashlib.md5(encode_value("abc")).digest()
    assert hash_value("abc") == int.from_bytes(digest[:8], "little", signed=True)
    assert hash_encoded(encode_value("abc")) == hash_value("abc")


def test_equal_numbers_hash_equally() -> None:
    h = hash_value(1)
    assert hash_value(1.0) == h
    assert hash_value(Int64(1)) == h
    assert hash_value(Decimal128("1.00")) == h
    assert hash_value(-0.0) == hash_value(0)
    assert hash_value(2) != h


def test_same_in_another_process() -> None:
    code = (
        "from lauradb.sharding.hashing import hash_value;"
        "print(hash_value('abc'), hash_value(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(Path(__file__).resolve().parents[2]),
    ).stdout.split()
    assert [int(x) for x in out] == [hash_value("abc"), hash_value(1)]


@SETTINGS
@given(small_values, small_values)
def test_equal_values_hash_equally(a: Any, b: Any) -> None:
    if compare(a, b) == 0:
        assert hash_value(a) == hash_value(b)


@SETTINGS
@given(bson_values)
def test_signed_64_bit(v: Any) -> None:
    h = hash_value(v)
    assert -(2**63) <= h < 2**63
    assert hash_value(v) == h
