"""Streaming and simple blocking stages: $match $limit $skip $sort $unwind $count
$replaceRoot/$replaceWith $sample $redact.

($project/$addFields/$set/$unset are in ``stages_project``, $group and the bucket
stages in ``stages_group``, $lookup/$unionWith/$facet in ``stages_lookup``.)
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from typing import Any

from bson.int64 import Int64

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.accumulators import approx_size
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    DESCEND,
    KEEP,
    PRUNE,
    compile_expression,
    split_field_path,
    type_name,
)
from lauradb.query.filter import compile_filter
from lauradb.query.sort import compile_sort
from lauradb.query.stages_base import (
    NO_VARS,
    CompileContext,
    Doc,
    MemoryTracker,
    Stage,
    count_value,
    get_nested,
    integer_arg,
    output_field_name,
    output_path,
    pipeline_error,
    remove_nested,
    set_nested,
    stage,
)


@stage("$match")
def compile_match(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the match filter must be an expression in an object")
    matcher = compile_filter(spec)

    def match(docs: Iterator[Doc]) -> Iterator[Doc]:
        return filter(matcher, docs)

    return match


@stage("$limit")
def compile_limit(spec: Any, ctx: CompileContext) -> Stage:
    n = integer_arg(spec, "$limit")
    if n <= 0:
        raise pipeline_error(f"the limit must be positive, found {n}")

    def limit(docs: Iterator[Doc]) -> Iterator[Doc]:
        return itertools.islice(docs, n)

    return limit


@stage("$skip")
def compile_skip(spec: Any, ctx: CompileContext) -> Stage:
    n = integer_arg(spec, "$skip")
    if n < 0:
        raise pipeline_error(f"invalid argument to $skip stage: cannot be negative, found {n}")

    def skip(docs: Iterator[Doc]) -> Iterator[Doc]:
        return itertools.islice(docs, n, None)

    return skip


class _Worst:
    """A heap entry ordered so that the heap's top is the worst (largest) document."""

    __slots__ = ("doc", "key", "seq", "size")

    def __init__(self, key: bytes, seq: int, doc: Doc, size: int) -> None:
        self.key = key
        self.seq = seq
        self.doc = doc
        self.size = size

    def __lt__(self, other: _Worst) -> bool:
        return (self.key, self.seq) > (other.key, other.seq)


@stage("$sort")
def compile_sort_stage(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the $sort key specification must be an object")
    if not spec:
        raise pipeline_error("$sort stage must have at least one sort key")
    key = compile_sort(spec)
    limit = ctx.sort_limit
    memory = ctx.memory_limit_bytes

    def sort_all(docs: Iterator[Doc]) -> Iterator[Doc]:
        if memory is None:
            buffer = list(docs)
        else:
            tracker = MemoryTracker(memory, "$sort")
            buffer = []
            for doc in docs:
                tracker.add(approx_size(doc))
                buffer.append(doc)
        buffer.sort(key=key)
        return iter(buffer)

    def top_k(docs: Iterator[Doc]) -> Iterator[Doc]:
        assert limit is not None
        tracker = MemoryTracker(memory, "$sort")
        heap: list[_Worst] = []
        for seq, doc in enumerate(docs):
            k = key(doc)
            if len(heap) < limit:
                size = approx_size(doc) if memory is not None else 0
                tracker.add(size)
                heapq.heappush(heap, _Worst(k, seq, doc, size))
            elif k < heap[0].key:
                size = approx_size(doc) if memory is not None else 0
                tracker.add(size - heap[0].size)
                heapq.heapreplace(heap, _Worst(k, seq, doc, size))
        heap.sort(key=lambda e: (e.key, e.seq))
        return iter([e.doc for e in heap])

    return sort_all if limit is None else top_k


@stage("$count")
def compile_count(spec: Any, ctx: CompileContext) -> Stage:
    name = output_field_name(spec, "$count", "count field")

    def count(docs: Iterator[Doc]) -> Iterator[Doc]:
        n = sum(1 for _ in docs)
        if n:
            yield {name: count_value(n)}

    return count


_UNWIND_OPTIONS = ("path", "includeArrayIndex", "preserveNullAndEmptyArrays")


@stage("$unwind")
def compile_unwind(spec: Any, ctx: CompileContext) -> Stage:
    index_parts: tuple[str, ...] | None = None
    preserve = False
    if isinstance(spec, str):
        path = spec
    elif isinstance(spec, dict):
        for key in spec:
            if key not in _UNWIND_OPTIONS:
                raise pipeline_error(f"unrecognized option to $unwind stage: {key}")
        if "path" not in spec:
            raise pipeline_error("no path specified to $unwind stage")
        path = spec["path"]
        if "includeArrayIndex" in spec:
            index_parts = output_path(spec["includeArrayIndex"], "$unwind", "includeArrayIndex")
        if "preserveNullAndEmptyArrays" in spec:
            preserve = spec["preserveNullAndEmptyArrays"]
            if not isinstance(preserve, bool):
                raise pipeline_error(
                    "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage"
                )
    else:
        raise pipeline_error(
            "expected either a string or an object as specification for $unwind stage, got "
            f"{type_name(spec)}"
        )
    if not isinstance(path, str):
        raise pipeline_error(
            f"expected a string as the path for $unwind stage, got {type_name(path)}"
        )
    if not path.startswith("$") or path.startswith("$$"):
        raise pipeline_error(f"path option to $unwind stage should be prefixed with a '$': {path}")
    try:
        parts = split_field_path(path[1:])
    except LauraError as exc:
        raise pipeline_error(f"$unwind: {exc.message}") from None

    def with_index(doc: Doc, index: Any) -> Doc:
        return set_nested(doc, index_parts, index) if index_parts is not None else doc

    def unwind(docs: Iterator[Doc]) -> Iterator[Doc]:
        for doc in docs:
            value = get_nested(doc, parts)
            if isinstance(value, list):
                if value:
                    for i, item in enumerate(value):
                        out = set_nested(doc, parts, item)
                        if index_parts is not None:
                            out = set_nested(out, index_parts, Int64(i))
                        yield out
                elif preserve:
                    yield with_index(remove_nested(doc, parts), None)
            elif value is None or value is MISSING:
                if preserve:
                    yield with_index(doc, None)
            else:
                yield with_index(doc, None)

    return unwind


def _replace_root(expr_spec: Any, name: str) -> Stage:
    fn = compile_expression(expr_spec)

    def replace_root(docs: Iterator[Doc]) -> Iterator[Doc]:
        for doc in docs:
            root = fn(doc, NO_VARS)
            if not isinstance(root, dict):
                raise LauraError(
                    ErrorCode.TYPE_MISMATCH,
                    f"'newRoot' expression must evaluate to an object, but resulting value was: "
                    f"{'MISSING' if root is MISSING else repr(root)}. Type of resulting value: "
                    f"'{type_name(root)}'. Input document: {doc!r}",
                )
            yield root

    return replace_root


@stage("$replaceRoot")
def compile_replace_root(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("expected an object as specification for $replaceRoot stage")
    for key in spec:
        if key != "newRoot":
            raise pipeline_error(f"unrecognized option to $replaceRoot stage: {key}")
    if "newRoot" not in spec:
        raise pipeline_error("no newRoot specified for the $replaceRoot stage")
    return _replace_root(spec["newRoot"], "$replaceRoot")


@stage("$replaceWith")
def compile_replace_with(spec: Any, ctx: CompileContext) -> Stage:
    return _replace_root(spec, "$replaceWith")


@stage("$sample")
def compile_sample(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the $sample stage specification must be an object")
    for key in spec:
        if key != "size":
            raise pipeline_error(f"unrecognized option to $sample: {key}")
    if "size" not in spec:
        raise pipeline_error("$sample stage must specify a size")
    size = integer_arg(spec["size"], "$sample", "size")
    if size < 0:
        raise pipeline_error("size argument to $sample must not be negative")
    memory = ctx.memory_limit_bytes

    def sample(docs: Iterator[Doc]) -> Iterator[Doc]:
        rng = random.Random()
        tracker = MemoryTracker(memory, "$sample")
        reservoir: list[Doc] = []
        for i, doc in enumerate(docs):
            if i < size:
                if memory is not None:
                    tracker.add(approx_size(doc))
                reservoir.append(doc)
            else:
                j = rng.randint(0, i)
                if j < size:
                    reservoir[j] = doc
        rng.shuffle(reservoir)
        return iter(reservoir)

    return sample


@stage("$redact")
def compile_redact(spec: Any, ctx: CompileContext) -> Stage:
    fn = compile_expression(spec)

    def redact_doc(doc: Doc, root: Doc) -> Any:
        decision = fn(doc, {"ROOT": root, "CURRENT": doc})
        if decision == KEEP:
            return doc
        if decision == PRUNE:
            return MISSING
        if decision == DESCEND:
            out: Doc = {}
            for key, value in doc.items():
                if isinstance(value, dict):
                    sub = redact_doc(value, root)
                    if sub is not MISSING:
                        out[key] = sub
                elif isinstance(value, list):
                    out[key] = redact_array(value, root)
                else:
                    out[key] = value
            return out
        raise LauraError(
            ErrorCode.BAD_VALUE,
            "$redact's expression should not return anything aside from the variables $$KEEP, "
            f"$$DESCEND, and $$PRUNE, but returned {decision!r}",
        )

    def redact_array(values: list[Any], root: Doc) -> list[Any]:
        out = []
        for value in values:
            if isinstance(value, dict):
                sub = redact_doc(value, root)
                if sub is not MISSING:
                    out.append(sub)
            elif isinstance(value, list):
                out.append(redact_array(value, root))
            else:
                out.append(value)
        return out

    def redact(docs: Iterator[Doc]) -> Iterator[Doc]:
        for doc in docs:
            result = redact_doc(doc, doc)
            if result is not MISSING:
                yield result

    return redact


@stage("$out", "$merge")
def compile_output(spec: Any, ctx: CompileContext) -> Stage:
    raise LauraError(
        ErrorCode.NOT_IMPLEMENTED,
        "$out and $merge are executed by the router, not by the pipeline engine",
    )
