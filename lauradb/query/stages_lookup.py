"""Stages that read other collections or run sub-pipelines: $lookup, $unionWith, $facet.

Foreign collections come from the pipeline's ``resolver(name) -> Iterable[dict]``; each
is read once per ``Pipeline.run`` (on first need) and kept as a list.

``$lookup`` with ``let``: the variables are made visible to the whole sub-pipeline
(including ``$expr`` inside ``$match``) through ``expr_core.outer_variables``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lauradb.bsonkit.order import sort_key
from lauradb.query.common import MISSING
from lauradb.query.expr_core import compile_expression, outer_variables, validate_variable_name
from lauradb.query.paths import iter_path_candidates
from lauradb.query.stages_base import (
    NO_VARS,
    CompileContext,
    Doc,
    Resolver,
    Stage,
    output_field_name,
    output_path,
    pipeline_error,
    set_nested,
    stage,
)

_NULL_KEY = sort_key(None)
_LOOKUP_OPTIONS = ("from", "localField", "foreignField", "as", "let", "pipeline")
# Stages a $facet sub-pipeline may not contain.
FACET_FORBIDDEN = frozenset(
    {"$facet", "$out", "$merge", "$collStats", "$indexStats", "$geoNear", "$changeStream",
     "$planCacheStats", "$documents"}
)  # fmt: skip
# Stages a $lookup / $unionWith sub-pipeline may not contain.
SUBPIPELINE_FORBIDDEN = frozenset({"$out", "$merge", "$changeStream"})


def check_subpipeline(
    stages: Any, owner: str, forbidden: frozenset[str]
) -> list[Mapping[str, Any]]:
    if not isinstance(stages, list):
        raise pipeline_error(f"{owner}: 'pipeline' must be an array of stages")
    for spec in stages:
        if isinstance(spec, dict) and len(spec) == 1:
            name = next(iter(spec))
            if name in forbidden:
                raise pipeline_error(f"{name} is not allowed to be used within a {owner} stage")
    return stages


def _local_values(value: Any, parts: Sequence[str], i: int, out: list[Any]) -> None:
    """MongoDB's extractAllElementsAlongPath: arrays traversed, leaf arrays expanded."""
    if i == len(parts):
        if isinstance(value, list):
            out.extend(value)
        elif value is not MISSING:
            out.append(value)
        return
    if isinstance(value, dict):
        child = value.get(parts[i], MISSING)
        if child is not MISSING:
            _local_values(child, parts, i + 1, out)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _local_values(item, parts, i, out)


class _ForeignIndex:
    """Foreign documents by the keys of ``foreignField`` (as an equality match sees them)."""

    def __init__(self, docs: list[Doc], parts: tuple[str, ...]) -> None:
        self.docs = docs
        self.positions: dict[Any, list[int]] = {}
        for pos, doc in enumerate(docs):
            seen = set()
            for value in iter_path_candidates(doc, parts):
                key = _NULL_KEY if value is MISSING else sort_key(value)
                if key not in seen:
                    seen.add(key)
                    self.positions.setdefault(key, []).append(pos)

    def matches(self, local: Doc, parts: tuple[str, ...]) -> list[Doc]:
        values: list[Any] = []
        _local_values(local, parts, 0, values)
        keys = {sort_key(v) for v in values} if values else {_NULL_KEY}
        if len(keys) == 1:
            found: Sequence[int] = self.positions.get(next(iter(keys)), [])
        else:
            merged: set[int] = set()
            for key in keys:
                merged.update(self.positions.get(key, ()))
            found = sorted(merged)
        return [self.docs[p] for p in found]


def _field_path(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        raise pipeline_error(f"$lookup argument '{what}' must be a non-empty string")
    parts = tuple(value.split("."))
    if any(not p or p.startswith("$") for p in parts):
        raise pipeline_error(f"$lookup argument '{what}' is not a valid field path: '{value}'")
    return parts


@stage("$lookup")
def compile_lookup(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("the $lookup stage specification must be an object")
    for key in spec:
        if key not in _LOOKUP_OPTIONS:
            raise pipeline_error(f"unknown argument to $lookup: {key}")
    if "as" not in spec:
        raise pipeline_error("must specify 'as' field for a $lookup")
    as_parts = output_path(spec["as"], "$lookup", "as")
    source = spec.get("from")
    if not isinstance(source, str) or not source:
        raise pipeline_error("$lookup requires 'from' to be a non-empty collection name")
    has_local = "localField" in spec
    if has_local != ("foreignField" in spec):
        raise pipeline_error("$lookup requires both or neither of 'localField' and 'foreignField'")
    if not has_local and "pipeline" not in spec:
        raise pipeline_error(
            "$lookup requires either 'pipeline' or both 'localField' and 'foreignField' to be "
            "specified"
        )
    if "let" in spec and "pipeline" not in spec:
        raise pipeline_error("$lookup with 'let' must also specify a 'pipeline'")
    local_parts = _field_path(spec["localField"], "localField") if has_local else ()
    foreign_parts = _field_path(spec["foreignField"], "foreignField") if has_local else ()
    let_vars: list[tuple[str, Any]] = []
    if "let" in spec:
        if not isinstance(spec["let"], dict):
            raise pipeline_error("$lookup argument 'let' must be an object")
        for name, expr in spec["let"].items():
            validate_variable_name(name)
            let_vars.append((name, compile_expression(expr)))
    sub = None
    if "pipeline" in spec:
        stages = check_subpipeline(spec["pipeline"], "$lookup", SUBPIPELINE_FORBIDDEN)
        sub = ctx.compile(stages, ctx.nested("$lookup"))
    resolver = ctx.need_resolver("$lookup")

    def lookup(docs: Iterator[Doc]) -> Iterator[Doc]:
        foreign: list[Doc] | None = None
        index: _ForeignIndex | None = None
        for doc in docs:
            if foreign is None:
                foreign = list(resolver(source))
            if has_local:
                if index is None:
                    index = _ForeignIndex(foreign, foreign_parts)
                candidates = index.matches(doc, local_parts)
            else:
                candidates = foreign
            if sub is not None:
                values = {name: fn(doc, NO_VARS) for name, fn in let_vars}
                with outer_variables(values):
                    result = list(sub.run(candidates))
            else:
                result = list(candidates)
            yield set_nested(doc, as_parts, result)

    return lookup


@stage("$unionWith")
def compile_union_with(spec: Any, ctx: CompileContext) -> Stage:
    if isinstance(spec, str):
        spec = {"coll": spec}
    if not isinstance(spec, dict):
        raise pipeline_error("the $unionWith stage specification must be a string or an object")
    for key in spec:
        if key not in ("coll", "pipeline"):
            raise pipeline_error(f"unknown argument to $unionWith: {key}")
    coll = spec.get("coll")
    if not isinstance(coll, str) or not coll:
        raise pipeline_error("$unionWith requires 'coll' to be a non-empty collection name")
    sub = None
    if "pipeline" in spec:
        sub = ctx.compile(
            check_subpipeline(spec["pipeline"], "$unionWith", SUBPIPELINE_FORBIDDEN),
            ctx.nested("$unionWith"),
        )
    resolver: Resolver = ctx.need_resolver("$unionWith")

    def union_with(docs: Iterator[Doc]) -> Iterator[Doc]:
        def others() -> Iterator[Doc]:
            source = iter(resolver(coll))
            yield from (sub.run(source) if sub is not None else source)

        return itertools.chain(docs, others())

    return union_with


@stage("$facet")
def compile_facet(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict) or not spec:
        raise pipeline_error("the $facet specification must be a non-empty object")
    if ctx.within == "$facet":
        raise pipeline_error("$facet is not allowed to be used within a $facet stage")
    facets: list[tuple[str, Callable[[Iterator[Doc]], Iterator[Doc]]]] = []
    for name, stages in spec.items():
        output_field_name(name, "$facet", "output field")
        check_subpipeline(stages, "$facet", FACET_FORBIDDEN)
        if not stages:
            raise pipeline_error(f"sub-pipeline in $facet stage cannot be empty: '{name}'")
        facets.append((name, ctx.compile(stages, ctx.nested("$facet")).run))

    def facet(docs: Iterator[Doc]) -> Iterator[Doc]:
        inputs = list(docs)
        out: Doc = {}
        for name, run in facets:
            out[name] = list(run(iter(inputs)))
        yield out

    return facet
