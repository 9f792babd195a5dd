"""The oplog: entries written with every storage mutation, applied on followers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import encode_value
from lauradb.cluster import common_pb2, replication_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.index_keys import IndexDef
from shard_stub.oplog import Oplog, OplogPosition
from shard_stub.ownership import KeyRange
from shard_stub.retry_records import RetryBatch, RetryStatement
from shard_stub.storage import ShardStorage

NS = "db.c"
NS2 = "db.d"
SK = ShardKeyPattern(["sk"], "range")
EVERY_KEY = KeyRange(b"", b"\xff" * 16, True)


def enc(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def open_storage(path: Path, *, replicated: bool = True, term: int = 1) -> ShardStorage:
    s = ShardStorage(path)
    s.open()
    if replicated:
        s.oplog = Oplog(s)
        s.oplog_term = term
    return s


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path / "p")
    yield s
    s.close()


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path / "f")
    s.is_primary = False
    yield s
    s.close()


def oplog_of(s: ShardStorage) -> Oplog:
    assert s.oplog is not None
    return s.oplog


def entries(s: ShardStorage, start: int = 1) -> list[replication_pb2.OplogEntry]:
    return oplog_of(s).read(start, max_entries=100_000)


def kinds(es: list[replication_pb2.OplogEntry]) -> list[str]:
    return [e.kind or common_pb2.OperationType.Name(e.op_type) for e in es]


def replicate(src: ShardStorage, dst: ShardStorage, through: int | None = None) -> int:
    """Copy the source's new entries to ``dst`` (in pieces) and apply them."""
    log = oplog_of(dst)
    while True:
        batch = oplog_of(src).read(log.last().op_id + 1, max_entries=7)
        if not batch:
            break
        log.append(batch)
    return log.apply_through(log.last().op_id if through is None else through)


def state(s: ShardStorage) -> dict[str, Any]:
    """Everything that must be equal on every member: documents (with shard keys),
    catalog, indexes (definitions and entries) and retry records."""
    out: dict[str, Any] = {}
    conn = s._reader()
    for ns in s.namespaces():
        c = s.collection(ns)
        assert c is not None
        docs = conn.execute(f"SELECT id_key, shard_key, doc FROM {c.table} ORDER BY id_key").fetchall()
        indexes = sorted(
            (ix.name, ix.fields, ix.unique, ix.sparse, ix.multikey,
             conn.execute(f"SELECT index_key, id_key, aux FROM {ix.table} ORDER BY 1, 2").fetchall())
            for ix in c.indexes
        )
        out[ns] = (c.pattern, docs, indexes)
    out["$retry"] = conn.execute(
        "SELECT retry_id, stmt_id, ns, kind, fingerprint, created_at, id_key, shard_key, outcome "
        "FROM retry_records ORDER BY retry_id, stmt_id"
    ).fetchall()
    # the durable catalog equals the in-memory one
    reopened_ns = sorted(r[0] for r in conn.execute("SELECT ns FROM catalog"))
    assert reopened_ns == s.namespaces()
    return out


# ---------------------------------------------------------------------- standalone


def test_standalone_storage_writes_no_oplog(tmp_path: Path) -> None:
    s = open_storage(tmp_path, replicated=False)
    try:
        r = s.insert(NS, [enc({"_id": 1})])
        assert r.op_id == 0
        assert s.update(NS, {"_id": 1}, {"$set": {"a": 1}}).op_id == 0
        n = s.delete(NS, {"_id": 1})
        assert n == 1 and n.op_id == 0
        s.create_index(NS, IndexDef("a_1", (("a", 1),)))
        assert s.last_write_op_id() == 0
        tables = {r[0] for r in s._reader().execute("SELECT name FROM sqlite_master")}
        assert "oplog" not in tables and "oplog_state" not in tables
    finally:
        s.close()


# ---------------------------------------------------------------------- primary writes


def test_every_mutation_logs_entries_in_its_transaction(primary: ShardStorage) -> None:
    log = oplog_of(primary)
    commits: list[int] = []
    primary.on_commit = commits.append
    r = primary.insert(NS, [enc({"_id": 1, "a": 1}), enc({"_id": 2, "a": 2})])
    assert kinds(entries(primary)) == ["CREATE_COLLECTION", "INSERT", "INSERT"]
    assert r.op_id == 3 and commits == [3] and log.last() == OplogPosition(3, 1)
    assert log.applied == 3

    u = primary.update(NS, {"_id": 1}, {"$set": {"a": 5}})
    e = entries(primary, 4)
    assert kinds(e) == ["UPDATE"] and u.op_id == 4
    assert bson.decode(e[0].document) == {"_id": 1, "a": 5}
    assert bson.decode(e[0].query) == {"_id": 1}
    assert e[0].namespace == NS and e[0].term == 1 and e[0].timestamp > 0

    up = primary.update(NS, {"_id": 9}, {"$set": {"a": 9}}, upsert=True)
    assert up.upserted and kinds(entries(primary, 5)) == ["INSERT"] and up.op_id == 5

    d = primary.delete(NS, {"_id": 2})
    assert d == 1 and d.op_id == 6
    assert bson.decode(entries(primary, 6)[0].query) == {"_id": 2}

    assert primary.create_index(NS, IndexDef("a_1", (("a", 1),)))
    assert kinds(entries(primary, 7)) == ["CREATE_INDEX"] and primary.last_write_op_id() == 7
    assert not primary.create_index(NS, IndexDef("a_1", (("a", 1),)))
    assert primary.last_write_op_id() == 0 and log.last().op_id == 7  # nothing happened

    primary.set_key_pattern(NS, SK)
    e = entries(primary, 8)
    assert kinds(e) == ["CREATE_COLLECTION"]
    assert bson.decode(e[0].document)["key_strategy"] == "range"

    primary.upsert_documents(NS, [enc({"_id": 20, "sk": 1}), enc({"_id": 21, "sk": 2})], EVERY_KEY)
    assert kinds(entries(primary, 9)) == ["INSERT", "INSERT"]
    primary.upsert_documents(NS, [enc({"_id": 20, "sk": 1})], EVERY_KEY)  # unchanged: nothing
    assert log.last().op_id == 10
    assert primary.delete_ids(NS, [encode_value(20)], EVERY_KEY) == 1
    assert kinds(entries(primary, 11)) == ["DELETE"]
    assert primary.delete_range(NS, EVERY_KEY) == 3
    assert kinds(entries(primary, 12)) == ["DELETE"] * 3
    assert primary.count(NS) == 0

    assert primary.drop_index(NS, "a_1") == ["a_1"]
    assert kinds(entries(primary, 15)) == ["DROP_INDEX"]
    primary.ensure_collection(NS2)
    assert kinds(entries(primary, 16)) == ["CREATE_COLLECTION"]
    assert primary.drop_collection(NS)
    assert kinds(entries(primary, 17)) == ["DROP_COLLECTION"]
    primary.insert("db.e", [enc({"_id": 1})])
    assert sorted(primary.drop_database("db")) == [NS2, "db.e"]
    assert kinds(entries(primary, 20)) == ["DROP_COLLECTION", "DROP_COLLECTION"]
    assert commits[-1] == log.last().op_id == 21
    assert [e.op_id for e in entries(primary)] == list(range(1, 22))


def test_failed_writes_leave_no_entries(primary: ShardStorage) -> None:
    log = oplog_of(primary)
    primary.insert(NS, [enc({"_id": 1, "a": 1})])
    before = log.last()
    r = primary.insert(NS, [enc({"_id": 2}), enc({"_id": 1}), enc({"_id": 3})], ordered=True)
    assert r.inserted == 1 and r.errors[0].error.code == ErrorCode.DUPLICATE_KEY
    assert kinds(entries(primary, before.op_id + 1)) == ["INSERT"]
    assert bson.decode(entries(primary, before.op_id + 1)[0].document) == {"_id": 2}

    before = log.last()
    with pytest.raises(LauraError) as err:
        primary.update(NS, {}, {"$set": {"_id": 5}})
    assert err.value.code == ErrorCode.IMMUTABLE_FIELD
    primary.create_index(NS, IndexDef("a_1", (("a", 1),), unique=True))
    primary.insert(NS, [enc({"_id": 7, "b": 1}), enc({"_id": 8, "b": 1})])
    before = log.last()
    with pytest.raises(LauraError):  # unique violation: the whole update rolls back
        primary.update(NS, {}, {"$set": {"a": 1}}, multi=True)
    with pytest.raises(LauraError):  # unique violation among the existing documents
        primary.create_index(NS, IndexDef("b_1", (("b", 1),), unique=True))
    r = primary.insert(NS, [enc({"_id": [1]}), enc({"_id": 7})], ordered=False)
    assert r.inserted == 0 and len(r.errors) == 2 and r.op_id == 0
    assert log.last() == before
    assert primary.delete(NS, {"_id": 404}).op_id == 0


def test_retry_records_travel_with_their_write(primary: ShardStorage) -> None:
    r = primary.insert(NS, [enc({"_id": 1}), enc({"_id": 2})], retry=RetryBatch("r1", [0, 1], b"fp"))
    e = entries(primary)
    assert kinds(e) == ["CREATE_COLLECTION", "INSERT", "INSERT"]
    assert [(x.retry_id, x.stmt_id) for x in e[1].retry_records] == [("r1", 0)]
    assert [(x.retry_id, x.stmt_id) for x in e[2].retry_records] == [("r1", 1)]
    # a retry is answered from the record; its answer waits for the newest entry
    again = primary.insert(NS, [enc({"_id": 1}), enc({"_id": 2})], retry=RetryBatch("r1", [0, 1], b"fp"))
    assert again.retried == 2 and again.op_id == r.op_id == 3
    # an update that matches without modifying: a record-only entry
    primary.update(NS, {"_id": 1}, {"$unset": {"zz": 1}}, retry=RetryStatement("u1", 0, b"fp"))
    e = entries(primary, 4)
    assert kinds(e) == ["retry"] and e[0].retry_records[0].retry_id == "u1"
    d = primary.delete(NS, {"_id": 2}, retry=RetryStatement("d1", 0, b"fp"))
    e = entries(primary, 5)
    assert kinds(e) == ["DELETE"] and e[0].retry_records[0].retry_id == "d1"
    retried = RetryStatement("d1", 0, b"fp")
    assert primary.delete(NS, {"_id": 2}, retry=retried).op_id == d.op_id and retried.retried


def test_secondary_refuses_logged_writes_but_rekeys_locally(follower: ShardStorage) -> None:
    with pytest.raises(LauraError) as err:
        follower.insert(NS, [enc({"_id": 1})])
    assert err.value.code == ErrorCode.NOT_WRITABLE_PRIMARY
    assert follower.collection(NS) is None and oplog_of(follower).last().op_id == 0


def test_secondary_rekeys_locally_without_entries(
    primary: ShardStorage, follower: ShardStorage
) -> None:
    primary.insert(NS, [enc({"_id": i, "sk": i}) for i in range(5)])
    replicate(primary, follower)
    last = oplog_of(follower).last()
    assert follower.set_key_pattern(NS, SK) == 5  # a read on the secondary learnt the key
    assert oplog_of(follower).last() == last and follower.key_pattern(NS) == SK
    primary.set_key_pattern(NS, SK)
    primary.insert(NS, [enc({"_id": 9, "sk": 9})])
    replicate(primary, follower)
    assert state(follower) == state(primary)


def test_write_refused_while_the_log_tail_is_unapplied(primary: ShardStorage, follower: ShardStorage) -> None:
    primary.insert(NS, [enc({"_id": 1})])
    log = oplog_of(follower)
    log.append(entries(primary))
    follower.is_primary = True
    follower.oplog_term = 2
    with pytest.raises(LauraError) as err:
        follower.insert(NS, [enc({"_id": 2})])
    assert err.value.code == ErrorCode.ILLEGAL_OPERATION
    assert log.apply_through(log.last().op_id) == 2
    assert log.noop(2) == 3 and log.applied == 3
    assert follower.insert(NS, [enc({"_id": 2})]).op_id == 4
    assert log.term_at(4) == 2 and log.term_at(2) == 1


# ---------------------------------------------------------------------- follower


def test_replay_on_a_follower_gives_the_same_state(primary: ShardStorage, follower: ShardStorage) -> None:
    primary.create_index(NS, IndexDef("a_1", (("a", 1),)))
    primary.insert(NS, [enc({"_id": i, "a": [i, i + 1] if i % 3 == 0 else i, "sk": i}) for i in range(50)],
                   retry=RetryBatch("r", list(range(50)), b"x"))
    primary.set_key_pattern(NS, SK)
    primary.update(NS, {"a": {"$lt": 10}}, {"$inc": {"b": 1}}, multi=True)
    primary.delete(NS, {"_id": {"$gte": 40}}, multi=True)
    primary.store_retry_records([])
    primary.ensure_collection(NS2, SK)
    primary.insert(NS2, [enc({"_id": "x", "sk": 1})])
    primary.create_index(NS2, IndexDef("sk_1", (("sk", 1),), unique=True, sparse=True))
    log = oplog_of(follower)
    assert replicate(primary, follower, through=30) == 30
    assert log.last() == oplog_of(primary).last() and log.applied == 30
    replicate(primary, follower)
    assert state(follower) == state(primary)
    again = log.apply_through(10_000)  # nothing left: harmless
    assert again == oplog_of(primary).last().op_id
    assert state(follower) == state(primary)
    # applied, positions and data survive a restart
    path = follower.path.parent
    follower.close()
    reopened = open_storage(path)
    try:
        assert reopened.oplog is not None and reopened.oplog.applied == again
        assert reopened.oplog.last() == oplog_of(primary).last()
        assert state(reopened) == state(primary)
    finally:
        reopened.close()


def test_applying_an_entry_twice_is_harmless(primary: ShardStorage, follower: ShardStorage) -> None:
    primary.create_index(NS, IndexDef("a_1", (("a", 1),), unique=True))
    primary.insert(NS, [enc({"_id": 1, "a": 1}), enc({"_id": 2, "a": [2, 3]})])
    primary.update(NS, {"_id": 1}, {"$set": {"a": 4}})
    primary.delete(NS, {"_id": 2})
    replicate(primary, follower)
    with follower._wlock, follower._transaction(log=False) as conn:
        for e in entries(primary):
            follower._apply_entry(conn, e)
    assert state(follower) == state(primary)


def test_append_truncate_trim_and_terms(primary: ShardStorage, follower: ShardStorage) -> None:
    for i in range(10):
        primary.insert(NS, [enc({"_id": i})])
    log = oplog_of(follower)
    es = entries(primary)
    with pytest.raises(LauraError) as err:
        log.append(es[1:])
    assert err.value.code == ErrorCode.BAD_VALUE
    log.append(es)
    assert log.first_op_id() == 1 and log.last().op_id == 11
    log.apply_through(5)
    with pytest.raises(LauraError) as err:
        log.truncate_after(4)
    assert err.value.code == ErrorCode.ILLEGAL_OPERATION
    log.truncate_after(7)
    assert log.last() == OplogPosition(7, 1) and log.term_at(8) is None
    assert log.apply_through(100) == 7
    # terms must not go down
    bad = replication_pb2.OplogEntry(op_id=8, term=0, op_type=common_pb2.UNKNOWN_OP, kind="noop")
    with pytest.raises(LauraError):
        log.append([bad])
    assert log.trim(100) == 7  # capped at applied + 1: everything applied goes
    assert log.first_op_id() == 0 and log.base() == OplogPosition(7, 1)
    assert log.term_at(7) == 1 and log.term_at(6) is None and log.last() == OplogPosition(7, 1)
    with pytest.raises(LauraError) as err:
        log.read(5)
    assert err.value.code == ErrorCode.OPERATION_FAILED
    assert log.read(8) == []
    log.append(entries(primary, 8))
    assert log.first_op_id() == 8 and log.read(8)[0].op_id == 8
    assert log.apply_through(11) == 11
    assert state(follower) == state(primary)


def test_primary_trim_keeps_positions(primary: ShardStorage) -> None:
    for i in range(5):
        primary.insert(NS, [enc({"_id": i})])
    log = oplog_of(primary)
    assert log.trim(4) == 3
    assert log.first_op_id() == 4 and log.base() == OplogPosition(3, 1) and log.term_at(3) == 1
    primary.oplog_term = 3
    primary.insert(NS, [enc({"_id": 9})])
    assert log.last() == OplogPosition(7, 3) and log.term_at(7) == 3 and log.term_at(5) == 1
    primary.oplog_term = 2
    with pytest.raises(LauraError):  # a term older than the log's
        primary.insert(NS, [enc({"_id": 10})])


# ---------------------------------------------------------------------- property


ids_ = st.integers(0, 7)
vals = st.one_of(st.integers(0, 3), st.lists(st.integers(0, 3), max_size=2))
docs_ = st.fixed_dictionaries({"_id": ids_}, optional={"a": vals, "sk": st.integers(0, 5)})
nss = st.sampled_from([NS, NS2])

ops = st.one_of(
    st.tuples(st.just("insert"), nss, st.lists(docs_, min_size=1, max_size=4), st.booleans(),
              st.booleans()),
    st.tuples(st.just("update"), nss, ids_, vals, st.booleans(), st.booleans()),
    st.tuples(st.just("delete"), nss, st.integers(0, 3), st.booleans()),
    st.tuples(st.just("index"), nss, st.sampled_from(["a", "sk"]), st.booleans(), st.booleans()),
    st.tuples(st.just("drop_index"), nss, st.sampled_from(["a_1", "sk_1", "*"])),
    st.tuples(st.just("drop"), nss),
    st.tuples(st.just("rekey"), nss, st.booleans()),
    st.tuples(st.just("migrate"), nss, st.lists(docs_, max_size=3)),
    st.tuples(st.just("range_delete"), nss),
)


def run_op(s: ShardStorage, op: tuple[Any, ...], n: int) -> None:
    kind, ns = op[0], op[1]
    try:
        if kind == "insert":
            _, _, docs, ordered, retry = op
            s.insert(ns, [enc(d) for d in docs], ordered=ordered,
                     retry=RetryBatch(f"i{n}", list(range(len(docs))), b"f") if retry else None)
        elif kind == "update":
            _, _, key, val, upsert, retry = op
            s.update(ns, {"_id": key}, {"$set": {"a": val}}, upsert=upsert,
                     retry=RetryStatement(f"u{n}", 0, b"f") if retry else None)
        elif kind == "delete":
            _, _, val, multi = op
            s.delete(ns, {"a": val}, multi=multi)
        elif kind == "index":
            _, _, field, unique, sparse = op
            s.create_index(ns, IndexDef(f"{field}_1", ((field, 1),), unique, sparse))
        elif kind == "drop_index":
            s.drop_index(ns, op[2])
        elif kind == "drop":
            s.drop_collection(ns)
        elif kind == "rekey":
            s.ensure_collection(ns, SK if op[2] else None)
        elif kind == "migrate":
            s.upsert_documents(ns, [enc(d) for d in op[2]], EVERY_KEY)
        elif kind == "range_delete":
            s.delete_range(ns, KeyRange(encode_value(2), encode_value(4)))
    except LauraError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=25), st.integers(1, 25))
def test_property_follower_equals_primary(program: list[tuple[Any, ...]], cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = open_storage(Path(tmp) / "p")
        f = open_storage(Path(tmp) / "f")
        f.is_primary = False
        try:
            for n, op in enumerate(program):
                run_op(p, op, n)
                if n == cut:
                    replicate(p, f)  # catch up midway too
            replicate(p, f)
            assert state(f) == state(p)
            fl = oplog_of(f)
            assert fl.apply_through(fl.last().op_id) == oplog_of(p).last().op_id
            assert state(f) == state(p)
        finally:
            p.close()
            f.close()


# ---------------------------------------------------------------------- migration state


def test_migration_state_replicates_as_snapshots(
    primary: ShardStorage, follower: ShardStorage, tmp_path: Path
) -> None:
    from shard_stub.migration_range import MigrationRange
    from shard_stub.migration_store import MIGRATION_STATE, DonorRecord, MigrationStore

    stores = []
    for name, s in (("p", primary), ("f", follower)):
        store = MigrationStore(tmp_path / f"ms_{name}")
        store.open()
        stores.append(store)
        s.state_appliers[MIGRATION_STATE] = store.restore_dump
        s.state_sources[MIGRATION_STATE] = store.dump
    mine, theirs = stores
    mine.on_change = lambda raw: primary.log_state(MIGRATION_STATE, raw)
    try:
        r = MigrationRange.from_bounds(NS, SK, {"sk": 1}, {"sk": 10})
        mine.save_donor(DonorRecord("m1", r, "c1", "e1", "s1", "h:1", "cloning"))
        mine.set_donor_phase("m1", "committing")
        replicate(primary, follower)
        assert theirs.donors() == mine.donors() and theirs.donors()[0].phase == "committing"
        deletion = mine.donor_committed("m1", r, "e1")
        mine.add_range_deletion(r, "e1", "m2")
        replicate(primary, follower)
        assert theirs.donors() == []
        assert theirs.range_deletions() == mine.range_deletions()
        assert theirs.range_deletions()[0].deletion_id == deletion
        before = oplog_of(primary).last().op_id
        mine.drop_range_deletion(deletion)
        assert kinds(entries(primary, before + 1)) == [MIGRATION_STATE]
        replicate(primary, follower)
        assert theirs.range_deletions() == mine.range_deletions()
        assert len(theirs.range_deletions()) == 1
    finally:
        for store in stores:
            store.close()
