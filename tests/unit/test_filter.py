"""The filter matcher: every operator, MongoDB's array/null/type semantics, errors."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import (
    bson_type_code,
    compile_filter,
    equality_fields,
)

NAN = float("nan")


def m(spec: dict[str, Any], doc: dict[str, Any]) -> bool:
    matcher = compile_filter(spec)
    fast = matcher(doc)
    slow, _pos = matcher.match_with_position(doc)
    assert fast == slow, f"fast and positional matchers disagree on {spec} / {doc}"
    return fast


def ids(spec: dict[str, Any], docs: list[dict[str, Any]]) -> set[Any]:
    return {d["_id"] for d in docs if m(spec, d)}


def error_code(spec: Any) -> ErrorCode:
    with pytest.raises(LauraError) as info:
        compile_filter(spec)
    return info.value.code


# ---------------------------------------------------------------------------
# Equality


def test_empty_filter_matches_everything() -> None:
    matcher = compile_filter({})
    assert matcher({"a": 1})
    assert matcher({})
    assert matcher.matches_everything
    assert compile_filter(None)({"x": 1})
    assert not compile_filter({"a": 1}).matches_everything


def test_scalar_equality() -> None:
    assert m({"a": 1}, {"a": 1})
    assert not m({"a": 1}, {"a": 2})
    assert not m({"a": 1}, {})
    assert m({"a": "x"}, {"a": "x"})
    assert not m({"a": "x"}, {"a": "X"})
    assert m({"a": {"$eq": 3}}, {"a": 3})


def test_numeric_equality_across_types() -> None:
    for value in (1, 1.0, Int64(1), Decimal128("1"), Decimal128("1.000")):
        for query in (1, 1.0, Int64(1), Decimal128("1")):
            assert m({"a": query}, {"a": value}), (query, value)
    assert not m({"a": 1}, {"a": Decimal128("1.0001")})
    assert not m({"a": 1}, {"a": "1"})


def test_bool_is_not_a_number() -> None:
    assert not m({"a": 1}, {"a": True})
    assert not m({"a": True}, {"a": 1})
    assert not m({"a": 0}, {"a": False})
    assert m({"a": True}, {"a": True})
    assert not m({"a": {"$in": [1]}}, {"a": True})
    assert not m({"a": {"$in": [True]}}, {"a": 1})


def test_nan_equals_nan() -> None:
    assert m({"a": NAN}, {"a": NAN})
    assert m({"a": NAN}, {"a": Decimal128("NaN")})
    assert m({"a": Decimal128("NaN")}, {"a": NAN})
    assert not m({"a": NAN}, {"a": 1})
    assert m({"a": {"$in": [NAN]}}, {"a": NAN})


def test_equality_on_arrays_element_or_whole() -> None:
    doc = {"tags": ["x", "y"]}
    assert m({"tags": "x"}, doc)
    assert m({"tags": "y"}, doc)
    assert not m({"tags": "z"}, doc)
    assert m({"tags": ["x", "y"]}, doc)
    assert not m({"tags": ["y", "x"]}, doc)
    assert not m({"tags": ["x"]}, doc)


def test_array_of_arrays() -> None:
    doc = {"a": [[1, 2], 3]}
    assert m({"a": [1, 2]}, doc)
    assert m({"a": 3}, doc)
    assert not m({"a": 1}, doc)  # no double unwinding
    assert m({"a": [[1, 2], 3]}, doc)
    # positional: element 0 is taken whole, not unwound
    assert m({"a.0": [1, 2]}, doc)
    assert not m({"a.0": 1}, doc)
    assert m({"a.0.1": 2}, doc)


def test_empty_array_equality() -> None:
    assert m({"a": []}, {"a": []})
    assert m({"a": []}, {"a": [[]]})
    assert not m({"a": []}, {"a": [1]})
    assert not m({"a": []}, {})


def test_subdocument_equality_is_exact_and_order_sensitive() -> None:
    doc = {"a": {"x": 1, "y": 2}}
    assert m({"a": {"x": 1, "y": 2}}, doc)
    assert m({"a": {"x": 1.0, "y": Int64(2)}}, doc)
    assert not m({"a": {"y": 2, "x": 1}}, doc)
    assert not m({"a": {"x": 1}}, doc)
    assert m({"a": {"x": 1}}, {"a": [{"x": 1}, {"x": 2}]})


def test_literal_document_whose_later_keys_start_with_dollar() -> None:
    assert m({"a": {"b": 1, "$c": 2}}, {"a": {"b": 1, "$c": 2}})


def test_dbref_like_document_is_a_literal() -> None:
    ref = SON([("$ref", "coll"), ("$id", 1)])
    assert m({"a": ref}, {"a": {"$ref": "coll", "$id": 1}})


def test_dotted_paths() -> None:
    doc = {"a": {"b": {"c": 5}}, "x": [{"y": 1}, {"y": 2, "z": [{"w": 3}]}]}
    assert m({"a.b.c": 5}, doc)
    assert not m({"a.b.c": 6}, doc)
    assert m({"a.b": {"c": 5}}, doc)
    assert m({"x.y": 2}, doc)
    assert m({"x.z.w": 3}, doc)
    assert not m({"x.z.w": 4}, doc)
    assert m({"x.y": [1, 2]}, {"x": [{"y": [1, 2]}]})


def test_numeric_path_components() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}], "c": {"0": "zero"}, "d": [10, 20]}
    assert m({"a.0.b": 1}, doc)
    assert not m({"a.0.b": 2}, doc)
    assert m({"a.1.b": 2}, doc)
    assert m({"c.0": "zero"}, doc)
    assert m({"d.1": 20}, doc)
    assert not m({"d.1": 10}, doc)
    assert not m({"d.5": 10}, doc)
    # a field literally named "0" inside array elements also counts
    assert m({"a.0": "f"}, {"a": [{"0": "f"}]})
    assert m({"a.0.b": 7}, {"a": [{"0": {"b": 7}}]})


def test_dollar_equality_with_regex_value_is_literal() -> None:
    rx = Regex("^a", "i")
    assert m({"a": {"$eq": rx}}, {"a": Regex("^a", "i")})
    assert not m({"a": {"$eq": rx}}, {"a": "abc"})


def test_types_equality() -> None:
    oid = ObjectId()
    when = datetime.datetime(2024, 5, 1, 12, 0, 0)
    assert m({"a": oid}, {"a": ObjectId(str(oid))})
    assert not m({"a": oid}, {"a": ObjectId()})
    assert m({"a": when}, {"a": when})
    aware = when.replace(tzinfo=datetime.UTC)
    assert m({"a": aware}, {"a": when})
    assert m({"a": b"xy"}, {"a": Binary(b"xy", 0)})
    assert not m({"a": b"xy"}, {"a": Binary(b"xy", 4)})
    assert m({"a": Timestamp(5, 1)}, {"a": Timestamp(5, 1)})
    assert m({"a": MinKey()}, {"a": MinKey()})
    assert not m({"a": MinKey()}, {"a": None})


# ---------------------------------------------------------------------------
# null and missing (after MongoDB's jstests/core/null_query_semantics.js)

NULL_DOCS: list[dict[str, Any]] = [
    {"_id": "a_empty_subobject", "a": {}},
    {"_id": "a_null", "a": None},
    {"_id": "a_number", "a": 4},
    {"_id": "a_subobject_b_not_null", "a": {"b": "hi"}},
    {"_id": "a_subobject_b_null", "a": {"b": None}},
    {"_id": "no_a"},
    {"_id": "a_double_array", "a": [[]]},
    {"_id": "a_empty_array", "a": []},
    {"_id": "a_object_array_b_mix_null_missing", "a": [{"b": None}, {"b": None}, {}]},
    {"_id": "a_object_array_no_b_nulls", "a": [{"b": 1}, {"b": 3}, {"b": "string"}]},
    {"_id": "a_object_array_some_b_nulls", "a": [{"b": None}, {"b": 3}, {"b": None}]},
    {"_id": "a_object_array_some_b_missing", "a": [{"b": 3}, {}]},
    {"_id": "a_value_array_all_nulls", "a": [None, None]},
    {"_id": "a_value_array_no_nulls", "a": [1, "string", 4]},
    {"_id": "a_value_array_with_null", "a": [1, "string", None, 4]},
]
ALL_NULL_IDS = {d["_id"] for d in NULL_DOCS}
A_EQ_NULL = {"a_null", "a_value_array_all_nulls", "a_value_array_with_null", "no_a"}
AB_EQ_NULL = {
    "a_empty_subobject",
    "a_null",
    "a_number",
    "a_subobject_b_null",
    "no_a",
    "a_object_array_b_mix_null_missing",
    "a_object_array_some_b_nulls",
    "a_object_array_some_b_missing",
}


def test_null_matches_null_missing_and_arrays_containing_null() -> None:
    assert ids({"a": None}, NULL_DOCS) == A_EQ_NULL
    assert ids({"a": {"$eq": None}}, NULL_DOCS) == A_EQ_NULL


def test_ne_null_is_the_complement() -> None:
    assert ids({"a": {"$ne": None}}, NULL_DOCS) == ALL_NULL_IDS - A_EQ_NULL


def test_not_gte_null() -> None:
    assert ids({"a": {"$not": {"$gte": None}}}, NULL_DOCS) == ALL_NULL_IDS - A_EQ_NULL


def test_in_and_nin_with_null() -> None:
    assert ids({"a": {"$in": [None, 75]}}, NULL_DOCS) == A_EQ_NULL
    assert ids({"a": {"$nin": [None, 75]}}, NULL_DOCS) == ALL_NULL_IDS - A_EQ_NULL
    assert ids({"a": {"$nin": [None, []]}}, NULL_DOCS) == ALL_NULL_IDS - A_EQ_NULL - {
        "a_double_array",
        "a_empty_array",
    }
    assert ids({"a": {"$nin": [None, re.compile("^str")]}}, NULL_DOCS) == ALL_NULL_IDS - (
        A_EQ_NULL | {"a_value_array_no_nulls"}
    )


def test_or_with_null() -> None:
    assert ids({"$or": [{"a": None}, {"a": 75}]}, NULL_DOCS) == A_EQ_NULL


def test_exists_false() -> None:
    assert ids({"a": {"$exists": False}}, NULL_DOCS) == {"no_a"}
    assert ids({"a": {"$exists": True}}, NULL_DOCS) == ALL_NULL_IDS - {"no_a"}


def test_dotted_null() -> None:
    assert ids({"a.b": None}, NULL_DOCS) == AB_EQ_NULL
    assert ids({"a.b": {"$in": [None, 75]}}, NULL_DOCS) == AB_EQ_NULL
    assert ids({"$or": [{"a.b": None}, {"a.b": 75}]}, NULL_DOCS) == AB_EQ_NULL
    assert ids({"a.b": {"$ne": None}}, NULL_DOCS) == ALL_NULL_IDS - AB_EQ_NULL
    assert ids({"a.b": {"$nin": [None, 75]}}, NULL_DOCS) == ALL_NULL_IDS - AB_EQ_NULL
    assert ids({"a.b": {"$nin": [None, re.compile("^str")]}}, NULL_DOCS) == (
        ALL_NULL_IDS - AB_EQ_NULL - {"a_object_array_no_b_nulls"}
    )


def test_dotted_exists_false() -> None:
    assert ids({"a.b": {"$exists": False}}, NULL_DOCS) == {
        "no_a",
        "a_empty_subobject",
        "a_null",
        "a_number",
        # arrays whose elements yield no candidate at all
        "a_double_array",
        "a_empty_array",
        "a_value_array_all_nulls",
        "a_value_array_no_nulls",
        "a_value_array_with_null",
    }


def test_elem_match_value_with_null() -> None:
    assert ids({"a": {"$elemMatch": {"$eq": None}}}, NULL_DOCS) == {
        "a_value_array_all_nulls",
        "a_value_array_with_null",
    }
    assert ids({"a": {"$elemMatch": {"$ne": None}}}, NULL_DOCS) == {
        "a_double_array",
        "a_object_array_b_mix_null_missing",
        "a_object_array_no_b_nulls",
        "a_object_array_some_b_nulls",
        "a_object_array_some_b_missing",
        "a_value_array_no_nulls",
        "a_value_array_with_null",
    }
    assert ids({"a.b": {"$elemMatch": {"$eq": None}}}, NULL_DOCS) == set()
    assert ids({"a.b": {"$elemMatch": {"$ne": None}}}, NULL_DOCS) == set()


def test_elem_match_object_with_null() -> None:
    assert ids({"a": {"$elemMatch": {"b": {"$eq": None}}}}, NULL_DOCS) == {
        "a_double_array",  # the inner [] is matched as an empty object
        "a_object_array_b_mix_null_missing",
        "a_object_array_some_b_nulls",
        "a_object_array_some_b_missing",
    }
    assert ids({"a": {"$elemMatch": {"b": {"$ne": None}}}}, NULL_DOCS) == {
        "a_object_array_no_b_nulls",
        "a_object_array_some_b_nulls",
        "a_object_array_some_b_missing",
    }


def test_null_through_scalar_and_scalar_array() -> None:
    assert m({"a.b": None}, {"a": 5})
    assert not m({"a.b": None}, {"a": [1, 2]})
    assert m({"a.b": {"$exists": False}}, {"a": [1, 2]})


# ---------------------------------------------------------------------------
# Comparisons


def test_comparisons_numbers() -> None:
    doc = {"a": 5}
    assert m({"a": {"$gt": 4}}, doc)
    assert not m({"a": {"$gt": 5}}, doc)
    assert m({"a": {"$gte": 5}}, doc)
    assert m({"a": {"$lt": 5.5}}, doc)
    assert m({"a": {"$lte": Decimal128("5")}}, doc)
    assert not m({"a": {"$lt": Int64(5)}}, doc)
    assert m({"a": {"$gt": 4, "$lt": 6}}, doc)
    assert not m({"a": {"$gt": 5, "$lt": 6}}, doc)


def test_comparisons_mixed_numeric_types() -> None:
    assert m({"a": {"$gt": 1}}, {"a": Decimal128("1.5")})
    assert m({"a": {"$lt": Decimal128("1.5")}}, {"a": 1.25})
    assert m({"a": {"$gt": Decimal128("-Infinity")}}, {"a": -1e308})
    assert m({"a": {"$lt": float("inf")}}, {"a": Decimal128("1E+400")})
    assert m({"a": {"$gt": 1e308}}, {"a": Decimal128("1E+400")})
    assert m({"a": {"$gte": 2**62}}, {"a": Int64(2**62)})
    assert m({"a": {"$gt": 2**53}}, {"a": Int64(2**53 + 1)})
    assert not m({"a": {"$gt": float(2**53)}}, {"a": Int64(2**53)})


def test_comparisons_never_cross_types() -> None:
    assert not m({"a": {"$gt": 5}}, {"a": "zzz"})
    assert not m({"a": {"$lt": 5}}, {"a": "a"})
    assert not m({"a": {"$lt": 5}}, {"a": None})
    assert not m({"a": {"$lt": 5}}, {})
    assert not m({"a": {"$gt": "a"}}, {"a": 5})
    assert not m({"a": {"$gte": 0}}, {"a": False})
    assert not m({"a": {"$lte": True}}, {"a": 1})
    assert not m({"a": {"$lt": {"x": 1}}}, {"a": 5})


def test_comparisons_with_nan() -> None:
    assert not m({"a": {"$gt": 0}}, {"a": NAN})
    assert not m({"a": {"$lt": 0}}, {"a": NAN})
    assert not m({"a": {"$lte": 0}}, {"a": NAN})
    assert not m({"a": {"$gt": NAN}}, {"a": 5})
    assert not m({"a": {"$lt": NAN}}, {"a": 5})
    assert m({"a": {"$gte": NAN}}, {"a": NAN})
    assert m({"a": {"$lte": NAN}}, {"a": Decimal128("NaN")})
    assert not m({"a": {"$lt": NAN}}, {"a": NAN})
    assert not m({"a": {"$gt": Decimal128("1")}}, {"a": Decimal128("NaN")})


def test_comparisons_strings() -> None:
    assert m({"a": {"$gt": "abc"}}, {"a": "abd"})
    assert m({"a": {"$lt": "b"}}, {"a": "B"})  # binary order: uppercase first
    assert m({"a": {"$gte": ""}}, {"a": ""})
    assert m({"a": {"$lt": "é"}}, {"a": "z"})


def test_comparisons_dates_and_objectids() -> None:
    t0 = datetime.datetime(2020, 1, 1)
    t1 = datetime.datetime(2021, 1, 1)
    assert m({"a": {"$gt": t0}}, {"a": t1})
    assert not m({"a": {"$gt": t1}}, {"a": t0})
    assert m({"a": {"$lt": t1.replace(tzinfo=datetime.UTC)}}, {"a": t0})
    assert not m({"a": {"$gt": 0}}, {"a": t1})
    o0 = ObjectId("000000000000000000000001")
    o1 = ObjectId("000000000000000000000002")
    assert m({"a": {"$gt": o0}}, {"a": o1})
    assert m({"a": {"$lte": o0}}, {"a": o0})
    assert not m({"a": {"$lt": o0}}, {"a": o1})


def test_comparisons_on_arrays() -> None:
    doc = {"a": [1, 10]}
    assert m({"a": {"$gt": 5}}, doc)
    assert m({"a": {"$lt": 5}}, doc)
    # without $elemMatch, different elements may satisfy different bounds
    assert m({"a": {"$gt": 5, "$lt": 5}}, doc)
    assert m({"a": {"$gt": 2, "$lt": 8}}, doc)
    assert not m({"a": {"$elemMatch": {"$gt": 2, "$lt": 8}}}, doc)
    # the whole array takes part too, compared as an array
    assert m({"a": {"$gt": [1, 5]}}, doc)
    assert m({"a": {"$lt": [2]}}, doc)
    assert not m({"a": {"$gt": [2]}}, doc)


def test_comparisons_with_null() -> None:
    assert m({"a": {"$lte": None}}, {})
    assert m({"a": {"$gte": None}}, {"a": None})
    assert not m({"a": {"$lt": None}}, {})
    assert not m({"a": {"$lt": None}}, {"a": None})
    assert not m({"a": {"$gt": None}}, {"a": None})
    assert not m({"a": {"$gte": None}}, {"a": 0})


def test_minkey_maxkey_bounds() -> None:
    docs: list[dict[str, Any]] = [{"a": 1}, {"a": "s"}, {"a": None}, {}, {"a": MaxKey()}, {"a": [1]}]
    for doc in docs:
        assert m({"a": {"$gt": MinKey()}}, doc), doc
        assert m({"a": {"$gte": MinKey()}}, doc), doc
    docs = [{"a": 1}, {"a": "s"}, {"a": None}, {}, {"a": MinKey()}]
    for doc in docs:
        assert m({"a": {"$lt": MaxKey()}}, doc), doc
    assert not m({"a": {"$gt": MinKey()}}, {"a": MinKey()})
    assert m({"a": {"$gte": MinKey()}}, {"a": MinKey()})
    assert not m({"a": {"$lt": MaxKey()}}, {"a": MaxKey()})
    assert m({"a": {"$lte": MinKey()}}, {"a": MinKey()})
    assert not m({"a": {"$lte": MinKey()}}, {"a": 1})
    assert not m({"a": {"$gt": 5}}, {"a": MaxKey()})
    assert not m({"a": {"$eq": MinKey()}}, {})


def test_ne() -> None:
    assert m({"a": {"$ne": 1}}, {"a": 2})
    assert not m({"a": {"$ne": 1}}, {"a": 1})
    assert m({"a": {"$ne": 1}}, {})
    assert not m({"a": {"$ne": 1}}, {"a": [2, 1]})
    assert m({"a": {"$ne": 1}}, {"a": [2, 3]})
    assert not m({"a": {"$ne": [2, 3]}}, {"a": [2, 3]})
    assert not m({"a.b": {"$ne": 1}}, {"a": [{"b": 2}, {"b": 1}]})


# ---------------------------------------------------------------------------
# $in / $nin


def test_in() -> None:
    assert m({"a": {"$in": [1, 2]}}, {"a": 2})
    assert m({"a": {"$in": [1, 2]}}, {"a": 2.0})
    assert m({"a": {"$in": [1, 2]}}, {"a": Decimal128("2")})
    assert not m({"a": {"$in": [1, 2]}}, {"a": 3})
    assert not m({"a": {"$in": []}}, {"a": 3})
    assert m({"a": {"$in": [1, 2]}}, {"a": [5, 1]})
    assert m({"a": {"$in": [[5, 1]]}}, {"a": [5, 1]})
    assert m({"a": {"$in": ["x", {"b": 1}]}}, {"a": {"b": 1}})
    assert not m({"a": {"$in": ["x"]}}, {})
    assert m({"a": {"$in": ["x", "y"]}}, {"a": ["z", "y"]})


def test_in_with_regexes() -> None:
    spec = {"a": {"$in": [re.compile("^ab"), Regex("xyz$", "i"), 5]}}
    assert m(spec, {"a": "abc"})
    assert m(spec, {"a": "__XYZ"})
    assert m(spec, {"a": 5})
    assert m(spec, {"a": ["q", "abq"]})
    assert not m(spec, {"a": "ba"})
    assert not m(spec, {"a": 6})


def test_nin() -> None:
    assert m({"a": {"$nin": [1, 2]}}, {"a": 3})
    assert not m({"a": {"$nin": [1, 2]}}, {"a": 1})
    assert m({"a": {"$nin": [1, 2]}}, {})
    assert not m({"a": {"$nin": [1, 2]}}, {"a": [3, 2]})
    assert m({"a": {"$nin": []}}, {"a": 1})


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=2)),
        max_size=4,
    ),
    doc_value=st.one_of(
        st.none(),
        st.integers(-3, 3),
        st.floats(allow_nan=True),
        st.text(max_size=2),
        st.lists(st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=1)), max_size=3),
    ),
    present=st.booleans(),
)
def test_nin_is_not_in(values: list[Any], doc_value: Any, present: bool) -> None:
    doc = {"a": doc_value} if present else {}
    in_ = m({"a": {"$in": values}}, doc)
    assert m({"a": {"$nin": values}}, doc) == (not in_)
    assert m({"a": {"$not": {"$in": values}}}, doc) == (not in_)
    # $in is an $or of equalities
    if values:
        assert m({"$or": [{"a": {"$eq": v}} for v in values]}, doc) == in_


@settings(max_examples=150, deadline=None)
@given(
    bound=st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=2)),
    doc_value=st.one_of(
        st.none(),
        st.integers(-5, 5),
        st.floats(allow_nan=True),
        st.text(max_size=2),
        st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=1)), max_size=3),
    ),
    op=st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq", "$in"]),
)
def test_not_is_the_complement(bound: Any, doc_value: Any, op: str) -> None:
    arg = [bound] if op == "$in" else bound
    doc = {"a": doc_value}
    assert m({"a": {"$not": {op: arg}}}, doc) == (not m({"a": {op: arg}}, doc))
    assert m({"$nor": [{"a": {op: arg}}]}, doc) == (not m({"a": {op: arg}}, doc))


@settings(max_examples=100, deadline=None)
@given(
    doc_value=st.one_of(
        st.integers(-5, 5),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10, max_value=10),
    ),
    bound=st.integers(-5, 5),
)
def test_numeric_comparison_agrees_with_python(doc_value: Any, bound: int) -> None:
    stored = Decimal128(doc_value) if not isinstance(doc_value, (int, float)) else doc_value
    assert m({"a": {"$gt": bound}}, {"a": stored}) == (doc_value > bound)
    assert m({"a": {"$lte": bound}}, {"a": stored}) == (doc_value <= bound)
    assert m({"a": bound}, {"a": stored}) == (doc_value == bound)


# ---------------------------------------------------------------------------
# Logical operators


def test_and_or_nor() -> None:
    doc = {"a": 1, "b": 2}
    assert m({"$and": [{"a": 1}, {"b": 2}]}, doc)
    assert not m({"$and": [{"a": 1}, {"b": 3}]}, doc)
    assert m({"$or": [{"a": 5}, {"b": 2}]}, doc)
    assert not m({"$or": [{"a": 5}, {"b": 5}]}, doc)
    assert m({"$nor": [{"a": 5}, {"b": 5}]}, doc)
    assert not m({"$nor": [{"a": 1}, {"b": 5}]}, doc)
    assert m({"$and": [{"$or": [{"a": 1}, {"a": 2}]}, {"$nor": [{"b": 3}]}]}, doc)
    assert m({"a": 1, "$or": [{"b": 2}, {"c": 3}]}, doc)
    assert not m({"a": 2, "$or": [{"b": 2}, {"c": 3}]}, doc)


def test_or_with_empty_clause_matches_everything() -> None:
    assert m({"$or": [{}, {"a": 5}]}, {"a": 1})
    assert m({"$and": [{}]}, {"a": 1})
    assert not m({"$nor": [{}]}, {"a": 1})


def test_not_with_operators_and_regex() -> None:
    assert m({"a": {"$not": {"$gt": 5}}}, {"a": 3})
    assert not m({"a": {"$not": {"$gt": 5}}}, {"a": 7})
    assert m({"a": {"$not": {"$gt": 5}}}, {})
    assert m({"a": {"$not": {"$gt": 5}}}, {"a": "str"})
    assert m({"a": {"$not": re.compile("^x")}}, {"a": "yx"})
    assert not m({"a": {"$not": Regex("^x")}}, {"a": "xy"})
    assert not m({"a": {"$not": {"$regex": "^x"}}}, {"a": "xy"})
    assert m({"a": {"$not": {"$gt": 1, "$lt": 5}}}, {"a": 7})
    assert not m({"a": {"$not": {"$gt": 1, "$lt": 5}}}, {"a": 3})
    assert not m({"a": {"$not": {"$gt": 5}}}, {"a": [1, 7]})


def test_comment_and_constants() -> None:
    assert m({"$comment": "hello", "a": 1}, {"a": 1})
    assert m({"$alwaysTrue": 1}, {})
    assert not m({"$alwaysFalse": 1}, {})


# ---------------------------------------------------------------------------
# $exists / $type


def test_exists() -> None:
    assert m({"a": {"$exists": True}}, {"a": None})
    assert m({"a": {"$exists": 1}}, {"a": 0})
    assert not m({"a": {"$exists": True}}, {})
    assert m({"a": {"$exists": 0}}, {})
    assert m({"a.b": {"$exists": True}}, {"a": [{"c": 1}, {"b": None}]})
    assert not m({"a.b": {"$exists": True}}, {"a": [{"c": 1}]})
    assert m({"a.1": {"$exists": True}}, {"a": [5, 6]})
    assert not m({"a.2": {"$exists": True}}, {"a": [5, 6]})
    assert m({"a": {"$exists": True}}, {"a": []})


def test_type_aliases() -> None:
    cases: list[tuple[Any, str]] = [
        (1.5, "double"),
        ("s", "string"),
        ({"x": 1}, "object"),
        ([1], "array"),
        (b"b", "binData"),
        (Binary(b"b", 4), "binData"),
        (ObjectId(), "objectId"),
        (True, "bool"),
        (datetime.datetime(2020, 1, 1), "date"),
        (None, "null"),
        (Regex("x"), "regex"),
        (re.compile("x"), "regex"),
        (Code("f()"), "javascript"),
        (Code("f()", {"a": 1}), "javascriptWithScope"),
        (5, "int"),
        (Timestamp(1, 2), "timestamp"),
        (Int64(5), "long"),
        (2**40, "long"),
        (Decimal128("1.5"), "decimal"),
        (MinKey(), "minKey"),
        (MaxKey(), "maxKey"),
    ]
    for value, alias in cases:
        assert m({"a": {"$type": alias}}, {"a": value}), (value, alias)
        others = [a for _, a in cases if a != alias]
        assert not any(
            m({"a": {"$type": other}}, {"a": value})
            for other in others
            if not (alias in ("int", "long") and other in ("int", "long"))
            and not (alias == "object" and other == "array")
            and not (alias == "array" and other == "int")
            and not (alias == "binData" and other == "binData")
        ), (value, alias)


def test_type_codes_number_and_lists() -> None:
    assert m({"a": {"$type": 2}}, {"a": "s"})
    assert m({"a": {"$type": 2.0}}, {"a": "s"})
    assert m({"a": {"$type": Int64(16)}}, {"a": 3})
    assert m({"a": {"$type": -1}}, {"a": MinKey()})
    assert m({"a": {"$type": 127}}, {"a": MaxKey()})
    for value in (1, 1.5, Int64(1), Decimal128("1")):
        assert m({"a": {"$type": "number"}}, {"a": value})
    assert not m({"a": {"$type": "number"}}, {"a": True})
    assert not m({"a": {"$type": "number"}}, {"a": "1"})
    assert m({"a": {"$type": ["string", "null"]}}, {"a": None})
    assert m({"a": {"$type": ["string", 10]}}, {"a": None})
    assert not m({"a": {"$type": "null"}}, {})


def test_type_with_arrays() -> None:
    assert m({"a": {"$type": "array"}}, {"a": []})
    assert m({"a": {"$type": "array"}}, {"a": [1]})
    assert m({"a": {"$type": "int"}}, {"a": [1, "x"]})
    assert m({"a": {"$type": "string"}}, {"a": [1, "x"]})
    assert not m({"a": {"$type": "string"}}, {"a": [1, 2]})
    assert not m({"a": {"$type": "array"}}, {"a": 1})
    assert m({"a.b": {"$type": "int"}}, {"a": [{"b": "x"}, {"b": 3}]})


def test_bson_type_code() -> None:
    assert bson_type_code(True) == 8
    assert bson_type_code(1) == 16
    assert bson_type_code(2**31) == 18
    assert bson_type_code(Int64(1)) == 18
    assert bson_type_code(SON([("a", 1)])) == 3
    assert bson_type_code(Code("x")) == 13


# ---------------------------------------------------------------------------
# $regex


def test_regex_forms() -> None:
    doc = {"a": "Hello World"}
    assert m({"a": re.compile("^Hello")}, doc)
    assert m({"a": Regex("^hello", "i")}, doc)
    assert m({"a": {"$regex": "World$"}}, doc)
    assert not m({"a": {"$regex": "world$"}}, doc)
    assert m({"a": {"$regex": "world$", "$options": "i"}}, doc)
    assert m({"a": {"$options": "i", "$regex": "world$"}}, doc)
    assert m({"a": {"$regex": re.compile("world$", re.I)}}, doc)
    assert m({"a": {"$regex": Regex("world$"), "$options": "i"}}, doc)
    assert m({"a": re.compile("world", re.IGNORECASE)}, doc)


def test_regex_options_m_s_x() -> None:
    text = {"a": "first\nsecond"}
    assert not m({"a": {"$regex": "^second"}}, text)
    assert m({"a": {"$regex": "^second", "$options": "m"}}, text)
    assert not m({"a": {"$regex": "first.second"}}, text)
    assert m({"a": {"$regex": "first.second", "$options": "s"}}, text)
    assert m({"a": {"$regex": "f i r s t  # comment", "$options": "x"}}, text)


def test_regex_only_matches_strings_and_regex_values() -> None:
    assert not m({"a": re.compile("1")}, {"a": 1})
    assert not m({"a": re.compile("f")}, {"a": Code("f()")})
    assert m({"a": re.compile("b")}, {"a": ["abc", 5]})
    assert m({"a": re.compile("^x")}, {"a": [5, "xa"]})
    assert not m({"a": re.compile("")}, {})
    # a regex in the document matches a regex query with the same source and options
    assert m({"a": Regex("ab", "i")}, {"a": Regex("ab", "i")})
    assert m({"a": Regex("ab", "i")}, {"a": re.compile("ab", re.I)})
    assert not m({"a": Regex("ab", "i")}, {"a": Regex("ab")})


def test_pcre_named_groups_are_accepted() -> None:
    assert m({"a": {"$regex": "(?<year>[0-9]{4})-"}}, {"a": "2024-01"})


def test_regex_combined_with_other_operators() -> None:
    spec = {"a": {"$regex": "^a", "$ne": "abc"}}
    assert m(spec, {"a": "abd"})
    assert not m(spec, {"a": "abc"})


# ---------------------------------------------------------------------------
# $elemMatch


def test_elem_match_object_form() -> None:
    doc = {"results": [{"product": "abc", "score": 10}, {"product": "xyz", "score": 5}]}
    assert m({"results": {"$elemMatch": {"product": "xyz", "score": {"$gte": 5}}}}, doc)
    assert not m({"results": {"$elemMatch": {"product": "xyz", "score": {"$gte": 8}}}}, doc)
    # without $elemMatch the conditions may hold on different elements
    assert m({"results.product": "xyz", "results.score": {"$gte": 8}}, doc)
    assert m({"results": {"$elemMatch": {"$or": [{"score": 10}, {"score": 99}]}}}, doc)
    assert not m({"results": {"$elemMatch": {"product": "abc"}}}, {"results": {"product": "abc"}})


def test_elem_match_value_form() -> None:
    assert m({"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, {"a": [82, 90]})
    assert not m({"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, {"a": [79, 90]})
    assert not m({"a": {"$elemMatch": {"$gte": 80}}}, {"a": 82})
    assert m({"a": {"$elemMatch": {"$in": ["x"]}}}, {"a": ["x"]})
    assert m({"a": {"$elemMatch": {"$not": {"$gt": 1}}}}, {"a": [5, 1]})
    assert m({"a": {"$elemMatch": {"$regex": "^b"}}}, {"a": ["a", "bb"]})
    assert m({"a": {"$elemMatch": {"$exists": True}}}, {"a": [1]})
    assert not m({"a": {"$elemMatch": {"$exists": True}}}, {"a": []})
    assert m({"a": {"$elemMatch": {"$type": "string"}}}, {"a": [1, "s"]})
    assert m({"a": {"$elemMatch": {"$all": [1]}}}, {"a": [[1, 2]]}) is False
    assert m({"a": {"$elemMatch": {"$size": 2}}}, {"a": [[1, 2]]})


def test_elem_match_value_form_does_not_unwind_elements() -> None:
    assert not m({"a": {"$elemMatch": {"$eq": 1}}}, {"a": [[1, 2]]})
    assert m({"a": {"$elemMatch": {"$eq": [1, 2]}}}, {"a": [[1, 2]]})


def test_nested_elem_match() -> None:
    doc = {"a": [[1, 2], [3, 4]]}
    assert m({"a": {"$elemMatch": {"$elemMatch": {"$gt": 3}}}}, doc)
    assert not m({"a": {"$elemMatch": {"$elemMatch": {"$gt": 4}}}}, doc)
    doc2 = {"a": [{"b": [{"c": 1, "d": 2}, {"c": 3, "d": 4}]}]}
    assert m({"a": {"$elemMatch": {"b": {"$elemMatch": {"c": 3, "d": 4}}}}}, doc2)
    assert not m({"a": {"$elemMatch": {"b": {"$elemMatch": {"c": 1, "d": 4}}}}}, doc2)


def test_elem_match_on_dotted_path() -> None:
    doc = {"a": [{"b": [1, 5]}, {"b": [7]}]}
    assert m({"a.b": {"$elemMatch": {"$gt": 6}}}, doc)
    assert not m({"a.b": {"$elemMatch": {"$gt": 7}}}, doc)


def test_elem_match_array_element_matched_as_object() -> None:
    assert m({"a": {"$elemMatch": {"0": 5}}}, {"a": [[5, 6]]})
    assert m({"a": {"$elemMatch": {}}}, {"a": [1, {"x": 1}]})
    assert not m({"a": {"$elemMatch": {}}}, {"a": [1, 2]})


# ---------------------------------------------------------------------------
# $all / $size / $mod


def test_all() -> None:
    doc = {"tags": ["a", "b", "c"]}
    assert m({"tags": {"$all": ["a", "c"]}}, doc)
    assert not m({"tags": {"$all": ["a", "z"]}}, doc)
    assert not m({"tags": {"$all": []}}, doc)
    assert m({"tags": {"$all": ["a"]}}, {"tags": "a"})
    assert m({"a": {"$all": [[1, 2]]}}, {"a": [[1, 2], 3]})
    assert m({"a": {"$all": [[1, 2]]}}, {"a": [1, 2]})
    assert m({"tags": {"$all": [re.compile("^b"), "c"]}}, doc)
    assert m({"a.b": {"$all": [1, 2]}}, {"a": [{"b": 1}, {"b": 2}]})


def test_all_with_elem_match() -> None:
    doc = {
        "qty": [
            {"size": "S", "num": 10, "color": "blue"},
            {"size": "M", "num": 45, "color": "blue"},
            {"size": "L", "num": 100, "color": "green"},
        ]
    }
    spec: dict[str, Any] = {
        "qty": {
            "$all": [
                {"$elemMatch": {"size": "M", "num": {"$gt": 50}}},
                {"$elemMatch": {"num": 100, "color": "green"}},
            ]
        }
    }
    assert not m(spec, doc)
    spec["qty"]["$all"][0]["$elemMatch"]["num"] = {"$gt": 40}
    assert m(spec, doc)


def test_size() -> None:
    assert m({"a": {"$size": 2}}, {"a": [1, 2]})
    assert not m({"a": {"$size": 1}}, {"a": [1, 2]})
    assert m({"a": {"$size": 0}}, {"a": []})
    assert not m({"a": {"$size": 0}}, {})
    assert not m({"a": {"$size": 1}}, {"a": "x"})
    assert not m({"a": {"$size": 2}}, {"a": [[1, 2]]})  # not applied to nested elements
    assert m({"a": {"$size": 2.0}}, {"a": [1, 2]})
    assert m({"a.b": {"$size": 1}}, {"a": [{"b": [1]}, {"b": [1, 2, 3]}]})
    assert m({"a": {"$not": {"$size": 2}}}, {"a": [1]})


def test_mod() -> None:
    assert m({"a": {"$mod": [4, 0]}}, {"a": 8})
    assert not m({"a": {"$mod": [4, 0]}}, {"a": 9})
    assert m({"a": {"$mod": [4, 1]}}, {"a": 9.7})  # truncated to 9
    assert m({"a": {"$mod": [4, -1]}}, {"a": -5})  # sign of the dividend
    assert m({"a": {"$mod": [-4, 1]}}, {"a": 5})
    assert m({"a": {"$mod": [4.5, 1.9]}}, {"a": 5})  # divisor and remainder truncated
    assert m({"a": {"$mod": [3, 2]}}, {"a": Decimal128("-7.5")}) is False
    assert m({"a": {"$mod": [3, -1]}}, {"a": Decimal128("-7.5")})
    assert m({"a": {"$mod": [2, 0]}}, {"a": Int64(2**62)})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": "4"})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": NAN})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": float("inf")})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": True})
    assert m({"a": {"$mod": [2, 1]}}, {"a": [4, 5]})


def test_bit_operators() -> None:
    doc = {"a": 0b1010}
    assert m({"a": {"$bitsAllSet": [1, 3]}}, doc)
    assert not m({"a": {"$bitsAllSet": [0, 1]}}, doc)
    assert m({"a": {"$bitsAnySet": 0b0011}}, doc)
    assert m({"a": {"$bitsAllClear": [0, 2]}}, doc)
    assert m({"a": {"$bitsAnyClear": [0, 1]}}, doc)
    assert m({"a": {"$bitsAllSet": [63, 100]}}, {"a": -1})
    assert m({"a": {"$bitsAnySet": [0]}}, {"a": Binary(b"\x01", 0)})
    assert not m({"a": {"$bitsAnySet": [0]}}, {"a": 1.5})


# ---------------------------------------------------------------------------
# $expr


def test_expr() -> None:
    docs = [{"_id": 1, "spent": 100, "budget": 50}, {"_id": 2, "spent": 10, "budget": 50}]
    assert ids({"$expr": {"$gt": ["$spent", "$budget"]}}, docs) == {1}
    assert ids({"$expr": {"$gt": ["$spent", "$budget"]}, "_id": 2}, docs) == set()
    assert ids({"$expr": "$spent"}, docs) == {1, 2}
    assert ids({"$expr": "$missing"}, docs) == set()
    assert ids({"$expr": 0}, docs) == set()
    assert ids({"$or": [{"_id": 2}, {"$expr": {"$eq": ["$spent", 100]}}]}, docs) == {1, 2}
    assert ids({"$expr": {"$eq": ["$$ROOT._id", "$$CURRENT._id"]}}, docs) == {1, 2}
    assert ids({"a": {"$elemMatch": {"$expr": {"$gt": ["$x", 1]}}}}, [{"_id": 3, "a": [{"x": 2}]}]) == {
        3
    }


def test_expr_errors_are_reported_at_compile_time() -> None:
    with pytest.raises(LauraError):
        compile_filter({"$expr": {"$noSuchOperator": 1}})


# ---------------------------------------------------------------------------
# Positions (for the positional $ operator)


def position(spec: dict[str, Any], doc: dict[str, Any]) -> tuple[bool, int | None]:
    return compile_filter(spec).match_with_position(doc)


def test_position_scalar_fields_have_none() -> None:
    assert position({"a": 1}, {"a": 1}) == (True, None)
    assert position({"a": 1}, {"a": 2}) == (False, None)


def test_position_of_matching_array_element() -> None:
    assert position({"grades": {"$gte": 90}}, {"grades": [80, 85, 92, 95]}) == (True, 2)
    assert position({"grades": 85}, {"grades": [80, 85]}) == (True, 1)
    assert position({"grades": [80, 85]}, {"grades": [80, 85]}) == (True, None)


def test_position_through_array_of_documents() -> None:
    doc = {"items": [{"sku": "a", "qty": [1, 2]}, {"sku": "b", "qty": [3, 4]}]}
    assert position({"items.sku": "b"}, doc) == (True, 1)
    assert position({"items.qty": 4}, doc) == (True, 1)  # outermost array wins


def test_position_elem_match() -> None:
    doc = {"a": [{"x": 1, "y": 1}, {"x": 1, "y": 2}]}
    assert position({"a": {"$elemMatch": {"x": 1, "y": 2}}}, doc) == (True, 1)
    assert position({"a": {"$elemMatch": {"$gt": 2}}}, {"a": [1, 3]}) == (True, 1)


def test_position_last_recording_leaf_wins() -> None:
    doc = {"a": [1, 2, 3], "b": [4, 5, 6]}
    assert position({"a": 2, "b": 6}, doc) == (True, 2)
    assert position({"a": 2, "c": {"$exists": False}}, doc) == (True, 1)


def test_position_not_recorded_through_or_and_negations() -> None:
    doc = {"a": [1, 2, 3]}
    assert position({"$or": [{"a": 3}, {"b": 1}]}, doc) == (True, None)
    assert position({"$nor": [{"a": 5}]}, doc) == (True, None)
    assert position({"a": {"$ne": 5}}, doc) == (True, None)


def test_position_explicit_index_is_not_implicit() -> None:
    assert position({"a.1": 2}, {"a": [1, 2]}) == (True, None)


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"$foo": 1}, ErrorCode.UNKNOWN_OPERATOR),
        ({"a": {"$foo": 1}}, ErrorCode.UNKNOWN_OPERATOR),
        ({"a": {"$gt": 1, "b": 2}}, ErrorCode.UNKNOWN_OPERATOR),
        ({"a": {"$elemMatch": {"$foo": 1}}}, ErrorCode.UNKNOWN_OPERATOR),
        ({"a": {"$in": 5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$nin": "x"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$in": [{"$gt": 1}]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$all": 5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$all": [{"$elemMatch": {"b": 1}}, 5]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$all": [{"$gt": 5}]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$size": "a"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$size": -1}}, ErrorCode.BAD_VALUE),
        ({"a": {"$size": 1.5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$size": True}}, ErrorCode.BAD_VALUE),
        ({"$and": 5}, ErrorCode.BAD_VALUE),
        ({"$and": []}, ErrorCode.BAD_VALUE),
        ({"$or": []}, ErrorCode.BAD_VALUE),
        ({"$nor": [5]}, ErrorCode.BAD_VALUE),
        ({"$or": {"a": 1}}, ErrorCode.BAD_VALUE),
        ({"a": {"$regex": "("}}, ErrorCode.INVALID_REGEX),
        ({"a": {"$regex": "a", "$options": "q"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$regex": 5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$options": "i"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$regex": Regex("a", "i"), "$options": "m"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$regex": "a", "$options": 1}}, ErrorCode.BAD_VALUE),
        ({"a": {"$regex": "a\x00b"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$in": [Regex("[")]}}, ErrorCode.INVALID_REGEX),
        ({"a": {"$mod": [4]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$mod": [4, 1, 2]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$mod": 4}}, ErrorCode.BAD_VALUE),
        ({"a": {"$mod": [0, 1]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$mod": ["a", 1]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$mod": [NAN, 1]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$type": "nope"}}, ErrorCode.BAD_VALUE),
        ({"a": {"$type": 99}}, ErrorCode.BAD_VALUE),
        ({"a": {"$type": 2.5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$type": []}}, ErrorCode.BAD_VALUE),
        ({"a": {"$type": {}}}, ErrorCode.BAD_VALUE),
        ({"a": {"$not": 5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$not": {}}}, ErrorCode.BAD_VALUE),
        ({"a": {"$not": {"b": 1}}}, ErrorCode.BAD_VALUE),
        ({"a": {"$elemMatch": 5}}, ErrorCode.BAD_VALUE),
        ({"a": {"$elemMatch": [1]}}, ErrorCode.BAD_VALUE),
        ({"a": {"$gt": re.compile("x")}}, ErrorCode.BAD_VALUE),
        ({"a": {"$ne": re.compile("x")}}, ErrorCode.BAD_VALUE),
        ({"a": {"$eq": object()}}, ErrorCode.BAD_VALUE),
        ({"$alwaysTrue": 2}, ErrorCode.BAD_VALUE),
        ({"a..b": 1}, ErrorCode.EMPTY_FIELD_NAME),
        ({"$where": "this.a == 1"}, ErrorCode.NOT_IMPLEMENTED),
        ({"a": {"$near": [0, 0]}}, ErrorCode.NOT_IMPLEMENTED),
        ({"a": {"$bitsAllSet": -1}}, ErrorCode.BAD_VALUE),
        ({"a": {"$bitsAllSet": "x"}}, ErrorCode.BAD_VALUE),
    ],
)
def test_bad_filters(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


@pytest.mark.parametrize("spec", [5, "a", [{"a": 1}], 1.5])
def test_top_level_must_be_a_document(spec: Any) -> None:
    assert error_code(spec) == ErrorCode.BAD_VALUE


def test_errors_inside_nested_clauses_are_found_at_compile_time() -> None:
    assert error_code({"$or": [{"a": 1}, {"b": {"$in": 1}}]}) == ErrorCode.BAD_VALUE
    assert error_code({"a": {"$elemMatch": {"b": {"$size": "x"}}}}) == ErrorCode.BAD_VALUE
    assert error_code({"a": {"$not": {"$regex": "("}}}) == ErrorCode.INVALID_REGEX


def test_nesting_limit() -> None:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(120):
        spec = {"$and": [spec]}
    assert error_code(spec) == ErrorCode.NESTING_TOO_DEEP


# ---------------------------------------------------------------------------
# Fast path vs general path


@pytest.mark.parametrize(
    "value",
    [5, 5.0, Int64(5), Decimal128("5"), "5", True, None, [5], [[5]], {"x": 5}, NAN, MinKey()],
)
@pytest.mark.parametrize(
    "query",
    [
        5,
        {"$gt": 4},
        {"$gte": 5},
        {"$lt": 6.5},
        {"$lte": Int64(5)},
        {"$in": [5, 7]},
        {"$in": ["5"]},
        "5",
        {"$gt": "4"},
        True,
    ],
)
def test_top_level_and_nested_paths_agree(value: Any, query: Any) -> None:
    top = m({"a": query}, {"a": value})
    nested = m({"n.a": query}, {"n": {"a": value}})
    through_array = m({"n.a": query}, {"n": [{"a": value}]})
    assert top == nested == through_array


def test_matcher_filter_helper() -> None:
    docs = [{"a": i} for i in range(10)]
    assert [d["a"] for d in compile_filter({"a": {"$gte": 7}}).filter(docs)] == [7, 8, 9]
    assert len(list(compile_filter({}).filter(docs))) == 10


def test_non_dict_mapping_documents() -> None:
    doc = SON([("a", SON([("b", 1)])), ("c", [SON([("d", 2)])])])
    assert m({"a.b": 1}, doc)
    assert m({"c.d": 2}, doc)


# ---------------------------------------------------------------------------
# equality_fields


def test_equality_fields() -> None:
    oid = ObjectId()
    spec = {
        "_id": oid,
        "a": {"$eq": 5},
        "b": {"$in": ["x"]},
        "c": {"$gt": 1},
        "d": re.compile("x"),
        "e": {"$in": [1, 2]},
        "f.g": {"h": 1},
        "n": None,
        "$or": [{"z": 1}],
        "$and": [{"k": 1}, {"$and": [{"j": [1, 2]}]}, {"a": 99}],
    }
    assert equality_fields(spec) == {
        "_id": oid,
        "a": 5,
        "b": "x",
        "f.g": {"h": 1},
        "n": None,
        "k": 1,
        "j": [1, 2],
    }
    assert equality_fields({}) == {}
    assert equality_fields(None) == {}
    assert equality_fields({"a": {"$in": [re.compile("x")]}}) == {}


# ---------------------------------------------------------------------------
# Differential check: the fast closures against the generic positional path

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.5, NAN, Decimal128("2"), Int64(3)]),
    st.sampled_from(["a", "b", ""]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "0", "1"]), inner, max_size=3),
    ),
    max_leaves=8,
)
_paths = st.sampled_from(["a", "b", "a.b", "a.0", "a.b.a", "b.1.a", "a.a.0"])
_operands = st.sampled_from(
    [
        1,
        2.5,
        "a",
        None,
        True,
        [1, 2],
        {"a": 1},
        {"$gt": 1},
        {"$lte": "b"},
        {"$ne": None},
        {"$in": [1, "a", None]},
        {"$nin": [2.5]},
        {"$exists": False},
        {"$size": 1},
        {"$type": "array"},
        {"$elemMatch": {"$gt": 0}},
        {"$elemMatch": {"a": 1}},
        {"$all": [1]},
        {"$not": {"$lt": 2}},
        {"$mod": [2, 1]},
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["a", "b"]), _values, max_size=2),
    path=_paths,
    operand=_operands,
)
def test_fast_and_generic_paths_agree(doc: dict[str, Any], path: str, operand: Any) -> None:
    matcher = compile_filter({path: operand})
    assert matcher(doc) == matcher.match_with_position(doc)[0]
