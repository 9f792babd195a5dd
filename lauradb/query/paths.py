"""Dotted field paths and MongoDB's path traversal.

Two kinds of lookup live here:

* ``get_path(doc, "a.b.0")`` is a *plain* lookup: it walks subdocuments and, for a
  numeric component, array indexes. It never fans out over arrays. Used where one
  value is wanted (upsert seeding, shard-key extraction).

* ``iter_path_candidates(doc, parts)`` yields every value a query predicate on the
  path must be tried against, exactly as MongoDB's matcher (``BSONElementIterator``)
  does:

  - subdocuments are walked field by field; a non-document met before the end of the
    path yields ``MISSING`` (so ``{"a.b": null}`` matches ``{a: 5}``);
  - an array met *before* the end of the path is traversed implicitly: each element
    that is a document is searched for the rest of the path; if the next component
    is a (canonical) number ``n``, element ``n`` is *also* taken positionally
    (``a.0.b`` means ``a[0].b`` and ``b`` inside any element's field ``"0"``);
    elements that are neither are skipped (so ``{"a.b": null}`` does not match
    ``{a: [1, 2]}``), and an array nested directly in an array is only entered
    positionally (no double unwinding);
  - an array at the *end* of the path yields each of its elements and then the array
    itself (``{tags: "x"}`` and ``{tags: ["x", "y"]}`` both match
    ``tags: ["x", "y"]``); elements that are arrays are not unwound again, so
    ``{a: 1}`` does not match ``{a: [[1, 2]]}`` while ``{a: [1, 2]}`` does; with
    ``expand_leaf_arrays=False`` (``$size``, ``$elemMatch``) only the array itself is
    yielded;
  - an element taken positionally at the end of the path (``a.0``) is yielded as is,
    without unwinding it even if it is an array.

``iter_path_candidates_with_offsets`` yields ``(value, offset)`` pairs where
``offset`` is the index, in the outermost implicitly traversed array, of the element
the value came from (``None`` when no implicit traversal was involved): MongoDB's
"elemMatchKey", used by the positional ``$`` operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING

Parts = tuple[str, ...]

_ARRAY_TYPES = (list, tuple)


def split_path(path: str) -> Parts:
    """``"a.b.c"`` -> ``("a", "b", "c")``; empty components are an error."""
    if not isinstance(path, str):
        raise LauraError(ErrorCode.BAD_VALUE, f"field path must be a string, not {path!r}")
    parts = tuple(path.split("."))
    for part in parts:
        if not part:
            raise LauraError(
                ErrorCode.EMPTY_FIELD_NAME,
                f"the field path '{path}' contains an empty field name, which is not allowed",
            )
    return parts


def _as_parts(path: str | Sequence[str]) -> Parts:
    if isinstance(path, str):
        return split_path(path)
    return tuple(path)


def is_document(value: Any) -> bool:
    """True for a BSON (sub)document: a dict or any other mapping."""
    return type(value) is dict or isinstance(value, Mapping)


def is_array(value: Any) -> bool:
    return type(value) is list or isinstance(value, _ARRAY_TYPES)


def array_index(part: str) -> int:
    """The array index a path component names, or -1 when it is not a canonical number.

    MongoDB matches ``"a.1"`` positionally but not ``"a.01"``.
    """
    if part.isdigit() and part.isascii() and (part == "0" or part[0] != "0"):
        return int(part)
    return -1


# ---------------------------------------------------------------------------
# Plain lookup


def get_path(doc: Any, path: str | Sequence[str]) -> Any:
    """The value at ``path`` without array fan-out, or ``MISSING``.

    A numeric component indexes into an array; a non-numeric component applied to an
    array (or anything applied to a scalar) gives ``MISSING``.
    """
    value = doc
    for part in _as_parts(path):
        if type(value) is dict:
            value = value.get(part, MISSING)
        elif isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif is_array(value):
            idx = array_index(part)
            if idx < 0 or idx >= len(value):
                return MISSING
            value = value[idx]
        else:
            return MISSING
    return value


def has_path(doc: Any, path: str | Sequence[str]) -> bool:
    """True when ``get_path`` finds a value (BSON null counts as present)."""
    return get_path(doc, path) is not MISSING


# ---------------------------------------------------------------------------
# MongoDB matcher traversal


def _walk(doc: Any, parts: Parts, start: int) -> tuple[Any, int]:
    """MongoDB's ``getFieldDottedOrArray``: follow subdocuments from ``parts[start]``.

    Returns ``(value, i)``: the value reached and the index of the component that
    produced it. Stops early at an array (so ``value`` is that array and ``i`` names
    its field); a scalar met before the end gives ``MISSING``.
    """
    n = len(parts)
    cur = doc
    i = start
    while True:
        if type(cur) is dict:
            value = cur.get(parts[i], MISSING)
        elif isinstance(cur, Mapping):
            value = cur.get(parts[i], MISSING)
        else:
            return MISSING, i
        if type(value) is dict or isinstance(value, Mapping):
            if i + 1 == n:
                return value, i
            cur = value
            i += 1
            continue
        if i + 1 < n and not is_array(value):
            return MISSING, i
        return value, i


def iter_path_candidates(
    doc: Any, parts: Parts, expand_leaf_arrays: bool = True, start: int = 0
) -> Iterator[Any]:
    """Every value a predicate on ``parts`` is evaluated against (see module doc)."""
    value, i = _walk(doc, parts, start)
    if not is_array(value):
        yield value
        return
    yield from _iter_array(value, parts, i + 1, expand_leaf_arrays)


def _iter_array(arr: Any, parts: Parts, rest: int, expand: bool) -> Iterator[Any]:
    n = len(parts)
    if rest == n:
        if expand:
            yield from arr
        yield arr
        return
    idx = array_index(parts[rest])
    last = rest + 1 == n
    for i, elt in enumerate(arr):
        if type(elt) is dict or isinstance(elt, Mapping):
            yield from iter_path_candidates(elt, parts, expand, rest)
            if i == idx:
                if last:
                    yield elt
                else:
                    yield from iter_path_candidates(elt, parts, expand, rest + 1)
        elif i == idx:
            if last:
                yield elt
            elif is_array(elt):
                yield from _iter_array(elt, parts, rest + 1, expand)


def any_path_candidate(
    doc: Any,
    parts: Parts,
    pred: Callable[[Any], bool],
    expand_leaf_arrays: bool = True,
    start: int = 0,
) -> bool:
    """``any(pred(v) for v in iter_path_candidates(...))`` without generators."""
    value, i = _walk(doc, parts, start)
    if type(value) is not list and not isinstance(value, tuple):
        return pred(value)
    return _any_in_array(value, parts, i + 1, pred, expand_leaf_arrays)


def _any_in_array(
    arr: Any, parts: Parts, rest: int, pred: Callable[[Any], bool], expand: bool
) -> bool:
    n = len(parts)
    if rest == n:
        if expand:
            for elt in arr:
                if pred(elt):
                    return True
        return pred(arr)
    idx = array_index(parts[rest])
    last = rest + 1 == n
    for i, elt in enumerate(arr):
        if type(elt) is dict or isinstance(elt, Mapping):
            if any_path_candidate(elt, parts, pred, expand, rest):
                return True
            if i == idx:
                if last:
                    if pred(elt):
                        return True
                elif any_path_candidate(elt, parts, pred, expand, rest + 1):
                    return True
        elif i == idx:
            if last:
                if pred(elt):
                    return True
            elif is_array(elt) and _any_in_array(elt, parts, rest + 1, pred, expand):
                return True
    return False


def iter_path_candidates_with_offsets(
    doc: Any, parts: Parts, expand_leaf_arrays: bool = True, start: int = 0
) -> Iterator[tuple[Any, int | None]]:
    """Like ``iter_path_candidates`` with the outermost implicit array offset of each."""
    value, i = _walk(doc, parts, start)
    if not is_array(value):
        yield value, None
        return
    yield from _iter_array_offsets(value, parts, i + 1, expand_leaf_arrays)


def _iter_array_offsets(
    arr: Any, parts: Parts, rest: int, expand: bool
) -> Iterator[tuple[Any, int | None]]:
    n = len(parts)
    if rest == n:
        if expand:
            for i, elt in enumerate(arr):
                yield elt, i
        yield arr, None
        return
    idx = array_index(parts[rest])
    last = rest + 1 == n
    for i, elt in enumerate(arr):
        if type(elt) is dict or isinstance(elt, Mapping):
            # Implicit traversal: the outer offset wins over any inner one.
            for value, _inner in iter_path_candidates_with_offsets(elt, parts, expand, rest):
                yield value, i
            if i == idx:
                # Positional: not an implicit traversal, inner offsets are kept.
                if last:
                    yield elt, None
                else:
                    yield from iter_path_candidates_with_offsets(elt, parts, expand, rest + 1)
        elif i == idx:
            if last:
                yield elt, None
            elif is_array(elt):
                yield from _iter_array_offsets(elt, parts, rest + 1, expand)


def get_path_values(
    doc: Any, path: str | Sequence[str], *, expand_leaf_arrays: bool = True
) -> list[Any]:
    """All candidate values of ``path`` as the query matcher sees them.

    May contain ``MISSING`` (a subdocument along the way lacks the field) and, for a
    path ending at an array, the array's elements followed by the array itself.
    """
    return list(iter_path_candidates(doc, _as_parts(path), expand_leaf_arrays))
