"""Multi-document, multi-shard transactions (``client.transaction()``).

::

    with client.transaction(timeout_ms=5000) as tx:
        tx.update_one(accounts, {"_id": "ada"}, {"$inc": {"balance": -10}}, expect_matched=1)
        tx.update_one(accounts, {"_id": "bob"}, {"$inc": {"balance": 10}}, expect_matched=1)
        tx.insert_one(client.bank.log, {"from": "ada", "to": "bob", "amount": 10})
    print(tx.result[2].inserted_id)

The block only collects operations; leaving it without an exception sends them all in
one ``ExecuteTransaction`` (all applied or none); an exception inside the block sends
nothing. ``async with client.transaction() as tx`` is the asyncio twin.

Retries (one program, ``execute``, run by either transport): a transient abort
(WRITE_CONFLICT, LOCK_TIMEOUT, STALE_CONFIG, SHARD_UNAVAILABLE before a decision,
NO_SUCH_TRANSACTION from a presumed abort...) is retried with a new txn_id (derived from
the first: ``<id>.1``, ``<id>.2``...) after a backoff, until the transaction's deadline
(``timeout_ms``) or ``retries``; a connection failure, or a router that could not learn
the outcome, resends the same txn_id (the cluster answers it with its outcome). Other
errors raise ``TransactionAborted`` at once; an outcome still unknown at the deadline
raises the connection error.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions

from lauradb.client import _common as c
from lauradb.client.concern import WriteConcern
from lauradb.client.errors import (
    ConnectionFailure,
    InvalidOperation,
    LauraDBError,
    NetworkTimeout,
    TransactionAborted,
)
from lauradb.client.ops import Call, Pause, Program, check_replacement_doc, check_update_doc
from lauradb.client.results import DeleteResult, InsertOneResult, UpdateResult
from lauradb.cluster import common_pb2, transaction_pb2
from lauradb.errors import ErrorCode

if TYPE_CHECKING:
    from lauradb.client._async import AsyncClient
    from lauradb.client._sync import Client

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "AsyncTransaction",
    "Transaction",
    "TransactionResult",
    "execute",
]

DEFAULT_TIMEOUT_MS = 10_000  # the router's default when the transaction sets none
CALL_MARGIN_S = 5.0  # the call's deadline: the transaction's timeout plus this
MAX_BACKOFF_S = 0.5

# Aborts that a new attempt (new txn_id) may not meet again.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.WRITE_CONFLICT,
        ErrorCode.LOCK_TIMEOUT,
        ErrorCode.STALE_CONFIG,
        ErrorCode.STALE_EPOCH,
        ErrorCode.SHARD_UNAVAILABLE,
        ErrorCode.HOST_UNREACHABLE,
        ErrorCode.NO_SUCH_TRANSACTION,
        ErrorCode.NOT_WRITABLE_PRIMARY,
        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
        ErrorCode.EXCEEDED_TIME_LIMIT,
        ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
    }
)


def _namespace(collection: Any) -> tuple[str, str]:
    """A Collection / AsyncCollection or ``"db.coll"`` -> ``(db, coll)``."""
    if isinstance(collection, str):
        return c.split_namespace(collection)
    database = getattr(collection, "database", None)
    name = getattr(collection, "name", None)
    if database is None or not isinstance(name, str):
        raise TypeError(
            f"collection must be a Collection or a 'db.coll' string, not "
            f"{type(collection).__name__}"
        )
    return database.name, name


class TransactionResult(Sequence[Any]):
    """The results of a committed transaction, one per operation in order:
    ``InsertOneResult``, ``UpdateResult``, ``DeleteResult``, or for ``find`` the list of
    documents it read. ``txn_id``: the attempt that committed; ``participants``: the
    shards involved (1: committed in one step)."""

    def __init__(self, txn_id: str, participants: int, results: list[Any]) -> None:
        self.txn_id = txn_id
        self.participants = participants
        self._results = results

    def __getitem__(self, index: Any) -> Any:
        return self._results[index]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._results)

    def __repr__(self) -> str:
        return (
            f"TransactionResult(txn_id={self.txn_id!r}, participants={self.participants}, "
            f"results={self._results!r})"
        )


class _Ops:
    """The operations collected by a transaction block (shared by both twins)."""

    def __init__(self, codec: CodecOptions[Any]) -> None:
        self.codec = codec
        self.operations: list[transaction_pb2.TransactionOperation] = []
        self.kinds: list[tuple[str, Any]] = []  # ("insert", _id) / ("update",) ...

    def add(self, op: transaction_pb2.TransactionOperation, kind: str, extra: Any = None) -> int:
        self.operations.append(op)
        self.kinds.append((kind, extra))
        return len(self.operations) - 1

    def parse(self, resp: transaction_pb2.ExecuteTransactionResponse) -> list[Any]:
        out: list[Any] = []
        for i, (kind, extra) in enumerate(self.kinds):
            r = resp.results[i] if i < len(resp.results) else transaction_pb2.TransactionOperationResult()
            if kind == "insert":
                out.append(InsertOneResult(extra))
            elif kind == "update":
                raw: dict[str, Any] = {"n": r.matched + (1 if r.upserted_id else 0),
                                       "nModified": r.modified}  # fmt: skip
                if r.upserted_id:
                    raw["upserted"] = c.decode(r.upserted_id, self.codec).get("_id")
                out.append(UpdateResult(raw))
            elif kind == "delete":
                out.append(DeleteResult({"n": r.deleted}))
            else:
                out.append([c.decode(d, self.codec) for d in r.documents])
        return out


def _check_expect(expect_matched: int | None) -> None:
    if expect_matched is not None and (
        isinstance(expect_matched, bool) or not isinstance(expect_matched, int) or expect_matched < 0
    ):
        raise ValueError(f"expect_matched must be a non-negative int, not {expect_matched!r}")


def _filter(filter: Any) -> Any:
    if filter is not None and not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
    return filter


class _Builder:
    """The operation methods of a transaction block."""

    _ops: _Ops
    _state: str  # "open", "committed", "aborted", "failed"

    def _check_open(self) -> None:
        if self._state != "open":
            raise InvalidOperation(f"this transaction is {self._state}: start a new one")

    def insert_one(self, collection: Any, document: Any) -> int:
        """Insert ``document`` (an ObjectId ``_id`` is added when it has none). Returns
        the operation's index (its result is ``tx.result[index]``)."""
        self._check_open()
        db, coll = _namespace(collection)
        doc_id, data = c.encode_document_for_insert(document, self._ops.codec)
        return self._ops.add(
            transaction_pb2.TransactionOperation(
                database=db, collection=coll, op_type=common_pb2.INSERT, document=data
            ),
            "insert",
            doc_id,
        )

    def _update(
        self, collection: Any, filter: Any, update: Any, *, multi: bool, upsert: bool,
        replace: bool, array_filters: Sequence[Mapping[str, Any]] | None,
        expect_matched: int | None,
    ) -> int:  # fmt: skip
        self._check_open()
        db, coll = _namespace(collection)
        _check_expect(expect_matched)
        if replace:
            check_replacement_doc(update)
        else:
            check_update_doc(update)
        codec = self._ops.codec
        op = transaction_pb2.TransactionOperation(
            database=db, collection=coll, op_type=common_pb2.UPDATE,
            filter=c.encode_filter(_filter(filter), codec), update=c.encode(update, codec, "update"),
            multi=multi, upsert=upsert,
        )  # fmt: skip
        for af in array_filters or ():
            op.array_filters.append(c.encode(af, codec, "array filter"))
        if expect_matched is not None:
            op.expect_matched = expect_matched
        return self._ops.add(op, "update")

    def update_one(
        self, collection: Any, filter: Mapping[str, Any], update: Mapping[str, Any], *,
        upsert: bool = False, array_filters: Sequence[Mapping[str, Any]] | None = None,
        expect_matched: int | None = None,
    ) -> int:  # fmt: skip
        """Update one matching document. ``expect_matched``: the transaction aborts
        (TRANSACTION_PRECONDITION_FAILED) unless the filter matches exactly this many
        documents. Without the shard key in the filter, the filter must match on one
        shard only."""
        return self._update(collection, filter, update, multi=False, upsert=upsert,
                            replace=False, array_filters=array_filters,
                            expect_matched=expect_matched)  # fmt: skip

    def update_many(
        self, collection: Any, filter: Mapping[str, Any], update: Mapping[str, Any], *,
        upsert: bool = False, array_filters: Sequence[Mapping[str, Any]] | None = None,
        expect_matched: int | None = None,
    ) -> int:  # fmt: skip
        """Update every matching document (``expect_matched``: over all shards)."""
        return self._update(collection, filter, update, multi=True, upsert=upsert,
                            replace=False, array_filters=array_filters,
                            expect_matched=expect_matched)  # fmt: skip

    def replace_one(
        self, collection: Any, filter: Mapping[str, Any], replacement: Mapping[str, Any], *,
        upsert: bool = False, expect_matched: int | None = None,
    ) -> int:  # fmt: skip
        return self._update(collection, filter, replacement, multi=False, upsert=upsert,
                            replace=True, array_filters=None,
                            expect_matched=expect_matched)  # fmt: skip

    def _delete(self, collection: Any, filter: Any, multi: bool, expect_matched: int | None) -> int:
        self._check_open()
        db, coll = _namespace(collection)
        _check_expect(expect_matched)
        op = transaction_pb2.TransactionOperation(
            database=db, collection=coll, op_type=common_pb2.DELETE,
            filter=c.encode_filter(_filter(filter), self._ops.codec), multi=multi,
        )  # fmt: skip
        if expect_matched is not None:
            op.expect_matched = expect_matched
        return self._ops.add(op, "delete")

    def delete_one(
        self, collection: Any, filter: Mapping[str, Any], *, expect_matched: int | None = None
    ) -> int:
        return self._delete(collection, filter, False, expect_matched)

    def delete_many(
        self, collection: Any, filter: Mapping[str, Any], *, expect_matched: int | None = None
    ) -> int:
        return self._delete(collection, filter, True, expect_matched)

    def find(
        self, collection: Any, filter: Mapping[str, Any] | None = None, *,
        expect_matched: int | None = None,
    ) -> int:  # fmt: skip
        """A locking read: the documents matching ``filter`` when the transaction
        prepares (``tx.result[index]`` is their list). They stay locked until it
        commits, so the reads of one transaction are a consistent cut."""
        self._check_open()
        db, coll = _namespace(collection)
        _check_expect(expect_matched)
        op = transaction_pb2.TransactionOperation(
            database=db, collection=coll, op_type=common_pb2.READ,
            filter=c.encode_filter(_filter(filter), self._ops.codec),
        )  # fmt: skip
        if expect_matched is not None:
            op.expect_matched = expect_matched
        return self._ops.add(op, "find")


def new_txn_id() -> str:
    return uuid.uuid4().hex


def _classify(err: LauraDBError) -> str:
    """``resend`` (same txn_id: the outcome is unknown), ``retry`` (new txn_id: a
    transient abort) or ``raise``."""
    if isinstance(err, NetworkTimeout):
        return "raise"  # the call's deadline is past the transaction's
    if isinstance(err, ConnectionFailure) and (
        err.details.get("grpcStatus") is not None or err.details.get("outcome") == "unknown"
    ):
        return "resend"
    if err.details.get("outcome") == "unknown":
        return "resend"
    if err.code in TRANSIENT_CODES:
        return "retry"
    return "raise"


def execute(
    ops: _Ops,
    *,
    txn_id: str,
    timeout_ms: int | None,
    retries: int | None,
    write_concern: WriteConcern | None,
) -> Program[TransactionResult]:
    """The program of one transaction: ExecuteTransaction, with the retry rule of the
    module docstring."""
    budget_s = (timeout_ms if timeout_ms is not None else DEFAULT_TIMEOUT_MS) / 1000.0
    deadline = time.monotonic() + budget_s
    attempt = 0  # new txn_ids so far
    tries = 0
    current = txn_id
    while True:
        req = transaction_pb2.ExecuteTransactionRequest(
            txn_id=current, operations=ops.operations, request_id=c.new_request_id()
        )
        if timeout_ms is not None:
            req.timeout_ms = timeout_ms
        if write_concern is not None:
            req.write_concern.CopyFrom(write_concern.to_proto())
        try:
            resp: transaction_pb2.ExecuteTransactionResponse = yield Call(
                "router", "ExecuteTransaction", req, "write", retryable=True,
                timeout=budget_s + CALL_MARGIN_S,
            )  # fmt: skip
        except LauraDBError as err:
            what = _classify(err)
            tries += 1
            pause = min(0.01 * (2 ** min(tries, 8)), MAX_BACKOFF_S) * (0.5 + random.random() / 2)
            exhausted = (retries is not None and tries > retries) or (
                time.monotonic() + pause >= deadline
            )
            if what == "raise" or exhausted:
                if what == "resend" or isinstance(err, NetworkTimeout):
                    raise  # the outcome is unknown: not "aborted"
                raise TransactionAborted.of(err, current) from err
            if what == "retry":
                attempt += 1
                current = f"{txn_id}.{attempt}"
            yield Pause(pause)
            continue
        return TransactionResult(resp.txn_id or current, int(resp.participants), ops.parse(resp))


class _Base(_Builder):
    def __init__(
        self,
        codec: CodecOptions[Any],
        write_concern: WriteConcern | None,
        timeout_ms: int | None,
        txn_id: str | None,
        retries: int | None,
    ) -> None:
        if timeout_ms is not None and (
            isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0
        ):
            raise ValueError(f"timeout_ms must be a positive int, not {timeout_ms!r}")
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        if txn_id is not None and (not isinstance(txn_id, str) or not txn_id):
            raise ValueError("txn_id must be a non-empty string")
        self._ops = _Ops(codec)
        self._state = "open"
        self._write_concern = write_concern
        self.timeout_ms = timeout_ms
        self.txn_id = txn_id or new_txn_id()
        self.retries = retries
        self.result: TransactionResult | None = None

    def _program(self) -> Program[TransactionResult]:
        if not self._ops.operations:
            raise InvalidOperation("a transaction needs at least one operation")
        return execute(
            self._ops, txn_id=self.txn_id, timeout_ms=self.timeout_ms, retries=self.retries,
            write_concern=self._write_concern,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self._ops.operations)


class Transaction(_Base):
    """``with client.transaction() as tx:`` (see the module docstring)."""

    def __init__(self, client: Client, **kwargs: Any) -> None:
        super().__init__(client.codec_options, client._concerns.write_concern, **kwargs)
        self._client = client

    def __enter__(self) -> Transaction:
        self._check_open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self._state = "aborted"
            return
        self.commit()

    def commit(self) -> TransactionResult:
        """Send the transaction now (leaving the ``with`` block does this)."""
        self._check_open()
        self._state = "failed"
        self.result = self._client._run(self._program())
        self._state = "committed"
        return self.result


class AsyncTransaction(_Base):
    """``async with client.transaction() as tx:`` (see the module docstring)."""

    def __init__(self, client: AsyncClient, **kwargs: Any) -> None:
        super().__init__(client.codec_options, client._concerns.write_concern, **kwargs)
        self._client = client

    async def __aenter__(self) -> AsyncTransaction:
        self._check_open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self._state = "aborted"
            return
        await self.commit()

    async def commit(self) -> TransactionResult:
        self._check_open()
        self._state = "failed"
        self.result = await self._client._run(self._program())
        self._state = "committed"
        return self.result
