"""Config server: index records, the unique-index / shard-key rule, and drops."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from config_server.catalog import Catalog
from config_server.index_records import parse_keys, unique_compatible
from config_server.store import DB_FILE_NAME, SCHEMA_VERSION, MetadataStore, SqliteMetadataStore
from lauradb.errors import ErrorCode, LauraError


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    return metadata_store  # both backends (tests/conftest.py)


@pytest.fixture
def catalog(store: MetadataStore) -> Catalog:
    c = Catalog(store)
    for i in range(3):
        c.add_shard(f"shard{i}", "127.0.0.1", 30000 + i)
    return c


def names(catalog: Catalog, db: str, coll: str) -> list[str]:
    return [r.name for r in catalog.collection_indexes(db, coll)]


def test_parse_keys() -> None:
    assert parse_keys({"a": 1, "b": -1.0}) == (("a", 1), ("b", -1))
    for bad in ({}, {"a": 0}, {"a": "hashed"}, {"a": False}, {"$x": 1}, {"a.": 1}):
        with pytest.raises(LauraError) as exc:
            parse_keys(bad)
        assert exc.value.code == ErrorCode.BAD_VALUE


def test_record_index_idempotent_and_conflicts(catalog: Catalog) -> None:
    assert catalog.record_index("db", "c", "a_1", [("a", 1)]) is True
    assert catalog.record_index("db", "c", "a_1", [("a", 1)]) is False
    assert catalog.get_database("db").primary_shard == "shard0"  # created on first use
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "c", "a_1", [("a", -1)])
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "c", "a_1", [("a", 1)], unique=True)
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "c", "other", [("a", 1)])
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    assert catalog.record_index("db", "c", "_id_", [("_id", 1)]) is False
    with pytest.raises(LauraError):
        catalog.record_index("db", "c", "_id_", [("x", 1)])
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "c", "", [("x", 1)])
    assert exc.value.code == ErrorCode.BAD_VALUE
    assert catalog.record_index("db", "c", "b_1_a_-1", [("b", 1), ("a", -1)], sparse=True)
    records = catalog.collection_indexes("db", "c")
    assert [(r.name, r.keys, r.unique, r.sparse) for r in records] == [
        ("a_1", (("a", 1),), False, False),
        ("b_1_a_-1", (("b", 1), ("a", -1)), False, True),
    ]
    assert catalog.collection_indexes("db", "other") == []
    assert catalog.collection_indexes("nodb", "c") == []


def test_unique_compatible_rule() -> None:
    assert unique_compatible(["a"], (("a", 1),))
    assert unique_compatible(["a"], (("a", -1), ("b", 1)))
    assert unique_compatible(["a", "b"], (("a", 1), ("b", 1), ("c", 1)))
    assert unique_compatible(["a"], (("_id", 1), ("b", 1)))
    assert not unique_compatible(["a"], (("b", 1),))
    assert not unique_compatible(["a"], (("b", 1), ("a", 1)))
    assert not unique_compatible(["a", "b"], (("a", 1),))


def test_unique_index_on_sharded_collection_needs_shard_key_prefix(catalog: Catalog) -> None:
    catalog.shard_collection("db", "c", ["a"], "RANGE")
    assert catalog.record_index("db", "c", "b_1", [("b", 1)])  # not unique: fine
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "c", "b_u", [("b", 1), ("x", 1)], unique=True)
    assert exc.value.code == ErrorCode.CANNOT_CREATE_INDEX and int(exc.value.code) == 67
    assert "cannot create unique index over { b: 1, x: 1 } with shard key pattern { a: 1 }" in (
        exc.value.message
    )
    assert catalog.record_index("db", "c", "a_1_b_1", [("a", 1), ("b", 1)], unique=True)
    assert catalog.record_index("db", "c", "_id_1_b_1", [("_id", 1), ("b", 1)], unique=True)
    # Hashed shard keys: the field name counts (documents with equal values share a chunk).
    catalog.shard_collection("db", "h", ["k"], "HASH")
    assert catalog.record_index("db", "h", "k_1", [("k", 1)], unique=True)
    with pytest.raises(LauraError) as exc:
        catalog.record_index("db", "h", "z_1", [("z", 1)], unique=True)
    assert exc.value.code == ErrorCode.CANNOT_CREATE_INDEX
    assert '{ k: "hashed" }' in exc.value.message
    # Unsharded: any unique index.
    assert catalog.record_index("db", "plain", "z_1", [("z", 1)], unique=True)


def test_shard_collection_refused_by_incompatible_unique_index(catalog: Catalog) -> None:
    catalog.record_index("db", "c", "email_1", [("email", 1)], unique=True)
    with pytest.raises(LauraError) as exc:
        catalog.shard_collection("db", "c", ["region"], "RANGE")
    assert exc.value.code == ErrorCode.INVALID_OPTIONS
    assert "Uniqueness can't be maintained" in exc.value.message
    assert catalog.get_collection("db", "c") is None
    record, _ = catalog.shard_collection("db", "c", ["email"], "HASH")
    assert record.key_fields == ("email",)
    catalog.record_index("db", "d", "r_1_e_1", [("r", 1), ("e", 1)], unique=True)
    catalog.shard_collection("db", "d", ["r"], "RANGE")


def test_remove_index_record(catalog: Catalog) -> None:
    catalog.record_index("db", "c", "a_1", [("a", 1)])
    catalog.record_index("db", "c", "b_1", [("b", 1)])
    catalog.record_index("db", "c", "c_1", [("c", 1)])
    assert catalog.remove_index_record("db", "c", "b_1") is True
    assert catalog.remove_index_record("db", "c", "b_1") is False
    assert names(catalog, "db", "c") == ["a_1", "c_1"]
    with pytest.raises(LauraError) as exc:
        catalog.remove_index_record("db", "c", "_id_")
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    assert catalog.remove_index_record("db", "c", "*") is True
    assert catalog.remove_index_record("db", "c", "*") is False
    assert names(catalog, "db", "c") == []


def test_drop_collection_metadata(catalog: Catalog, store: MetadataStore) -> None:
    first, _ = catalog.shard_collection("db", "c", ["k"], "HASH")
    catalog.record_index("db", "c", "a_1", [("a", 1)])
    catalog.record_index("db", "other", "a_1", [("a", 1)])
    before = catalog.topology_version()
    result = catalog.drop_collection_metadata("db", "c")
    assert result.dropped and result.sharded == ["db.c"]
    assert catalog.topology_version() > before
    assert catalog.get_collection("db", "c") is None
    with store.snapshot() as tx:
        assert tx.list_chunks("db.c") == []
    assert names(catalog, "db", "c") == []
    assert names(catalog, "db", "other") == ["a_1"]  # untouched
    view = catalog.shard_map("db", "c")
    assert not view.sharded and view.primary_shard == "shard0"
    again, chunks = catalog.shard_collection("db", "c", ["k"], "RANGE")
    assert again.epoch != first.epoch and len(chunks) == 1
    # Unsharded with index records only; then nothing at all.
    result = catalog.drop_collection_metadata("db", "other")
    assert result.dropped and result.sharded == []
    assert not catalog.drop_collection_metadata("db", "other").dropped
    assert not catalog.drop_collection_metadata("nodb", "x").dropped


def test_drop_database_metadata(catalog: Catalog, store: MetadataStore) -> None:
    catalog.ensure_database("keep")
    catalog.shard_collection("db", "c1", ["k"], "HASH")
    catalog.shard_collection("db", "c2", ["k"], "RANGE")
    catalog.record_index("db", "c1", "a_1", [("a", 1)])
    catalog.record_index("db", "plain", "a_1", [("a", 1)])
    catalog.record_index("keep", "c", "a_1", [("a", 1)])
    catalog.shard_collection("keep", "s", ["k"], "RANGE")
    assert catalog.get_database("db").primary_shard == "shard1"
    result = catalog.drop_database_metadata("db")
    assert result.dropped and sorted(result.sharded) == ["db.c1", "db.c2"]
    with pytest.raises(LauraError) as exc:
        catalog.get_database("db")
    assert exc.value.code == ErrorCode.NAMESPACE_NOT_FOUND
    with store.snapshot() as tx:
        assert [c.namespace for c in tx.list_collections()] == ["keep.s"]
        assert {c.namespace for c in tx.list_chunks()} == {"keep.s"}
        assert tx.list_indexes("db") == []
    assert names(catalog, "keep", "c") == ["a_1"]
    assert not catalog.drop_database_metadata("db").dropped
    # The primary shard is chosen again when the database comes back.
    db, created = catalog.ensure_database("db")
    assert created and db.primary_shard == "shard1"


def test_schema_upgrade_from_version_1(tmp_path: Path) -> None:
    s = SqliteMetadataStore(tmp_path)
    s.close()
    conn = sqlite3.connect(tmp_path / DB_FILE_NAME)
    conn.execute("DROP TABLE indexes")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    s = SqliteMetadataStore(tmp_path)
    try:
        c = Catalog(s)
        c.add_shard("s0", "127.0.0.1", 30000)
        assert c.record_index("db", "c", "a_1", [("a", 1)])
        with s.snapshot() as tx:
            assert tx.get_meta("schema_version") == str(SCHEMA_VERSION)
    finally:
        s.close()
