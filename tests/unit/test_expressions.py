"""Aggregation expressions (lauradb.query.expressions)."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.expressions import compile_expression, outer_variables

DT = datetime.datetime(2021, 3, 4, 5, 6, 7, 890000)  # a Thursday, day 63 of the year
DOC: dict[str, Any] = {
    "_id": 1,
    "a": 5,
    "b": 2.5,
    "n": None,
    "s": "Hello World",
    "l": Int64(10),
    "d": Decimal128("1.5"),
    "t": True,
    "arr": [1, 2, 3],
    "docs": [{"x": 1}, {"x": 2}, {"y": 3}, 7, [{"x": 4}]],
    "sub": {"x": 10, "y": {"z": "deep"}},
    "dt": DT,
    "empty": [],
}


def ev(
    spec: Any, doc: dict[str, Any] | None = None, variables: dict[str, Any] | None = None
) -> Any:
    return compile_expression(spec)(DOC if doc is None else doc, variables or {})


def same(a: Any, b: Any) -> bool:
    """Equal with the same Python type (so 1 != 1.0 != Int64(1) here)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def check(spec: Any, expected: Any, doc: dict[str, Any] | None = None) -> None:
    got = ev(spec, doc)
    assert same(got, expected), f"{spec!r}: got {got!r} ({type(got).__name__}), want {expected!r}"


def error_code(spec: Any, doc: dict[str, Any] | None = None) -> ErrorCode:
    with pytest.raises(LauraError) as info:
        ev(spec, doc)
    return info.value.code


# ---------------------------------------------------------------- paths and literals


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("$a", 5),
        ("$sub.x", 10),
        ("$sub.y.z", "deep"),
        ("$docs.x", [1, 2, [4]]),
        ("$arr", [1, 2, 3]),
        ("$$ROOT.a", 5),
        ("$$CURRENT.sub.x", 10),
        ("plain", "plain"),
        (7, 7),
        (None, None),
        ({"$literal": "$a"}, "$a"),
        ({"$literal": {"$add": 1}}, {"$add": 1}),
        (["$a", "$missing", 1], [5, None, 1]),
        ({"k": "$a", "gone": "$missing", "r": "$$REMOVE"}, {"k": 5}),
        ({"o": {"p": "$sub.x"}}, {"o": {"p": 10}}),
    ],
)
def test_paths_and_literals(spec: Any, expected: Any) -> None:
    check(spec, expected)


def test_missing_paths() -> None:
    assert ev("$missing") is MISSING
    assert ev("$a.b") is MISSING  # through a scalar
    assert ev("$$REMOVE") is MISSING
    assert ev("$$ROOT") is DOC


def test_numeric_path_component_is_a_field_name() -> None:
    assert ev("$arr.0") == []
    assert ev("$m.0", {"m": [{"0": "x"}, {"1": "y"}]}) == ["x"]


def test_bad_paths_and_unknown_operators() -> None:
    assert error_code("$") == ErrorCode.INVALID_EXPRESSION
    assert error_code("$a..b") == ErrorCode.INVALID_EXPRESSION
    assert error_code("$a.$b") == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$nope": 1}) == ErrorCode.UNKNOWN_OPERATOR
    assert error_code({"$add": [1], "x": 1}) == ErrorCode.INVALID_EXPRESSION
    assert error_code({"a.b": 1}) == ErrorCode.INVALID_EXPRESSION
    assert error_code("$$undefinedVar") == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$let": {"vars": {"Bad": 1}, "in": 1}}) == ErrorCode.INVALID_EXPRESSION


# ---------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$add": [1, 2]}, 3),
        ({"$add": []}, 0),
        ({"$add": [1, 2.5]}, 3.5),
        ({"$add": ["$a", "$l"]}, Int64(15)),
        ({"$add": [2**31 - 1, 1]}, Int64(2**31)),
        ({"$add": [Int64(2**63 - 1), 1]}, float(2**63)),
        ({"$add": [1, Decimal128("0.1")]}, Decimal128("1.1")),
        ({"$add": [1.5, Decimal128("0.25")]}, Decimal128("1.75")),
        ({"$add": [1, None]}, None),
        ({"$add": [1, "$missing"]}, None),
        ({"$add": ["$dt", 1000]}, DT + datetime.timedelta(seconds=1)),
        ({"$add": [-1000.4, "$dt"]}, DT - datetime.timedelta(seconds=1)),
        ({"$subtract": [5, 7]}, -2),
        ({"$subtract": [5, 0.5]}, 4.5),
        ({"$subtract": ["$dt", 1000]}, DT - datetime.timedelta(seconds=1)),
        ({"$subtract": ["$dt", datetime.datetime(2021, 3, 4)]}, Int64(18367890)),
        ({"$subtract": [None, 1]}, None),
        ({"$multiply": [2, 3, 4]}, 24),
        ({"$multiply": [2, 1.5]}, 3.0),
        ({"$multiply": [2**20, 2**20]}, Int64(2**40)),
        ({"$multiply": [Decimal128("1.5"), 2]}, Decimal128("3.0")),
        ({"$multiply": [2, "$missing"]}, None),
        ({"$divide": [7, 2]}, 3.5),
        ({"$divide": [6, 3]}, 2.0),
        ({"$divide": [Decimal128("1"), 4]}, Decimal128("0.25")),
        ({"$divide": [None, 4]}, None),
        ({"$mod": [7, 3]}, 1),
        ({"$mod": [-7, 3]}, -1),
        ({"$mod": [7.5, 2]}, 1.5),
        ({"$mod": [Int64(7), 4]}, Int64(3)),
        ({"$abs": -3}, 3),
        ({"$abs": -2.5}, 2.5),
        ({"$abs": [-(2**31)]}, Int64(2**31)),
        ({"$abs": None}, None),
        ({"$abs": Decimal128("-1.5")}, Decimal128("1.5")),
        ({"$ceil": 1.2}, 2.0),
        ({"$ceil": 3}, 3),
        ({"$floor": -1.2}, -2.0),
        ({"$floor": Decimal128("1.7")}, Decimal128("1")),
        ({"$round": [2.5, 0]}, 2.0),
        ({"$round": [3.5]}, 4.0),
        ({"$round": [1.2345, 2]}, 1.23),
        ({"$round": [1250, -2]}, 1200),
        ({"$round": [1350, -2]}, 1400),
        ({"$round": [7, 2]}, 7),
        ({"$round": [Decimal128("1.255"), 2]}, Decimal128("1.26")),
        ({"$round": [None, 1]}, None),
        ({"$trunc": [1.789, 1]}, 1.7),
        ({"$trunc": [-1.789]}, -1.0),
        ({"$trunc": [1789, -2]}, 1700),
        ({"$sqrt": 16}, 4.0),
        ({"$sqrt": 2.25}, 1.5),
        ({"$sqrt": None}, None),
        ({"$pow": [2, 10]}, 1024),
        ({"$pow": [2, 40]}, Int64(2**40)),
        ({"$pow": [2, -1]}, 0.5),
        ({"$pow": [2.0, 3]}, 8.0),
        ({"$pow": [-1, -3]}, -1),
        ({"$pow": [None, 2]}, None),
        ({"$exp": 0}, 1.0),
        ({"$ln": 1}, 0.0),
        ({"$log": [100, 10]}, 2.0),
        ({"$log10": 1000}, 3.0),
        ({"$log10": None}, None),
    ],
)
def test_arithmetic(spec: Any, expected: Any) -> None:
    check(spec, expected)


@pytest.mark.parametrize(
    "spec, code",
    [
        ({"$add": ["a", 1]}, ErrorCode.TYPE_MISMATCH),
        ({"$add": ["$dt", "$dt"]}, ErrorCode.TYPE_MISMATCH),
        ({"$subtract": [1, "$dt"]}, ErrorCode.TYPE_MISMATCH),
        ({"$multiply": [1, "x"]}, ErrorCode.TYPE_MISMATCH),
        ({"$divide": [1, 0]}, ErrorCode.BAD_VALUE),
        ({"$divide": [1, 0.0]}, ErrorCode.BAD_VALUE),
        ({"$divide": [1, Decimal128("0")]}, ErrorCode.BAD_VALUE),
        ({"$mod": [1, 0]}, ErrorCode.BAD_VALUE),
        ({"$divide": [1]}, ErrorCode.INVALID_EXPRESSION),
        ({"$subtract": [1, 2, 3]}, ErrorCode.INVALID_EXPRESSION),
        ({"$abs": [1, 2]}, ErrorCode.INVALID_EXPRESSION),
        ({"$abs": "x"}, ErrorCode.TYPE_MISMATCH),
        ({"$abs": Int64(-(2**63))}, ErrorCode.BAD_VALUE),
        ({"$sqrt": -1}, ErrorCode.BAD_VALUE),
        ({"$ln": 0}, ErrorCode.BAD_VALUE),
        ({"$log": [10, 1]}, ErrorCode.BAD_VALUE),
        ({"$pow": [0, -1]}, ErrorCode.BAD_VALUE),
        ({"$round": [1.5, 1.5]}, ErrorCode.BAD_VALUE),
        ({"$round": [1.5, 200]}, ErrorCode.BAD_VALUE),
    ],
)
def test_arithmetic_errors(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


def test_nan_and_infinity() -> None:
    assert math.isnan(ev({"$add": [float("nan"), 1]}))
    assert ev({"$multiply": [float("inf"), 2]}) == float("inf")
    assert ev({"$ceil": float("inf")}) == float("inf")


# ---------------------------------------------------------------- comparison and boolean


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$eq": [1, 1.0]}, True),
        ({"$eq": [1, Decimal128("1")]}, True),
        ({"$eq": ["$a", Int64(5)]}, True),
        ({"$eq": ["$missing", None]}, False),
        ({"$eq": ["$missing", "$alsoMissing"]}, True),
        ({"$ne": [1, "1"]}, True),
        ({"$gt": ["a", 1]}, True),  # strings sort after numbers
        ({"$gt": [{"a": 1}, "zzz"]}, True),  # objects after strings
        ({"$lt": [None, 0]}, True),
        ({"$lt": ["$missing", None]}, True),
        ({"$gte": [[1, 2], [1]]}, True),
        ({"$lte": [2, 2.0]}, True),
        ({"$cmp": [1, 2]}, -1),
        ({"$cmp": ["b", "a"]}, 1),
        ({"$cmp": [2, 2.0]}, 0),
        ({"$and": []}, True),
        ({"$and": [1, "x", [], {}]}, True),
        ({"$and": [1, 0]}, False),
        ({"$and": [1, None]}, False),
        ({"$and": [1, "$missing"]}, False),
        ({"$and": [1, Decimal128("0")]}, False),
        ({"$or": []}, False),
        ({"$or": [0, False, None, "$missing", 0.0]}, False),
        ({"$or": [0, ""]}, True),
        ({"$not": [0]}, True),
        ({"$not": "$t"}, False),
        ({"$not": [[]]}, False),
    ],
)
def test_comparison_and_boolean(spec: Any, expected: Any) -> None:
    check(spec, expected)


def test_comparison_arity() -> None:
    assert error_code({"$eq": [1]}) == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$not": [1, 2]}) == ErrorCode.INVALID_EXPRESSION


def test_and_short_circuits() -> None:
    assert ev({"$and": [False, {"$divide": [1, 0]}]}) is False
    assert ev({"$or": [True, {"$divide": [1, 0]}]}) is True


# ---------------------------------------------------------------- conditionals


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$cond": [True, "y", "n"]}, "y"),
        ({"$cond": [0, "y", "n"]}, "n"),
        ({"$cond": {"if": {"$gt": ["$a", 3]}, "then": "big", "else": "small"}}, "big"),
        ({"$ifNull": ["$missing", "d"]}, "d"),
        ({"$ifNull": ["$n", "d"]}, "d"),
        ({"$ifNull": ["$a", "d"]}, 5),
        ({"$ifNull": ["$missing", None, "$n", "last"]}, "last"),
        ({"$ifNull": [0, "d"]}, 0),
        (
            {"$switch": {"branches": [{"case": {"$lt": ["$a", 0]}, "then": "neg"},
                                      {"case": {"$gt": ["$a", 0]}, "then": "pos"}],
                         "default": "zero"}},
            "pos",
        ),
        ({"$switch": {"branches": [{"case": False, "then": 1}], "default": 2}}, 2),
    ],
)
def test_conditionals(spec: Any, expected: Any) -> None:
    check(spec, expected)


def test_conditional_errors() -> None:
    assert error_code({"$cond": [1, 2]}) == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$cond": {"if": 1, "then": 2}}) == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$ifNull": [1]}) == ErrorCode.INVALID_EXPRESSION
    no_match = {"$switch": {"branches": [{"case": False, "then": 1}]}}
    assert error_code(no_match) == ErrorCode.BAD_VALUE
    assert error_code({"$switch": {"branches": [{"case": 1}]}}) == ErrorCode.INVALID_EXPRESSION
    assert error_code({"$switch": {"branches": [], "oops": 1}}) == ErrorCode.INVALID_EXPRESSION


def test_ifnull_returns_missing_replacement() -> None:
    assert ev({"$ifNull": ["$missing", "$alsoMissing"]}) is MISSING


# ---------------------------------------------------------------- strings


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$concat": ["a", "b", "c"]}, "abc"),
        ({"$concat": []}, ""),
        ({"$concat": ["a", None]}, None),
        ({"$concat": ["a", "$missing"]}, None),
        ({"$substr": ["hello", 1, 3]}, "ell"),
        ({"$substrBytes": ["hello", 2, -1]}, "llo"),
        ({"$substrBytes": ["hello", -1, 2]}, ""),
        ({"$substrBytes": ["hello", 10, 2]}, ""),
        ({"$substrBytes": [None, 0, 2]}, ""),
        ({"$substrBytes": [12345, 1, 2]}, "23"),
        ({"$substrBytes": ["héllo", 0, 3]}, "hé"),
        ({"$substrCP": ["héllo", 1, 3]}, "éll"),
        ({"$substrCP": ["abc", 5, 3]}, ""),
        ({"$toLower": "$s"}, "hello world"),
        ({"$toUpper": ["ÄbC"]}, "ÄBC"),
        ({"$toLower": None}, ""),
        ({"$toUpper": 1.5}, "1.5"),
        ({"$strLenCP": "héllo"}, 5),
        ({"$strLenBytes": "héllo"}, 6),
        ({"$split": ["a,b,,c", ","]}, ["a", "b", "", "c"]),
        ({"$split": [None, ","]}, None),
        ({"$trim": {"input": "  x y  "}}, "x y"),
        ({"$ltrim": {"input": "\t x "}}, "x "),
        ({"$rtrim": {"input": "xxaxx", "chars": "x"}}, "xxa"),
        ({"$trim": {"input": None}}, None),
        ({"$indexOfCP": ["héllo", "l"]}, 2),
        ({"$indexOfBytes": ["héllo", "l"]}, 3),
        ({"$indexOfCP": ["hello", "l", 3]}, 3),
        ({"$indexOfCP": ["hello", "z"]}, -1),
        ({"$indexOfCP": ["hello", "l", 0, 2]}, -1),
        ({"$indexOfCP": [None, "l"]}, None),
        ({"$strcasecmp": ["abc", "ABC"]}, 0),
        ({"$strcasecmp": ["abc", "ABD"]}, -1),
        ({"$strcasecmp": ["b", None]}, 1),
        ({"$regexMatch": {"input": "$s", "regex": "^hello", "options": "i"}}, True),
        ({"$regexMatch": {"input": "$s", "regex": Regex("world$", "i")}}, True),
        ({"$regexMatch": {"input": "$s", "regex": "^world"}}, False),
        ({"$regexMatch": {"input": "$missing", "regex": "x"}}, False),
        ({"$regexFind": {"input": "abc123", "regex": "([0-9])([0-9])"}},
         {"match": "12", "idx": 3, "captures": ["1", "2"]}),
        ({"$regexFindAll": {"input": "a1b2", "regex": "[0-9]"}},
         [{"match": "1", "idx": 1, "captures": []}, {"match": "2", "idx": 3, "captures": []}]),
    ],
)
def test_strings(spec: Any, expected: Any) -> None:
    check(spec, expected)


@pytest.mark.parametrize(
    "spec, code",
    [
        ({"$concat": ["a", 1]}, ErrorCode.TYPE_MISMATCH),
        ({"$strLenCP": None}, ErrorCode.TYPE_MISMATCH),
        ({"$strLenBytes": 5}, ErrorCode.TYPE_MISMATCH),
        ({"$split": ["a", ""]}, ErrorCode.BAD_VALUE),
        ({"$split": [1, ","]}, ErrorCode.TYPE_MISMATCH),
        ({"$substrBytes": ["héllo", 2, 1]}, ErrorCode.BAD_VALUE),
        ({"$substrCP": ["abc", -1, 1]}, ErrorCode.BAD_VALUE),
        ({"$substrCP": ["abc", 0.5, 1]}, ErrorCode.BAD_VALUE),
        ({"$toLower": [[1]]}, ErrorCode.TYPE_MISMATCH),
        ({"$trim": {"input": 1}}, ErrorCode.TYPE_MISMATCH),
        ({"$trim": {"chars": "x"}}, ErrorCode.INVALID_EXPRESSION),
        ({"$regexMatch": {"input": "a", "regex": "("}}, ErrorCode.INVALID_REGEX),
        ({"$regexMatch": {"input": 1, "regex": "a"}}, ErrorCode.TYPE_MISMATCH),
        ({"$regexMatch": {"input": "a", "regex": Regex("a", "i"), "options": "m"}},
         ErrorCode.BAD_VALUE),
    ],
)
def test_string_errors(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


# ---------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$size": "$arr"}, 3),
        ({"$size": [[]]}, 0),
        ({"$arrayElemAt": ["$arr", 0]}, 1),
        ({"$arrayElemAt": ["$arr", -1]}, 3),
        ({"$arrayElemAt": ["$arr", 1.0]}, 2),
        ({"$arrayElemAt": [None, 0]}, None),
        ({"$first": "$arr"}, 1),
        ({"$last": ["$arr"]}, 3),
        ({"$first": None}, None),
        ({"$isArray": "$arr"}, True),
        ({"$isArray": ["$a"]}, False),
        ({"$in": [2, "$arr"]}, True),
        ({"$in": [2.0, "$arr"]}, True),
        ({"$in": ["2", "$arr"]}, False),
        ({"$concatArrays": ["$arr", [4], []]}, [1, 2, 3, 4]),
        ({"$concatArrays": ["$arr", None]}, None),
        ({"$reverseArray": "$arr"}, [3, 2, 1]),
        ({"$reverseArray": None}, None),
        ({"$slice": ["$arr", 2]}, [1, 2]),
        ({"$slice": ["$arr", -2]}, [2, 3]),
        ({"$slice": ["$arr", -10]}, [1, 2, 3]),
        ({"$slice": ["$arr", 1, 1]}, [2]),
        ({"$slice": ["$arr", -2, 5]}, [2, 3]),
        ({"$slice": [None, 1]}, None),
        ({"$range": [0, 5]}, [0, 1, 2, 3, 4]),
        ({"$range": [0, 10, 3]}, [0, 3, 6, 9]),
        ({"$range": [5, 0, -2]}, [5, 3, 1]),
        ({"$indexOfArray": ["$arr", 2]}, 1),
        ({"$indexOfArray": ["$arr", 9]}, -1),
        ({"$indexOfArray": [[1, 2, 1], 1, 1]}, 2),
        ({"$indexOfArray": [None, 1]}, None),
        ({"$filter": {"input": "$arr", "cond": {"$gt": ["$$this", 1]}}}, [2, 3]),
        ({"$filter": {"input": "$arr", "as": "v", "cond": {"$gt": ["$$v", 1]}, "limit": 1}}, [2]),
        ({"$filter": {"input": None, "cond": True}}, None),
        ({"$map": {"input": "$arr", "as": "v", "in": {"$add": ["$$v", "$a"]}}}, [6, 7, 8]),
        ({"$map": {"input": "$arr", "in": "$$ROOT.a"}}, [5, 5, 5]),
        ({"$map": {"input": "$missing", "in": 1}}, None),
        (
            {"$reduce": {"input": "$arr", "initialValue": 0,
                         "in": {"$add": ["$$value", "$$this"]}}},
            6,
        ),
        (
            {"$reduce": {"input": ["a", "b"], "initialValue": "",
                         "in": {"$concat": ["$$value", "$$this"]}}},
            "ab",
        ),
        ({"$reduce": {"input": None, "initialValue": 0, "in": 1}}, None),
        ({"$allElementsTrue": [[1, True, "x"]]}, True),
        ({"$anyElementTrue": [[0, None, False]]}, False),
        ({"$setUnion": [[1, 2], [2, 3]]}, [1, 2, 3]),
        ({"$setIntersection": [[1, 2, 3], [3, 2.0]]}, [2, 3]),
        ({"$setDifference": [[1, 2, 3], [2]]}, [1, 3]),
        ({"$setEquals": [[1, 2], [2, 1, 1]]}, True),
    ],
)
def test_arrays(spec: Any, expected: Any) -> None:
    check(spec, expected)


def test_array_missing_results() -> None:
    assert ev({"$arrayElemAt": ["$arr", 5]}) is MISSING
    assert ev({"$first": [[]]}) is MISSING


@pytest.mark.parametrize(
    "spec, code",
    [
        ({"$size": "$a"}, ErrorCode.TYPE_MISMATCH),
        ({"$size": "$missing"}, ErrorCode.TYPE_MISMATCH),
        ({"$arrayElemAt": ["$a", 0]}, ErrorCode.TYPE_MISMATCH),
        ({"$arrayElemAt": ["$arr", 0.5]}, ErrorCode.BAD_VALUE),
        ({"$in": [1, "$a"]}, ErrorCode.TYPE_MISMATCH),
        ({"$concatArrays": ["$arr", 1]}, ErrorCode.TYPE_MISMATCH),
        ({"$range": [0, 5, 0]}, ErrorCode.BAD_VALUE),
        ({"$slice": ["$arr", 0, 0]}, ErrorCode.BAD_VALUE),
        ({"$filter": {"input": 1, "cond": True}}, ErrorCode.TYPE_MISMATCH),
        ({"$filter": {"input": [], "cond": True, "bad": 1}}, ErrorCode.INVALID_EXPRESSION),
        ({"$map": {"input": []}}, ErrorCode.INVALID_EXPRESSION),
        ({"$first": "$a"}, ErrorCode.TYPE_MISMATCH),
    ],
)
def test_array_errors(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


def test_nested_map_filter_scopes() -> None:
    spec = {
        "$map": {
            "input": [[1, 2], [3]],
            "as": "outer",
            "in": {"$filter": {"input": "$$outer", "as": "x", "cond": {"$gt": ["$$x", 1]}}},
        }
    }
    assert ev(spec) == [[2], [3]]


# ---------------------------------------------------------------- objects, $let, $type


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$mergeObjects": [{"a": 1}, None, {"b": 2, "a": 3}]}, {"a": 3, "b": 2}),
        ({"$mergeObjects": ["$sub", {"x": 0}]}, {"x": 0, "y": {"z": "deep"}}),
        ({"$objectToArray": "$sub"}, [{"k": "x", "v": 10}, {"k": "y", "v": {"z": "deep"}}]),
        ({"$objectToArray": None}, None),
        ({"$arrayToObject": [[["a", 1], ["b", 2]]]}, {"a": 1, "b": 2}),
        ({"$arrayToObject": [[{"k": "a", "v": 1}]]}, {"a": 1}),
        ({"$arrayToObject": None}, None),
        ({"$getField": "a"}, 5),
        ({"$getField": {"field": "x", "input": "$sub"}}, 10),
        ({"$getField": {"field": {"$literal": "$p"}, "input": {"$literal": {"$p": 1}}}}, 1),
        ({"$let": {"vars": {"x": 2, "y": "$a"}, "in": {"$multiply": ["$$x", "$$y"]}}}, 10),
        ({"$let": {"vars": {"x": 1}, "in": {"$let": {"vars": {"x": 2}, "in": "$$x"}}}}, 2),
        ({"$let": {"vars": {"o": "$sub"}, "in": "$$o.y.z"}}, "deep"),
    ],
)
def test_objects_and_let(spec: Any, expected: Any) -> None:
    check(spec, expected)


def test_object_errors() -> None:
    assert error_code({"$mergeObjects": [1]}) == ErrorCode.TYPE_MISMATCH
    assert error_code({"$objectToArray": 1}) == ErrorCode.TYPE_MISMATCH
    assert error_code({"$arrayToObject": [[["a"]]]}) == ErrorCode.BAD_VALUE
    assert error_code({"$arrayToObject": [[[1, 2]]]}) == ErrorCode.TYPE_MISMATCH
    assert error_code({"$getField": {"field": "$a"}}) == ErrorCode.INVALID_EXPRESSION


@pytest.mark.parametrize(
    "value, name",
    [
        (1, "int"),
        (2**40, "long"),
        (Int64(1), "long"),
        (1.5, "double"),
        (Decimal128("1"), "decimal"),
        ("s", "string"),
        (True, "bool"),
        (None, "null"),
        ([1], "array"),
        ({"a": 1}, "object"),
        (DT, "date"),
        (ObjectId(), "objectId"),
        (Regex("a"), "regex"),
        (b"x", "binData"),
    ],
)
def test_type(value: Any, name: str) -> None:
    assert ev({"$type": "$v"}, {"v": value}) == name


def test_type_of_missing() -> None:
    assert ev({"$type": "$nothing"}) == "missing"


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$toString": 1}, "1"),
        ({"$toString": 2.0}, "2"),
        ({"$toString": 2.5}, "2.5"),
        ({"$toString": Decimal128("1.50")}, "1.50"),
        ({"$toString": True}, "true"),
        ({"$toString": "$dt"}, "2021-03-04T05:06:07.890Z"),
        ({"$toString": None}, None),
        ({"$toString": "$missing"}, None),
        ({"$toInt": 2.9}, 2),
        ({"$toInt": -2.9}, -2),
        ({"$toInt": "42"}, 42),
        ({"$toInt": True}, 1),
        ({"$toLong": 5}, Int64(5)),
        ({"$toLong": "$dt"}, Int64(1614834367890)),
        ({"$toDouble": "1.5"}, 1.5),
        ({"$toDouble": 3}, 3.0),
        ({"$toDouble": False}, 0.0),
        ({"$toDecimal": 3}, Decimal128("3")),
        ({"$toDecimal": 0.1}, Decimal128("0.1")),
        ({"$toDecimal": "2.50"}, Decimal128("2.50")),
        ({"$toBool": 0}, False),
        ({"$toBool": 0.5}, True),
        ({"$toBool": ""}, True),
        ({"$toBool": "$n"}, None),
        ({"$toDate": Int64(0)}, datetime.datetime(1970, 1, 1)),
        ({"$toDate": "2020-01-02T03:04:05.678Z"}, datetime.datetime(2020, 1, 2, 3, 4, 5, 678000)),
        ({"$toObjectId": "5f1d7e8b9c0a1b2c3d4e5f60"}, ObjectId("5f1d7e8b9c0a1b2c3d4e5f60")),
        ({"$convert": {"input": "12", "to": "int"}}, 12),
        ({"$convert": {"input": "12", "to": 16}}, 12),
        ({"$convert": {"input": "abc", "to": "int", "onError": -1}}, -1),
        ({"$convert": {"input": None, "to": "int", "onNull": 0}}, 0),
        ({"$convert": {"input": "$missing", "to": "int"}}, None),
        ({"$convert": {"input": 1, "to": "$missing"}}, None),
        ({"$isNumber": "$d"}, True),
        ({"$isNumber": "$s"}, False),
    ],
)
def test_conversions(spec: Any, expected: Any) -> None:
    check(spec, expected)


@pytest.mark.parametrize(
    "spec, code",
    [
        ({"$toInt": "1.5"}, ErrorCode.BAD_VALUE),
        ({"$toInt": 2**40}, ErrorCode.BAD_VALUE),
        ({"$toInt": float("nan")}, ErrorCode.BAD_VALUE),
        ({"$toDouble": "abc"}, ErrorCode.BAD_VALUE),
        ({"$toString": [[1]]}, ErrorCode.BAD_VALUE),
        ({"$toObjectId": "xyz"}, ErrorCode.BAD_VALUE),
        ({"$toDate": 5}, ErrorCode.BAD_VALUE),
        ({"$convert": {"input": 1, "to": "nope"}}, ErrorCode.INVALID_EXPRESSION),
        ({"$convert": {"input": 1}}, ErrorCode.INVALID_EXPRESSION),
    ],
)
def test_conversion_errors(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    "op, expected",
    [
        ("$year", 2021),
        ("$month", 3),
        ("$dayOfMonth", 4),
        ("$hour", 5),
        ("$minute", 6),
        ("$second", 7),
        ("$millisecond", 890),
        ("$dayOfWeek", 5),
        ("$dayOfYear", 63),
        ("$week", 9),
        ("$isoDayOfWeek", 4),
        ("$isoWeek", 9),
        ("$isoWeekYear", 2021),
    ],
)
def test_date_parts(op: str, expected: int) -> None:
    check({op: "$dt"}, expected)
    check({op: ["$dt"]}, expected)
    check({op: {"date": "$dt"}}, expected)
    check({op: "$missing"}, None)


def test_date_parts_with_timezones() -> None:
    assert ev({"$hour": {"date": "$dt", "timezone": "+02:30"}}) == 7
    assert ev({"$hour": {"date": "$dt", "timezone": "America/New_York"}}) == 0
    assert ev({"$dayOfMonth": {"date": "$dt", "timezone": "-0600"}}) == 3
    assert ev({"$year": {"date": datetime.datetime(2021, 1, 1), "timezone": "-01"}}) == 2020
    assert error_code({"$hour": {"date": "$dt", "timezone": "Mars/Base"}}) == ErrorCode.BAD_VALUE
    assert error_code({"$year": "$s"}) == ErrorCode.TYPE_MISMATCH


def test_date_parts_of_objectid() -> None:
    oid = ObjectId.from_datetime(datetime.datetime(2019, 5, 6))
    assert ev({"$year": "$o"}, {"o": oid}) == 2019


def test_week_edges() -> None:
    jan1 = datetime.datetime(2022, 1, 1)  # a Saturday: week 0
    jan2 = datetime.datetime(2022, 1, 2)  # the first Sunday: week 1
    assert ev({"$week": "$d"}, {"d": jan1}) == 0
    assert ev({"$week": "$d"}, {"d": jan2}) == 1
    assert ev({"$dayOfWeek": "$d"}, {"d": jan2}) == 1


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (None, "2021-03-04T05:06:07.890Z"),
        ("%Y-%m-%d", "2021-03-04"),
        ("%H:%M:%S.%L", "05:06:07.890"),
        ("%j %w %u %U %V %G", "063 5 4 09 09 2021"),
        ("%d %b %B %%", "04 Mar March %"),
        ("%z %Z", "+0000 0"),
    ],
)
def test_date_to_string(fmt: str | None, expected: str) -> None:
    spec: dict[str, Any] = {"date": "$dt"}
    if fmt is not None:
        spec["format"] = fmt
    assert ev({"$dateToString": spec}) == expected


def test_date_to_string_timezone_and_null() -> None:
    spec = {"date": "$dt", "format": "%H:%M %z", "timezone": "+05:30"}
    assert ev({"$dateToString": spec}) == "10:36 +0530"
    assert ev({"$dateToString": {"date": "$missing"}}) is None
    assert ev({"$dateToString": {"date": "$missing", "onNull": "none"}}) == "none"
    with pytest.raises(LauraError) as info:
        compile_expression({"$dateToString": {"date": "$dt", "format": "%Q"}})
    assert info.value.code == ErrorCode.BAD_VALUE


def test_date_from_parts() -> None:
    spec = {"$dateFromParts": {"year": 2020, "month": 14, "day": 1, "hour": 1}}
    assert ev(spec) == datetime.datetime(2021, 2, 1, 1)


# ---------------------------------------------------------------- accumulators as expressions


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"$sum": "$arr"}, 6),
        ({"$sum": ["$a", "$b", "x"]}, 7.5),
        ({"$sum": "$missing"}, 0),
        ({"$sum": [[1, 2]]}, 3),
        ({"$avg": "$arr"}, 2.0),
        ({"$avg": []}, None),
        ({"$avg": ["$missing"]}, None),
        ({"$max": "$arr"}, 3),
        ({"$max": ["$a", "$missing", None]}, 5),
        ({"$min": [None, "$missing"]}, None),
        ({"$min": [1, "a"]}, 1),
        ({"$stdDevPop": [[1, 3]]}, 1.0),
        ({"$stdDevSamp": [[1]]}, None),
    ],
)
def test_accumulator_expressions(spec: Any, expected: Any) -> None:
    check(spec, expected)


# ---------------------------------------------------------------- variables


def test_outer_variables_are_visible() -> None:
    fn = compile_expression({"$add": ["$$x", 1]})
    with outer_variables({"x": 41}):
        assert fn({}, {}) == 42
        with outer_variables({"y": 1}):
            assert fn({}, {}) == 42
    with pytest.raises(LauraError):
        fn({}, {})


def test_explicit_variables_and_current() -> None:
    fn = compile_expression(["$$v", "$$CURRENT.a", "$a"])
    assert fn({"a": 1}, {"v": "x"}) == ["x", 1, 1]


def test_deep_nesting_is_a_clean_error() -> None:
    spec: Any = 1
    for _ in range(5000):
        spec = {"$add": [spec, 1]}
    with pytest.raises(LauraError) as info:
        compile_expression(spec)
    assert info.value.code == ErrorCode.NESTING_TOO_DEEP


def test_compiled_once_reused() -> None:
    fn = compile_expression({"$multiply": ["$a", 2]})
    assert [fn({"a": i}, {}) for i in range(3)] == [0, 2, 4]
