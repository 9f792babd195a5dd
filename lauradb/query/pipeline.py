"""Aggregation pipelines: ``compile_pipeline(stages) -> Pipeline``; ``Pipeline.run(docs)``.

Stages: $match $project $addFields/$set $unset $group $sort $limit $skip $unwind
$count $sortByCount $replaceRoot/$replaceWith $facet $bucket $bucketAuto $sample
$lookup (equality and let/pipeline forms) $unionWith $redact. ($out/$merge are
recognised but left to the router: compiling them raises NOT_IMPLEMENTED.)

Internal stages (names start with ``$_``) produced by ``lauradb.query.split`` are
accepted too: ``$_partialGroup`` and ``$_mergeGroup`` (see ``stages_group``). They
are not meant for users, but are harmless if a user sends them.

Blocking stages ($group, $sort, $bucket*, $sample) count approximate bytes held and
raise EXCEEDED_MEMORY_LIMIT (146) above ``memory_limit_bytes`` (None: no limit).
``$sort`` followed by ``$limit`` (possibly with ``$skip`` between) keeps only the
top k documents in a heap. ``Pipeline.run`` is lazy: documents are pulled from the
input as the output is consumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import lauradb.query.stages
import lauradb.query.stages_group
import lauradb.query.stages_lookup
import lauradb.query.stages_project  # noqa: F401  (importing the stage modules registers them)
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.stages_base import (
    STAGES,
    CompileContext,
    Doc,
    Resolver,
    Stage,
    integer_arg,
    pipeline_error,
)

__all__ = ["Pipeline", "compile_pipeline"]

_LAST_ONLY = ("$out", "$merge")


class Pipeline:
    """A compiled pipeline; ``run`` may be called any number of times."""

    __slots__ = ("_stages", "stage_names")

    def __init__(self, compiled: list[tuple[str, Stage]]) -> None:
        self._stages = [fn for _, fn in compiled]
        self.stage_names = [name for name, _ in compiled]

    def run(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        it: Iterator[Doc] = iter(docs)
        for fn in self._stages:
            it = fn(it)
        return it

    def __repr__(self) -> str:
        return f"Pipeline({self.stage_names})"


def compile_pipeline(
    stages: Sequence[Mapping[str, Any]],
    *,
    resolver: Resolver | None = None,
    memory_limit_bytes: int | None = None,
) -> Pipeline:
    """Validate and compile ``stages``; ``resolver(name)`` reads collections ($lookup)."""
    if memory_limit_bytes is not None and (
        isinstance(memory_limit_bytes, bool)
        or not isinstance(memory_limit_bytes, int)
        or memory_limit_bytes <= 0
    ):
        raise LauraError(ErrorCode.BAD_VALUE, "memory_limit_bytes must be a positive integer")
    ctx = CompileContext(resolver, memory_limit_bytes, _compile)
    try:
        return _compile(stages, ctx)
    except RecursionError:
        raise LauraError(ErrorCode.NESTING_TOO_DEEP, "pipeline is nested too deeply") from None


def stage_name(spec: Any) -> str:
    """The name of a stage document, validating its shape."""
    if not isinstance(spec, Mapping):
        raise pipeline_error("Each element of the 'pipeline' array must be an object")
    if len(spec) != 1:
        raise pipeline_error(
            "A pipeline stage specification object must contain exactly one field, found "
            f"{len(spec)}"
        )
    name = next(iter(spec))
    if not isinstance(name, str) or name not in STAGES:
        raise pipeline_error(f"Unrecognized pipeline stage name: {name!r}")
    return name


def _compile(stages: Sequence[Mapping[str, Any]], ctx: CompileContext) -> Pipeline:
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence):
        raise pipeline_error("a pipeline must be an array of stage documents")
    names = [stage_name(spec) for spec in stages]
    compiled: list[tuple[str, Stage]] = []
    for i, (name, spec) in enumerate(zip(names, stages, strict=True)):
        if name in _LAST_ONLY and i != len(stages) - 1:
            raise pipeline_error(f"{name} can only be the final stage in the pipeline")
        stage_ctx = ctx
        if name == "$sort":
            stage_ctx = CompileContext(
                ctx.resolver,
                ctx.memory_limit_bytes,
                ctx.compile,
                ctx.within,
                _limit_after(names, stages, i),
            )
        compiled.append((name, STAGES[name](spec[name], stage_ctx)))
    return Pipeline(compiled)


def _limit_after(names: list[str], stages: Sequence[Mapping[str, Any]], i: int) -> int | None:
    """How many leading documents the stages after ``i`` need, if bounded by a $limit."""
    offset = 0
    for name, spec in zip(names[i + 1 :], stages[i + 1 :], strict=True):
        try:
            if name == "$skip":
                offset += max(0, integer_arg(spec[name], "$skip"))
                continue
            if name == "$limit":
                n = integer_arg(spec[name], "$limit")
                return offset + n if n > 0 else None
        except LauraError:
            return None
        return None
    return None
