"""Find, Aggregate (lazy streams of BSON bytes) and Distinct on top of the storage scans.

Every input (filter, projection, sort, pipeline) is compiled when the stream is
created, so a bad request fails before a cursor exists; the documents themselves are
read lazily, page by page, while a cursor's batches are filled.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lauradb.bsonkit.codec import MAX_DOCUMENT_BYTES, encode_document
from lauradb.bsonkit.keys import encode_value
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.query.paths import split_path
from lauradb.query.pipeline import compile_pipeline
from lauradb.query.projection import compile_projection
from lauradb.query.sort import compile_sort, validate_sort
from shard_stub.index_keys import distinct_values
from shard_stub.ownership import OwnedRanges
from shard_stub.storage import Row, ScanStats, ShardStorage

# MongoDB's per-stage memory limit for blocking stages without allowDiskUse.
PIPELINE_MEMORY_LIMIT = 100 * 1024 * 1024


@dataclass
class ResultStream:
    """Encoded result documents, produced lazily, and what producing them cost."""

    documents: Iterator[bytes]
    stats: ScanStats = field(default_factory=ScanStats)


def _check_skip_limit(skip: int, limit: int) -> tuple[int, int]:
    if skip < 0:
        raise LauraError(ErrorCode.BAD_VALUE, f"skip value must be non-negative, but received: {skip}")
    return skip, abs(limit)


def find_stream(
    storage: ShardStorage,
    ns: str,
    filter_spec: Mapping[str, Any] | None,
    *,
    projection: Mapping[str, Any] | None = None,
    sort: Mapping[str, Any] | None = None,
    skip: int = 0,
    limit: int = 0,
    owned: OwnedRanges | None = None,
) -> ResultStream:
    """The (owned) documents of ``ns`` matching the filter, sorted, sliced, projected."""
    spec = filter_spec or {}
    skip, limit = _check_skip_limit(skip, limit)
    matcher = compile_filter(spec)
    proj = compile_projection(projection or None)
    sort_fields = validate_sort(sort or {})
    sort_key = compile_sort(sort or {}) if sort_fields else None
    positional = bool(projection) and any(
        isinstance(k, str) and k.endswith(".$") for k in (projection or {})
    )
    stats = ScanStats()
    choice = storage.plan(ns, spec, sort_fields or None)
    presorted = choice is not None and choice.ordered

    def rows() -> Iterator[Row]:
        source = storage.scan(
            ns, spec, owned=owned, stats=stats, matcher=matcher, choice=choice
        )
        if sort_key is not None and not presorted:
            key = sort_key
            if limit:
                ordered = heapq.nsmallest(skip + limit, source, key=lambda r: key(r.doc))
            else:
                ordered = sorted(source, key=lambda r: key(r.doc))
            yield from ordered[skip:]
            return
        skipped = 0
        returned = 0
        for row in source:
            if skipped < skip:
                skipped += 1
                continue
            yield row
            returned += 1
            if limit and returned >= limit:
                return

    def documents() -> Iterator[bytes]:
        if proj.is_identity:
            for row in rows():
                yield row.raw
            return
        for row in rows():
            position = None
            if positional:
                _, position = matcher.match_with_position(row.doc)
            yield encode_document(proj.apply(row.doc, position=position))

    return ResultStream(documents(), stats)


def aggregate_stream(
    storage: ShardStorage,
    ns: str,
    stages: Sequence[Mapping[str, Any]],
    *,
    owned: OwnedRanges | None = None,
) -> ResultStream:
    """Run ``stages`` over the (owned) documents of ``ns``.

    A leading ``$match`` becomes the storage filter (so ``_id`` and shard key
    predicates use the primary key / shard key index); the other stages run in the
    shared pipeline engine.
    """
    stages = list(stages)
    match_spec: Mapping[str, Any] = {}
    if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$match"]:
        first = stages[0]["$match"]
        if not isinstance(first, Mapping):
            raise LauraError(ErrorCode.FAILED_TO_PARSE, "the $match stage needs a document")
        match_spec = first
        stages = stages[1:]
    matcher = compile_filter(match_spec)
    pipeline = (
        compile_pipeline(stages, memory_limit_bytes=PIPELINE_MEMORY_LIMIT) if stages else None
    )
    stats = ScanStats()

    def documents() -> Iterator[bytes]:
        source = storage.scan(ns, match_spec, owned=owned, stats=stats, matcher=matcher)
        if pipeline is None:
            for row in source:
                yield row.raw
            return
        for doc in pipeline.run(row.doc for row in source):
            yield encode_document(doc)

    return ResultStream(documents(), stats)


def distinct(
    storage: ShardStorage,
    ns: str,
    key: str,
    filter_spec: Mapping[str, Any] | None = None,
    *,
    owned: OwnedRanges | None = None,
    stats: ScanStats | None = None,
) -> list[Any]:
    """The distinct values of the dotted path ``key`` over the (owned) matching documents.

    Arrays contribute their elements (as MongoDB's distinct does); values are
    de-duplicated by BSON equality (1 and 1.0 are one value) and sorted in BSON
    order. Over 16 MiB of values fails like MongoDB ("distinct too big").
    """
    if not isinstance(key, str) or not key:
        raise LauraError(ErrorCode.BAD_VALUE, "FieldPath cannot be constructed with empty string")
    if key.startswith("$"):
        raise LauraError(ErrorCode.BAD_VALUE, f"FieldPath field names may not start with '$': {key}")
    parts = split_path(key)
    spec = filter_spec or {}
    matcher = compile_filter(spec)
    found: dict[bytes, Any] = {}
    size = 0
    for row in storage.scan(ns, spec, owned=owned, stats=stats, matcher=matcher):
        for value in distinct_values(row.doc, parts):
            enc = encode_value(value)
            if enc in found:
                continue
            found[enc] = value
            size += len(enc) + 8
            if size > MAX_DOCUMENT_BYTES:
                raise LauraError(
                    ErrorCode.BSON_OBJECT_TOO_LARGE, "distinct too big, 16mb cap"
                )
    return [found[k] for k in sorted(found)]
