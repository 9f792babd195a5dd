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
* unordered inserts go out as one batch per shard, all shards concurrently: the
  router's own path keeps the documents in parallel lists (``prepare_raw``,
  ``group_unordered``: no object per document); ``group_by_shard`` does the same for
  ``RoutedDoc`` lists.
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
    "Prepared",
    "RoutedDoc",
    "ShardGroup",
    "WriteErrorInfo",
    "group_by_shard",
    "group_unordered",
    "map_errors",
    "ordered_runs",
    "prepare_documents",
    "prepare_raw",
    "route",
    "split_batch",
    "split_group",
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


@dataclasses.dataclass(slots=True)
class Prepared:
    """An insert's documents after ``prepare_raw``: ``datas[i]`` is the caller's
    document ``i`` as sent to the shards, ``views[i]`` it decoded."""

    datas: list[bytes]
    views: list[dict[str, Any]]

    def routed(self) -> list[RoutedDoc]:
        """One ``RoutedDoc`` per document (not routed yet)."""
        pairs = zip(self.datas, self.views, strict=True)
        return [RoutedDoc(i, data, view) for i, (data, view) in enumerate(pairs)]


@dataclasses.dataclass(slots=True)
class ShardGroup:
    """One shard's documents of an unordered insert (parallel lists, in order)."""

    shard: str
    indexes: list[int]  # the caller's indexes
    documents: list[bytes]


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


def prepare_raw(documents: Sequence[bytes]) -> Prepared:
    """Validate the documents and add missing ``_id`` fields.

    Malformed BSON fails the whole request (INVALID_BSON naming the index): nothing
    is written. The whole batch is decoded in one C call (``bson.decode_all`` over the
    documents joined: half the cost of a ``RawBSONDocument`` per document, and it
    checks nested documents too); the decoded documents are only read for their
    shard keys, the original bytes go to the shards.
    """
    datas = list(documents)  # one bytes object per document (protobuf hands out copies)
    unpack = _LENGTH.unpack_from
    for i, data in enumerate(datas):
        n = len(data)
        if n > MAX_DOCUMENT_BYTES:
            raise LauraError(
                ErrorCode.BSON_OBJECT_TOO_LARGE,
                f"document {i} is {n} bytes, over the 16 MiB limit",
                {"index": i},
            )
        if n < 5 or data[-1] != 0 or unpack(data)[0] != n:
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
    if len(views) != len(datas):  # cannot happen with the lengths checked
        raise _invalid(0, "documents do not split as their lengths say")
    for i, view in enumerate(views):
        if "_id" not in view:
            oid = ObjectId()
            datas[i] = with_id_first(datas[i], oid)
            view["_id"] = oid
    return Prepared(datas, views)


def prepare_documents(documents: Sequence[bytes]) -> list[RoutedDoc]:
    """``prepare_raw``, one ``RoutedDoc`` per document."""
    return prepare_raw(documents).routed()


def group_unordered(
    docs: Prepared, indexes: Iterable[int], shard_of: Callable[[Mapping[str, Any]], str]
) -> tuple[list[ShardGroup], list[tuple[int, LauraError]]]:
    """``route`` + ``group_by_shard`` for the documents ``indexes`` of ``docs``: one
    group per shard (shards sorted; documents in their original order) + the
    unroutable ones with their errors."""
    views, datas = docs.views, docs.datas
    by_shard: dict[str, ShardGroup] = {}
    bad: list[tuple[int, LauraError]] = []
    for i in indexes:
        try:
            shard = shard_of(views[i])
        except LauraError as err:
            bad.append((i, err))
            continue
        except Exception as exc:  # e.g. malformed nested BSON met while extracting the key
            bad.append((i, _invalid(i, exc)))
            continue
        group = by_shard.get(shard)
        if group is None:
            group = by_shard[shard] = ShardGroup(shard, [], [])
        group.indexes.append(i)
        group.documents.append(datas[i])
    return [by_shard[s] for s in sorted(by_shard)], bad


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


def split_group(
    group: ShardGroup, max_docs: int = MAX_BATCH_DOCS, max_bytes: int = MAX_BATCH_BYTES
) -> list[ShardGroup]:
    """``split_batch`` for a ``ShardGroup``."""
    docs = group.documents
    if len(docs) <= max_docs and sum(map(len, docs)) <= max_bytes:
        return [group]
    out: list[ShardGroup] = []
    current = ShardGroup(group.shard, [], [])
    size = 0
    for i, data in zip(group.indexes, docs, strict=True):
        if current.documents and (
            len(current.documents) >= max_docs or size + len(data) > max_bytes
        ):
            out.append(current)
            current, size = ShardGroup(group.shard, [], []), 0
        current.indexes.append(i)
        current.documents.append(data)
        size += len(data)
    if current.documents:
        out.append(current)
    return out


def map_errors(
    batch: Batch | ShardGroup, shard_errors: Iterable[tuple[int, int, str, str]]
) -> list[WriteErrorInfo]:
    """Shard errors ``(batch index, code, code_name, message)`` -> the caller's indexes."""
    indexes = batch.indexes if isinstance(batch, ShardGroup) else [i.index for i in batch.items]
    out: list[WriteErrorInfo] = []
    n = len(indexes)
    for idx, code, code_name, message in shard_errors:
        if 0 <= idx < n:
            out.append(WriteErrorInfo(indexes[idx], code, code_name, message))
        else:  # a shard error without a valid index: charge the batch's first document
            out.append(WriteErrorInfo(indexes[0], code, code_name, message))
    return out
