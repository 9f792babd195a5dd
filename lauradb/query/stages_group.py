"""$group (and its split halves), $sortByCount, $bucket and $bucketAuto.

Internal stages used by the router's pipeline split (``lauradb.query.split``);
both take the user's original ``$group`` spec:

- ``{"$_partialGroup": spec}`` (shard side) outputs one document per group:
  ``{"_id": key, field: <accumulator partial state>, ...}`` (BSON-encodable);
- ``{"$_mergeGroup": spec}`` (router side) groups those documents by ``_id``, merges
  the partial states in stream order and outputs the final ``$group`` documents.

Groups are output in the order their first document arrived.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lauradb.bsonkit.order import canonical_rank, sort_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.accumulators import (
    Accumulator,
    AccumulatorSpec,
    approx_size,
    compile_accumulator,
)
from lauradb.query.common import MISSING
from lauradb.query.expr_core import Expr, compile_expression, constant_value
from lauradb.query.stages_base import (
    NO_VARS,
    CompileContext,
    Doc,
    MemoryTracker,
    Stage,
    integer_arg,
    pipeline_error,
    stage,
)

_GROUP_OVERHEAD = 64


def parse_group(spec: Any, stage_name: str = "$group") -> tuple[Expr, list[AccumulatorSpec]]:
    if not isinstance(spec, dict):
        raise pipeline_error(f"a group's fields must be specified in an object ({stage_name})")
    if "_id" not in spec:
        raise pipeline_error("a group specification must include an _id")
    id_fn = compile_group_id(spec["_id"])
    accumulators = []
    for field, acc_spec in spec.items():
        if field == "_id":
            continue
        if not isinstance(field, str) or not field:
            raise pipeline_error("the group field names must be non-empty strings")
        if field.startswith("$"):
            raise pipeline_error(
                f"the group aggregate field name '{field}' cannot be an operator name"
            )
        if "." in field:
            raise pipeline_error(
                f"the group aggregate field name '{field}' cannot be used because $group's field "
                "names cannot contain '.'"
            )
        accumulators.append(compile_accumulator(field, acc_spec))
    return id_fn, accumulators


def compile_group_id(spec: Any) -> Expr:
    """The ``_id`` of a $group: an expression; for a document of expressions, each
    top-level field that is missing becomes null (as MongoDB groups them)."""
    if not isinstance(spec, dict) or not spec or any(k.startswith("$") for k in spec):
        return compile_expression(spec)
    for key in spec:
        if "." in key:
            raise pipeline_error(f"$group _id field names cannot contain '.': '{key}'")
    fields = [(key, compile_expression(value)) for key, value in spec.items()]

    def group_id(doc: Any, variables: Mapping[str, Any]) -> Any:
        out = {}
        for key, fn in fields:
            value = fn(doc, variables)
            out[key] = None if value is MISSING else value
        return out

    return group_id


Groups = dict[Any, tuple[Any, list[Accumulator]]]


def _accumulate(
    docs: Iterator[Doc],
    key_fn: Callable[[Doc], Any],
    specs: list[AccumulatorSpec],
    tracker: MemoryTracker,
    merge: bool,
) -> Groups:
    """Fold ``docs`` into groups: {sort key: (group id, accumulators)}."""
    groups: Groups = {}
    track = tracker.limit is not None
    growing = [i for i, s in enumerate(specs) if s.grows]
    factories = [s.factory for s in specs]
    arguments = [s.argument for s in specs]
    for doc in docs:
        group_id = key_fn(doc)
        key = sort_key(group_id)
        entry = groups.get(key)
        if entry is None:
            entry = (group_id, [f() for f in factories])
            groups[key] = entry
            if track:
                tracker.add(approx_size(group_id) + _GROUP_OVERHEAD * (len(specs) + 1))
        accs = entry[1]
        if merge:
            for spec, acc in zip(specs, accs, strict=True):
                acc.merge(doc.get(spec.field))
                if track and spec.grows:
                    tracker.add(approx_size(doc.get(spec.field)))
        elif not track:
            for fn, acc in zip(arguments, accs):  # noqa: B905 (same lengths)
                acc.add(fn(doc, NO_VARS))
        else:
            values = [fn(doc, NO_VARS) for fn in arguments]
            for acc, value in zip(accs, values, strict=True):
                acc.add(value)
            if growing:
                for i in growing:
                    if values[i] is not MISSING:
                        tracker.add(approx_size(values[i]))
    return groups


def _id_key_fn(id_fn: Expr) -> Callable[[Doc], Any]:
    def key(doc: Doc) -> Any:
        value = id_fn(doc, NO_VARS)
        return None if value is MISSING else value

    return key


def _finalize(groups: Groups, specs: list[AccumulatorSpec]) -> Iterator[Doc]:
    for group_id, accs in groups.values():
        out: Doc = {"_id": group_id}
        for spec, acc in zip(specs, accs, strict=True):
            out[spec.field] = acc.result()
        yield out


def _partials(groups: Groups, specs: list[AccumulatorSpec]) -> Iterator[Doc]:
    for group_id, accs in groups.values():
        out: Doc = {"_id": group_id}
        for spec, acc in zip(specs, accs, strict=True):
            out[spec.field] = acc.partial()
        yield out


@stage("$group")
def compile_group(spec: Any, ctx: CompileContext) -> Stage:
    id_fn, specs = parse_group(spec)
    key_fn = _id_key_fn(id_fn)
    limit = ctx.memory_limit_bytes

    def group(docs: Iterator[Doc]) -> Iterator[Doc]:
        groups = _accumulate(docs, key_fn, specs, MemoryTracker(limit, "$group"), merge=False)
        return _finalize(groups, specs)

    return group


@stage("$_partialGroup")
def compile_partial_group(spec: Any, ctx: CompileContext) -> Stage:
    id_fn, specs = parse_group(spec, "$_partialGroup")
    key_fn = _id_key_fn(id_fn)
    limit = ctx.memory_limit_bytes

    def partial_group(docs: Iterator[Doc]) -> Iterator[Doc]:
        groups = _accumulate(docs, key_fn, specs, MemoryTracker(limit, "$group"), merge=False)
        return _partials(groups, specs)

    return partial_group


@stage("$_mergeGroup")
def compile_merge_group(spec: Any, ctx: CompileContext) -> Stage:
    _, specs = parse_group(spec, "$_mergeGroup")
    limit = ctx.memory_limit_bytes

    def key_fn(doc: Doc) -> Any:
        return doc.get("_id")

    def merge_group(docs: Iterator[Doc]) -> Iterator[Doc]:
        groups = _accumulate(docs, key_fn, specs, MemoryTracker(limit, "$group"), merge=True)
        return _finalize(groups, specs)

    return merge_group


def _group_by_expression(spec: Any, stage_name: str) -> Any:
    """$sortByCount / $bucket / $bucketAuto groupBy: a $path or an operator object."""
    if isinstance(spec, str) and spec.startswith("$"):
        return spec
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)).startswith("$"):
        return spec
    raise pipeline_error(
        f"the {stage_name} 'groupBy' must be defined as a $-prefixed path or an expression object"
        if stage_name != "$sortByCount"
        else "the $sortByCount stage specification must be a $-prefixed path or an expression "
        "object"
    )


@stage("$sortByCount")
def compile_sort_by_count(spec: Any, ctx: CompileContext) -> Stage:
    group_by = _group_by_expression(spec, "$sortByCount")
    pipeline = ctx.compile(
        [{"$group": {"_id": group_by, "count": {"$sum": 1}}}, {"$sort": {"count": -1}}], ctx
    )
    return pipeline.run


def _output_specs(spec: dict[str, Any], stage_name: str) -> list[AccumulatorSpec]:
    output = spec.get("output", {"count": {"$sum": 1}})
    if not isinstance(output, dict):
        raise pipeline_error(f"the {stage_name} 'output' field must be an object")
    specs = []
    for field, acc in output.items():
        if not isinstance(field, str) or not field or field.startswith("$") or "." in field:
            raise pipeline_error(f"{stage_name}: invalid output field name '{field}'")
        specs.append(compile_accumulator(field, acc))
    return specs


@stage("$bucket")
def compile_bucket(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the $bucket stage specification must be an object")
    for key in spec:
        if key not in ("groupBy", "boundaries", "default", "output"):
            raise pipeline_error(f"unrecognized option to $bucket: {key}")
    if "groupBy" not in spec or "boundaries" not in spec:
        raise pipeline_error("$bucket requires 'groupBy' and 'boundaries' to be specified")
    group_fn = compile_expression(_group_by_expression(spec["groupBy"], "$bucket"))
    boundaries_spec = spec["boundaries"]
    if not isinstance(boundaries_spec, list) or len(boundaries_spec) < 2:
        raise pipeline_error("the $bucket 'boundaries' field must be an array of at least 2 values")
    boundaries = []
    for b in boundaries_spec:
        ok, value = constant_value(b)
        if not ok or value is None:
            raise pipeline_error("the $bucket 'boundaries' must be constant, non-null values")
        boundaries.append(value)
    ranks = {canonical_rank(b) for b in boundaries}
    if len(ranks) != 1:
        raise pipeline_error("all values in the $bucket 'boundaries' must have the same type")
    keys = [sort_key(b) for b in boundaries]
    if any(keys[i] >= keys[i + 1] for i in range(len(keys) - 1)):
        raise pipeline_error("the $bucket 'boundaries' must be sorted in ascending order")
    has_default = "default" in spec
    default = None
    if has_default:
        ok, default = constant_value(spec["default"])
        if not ok:
            raise pipeline_error("the $bucket 'default' field must be a constant")
        if canonical_rank(default) in ranks and keys[0] <= sort_key(default) < keys[-1]:
            raise pipeline_error(
                "the $bucket 'default' field must be less than the lowest boundary or greater "
                "than or equal to the highest boundary"
            )
    specs = _output_specs(spec, "$bucket")
    limit = ctx.memory_limit_bytes

    def bucket_of(doc: Doc) -> Any:
        value = group_fn(doc, NO_VARS)
        k = sort_key(None if value is MISSING else value)
        if keys[0] <= k < keys[-1]:
            return boundaries[bisect.bisect_right(keys, k) - 1]
        if not has_default:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "$bucket could not find a matching branch for an input, and no default was "
                f"specified (groupBy value: {value!r})",
            )
        return default

    def bucket(docs: Iterator[Doc]) -> Iterator[Doc]:
        groups = _accumulate(docs, bucket_of, specs, MemoryTracker(limit, "$bucket"), merge=False)
        ordered = sorted(groups.items(), key=lambda item: item[0])
        return _finalize(dict(ordered), specs)

    return bucket


@stage("$bucketAuto")
def compile_bucket_auto(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the $bucketAuto stage specification must be an object")
    for key in spec:
        if key not in ("groupBy", "buckets", "output", "granularity"):
            raise pipeline_error(f"unrecognized option to $bucketAuto: {key}")
    if "groupBy" not in spec or "buckets" not in spec:
        raise pipeline_error("$bucketAuto requires 'groupBy' and 'buckets' to be specified")
    group_fn = compile_expression(_group_by_expression(spec["groupBy"], "$bucketAuto"))
    n_buckets = integer_arg(spec["buckets"], "$bucketAuto", "'buckets'")
    if not 0 < n_buckets < 2**31:
        raise pipeline_error("the $bucketAuto 'buckets' field must be a positive 32-bit integer")
    if "granularity" in spec:
        raise LauraError(ErrorCode.NOT_IMPLEMENTED, "$bucketAuto 'granularity' is not supported")
    specs = _output_specs(spec, "$bucketAuto")
    limit = ctx.memory_limit_bytes

    def bucket_auto(docs: Iterator[Doc]) -> Iterator[Doc]:
        tracker = MemoryTracker(limit, "$bucketAuto")
        entries: list[tuple[tuple[Any, ...], int, Any, Doc]] = []
        for seq, doc in enumerate(docs):
            value = group_fn(doc, NO_VARS)
            value = None if value is MISSING else value
            if limit is not None:
                tracker.add(approx_size(doc))
            entries.append((sort_key(value), seq, value, doc))
        entries.sort(key=lambda e: (e[0], e[1]))
        return _auto_buckets(entries, n_buckets, specs)

    return bucket_auto


def _auto_buckets(
    entries: list[tuple[tuple[Any, ...], int, Any, Doc]],
    n_buckets: int,
    specs: list[AccumulatorSpec],
) -> Iterator[Doc]:
    """MongoDB's bucketing: ~n/buckets documents each, equal values kept together."""
    total = len(entries)
    if total == 0:
        return
    size = max(1, int(total / n_buckets + 0.5))  # C++ std::round: halves away from 0
    buckets: list[tuple[Any, Any, list[Accumulator]]] = []
    i = 0
    while i < total and len(buckets) < n_buckets:
        last_bucket = len(buckets) == n_buckets - 1
        start = i
        end = total if last_bucket else min(total, i + size)
        # Keep equal values in one bucket.
        while end < total and entries[end][0] == entries[end - 1][0]:
            end += 1
        accs = [s.factory() for s in specs]
        for _, _, _, doc in entries[start:end]:
            for s, acc in zip(specs, accs, strict=True):
                acc.add(s.argument(doc, NO_VARS))
        low = entries[start][2]
        high = entries[end][2] if end < total else entries[end - 1][2]
        buckets.append((low, high, accs))
        i = end
    for low, high, accs in buckets:
        out: Doc = {"_id": {"min": low, "max": high}}
        for s, acc in zip(specs, accs, strict=True):
            out[s.field] = acc.result()
        yield out
