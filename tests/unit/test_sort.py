"""Sort specs: validation, MongoDB array/missing rules, consistency with the comparator."""

from __future__ import annotations

import heapq
from functools import cmp_to_key
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.min_key import MinKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.order import compare
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.sort import compile_sort, sort_documents, validate_sort
from tests.unit.test_keys import bson_values, small_values

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_EMPTY = object()  # reference stand-in for an empty array: after MinKey, before null


def _ref_value(doc: dict[str, Any], direction: int) -> Any:
    if "a" not in doc:
        return None
    v = doc["a"]
    if isinstance(v, list):
        if not v:
            return _EMPTY
        pick = min if direction > 0 else max
        return pick(v, key=cmp_to_key(compare))
    return v


def _ref_cmp(x: Any, y: Any) -> int:
    if x is _EMPTY and y is _EMPTY:
        return 0
    if x is _EMPTY:
        return 1 if isinstance(y, MinKey) else -1
    if y is _EMPTY:
        return -_ref_cmp(y, x)
    return compare(x, y)


def _reference_order(docs: list[dict[str, Any]], direction: int) -> list[int]:
    def cmp(i: int, j: int) -> int:
        return direction * _ref_cmp(_ref_value(docs[i], direction), _ref_value(docs[j], direction))

    return sorted(range(len(docs)), key=cmp_to_key(cmp))


docs_strategy = st.lists(
    st.one_of(st.just({}), st.builds(lambda v: {"a": v}, st.one_of(bson_values, small_values))),
    max_size=8,
)


@SETTINGS
@given(docs_strategy, st.sampled_from([1, -1]))
def test_single_field_sort_matches_comparator(docs: list[dict[str, Any]], direction: int) -> None:
    key = compile_sort({"a": direction})
    got = sorted(range(len(docs)), key=lambda i: key(docs[i]))
    assert got == _reference_order(docs, direction)


@SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries({}, optional={"a": small_values, "b": small_values}), max_size=8
    ),
    st.sampled_from([1, -1]),
    st.sampled_from([1, -1]),
)
def test_compound_sort(docs: list[dict[str, Any]], da: int, db: int) -> None:
    key = compile_sort({"a": da, "b": db})
    ka = compile_sort({"a": da})
    kb = compile_sort({"b": db})

    def cmp(i: int, j: int) -> int:
        x, y = ka(docs[i]), ka(docs[j])
        if x != y:
            return -1 if x < y else 1
        x, y = kb(docs[i]), kb(docs[j])
        return (x > y) - (x < y)

    got = sorted(range(len(docs)), key=lambda i: key(docs[i]))
    assert got == sorted(range(len(docs)), key=cmp_to_key(cmp))


def test_missing_null_and_empty_array() -> None:
    docs: list[dict[str, Any]] = [{"a": 1}, {"a": [1]}, {}, {"a": [0, 1]}, {"a": []}, {"a": None}]
    asc = sort_documents(docs, {"a": 1})
    assert asc == [{"a": []}, {}, {"a": None}, {"a": [0, 1]}, {"a": 1}, {"a": [1]}]
    desc = sort_documents(docs, {"a": -1})
    assert desc == [{"a": 1}, {"a": [1]}, {"a": [0, 1]}, {}, {"a": None}, {"a": []}]


def test_dotted_paths_through_arrays() -> None:
    docs: list[dict[str, Any]] = [
        {"_id": 1, "a": [{"b": 5}, {"b": 1}]},
        {"_id": 2, "a": {"b": 3}},
        {"_id": 3, "a": [{"b": 2}, {"c": 9}]},  # the element without b counts as null
        {"_id": 4, "a": [{"b": [0, 10]}]},
        {"_id": 5, "a": 7},  # a.b missing -> null
    ]
    asc = [d["_id"] for d in sort_documents(docs, {"a.b": 1})]
    assert asc == [3, 5, 4, 1, 2]
    desc = [d["_id"] for d in sort_documents(docs, {"a.b": -1})]
    assert desc == [4, 1, 2, 3, 5]
    two: list[dict[str, Any]] = [{"_id": 1, "a": [3, 1]}, {"_id": 2, "a": [2]}]
    pos = [d["_id"] for d in sort_documents(two, {"a.0": 1})]
    assert pos == [2, 1]


def test_numbers_across_types_and_stability() -> None:
    docs: list[dict[str, Any]] = [
        {"i": 0, "a": 2.5}, {"i": 1, "a": Int64(2)}, {"i": 2, "a": Decimal128("2.0")},
        {"i": 3, "a": 1}, {"i": 4, "a": "s"},
    ]
    assert [d["i"] for d in sort_documents(docs, {"a": 1})] == [3, 1, 2, 0, 4]
    assert [d["i"] for d in sort_documents(docs, {"a": -1})] == [4, 0, 1, 2, 3]


def test_compound_directions() -> None:
    docs = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 0, "b": 5}]
    assert sort_documents(docs, {"a": -1, "b": -1}) == [docs[1], docs[0], docs[2]]
    assert sort_documents(docs, {"a": 1, "b": -1}) == [docs[2], docs[1], docs[0]]


def test_keys_merge_like_a_router() -> None:
    key = compile_sort({"x": -1, "y": 1})
    shard1 = sorted([{"x": i, "y": -i} for i in range(0, 20, 2)], key=key)
    shard2 = sorted([{"x": i, "y": i} for i in range(1, 20, 3)], key=key)
    merged = list(heapq.merge(shard1, shard2, key=key))
    assert merged == sort_documents(shard1 + shard2, {"x": -1, "y": 1})
    assert all(isinstance(key(d), bytes) for d in merged)


def test_empty_spec_keeps_order() -> None:
    docs = [{"a": 3}, {"a": 1}, {"a": 2}]
    assert sort_documents(docs, {}) == docs
    assert validate_sort({}) == []


def test_validate_sort() -> None:
    assert validate_sort({"a": 1, "b": -1.0, "c": Int64(-1), "d": Decimal128("1")}) == [
        ("a", 1), ("b", -1), ("c", -1), ("d", 1),
    ]
    for bad in ({"a": 0}, {"a": 2}, {"a": True}, {"a": "asc"}, {"a": None}, {"a": {"x": 1}},
                {"": 1}, {"$a": 1}, {"a..b": 1}, {"a.": 1}):
        with pytest.raises(LauraError) as exc:
            validate_sort(bad)
        assert exc.value.code == ErrorCode.BAD_VALUE, bad
    with pytest.raises(LauraError) as exc:
        validate_sort({"score": {"$meta": "textScore"}})
    assert exc.value.code in (ErrorCode.NOT_IMPLEMENTED, ErrorCode.BAD_VALUE)
    with pytest.raises(LauraError):
        validate_sort([("a", 1)])  # type: ignore[arg-type]
