"""Splitting an aggregation pipeline between the shards and the router.

``split_pipeline(stages)`` cuts the pipeline at the first stage that needs all the
data. The stages before it (``$match $project $addFields $set $unset $unwind
$replaceRoot $replaceWith $redact``, and ``$lookup``/``$unionWith`` only when
``lookup_on_shards(collection)`` says the foreign collection is readable on every
shard) run on each shard; the cut stage is divided:

- ``$group`` → shard ``{"$_partialGroup": spec}`` (partial accumulator states) and
  router ``{"$_mergeGroup": spec}`` (merges states: ``$avg`` from sum and count...);
  a ``$group`` using ``$first``/``$last`` is kept whole on the router, because the
  shards' documents have no meaningful order before it (a ``$sort`` before it would
  itself have been the cut);
- ``$sort`` → shard ``$sort`` (plus ``$limit`` k when the rest only needs the first k:
  ``$limit n`` → k=n, ``$skip s, $limit n`` → k=s+n) and ``merge_sort`` set: the
  router heap-merges the shard streams by it (``merge_streams``), ties in shard order;
- ``$limit n`` → shard ``$limit n`` and router ``$limit n``;
- ``$skip s`` → router; with ``$limit n`` right after, shards get ``$limit s+n``;
- ``$count name`` → shard ``$count name``, router ``$group`` summing + ``$project``;
- ``$sortByCount`` → rewritten as ``$group`` + ``$sort`` first;
- anything else (``$facet $bucket $bucketAuto $sample $out $merge``, a ``$lookup``
  of a sharded collection...) → router from there on.

Contract: running ``shard_part`` on each shard's documents, then ``merge_part`` over
the concatenation of the shard outputs in shard order (or their merge by
``merge_sort`` when set), equals running the whole pipeline on the concatenation of
the shards' documents. ``run_split`` does exactly that in one process (tests, and a
router that has the shard outputs in hand).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lauradb.query.accumulators import ORDER_DEPENDENT
from lauradb.query.pipeline import compile_pipeline, stage_name
from lauradb.query.sort import compile_sort
from lauradb.query.stages_base import Doc, Resolver, integer_arg, output_field_name

__all__ = ["SplitPipeline", "merge_streams", "run_split", "split_pipeline"]

# Stages that transform one document at a time and never look at other documents.
STREAMING = frozenset(
    {"$match", "$project", "$addFields", "$set", "$unset", "$unwind", "$replaceRoot",
     "$replaceWith", "$redact"}
)  # fmt: skip
_FOREIGN = ("$lookup", "$unionWith")


@dataclass(frozen=True)
class SplitPipeline:
    shard_part: list[dict[str, Any]]
    merge_part: list[dict[str, Any]]
    merge_sort: dict[str, Any] | None

    @property
    def needs_merge(self) -> bool:
        """False when the whole pipeline runs on the shards (results just concatenate)."""
        return bool(self.merge_part) or self.merge_sort is not None


def split_pipeline(
    stages: Sequence[Mapping[str, Any]],
    *,
    lookup_on_shards: Callable[[str], bool] | None = None,
) -> SplitPipeline:
    """Split ``stages`` into a shard part and a merge part (see the module docstring)."""
    specs = _desugar(stages)
    shard: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        name = stage_name(spec)
        arg = spec[name]
        rest = specs[i + 1 :]
        if name in STREAMING:
            shard.append(spec)
            continue
        if name in _FOREIGN and _foreign_on_shards(name, arg, lookup_on_shards):
            shard.append(spec)
            continue
        if name == "$group":
            if isinstance(arg, dict) and not _order_dependent(arg):
                return SplitPipeline(
                    [*shard, {"$_partialGroup": arg}], [{"$_mergeGroup": arg}, *rest], None
                )
            return SplitPipeline(shard, specs[i:], None)
        if name == "$sort" and isinstance(arg, dict) and arg:
            bound = _leading_needed(rest)
            shard.append(spec)
            if bound is not None:
                shard.append({"$limit": bound})
            return SplitPipeline(shard, rest, dict(arg))
        if name == "$limit":
            return SplitPipeline([*shard, spec], specs[i:], None)
        if name == "$skip":
            bound = _leading_needed(specs[i:])
            if bound is not None:
                shard.append({"$limit": bound})
            return SplitPipeline(shard, specs[i:], None)
        if name == "$count":
            field = output_field_name(arg, "$count", "count field")
            merge: list[dict[str, Any]] = [
                {"$group": {"_id": None, field: {"$sum": "$" + field}}},
                {"$project": {"_id": 0}},
            ]
            return SplitPipeline([*shard, spec], [*merge, *rest], None)
        return SplitPipeline(shard, specs[i:], None)
    return SplitPipeline(shard, [], None)


def _desugar(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in stages:
        name = stage_name(spec)
        if name == "$sortByCount":
            arg = spec[name]
            if (isinstance(arg, str) and arg.startswith("$")) or (
                isinstance(arg, dict) and len(arg) == 1 and next(iter(arg)).startswith("$")
            ):
                out.append({"$group": {"_id": arg, "count": {"$sum": 1}}})
                out.append({"$sort": {"count": -1}})
                continue
        out.append(dict(spec))
    return out


def _order_dependent(group_spec: Mapping[str, Any]) -> bool:
    for field, acc in group_spec.items():
        if field != "_id" and isinstance(acc, dict) and any(op in ORDER_DEPENDENT for op in acc):
            return True
    return False


def _foreign_on_shards(name: str, arg: Any, on_shards: Callable[[str], bool] | None) -> bool:
    """Whether a $lookup/$unionWith (and any nested one) only reads shard-local data."""
    if on_shards is None or not isinstance(arg, (dict, str)):
        return False
    if isinstance(arg, str):
        return on_shards(arg)
    source = arg.get("from") if name == "$lookup" else arg.get("coll")
    if not isinstance(source, str) or not on_shards(source):
        return False
    sub = arg.get("pipeline", [])
    if not isinstance(sub, list):
        return False
    for spec in sub:
        if isinstance(spec, dict) and len(spec) == 1:
            inner = next(iter(spec))
            if inner in _FOREIGN and not _foreign_on_shards(inner, spec[inner], on_shards):
                return False
            if inner == "$facet":
                return False
    return True


def _leading_needed(stages: Sequence[Mapping[str, Any]]) -> int | None:
    """How many leading documents ``stages`` need when they start with $skip*/$limit."""
    offset = 0
    for spec in stages:
        name = stage_name(spec)
        if name == "$skip":
            offset += max(0, integer_arg(spec[name], "$skip"))
        elif name == "$limit":
            n = integer_arg(spec[name], "$limit")
            return offset + n if n > 0 else None
        else:
            return None
    return None


def merge_streams(
    streams: Sequence[Iterable[Doc]], merge_sort: Mapping[str, Any] | None
) -> Iterator[Doc]:
    """The router's input to ``merge_part``: a heap merge by ``merge_sort`` (stable, ties
    in stream order) or the concatenation in stream order."""
    if merge_sort:
        return heapq.merge(*streams, key=compile_sort(merge_sort))
    return itertools.chain.from_iterable(streams)


def run_split(
    split: SplitPipeline,
    shard_docs: Sequence[Iterable[Doc]],
    *,
    resolver: Resolver | None = None,
    memory_limit_bytes: int | None = None,
) -> Iterator[Doc]:
    """Run ``shard_part`` over each shard's documents and ``merge_part`` over the merge."""
    limit = memory_limit_bytes
    shard = compile_pipeline(split.shard_part, resolver=resolver, memory_limit_bytes=limit)
    merge = compile_pipeline(split.merge_part, resolver=resolver, memory_limit_bytes=limit)
    streams = [shard.run(docs) for docs in shard_docs]
    return merge.run(merge_streams(streams, split.merge_sort))
