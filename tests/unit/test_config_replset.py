"""Config server side of replica-set shards: members stored with the shard record
(including a data dir from before the column existed) and validated by the catalog."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from config_server.catalog import Catalog
from config_server.store import DB_FILE_NAME, MetadataStore, SqliteMetadataStore
from lauradb.errors import ErrorCode, LauraError


def test_old_data_dir_gains_the_members_column(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE_NAME)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE shards (shard_id TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,"
        " node_id TEXT NOT NULL DEFAULT '', draining INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3'), ('topology_version', '1')")
    conn.execute("INSERT INTO shards VALUES ('s0', 'h', 1, '', 0)")
    conn.commit()
    conn.close()
    store = SqliteMetadataStore(tmp_path)
    catalog = Catalog(store)
    (old,) = catalog.list_shards()
    assert old.members == () and old.member_addresses == ("h:1",)
    assert catalog.add_shard("s1", "h", 2, members=["h:2", "h:3", "h:4"]) == "added"
    store.close()
    reopened = Catalog(SqliteMetadataStore(tmp_path))
    assert reopened.get_shard("s1").members == ("h:2", "h:3", "h:4")
    assert reopened.add_shard("s1", "h", 2, members=["h:2", "h:3", "h:4"]) == "unchanged"


def test_members_are_validated(metadata_store: MetadataStore) -> None:
    catalog = Catalog(metadata_store)
    with pytest.raises(LauraError) as info:
        catalog.add_shard("s0", "h", 1, members=["h:2", "h:3"])  # the seed is not a member
    assert info.value.code == ErrorCode.BAD_VALUE
    catalog.add_shard("s0", "h", 1, members=["h:1", "h:2", "h:3"])
    with pytest.raises(LauraError) as info:
        catalog.add_shard("s1", "h", 3)  # already a member of s0
    assert info.value.code == ErrorCode.ILLEGAL_OPERATION
    assert catalog.add_shard("s1", "h", 9, members=["h:9"]).startswith("added")
    assert catalog.get_shard("s1").members == ()  # one member: standalone
