"""The config server's metadata store and catalog, on both backends (SQLite, etcd:
the ``metadata_store``/``make_store`` fixtures are parametrized over them)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config_server.catalog import Catalog, ShardMapView
from config_server.failure_detector import FailureDetector
from config_server.key_bounds import hashed_boundaries
from config_server.model import ChunkRecord, NodeRecord, ShardRecord, combined_version
from config_server.store import MetadataStore, SqliteMetadataStore, SqliteTransaction
from config_server.store_etcd import EtcdTransaction
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import ShardKeyPattern


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    return metadata_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteMetadataStore]:
    s = SqliteMetadataStore(tmp_path / "cfg")
    yield s
    s.close()


@pytest.fixture
def catalog(store: MetadataStore) -> Catalog:
    return Catalog(store)


def tx_class(store: MetadataStore) -> type[Any]:
    return SqliteTransaction if isinstance(store, SqliteMetadataStore) else EtcdTransaction


def add_shards(catalog: Catalog, n: int) -> list[str]:
    ids = [f"shard{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        catalog.add_shard(sid, "127.0.0.1", 30000 + i)
    return ids


def code_of(exc: pytest.ExceptionInfo[LauraError]) -> ErrorCode:
    return exc.value.code


def bounds(chunk: ChunkRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    return bson.decode(chunk.min_key), bson.decode(chunk.max_key)


def to_chunk_map(view: ShardMapView) -> ChunkMap:
    assert view.collection is not None
    pattern = ShardKeyPattern(
        list(view.collection.key_fields),
        "hashed" if view.collection.strategy == "HASH" else "range",
    )
    return ChunkMap(pattern, [to_chunk(c) for c in view.chunks])


def to_chunk(c: ChunkRecord) -> Chunk:
    lo, hi = bounds(c)
    return Chunk(c.chunk_id, lo, hi, c.shard_id, c.major, c.minor)


# ---------------------------------------------------------------------- store basics


def test_schema_created_and_data_survives_reopen(tmp_path: Path) -> None:
    s = SqliteMetadataStore(tmp_path / "d")
    assert (tmp_path / "d" / "config.sqlite3").exists()
    with s.transaction() as tx:
        assert tx.topology_version() == 0
        tx.put_shard(ShardRecord("a", "h", 1))
        assert tx.bump_topology_version() == 1
    s.close()
    s2 = SqliteMetadataStore(tmp_path / "d")
    with s2.snapshot() as tx:
        assert tx.get_shard("a") == ShardRecord("a", "h", 1)
        assert tx.topology_version() == 1
    mode = s2._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s2.close()


def test_data_survives_reopen(make_store: Callable[..., MetadataStore]) -> None:
    s = make_store("d")
    with s.transaction() as tx:
        assert tx.topology_version() == 0
        tx.put_shard(ShardRecord("a", "h", 1))
        assert tx.bump_topology_version() == 1
    s.close()
    s2 = make_store("d")
    with s2.snapshot() as tx:
        assert tx.get_shard("a") == ShardRecord("a", "h", 1)
        assert tx.topology_version() == 1


def test_failing_transaction_leaves_nothing(store: MetadataStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put_shard(ShardRecord("a", "h", 1))
        tx.bump_topology_version()
        raise RuntimeError("boom")
    with store.snapshot() as tx:
        assert tx.list_shards() == []
        assert tx.topology_version() == 0


def test_sqlite_error_rolls_back_and_is_a_lauraerror(sqlite_store: SqliteMetadataStore) -> None:
    store = sqlite_store
    chunk = ChunkRecord("c1", "db.c", b"a", b"b", b"\x01", "s", 1, 0)
    with pytest.raises(LauraError) as exc, store.transaction() as tx:
        tx.put_shard(ShardRecord("a", "h", 1))
        tx.insert_chunks([chunk, chunk])  # duplicate primary key
    assert code_of(exc) == ErrorCode.INTERNAL_ERROR
    with store.snapshot() as tx:
        assert tx.list_shards() == []
        assert tx.list_chunks() == []


def test_snapshot_is_read_only_and_transactions_do_not_nest(store: MetadataStore) -> None:
    with pytest.raises(LauraError), store.snapshot() as tx:
        tx.put_shard(ShardRecord("a", "h", 1))
    with pytest.raises(LauraError), store.transaction(), store.transaction():
        pass
    with store.snapshot() as tx:
        assert tx.list_shards() == []


# ---------------------------------------------------------------------------- shards


def test_add_shard_is_idempotent_and_updates_moved_shards(catalog: Catalog) -> None:
    assert catalog.add_shard("s0", "127.0.0.1", 1000) == "added"
    v1 = catalog.topology_version()
    assert catalog.add_shard("s0", "127.0.0.1", 1000) == "unchanged"
    assert catalog.topology_version() == v1
    assert catalog.add_shard("s0", "127.0.0.1", 2000, "node-a") == "updated"
    assert catalog.get_shard("s0") == ShardRecord("s0", "127.0.0.1", 2000, "node-a")
    assert catalog.topology_version() == v1 + 1
    with pytest.raises(LauraError) as exc:
        catalog.add_shard("s1", "127.0.0.1", 2000)
    assert code_of(exc) == ErrorCode.ILLEGAL_OPERATION


@pytest.mark.parametrize(
    ("sid", "host", "port"), [("", "h", 1), ("s", "", 1), ("s", "h", 0), ("s", "h", 70000)]
)
def test_add_shard_rejects_bad_input(catalog: Catalog, sid: str, host: str, port: int) -> None:
    with pytest.raises(LauraError) as exc:
        catalog.add_shard(sid, host, port)
    assert code_of(exc) == ErrorCode.BAD_VALUE


def test_remove_shard_refuses_primaries_and_chunk_owners(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    catalog.ensure_database("db")  # primary shard0
    catalog.shard_collection("db2", "c", ["x"], "HASH", 6)  # db2 primary shard1
    with pytest.raises(LauraError) as exc:
        catalog.remove_shard("shard0")
    assert code_of(exc) == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        catalog.remove_shard("shard2")  # owns hashed chunks
    assert code_of(exc) == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        catalog.remove_shard("nope")
    assert code_of(exc) == ErrorCode.SHARD_NOT_FOUND
    catalog.add_shard("spare", "127.0.0.1", 39999)
    catalog.remove_shard("spare")
    assert [s.shard_id for s in catalog.list_shards()] == ["shard0", "shard1", "shard2"]


# ------------------------------------------------------------------------- databases


def test_ensure_database_picks_least_loaded_primary(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    primaries = [catalog.ensure_database(f"db{i}")[0].primary_shard for i in range(5)]
    assert primaries == ["shard0", "shard1", "shard2", "shard0", "shard1"]
    db, created = catalog.ensure_database("db0")
    assert (db.primary_shard, created) == ("shard0", False)
    assert catalog.get_database("db3").primary_shard == "shard0"
    with pytest.raises(LauraError) as exc:
        catalog.get_database("missing")
    assert code_of(exc) == ErrorCode.NAMESPACE_NOT_FOUND


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a$", "x" * 64, "a/b"])
def test_ensure_database_rejects_bad_names(catalog: Catalog, name: str) -> None:
    add_shards(catalog, 1)
    with pytest.raises(LauraError) as exc:
        catalog.ensure_database(name)
    assert code_of(exc) == ErrorCode.INVALID_NAMESPACE


def test_ensure_database_without_shards(catalog: Catalog) -> None:
    with pytest.raises(LauraError) as exc:
        catalog.ensure_database("db")
    assert code_of(exc) == ErrorCode.SHARD_NOT_FOUND


def test_list_databases_names_sharded_collections(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.ensure_database("a")
    catalog.shard_collection("b", "c1", ["x"], "RANGE")
    catalog.shard_collection("b", "c0", ["x"], "RANGE")
    views = {v.database.name: v for v in catalog.list_databases()}
    assert views["a"].sharded_collections == []
    assert views["b"].sharded_collections == ["c0", "c1"]


# ----------------------------------------------------------------- shard collection


def test_range_collection_starts_with_one_chunk_on_primary(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.ensure_database("first")  # shard0
    record, chunks = catalog.shard_collection("db", "users", ["user_id"], "UNKNOWN_STRATEGY")
    assert record.strategy == "RANGE" and record.key_fields == ("user_id",)
    assert catalog.get_database("db").primary_shard == "shard1"
    assert len(chunks) == 1
    (c,) = chunks
    assert (c.shard_id, c.major, c.minor) == ("shard1", 1, 0)
    assert bounds(c) == ({"user_id": MinKey()}, {"user_id": MaxKey()})


def test_compound_collection_bounds_and_strategy(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    record, chunks = catalog.shard_collection("db", "c", ["a", "b.c"], "RANGE", unique=True)
    assert record.strategy == "COMPOUND" and record.unique
    lo, hi = bounds(chunks[0])
    assert list(lo) == ["a", "b.c"] and lo == {"a": MinKey(), "b.c": MinKey()}
    assert hi == {"a": MaxKey(), "b.c": MaxKey()}


def test_hashed_collection_presplits_round_robin(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    record, chunks = catalog.shard_collection("db", "h", ["k"], "HASH")
    assert record.strategy == "HASH"
    assert len(chunks) == 6
    assert [c.shard_id for c in chunks] == ["shard0", "shard1", "shard2"] * 2
    assert [(c.major, c.minor) for c in chunks] == [(1, i) for i in range(6)]
    points = [bounds(c)[0]["k"] for c in chunks[1:]]
    assert points == hashed_boundaries(6)
    assert all(isinstance(p, Int64) for p in points)
    assert bounds(chunks[0])[0] == {"k": MinKey()} and bounds(chunks[-1])[1] == {"k": MaxKey()}
    widths = [b - a for a, b in zip([-(2**63), *points], [*points, 2**63], strict=True)]
    assert max(widths) - min(widths) <= 1
    view = catalog.shard_map("db", "h")
    cmap = to_chunk_map(view)  # contiguous cover, validated by ChunkMap
    assert cmap.version == (1, 5)
    assert view.version == combined_version(1, 5)


def test_hashed_collection_with_data_on_primary_keeps_chunks_there(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.ensure_database("db")
    _, chunks = catalog.shard_collection("db", "h", ["k"], "HASH", 8, primary_has_data=True)
    assert len(chunks) == 8 and {c.shard_id for c in chunks} == {"shard0"}


def test_hashed_round_robin_starts_at_primary_and_one_chunk_option(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.ensure_database("other")  # shard0
    _, chunks = catalog.shard_collection("db", "h", ["k"], "HASH", 4)  # db primary: shard1
    assert [c.shard_id for c in chunks] == ["shard1", "shard0", "shard1", "shard0"]
    _, single = catalog.shard_collection("db", "one", ["k"], "HASH", 1)
    assert len(single) == 1 and bounds(single[0]) == ({"k": MinKey()}, {"k": MaxKey()})


def test_compound_hashed_bounds(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    _, chunks = catalog.shard_collection("db", "h", ["a", "b"], "HASH", 3)
    assert [bounds(c)[0] for c in chunks] == [
        {"a": MinKey(), "b": MinKey()},
        {"a": Int64(hashed_boundaries(3)[0]), "b": MinKey()},
        {"a": Int64(hashed_boundaries(3)[1]), "b": MinKey()},
    ]
    to_chunk_map(catalog.shard_map("db", "h"))


@pytest.mark.parametrize(
    ("fields", "strategy", "initial", "code"),
    [
        ([], "RANGE", 0, ErrorCode.BAD_VALUE),
        ([""], "RANGE", 0, ErrorCode.BAD_VALUE),
        (["$x"], "RANGE", 0, ErrorCode.BAD_VALUE),
        (["a..b"], "RANGE", 0, ErrorCode.BAD_VALUE),
        (["a", "a"], "RANGE", 0, ErrorCode.BAD_VALUE),
        (["a", "a.b"], "COMPOUND", 0, ErrorCode.BAD_VALUE),
        (["a"], "BOGUS", 0, ErrorCode.BAD_VALUE),
        (["a"], "RANGE", 4, ErrorCode.BAD_VALUE),
        (["a"], "HASH", -1, ErrorCode.BAD_VALUE),
        (["a"], "HASH", 100_000, ErrorCode.BAD_VALUE),
    ],
)
def test_shard_collection_rejects_bad_keys(
    catalog: Catalog, fields: list[str], strategy: str, initial: int, code: ErrorCode
) -> None:
    add_shards(catalog, 1)
    before = catalog.topology_version()
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "c", fields, strategy, initial)
    assert code_of(exc) == code
    assert exc.value.grpc_status.name == "INVALID_ARGUMENT"
    assert catalog.topology_version() == before
    with pytest.raises(LauraError):
        catalog.get_database("db")  # nothing was created


def test_shard_collection_twice_and_illegal_namespaces(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    catalog.shard_collection("db", "c", ["a"], "RANGE")
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "c", ["b"], "HASH")
    assert code_of(exc) == ErrorCode.ALREADY_SHARDED
    assert exc.value.grpc_status.name == "ALREADY_EXISTS"
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "system.x", ["a"], "RANGE")
    assert code_of(exc) == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "", ["a"], "RANGE")
    assert code_of(exc) == ErrorCode.INVALID_NAMESPACE


def test_shard_collection_without_shards(catalog: Catalog) -> None:
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "c", ["a"], "RANGE")
    assert code_of(exc) == ErrorCode.SHARD_NOT_FOUND


def test_shard_collection_is_atomic(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    add_shards(catalog, 2)
    before = catalog.topology_version()

    def failing_insert(self: Any, chunks: list[ChunkRecord]) -> None:
        if isinstance(self, SqliteTransaction):
            self._conn.execute(
                "INSERT INTO chunks (chunk_id, namespace, min_key, max_key, min_sort, shard_id, "
                "major, minor, version, jumbo) VALUES ('x', 'db.c', x'', x'', x'', 's', 1, 0, 1, 0)"
            )
            raise sqlite3.OperationalError("disk I/O error")
        self.set_meta("half-written", "1")
        raise LauraError(ErrorCode.INTERNAL_ERROR, "injected")

    monkeypatch.setattr(tx_class(catalog.store), "insert_chunks", failing_insert)
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "c", ["k"], "HASH")
    assert code_of(exc) == ErrorCode.INTERNAL_ERROR
    monkeypatch.undo()
    assert catalog.get_collection("db", "c") is None
    assert catalog.topology_version() == before
    with catalog.store.snapshot() as tx:
        assert tx.list_chunks() == []
        assert tx.get_database("db") is None  # created in the same transaction
        assert tx.get_meta("half-written") is None


# --------------------------------------------------------------------------- splits


def test_split_range_chunk_versions_and_bounds(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    _, (c,) = catalog.shard_collection("db", "c", ["x"], "RANGE")
    left, right = catalog.split_chunk(c.chunk_id, {"x": 100})
    assert left.chunk_id != c.chunk_id and right.chunk_id not in (c.chunk_id, left.chunk_id)
    assert bounds(left) == ({"x": MinKey()}, {"x": 100})
    assert bounds(right) == ({"x": 100}, {"x": MaxKey()})
    assert (left.major, left.minor, right.major, right.minor) == (1, 1, 1, 2)
    assert left.shard_id == right.shard_id == c.shard_id
    with pytest.raises(LauraError) as exc:
        catalog.get_chunk(c.chunk_id)
    assert code_of(exc) == ErrorCode.CHUNK_NOT_FOUND
    with pytest.raises(LauraError) as exc:  # strings sort after numbers: not in [MinKey, 100)
        catalog.split_chunk(left.chunk_id, {"x": "abc"})
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT


def test_split_uses_bson_order(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    _, (c,) = catalog.shard_collection("db", "c", ["x"], "RANGE")
    left, right = catalog.split_chunk(c.chunk_id, {"x": "m"})
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk(right.chunk_id, {"x": 5})  # numbers sort before strings
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    l2, _ = catalog.split_chunk(left.chunk_id, {"x": 5.5})
    assert bounds(l2)[1] == {"x": 5.5}
    view = catalog.shard_map("db", "c")
    assert len(to_chunk_map(view)) == 3
    assert view.version == combined_version(1, 4)


@pytest.mark.parametrize(
    "point",
    [
        {"x": MinKey()},
        {"x": MaxKey()},
        {"y": 1},
        {"x": 1, "y": 2},
        {},
        {"x": [1, 2]},
    ],
)
def test_split_rejects_bad_points(catalog: Catalog, point: dict[str, Any]) -> None:
    add_shards(catalog, 1)
    _, (c,) = catalog.shard_collection("db", "c", ["x"], "RANGE")
    before = catalog.topology_version()
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk(c.chunk_id, point)
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    assert exc.value.grpc_status.name == "INVALID_ARGUMENT"
    assert catalog.get_chunk(c.chunk_id) == c
    assert catalog.topology_version() == before


def test_split_outside_a_chunk_and_unknown_chunk(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    _, (c,) = catalog.shard_collection("db", "c", ["x"], "RANGE")
    left, right = catalog.split_chunk(c.chunk_id, {"x": 10})
    for chunk_id, point in ((left.chunk_id, 10), (left.chunk_id, 11), (right.chunk_id, 10)):
        with pytest.raises(LauraError) as exc:
            catalog.split_chunk(chunk_id, {"x": point})
        assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk("no-such-chunk", {"x": 1})
    assert code_of(exc) == ErrorCode.CHUNK_NOT_FOUND


def test_split_hashed_chunk_in_hash_space(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    _, chunks = catalog.shard_collection("db", "h", ["k"], "HASH", 4)
    second = chunks[1]  # [-2**62, 0) on shard1
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk(second.chunk_id, {"k": "abc"})
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk(second.chunk_id, {"k": 1.5})
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    left, right = catalog.split_chunk(second.chunk_id, {"k": -5})
    assert bounds(left)[1] == {"k": -5} and isinstance(bounds(left)[1]["k"], Int64)
    assert (left.minor, right.minor) == (4, 5)  # above the collection's (1, 3)
    assert left.shard_id == right.shard_id == "shard1"


def test_split_compound_with_minkey_component(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    _, (c,) = catalog.shard_collection("db", "c", ["a", "b"], "COMPOUND")
    left, right = catalog.split_chunk(c.chunk_id, {"b": MinKey(), "a": 5})  # any field order
    assert bounds(left)[1] == {"a": 5, "b": MinKey()}
    assert list(bounds(right)[0]) == ["a", "b"]
    with pytest.raises(LauraError) as exc:
        catalog.split_chunk(right.chunk_id, {"a": 5, "b": MinKey()})
    assert code_of(exc) == ErrorCode.INVALID_SPLIT_POINT
    catalog.split_chunk(right.chunk_id, {"a": 5, "b": 0})


def test_split_is_atomic(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    add_shards(catalog, 1)
    _, (c,) = catalog.shard_collection("db", "c", ["x"], "RANGE")

    def failing_insert(self: Any, chunks: list[ChunkRecord]) -> None:
        raise LauraError(ErrorCode.INTERNAL_ERROR, "injected")

    monkeypatch.setattr(tx_class(catalog.store), "insert_chunks", failing_insert)
    with pytest.raises(LauraError):
        catalog.split_chunk(c.chunk_id, {"x": 1})
    monkeypatch.undo()
    assert catalog.get_chunk(c.chunk_id) == c
    assert len(catalog.shard_map("db", "c").chunks) == 1


# ------------------------------------------------------------------------ shard maps


def test_shard_map_unknown_and_unsharded(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    with pytest.raises(LauraError) as exc:
        catalog.shard_map("nodb", "c")
    assert code_of(exc) == ErrorCode.NAMESPACE_NOT_FOUND
    catalog.ensure_database("db")
    view = catalog.shard_map("db", "plain")
    assert not view.sharded and view.version == 0
    assert view.primary_shard == "shard0"
    assert [s.shard_id for s in view.shards] == ["shard0"]


def test_shard_map_not_modified_incremental_and_epochs(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    record, chunks = catalog.shard_collection("db", "h", ["k"], "HASH", 4)
    full = catalog.shard_map("db", "h")
    assert full.sharded and not full.incremental and len(full.chunks) == 4
    assert [s.shard_id for s in full.shards] == ["shard0", "shard1"]
    same = catalog.shard_map("db", "h", version=full.version, epoch=record.epoch)
    assert same.not_modified
    assert catalog.shard_map("db", "h", version=full.version).not_modified
    other_epoch = catalog.shard_map("db", "h", version=full.version, epoch="ffff")
    assert not other_epoch.not_modified and len(other_epoch.chunks) == 4

    left, right = catalog.split_chunk(chunks[2].chunk_id, {"k": 12345})
    delta = catalog.shard_map(
        "db", "h", version=full.version, epoch=record.epoch, incremental=True
    )
    assert delta.incremental
    assert {c.chunk_id for c in delta.chunks} == {left.chunk_id, right.chunk_id}
    assert delta.version == combined_version(1, 5)
    merged = to_chunk_map(full).apply_changes([to_chunk(c) for c in delta.chunks])
    fresh = to_chunk_map(catalog.shard_map("db", "h"))
    assert merged.chunks == fresh.chunks
    assert merged.version == fresh.version == (1, 5)
    assert fresh.shard_version("shard0") == (1, 5) and fresh.shard_version("shard1") == (1, 3)

    stale_epoch = catalog.shard_map("db", "h", version=full.version, epoch="x", incremental=True)
    assert not stale_epoch.incremental and len(stale_epoch.chunks) == 5


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(points=st.lists(st.integers(-1000, 1000), min_size=1, max_size=12))
def test_random_splits_keep_a_valid_map(
    make_store: Callable[..., MetadataStore], points: list[int]
) -> None:
    s = make_store(f"h{uuid.uuid4().hex[:8]}")
    try:
        catalog = Catalog(s)
        add_shards(catalog, 2)
        catalog.shard_collection("db", "c", ["x"], "RANGE")
        base = catalog.shard_map("db", "c")
        assert base.collection is not None
        cmap = to_chunk_map(base)
        version = base.version
        for p in points:
            target = cmap.chunk_for_key(cmap.pattern.encode_bound({"x": p}))
            if bson.decode(catalog.get_chunk(target.chunk_id).min_key)["x"] == p:
                with pytest.raises(LauraError):
                    catalog.split_chunk(target.chunk_id, {"x": p})
                continue
            catalog.split_chunk(target.chunk_id, {"x": p})
            delta = catalog.shard_map(
                "db", "c", version=version, epoch=base.collection.epoch, incremental=True
            )
            cmap = cmap.apply_changes([to_chunk(c) for c in delta.chunks])
            version = delta.version
        assert cmap.chunks == to_chunk_map(catalog.shard_map("db", "c")).chunks
    finally:
        s.close()


# ----------------------------------------------------------------------------- nodes


def node(node_id: str, port: int, **tags: str) -> NodeRecord:
    return NodeRecord(node_id, "127.0.0.1", port, role=4, tags=dict(tags))


def test_nodes_register_link_and_deregister(catalog: Catalog) -> None:
    catalog.add_shard("shard0", "127.0.0.1", 30000)
    v0 = catalog.topology_version()
    v1 = catalog.register_node(node("n0", 30000, shard_id="shard0"))
    assert v1 == v0 + 1
    assert catalog.get_shard("shard0").node_id == "n0"
    assert catalog.get_node("n0").shard_id == "shard0"
    assert catalog.register_node(node("n0", 30000, shard_id="shard0")) == v1 + 1
    topo = catalog.topology()
    assert topo.version == v1 + 1 and [n.node_id for n in topo.nodes] == ["n0"]
    assert catalog.set_node_up("n0", False) and not catalog.get_node("n0").up
    assert not catalog.set_node_up("n0", False)
    assert catalog.topology().version == v1 + 2
    catalog.deregister_node("n0")
    with pytest.raises(LauraError) as exc:
        catalog.deregister_node("n0")
    assert code_of(exc) == ErrorCode.NODE_NOT_FOUND
    with pytest.raises(LauraError) as exc:
        catalog.register_node(node("", 1))
    assert code_of(exc) == ErrorCode.BAD_VALUE


def test_add_shard_links_an_already_registered_node(catalog: Catalog) -> None:
    catalog.register_node(node("n7", 30007, shard_id="s7"))
    catalog.add_shard("s7", "127.0.0.1", 30007)
    assert catalog.get_shard("s7").node_id == "n7"


def test_topology_lists_shards_chunks_and_is_cached(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.shard_collection("db", "h", ["k"], "HASH", 4)
    t1 = catalog.topology()
    assert catalog.topology() is t1
    assert len(t1.chunks) == 4 and [s.shard_id for s in t1.shards] == ["shard0", "shard1"]
    catalog.register_node(node("n", 1))
    t2 = catalog.topology()
    assert t2 is not t1 and t2.version == t1.version + 1


def test_failure_detector_marks_down_and_up(catalog: Catalog) -> None:
    clock = [100.0]
    catalog.register_node(node("n0", 1))
    catalog.register_node(node("n1", 2))
    detector = FailureDetector(catalog, timeout=5.0, monotonic=lambda: clock[0])
    clock[0] += 3
    detector.heartbeat("n1")
    clock[0] += 3
    assert detector.check() == ["n0"]
    assert not catalog.get_node("n0").up and catalog.get_node("n1").up
    before = catalog.topology_version()
    assert detector.check() == []
    assert detector.heartbeat("n0")  # back up: topology changes
    assert catalog.get_node("n0").up and catalog.topology_version() == before + 1
    assert not detector.heartbeat("n0")
    assert catalog.topology_version() == before + 1
    clock[0] += 10
    assert sorted(detector.check()) == ["n0", "n1"]
