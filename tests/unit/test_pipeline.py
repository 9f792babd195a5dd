"""Aggregation pipelines and accumulators (lauradb.query.pipeline, accumulators)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.accumulators import ACCUMULATORS, accumulate
from lauradb.query.common import MISSING
from lauradb.query.pipeline import compile_pipeline

Doc = dict[str, Any]

PEOPLE: list[Doc] = [
    {"_id": 1, "name": "ann", "dept": "eng", "age": 30, "tags": ["a", "b"], "addr": {"city": "x"}},
    {"_id": 2, "name": "bob", "dept": "eng", "age": 40, "tags": [], "addr": {"city": "y"}},
    {"_id": 3, "name": "cid", "dept": "ops", "age": 25, "tags": "solo"},
    {"_id": 4, "name": "dee", "dept": "ops", "age": None, "tags": None},
    {"_id": 5, "name": "eve", "age": 35, "tags": ["c"]},
]


def run(stages: list[Doc], docs: Iterable[Doc] = PEOPLE, **kwargs: Any) -> list[Doc]:
    return list(compile_pipeline(stages, **kwargs).run(docs))


def code_of(stages: list[Any], docs: Iterable[Doc] = PEOPLE, **kwargs: Any) -> ErrorCode:
    with pytest.raises(LauraError) as info:
        run(stages, docs, **kwargs)
    return info.value.code


def ids(docs: list[Doc]) -> list[Any]:
    return [d["_id"] for d in docs]


# ---------------------------------------------------------------- pipeline shape


@pytest.mark.parametrize(
    "stages",
    [
        [{"$nope": {}}],
        [{"$match": {}, "$limit": 1}],
        [{}],
        ["$match"],
        [{"$limit": 0}],
        [{"$limit": -1}],
        [{"$limit": 1.5}],
        [{"$limit": "1"}],
        [{"$limit": True}],
        [{"$skip": -1}],
        [{"$group": {"total": {"$sum": 1}}}],
        [{"$group": {"_id": None, "x": {"$bogus": 1}}}],
        [{"$group": {"_id": None, "x": 1}}],
        [{"$group": {"_id": None, "a.b": {"$sum": 1}}}],
        [{"$group": {"_id": None, "x": {"$count": 1}}}],
        [{"$unwind": "tags"}],
        [{"$unwind": {"path": "tags"}}],
        [{"$unwind": {"path": "$tags", "bogus": 1}}],
        [{"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": 1}}],
        [{"$unwind": {"path": "$tags", "includeArrayIndex": "$i"}}],
        [{"$count": ""}],
        [{"$count": "$n"}],
        [{"$count": "a.b"}],
        [{"$count": 1}],
        [{"$facet": {"a": [{"$out": "x"}]}}],
        [{"$facet": {"a": [{"$facet": {"b": [{"$limit": 1}]}}]}}],
        [{"$facet": {"a": []}}],
        [{"$facet": {"$a": [{"$limit": 1}]}}],
        [{"$sort": {}}],
        [{"$sort": {"a": 2}}],
        [{"$sort": 1}],
        [{"$project": {}}],
        [{"$project": {"a": 1, "b": 0}}],
        [{"$project": {"a": 0, "b": {"$add": [1, 2]}}}],
        [{"$project": {"a": 1, "a.b": 1}}],
        [{"$project": {"a": {}}}],
        [{"$project": {"$a": 1}}],
        [{"$match": 1}],
        [{"$out": "x"}, {"$limit": 1}],
        [{"$unset": []}],
        [{"$unset": [1]}],
        [{"$replaceRoot": {"root": "$a"}}],
        [{"$sample": {"size": -1}}],
        [{"$bucket": {"groupBy": "$age", "boundaries": [10]}}],
        [{"$bucket": {"groupBy": "$age", "boundaries": [30, 10]}}],
        [{"$bucket": {"groupBy": "$age", "boundaries": [10, "a"]}}],
        [{"$bucket": {"groupBy": "$age", "boundaries": [10, 30], "default": 20}}],
        [{"$bucket": {"groupBy": "age", "boundaries": [10, 30]}}],
        [{"$bucketAuto": {"groupBy": "$age", "buckets": 0}}],
        [{"$sortByCount": "age"}],
        [{"$lookup": {"from": "o", "localField": "a", "as": "x"}}],
        [{"$lookup": {"from": "o", "localField": "a", "foreignField": "b"}}],
        [{"$lookup": {"from": "o", "let": {"x": 1}, "as": "x", "localField": "a",
                      "foreignField": "b"}}],
        [{"$lookup": {"from": "o", "pipeline": [{"$out": "z"}], "as": "x"}}],
    ],
)
def test_bad_pipelines_raise_lauraerror(stages: list[Any]) -> None:
    with pytest.raises(LauraError):
        compile_pipeline(stages, resolver=lambda name: [])


def test_specific_error_codes() -> None:
    assert code_of([{"$nope": {}}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$match": {}, "$limit": 1}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$limit": 0}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$group": {"n": {"$sum": 1}}}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$group": {"_id": 1, "n": {"$nope": 1}}}]) == ErrorCode.UNKNOWN_OPERATOR
    assert code_of([{"$unwind": "tags"}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$project": {"a": 1, "b": 0}}]) == ErrorCode.INVALID_PROJECTION
    assert code_of([{"$facet": {"a": [{"$out": "x"}]}}]) == ErrorCode.INVALID_PIPELINE
    assert code_of([{"$lookup": {"from": "o", "localField": "a", "foreignField": "b",
                                 "as": "x"}}]) == ErrorCode.ILLEGAL_OPERATION
    assert code_of([{"$out": "coll"}]) == ErrorCode.NOT_IMPLEMENTED
    assert code_of([{"$project": {"x": {"$nope": 1}}}]) == ErrorCode.UNKNOWN_OPERATOR


def test_pipeline_must_be_a_list() -> None:
    with pytest.raises(LauraError):
        compile_pipeline({"$match": {}})  # type: ignore[arg-type]


def test_empty_pipeline_passes_through() -> None:
    assert run([]) == PEOPLE


def test_pipeline_reusable_and_lazy() -> None:
    pipeline = compile_pipeline([{"$match": {"age": {"$gt": 26}}}, {"$limit": 1}])
    assert ids(list(pipeline.run(PEOPLE))) == [1]
    assert ids(list(pipeline.run(PEOPLE))) == [1]
    pulled = []

    def source() -> Iterable[Doc]:
        for doc in PEOPLE:
            pulled.append(doc["_id"])
            yield doc

    assert ids(list(pipeline.run(source()))) == [1]
    assert pulled == [1]


def test_inputs_not_mutated() -> None:
    docs = [{"_id": 1, "a": {"b": 1}, "l": [1, 2]}]
    snapshot = bson.decode(bson.encode(docs[0]))
    run([{"$addFields": {"a.c": 2}}, {"$unwind": "$l"}, {"$project": {"a.b": 0}},
         {"$set": {"z": 1}}, {"$unset": "l"}], docs)
    assert docs[0] == snapshot


# ---------------------------------------------------------------- $match $limit $skip $count


def test_match_limit_skip_count() -> None:
    assert ids(run([{"$match": {"dept": "eng"}}])) == [1, 2]
    assert ids(run([{"$match": {"$expr": {"$gt": ["$age", 30]}}}])) == [2, 5]
    assert ids(run([{"$skip": 1}, {"$limit": 2}])) == [2, 3]
    assert ids(run([{"$limit": 2.0}])) == [1, 2]
    assert ids(run([{"$limit": Int64(1)}])) == [1]
    assert run([{"$skip": 10}]) == []
    assert run([{"$count": "n"}]) == [{"n": 5}]
    assert run([{"$match": {"dept": "none"}}, {"$count": "n"}]) == []


# ---------------------------------------------------------------- $project / $addFields / $unset


def test_project_inclusion() -> None:
    out = run([{"$project": {"name": 1, "addr.city": 1}}])
    assert out[0] == {"_id": 1, "name": "ann", "addr": {"city": "x"}}
    assert out[2] == {"_id": 3, "name": "cid"}
    assert list(out[0]) == ["_id", "name", "addr"]  # input order


def test_project_id_handling() -> None:
    assert run([{"$project": {"_id": 0, "name": 1}}])[0] == {"name": "ann"}
    assert run([{"$project": {"_id": 1}}])[0] == {"_id": 1}
    assert run([{"$project": {"_id": 0}}])[0] == {k: v for k, v in PEOPLE[0].items() if k != "_id"}
    assert run([{"$project": {"_id": "$name"}}])[0] == {"_id": "ann"}


def test_project_computed_fields() -> None:
    out = run([{"$project": {"older": {"$add": ["$age", 1]}, "name": True, "c": "$addr.city",
                             "lit": {"$literal": 1}, "gone": "$nothing"}}])
    assert out[0] == {"_id": 1, "name": "ann", "older": 31, "c": "x", "lit": 1}
    assert list(out[0]) == ["_id", "name", "older", "c", "lit"]
    assert out[4] == {"_id": 5, "name": "eve", "older": 36, "lit": 1}


def test_project_nested_and_arrays() -> None:
    docs = [{"_id": 1, "a": [{"b": 1, "c": 2}, {"b": 3}, 5, [{"b": 4, "d": 0}]], "x": 9}]
    assert run([{"$project": {"a.b": 1}}], docs) == [
        {"_id": 1, "a": [{"b": 1}, {"b": 3}, [{"b": 4}]]}
    ]
    assert run([{"$project": {"a.b": 0, "x": 0}}], docs) == [
        {"_id": 1, "a": [{"c": 2}, {}, 5, [{"d": 0}]]}
    ]
    assert run([{"$project": {"a": {"b": 1}}}], docs) == run([{"$project": {"a.b": 1}}], docs)
    # A computed path through a scalar replaces it; through an array applies per element.
    out = run([{"$project": {"x.y": {"$literal": 1}, "a.z": "$x"}}], docs)
    # (the first pass drops the scalar 5 from "a", and "x" is new so it comes last)
    assert out == [{"_id": 1, "a": [{"z": 9}, {"z": 9}, [{"z": 9}]], "x": {"y": 1}}]
    out = run([{"$addFields": {"a.z": 0}}], docs)
    assert out[0]["a"] == [{"b": 1, "c": 2, "z": 0}, {"b": 3, "z": 0}, {"z": 0},
                           [{"b": 4, "d": 0, "z": 0}]]


def test_project_remove_variable() -> None:
    out = run([{"$project": {"name": 1, "age": {"$cond": [{"$gt": ["$age", 30]}, "$age",
                                                          "$$REMOVE"]}}}])
    assert out[0] == {"_id": 1, "name": "ann"}
    assert out[1] == {"_id": 2, "name": "bob", "age": 40}


def test_add_fields_and_set() -> None:
    out = run([{"$addFields": {"age": {"$multiply": ["$age", 2]}, "new": "n"}}])
    assert out[0]["age"] == 60 and out[0]["new"] == "n"
    assert list(out[0]) == ["_id", "name", "dept", "age", "tags", "addr", "new"]
    out = run([{"$set": {"addr.zip": 123, "tags": "$$REMOVE"}}])
    assert out[0]["addr"] == {"city": "x", "zip": 123}
    assert "tags" not in out[0]
    assert out[2]["addr"] == {"zip": 123}
    # Nested objects merge into existing subdocuments; {} sets an empty document.
    out = run([{"$addFields": {"addr": {"n": 1}, "e": {}}}])
    assert out[0]["addr"] == {"city": "x", "n": 1} and out[0]["e"] == {}


def test_unset() -> None:
    out = run([{"$unset": "tags"}, {"$unset": ["addr.city", "dept"]}])
    assert out[0] == {"_id": 1, "name": "ann", "age": 30, "addr": {}}


# ---------------------------------------------------------------- $unwind


def test_unwind_string_form() -> None:
    out = run([{"$unwind": "$tags"}, {"$project": {"tags": 1}}])
    assert out == [
        {"_id": 1, "tags": "a"},
        {"_id": 1, "tags": "b"},
        {"_id": 3, "tags": "solo"},  # a non-array is a one-element array
        {"_id": 5, "tags": "c"},
    ]


def test_unwind_preserve_and_index() -> None:
    spec = {"path": "$tags", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": True}
    out = run([{"$unwind": spec}, {"$project": {"tags": 1, "i": 1}}])
    assert out == [
        {"_id": 1, "tags": "a", "i": Int64(0)},
        {"_id": 1, "tags": "b", "i": Int64(1)},
        {"_id": 2, "i": None},  # empty array: the field is removed
        {"_id": 3, "tags": "solo", "i": None},
        {"_id": 4, "tags": None, "i": None},
        {"_id": 5, "tags": "c", "i": Int64(0)},
    ]


def test_unwind_nested_path() -> None:
    docs = [{"_id": 1, "a": {"b": [1, 2], "c": 0}}, {"_id": 2, "a": [{"b": [1]}]}]
    assert run([{"$unwind": "$a.b"}], docs) == [
        {"_id": 1, "a": {"b": 1, "c": 0}},
        {"_id": 1, "a": {"b": 2, "c": 0}},
    ]


# ---------------------------------------------------------------- $group and accumulators


def test_group_basic() -> None:
    out = run([{"$group": {"_id": "$dept", "n": {"$sum": 1}, "ages": {"$sum": "$age"},
                           "avg": {"$avg": "$age"}, "min": {"$min": "$age"},
                           "max": {"$max": "$age"}, "names": {"$push": "$name"},
                           "first": {"$first": "$name"}, "last": {"$last": "$name"},
                           "c": {"$count": {}}}}])
    assert out == [
        {"_id": "eng", "n": 2, "ages": 70, "avg": 35.0, "min": 30, "max": 40,
         "names": ["ann", "bob"], "first": "ann", "last": "bob", "c": 2},
        {"_id": "ops", "n": 2, "ages": 25, "avg": 25.0, "min": 25, "max": 25,
         "names": ["cid", "dee"], "first": "cid", "last": "dee", "c": 2},
        {"_id": None, "n": 1, "ages": 35, "avg": 35.0, "min": 35, "max": 35,
         "names": ["eve"], "first": "eve", "last": "eve", "c": 1},
    ]


def test_group_null_and_missing_ids_group_together() -> None:
    docs: list[Doc] = [{"k": None, "v": 1}, {"v": 2}, {"k": 1, "v": 3}, {"k": 1.0, "v": 4}]
    out = run([{"$group": {"_id": "$k", "s": {"$sum": "$v"}}}], docs)
    assert out == [{"_id": None, "s": 3}, {"_id": 1, "s": 7}]


def test_group_by_document_keys() -> None:
    docs = [{"a": 1, "b": 2, "v": 1}, {"a": 1, "b": 2, "v": 2}, {"a": 1, "v": 4}]
    out = run([{"$group": {"_id": {"x": "$a", "y": "$b"}, "s": {"$sum": "$v"}}}], docs)
    # A missing _id field groups as null (MongoDB: {x: 1} and {x: 1, y: null} are one key).
    assert out == [{"_id": {"x": 1, "y": 2}, "s": 3}, {"_id": {"x": 1, "y": None}, "s": 4}]
    more: list[Doc] = [*docs, {"a": 1, "b": None, "v": 8}]
    out = run([{"$group": {"_id": {"x": "$a", "y": "$b"}, "s": {"$sum": "$v"}}}], more)
    assert out[1] == {"_id": {"x": 1, "y": None}, "s": 12}
    out = run([{"$group": {"_id": {"$mod": ["$v", 2]}, "vs": {"$push": "$v"}}}], docs)
    assert out == [{"_id": 1, "vs": [1]}, {"_id": 0, "vs": [2, 4]}]


def test_group_missing_results_are_null() -> None:
    out = run([{"$group": {"_id": None, "f": {"$first": "$nope"}, "m": {"$max": "$nope"},
                           "a": {"$avg": "$nope"}, "s": {"$sum": "$nope"},
                           "p": {"$push": "$nope"}, "set": {"$addToSet": "$nope"},
                           "sd": {"$stdDevPop": "$nope"}}}])
    assert out == [{"_id": None, "f": None, "m": None, "a": None, "s": 0, "p": [], "set": [],
                    "sd": None}]


def test_group_on_empty_input_outputs_nothing() -> None:
    assert run([{"$group": {"_id": None, "n": {"$sum": 1}}}], []) == []


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1, 2, 3], 6),
        ([1, 2.5], 3.5),
        ([1, Int64(2)], Int64(3)),
        ([2**31 - 1, 1], Int64(2**31)),
        ([Int64(2**63 - 1), 1], float(2**63)),
        ([1, Decimal128("0.5")], Decimal128("1.5")),
        ([1.5, Decimal128("0.5"), 1], Decimal128("3.0")),
        ([1, "x", None, MISSING, True, [1]], 1),
        ([], 0),
        ([0.1] * 10, 1.0),
        ([1e100, 1.0, -1e100], 1.0),
        ([float("inf"), 1.0], float("inf")),
    ],
)
def test_sum_type_rules(values: list[Any], expected: Any) -> None:
    got = accumulate("$sum", values)
    assert type(got) is type(expected) and got == expected


def test_sum_nan() -> None:
    assert math.isnan(accumulate("$sum", [1.0, float("nan")]))
    assert math.isnan(accumulate("$sum", [float("inf"), float("-inf")]))


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1, 2], 1.5),
        ([1, 2, "x", None], 1.5),
        ([Int64(1), 2], 1.5),
        ([Decimal128("1"), 2], Decimal128("1.5")),
        ([], None),
    ],
)
def test_avg(values: list[Any], expected: Any) -> None:
    got = accumulate("$avg", values)
    assert type(got) is type(expected) and got == expected


def test_min_max_use_the_comparator_and_skip_nulls() -> None:
    values = [None, 3, "a", MISSING, 2.5, {"x": 1}, [0]]
    assert accumulate("$min", values) == 2.5
    assert accumulate("$max", values) == [0]
    assert accumulate("$min", [None, MISSING]) is None
    assert accumulate("$max", [Decimal128("2"), 1]) == Decimal128("2")


def test_add_to_set_dedups_by_bson_equality() -> None:
    got = accumulate("$addToSet", [1, 1.0, Int64(1), "1", {"a": 1}, {"a": 1.0}, [1], MISSING])
    assert got == [1, "1", {"a": 1}, [1]]


def test_std_dev() -> None:
    assert accumulate("$stdDevPop", [2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(2.0)
    assert accumulate("$stdDevSamp", [1, 2, 3, 4]) == pytest.approx(1.2909944487358056)
    assert accumulate("$stdDevPop", [1]) == 0.0
    assert accumulate("$stdDevSamp", [1]) is None
    assert accumulate("$stdDevPop", ["x", None]) is None
    assert accumulate("$stdDevPop", [Decimal128("1"), 3]) == pytest.approx(1.0)


def test_merge_objects_accumulator() -> None:
    assert accumulate("$mergeObjects", [{"a": 1}, None, {"b": 2, "a": 3}]) == {"a": 3, "b": 2}
    with pytest.raises(LauraError):
        accumulate("$mergeObjects", [1])


@pytest.mark.parametrize("op", sorted(ACCUMULATORS))
def test_partials_merge_like_one_pass(op: str) -> None:
    values: list[Any] = [3, 1.5, None, "s", MISSING, Int64(7), Decimal128("2.25"), -4, {"a": 1}]
    if op == "$mergeObjects":
        values = [{"a": 1}, None, {"b": 2}, {"a": 3}]
    whole = ACCUMULATORS[op]()
    for v in values:
        whole.add(v)
    merged = ACCUMULATORS[op]()
    for chunk in (values[:2], values[2:3], [], values[3:]):
        part = ACCUMULATORS[op]()
        for v in chunk:
            part.add(v)
        merged.merge(bson.decode(bson.encode({"p": part.partial()}))["p"])
    expected, got = whole.result(), merged.result()
    if isinstance(expected, float):
        assert got == pytest.approx(expected)
    else:
        assert type(got) is type(expected) and got == expected


# ---------------------------------------------------------------- $sort


def test_sort_stable_and_mixed_types() -> None:
    docs = [{"_id": i, "v": v} for i, v in enumerate([3, "a", None, 1.5, 3, [0, 9], {"x": 1}])]
    docs.append({"_id": 7})
    assert ids(run([{"$sort": {"v": 1}}], docs)) == [2, 7, 5, 3, 0, 4, 1, 6]
    assert ids(run([{"$sort": {"v": -1}}], docs)) == [6, 1, 5, 0, 4, 3, 2, 7]


def test_sort_compound() -> None:
    out = run([{"$sort": {"dept": 1, "age": -1}}])
    assert ids(out) == [5, 2, 1, 3, 4]


@pytest.mark.parametrize("skip, limit", [(0, 1), (0, 3), (2, 2), (0, 10), (4, 5)])
def test_sort_limit_top_k_matches_full_sort(skip: int, limit: int) -> None:
    docs = [{"_id": i, "v": (i * 7) % 5} for i in range(40)]
    stages: list[Doc] = [{"$sort": {"v": -1}}]
    if skip:
        stages.append({"$skip": skip})
    stages.append({"$limit": limit})
    expected = sorted(docs, key=lambda d: -d["v"])[skip : skip + limit]
    assert run(stages, docs) == expected


# ---------------------------------------------------------------- memory limits


def test_memory_limit_sort_and_group() -> None:
    docs = [{"_id": i, "pad": "x" * 100} for i in range(100)]
    assert code_of([{"$sort": {"_id": 1}}], docs, memory_limit_bytes=2000) == (
        ErrorCode.EXCEEDED_MEMORY_LIMIT
    )
    group = [{"$group": {"_id": "$_id", "all": {"$push": "$pad"}}}]
    assert code_of(group, docs, memory_limit_bytes=2000) == ErrorCode.EXCEEDED_MEMORY_LIMIT
    push = [{"$group": {"_id": None, "all": {"$push": "$pad"}}}]
    assert code_of(push, docs, memory_limit_bytes=2000) == ErrorCode.EXCEEDED_MEMORY_LIMIT
    # Under the limit, and the top-k sort only holds k documents.
    assert len(run([{"$sort": {"_id": -1}}, {"$limit": 3}], docs, memory_limit_bytes=2000)) == 3
    assert len(run(group, docs, memory_limit_bytes=10**6)) == 100
    assert code_of([{"$sort": {"_id": 1}}], docs, memory_limit_bytes=0) == ErrorCode.BAD_VALUE


def test_memory_limit_error_code_is_146() -> None:
    docs = [{"_id": i} for i in range(1000)]
    with pytest.raises(LauraError) as info:
        run([{"$sort": {"_id": 1}}], docs, memory_limit_bytes=100)
    assert int(info.value.code) == 146


# ---------------------------------------------------------------- other stages


def test_sort_by_count() -> None:
    docs = [{"t": t} for t in ["a", "b", "a", "c", "a", "b"]]
    assert run([{"$sortByCount": "$t"}], docs) == [
        {"_id": "a", "count": 3},
        {"_id": "b", "count": 2},
        {"_id": "c", "count": 1},
    ]


def test_replace_root_and_with() -> None:
    out = run([{"$replaceRoot": {"newRoot": "$addr"}}], PEOPLE[:2])
    assert out == [{"city": "x"}, {"city": "y"}]
    out = run([{"$replaceWith": {"$mergeObjects": [{"n": "$name"}, "$addr"]}}], PEOPLE[:1])
    assert out == [{"n": "ann", "city": "x"}]
    assert code_of([{"$replaceRoot": {"newRoot": "$addr"}}]) == ErrorCode.TYPE_MISMATCH


def test_facet() -> None:
    out = run([{"$facet": {
        "count": [{"$count": "n"}],
        "byDept": [{"$sortByCount": "$dept"}, {"$limit": 1}],
        "names": [{"$project": {"_id": 0, "name": 1}}, {"$limit": 2}],
    }}])
    assert out == [{
        "count": [{"n": 5}],
        "byDept": [{"_id": "eng", "count": 2}],
        "names": [{"name": "ann"}, {"name": "bob"}],
    }]
    assert run([{"$facet": {"a": [{"$match": {"x": 1}}]}}]) == [{"a": []}]


def test_bucket() -> None:
    stages = [{"$bucket": {"groupBy": "$age", "boundaries": [20, 30, 40], "default": "other",
                           "output": {"n": {"$sum": 1}, "who": {"$push": "$name"}}}}]
    assert run(stages) == [
        {"_id": 20, "n": 1, "who": ["cid"]},
        {"_id": 30, "n": 2, "who": ["ann", "eve"]},
        {"_id": "other", "n": 2, "who": ["bob", "dee"]},
    ]
    default_count = [{"$bucket": {"groupBy": "$age", "boundaries": [0, 100], "default": -1}}]
    assert run(default_count) == [{"_id": -1, "count": 1}, {"_id": 0, "count": 4}]
    no_default = [{"$bucket": {"groupBy": "$age", "boundaries": [0, 100]}}]
    assert code_of(no_default) == ErrorCode.BAD_VALUE


def test_bucket_auto() -> None:
    docs = [{"v": v} for v in [5, 1, 3, 3, 3, 8, 2, 9, 7]]
    out = run([{"$bucketAuto": {"groupBy": "$v", "buckets": 3}}], docs)
    # sorted: 1 2 3 3 3 5 7 8 9; 3 per bucket, but the equal 3s stay together
    assert out == [
        {"_id": {"min": 1, "max": 5}, "count": 5},
        {"_id": {"min": 5, "max": 9}, "count": 3},
        {"_id": {"min": 9, "max": 9}, "count": 1},
    ]
    out = run([{"$bucketAuto": {"groupBy": "$v", "buckets": 20,
                                "output": {"s": {"$sum": "$v"}}}}], docs[:3])
    assert out == [{"_id": {"min": 1, "max": 3}, "s": 1}, {"_id": {"min": 3, "max": 5}, "s": 3},
                   {"_id": {"min": 5, "max": 5}, "s": 5}]
    assert run([{"$bucketAuto": {"groupBy": "$v", "buckets": 2}}], []) == []


def test_sample() -> None:
    docs = [{"_id": i} for i in range(50)]
    out = run([{"$sample": {"size": 10}}], docs)
    assert len(out) == 10 and len({d["_id"] for d in out}) == 10
    assert len(run([{"$sample": {"size": 100}}], docs)) == 50
    assert run([{"$sample": {"size": 0}}], docs) == []


def test_redact() -> None:
    docs = [{"_id": 1, "level": 1, "sub": {"level": 5, "x": 1}, "arr": [{"level": 1, "y": 2},
                                                                       {"level": 9}, 3]}]
    expr = {"$cond": [{"$lte": [{"$ifNull": ["$level", 0]}, 2]}, "$$DESCEND", "$$PRUNE"]}
    assert run([{"$redact": expr}], docs) == [
        {"_id": 1, "level": 1, "arr": [{"level": 1, "y": 2}, 3]}
    ]
    assert run([{"$redact": "$$KEEP"}], docs) == docs
    assert run([{"$redact": "$$PRUNE"}], docs) == []
    assert code_of([{"$redact": "bogus"}], docs) == ErrorCode.BAD_VALUE


# ---------------------------------------------------------------- $lookup / $unionWith

ORDERS: list[Doc] = [
    {"_id": 10, "item": "pen", "qty": 2},
    {"_id": 11, "item": "ink", "qty": 5},
    {"_id": 12, "item": ["pen", "pad"], "qty": 1},
    {"_id": 13, "qty": 9},
    {"_id": 14, "item": None, "qty": 0},
]
ITEMS: list[Doc] = [
    {"_id": "pen", "price": 1},
    {"_id": "pad", "price": 3},
    {"_id": "ink"},
    {"price": 0},
]


def resolver(name: str) -> Iterable[Doc]:
    return {"orders": ORDERS, "items": ITEMS}[name]


def test_lookup_equality() -> None:
    stages = [{"$lookup": {"from": "orders", "localField": "_id", "foreignField": "item",
                           "as": "orders"}},
              {"$project": {"ids": "$orders._id"}}]
    out = run(stages, ITEMS, resolver=resolver)
    assert out == [
        {"_id": "pen", "ids": [10, 12]},  # matches inside a foreign array
        {"_id": "pad", "ids": [12]},
        {"_id": "ink", "ids": [11]},
        {"ids": [13, 14]},  # missing local matches null and missing foreign
    ]


def test_lookup_local_array_and_dotted_as() -> None:
    stages: list[Doc] = [{"$lookup": {"from": "items", "localField": "item", "foreignField": "_id",
                           "as": "x.found"}},
              {"$project": {"n": {"$size": "$x.found"}}}]
    out = run(stages, ORDERS, resolver=resolver)
    assert [d["n"] for d in out] == [1, 1, 2, 1, 1]


def test_lookup_pipeline_with_let() -> None:
    stages = [{"$lookup": {
        "from": "orders",
        "let": {"name": "$_id", "min": 2},
        "pipeline": [
            {"$match": {"$expr": {"$and": [{"$eq": ["$item", "$$name"]},
                                           {"$gte": ["$qty", "$$min"]}]}}},
            {"$project": {"_id": 0, "qty": 1, "tag": "$$name"}},
        ],
        "as": "big",
    }}]
    out = run(stages, ITEMS[:3], resolver=resolver)
    assert [d["big"] for d in out] == [[{"qty": 2, "tag": "pen"}], [], [{"qty": 5, "tag": "ink"}]]


def test_lookup_pipeline_uncorrelated_and_combined() -> None:
    stages = [{"$lookup": {"from": "items", "pipeline": [{"$count": "n"}], "as": "c"}}]
    assert run(stages, ORDERS[:1], resolver=resolver)[0]["c"] == [{"n": 4}]
    stages = [{"$lookup": {"from": "orders", "localField": "_id", "foreignField": "item",
                           "pipeline": [{"$match": {"qty": {"$gt": 1}}}], "as": "o"}}]
    out = run(stages, ITEMS[:1], resolver=resolver)
    assert [o["_id"] for o in out[0]["o"]] == [10]


def test_lookup_reads_foreign_collection_once_per_run() -> None:
    calls = []

    def counting(name: str) -> Iterable[Doc]:
        calls.append(name)
        return iter(ORDERS)

    stages = [{"$lookup": {"from": "orders", "localField": "_id", "foreignField": "item",
                           "as": "o"}}]
    pipeline = compile_pipeline(stages, resolver=counting)
    assert len(list(pipeline.run(ITEMS))) == 4
    assert len(list(pipeline.run(ITEMS))) == 4
    assert calls == ["orders", "orders"]


def test_union_with() -> None:
    out = run([{"$unionWith": {"coll": "items", "pipeline": [{"$match": {"price": 3}}]}}],
              ORDERS[:1], resolver=resolver)
    assert ids(out) == [10, "pad"]
    assert len(run([{"$unionWith": "items"}], [], resolver=resolver)) == 4


@pytest.mark.parametrize("op", sorted(ACCUMULATORS))
def test_malformed_partials_are_bad_values(op: str) -> None:
    acc = ACCUMULATORS[op]()
    bad: list[Any] = [None, "x", {"k": 1}]
    if op == "$mergeObjects":
        bad = ["x", 5]
    elif op in ("$first", "$last"):
        bad = [None, "x"]
    elif op in ("$min", "$max"):
        return  # any value is a valid partial for $min/$max
    for partial in bad:
        with pytest.raises(LauraError) as info:
            acc.merge(partial)
        assert info.value.code in (ErrorCode.BAD_VALUE, ErrorCode.TYPE_MISMATCH)


def test_internal_group_stages_round_trip() -> None:
    spec = {"_id": "$dept", "avg": {"$avg": "$age"}, "n": {"$sum": 1}}
    partial = run([{"$_partialGroup": spec}])
    assert run([{"$_mergeGroup": spec}], partial) == run([{"$group": spec}])
