"""The router's pipeline split (lauradb.query.split)."""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence
from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.errors import LauraError
from lauradb.query.pipeline import compile_pipeline
from lauradb.query.split import SplitPipeline, merge_streams, run_split, split_pipeline

Doc = dict[str, Any]


# ---------------------------------------------------------------- shapes


def test_streaming_prefix_stays_on_shards() -> None:
    stages: list[Doc] = [{"$match": {"a": 1}}, {"$project": {"a": 1}}, {"$unwind": "$a"},
              {"$addFields": {"b": 1}}, {"$unset": "b"}, {"$replaceWith": "$$ROOT"}]
    split = split_pipeline(stages)
    assert split == SplitPipeline(stages, [], None)
    assert not split.needs_merge


def test_group_becomes_partial_and_merge() -> None:
    group = {"_id": "$a", "n": {"$sum": 1}, "avg": {"$avg": "$b"}}
    split = split_pipeline([{"$match": {"x": 1}}, {"$group": group}, {"$sort": {"n": -1}}])
    assert split.shard_part == [{"$match": {"x": 1}}, {"$_partialGroup": group}]
    assert split.merge_part == [{"$_mergeGroup": group}, {"$sort": {"n": -1}}]
    assert split.merge_sort is None


def test_group_with_first_or_last_stays_on_the_router() -> None:
    group = {"_id": "$a", "f": {"$first": "$b"}}
    split = split_pipeline([{"$match": {"x": 1}}, {"$group": group}])
    assert split.shard_part == [{"$match": {"x": 1}}]
    assert split.merge_part == [{"$group": group}]


def test_sort_limit_pushdown() -> None:
    stages: list[Doc] = [{"$sort": {"a": 1}}, {"$skip": 5}, {"$limit": 10}, {"$project": {"a": 1}}]
    split = split_pipeline(stages)
    assert split.shard_part == [{"$sort": {"a": 1}}, {"$limit": 15}]
    assert split.merge_part == [{"$skip": 5}, {"$limit": 10}, {"$project": {"a": 1}}]
    assert split.merge_sort == {"a": 1}
    split = split_pipeline([{"$sort": {"a": -1}}, {"$match": {"a": 1}}, {"$limit": 1}])
    assert split.shard_part == [{"$sort": {"a": -1}}]
    assert split.merge_sort == {"a": -1}


def test_limit_skip_count() -> None:
    split = split_pipeline([{"$limit": 3}, {"$match": {"a": 1}}])
    assert split.shard_part == [{"$limit": 3}]
    assert split.merge_part == [{"$limit": 3}, {"$match": {"a": 1}}]
    split = split_pipeline([{"$skip": 2}, {"$limit": 3}])
    assert split.shard_part == [{"$limit": 5}]
    assert split.merge_part == [{"$skip": 2}, {"$limit": 3}]
    split = split_pipeline([{"$skip": 2}])
    assert split.shard_part == [] and split.merge_part == [{"$skip": 2}]
    split = split_pipeline([{"$count": "n"}])
    assert split.shard_part == [{"$count": "n"}]
    assert split.merge_part[0] == {"$group": {"_id": None, "n": {"$sum": "$n"}}}


def test_sort_by_count_is_a_group_then_sort() -> None:
    split = split_pipeline([{"$sortByCount": "$a"}])
    group = {"_id": "$a", "count": {"$sum": 1}}
    assert split.shard_part == [{"$_partialGroup": group}]
    assert split.merge_part == [{"$_mergeGroup": group}, {"$sort": {"count": -1}}]


@pytest.mark.parametrize(
    "stage",
    [
        {"$facet": {"a": [{"$limit": 1}]}},
        {"$bucketAuto": {"groupBy": "$a", "buckets": 2}},
        {"$bucket": {"groupBy": "$a", "boundaries": [0, 1]}},
        {"$sample": {"size": 1}},
        {"$out": "x"},
        {"$lookup": {"from": "o", "localField": "a", "foreignField": "b", "as": "c"}},
    ],
)
def test_everything_else_goes_to_the_router(stage: Doc) -> None:
    split = split_pipeline([{"$match": {"a": 1}}, stage, {"$limit": 1}])
    assert split.shard_part == [{"$match": {"a": 1}}]
    assert split.merge_part == [stage, {"$limit": 1}]


def test_lookup_of_shard_local_collection_stays_on_shards() -> None:
    lookup = {"$lookup": {"from": "small", "localField": "a", "foreignField": "b", "as": "c"}}
    local = {"small"}.__contains__
    split = split_pipeline([lookup, {"$group": {"_id": None}}], lookup_on_shards=local)
    assert split.shard_part == [lookup, {"$_partialGroup": {"_id": None}}]
    nested = {"$lookup": {"from": "small", "pipeline": [{"$unionWith": "big"}], "as": "c"}}
    split = split_pipeline([nested], lookup_on_shards=local)
    assert split.shard_part == []


def test_invalid_stage_is_rejected() -> None:
    with pytest.raises(LauraError):
        split_pipeline([{"$bogus": 1}])
    with pytest.raises(LauraError):
        split_pipeline([{"$match": {}, "$limit": 1}])


def test_merge_streams_is_a_stable_heap_merge() -> None:
    a = [{"k": 1, "s": 0}, {"k": 3, "s": 0}]
    b = [{"k": 1, "s": 1}, {"k": 2, "s": 1}]
    merged = list(merge_streams([a, b], {"k": 1}))
    assert [(d["k"], d["s"]) for d in merged] == [(1, 0), (1, 1), (2, 1), (3, 0)]
    assert list(merge_streams([a, b], None)) == a + b


def test_run_split_with_lookup_on_router() -> None:
    docs = [{"_id": i, "k": i % 2} for i in range(6)]
    foreign: list[Doc] = [{"k": 0, "name": "even"}, {"k": 1, "name": "odd"}]
    stages: list[Doc] = [
        {"$match": {"_id": {"$gte": 1}}},
        {"$lookup": {"from": "f", "localField": "k", "foreignField": "k", "as": "f"}},
        {"$group": {"_id": {"$first": "$f.name"}, "n": {"$sum": 1}}},
    ]
    split = split_pipeline(stages)
    got = list(run_split(split, [docs[:2], docs[2:]], resolver=lambda name: foreign))
    assert got == [{"_id": "odd", "n": 3}, {"_id": "even", "n": 2}]


# ---------------------------------------------------------------- the property

FIELDS = ["a", "b", "c"]
VALUES = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([2**31 - 1, 2**40, -(2**31)]),
    st.integers(-5, 5).map(Int64),
    st.floats(-100, 100, allow_nan=False).map(lambda f: round(f, 2)),
    st.sampled_from([0.1, 0.2, 0.3, 1e15, -1e15]),
    st.sampled_from(["x", "y", "z", ""]),
    st.none(),
    st.sampled_from([Decimal128("1.5"), Decimal128("-2")]),
)


@st.composite
def documents(draw: st.DrawFn) -> list[Doc]:
    n = draw(st.integers(0, 25))
    docs = []
    for i in range(n):
        doc: Doc = {"_id": i}
        for field in FIELDS:
            if draw(st.booleans()) or draw(st.booleans()):
                doc[field] = draw(VALUES)
        docs.append(doc)
    return docs


FIELD_REFS = st.sampled_from(["$a", "$b", "$c"])
ACCUMULATORS = st.sampled_from(
    ["$sum", "$avg", "$min", "$max", "$addToSet", "$push", "$stdDevPop", "$stdDevSamp", "$count"]
)


@st.composite
def group_stage(draw: st.DrawFn) -> Doc:
    group_id = draw(st.sampled_from([None, "$a", "$b", {"x": "$a", "y": "$c"}, {"$type": "$a"}]))
    spec: Doc = {"_id": group_id}
    for i in range(draw(st.integers(1, 4))):
        op = draw(ACCUMULATORS)
        if op == "$count":
            spec[f"f{i}"] = {"$count": {}}
        else:
            spec[f"f{i}"] = {op: draw(st.one_of(FIELD_REFS, st.just(1)))}
    return {"$group": spec}


@st.composite
def match_stage(draw: st.DrawFn) -> Doc:
    field = draw(st.sampled_from([*FIELDS, "_id", "f0"]))
    op = draw(st.sampled_from(["$gt", "$lte", "$eq", "$ne", "$exists", "$type"]))
    if op == "$exists":
        arg: Any = draw(st.booleans())
    elif op == "$type":
        arg = draw(st.sampled_from(["number", "string", "null"]))
    else:
        arg = draw(VALUES)
    return {"$match": {field: {op: arg}}}


@st.composite
def sort_stage(draw: st.DrawFn) -> Doc:
    keys = draw(st.lists(st.sampled_from([*FIELDS, "_id", "f0", "n"]), min_size=1, max_size=2,
                         unique=True))
    return {"$sort": {k: draw(st.sampled_from([1, -1])) for k in keys}}


PROJECTS = st.sampled_from([
    {"$project": {"a": 1, "b": 1}},
    {"$project": {"c": 0}},
    {"$project": {"a": "$b", "c": 1, "f0": 1}},
    {"$addFields": {"a": {"$ifNull": ["$a", "$c"]}}},
])

STAGE = st.one_of(
    match_stage(),
    group_stage(),
    sort_stage(),
    sort_stage(),
    st.integers(1, 8).map(lambda n: {"$limit": n}),
    st.integers(0, 5).map(lambda n: {"$skip": n}),
    st.just({"$count": "n"}),
    st.just({"$sortByCount": "$a"}),
    PROJECTS,
)


def _number(value: Any) -> float | decimal.Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, (int, float)):
        return value
    return None


def approx_equal(a: Any, b: Any) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        fa, fb = float(na), float(nb)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(approx_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _outcome(fn: Callable[[], list[Doc]]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except LauraError as exc:
        return "error", exc.code


def _wire(docs: Sequence[Doc]) -> list[Doc]:
    """What the router receives: the shard output encoded to BSON and back."""
    return [bson.decode(bson.encode(doc)) for doc in docs]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=documents(),
    stages=st.lists(STAGE, min_size=1, max_size=4),
    shard_count=st.integers(1, 5),
    data=st.data(),
)
def test_split_equals_whole_pipeline(
    docs: list[Doc], stages: list[Doc], shard_count: int, data: st.DataObject
) -> None:
    owners = [data.draw(st.integers(0, shard_count - 1)) for _ in docs]
    shards = [[d for d, o in zip(docs, owners, strict=True) if o == s] for s in range(shard_count)]
    # The whole pipeline sees the shards' documents one shard after the other.
    everything = [d for shard in shards for d in shard]

    whole = _outcome(lambda: list(compile_pipeline(stages).run(everything)))

    def split_run() -> list[Doc]:
        split = split_pipeline(stages)
        shard_pipeline = compile_pipeline(split.shard_part)
        outputs = [_wire(list(shard_pipeline.run(shard))) for shard in shards]
        merge = compile_pipeline(split.merge_part)
        return list(merge.run(merge_streams(outputs, split.merge_sort)))

    merged = _outcome(split_run)
    assert whole[0] == merged[0], (whole, merged)
    if whole[0] == "ok":
        assert approx_equal(whole[1], merged[1]), (stages, whole[1], merged[1])
    else:
        assert whole[1] == merged[1]
