"""Insert planning (pure logic): prepare documents, route them, batch them by shard.

* ``prepare_documents`` checks each document is BSON (the whole batch decoded in one
  C call) and adds an ObjectId ``_id`` first when it is missing (by splicing bytes, as
  drivers do) — documents that already have an ``_id`` are passed on byte for byte
  (never re-encoded).
* ``route`` assigns each document its shard (or a per-document error, e.g. an
  array in the shard key).
* ordered inserts go out as ``ordered_runs``: maximal runs of consecutive documents
  of one shard, sent in order; the first run that reports an error stops the insert.
  A document that cannot be routed ends the runs before it.
* unordered inserts go out as one batch per shard (``group_by_shard``), all shards
  concurrently.
* ``map_errors`` turns a shard's per-batch error indexes back into the caller's.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import bson
from bson.objectid import ObjectId

from lauradb.bsonkit.codec import MAX_DOCUMENT_BYTES
from lauradb.errors import ErrorCode, LauraError

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_DOCS",
    "Batch",
    "RoutedDoc",
    "WriteErrorInfo",
    "group_by_shard",
    "map_errors",
    "ordered_runs",
    "prepare_documents",
    "route",
    "split_batch",
    "with_id_first",
]

MAX_BATCH_DOCS = 10_000
MAX_BATCH_BYTES = 8 * 1024 * 1024
_ID_ELEMENT_PREFIX = b"\x07_id\x00"  # type 0x07 (ObjectId), name "_id"
_LENGTH = struct.Struct("<i")


@dataclasses.dataclass(slots=True)
class RoutedDoc:
    index: int  # the caller's index
    data: bytes  # raw BSON as sent to the shard
    view: Mapping[str, Any]  # ``data`` decoded (read for the shard key only)
    shard: str = ""
    error: LauraError | None = None


@dataclasses.dataclass
class Batch:
    shard: str
    items: list[RoutedDoc]

    @property
    def documents(self) -> list[bytes]:
        return [d.data for d in self.items]


@dataclasses.dataclass(frozen=True)
class WriteErrorInfo:
    index: int
    code: int
    code_name: str
    message: str

    @classmethod
    def of(cls, index: int, err: LauraError) -> WriteErrorInfo:
        return cls(index, int(err.code), err.code_name, err.message)


def with_id_first(data: bytes, oid: ObjectId) -> bytes:
    """``data`` (a BSON document without ``_id``) with ``_id: oid`` as its first field."""
    element = _ID_ELEMENT_PREFIX + oid.binary
    return struct.pack("<i", len(data) + len(element)) + element + data[4:]


def _invalid(index: int, exc: Exception | str) -> LauraError:
    return LauraError(
        ErrorCode.INVALID_BSON, f"document {index} is not valid BSON: {exc}", {"index": index}
    )


def prepare_documents(documents: Sequence[bytes]) -> list[RoutedDoc]:
    """Validate the documents and add missing ``_id`` fields.

    Malformed BSON fails the whole request (INVALID_BSON naming the index): nothing
    is written. The whole batch is decoded in one C call (``bson.decode_all`` over the
    documents joined: half the cost of a ``RawBSONDocument`` per document, and it
    checks nested documents too); the decoded documents are only read for their
    shard keys, the original bytes go to the shards.
    """
    datas = list(documents)  # one bytes object per document (protobuf hands out copies)
    for i, data in enumerate(datas):
        if len(data) > MAX_DOCUMENT_BYTES:
            raise LauraError(
                ErrorCode.BSON_OBJECT_TOO_LARGE,
                f"document {i} is {len(data)} bytes, over the 16 MiB limit",
                {"index": i},
            )
        if len(data) < 5 or data[-1] != 0 or _LENGTH.unpack_from(data)[0] != len(data):
            raise _invalid(i, "bad length or terminator")
    try:
        views: list[dict[str, Any]] = bson.decode_all(b"".join(datas))
    except Exception:  # find the culprit, one document at a time
        for i, data in enumerate(datas):
            try:
                bson.decode(data)
            except Exception as exc:
                raise _invalid(i, exc) from None
        raise
    out: list[RoutedDoc] = []
    for i, (data, view) in enumerate(zip(datas, views, strict=True)):
        if "_id" not in view:
            oid = ObjectId()
            data = with_id_first(data, oid)
            view["_id"] = oid
        out.append(RoutedDoc(i, data, view))
    return out


def route(items: Iterable[RoutedDoc], shard_of: Callable[[Mapping[str, Any]], str]) -> None:
    """Set each item's shard (``shard_of(view)``) or its per-document error."""
    for item in items:
        item.error = None
        try:
            item.shard = shard_of(item.view)
        except LauraError as err:
            item.shard = ""
            item.error = err
        except Exception as exc:  # e.g. malformed nested BSON met while extracting the key
            item.shard = ""
            item.error = _invalid(item.index, exc)


def ordered_runs(items: Sequence[RoutedDoc]) -> tuple[list[Batch], RoutedDoc | None]:
    """Runs of consecutive same-shard documents, up to the first unroutable one.

    Returns ``(runs, first unroutable item or None)``.
    """
    runs: list[Batch] = []
    for item in items:
        if item.error is not None:
            return runs, item
        if runs and runs[-1].shard == item.shard:
            runs[-1].items.append(item)
        else:
            runs.append(Batch(item.shard, [item]))
    return runs, None


def group_by_shard(items: Iterable[RoutedDoc]) -> tuple[list[Batch], list[RoutedDoc]]:
    """One batch per shard (shards sorted; documents in their original order) + unroutables."""
    by_shard: dict[str, Batch] = {}
    unroutable: list[RoutedDoc] = []
    for item in items:
        if item.error is not None:
            unroutable.append(item)
            continue
        batch = by_shard.get(item.shard)
        if batch is None:
            batch = by_shard[item.shard] = Batch(item.shard, [])
        batch.items.append(item)
    return [by_shard[s] for s in sorted(by_shard)], unroutable


def split_batch(
    batch: Batch, max_docs: int = MAX_BATCH_DOCS, max_bytes: int = MAX_BATCH_BYTES
) -> list[Batch]:
    """``batch`` cut into pieces of at most ``max_docs`` documents / about ``max_bytes``."""
    if len(batch.items) <= max_docs and sum(len(d.data) for d in batch.items) <= max_bytes:
        return [batch]
    out: list[Batch] = []
    current: list[RoutedDoc] = []
    size = 0
    for item in batch.items:
        if current and (len(current) >= max_docs or size + len(item.data) > max_bytes):
            out.append(Batch(batch.shard, current))
            current, size = [], 0
        current.append(item)
        size += len(item.data)
    if current:
        out.append(Batch(batch.shard, current))
    return out


def map_errors(
    batch: Batch, shard_errors: Iterable[tuple[int, int, str, str]]
) -> list[WriteErrorInfo]:
    """Shard errors ``(batch index, code, code_name, message)`` -> the caller's indexes."""
    out: list[WriteErrorInfo] = []
    n = len(batch.items)
    for idx, code, code_name, message in shard_errors:
        if 0 <= idx < n:
            out.append(WriteErrorInfo(batch.items[idx].index, code, code_name, message))
        else:  # a shard error without a valid index: charge the batch's first document
            out.append(WriteErrorInfo(batch.items[0].index, code, code_name, message))
    return out
