"""``bulk_write``: pymongo's operation classes and the program that runs them.

Consecutive ``InsertOne``s go out as Insert RPCs (batched); every other operation is
one Update/Delete RPC, each with its own request id (single-document ones retried
once like ``update_one``). ``ordered=True`` stops at the first error; ``ordered=False``
carries on. Errors are collected by the operation's index into a ``BulkWriteError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson.codec_options import CodecOptions

from lauradb.client import _common as c
from lauradb.client import ops
from lauradb.client.errors import BulkWriteError, InvalidOperation, OperationFailure
from lauradb.client.ops import Call, Program
from lauradb.client.results import BulkWriteResult
from lauradb.cluster import routing_pb2 as r

__all__ = [
    "DeleteMany",
    "DeleteOne",
    "InsertOne",
    "ReplaceOne",
    "UpdateMany",
    "UpdateOne",
    "WriteOp",
    "bulk_write",
]


class WriteOp:
    """Base of the bulk operations."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def as_document(self) -> Any:
        """The operation as MongoDB reports it in a write error's ``op``."""
        raise NotImplementedError


class InsertOne(WriteOp):
    __slots__ = ("document",)
    _fields = ("document",)

    def __init__(self, document: Any) -> None:
        self.document = document

    def as_document(self) -> Any:
        return self.document


class _Filtered(WriteOp):
    __slots__ = ()
    multi = False

    @staticmethod
    def _check_filter(filter: Any) -> None:
        if not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")


class DeleteOne(_Filtered):
    __slots__ = ("filter",)
    _fields = ("filter",)

    def __init__(self, filter: Mapping[str, Any]) -> None:
        self._check_filter(filter)
        self.filter = filter

    def as_document(self) -> Any:
        return {"q": self.filter, "limit": 0 if self.multi else 1}


class DeleteMany(DeleteOne):
    __slots__ = ()
    multi = True


class ReplaceOne(_Filtered):
    __slots__ = ("filter", "replacement", "upsert")
    _fields = ("filter", "replacement", "upsert")

    def __init__(self, filter: Mapping[str, Any], replacement: Mapping[str, Any],
                 upsert: bool = False) -> None:
        self._check_filter(filter)
        ops.check_replacement_doc(replacement)
        self.filter = filter
        self.replacement = replacement
        self.upsert = upsert

    def as_document(self) -> Any:
        return {"q": self.filter, "u": self.replacement, "multi": False, "upsert": self.upsert}


class UpdateOne(_Filtered):
    __slots__ = ("array_filters", "filter", "update", "upsert")
    _fields = ("filter", "update", "upsert", "array_filters")

    def __init__(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self._check_filter(filter)
        ops.check_update_doc(update)
        self.filter = filter
        self.update = update
        self.upsert = upsert
        self.array_filters = array_filters

    def as_document(self) -> Any:
        doc = {"q": self.filter, "u": self.update, "multi": self.multi, "upsert": self.upsert}
        if self.array_filters:
            doc["arrayFilters"] = list(self.array_filters)
        return doc


class UpdateMany(UpdateOne):
    __slots__ = ()
    multi = True


_OPS = (InsertOne, DeleteOne, ReplaceOne, UpdateOne)


def _call_for(db: str, coll: str, op: WriteOp, codec: CodecOptions[Any]) -> Call:
    if isinstance(op, DeleteOne):
        req: Any = ops.delete_request(db, coll, op.filter, op.multi, codec)
        return Call("router", "Delete", req, "write", retryable=not op.multi)
    if isinstance(op, ReplaceOne):
        req = ops.update_request(db, coll, op.filter, op.replacement, multi=False,
                                 upsert=op.upsert, replace=True, array_filters=None, codec=codec)
        return Call("router", "Update", req, "write")
    assert isinstance(op, UpdateOne)
    req = ops.update_request(db, coll, op.filter, op.update, multi=op.multi, upsert=op.upsert,
                             replace=False, array_filters=op.array_filters, codec=codec)
    return Call("router", "Update", req, "write", retryable=not op.multi)


class _Tally:
    def __init__(self) -> None:
        self.n = {"nInserted": 0, "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0}
        self.upserted: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def error(self, index: int, err: OperationFailure, op: WriteOp) -> None:
        self.errors.append({
            "index": index, "code": int(err.code), "codeName": err.code_name,
            "errmsg": err.message, "op": op.as_document(),
        })

    def details(self) -> dict[str, Any]:
        return {**self.n, "upserted": self.upserted, "writeErrors": self.errors,
                "writeConcernErrors": []}


def bulk_write(
    db: str,
    coll: str,
    requests: Iterable[WriteOp],
    ordered: bool,
    codec: CodecOptions[Any],
) -> Program[BulkWriteResult]:
    if isinstance(requests, Mapping) or not isinstance(requests, Iterable):
        raise TypeError("requests must be a list of write operations")
    todo = list(requests)
    for op in todo:
        if not isinstance(op, _OPS):
            raise TypeError(f"{op!r} is not a valid request")
    if not todo:
        raise InvalidOperation("No operations to execute")
    tally = _Tally()
    i = 0
    while i < len(todo):
        op = todo[i]
        if isinstance(op, InsertOne):
            j = i
            while j < len(todo) and isinstance(todo[j], InsertOne):
                j += 1
            stop = yield from _insert_run(db, coll, todo, i, j, ordered, codec, tally)
            if stop:
                break
            i = j
            continue
        call = _call_for(db, coll, op, codec)
        try:
            resp = yield call
        except OperationFailure as err:
            tally.error(i, err, op)
            if ordered:
                break
            i += 1
            continue
        if call.method == "Delete":
            tally.n["nRemoved"] += resp.deleted_count
        else:
            result = ops.parse_update(resp, codec)
            if result.upserted_id is not None:
                tally.n["nUpserted"] += 1
                tally.upserted.append({"index": i, "_id": result.upserted_id})
            else:
                tally.n["nMatched"] += result.matched_count
            tally.n["nModified"] += result.modified_count
        i += 1
    if tally.errors:
        raise BulkWriteError(tally.details())
    return BulkWriteResult(tally.details())


def _insert_run(
    db: str,
    coll: str,
    todo: list[WriteOp],
    lo: int,
    hi: int,
    ordered: bool,
    codec: CodecOptions[Any],
    tally: _Tally,
) -> Program[bool]:
    """InsertOne ops ``todo[lo:hi]``; True if an ordered bulk must stop."""
    encoded = []
    for op in todo[lo:hi]:
        assert isinstance(op, InsertOne)
        encoded.append(c.encode_document_for_insert(op.document, codec)[1])
    for start, end in ops.insert_batches(encoded):
        req = r.InsertRequest(
            request_id=c.new_request_id(), database=db, collection=coll,
            documents=encoded[start:end], ordered=ordered,
        )
        try:
            resp = yield Call("router", "Insert", req, "write", check_error=False)
        except OperationFailure as err:  # the whole call failed (nothing inserted)
            failed = [start] if ordered else list(range(start, end))
            for k in failed:
                tally.error(lo + k, err, todo[lo + k])
            if ordered:
                return True
            continue
        tally.n["nInserted"] += resp.inserted_count
        for e in resp.errors:
            index = lo + start + e.index
            tally.errors.append({
                "index": index, "code": int(e.code), "codeName": e.code_name,
                "errmsg": e.error, "op": todo[index].as_document(),
            })
        if ordered and resp.errors:
            return True
    return False
