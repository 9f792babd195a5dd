"""Differential aggregation: random pipelines give the same results whether the
collection is hashed over 3 shards, ranged (several chunks), or unsharded, and the
same as the engine run locally over the same documents.

Pipelines are drawn from ``$match $group $sort $limit $skip $project $unwind
$count``. The generator tracks the fields the documents have at each step and a
set of fields that identifies a document (``_id``; ``_id`` + the array index after
``$unwind``; the group key after ``$group``), so that every ``$sort`` it draws is a
total order (it ends with those fields) and ``$skip``/``$limit`` only follow such a
sort: results are then deterministic and compared in order; otherwise (``$group``
output) they are compared as multisets. ``$avg`` is taken over integers, yet floats
are compared with a tolerance anyway.

Note on the ranged collection: it is split into three chunks with SplitChunk, and
the test tries to move one of them to another shard with MigrateChunk. While
MigrateChunk answers NOT_IMPLEMENTED (issue 5) all ranged chunks stay on the
database's primary shard, so the ranged collection exercises targeting and the
single-shard path, and the hashed one the split/merge path.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.errors import LauraError
from lauradb.query.pipeline import compile_pipeline
from tests.integration.harness import (
    Cluster,
    chunks_of,
    dec,
    enc,
    get_shard_map,
    insert_many,
    laura_error,
    shard_collection,
    split_chunk,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 60.0
N_DOCS = 400
HASHED, RANGED, PLAIN = "hashed", "ranged", "plain"
RANGE_SPLITS = (3, 6)


def make_docs(n: int = N_DOCS, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        doc: dict[str, Any] = {"_id": i, "a": rng.randint(0, 9), "b": rng.choice("xyzw")}
        c = rng.choice([rng.randint(-4, 4) / 2, None, "s", "t", "missing"])
        if c != "missing":
            doc["c"] = c
        doc["tags"] = [rng.choice([1, 2, 3, "t"]) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.7:
            doc["n"] = {"x": rng.randint(0, 4)}
        docs.append(doc)
    return docs


@dataclass
class Data:
    cluster: Cluster
    db: str
    docs: list[dict[str, Any]]
    ranged_shards: set[str]


async def _spread_ranged(cluster: Cluster, db: str) -> set[str]:
    config = cluster.config_stub()
    for point in RANGE_SPLITS:
        chunks = chunks_of(await get_shard_map(config, db, RANGED))
        (chunk,) = [c for c in chunks if c.contains({"a": point})]
        assert (await split_chunk(config, chunk.chunk_id, {"a": point})).success
    chunks = chunks_of(await get_shard_map(config, db, RANGED))
    others = [s for s in cluster.shard_ids if s != chunks[-1].shard]
    try:  # NOT_IMPLEMENTED until issue 5: then every chunk stays on the primary
        await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(
                chunk_id=chunks[-1].chunk_id, from_shard=chunks[-1].shard, to_shard=others[0]
            ),
            timeout=RPC,
        )
    except grpc.RpcError:
        pass
    return {c.shard for c in chunks_of(await get_shard_map(config, db, RANGED))}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def data(session_cluster: Cluster) -> AsyncIterator[Data]:
    cluster, db = session_cluster, unique_name("diff")
    config, router = cluster.config_stub(), cluster.router_stub()
    assert (await shard_collection(config, db, HASHED, ["_id"], "hashed")).success
    assert (await shard_collection(config, db, RANGED, ["a"], "range")).success
    ranged_shards = await _spread_ranged(cluster, db)
    docs = make_docs()
    for coll in (HASHED, RANGED, PLAIN):
        assert await insert_many(router, db, coll, docs, ordered=False) == N_DOCS
    yield Data(cluster, db, docs, ranged_shards)
    await cluster.router_stub().DropDatabase(
        router_ext_pb2.DropDatabaseRequest(database=db), timeout=RPC
    )


# --- pipelines ---------------------------------------------------------------------------

INT, STR, MIXED, ARRAY, DOC = "int", "str", "mixed", "array", "doc"
VALUES: dict[str, list[Any]] = {
    INT: [0, 2, 3, 5, 7, 9],
    STR: ["x", "y", "w", "xy"],
    MIXED: [None, 0, 1, -1.5, 2, "s", "t", 1.0],
    ARRAY: [1, 2, 3, "t"],
}


@dataclass
class Shape:
    """What the documents look like after the stages drawn so far."""

    fields: dict[str, str] = field(
        default_factory=lambda: {"_id": INT, "a": INT, "b": STR, "c": MIXED, "tags": ARRAY,
                                 "n": DOC}
    )  # fmt: skip
    unique: list[str] = field(default_factory=lambda: ["_id"])
    ordered: bool = False  # a total-order $sort happened and nothing reordered since
    done: bool = False


def _predicate(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    paths = [f for f, k in shape.fields.items() if k != DOC]
    if shape.fields.get("n") == DOC:
        paths.append("n.x")
    path = draw(st.sampled_from(paths))
    kind = INT if path == "n.x" else shape.fields[path]
    values = VALUES.get(kind, VALUES[MIXED])
    v = draw(st.sampled_from(values))
    ops: list[Any] = [
        v,
        {"$ne": v},
        {"$in": draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))},
        {"$exists": draw(st.booleans())},
    ]
    if kind in (INT, STR, MIXED):
        ops += [{"$gte": v}, {"$lt": v}]
    if kind == ARRAY:
        ops += [{"$size": draw(st.integers(0, 3))}, {"$all": [v]}]
    return {path: draw(st.sampled_from(ops))}


def _match(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    if draw(st.integers(0, 3)) == 0:
        return {"$match": {"$or": [_predicate(draw, shape), _predicate(draw, shape)]}}
    return {"$match": _predicate(draw, shape)}


def _project(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    optional = [f for f in shape.fields if f not in shape.unique]
    kept = draw(st.lists(st.sampled_from(optional), unique=True)) if optional else []
    spec: dict[str, Any] = {f: 1 for f in shape.unique}
    spec.update({f: 1 for f in kept})
    fields = {f: shape.fields[f] for f in [*shape.unique, *kept]}
    if shape.fields.get("a") == INT and draw(st.booleans()):
        spec["d"] = {"$cond": [{"$gte": ["$a", 5]}, "hi", "lo"]}
        fields["d"] = STR
    if "_id" not in spec:
        spec["_id"] = 0
    shape.fields = fields
    return {"$project": spec}


def _unwind(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    shape.fields["tags"] = MIXED
    shape.fields["i"] = MIXED
    shape.unique = [*shape.unique, "i"]
    keep_empty = draw(st.booleans())
    return {
        "$unwind": {"path": "$tags", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": keep_empty}
    }


def _group(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    keys: list[Any] = [None]
    for f in ("a", "b", "c"):
        if f in shape.fields:
            keys.append("$" + f)
    if "a" in shape.fields and "b" in shape.fields:
        keys.append({"a": "$a", "b": "$b"})
    if shape.fields.get("n") == DOC:
        keys.append("$n.x")
    spec: dict[str, Any] = {"_id": draw(st.sampled_from(keys)), "cnt": {"$sum": 1}}
    fields = {"_id": MIXED, "cnt": INT}
    others: list[str] = [f for f in shape.fields if f != "_id"]
    if shape.fields.get("a") == INT:
        for name, acc in (("s", {"$sum": "$a"}), ("av", {"$avg": "$a"})):
            if draw(st.booleans()):
                spec[name] = acc
                fields[name] = MIXED
    if draw(st.booleans()) and others:
        spec["mx"] = {"$max": "$" + draw(st.sampled_from(others))}
        fields["mx"] = MIXED
    if draw(st.booleans()) and others:
        spec["mn"] = {"$min": "$" + draw(st.sampled_from(others))}
        fields["mn"] = MIXED
    shape.fields, shape.unique, shape.ordered = fields, ["_id"], False
    return {"$group": spec}


def _sort(draw: st.DrawFn, shape: Shape) -> dict[str, Any]:
    optional = [f for f in shape.fields if f not in shape.unique]
    lead = draw(st.lists(st.sampled_from(optional), unique=True, max_size=2)) if optional else []
    spec = {f: draw(st.sampled_from([1, -1])) for f in [*lead, *shape.unique]}
    shape.ordered = True
    return {"$sort": spec}


@st.composite
def pipelines(draw: st.DrawFn) -> list[dict[str, Any]]:
    shape = Shape()
    stages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        choices = ["match", "project", "group", "sort", "count"]
        if shape.fields.get("tags") == ARRAY:
            choices.append("unwind")
        if shape.ordered:
            choices += ["limit", "skip"]
        kind = draw(st.sampled_from(choices))
        if kind == "match":
            stages.append(_match(draw, shape))
        elif kind == "project":
            stages.append(_project(draw, shape))
        elif kind == "unwind":
            stages.append(_unwind(draw, shape))
        elif kind == "group":
            stages.append(_group(draw, shape))
        elif kind == "sort":
            stages.append(_sort(draw, shape))
        elif kind == "limit":
            stages.append({"$limit": draw(st.integers(1, 30))})
        elif kind == "skip":
            stages.append({"$skip": draw(st.integers(0, 30))})
        else:
            stages.append({"$count": "total"})
            break
    return stages


def is_ordered(pipeline: Sequence[Mapping[str, Any]]) -> bool:
    ordered = False
    for stage in pipeline:
        name = next(iter(stage))
        if name == "$sort":
            ordered = True
        elif name == "$group":
            ordered = False
    return ordered


# --- comparing -----------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9) if math.isfinite(value) else value
    if isinstance(value, Mapping):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def canonical(docs: Sequence[Mapping[str, Any]], ordered: bool) -> list[bytes]:
    encoded = [bson.encode(normalize(d)) for d in docs]
    return encoded if ordered else sorted(encoded)


async def run(
    router: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    pipeline: Sequence[Mapping[str, Any]],
    batch_size: int,
) -> tuple[list[dict[str, Any]], set[str]]:
    request = routing_pb2.AggregationRequest(
        database=db, collection=coll, pipeline=[enc(s) for s in pipeline], batch_size=batch_size
    )
    response = await router.Aggregate(request, timeout=RPC)
    docs = [dec(d) for d in response.results]
    shards = set(response.stats.shards_queried)
    cursor_id = response.cursor_id if response.more_available else ""
    while cursor_id:
        more = await router.GetMore(
            router_ext_pb2.GetMoreRequest(cursor_id=cursor_id, batch_size=batch_size), timeout=RPC
        )
        docs.extend(dec(d) for d in more.documents)
        cursor_id = more.cursor_id if more.more_available else ""
    return docs, shards


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pipeline=pipelines(), batch_size=st.sampled_from([0, 7, 101]))
async def test_same_results_hashed_ranged_unsharded(
    data: Data, pipeline: list[dict[str, Any]], batch_size: int
) -> None:
    router = data.cluster.router_stub()
    ordered = is_ordered(pipeline)
    try:
        expected = list(compile_pipeline(pipeline).run(iter(data.docs)))
    except LauraError as err:  # the generator avoids these; then every collection agrees
        for coll in (HASHED, RANGED, PLAIN):
            with pytest.raises(grpc.RpcError) as info:
                await run(router, data.db, coll, pipeline, batch_size)
            assert laura_error(info.value).code == err.code
        return
    want = canonical(expected, ordered)
    event(f"results: {'0' if not expected else '1-9' if len(expected) < 10 else '10+'}")
    event(f"ordered: {ordered}")
    for coll in (HASHED, RANGED, PLAIN):
        got, shards = await run(router, data.db, coll, pipeline, batch_size)
        assert canonical(got, ordered) == want, (coll, pipeline)
        if coll == HASHED and "$match" not in pipeline[0]:
            assert len(shards) == 3  # the split path: every shard asked


async def test_ranged_collection_layout(data: Data) -> None:
    shard_map = await get_shard_map(data.cluster.config_stub(), data.db, RANGED)
    assert len(chunks_of(shard_map)) == len(RANGE_SPLITS) + 1
    # One shard while MigrateChunk is NOT_IMPLEMENTED; more once it works.
    assert data.ranged_shards
