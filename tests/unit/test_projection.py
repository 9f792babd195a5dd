"""Find projections: inclusion, exclusion, _id, dotted paths, $slice, $elemMatch, .$."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.son import SON

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.query.projection import compile_projection

DOC: dict[str, Any] = {
    "_id": 1,
    "a": 1,
    "b": {"c": 2, "d": 3},
    "e": [{"f": 1, "g": 2}, {"f": 3}, 7, [{"f": 4, "h": 5}]],
    "z": "last",
}


def project(spec: Any, doc: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    source = DOC if doc is None else doc
    before = copy.deepcopy(source)
    out = compile_projection(spec).apply(source, **kw)
    assert source == before, "projection must not modify its input"
    return out


def error_code(spec: Any) -> ErrorCode:
    with pytest.raises(LauraError) as info:
        compile_projection(spec)
    return info.value.code


# ---------------------------------------------------------------------------
# identity / modes


def test_identity() -> None:
    specs: list[dict[str, Any] | None] = [None, {}]
    for spec in specs:
        proj = compile_projection(spec)
        assert proj.is_identity
        assert not proj.is_inclusion
        out = proj.apply(DOC)
        assert out == DOC
        assert out is not DOC
        assert proj.keeps("b.c")


def test_inclusion() -> None:
    assert project({"a": 1}) == {"_id": 1, "a": 1}
    assert project({"a": True, "z": 1}) == {"_id": 1, "a": 1, "z": "last"}
    assert project({"z": 1, "a": 1}) == {"_id": 1, "a": 1, "z": "last"}  # document order
    assert project({"missing": 1}) == {"_id": 1}
    for one in (1.0, Int64(1), Decimal128("1"), -1, 0.5):
        assert project({"a": one}) == {"_id": 1, "a": 1}
    proj = compile_projection({"a": 1})
    assert proj.is_inclusion and not proj.is_identity


def test_exclusion() -> None:
    assert project({"a": 0}) == {"_id": 1, "b": {"c": 2, "d": 3}, "e": DOC["e"], "z": "last"}
    assert project({"a": False, "b": 0, "e": 0}) == {"_id": 1, "z": "last"}
    assert project({"a": Decimal128("0"), "b": 0.0, "e": Int64(0), "z": 0}) == {"_id": 1}
    assert not compile_projection({"a": 0}).is_inclusion


def test_id_rules() -> None:
    assert project({"_id": 0, "a": 1}) == {"a": 1}
    assert project({"_id": 0}) == {k: v for k, v in DOC.items() if k != "_id"}
    assert project({"_id": 1}) == {"_id": 1}
    assert project({"_id": 1, "a": 0}) == {k: v for k, v in DOC.items() if k != "a"}
    assert project({"_id": 0, "a": 0}) == {"b": DOC["b"], "e": DOC["e"], "z": "last"}
    assert project({"a": 1}, {"a": 5}) == {"a": 5}  # no _id in the document


def test_id_subfields() -> None:
    doc = {"_id": {"x": 1, "y": 2}, "a": 1}
    assert project({"_id.x": 1}, doc) == {"_id": {"x": 1}}
    assert project({"_id.x": 0}, doc) == {"_id": {"y": 2}, "a": 1}


def test_mixing_inclusion_and_exclusion_is_an_error() -> None:
    assert error_code({"a": 1, "b": 0}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a": 0, "b": 1}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a": 0, "b": "$a"}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a": 0, "b.$": 1}) == ErrorCode.INVALID_PROJECTION


def test_path_collisions() -> None:
    assert error_code({"a": 1, "a.b": 1}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a.b": 1, "a": 1}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a.b": 0, "a": 0}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a": {"b": 1}, "a.b": 1}) == ErrorCode.INVALID_PROJECTION
    assert error_code({"a": {"$slice": 1}, "a.b": 1}) == ErrorCode.INVALID_PROJECTION
    # siblings are fine
    assert project({"b.c": 1, "b.d": 1}) == {"_id": 1, "b": {"c": 2, "d": 3}}


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (5, ErrorCode.INVALID_PROJECTION),
        ([("a", 1)], ErrorCode.INVALID_PROJECTION),
        ({"$a": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a.$b": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a..b": 1}, ErrorCode.EMPTY_FIELD_NAME),
        ({"": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a": {}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": "x"}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": [1]}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": [1, 0]}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": [1, -2]}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": [1, 2, 3]}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$elemMatch": 5}}, ErrorCode.INVALID_PROJECTION),
        ({"a.b": {"$elemMatch": {"x": 1}}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$elemMatch": {"$foo": 1}}}, ErrorCode.UNKNOWN_OPERATOR),
        ({"a": {"$elemMatch": {"x": 1}}, "b.$": 1}, ErrorCode.INVALID_PROJECTION),
        ({"b.$": 1, "a": {"$elemMatch": {"x": 1}}}, ErrorCode.INVALID_PROJECTION),
        ({"a.$": 1, "b.$": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a.$.$": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a.$": 0}, ErrorCode.INVALID_PROJECTION),
        ({"a.$": "x"}, ErrorCode.INVALID_PROJECTION),
        ({"a.$": {"$slice": 1}}, ErrorCode.INVALID_PROJECTION),
        ({"$": 1}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$slice": 1, "b": 1}}, ErrorCode.INVALID_PROJECTION),
        ({"a": {"$meta": "textScore"}}, ErrorCode.NOT_IMPLEMENTED),
    ],
)
def test_bad_projections(spec: Any, code: ErrorCode) -> None:
    assert error_code(spec) == code


# ---------------------------------------------------------------------------
# dotted paths


def test_dotted_inclusion_in_subdocument() -> None:
    assert project({"b.c": 1}) == {"_id": 1, "b": {"c": 2}}
    assert project({"b.x": 1}) == {"_id": 1, "b": {}}
    assert project({"a.x": 1}) == {"_id": 1}  # a scalar at a is left out


def test_dotted_inclusion_through_arrays() -> None:
    assert project({"e.f": 1}) == {"_id": 1, "e": [{"f": 1}, {"f": 3}, [{"f": 4}]]}
    assert project({"_id": 0, "e.g": 1}) == {"e": [{"g": 2}, {}, [{}]]}


def test_dotted_exclusion_through_arrays() -> None:
    assert project({"e.f": 0}) == {
        "_id": 1,
        "a": 1,
        "b": {"c": 2, "d": 3},
        "e": [{"g": 2}, {}, 7, [{"h": 5}]],
        "z": "last",
    }
    assert project({"b.c": 0, "a": 0}) == {"_id": 1, "b": {"d": 3}, "e": DOC["e"], "z": "last"}
    assert project({"a.x": 0})["a"] == 1


def test_nested_projection_documents() -> None:
    assert project({"b": {"c": 1}}) == project({"b.c": 1})
    assert project({"b": {"c": 0}}) == project({"b.c": 0})
    assert project({"e": {"f": 1}, "_id": 0}) == {"e": [{"f": 1}, {"f": 3}, [{"f": 4}]]}


def test_null_semantics_examples() -> None:
    # From MongoDB's null_query_semantics tests: {_id: 0, "a.b": 1}
    spec = {"_id": 0, "a.b": 1}
    assert project(spec, {"a": {}}) == {"a": {}}
    assert project(spec, {"a": None}) == {}
    assert project(spec, {"a": 4}) == {}
    assert project(spec, {}) == {}
    assert project(spec, {"a": [[]]}) == {"a": [[]]}
    assert project(spec, {"a": []}) == {"a": []}
    assert project(spec, {"a": [None, None]}) == {"a": []}
    assert project(spec, {"a": [1, "s", {"b": 3}, {}]}) == {"a": [{"b": 3}, {}]}


def test_output_is_new_and_input_untouched() -> None:
    doc = {"_id": 1, "b": {"c": 2, "d": 3}}
    out = compile_projection({"b.c": 0}).apply(doc)
    assert out == {"_id": 1, "b": {"d": 3}}
    assert doc == {"_id": 1, "b": {"c": 2, "d": 3}}


def test_other_mapping_documents() -> None:
    doc = SON([("_id", 1), ("b", SON([("c", 2), ("d", 3)]))])
    assert project({"b.c": 1}, doc) == {"_id": 1, "b": {"c": 2}}


# ---------------------------------------------------------------------------
# $slice

ARR = {"_id": 1, "arr": [0, 1, 2, 3, 4], "x": 5}


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (2, [0, 1]),
        (0, []),
        (10, [0, 1, 2, 3, 4]),
        (-2, [3, 4]),
        (-10, [0, 1, 2, 3, 4]),
        ([1, 2], [1, 2]),
        ([4, 5], [4]),
        ([9, 2], []),
        ([-2, 1], [3]),
        ([-10, 2], [0, 1]),
        (2.7, [0, 1]),
        (Int64(1), [0]),
    ],
)
def test_slice(arg: Any, expected: list[int]) -> None:
    assert project({"arr": {"$slice": arg}}, ARR) == {"_id": 1, "arr": expected, "x": 5}


def test_slice_alone_is_exclusion_like() -> None:
    proj = compile_projection({"arr": {"$slice": 1}})
    assert not proj.is_inclusion
    assert project({"arr": {"$slice": 1}, "x": 0}, ARR) == {"_id": 1, "arr": [0]}
    assert project({"_id": 0, "arr": {"$slice": 1}}, ARR) == {"arr": [0], "x": 5}


def test_slice_with_inclusion() -> None:
    assert project({"x": 1, "arr": {"$slice": -1}}, ARR) == {"_id": 1, "arr": [4], "x": 5}
    assert project({"_id": 1, "arr": {"$slice": 1}}, ARR) == {"_id": 1, "arr": [0]}


def test_slice_nested_and_non_arrays() -> None:
    doc = {"_id": 1, "d": {"colors": ["r", "g", "b"], "size": 3}, "s": "str"}
    assert project({"d.colors": {"$slice": 1}}, doc) == {
        "_id": 1,
        "d": {"colors": ["r"], "size": 3},
        "s": "str",
    }
    # in an inclusion projection the other fields of the subdocument go away
    assert project({"s": 1, "d.colors": {"$slice": 1}}, doc) == {
        "_id": 1,
        "d": {"colors": ["r"]},
        "s": "str",
    }
    assert project({"s": {"$slice": 1}}, doc)["s"] == "str"
    docs = {"_id": 1, "a": [{"b": [1, 2, 3]}, {"b": [4, 5]}, 6]}
    assert project({"a.b": {"$slice": 1}}, docs) == {"_id": 1, "a": [{"b": [1]}, {"b": [4]}, 6]}


def test_slice_expression_form() -> None:
    doc = {"_id": 1, "arr": [1, 2, 3]}
    assert project({"first": {"$slice": ["$arr", 2]}}, doc) == {"_id": 1, "first": [1, 2]}


# ---------------------------------------------------------------------------
# $elemMatch

SCHOOL = {
    "_id": 1,
    "zipcode": "63109",
    "students": [
        {"name": "john", "school": 102, "age": 10},
        {"name": "jess", "school": 102, "age": 11},
        {"name": "jeff", "school": 108, "age": 15},
    ],
    "other": True,
}


def test_elem_match_projection() -> None:
    out = project({"students": {"$elemMatch": {"school": 102}}}, SCHOOL)
    assert out == {"_id": 1, "students": [{"name": "john", "school": 102, "age": 10}]}
    out = project({"students": {"$elemMatch": {"school": 102, "age": {"$gt": 10}}}}, SCHOOL)
    assert out == {"_id": 1, "students": [{"name": "jess", "school": 102, "age": 11}]}
    assert compile_projection({"students": {"$elemMatch": {"school": 1}}}).is_inclusion


def test_elem_match_no_match_omits_the_field() -> None:
    assert project({"students": {"$elemMatch": {"school": 999}}}, SCHOOL) == {"_id": 1}
    assert project({"zipcode": {"$elemMatch": {"x": 1}}}, SCHOOL) == {"_id": 1}


def test_elem_match_comes_after_other_inclusions() -> None:
    out = project({"students": {"$elemMatch": {"school": 108}}, "zipcode": 1, "other": 1}, SCHOOL)
    assert list(out) == ["_id", "zipcode", "other", "students"]
    assert out["students"] == [{"name": "jeff", "school": 108, "age": 15}]


def test_elem_match_in_exclusion_projection() -> None:
    out = project({"other": 0, "students": {"$elemMatch": {"age": 11}}}, SCHOOL)
    assert out == {
        "_id": 1,
        "zipcode": "63109",
        "students": [{"name": "jess", "school": 102, "age": 11}],
    }


def test_elem_match_value_form() -> None:
    doc = {"_id": 1, "scores": [3, 9, 12]}
    assert project({"scores": {"$elemMatch": {"$gt": 5}}}, doc) == {"_id": 1, "scores": [9]}


# ---------------------------------------------------------------------------
# positional .$

GRADES = {"_id": 1, "semester": 1, "grades": [70, 87, 90], "name": "x"}


def test_positional_with_matcher_position() -> None:
    matcher = compile_filter({"semester": 1, "grades": {"$gte": 85}})
    ok, pos = matcher.match_with_position(GRADES)
    assert ok and pos == 1
    assert project({"grades.$": 1}, GRADES, position=pos) == {"_id": 1, "grades": [87]}
    assert project({"grades.$": 1, "_id": 0, "name": 1}, GRADES, position=2) == {
        "name": "x",
        "grades": [90],
    }
    assert compile_projection({"grades.$": 1}).is_inclusion
    assert compile_projection({"grades.$": 1}).needs_position
    assert not compile_projection({"grades": 1}).needs_position


def test_positional_on_array_of_documents() -> None:
    doc: dict[str, Any] = {"_id": 7, "items": [{"sku": "a", "q": 1}, {"sku": "b", "q": 2}]}
    ok, pos = compile_filter({"items.sku": "b"}).match_with_position(doc)
    assert ok and pos == 1
    assert project({"items.$": 1}, doc, position=pos) == {"_id": 7, "items": [doc["items"][1]]}
    # the path may go on below the array: the whole matched element is returned
    assert project({"items.sku.$": 1}, doc, position=pos) == {"_id": 7, "items": [doc["items"][1]]}


def test_positional_nested_array() -> None:
    doc = {"_id": 1, "foo": {"bar": [1, 2, 6, 10]}, "bar": 1}
    ok, pos = compile_filter({"bar": 1, "foo.bar": {"$gte": 5}}).match_with_position(doc)
    assert (ok, pos) == (True, 2)
    assert project({"foo.bar.$": 1}, doc, position=pos) == {"_id": 1, "foo": {"bar": [6]}}


def test_positional_without_array_leaves_field_out() -> None:
    doc = {"_id": 1, "a": 3}
    assert project({"a.$": 1}, doc, position=None) == {"_id": 1}


def test_positional_errors_at_apply_time() -> None:
    proj = compile_projection({"grades.$": 1})
    with pytest.raises(LauraError) as info:
        proj.apply(GRADES, position=None)
    assert info.value.code == ErrorCode.BAD_VALUE
    with pytest.raises(LauraError):
        proj.apply(GRADES, position=9)


# ---------------------------------------------------------------------------
# computed fields (aggregation expressions)


def test_computed_fields() -> None:
    doc = {"_id": 1, "a": 2, "b": {"c": 3}, "s": "x"}
    assert project({"total": {"$add": ["$a", "$b.c"]}}, doc) == {"_id": 1, "total": 5}
    assert project({"copy": "$s", "a": 1}, doc) == {"_id": 1, "a": 2, "copy": "x"}
    assert project({"lit": "hello", "_id": 0}, doc) == {"lit": "hello"}
    assert project({"gone": "$nope"}, doc) == {"_id": 1}
    assert project({"b.d": {"$literal": 9}, "b.c": 1}, doc) == {"_id": 1, "b": {"c": 3, "d": 9}}
    assert project({"new.x": "$a"}, doc) == {"_id": 1, "new": {"x": 2}}
    assert compile_projection({"x": "$a"}).is_inclusion


def test_computed_field_through_array() -> None:
    doc = {"_id": 1, "arr": [{"v": 1}, {"v": 2}]}
    assert project({"arr.k": {"$literal": 0}}, doc) == {"_id": 1, "arr": [{"k": 0}, {"k": 0}]}


# ---------------------------------------------------------------------------
# keeps()


def test_keeps_inclusion() -> None:
    proj = compile_projection({"a": 1, "b.c": 1, "arr": {"$slice": 1}, "x": "$a"})
    assert proj.keeps("_id")
    assert proj.keeps("a")
    assert proj.keeps("a.deep.path")
    assert proj.keeps("b.c")
    assert proj.keeps("b.c.d")
    assert not proj.keeps("b")  # only partly there
    assert not proj.keeps("b.d")
    assert not proj.keeps("z")
    assert not proj.keeps("arr")  # sliced
    assert not proj.keeps("x")  # computed
    assert not compile_projection({"_id": 0, "a": 1}).keeps("_id")


def test_keeps_exclusion() -> None:
    proj = compile_projection({"a": 0, "b.c": 0, "arr": {"$slice": 2}})
    assert not proj.keeps("a")
    assert not proj.keeps("a.x")
    assert not proj.keeps("b")
    assert not proj.keeps("b.c")
    assert proj.keeps("b.d")
    assert proj.keeps("_id")
    assert proj.keeps("z")
    assert not proj.keeps("arr")
    assert not compile_projection({"_id": 0}).keeps("_id")
    assert compile_projection({"_id": 1, "a": 0}).keeps("_id")


def test_keeps_elem_match_and_positional() -> None:
    assert not compile_projection({"s": {"$elemMatch": {"a": 1}}}).keeps("s")
    assert compile_projection({"s": {"$elemMatch": {"a": 1}}}).keeps("_id")
    assert not compile_projection({"s": {"$elemMatch": {"a": 1}}}).keeps("t")
    assert not compile_projection({"g.$": 1}).keeps("g")
