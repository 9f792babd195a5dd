"""Transactions at the router (validation, targeting, per-shard requests, precondition
summation, recorded results/reasons) and the client's transaction program (retry rule),
all without a server."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.objectid import ObjectId

from lauradb.client.errors import (
    OperationFailure,
    ServerUnavailable,
    TransactionAborted,
    from_error_proto,
)
from lauradb.client.ops import Call, Pause
from lauradb.client.transaction import _Builder, _Ops, execute
from lauradb.cluster import common_pb2, error_pb2, transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import ShardKeyPattern
from router.routing_table import RoutingTable, ShardAddress
from router.txn_plan import (
    MAX_TXN_BYTES,
    TxnSettings,
    check_preconditions,
    decode_results,
    encode_results,
    error_from_reason,
    merge_results,
    reason_of,
    shard_operations,
    target,
    validate,
)

Op = transaction_pb2.TransactionOperation
Req = transaction_pb2.ExecuteTransactionRequest
Result = transaction_pb2.TransactionOperationResult
SHARDS = {s: ShardAddress(s, s, "127.0.0.1", 1000 + i) for i, s in enumerate(("s0", "s1", "s2"))}


def enc(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def ranged_table(collection: str = "r") -> RoutingTable:
    """``k`` ranged: (-inf, 10) on s0, [10, 20) on s1, [20, +inf) on s2."""
    pattern = ShardKeyPattern(["k"])
    lo, hi = pattern.global_min(), pattern.global_max()
    chunks = [
        Chunk("c0", lo, {"k": 10}, "s0", 1, 0),
        Chunk("c1", {"k": 10}, {"k": 20}, "s1", 1, 1),
        Chunk("c2", {"k": 20}, hi, "s2", 1, 2),
    ]
    return RoutingTable("db", collection, True, "s0", dict(SHARDS), epoch="e1", version=3,
                        pattern=pattern, chunk_map=ChunkMap(pattern, chunks))  # fmt: skip


def unsharded_table(collection: str = "u") -> RoutingTable:
    return RoutingTable("db", collection, False, "s1", dict(SHARDS))


def update_op(coll: str, q: dict[str, Any], u: dict[str, Any], **kw: Any) -> Op:
    return Op(database="db", collection=coll, op_type=common_pb2.UPDATE, filter=enc(q),
              update=enc(u), **kw)  # fmt: skip


def insert_op(coll: str, doc: dict[str, Any]) -> Op:
    return Op(database="db", collection=coll, op_type=common_pb2.INSERT, document=enc(doc))


def read_op(coll: str, q: dict[str, Any], **kw: Any) -> Op:
    return Op(database="db", collection=coll, op_type=common_pb2.READ, filter=enc(q), **kw)


def code_of(excinfo: pytest.ExceptionInfo[LauraError]) -> ErrorCode:
    return excinfo.value.code


# ============================================================================ validation


def test_validate_defaults_and_generated_id() -> None:
    plan = validate(Req(operations=[insert_op("r", {"_id": 1, "k": 1})]), TxnSettings())
    assert plan.timeout_ms == 10_000 and plan.generated_id and len(plan.txn_id) == 32
    plan2 = validate(Req(txn_id="t1", timeout_ms=50, operations=[insert_op("r", {"k": 1})]),
                     TxnSettings(default_timeout_ms=7))  # fmt: skip
    assert plan2.txn_id == "t1" and plan2.timeout_ms == 50 and not plan2.generated_id
    # An INSERT without _id gets an ObjectId first.
    doc = bson.decode(plan2.ops[0].data)
    assert list(doc) == ["_id", "k"] and isinstance(doc["_id"], ObjectId)


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (Req(), ErrorCode.BAD_VALUE),
        (Req(operations=[insert_op("r", {"k": 1})] * 4), ErrorCode.TRANSACTION_TOO_LARGE),
        (Req(operations=[insert_op("r", {"k": 1})], timeout_ms=0), ErrorCode.BAD_VALUE),
        (Req(operations=[insert_op("r", {"k": 1})], timeout_ms=-5), ErrorCode.BAD_VALUE),
        (Req(operations=[Op(database="db", collection="r", op_type=common_pb2.CREATE_INDEX)]),
         ErrorCode.BAD_VALUE),
        (Req(operations=[Op(database="db", collection="r", op_type=common_pb2.INSERT,
                            document=b"\x07\x00\x00\x00\x00")]), ErrorCode.INVALID_BSON),
        (Req(operations=[Op(database="db", collection="r", op_type=common_pb2.UPDATE,
                            filter=enc({}))]), ErrorCode.FAILED_TO_PARSE),
        (Req(operations=[update_op("r", {"k": {"$bogus": 1}}, {"$set": {"a": 1}})]),
         ErrorCode.UNKNOWN_OPERATOR),
        (Req(operations=[update_op("r", {}, {"$nope": {"a": 1}})]), ErrorCode.FAILED_TO_PARSE),
        (Req(operations=[Op(database="", collection="r", op_type=common_pb2.READ)]),
         ErrorCode.INVALID_NAMESPACE),
        (Req(operations=[read_op("r", {}, upsert=True)]), ErrorCode.BAD_VALUE),
        (Req(operations=[read_op("r", {}, expect_matched=-1)]), ErrorCode.BAD_VALUE),
        (Req(operations=[Op(database="db", collection="r", op_type=common_pb2.INSERT,
                            document=enc({"a": 1}), expect_matched=1)]), ErrorCode.BAD_VALUE),
        (Req(txn_id="x" * 500, operations=[read_op("r", {})]), ErrorCode.BAD_VALUE),
    ],
)  # fmt: skip
def test_validate_rejects(req: Any, code: ErrorCode) -> None:
    with pytest.raises(LauraError) as excinfo:
        validate(req, TxnSettings(max_operations=3))
    assert code_of(excinfo) == code


def test_validate_names_the_failed_operation() -> None:
    req = Req(operations=[read_op("r", {}), update_op("r", {}, {"$bad": {"a": 1}})])
    with pytest.raises(LauraError) as excinfo:
        validate(req, TxnSettings())
    assert excinfo.value.details["failed_operation"] == 1
    assert "operation 1" in excinfo.value.message


def test_validate_total_bytes() -> None:
    big = enc({"pad": "x" * (MAX_TXN_BYTES // 2)})
    ops = [Op(database="db", collection="r", op_type=common_pb2.INSERT, document=big)] * 2
    with pytest.raises(LauraError) as excinfo:
        validate(Req(operations=ops), TxnSettings())
    assert code_of(excinfo) == ErrorCode.TRANSACTION_TOO_LARGE


def test_shard_data_shapes() -> None:
    plan = validate(Req(operations=[
        update_op("r", {"k": 1}, {"$set": {"a.$[x]": 1}}, multi=True, upsert=True,
                  array_filters=[enc({"x": 1})]),
        Op(database="db", collection="r", op_type=common_pb2.DELETE, filter=enc({"k": 2})),
        Op(database="db", collection="r", op_type=common_pb2.DELETE, multi=True),
        read_op("r", {"k": 3}),
    ]), TxnSettings())  # fmt: skip
    up, d1, dm, rd = (bson.decode(op.data) for op in plan.ops)
    assert up == {"q": {"k": 1}, "u": {"$set": {"a.$[x]": 1}}, "multi": True, "upsert": True,
                  "arrayFilters": [{"x": 1}]}  # fmt: skip
    assert d1 == {"q": {"k": 2}, "limit": 1}
    assert dm == {"q": {}, "limit": 0}
    assert rd == {"q": {"k": 3}}


def test_fingerprint_depends_on_operations_only() -> None:
    a = validate(Req(txn_id="a", timeout_ms=5, operations=[read_op("r", {"k": 1})]), TxnSettings())
    b = validate(Req(txn_id="b", operations=[read_op("r", {"k": 1})]), TxnSettings())
    c = validate(Req(txn_id="a", operations=[read_op("r", {"k": 2})]), TxnSettings())
    assert a.fingerprint == b.fingerprint != c.fingerprint


# ============================================================================ targeting


def _planned(*ops: Op) -> Any:
    plan = validate(Req(txn_id="t", operations=list(ops)), TxnSettings())
    target(plan, {"db.r": ranged_table(), "db.u": unsharded_table()})
    return plan


def test_targeting_and_participants() -> None:
    plan = _planned(
        update_op("r", {"k": 15}, {"$inc": {"n": 1}}),  # s1
        insert_op("r", {"_id": 1, "k": 25}),  # s2
        insert_op("u", {"_id": 1}),  # unsharded: primary s1
        read_op("r", {"x": 1}),  # no shard key: every owner
        update_op("r", {"k": {"$lt": 5}}, {"$set": {"a": 1}}, multi=True),  # s0
    )
    assert [op.shards for op in plan.ops] == [["s1"], ["s2"], ["s1"], ["s0", "s1", "s2"], ["s0"]]
    assert plan.participants() == ["s1", "s0", "s2"]  # the first operation's shard first


def test_upsert_needs_the_shard_key() -> None:
    with pytest.raises(LauraError) as excinfo:
        _planned(read_op("r", {}), update_op("r", {"x": 1}, {"$set": {"a": 1}}, upsert=True))
    assert code_of(excinfo) == ErrorCode.SHARD_KEY_NOT_FOUND
    assert excinfo.value.details["failed_operation"] == 1
    plan = _planned(update_op("r", {"k": 3}, {"$set": {"a": 1}}, upsert=True))
    assert plan.ops[0].shards == ["s0"]


def test_shard_operations_carry_versions_and_one_phase_expectations() -> None:
    plan = _planned(update_op("r", {"k": 1}, {"$inc": {"n": 1}}, expect_matched=1),
                    read_op("r", {"k": 2}))  # fmt: skip
    tables = {"db.r": ranged_table(), "db.u": unsharded_table()}
    one = shard_operations(plan, tables, one_phase=True)
    assert list(one) == ["s0"] and one["s0"].indexes == [0, 1]
    first = one["s0"].operations[0]
    assert first.has_expected and first.expected_matched == 1
    assert first.version.epoch == "e1" and first.version.major == 1
    assert not one["s0"].operations[1].has_expected
    two = shard_operations(plan, tables, one_phase=False)
    assert not two["s0"].operations[0].has_expected  # the router checks the sum itself


def test_unsharded_ops_carry_the_unsharded_version() -> None:
    plan = _planned(insert_op("u", {"_id": 5}))
    sops = shard_operations(plan, {"db.r": ranged_table(), "db.u": unsharded_table()}, True)
    assert sops["s1"].operations[0].version.unsharded


# ============================================================================ results


def _scatter_plan(expect: int | None = None, multi: bool = True) -> Any:
    kw: dict[str, Any] = {"multi": multi}
    if expect is not None:
        kw["expect_matched"] = expect
    return _planned(
        update_op("r", {"k": 15}, {"$inc": {"n": 1}}),
        update_op("r", {"x": 1}, {"$set": {"y": 1}}, **kw),  # every shard
    )


def _answers(plan: Any, matched: dict[str, int]) -> list[Any]:
    by = shard_operations(plan, {"db.r": ranged_table()}, one_phase=False)
    out = []
    for shard, sops in by.items():
        results = []
        for index in sops.indexes:
            m = 1 if index == 0 else matched.get(shard, 0)
            results.append(Result(matched=m, modified=m))
        out.append((sops, results))
    return out


def test_merge_sums_over_shards() -> None:
    plan = _scatter_plan()
    answers = _answers(plan, {"s0": 2, "s1": 0, "s2": 3})
    merged = merge_results(len(plan.ops), answers)
    assert [(r.matched, r.modified) for r in merged] == [(1, 1), (5, 5)]


def test_merge_concatenates_read_documents() -> None:
    plan = _planned(read_op("r", {"x": 1}))
    by = shard_operations(plan, {"db.r": ranged_table()}, one_phase=False)
    answers = [(sops, [Result(matched=1, documents=[enc({"_id": s})])]) for s, sops in by.items()]
    merged = merge_results(1, answers)
    assert [bson.decode(d)["_id"] for d in merged[0].documents] == ["s0", "s1", "s2"]


def test_merge_rejects_a_short_answer() -> None:
    plan = _scatter_plan()
    sops = shard_operations(plan, {"db.r": ranged_table()}, one_phase=False)["s1"]
    with pytest.raises(LauraError):
        merge_results(2, [(sops, [Result()])])


@pytest.mark.parametrize(("expect", "ok"), [(5, True), (4, False), (0, False)])
def test_preconditions_use_the_summed_matches(expect: int, ok: bool) -> None:
    plan = _scatter_plan(expect)
    answers = _answers(plan, {"s0": 2, "s1": 0, "s2": 3})
    err = check_preconditions(plan, merge_results(2, answers), answers)
    if ok:
        assert err is None
    else:
        assert err is not None and err.code == ErrorCode.TRANSACTION_PRECONDITION_FAILED
        assert err.details["failed_operation"] == 1 and err.details["matched"] == 5
        assert err.details["expected"] == expect and err.details["txn_id"] == "t"


def test_single_document_op_matching_on_two_shards_aborts() -> None:
    plan = _scatter_plan(multi=False)
    one = _answers(plan, {"s2": 1})
    assert check_preconditions(plan, merge_results(2, one), one) is None
    two = _answers(plan, {"s0": 1, "s2": 1})
    err = check_preconditions(plan, merge_results(2, two), two)
    assert err is not None and err.code == ErrorCode.BAD_VALUE
    assert err.details["failed_operation"] == 1


def test_results_round_trip() -> None:
    results = [Result(matched=2, modified=1), Result(inserted=1),
               Result(matched=1, documents=[enc({"a": 1})]), Result(upserted_id=enc({"_id": 3}))]  # fmt: skip
    assert decode_results(encode_results(results)) == results
    assert decode_results(b"") == []


def test_reason_round_trip() -> None:
    err = LauraError(ErrorCode.DUPLICATE_KEY, "operation 2 on shard s1: dup", {"failed_operation": 2})
    back = error_from_reason(reason_of(err), "t9")
    assert back.code == ErrorCode.DUPLICATE_KEY and back.message == "operation 2 on shard s1: dup"
    assert back.details == {"txn_id": "t9", "failed_operation": 2}
    presumed = error_from_reason("presumed abort: participant timed out", "t9")
    assert presumed.code == ErrorCode.NO_SUCH_TRANSACTION
    assert "presumed abort" in presumed.message


# ============================================================================ client program


class _Tx(_Builder):
    def __init__(self) -> None:
        self._ops = _Ops(CodecOptions())
        self._state = "open"


def _run(program: Any, answers: list[Any]) -> tuple[Any, list[Any]]:
    """Drive a program: each Call gets the next answer (an exception is thrown in)."""
    seen: list[Any] = []
    try:
        call = next(program)
        while True:
            seen.append(call)
            if isinstance(call, Pause):
                call = program.send(None)
                continue
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                call = program.throw(answer)
            else:
                call = program.send(answer)
    except StopIteration as stop:
        return stop.value, seen


def _err(code: ErrorCode, **details: Any) -> Any:
    proto = error_pb2.Error(code=int(code), code_name=code.name, message="boom",
                            details=bson.encode(details) if details else b"")  # fmt: skip
    return from_error_proto(proto, write=True)


def _ok(n: int) -> transaction_pb2.ExecuteTransactionResponse:
    return transaction_pb2.ExecuteTransactionResponse(
        state=transaction_pb2.COMMITTED, participants=2,
        results=[Result(inserted=1), Result(matched=1, modified=1),
                 Result(matched=2, documents=[enc({"_id": 1}), enc({"_id": 2})])][:n],
    )  # fmt: skip


def _tx() -> _Tx:
    tx = _Tx()
    tx.insert_one("db.c", {"_id": 7})
    tx.update_one("db.c", {"_id": 7}, {"$set": {"a": 1}}, expect_matched=1)
    tx.find("db.c", {})
    return tx


def _program(tx: _Tx, **kw: Any) -> Any:
    kw.setdefault("timeout_ms", 60_000)
    kw.setdefault("retries", None)
    return execute(tx._ops, txn_id="base", write_concern=None, **kw)


def test_client_collects_and_parses_results() -> None:
    tx = _tx()
    result, calls = _run(_program(tx), [_ok(3)])
    (call,) = calls
    assert isinstance(call, Call) and call.method == "ExecuteTransaction" and call.retryable
    req = call.request
    assert req.txn_id == "base" and req.timeout_ms == 60_000 and len(req.operations) == 3
    assert req.operations[1].expect_matched == 1 and not req.operations[1].multi
    assert result[0].inserted_id == 7
    assert result[1].matched_count == 1 and result[1].modified_count == 1
    assert result[2] == [{"_id": 1}, {"_id": 2}]
    assert result.participants == 2 and len(result) == 3


def test_client_retries_transient_aborts_with_new_ids() -> None:
    result, calls = _run(
        _program(_tx()),
        [_err(ErrorCode.WRITE_CONFLICT), _err(ErrorCode.STALE_CONFIG), _ok(3)],
    )
    ids = [c.request.txn_id for c in calls if isinstance(c, Call)]
    assert ids == ["base", "base.1", "base.2"]
    assert any(isinstance(c, Pause) for c in calls)
    assert len(result) == 3


def test_client_resends_the_same_id_when_the_outcome_is_unknown() -> None:
    lost = ServerUnavailable("router unavailable", details={"grpcStatus": "UNAVAILABLE"})
    unknown = _err(ErrorCode.SHARD_UNAVAILABLE, outcome="unknown")
    _, calls = _run(_program(_tx()), [lost, unknown, _ok(3)])
    assert [c.request.txn_id for c in calls if isinstance(c, Call)] == ["base"] * 3


def test_client_raises_permanent_aborts() -> None:
    with pytest.raises(TransactionAborted) as excinfo:
        _run(_program(_tx()), [_err(ErrorCode.TRANSACTION_PRECONDITION_FAILED,
                                    failed_operation=1, txn_id="base")])  # fmt: skip
    err = excinfo.value
    assert isinstance(err, OperationFailure)
    assert err.code == ErrorCode.TRANSACTION_PRECONDITION_FAILED
    assert err.failed_operation == 1 and err.txn_id == "base"


def test_client_retry_budget() -> None:
    with pytest.raises(TransactionAborted) as excinfo:
        _run(_program(_tx(), retries=1),
             [_err(ErrorCode.WRITE_CONFLICT), _err(ErrorCode.WRITE_CONFLICT)])  # fmt: skip
    assert excinfo.value.code == ErrorCode.WRITE_CONFLICT and excinfo.value.txn_id == "base.1"


def test_client_argument_checks() -> None:
    tx = _Tx()
    with pytest.raises(ValueError):
        tx.update_one("db.c", {}, {"a": 1})  # not an operator update
    with pytest.raises(ValueError):
        tx.delete_one("db.c", {}, expect_matched=-1)
    with pytest.raises(TypeError):
        tx.find(42, {})
    tx.replace_one("db.c", {"_id": 1}, {"a": 2})
    tx.delete_many("db.c", {"a": 1}, expect_matched=0)
    assert [o.op_type for o in tx._ops.operations] == [common_pb2.UPDATE, common_pb2.DELETE]
    assert tx._ops.operations[1].HasField("expect_matched") and tx._ops.operations[1].multi
