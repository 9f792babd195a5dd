"""The etcd metadata store's own guarantees (the shared behaviour is tested on both
backends by test_config_store/test_config_migrations/...): URL parsing, optimistic
transactions that conflict instead of overwriting, monotonic counters under
concurrent config servers, fencing, etcd's size limits with 100,000 chunks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import bson
import grpc
import pytest
from aetcd import rpc

from config_server.catalog import Catalog
from config_server.model import ChunkRecord, DatabaseRecord, ShardRecord
from config_server.store import MetadataConflict, retry_conflicts
from config_server.store_etcd import (
    PAGE_MAX,
    EtcdMetadataStore,
    EtcdStoreSpec,
    parse_etcd_url,
    prefix_end,
)
from lauradb.errors import ErrorCode, LauraError
from lauradb.etcd_local import LocalEtcd
from tests.conftest import etcd_cluster_name

# ------------------------------------------------------------------------- URLs


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379") == EtcdStoreSpec((("127.0.0.1", 2379),))
    spec = parse_etcd_url("etcd://a:1,b,[::1]:3/prod/eu-1")
    assert spec.endpoints == (("a", 1), ("b", 2379), ("::1", 3))
    assert spec.cluster == "prod/eu-1" and spec.root == b"/lauradb/prod/eu-1/"
    assert spec.url == "etcd://a:1,b:2379,[::1]:3/prod/eu-1"
    assert parse_etcd_url(spec.url) == spec
    assert parse_etcd_url("etcd://h:5/").cluster == "default"


@pytest.mark.parametrize(
    "url",
    ["http://h:1", "etcd://", "etcd://h:0", "etcd://h:x", "etcd://h:70000", "etcd://:5",
     "etcd://h:1/a b", "etcd://h:1/../x", "etcd://[::1:5"],
)
def test_bad_etcd_urls(url: str) -> None:
    with pytest.raises(LauraError) as exc:
        parse_etcd_url(url)
    assert exc.value.code == ErrorCode.BAD_VALUE


def test_open_store_and_config_server_flag() -> None:
    from config_server.__main__ import parse_args
    from config_server.store import open_store

    with pytest.raises(LauraError) as exc:
        open_store("mysql://x", "/tmp")
    assert exc.value.code == ErrorCode.BAD_VALUE
    assert parse_args(["--store", "etcd://h:1/x"]).store == "etcd://h:1/x"
    assert parse_args(["--data-dir", "d"]).store == "sqlite"
    for bad in (["--store", "etcd://h:x"], ["--store", "zk://h"], []):  # [] : no data dir
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\x00"


# ------------------------------------------------------------------ two servers


@pytest.fixture
def pair(
    etcd_server: LocalEtcd, request: pytest.FixtureRequest
) -> Iterator[Callable[[], EtcdMetadataStore]]:
    """Stores of one cluster (as two config servers would open it)."""
    url = f"{etcd_server.url}/{etcd_cluster_name(request)}"
    opened: list[EtcdMetadataStore] = []

    def make() -> EtcdMetadataStore:
        store = EtcdMetadataStore(url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_conflicting_commits_one_wins(pair: Callable[[], EtcdMetadataStore]) -> None:
    a, b = pair(), pair()
    with pytest.raises(MetadataConflict) as exc, a.transaction() as ta:
        version = ta.topology_version()
        ta.put_shard(ShardRecord("from-a", "h", 1))
        ta.set_meta("topology_version", str(version + 1))
        with b.transaction() as tb:  # another config server commits in between
            tb.bump_topology_version()
    assert exc.value.code == ErrorCode.WRITE_CONFLICT
    with a.snapshot() as tx:  # nothing of a's transaction landed; a sees b's change
        assert tx.get_shard("from-a") is None
        assert tx.topology_version() == 1


def test_range_reads_and_missing_keys_are_guarded(
    pair: Callable[[], EtcdMetadataStore],
) -> None:
    a, b = pair(), pair()
    with b.transaction() as tb:
        tb.put_shard(ShardRecord("s0", "h", 1))
        tb.put_shard(ShardRecord("s1", "h", 2))

    def race(read: Callable[[Any], Any], change: Callable[[Any], None]) -> None:
        a.sync()
        with pytest.raises(MetadataConflict), a.transaction() as ta:
            read(ta)
            ta.put_database(DatabaseRecord("db", "s0"))  # a write elsewhere
            with b.transaction() as tb:
                change(tb)

    race(lambda t: t.list_shards(), lambda t: t.delete_shard("s1"))  # a row vanished
    race(lambda t: t.list_shards(), lambda t: t.put_shard(ShardRecord("s2", "h", 3)))
    race(lambda t: t.get_shard("s9"), lambda t: t.put_shard(ShardRecord("s9", "h", 9)))
    race(lambda t: t.get_shard("s0"), lambda t: t.put_shard(ShardRecord("s0", "h", 7)))
    race(lambda t: t.get_chunk("nope"), lambda t: t.insert_chunks([chunk("x", 1)]))
    # disjoint reads and writes do not conflict
    a.sync()
    with a.transaction() as ta:
        assert ta.get_shard("s0") == ShardRecord("s0", "h", 7)
        ta.put_database(DatabaseRecord("db", "s0"))
        with b.transaction() as tb:
            tb.put_shard(ShardRecord("s3", "h", 4))
    b.sync()
    with b.snapshot() as tx:
        assert tx.get_database("db") == DatabaseRecord("db", "s0")


def test_counters_stay_monotonic_under_concurrent_servers(
    pair: Callable[[], EtcdMetadataStore],
) -> None:
    stores = [pair(), pair()]
    seen: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    @retry_conflicts
    def bump(store: EtcdMetadataStore) -> int:
        with store.transaction() as tx:
            return tx.bump_topology_version()

    def worker(i: int) -> None:
        try:
            for _ in range(25):
                seen[i].append(bump(stores[i]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for values in seen:
        assert values == sorted(values)  # each server sees its bumps go up
    assert sorted(seen[0] + seen[1]) == list(range(1, 51))  # no value handed out twice
    with stores[0].snapshot() as tx:
        assert tx.topology_version() == 50


def test_concurrent_splits_of_one_chunk(pair: Callable[[], EtcdMetadataStore]) -> None:
    a, b = pair(), pair()
    cat_a, cat_b = Catalog(a), Catalog(b)
    cat_a.add_shard("s0", "127.0.0.1", 1000)
    _, (c,) = cat_a.shard_collection("db", "c", ["x"], "RANGE")
    b.sync()
    # b's split commits while a's transaction for the same chunk is open: a's commit
    # fails, and the retry finds the chunk gone
    original = type(a).transaction
    done: list[bool] = []

    def transaction_then_race(self: EtcdMetadataStore) -> Any:
        if self is a and not done:
            done.append(True)
            cat_b.split_chunk(c.chunk_id, {"x": 10})
        return original(self)

    type(a).transaction = transaction_then_race  # type: ignore[method-assign]
    try:
        with pytest.raises(LauraError) as exc:
            cat_a.split_chunk(c.chunk_id, {"x": 20})
    finally:
        type(a).transaction = original  # type: ignore[method-assign]
    assert exc.value.code == ErrorCode.CHUNK_NOT_FOUND
    chunks = cat_a.list_chunks("db.c")
    assert [bson.decode(ch.min_key)["x"] for ch in chunks[1:]] == [10]
    assert len(chunks) == 2


def test_fence_refuses_a_deposed_leader(
    pair: Callable[[], EtcdMetadataStore], etcd_server: LocalEtcd
) -> None:
    store = pair()
    key = store.spec.root + b"test-leader"
    kv = rpc.KVStub(grpc.insecure_channel(etcd_server.endpoint))
    put = kv.Put(rpc.PutRequest(key=key, value=b"me"), timeout=5)
    store.set_fence(key, put.header.revision)
    with store.transaction() as tx:
        tx.set_meta("x", "1")
    kv.DeleteRange(rpc.DeleteRangeRequest(key=key), timeout=5)
    kv.Put(rpc.PutRequest(key=key, value=b"someone else"), timeout=5)
    with pytest.raises(LauraError) as exc, store.transaction() as tx:
        tx.set_meta("x", "2")
    assert exc.value.code == ErrorCode.NOT_WRITABLE_PRIMARY
    store.set_fence(None)
    with store.snapshot() as tx:
        assert tx.get_meta("x") == "1"


# ---------------------------------------------------------------------- limits


def chunk(chunk_id: str, i: int, ns: str = "db.c", shard: str = "s0") -> ChunkRecord:
    lo = bson.encode({"x": i})
    return ChunkRecord(
        chunk_id, ns, lo, bson.encode({"x": i + 1}), i.to_bytes(8, "big"), shard, 1, i
    )


def test_one_hundred_thousand_chunks(pair: Callable[[], EtcdMetadataStore]) -> None:
    store, other = pair(), pair()
    catalog = Catalog(store)
    catalog.add_shard("s0", "127.0.0.1", 1000)
    catalog.add_shard("s1", "127.0.0.1", 1001)
    catalog.shard_collection("db", "c", ["x"], "HASH", initial_chunks=8192)  # one Txn
    assert len(catalog.list_chunks("db.c")) == 8192
    total = 100_000
    for start in range(0, total, 8192):  # as many chunks as 100,000 splits would make
        with store.transaction() as tx:
            tx.insert_chunks(
                [chunk(f"k{i}", i, "db.k") for i in range(start, min(start + 8192, total))]
            )
    other.sync()
    assert len(Catalog(other).list_chunks("db.k")) == total
    # a split and a migration-style commit rewrite one page each
    catalog.store.sync()
    first = catalog.list_chunks("db.c")[0]
    point = {"x": bson.decode(first.max_key)["x"] - 1000}
    left, _ = catalog.split_chunk(first.chunk_id, point)
    with store.transaction() as tx:
        moved = tx.get_chunk("k99999")
        assert moved is not None
        major, minor = tx.collection_version("db.k")
        assert (major, minor) == (1, total - 1)
        tx.put_chunk(ChunkRecord(**{**moved.__dict__, "shard_id": "s1", "major": 2, "minor": 0}))
    with store.snapshot() as tx:
        assert tx.collection_version("db.k") == (2, 0)
        assert [c.chunk_id for c in tx.list_chunks("db.k", shard_id="s1")] == ["k99999"]
        assert tx.get_chunk(left.chunk_id) == left
    # dropping it is one range delete
    with store.transaction() as tx:
        assert tx.delete_chunks("db.k") == total
        assert tx.list_chunks("db.k") == []
    assert catalog.list_chunks("db.k") == [] and len(catalog.list_chunks("db.c")) == 8193


def test_pages_are_cut_and_oversized_transactions_refused(
    pair: Callable[[], EtcdMetadataStore],
) -> None:
    store = pair()
    with store.transaction() as tx:
        tx.insert_chunks([chunk(f"c{i}", i) for i in range(PAGE_MAX)])
    page_keys = lambda: [  # noqa: E731
        k for k in store._view.table("chunks") if k.startswith(store.prefix + b"chunks/")
    ]
    assert len(page_keys()) == 2  # PAGE_TARGET each
    for i in range(PAGE_MAX):  # growing one page (as splits do) cuts it in two
        with store.transaction() as tx:
            tx.insert_chunks([chunk(f"d{i}", PAGE_MAX + i)])
    assert len(page_keys()) >= 3
    with store.snapshot() as tx:
        assert len(tx.list_chunks("db.c")) == 2 * PAGE_MAX
    with pytest.raises(LauraError) as exc, store.transaction() as tx:
        tx.insert_chunks([chunk(f"e{i}", 10**6 + i, "db.e") for i in range(130 * 256)])
    assert exc.value.code == ErrorCode.TRANSACTION_TOO_LARGE
    with store.snapshot() as tx:
        assert tx.list_chunks("db.e") == []
