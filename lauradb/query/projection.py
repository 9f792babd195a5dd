"""Find projections: ``compile_projection(spec)`` -> ``Projection``.

Follows MongoDB's find projection (4.4+ rules):

* inclusion (``{a: 1, "b.c": 1}``) keeps the named paths, in the document's field
  order, plus ``_id`` unless ``_id: 0``; exclusion (``{a: 0}``) drops them. Mixing the
  two (``_id`` aside) is an error, as is a path collision (``a`` with ``a.b``).
* dotted paths go through arrays of subdocuments: ``{"a.b": 1}`` on
  ``{a: [{b: 1, c: 2}, 3]}`` gives ``{a: [{b: 1}]}`` (inclusion drops non-documents,
  exclusion keeps them).
* ``{a: {$slice: n | [skip, limit]}}`` slices arrays (alone it keeps everything else);
  ``{a: {$elemMatch: filter}}`` keeps the first matching element of a top-level array
  field (the field is left out when none matches and is placed after the other
  included fields); ``{"a.$": 1}`` keeps the element of the first array on the path at
  the position the query matched (``Matcher.match_with_position``).
* other values (``{a: "$b"}``, ``{a: {$add: [...]}}``, ``{a: "x"}``) are aggregation
  expressions evaluated against the document (inclusion projections only).

``apply`` returns a new top-level dict; included values may share sub-objects with the
input document (treat documents as immutable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.filter import compile_filter
from lauradb.query.paths import Parts, is_array, is_document, split_path

__all__ = ["Projection", "compile_projection"]

_INCLUDE = "include"
_EXCLUDE = "exclude"
_SLICE = "slice"
_COMPUTED = "computed"
_POSITIONAL = "positional"
_ELEM_MATCH = "elemMatch"

_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

Expr = Callable[[Any, Mapping[str, Any]], Any]


def _invalid(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_PROJECTION, message)


class _Node:
    """One level of the projection tree: either a leaf (``kind`` set) or a path node."""

    __slots__ = ("arg", "children", "has_computed", "includes", "kind")

    def __init__(self, kind: str | None = None, arg: Any = None) -> None:
        self.kind = kind
        self.arg = arg
        self.children: dict[str, _Node] = {}
        # Whether the subtree computes fields / keeps document values (an inclusion
        # subtree holding only a positional projection produces nothing by itself).
        self.has_computed = kind == _COMPUTED
        self.includes = kind in (_INCLUDE, _SLICE, _COMPUTED)


def _is_inclusion_value(value: Any) -> bool:
    return isinstance(value, (bool, int, float, Int64, Decimal128))


def _truthy_number(value: Any) -> bool:
    if isinstance(value, Decimal128):
        return not value.to_decimal().is_zero()
    return bool(value != 0)


def _to_int32(value: Any) -> int:
    """BSONElement::numberInt(): truncation, saturating at the int32 bounds."""
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    try:
        if value != value:
            return 0
        n = int(value)
    except (OverflowError, ValueError):
        return _INT32_MAX if value > 0 else _INT32_MIN
    return max(_INT32_MIN, min(_INT32_MAX, n))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Int64, Decimal128)) and not isinstance(value, bool)


def _compile_expression(spec: Any) -> Expr:
    try:
        from lauradb.query.expressions import compile_expression
    except ImportError:
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED, "projection expressions need the aggregation engine"
        ) from None
    fn: Expr = compile_expression(spec)
    return fn


def _parse_find_slice(arg: Any) -> tuple[int | None, int]:
    """``$slice: n`` -> (None, n); ``$slice: [skip, limit]`` -> (skip, limit)."""
    if _is_number(arg):
        return None, _to_int32(arg)
    if isinstance(arg, (list, tuple)):
        if len(arg) != 2:
            raise _invalid("$slice array argument should be of form [skip, limit]")
        skip, limit = arg
        if not _is_number(skip):
            raise _invalid("$slice expects the skip argument to be a number")
        if not _is_number(limit):
            raise _invalid("$slice expects the limit argument to be a number")
        if _to_int32(limit) <= 0:
            raise _invalid(f"$slice limit must be positive, got {_to_int32(limit)}")
        return _to_int32(skip), _to_int32(limit)
    raise _invalid("$slice only supports numbers and [skip, limit] arrays")


def _slice(value: Any, skip: int | None, limit: int) -> Any:
    if not is_array(value):
        return value
    items = list(value)
    if skip is None:
        if limit >= 0:
            return items[:limit]
        return items[max(len(items) + limit, 0) :]
    start = skip if skip >= 0 else max(len(items) + skip, 0)
    return items[start : start + limit]


class _Positional:
    __slots__ = ("parts",)

    def __init__(self, parts: Parts) -> None:
        self.parts = parts


class _ElemMatchStep:
    __slots__ = ("field", "matcher")

    def __init__(self, field: str, arg: Any) -> None:
        if not is_document(arg):
            raise _invalid("elemMatch: Invalid argument, object required")
        self.field = field
        self.matcher = compile_filter({field: {"$elemMatch": arg}})


class Projection:
    """A compiled find projection."""

    __slots__ = (
        "_elem_matches",
        "_positional",
        "_root",
        "is_identity",
        "is_inclusion",
        "spec",
    )

    def __init__(self, spec: Mapping[str, Any] | None) -> None:
        self.spec = spec
        self._root = _Node()
        self._positional: _Positional | None = None
        self._elem_matches: list[_ElemMatchStep] = []
        self.is_inclusion = False
        self.is_identity = True
        if spec:
            self._parse(spec)

    # -- parsing

    def _parse(self, spec: Mapping[str, Any]) -> None:
        state = _ParseState()
        for key, value in spec.items():
            self._parse_element(state, key, value, prefix=())

        if state.kind is None:
            if state.has_slice:
                state.kind = _INCLUDE if state.id_included else _EXCLUDE
            elif state.has_elem_match or state.id_included:
                state.kind = _INCLUDE
            else:
                state.kind = _EXCLUDE
        self.is_inclusion = state.kind == _INCLUDE

        root = self._root.children
        if self.is_inclusion:
            if not state.id_specified:
                # Included by default (output order follows the document anyway).
                self._root.children = {"_id": _Node(_INCLUDE), **root}
                self._root.includes = True
            self.is_identity = False
        else:
            id_node = root.get("_id")
            if id_node is not None and id_node.kind == _INCLUDE:
                del root["_id"]
            self.is_identity = not root and not self._elem_matches

    def _parse_element(
        self, state: _ParseState, key: Any, value: Any, prefix: tuple[str, ...]
    ) -> None:
        if not isinstance(key, str):
            raise _invalid(f"projection field names must be strings, not {key!r}")
        full = ".".join((*prefix, key))
        positional_at = _find_positional(full)
        if not prefix:
            state.id_specified |= key == "_id" or key.startswith("_id.")

        if is_document(value):
            if positional_at is not None:
                raise _invalid(
                    "positional projection cannot be used with an expression or sub object"
                )
            self._parse_sub_object(state, key, value, prefix)
            return
        if _is_inclusion_value(value):
            if _truthy_number(value):
                self._parse_inclusion(state, key, full, prefix, positional_at)
            else:
                if positional_at is not None:
                    raise _invalid(f"Cannot exclude the positional field {full}")
                parts = _field_parts(full)
                self._add(parts, _Node(_EXCLUDE))
                if parts == ("_id",):
                    state.id_excluded = True
                else:
                    state.set_kind(_EXCLUDE, full)
            return
        if positional_at is not None:
            raise _invalid("positional projection cannot be used with a literal")
        self._add_computed(state, _field_parts(full), full, _compile_expression(value))

    def _parse_inclusion(
        self,
        state: _ParseState,
        key: str,
        full: str,
        prefix: tuple[str, ...],
        positional_at: int | None,
    ) -> None:
        if positional_at is None:
            parts = _field_parts(full)
            self._add(parts, _Node(_INCLUDE))
            if parts == ("_id",):
                state.id_included = True
                return
            state.set_kind(_INCLUDE, full)
            return
        if self._positional is not None:
            raise _invalid("Cannot specify more than one positional projection per query.")
        if self._elem_matches:
            raise _invalid("Cannot specify positional operator and $elemMatch.")
        if full.endswith(".$."):
            raise _invalid("Path cannot end with '.$.'")
        rest = full[positional_at:]
        rest = rest[3:] if rest.startswith(".$.") else rest[2:]
        if rest == "$" or _find_positional(rest) is not None:
            raise _invalid(f"Cannot use positional operator twice: {full}")
        parts = _field_parts(full[:positional_at])
        self._add(parts, _Node(_POSITIONAL))
        self._positional = _Positional(parts)
        state.set_kind(_INCLUDE, full)

    def _parse_sub_object(
        self, state: _ParseState, key: str, value: Mapping[str, Any], prefix: tuple[str, ...]
    ) -> None:
        full_parts = _field_parts(".".join((*prefix, key)))
        if not value:
            raise _invalid(
                f"An empty sub-projection is not a valid value. Found empty object at path "
                f"{'.'.join(full_parts)}"
            )
        first = next(iter(value))
        if len(value) == 1 and isinstance(first, str) and first.startswith("$"):
            arg = value[first]
            if first == "$slice":
                if isinstance(arg, (list, tuple)) and arg and not _is_number(arg[0]):
                    # Not find's [skip, limit]: the aggregation $slice ({$slice: ["$a", 2]}).
                    fn = _compile_expression({"$slice": arg})
                    self._add_computed(state, full_parts, ".".join(full_parts), fn)
                    return
                skip, limit = _parse_find_slice(arg)
                self._add(full_parts, _Node(_SLICE, (skip, limit)))
                state.has_slice = True
                return
            if first == "$elemMatch":
                if self._positional is not None:
                    raise _invalid("Cannot specify positional operator and $elemMatch.")
                if len(full_parts) != 1:
                    raise _invalid("Cannot use $elemMatch projection on a nested field.")
                step = _ElemMatchStep(full_parts[0], arg)
                self._add(full_parts, _Node(_ELEM_MATCH))
                self._elem_matches.append(step)
                state.has_elem_match = True
                return
            if first == "$meta":
                raise LauraError(ErrorCode.NOT_IMPLEMENTED, "$meta projection is not supported")
            self._add_computed(state, full_parts, ".".join(full_parts), _compile_expression(value))
            return
        for sub_key, sub_value in value.items():
            self._parse_element(state, sub_key, sub_value, (*prefix, key))

    def _add_computed(self, state: _ParseState, parts: Parts, full: str, fn: Expr) -> None:
        self._add(parts, _Node(_COMPUTED, fn))
        state.set_kind(_INCLUDE, full, computed=True)

    def _add(self, parts: Parts, leaf: _Node) -> None:
        node = self._root
        for i, part in enumerate(parts):
            child = node.children.get(part)
            if i == len(parts) - 1:
                if child is not None:
                    raise _invalid(f"Path collision at {'.'.join(parts)}")
                node.children[part] = leaf
                break
            if child is None:
                child = _Node()
                node.children[part] = child
            elif child.kind is not None:
                raise _invalid(
                    f"Path collision at {'.'.join(parts)} remaining portion "
                    f"{'.'.join(parts[i + 1 :])}"
                )
            node = child
        node = self._root
        for part in parts:
            node.has_computed |= leaf.has_computed
            node.includes |= leaf.includes
            node = node.children[part]

    @property
    def needs_position(self) -> bool:
        """True for a positional (``field.$``) projection: pass ``position`` to ``apply``."""
        return self._positional is not None

    # -- applying

    def apply(self, doc: Mapping[str, Any], *, position: int | None = None) -> dict[str, Any]:
        """Project ``doc`` into a new dict.

        ``position`` is the matched array index from ``Matcher.match_with_position``,
        needed only by a positional (``field.$``) projection.
        """
        if self.is_identity:
            return dict(doc)
        if self.is_inclusion:
            out = _include_level(self._root, doc, doc)
            if self._positional is not None:
                _apply_positional(doc, out, self._positional.parts, position)
        else:
            out = _exclude_level(self._root, doc)
        for step in self._elem_matches:
            _apply_elem_match(doc, out, step)
        return out

    def keeps(self, path: str) -> bool:
        """True when the value at ``path`` comes out of ``apply`` whole and unchanged."""
        if self.is_identity:
            return True
        node = self._root
        for part in split_path(path):
            child = node.children.get(part)
            if child is None:
                # Left the tree: untouched in an exclusion, absent in an inclusion.
                return not self.is_inclusion
            if child.kind is not None:
                if self.is_inclusion:
                    return child.kind == _INCLUDE
                return False  # excluded, sliced or replaced by $elemMatch
            node = child
        # ``path`` names a level some of whose sub-paths are projected: it changes.
        return False

    def __repr__(self) -> str:
        return f"Projection({self.spec!r})"


class _ParseState:
    __slots__ = (
        "has_elem_match",
        "has_slice",
        "id_excluded",
        "id_included",
        "id_specified",
        "kind",
    )

    def __init__(self) -> None:
        self.kind: str | None = None
        self.has_slice = False
        self.has_elem_match = False
        self.id_included = False
        self.id_excluded = False
        self.id_specified = False

    def set_kind(self, kind: str, field: str, computed: bool = False) -> None:
        if self.kind is not None and self.kind != kind:
            if computed:
                raise _invalid(f"Cannot use an expression {field} in an exclusion projection")
            if kind == _INCLUDE:
                raise _invalid(f"Cannot do inclusion on field {field} in exclusion projection")
            raise _invalid(f"Cannot do exclusion on field {field} in inclusion projection")
        self.kind = kind


def _find_positional(full: str) -> int | None:
    """Index where the first positional operator (``.$`` / ``.$.``) starts, or None."""
    at = full.find(".$.")
    if at >= 0:
        return at
    if full.endswith(".$"):
        return len(full) - 2
    if full == "$":
        return 0
    return None


def _field_parts(path: str) -> Parts:
    if not path:
        raise _invalid("projection field path cannot be empty")
    parts = split_path(path)
    for part in parts:
        if part.startswith("$"):
            raise _invalid(f"FieldPath field names may not start with '$': {path}")
    return parts


# -- inclusion


def _include_level(node: _Node, doc: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    children = node.children
    out: dict[str, Any] = {}
    for key, value in doc.items():
        child = children.get(key)
        if child is None:
            continue
        kind = child.kind
        if kind is None:
            if not child.includes:
                continue
            if is_document(value):
                out[key] = _include_level(child, value, root)
            elif is_array(value):
                out[key] = _include_array(child, value, root)
            elif child.has_computed:
                out[key] = _computed_only(child, root)
        elif kind == _INCLUDE:
            out[key] = value
        elif kind == _SLICE:
            skip, limit = child.arg
            out[key] = _slice(value, skip, limit)
    if node.has_computed:
        for key, child in children.items():
            if child.kind == _COMPUTED:
                result = child.arg(root, _NO_VARIABLES)
                if result is not MISSING:
                    out[key] = result
            elif child.kind is None and child.has_computed and key not in out:
                out[key] = _computed_only(child, root)
    return out


def _include_array(node: _Node, items: Any, root: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if is_document(item):
            out.append(_include_level(node, item, root))
        elif is_array(item):
            out.append(_include_array(node, item, root))
        elif node.has_computed:
            out.append(_computed_only(node, root))
    return out


def _computed_only(node: _Node, root: Mapping[str, Any]) -> dict[str, Any]:
    """The computed fields below ``node`` for a level the document lacks."""
    out: dict[str, Any] = {}
    for key, child in node.children.items():
        if child.kind == _COMPUTED:
            result = child.arg(root, _NO_VARIABLES)
            if result is not MISSING:
                out[key] = result
        elif child.kind is None and child.has_computed:
            out[key] = _computed_only(child, root)
    return out


# -- exclusion


def _exclude_level(node: _Node, doc: Mapping[str, Any]) -> dict[str, Any]:
    children = node.children
    out: dict[str, Any] = {}
    for key, value in doc.items():
        child = children.get(key)
        if child is None:
            out[key] = value
            continue
        kind = child.kind
        if kind is None:
            if is_document(value):
                out[key] = _exclude_level(child, value)
            elif is_array(value):
                out[key] = _exclude_array(child, value)
            else:
                out[key] = value
        elif kind == _SLICE:
            skip, limit = child.arg
            out[key] = _slice(value, skip, limit)
        elif kind == _EXCLUDE:
            continue
        else:  # $elemMatch: placed by its own step
            out[key] = value
    return out


def _exclude_array(node: _Node, items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if is_document(item):
            out.append(_exclude_level(node, item))
        elif is_array(item):
            out.append(_exclude_array(node, item))
        else:
            out.append(item)
    return out


# -- $elemMatch and positional steps


def _apply_elem_match(doc: Mapping[str, Any], out: dict[str, Any], step: _ElemMatchStep) -> None:
    matched, index = step.matcher.match_with_position(doc)
    value = doc.get(step.field, MISSING)
    if not matched or index is None or not is_array(value) or index >= len(value):
        out.pop(step.field, None)
        return
    out[step.field] = [value[index]]


def _apply_positional(
    doc: Mapping[str, Any], out: dict[str, Any], parts: Parts, position: int | None
) -> None:
    current: Any = doc
    for depth, part in enumerate(parts):
        if not is_document(current):
            return
        value = current.get(part, MISSING)
        if is_array(value):
            if position is None:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "positional operator '.$' couldn't find a matching element in the array",
                )
            if position < 0 or position >= len(value):
                raise LauraError(ErrorCode.BAD_VALUE, "positional operator '.$' element mismatch")
            _set_nested(out, parts[: depth + 1], [value[position]])
            return
        if not is_document(value):
            return
        current = value


def _set_nested(out: dict[str, Any], parts: Parts, value: Any) -> None:
    target = out
    for part in parts[:-1]:
        existing = target.get(part)
        nxt = dict(existing) if isinstance(existing, Mapping) else {}
        target[part] = nxt
        target = nxt
    target[parts[-1]] = value


def compile_projection(spec: Mapping[str, Any] | None) -> Projection:
    """Parse and compile a find projection (``None`` or ``{}``: return whole documents)."""
    if spec is not None and not is_document(spec):
        raise _invalid(f"projection must be an object, not {type(spec).__name__}")
    return Projection(spec)
