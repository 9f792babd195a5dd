"""Transactions at the router, the pure part: validation, targeting, per-shard
requests, and the merge of the participants' results (preconditions included).

``validate`` checks an ``ExecuteTransactionRequest`` before anything is sent to a
shard (bad input never prepares anything): 1 .. ``max_operations`` operations of
INSERT/UPDATE/DELETE/READ, at most 16 MiB of BSON in all, a positive timeout, valid
BSON (filters and updates compiled once here), and an ``_id`` added to an INSERT's
document that has none (as the normal insert path does).

``target`` places every operation with the normal write targeting: an INSERT by its
document's shard key, an UPDATE/DELETE/READ with shard-key equality on one shard,
otherwise on every shard owning chunks of the collection (each applies it to the
documents it owns); unsharded collections on the database's primary shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from lauradb.cluster import common_pb2, transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.query.update import compile_update
from router.insert_batching import prepare_documents
from router.namespaces import check_namespace, decode_field, decode_required
from router.routing_table import RoutingTable
from router.targets import target_filter
from router.writes import _require_upsert_target

__all__ = [
    "DEFAULT_MAX_OPERATIONS",
    "DEFAULT_TIMEOUT_MS",
    "MAX_TXN_BYTES",
    "MAX_TXN_ID_CHARS",
    "PlannedOp",
    "ShardOps",
    "TxnPlan",
    "TxnSettings",
    "check_preconditions",
    "decode_results",
    "encode_results",
    "error_from_reason",
    "fingerprint",
    "merge_results",
    "reason_of",
    "shard_operations",
    "target",
    "validate",
]

DEFAULT_MAX_OPERATIONS = 1000
DEFAULT_TIMEOUT_MS = 10_000
MAX_TXN_BYTES = 16 * 1024 * 1024
MAX_TXN_ID_CHARS = 200

_OP_NAMES: dict[int, str] = {
    common_pb2.INSERT: "INSERT",
    common_pb2.UPDATE: "UPDATE",
    common_pb2.DELETE: "DELETE",
    common_pb2.READ: "READ",
}
_EMPTY_DOC = RawBSONDocument(b"\x05\x00\x00\x00\x00")


@dataclasses.dataclass(frozen=True)
class TxnSettings:
    """The router's transaction limits (``--txn-max-operations``,
    ``--txn-default-timeout-ms``)."""

    max_operations: int = DEFAULT_MAX_OPERATIONS
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclasses.dataclass
class PlannedOp:
    """One operation of the transaction, validated; ``shards`` set by ``target``."""

    index: int
    database: str
    collection: str
    op_type: int
    data: bytes  # Operation.data as the shards take it
    filter: dict[str, Any]  # UPDATE / DELETE / READ (targeting)
    document: Mapping[str, Any] | None = None  # INSERT (its shard key)
    multi: bool = False
    upsert: bool = False
    expect_matched: int | None = None
    shards: list[str] = dataclasses.field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"

    @property
    def kind(self) -> str:
        return _OP_NAMES.get(self.op_type, str(self.op_type))


@dataclasses.dataclass
class TxnPlan:
    txn_id: str
    timeout_ms: int
    ops: list[PlannedOp]
    fingerprint: bytes
    generated_id: bool  # the router made the txn_id (the client sent none)

    @property
    def databases(self) -> list[str]:
        return sorted({op.database for op in self.ops})

    @property
    def namespaces(self) -> list[tuple[str, str]]:
        return sorted({(op.database, op.collection) for op in self.ops})

    def participants(self) -> list[str]:
        """Every shard involved; the first operation's first shard (the coordinator
        shard) first, then the others sorted."""
        if not self.ops or not self.ops[0].shards:
            return []
        first = self.ops[0].shards[0]
        rest = sorted({s for op in self.ops for s in op.shards} - {first})
        return [first, *rest]


def _op_error(index: int, err: LauraError) -> LauraError:
    details = dict(err.details)
    details["failed_operation"] = index
    return LauraError(err.code, f"operation {index}: {err.message}", details)


def _size(op: transaction_pb2.TransactionOperation) -> int:
    return (
        len(op.document) + len(op.filter) + len(op.update) + sum(len(a) for a in op.array_filters)
    )


def fingerprint(operations: Iterable[transaction_pb2.TransactionOperation]) -> bytes:
    """The digest of the transaction as the client sent it (a resend under the same
    txn_id must carry the same operations)."""
    h = hashlib.sha256()
    for op in operations:
        data = op.SerializeToString(deterministic=True)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def validate(req: transaction_pb2.ExecuteTransactionRequest, settings: TxnSettings) -> TxnPlan:
    """Check the request (see the module docstring); raises LauraError on bad input."""
    n = len(req.operations)
    if n == 0:
        raise LauraError(ErrorCode.BAD_VALUE, "a transaction needs at least one operation")
    if n > settings.max_operations:
        raise LauraError(
            ErrorCode.TRANSACTION_TOO_LARGE,
            f"a transaction may have at most {settings.max_operations} operations, not {n}",
            {"operations": n, "max_operations": settings.max_operations},
        )
    total = sum(_size(op) for op in req.operations)
    if total > MAX_TXN_BYTES:
        raise LauraError(
            ErrorCode.TRANSACTION_TOO_LARGE,
            f"a transaction may carry at most {MAX_TXN_BYTES} bytes of BSON, not {total}",
            {"bytes": total, "max_bytes": MAX_TXN_BYTES},
        )
    if req.HasField("timeout_ms"):
        if req.timeout_ms <= 0:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"timeout_ms must be positive, not {req.timeout_ms}"
            )
        timeout_ms = int(req.timeout_ms)
    else:
        timeout_ms = settings.default_timeout_ms
    txn_id = req.txn_id
    generated = not txn_id
    if generated:
        txn_id = uuid.uuid4().hex
    elif len(txn_id) > MAX_TXN_ID_CHARS or not txn_id.isprintable():
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"txn_id must be printable and at most {MAX_TXN_ID_CHARS} characters",
        )
    ops = []
    for i, op in enumerate(req.operations):
        try:
            ops.append(_plan_op(i, op))
        except LauraError as err:
            raise _op_error(i, err) from None
    return TxnPlan(txn_id, timeout_ms, ops, fingerprint(req.operations), generated)


def _plan_op(i: int, op: transaction_pb2.TransactionOperation) -> PlannedOp:
    check_namespace(op.database, op.collection)
    kind = op.op_type
    if kind not in _OP_NAMES:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"op_type must be INSERT, UPDATE, DELETE or READ, not {kind}",
        )
    expect: int | None = op.expect_matched if op.HasField("expect_matched") else None
    if expect is not None and expect < 0:
        raise LauraError(ErrorCode.BAD_VALUE, f"expect_matched must be >= 0, not {expect}")
    if kind != common_pb2.UPDATE and (op.upsert or op.array_filters or op.update):
        raise LauraError(
            ErrorCode.BAD_VALUE, "update, upsert and array_filters are for UPDATE operations"
        )
    if kind == common_pb2.INSERT:
        if expect is not None:
            raise LauraError(ErrorCode.BAD_VALUE, "expect_matched does not apply to an INSERT")
        if op.filter or op.multi:
            raise LauraError(ErrorCode.BAD_VALUE, "an INSERT takes a document, not a filter")
        if not op.document:
            raise LauraError(ErrorCode.BAD_VALUE, "an INSERT needs a document")
        try:
            (item,) = prepare_documents([op.document])
        except LauraError as err:
            raise LauraError(err.code, err.message.replace("document 0", "the document")) from None
        return PlannedOp(i, op.database, op.collection, kind, item.data, {}, item.view)
    if op.document:
        raise LauraError(ErrorCode.BAD_VALUE, f"a {_OP_NAMES[kind]} takes a filter, not a document")
    filter_doc = decode_field(op.filter, "filter")
    compile_filter(filter_doc)
    q = RawBSONDocument(op.filter) if op.filter else _EMPTY_DOC
    if kind == common_pb2.UPDATE:
        update_doc = decode_required(op.update, "update")
        afs = [decode_field(a, "array filter") for a in op.array_filters]
        compile_update(update_doc, array_filters=afs or None)
        body: dict[str, Any] = {
            "q": q,
            "u": RawBSONDocument(op.update),
            "multi": op.multi,
            "upsert": op.upsert,
        }
        if op.array_filters:
            body["arrayFilters"] = [RawBSONDocument(a) for a in op.array_filters]
        data = bson.encode(body)
    elif kind == common_pb2.DELETE:
        data = bson.encode({"q": q, "limit": 0 if op.multi else 1})
    else:
        data = bson.encode({"q": q})
    return PlannedOp(
        i, op.database, op.collection, kind, data, filter_doc, None, op.multi, op.upsert, expect
    )


# ============================================================================ targeting


def target(plan: TxnPlan, tables: Mapping[str, RoutingTable]) -> None:
    """Set every operation's shards (``tables``: namespace -> routing table)."""
    for op in plan.ops:
        table = tables[op.namespace]
        try:
            op.shards = target_op(op, table)
        except LauraError as err:
            raise _op_error(op.index, err) from None


def target_op(op: PlannedOp, table: RoutingTable) -> list[str]:
    if op.op_type == common_pb2.INSERT:
        assert op.document is not None
        try:
            return [table.shard_for_key_doc(op.document)]
        except LauraError:
            raise
        except Exception as exc:  # malformed nested values met while extracting the key
            raise LauraError(ErrorCode.BAD_VALUE, f"cannot target the document: {exc}") from None
    targets = target_filter(table, op.filter)
    if op.upsert:
        _require_upsert_target(table, targets)
    if not targets.shards:  # a sharded collection always has an owner; be safe
        return [table.primary_shard]
    return list(targets.shards)


@dataclasses.dataclass
class ShardOps:
    """What one participant gets: the operations (in transaction order) and, for each,
    its index in the transaction."""

    shard: str
    indexes: list[int]
    operations: list[transaction_pb2.Operation]


def shard_operations(
    plan: TxnPlan, tables: Mapping[str, RoutingTable], one_phase: bool
) -> dict[str, ShardOps]:
    """The per-participant operation lists (each with its ShardVersion); ``one_phase``
    (a single participant): the preconditions go along for the shard to enforce."""
    out: dict[str, ShardOps] = {}
    for shard in plan.participants():
        out[shard] = ShardOps(shard, [], [])
    for op in plan.ops:
        table = tables[op.namespace]
        for shard in op.shards:
            sop = transaction_pb2.Operation(
                database=op.database,
                collection=op.collection,
                op_type=op.op_type,  # type: ignore[arg-type]
                data=op.data,
                version=table.shard_version(shard),
            )
            if one_phase and op.expect_matched is not None:
                sop.has_expected = True
                sop.expected_matched = op.expect_matched
            entry = out[shard]
            entry.indexes.append(op.index)
            entry.operations.append(sop)
    return out


# ============================================================================ results


def merge_results(
    n_ops: int,
    answers: Sequence[tuple[ShardOps, Sequence[transaction_pb2.TransactionOperationResult]]],
) -> list[transaction_pb2.TransactionOperationResult]:
    """The per-operation results of the transaction: each shard's answers summed into
    the operation they belong to (READ documents concatenated, in shard order)."""
    merged = [transaction_pb2.TransactionOperationResult() for _ in range(n_ops)]
    for sops, results in answers:
        if len(results) != len(sops.indexes):
            raise LauraError(
                ErrorCode.INTERNAL_ERROR,
                f"shard {sops.shard} answered {len(results)} results for "
                f"{len(sops.indexes)} operations",
            )
        for index, r in zip(sops.indexes, results, strict=True):
            m = merged[index]
            m.matched += r.matched
            m.modified += r.modified
            m.inserted += r.inserted
            m.deleted += r.deleted
            if r.upserted_id:
                m.upserted_id = r.upserted_id
            m.documents.extend(r.documents)
    return merged


def check_preconditions(
    plan: TxnPlan,
    merged: Sequence[transaction_pb2.TransactionOperationResult],
    answers: Sequence[tuple[ShardOps, Sequence[transaction_pb2.TransactionOperationResult]]],
) -> LauraError | None:
    """The first failed precondition (``expect_matched`` against the matches summed
    over the shards), or an ``update_one``/``delete_one`` that matched documents on more
    than one shard (it would change several); None when all hold."""
    for op in plan.ops:
        if op.expect_matched is None:
            continue
        found = merged[op.index].matched
        if found != op.expect_matched:
            return LauraError(
                ErrorCode.TRANSACTION_PRECONDITION_FAILED,
                f"operation {op.index} ({op.kind} {op.namespace}) expected to match "
                f"{op.expect_matched} document(s), matched {found}",
                {
                    "txn_id": plan.txn_id,
                    "failed_operation": op.index,
                    "expected": op.expect_matched,
                    "matched": found,
                },
            )
    hits: dict[int, list[str]] = {}
    single = {
        op.index for op in plan.ops
        if len(op.shards) > 1 and not op.multi and op.op_type in (common_pb2.UPDATE, common_pb2.DELETE)
    }  # fmt: skip
    if not single:
        return None
    for sops, results in answers:
        for index, r in zip(sops.indexes, results, strict=True):
            if index in single and (r.matched or r.deleted):
                hits.setdefault(index, []).append(sops.shard)
    for index in sorted(hits):
        if len(hits[index]) > 1:
            op = plan.ops[index]
            return LauraError(
                ErrorCode.BAD_VALUE,
                f"operation {index} ({op.kind} of one document in {op.namespace}) matched "
                f"documents on {len(hits[index])} shards {sorted(hits[index])}: include the "
                f"shard key in its filter, or make it multi",
                {"txn_id": plan.txn_id, "failed_operation": index},
            )
    return None


def encode_results(results: Sequence[transaction_pb2.TransactionOperationResult]) -> bytes:
    """DecideTransaction's ``results``: BSON ``{r: [serialized result, ...]}``."""
    return bson.encode({"r": [bson.Binary(r.SerializeToString()) for r in results]})


def decode_results(data: bytes) -> list[transaction_pb2.TransactionOperationResult]:
    if not data:
        return []
    try:
        raw = bson.decode(data).get("r", [])
        return [transaction_pb2.TransactionOperationResult.FromString(bytes(b)) for b in raw]
    except Exception as exc:
        raise LauraError(
            ErrorCode.INTERNAL_ERROR, f"the recorded transaction results are unreadable: {exc}"
        ) from None


# ============================================================================ reasons

_REASON = re.compile(r"^([A-Z_]+)\((\d+)\): (.*?)(?: \[failed_operation=(-?\d+)\])?$", re.S)


def reason_of(err: LauraError) -> str:
    """The abort reason recorded by DecideTransaction: ``CODE_NAME(code): message``
    (`` [failed_operation=N]`` appended when an operation caused it)."""
    failed = err.details.get("failed_operation")
    suffix = f" [failed_operation={failed}]" if isinstance(failed, int) else ""
    return f"{err}{suffix}"


def error_from_reason(reason: str, txn_id: str) -> LauraError:
    """The error of a recorded abort: the code in ``reason`` when it has one, else
    NO_SUCH_TRANSACTION (e.g. a participant's presumed abort)."""
    m = _REASON.match(reason or "")
    details: dict[str, Any] = {"txn_id": txn_id}
    if m:
        if m.group(4) is not None:
            details["failed_operation"] = int(m.group(4))
        try:
            code = ErrorCode(int(m.group(2)))
        except ValueError:
            code = ErrorCode.NO_SUCH_TRANSACTION
        return LauraError(code, m.group(3), details)
    return LauraError(
        ErrorCode.NO_SUCH_TRANSACTION,
        f"transaction {txn_id} was aborted: {reason or 'no reason recorded'}",
        details,
    )
