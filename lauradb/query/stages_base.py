"""What every aggregation stage shares: the registry, the compile context, helpers.

A stage compiles to ``Stage``: a function from the input iterator to the output
iterator (usually a generator), called once per ``Pipeline.run``; per-run state
(buffers, caches of foreign collections) lives inside that call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING

if TYPE_CHECKING:
    from lauradb.query.pipeline import Pipeline

Doc = dict[str, Any]
Stage = Callable[[Iterator[Doc]], Iterator[Doc]]
Resolver = Callable[[str], Iterable[Doc]]

# Expressions evaluated at the top of a document get no user variables; ROOT and
# CURRENT default to the document itself. Never mutated.
NO_VARS: Mapping[str, Any] = {}


@dataclass(frozen=True)
class CompileContext:
    resolver: Resolver | None
    memory_limit_bytes: int | None
    compile: Callable[[Sequence[Mapping[str, Any]], CompileContext], Pipeline]
    within: str | None = None  # "$facet" or "$lookup" for sub-pipelines
    # For $sort: the number of leading documents the rest of the pipeline needs
    # ($sort followed by $limit, or $skip then $limit), None when it needs them all.
    sort_limit: int | None = None

    def nested(self, within: str) -> CompileContext:
        return replace(self, within=within, sort_limit=None)

    def need_resolver(self, stage: str) -> Resolver:
        if self.resolver is None:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"{stage} is not available here: the pipeline has no collection resolver",
            )
        return self.resolver


StageCompiler = Callable[[Any, CompileContext], Stage]
STAGES: dict[str, StageCompiler] = {}


def stage(*names: str) -> Callable[[StageCompiler], StageCompiler]:
    def deco(fn: StageCompiler) -> StageCompiler:
        for name in names:
            STAGES[name] = fn
        return fn

    return deco


def pipeline_error(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_PIPELINE, message)


class MemoryTracker:
    """Counts approximate bytes held by a blocking stage against the limit."""

    __slots__ = ("limit", "stage", "used")

    def __init__(self, limit: int | None, stage: str) -> None:
        self.limit = limit
        self.stage = stage
        self.used = 0

    def add(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise LauraError(
                ErrorCode.EXCEEDED_MEMORY_LIMIT,
                f"{self.stage} exceeded the memory limit of {self.limit} bytes "
                f"(needs at least {self.used} bytes); add a $match or $limit, or raise "
                "the limit",
            )


def integer_arg(value: Any, stage: str, what: str = "argument") -> int:
    """A whole number argument (int, Int64, or an integral double/decimal)."""
    if isinstance(value, bool):
        raise pipeline_error(f"invalid {what} to {stage} stage: expected a number, got bool")
    if isinstance(value, (int, Int64)):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise pipeline_error(
                f"invalid {what} to {stage} stage: Cannot represent {value} as a 64-bit integer"
            )
        return int(value)
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        if not d.is_finite() or d != d.to_integral_value():
            raise pipeline_error(
                f"invalid {what} to {stage} stage: Cannot represent {value} as a 64-bit integer"
            )
        return int(d)
    raise pipeline_error(f"invalid {what} to {stage} stage: expected a number, got {value!r}")


def output_field_name(name: Any, stage: str, what: str = "field") -> str:
    """A plain (not dotted, not $-prefixed, non-empty) output field name."""
    if not isinstance(name, str) or not name:
        raise pipeline_error(f"the {stage} {what} must be a non-empty string")
    if name.startswith("$"):
        raise pipeline_error(f"the {stage} {what} cannot be a $-prefixed path: '{name}'")
    if "." in name:
        raise pipeline_error(f"the {stage} {what} cannot contain '.': '{name}'")
    if "\x00" in name:
        raise pipeline_error(f"the {stage} {what} cannot contain a null byte")
    return name


def output_path(path: Any, stage: str, what: str) -> tuple[str, ...]:
    """A dotted output path (``as`` of $lookup, ``includeArrayIndex``...)."""
    if not isinstance(path, str) or not path:
        raise pipeline_error(f"{stage}: '{what}' must be a non-empty string")
    if path.startswith("$"):
        raise pipeline_error(f"{stage}: '{what}' may not start with '$': '{path}'")
    parts = tuple(path.split("."))
    if any(not p or p.startswith("$") for p in parts):
        raise pipeline_error(f"{stage}: '{what}' is not a valid field path: '{path}'")
    return parts


def get_nested(doc: Any, parts: Sequence[str]) -> Any:
    """Plain nested lookup through subdocuments only (no array traversal)."""
    value = doc
    for part in parts:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def set_nested(doc: Doc, parts: Sequence[str], value: Any) -> Doc:
    """A copy of ``doc`` with ``parts`` set to ``value`` (subdocuments created/replaced)."""
    out = dict(doc)
    current = out
    for part in parts[:-1]:
        child = current.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        current[part] = child
        current = child
    current[parts[-1]] = value
    return out


def remove_nested(doc: Doc, parts: Sequence[str]) -> Doc:
    """A copy of ``doc`` without the field at ``parts`` (which exists through subdocs)."""
    if len(parts) == 1:
        out = dict(doc)
        out.pop(parts[0], None)
        return out
    child = doc.get(parts[0])
    if not isinstance(child, dict):
        return doc
    out = dict(doc)
    out[parts[0]] = remove_nested(child, parts[1:])
    return out


def count_value(n: int) -> Any:
    """A count as MongoDB outputs it: int32 when it fits, else long."""
    return n if n < 2**31 else Int64(n)
