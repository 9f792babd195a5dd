"""Choosing how to read a collection for a filter: points, ranges, an index or a full scan.

Documents are stored keyed by the encoded ``_id`` (``id_key``) with an index on the
encoded shard key (``shard_key``), plus the collection's secondary indexes. A filter
that pins ``_id`` (equality or ``$in``) becomes primary-key lookups; one that pins
every shard key field (equality, or ``$in`` on a one-field key) becomes point
lookups on the shard key index; ranges (``$gt``/``$gte``/``$lt``/``$lte``) on
``_id`` or on a one-field ranged shard key become range scans; bounds on a prefix
of a secondary index become an ``IndexScan`` (see ``index_bounds``). Everything
else is a full scan in ``_id`` order.

The choice (``choose_plan``) is a simple rule, no cost model: ``_id`` equality
first, then equality on every field of a unique index, then the candidate with the
most leading equality fields (a range on the next field breaks ties), preferring
the shard key, then ``_id`` ranges, then secondary indexes by name. With a sort:
the chosen plan is used in order when it gives the sort; else, when the filter has
no equality to exploit, another index with bounds that gives the order; and when
the filter gives no bounds at all, a whole index in sort order (so a sorted,
limited query stops early instead of sorting everything).

A plan only narrows the candidates: the compiled filter still runs on every
document read, so a plan must (and does) cover every document the filter can match.
Both ``_id`` and shard key values can never be arrays, so plain equality on them is
exact equality, and encoded keys order like BSON values within a type bracket.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson.regex import Regex

from lauradb.bsonkit.keys import encode_value
from lauradb.errors import LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.index_bounds import (
    IndexBounds,
    Intervals,
    index_bounds,
    predicates,
    sort_direction,
)
from shard_stub.index_keys import IndexDef

ID_COLUMN = "id_key"
SHARD_KEY_COLUMN = "shard_key"
MAX_POINTS = 10_000

_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")


@dataclass(frozen=True)
class Points:
    """Exact lookups of encoded keys in ``column`` (sorted, deduplicated)."""

    column: str
    keys: tuple[bytes, ...]


@dataclass(frozen=True)
class Range:
    """A range scan of ``column``; ``None`` bounds are open."""

    column: str
    lo: bytes | None = None
    lo_inclusive: bool = True
    hi: bytes | None = None
    hi_inclusive: bool = True


@dataclass(frozen=True)
class IndexScan:
    """Key ranges ``[lo, hi)`` of a secondary index, in key order (or reversed)."""

    index: IndexDef
    ranges: tuple[tuple[bytes, bytes], ...]
    reverse: bool = False


FULL_INDEX_RANGE = ((b"", b"\xff"),)  # every key (no encoding starts with 0xFF)
FULL_SCAN = Range(ID_COLUMN)
ScanPlan = Points | Range | IndexScan


@dataclass(frozen=True)
class PlanChoice:
    """A plan and whether it yields documents in the requested sort order."""

    plan: ScanPlan
    ordered: bool = False


@dataclass
class _FieldConstraint:
    values: list[Any] | None = None  # candidate values (equality / $in); None: unconstrained
    lo: list[Any] | None = None
    hi: list[Any] | None = None


def _plain(value: Any) -> bool:
    """A value whose equality match is exact equality of encoded keys."""
    if isinstance(value, (list, tuple, Regex)):
        return False
    return not (isinstance(value, Mapping) and any(str(k).startswith("$") for k in value))


def _collect(spec: Mapping[str, Any], out: dict[str, _FieldConstraint]) -> None:
    for name, value in spec.items():
        if name == "$and" and isinstance(value, list):
            for clause in value:
                if isinstance(clause, Mapping):
                    _collect(clause, out)
            continue
        if not isinstance(name, str) or name.startswith("$"):
            continue
        c = out.setdefault(name, _FieldConstraint())
        if isinstance(value, Mapping) and value and all(str(k).startswith("$") for k in value):
            for op, arg in value.items():
                if op == "$eq" and _plain(arg):
                    c.values = [arg] if c.values is None else [*c.values, arg]
                elif op == "$in" and isinstance(arg, list) and all(_plain(v) for v in arg):
                    c.values = list(arg) if c.values is None else c.values + list(arg)
                elif op in ("$gt", "$gte") and _plain(arg):
                    c.lo = [arg] if c.lo is None else [*c.lo, arg]
                elif op in ("$lt", "$lte") and _plain(arg):
                    c.hi = [arg] if c.hi is None else [*c.hi, arg]
        elif _plain(value):
            c.values = [value] if c.values is None else [*c.values, value]


def _point_values(c: _FieldConstraint | None) -> list[Any] | None:
    if c is None or c.values is None:
        return None
    return c.values


def _encoded_points(values: list[Any]) -> tuple[bytes, ...] | None:
    try:
        keys = {encode_value(v) for v in values}
    except LauraError:
        return None
    return tuple(sorted(keys))


def _range(column: str, c: _FieldConstraint | None) -> Range | None:
    if c is None or (c.lo is None and c.hi is None):
        return None
    try:
        lo = max((encode_value(v) for v in c.lo), default=None) if c.lo else None
        hi = min((encode_value(v) for v in c.hi), default=None) if c.hi else None
    except LauraError:
        return None
    # Inclusive bounds on both ends: a superset of what $gt/$lt can match.
    return Range(column, lo, True, hi, True)


def _single_constraint(spec: Mapping[str, Any]) -> dict[str, _FieldConstraint]:
    out: dict[str, _FieldConstraint] = {}
    _collect(spec, out)
    return out


def plan_scan(
    spec: Mapping[str, Any],
    pattern: ShardKeyPattern | None,
    indexes: Sequence[IndexDef] = (),
) -> ScanPlan:
    """The narrowest safe plan for ``spec`` on a collection keyed by ``pattern``."""
    return choose_plan(spec, pattern, indexes).plan


_Score = tuple[int, int, int]


def choose_plan(
    spec: Mapping[str, Any],
    pattern: ShardKeyPattern | None,
    indexes: Sequence[IndexDef] = (),
    sort_fields: Sequence[tuple[str, int]] | None = None,
) -> PlanChoice:
    """The plan for ``spec`` (and, if possible, one giving ``sort_fields`` order)."""
    base = _base_plan(spec, pattern)
    if isinstance(base, Points) and base.column == ID_COLUMN:
        return PlanChoice(base, _id_ordered(base, sort_fields))
    candidates: list[tuple[_Score, ScanPlan, IndexBounds | None]] = []
    if base != FULL_SCAN:
        eq = len(pattern.fields) if pattern is not None and isinstance(base, Points) else 0
        candidates.append(((0, eq, int(isinstance(base, Range))), base, None))
    usable = sorted(indexes, key=lambda ix: ix.name)
    preds = _predicates(spec) if usable else {}
    if preds:
        for ix in usable:
            bounds = index_bounds(ix, preds)
            if bounds is None:
                continue
            unique_eq = int(
                ix.unique and bounds.single_fields == len(ix.fields) and not ix.multikey
            )
            score = (unique_eq, bounds.eq_fields, int(bounds.range_field))
            candidates.append((score, IndexScan(ix, bounds.ranges), bounds))
    best: tuple[_Score, ScanPlan, IndexBounds | None] | None = None
    for cand in candidates:  # the first of the highest score wins
        if best is None or cand[0] > best[0]:
            best = cand
    if not sort_fields:
        return PlanChoice(best[1] if best is not None else FULL_SCAN)
    if best is None:
        plan: ScanPlan = FULL_SCAN
        if _id_ordered(plan, sort_fields):
            return PlanChoice(plan, True)
    else:
        plan = best[1]
        bounds = best[2]
        if isinstance(plan, IndexScan) and bounds is not None:
            reverse = sort_direction(plan.index, sort_fields, bounds.single_fields)
            if reverse is not None:
                return PlanChoice(IndexScan(plan.index, plan.ranges, reverse), True)
        elif _id_ordered(plan, sort_fields):
            return PlanChoice(plan, True)
        if best[0][1] > 0:  # equality bounds: cheaper to sort what they find
            return PlanChoice(plan)
    for _score, cand_plan, bounds in candidates:  # an index with bounds and the order
        if isinstance(cand_plan, IndexScan) and bounds is not None:
            reverse = sort_direction(cand_plan.index, sort_fields, bounds.single_fields)
            if reverse is not None:
                return PlanChoice(IndexScan(cand_plan.index, cand_plan.ranges, reverse), True)
    if best is not None:  # keep the filter's bounds rather than read everything in order
        return PlanChoice(plan)
    for ix in usable:  # no bounds at all: a whole index in sort order
        if ix.sparse:
            continue
        reverse = sort_direction(ix, sort_fields, 0)
        if reverse is not None:
            return PlanChoice(IndexScan(ix, FULL_INDEX_RANGE, reverse), True)
    return PlanChoice(plan)


def _predicates(spec: Mapping[str, Any]) -> dict[str, list[Intervals]]:
    try:
        return predicates(spec)
    except Exception:  # a malformed filter: the filter compiler reports it
        return {}


def _id_ordered(plan: ScanPlan, sort_fields: Sequence[tuple[str, int]] | None) -> bool:
    """Whether an ``_id``-ordered plan gives the sort (ascending ``_id`` only)."""
    if not sort_fields:
        return False
    if list(sort_fields) != [("_id", 1)]:
        return False
    return isinstance(plan, (Points, Range)) and plan.column == ID_COLUMN


def _base_plan(spec: Mapping[str, Any], pattern: ShardKeyPattern | None) -> ScanPlan:
    """The plan over ``_id`` and the shard key only (the original planner)."""
    try:
        constraints = _single_constraint(spec)
    except Exception:  # a malformed filter: the filter compiler reports it
        return FULL_SCAN
    id_values = _point_values(constraints.get("_id"))
    if id_values is not None and _single_source(spec, "_id"):
        keys = _encoded_points(id_values)
        if keys is not None and len(keys) <= MAX_POINTS:
            return Points(ID_COLUMN, keys)
    if pattern is not None:
        plan = _shard_key_plan(spec, constraints, pattern)
        if plan is not None:
            return plan
    id_range = _range(ID_COLUMN, constraints.get("_id"))
    if id_range is not None:
        return id_range
    if pattern is not None and not pattern.hashed and len(pattern.fields) == 1:
        sk_range = _range(SHARD_KEY_COLUMN, constraints.get(pattern.fields[0]))
        if sk_range is not None:
            return sk_range
    return FULL_SCAN


def _shard_key_plan(
    spec: Mapping[str, Any], constraints: dict[str, _FieldConstraint], pattern: ShardKeyPattern
) -> Points | None:
    per_field: list[list[Any]] = []
    for f in pattern.fields:
        values = _point_values(constraints.get(f))
        if values is None or not _single_source(spec, f):
            return None
        per_field.append(values)
    total = 1
    for values in per_field:
        total *= len(values)
    if total > MAX_POINTS:
        return None
    try:
        keys = {pattern.key_for_values(list(combo)) for combo in itertools.product(*per_field)}
    except LauraError:
        return None
    return Points(SHARD_KEY_COLUMN, tuple(sorted(keys)))


def _single_source(spec: Mapping[str, Any], field: str) -> bool:
    """True when ``field``'s equality/$in candidates come from one place only.

    Candidates from several clauses (``{a: 1, $and: [{a: 2}]}``) would have to be
    intersected; rather than do that we fall back to a broader plan.
    """
    count = 0

    def visit(s: Mapping[str, Any]) -> None:
        nonlocal count
        for name, value in s.items():
            if name == "$and" and isinstance(value, list):
                for clause in value:
                    if isinstance(clause, Mapping):
                        visit(clause)
            elif name == field:
                if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
                    count += sum(1 for k in value if k in ("$eq", "$in"))
                else:
                    count += 1

    visit(spec)
    return count == 1
