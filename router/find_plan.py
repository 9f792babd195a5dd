"""How a find is split between the shards and the router (pure logic).

* skip/limit: one shard gets them unchanged; several shards get ``limit = skip +
  limit`` (when limited) and no skip, and the router applies skip and limit after
  the merge. A negative limit means "at most |limit| documents in a single batch".
* projection: when the user's projection would remove a field the merge sorts on,
  the shards get a widened projection that keeps the sort fields and the router
  applies the user's projection after merging (which strips them again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["FindPlan", "plan_find", "plan_projection", "widen_projection"]


@dataclasses.dataclass(frozen=True)
class FindPlan:
    shard_limit: int
    shard_skip: int
    router_skip: int
    router_limit: int  # 0: unlimited
    single_batch: bool


def plan_find(skip: int, limit: int, n_shards: int) -> FindPlan:
    """Skip/limit for the shards and for the router (``skip`` already validated >= 0)."""
    single_batch = limit < 0
    limit = abs(limit)
    if n_shards <= 1:
        return FindPlan(limit, skip, 0, limit, single_batch)
    shard_limit = skip + limit if limit else 0
    return FindPlan(shard_limit, 0, skip, limit, single_batch)


def _is_number_flag(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, str)


def _truthy(value: Any) -> bool:
    return bool(value)


def _kind(spec: Mapping[str, Any]) -> str:
    """'inclusion', 'exclusion' or 'complex' for a projection document."""
    kinds: set[str] = set()
    for key, value in spec.items():
        if not isinstance(key, str) or "$" in key or not _is_number_flag(value):
            return "complex"
        if key == "_id":
            continue  # _id may go either way in both kinds
        kinds.add("inclusion" if _truthy(value) else "exclusion")
    if not kinds:
        # only _id
        value = spec.get("_id", 1)
        return "inclusion" if _truthy(value) else "exclusion"
    if len(kinds) > 1:
        return "complex"
    return kinds.pop()


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _kept(spec: Mapping[str, Any], kind: str, path: str) -> bool:
    """Would the plain projection ``spec`` keep the whole value at ``path``?"""
    top = path.split(".", 1)[0]
    if top == "_id":
        flag = spec.get("_id", 1)
        if not _truthy(flag):
            return False
        if kind == "inclusion" and path == "_id":
            return True
    if kind == "inclusion":
        return any(path == k or path.startswith(k + ".") for k in spec if _truthy(spec[k]))
    return not any(_overlaps(path, k) for k in spec if not _truthy(spec[k]))


def widen_projection(
    spec: Mapping[str, Any], sort_paths: list[str]
) -> dict[str, Any] | None:
    """A projection for the shards that keeps ``sort_paths`` too.

    Returns ``spec`` itself (as a dict) when it already keeps every sort path, and
    ``None`` when the shards must send whole documents (projections with operators
    or expressions). Applying ``spec`` to a document projected with the result gives
    the same document as applying ``spec`` alone.
    """
    if not spec or not sort_paths:
        return dict(spec)
    if any(isinstance(k, str) and (k == "$" or k.endswith(".$")) for k in spec):
        # A positional projection needs the filter's match position, which only the
        # shard knows: project there (a sort on a field it removes sorts as null).
        return dict(spec)
    kind = _kind(spec)
    if kind == "complex":
        return None
    if all(_kept(spec, kind, p) for p in sort_paths):
        return dict(spec)
    out = dict(spec)
    if kind == "inclusion":
        for p in sort_paths:
            if _kept(out, kind, p):
                continue
            if p.split(".", 1)[0] == "_id" and not _truthy(out.get("_id", 1)):
                out.pop("_id")
                if p == "_id":
                    continue
            for k in [k for k in out if k != "_id" and _overlaps(k, p)]:
                del out[k]
            out[p] = 1
        return out
    for p in sort_paths:
        for k in [k for k in out if _overlaps(k, p)]:
            del out[k]
    return out


def plan_projection(
    spec: Mapping[str, Any], sort_paths: list[str]
) -> tuple[dict[str, Any] | None, bool]:
    """``(shard projection, router must re-project)``.

    The shard projection ``None`` means "no projection" (whole documents).
    """
    widened = widen_projection(spec, sort_paths)
    if widened is None:
        return None, True
    if widened == dict(spec) and list(widened) == list(spec):
        return widened, False
    return widened, True
