"""Query filters: ``compile_filter(spec)`` turns a MongoDB filter into a ``Matcher``.

A filter is parsed once into a small tree of nodes (validating every operator), and
the tree is turned into closures. Two closure sets exist:

* the fast one (``Matcher.__call__`` / ``Matcher.match``) answers yes/no; leaves on
  a plain field compared with a number, string, bool or ObjectId check the common
  case (same Python type, no array) inline and only fall back to the general
  MongoDB semantics otherwise;
* the positional one (``Matcher.match_with_position``), built on first use, also
  reports the index of the array element that matched (MongoDB's "elemMatchKey",
  for the positional ``$`` update operator and ``.$`` projection).

Semantics follow MongoDB's matcher: every leaf predicate is tried against every
candidate value of its path (see ``lauradb.query.paths``) and matches if any does;
``$ne``/``$nin``/``$not``/``$exists: false`` are negations of the whole path-level
predicate; comparisons only hold within one canonical BSON type (plus the null /
missing and MinKey / MaxKey exceptions); NaN equals NaN but is not ordered.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from lauradb.bsonkit.order import RANK_NULL, RANK_NUMBER, sort_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.paths import (
    Parts,
    any_path_candidate,
    is_array,
    is_document,
    iter_path_candidates_with_offsets,
    split_path,
)

__all__ = ["Matcher", "compile_filter", "equality_fields", "regex_from_value"]

Pred = Callable[[Any], bool]
DocPred = Callable[[Any], bool]
PosPred = Callable[[Any], tuple[bool, int | None]]

MAX_NESTING_DEPTH = 100

_NAN_KEY = (RANK_NUMBER, 0)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


# ---------------------------------------------------------------------------
# The node tree


class _Node:
    """A parsed filter node; turned into closures by ``fast``/``positional``/``single``."""

    __slots__ = ()

    def fast(self) -> DocPred:
        raise NotImplementedError

    def positional(self) -> PosPred:
        match = self.fast()

        def run(doc: Any) -> tuple[bool, int | None]:
            return match(doc), None

        return run

    def single(self) -> Pred:
        """The predicate on one value (the operators inside a value-form $elemMatch)."""
        raise _bad("this expression cannot be used inside a value $elemMatch")


class _Const(_Node):
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def fast(self) -> DocPred:
        return _always_true if self.value else _always_false

    def single(self) -> Pred:
        return _always_true if self.value else _always_false


def _always_true(_doc: Any) -> bool:
    return True


def _always_false(_doc: Any) -> bool:
    return False


class _And(_Node):
    __slots__ = ("children",)

    def __init__(self, children: list[_Node]) -> None:
        self.children = children

    def fast(self) -> DocPred:
        generated = _generate_conjunction(self.children)
        if generated is not None:
            return generated
        fns = [c.fast() for c in self.children]
        return _all_of(fns)

    def positional(self) -> PosPred:
        fns = [c.positional() for c in self.children]

        def run(doc: Any) -> tuple[bool, int | None]:
            position = None
            for fn in fns:
                ok, pos = fn(doc)
                if not ok:
                    return False, None
                if pos is not None:
                    position = pos  # MongoDB: the last leaf that records one wins
            return True, position

        return run

    def single(self) -> Pred:
        return _all_of([c.single() for c in self.children])


_GENERATED_OPS = {"eq": "==", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "in"}


def _generate_conjunction(children: list[_Node]) -> DocPred | None:
    """One generated function for a conjunction of top-level fast clauses.

    Each clause keeps its exact semantics: the inline comparison runs only when the
    field's value has one of the clause's ``fast_types`` (where Python's operator
    equals MongoDB's), otherwise the clause's own slow predicate decides. This saves
    a closure call per clause on the hot path (filters are compiled once, run often).
    """
    if len(children) < 2 or len(children) > 16:
        return None
    namespace: dict[str, Any] = {"MISSING": MISSING}
    lines = ["def match(doc):", "    get = doc.get"]
    previous_field: str | None = None
    for i, child in enumerate(children):
        if not isinstance(child, _Path) or len(child.parts) != 1:
            return None
        leaf = child.leaf
        if leaf.op is None or not leaf.expand or leaf.op not in _GENERATED_OPS:
            return None
        field = child.parts[0]
        namespace[f"f{i}"] = field
        namespace[f"r{i}"] = leaf.rhs
        namespace[f"s{i}"] = _expanding(leaf.pred)
        ft = leaf.fast_types
        if field != previous_field:
            lines.append(f"    v = get(f{i}, MISSING)")
            previous_field = field
        if len(ft) == 1:
            namespace[f"t{i}"] = ft[0]
            type_test = f"type(v) is t{i}"
        else:
            namespace[f"t{i}"] = ft
            type_test = f"type(v) in t{i}"
        lines += [
            f"    if {type_test}:",
            f"        if not (v {_GENERATED_OPS[leaf.op]} r{i}):",
            "            return False",
            f"    elif not s{i}(v):",
            "        return False",
        ]
    lines.append("    return True")
    exec(compile("\n".join(lines), "<lauradb-filter>", "exec"), namespace)
    fn: DocPred = namespace["match"]
    return fn


def _all_of(fns: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if not fns:
        return _always_true
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f0, f1 = fns

        def all2(x: Any) -> bool:
            return f0(x) and f1(x)

        return all2
    if len(fns) == 3:
        g0, g1, g2 = fns

        def all3(x: Any) -> bool:
            return g0(x) and g1(x) and g2(x)

        return all3
    fixed = tuple(fns)

    def all_n(x: Any) -> bool:
        for fn in fixed:
            if not fn(x):
                return False
        return True

    return all_n


def _any_of(fns: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(fns) == 1:
        return fns[0]
    fixed = tuple(fns)

    def any_n(x: Any) -> bool:
        for fn in fixed:
            if fn(x):
                return True
        return False

    return any_n


class _Or(_Node):
    __slots__ = ("children",)

    def __init__(self, children: list[_Node]) -> None:
        self.children = children

    def fast(self) -> DocPred:
        return _any_of([c.fast() for c in self.children])

    def single(self) -> Pred:
        return _any_of([c.single() for c in self.children])


class _Not(_Node):
    """Negation (``$not``, ``$ne``, ``$nin``, ``$nor``, ``$exists: false``)."""

    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child

    def fast(self) -> DocPred:
        inner = self.child.fast()

        def negated(doc: Any) -> bool:
            return not inner(doc)

        return negated

    def single(self) -> Pred:
        inner = self.child.single()

        def negated(value: Any) -> bool:
            return not inner(value)

        return negated


_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})


class _Expr(_Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Mapping[str, Any]], Any]) -> None:
        self.fn = fn

    def fast(self) -> DocPred:
        fn = self.fn

        def run(doc: Any) -> bool:
            # ROOT and CURRENT default to ``doc``; outer ($lookup) variables still apply.
            return _expr_truthy(fn(doc, _NO_VARIABLES))

        return run


class _Leaf:
    """A predicate on one candidate value, plus what the fast path needs to know.

    ``op`` (``"eq" "lt" "lte" "gt" "gte" "in"``) and ``fast_types`` are set when the
    operator can be decided by a plain Python comparison with ``rhs`` for values whose
    exact type is in ``fast_types``.
    """

    __slots__ = ("expand", "fast_types", "op", "pred", "rhs")

    def __init__(
        self,
        pred: Pred,
        *,
        expand: bool = True,
        op: str | None = None,
        rhs: Any = None,
        fast_types: tuple[type, ...] = (),
    ) -> None:
        self.pred = pred
        self.expand = expand
        self.op = op if fast_types else None
        self.rhs = rhs
        self.fast_types = fast_types


class _Path(_Node):
    """A leaf predicate applied to every candidate value of a field path."""

    __slots__ = ("leaf", "parts")

    def __init__(self, parts: Parts, leaf: _Leaf) -> None:
        self.parts = parts
        self.leaf = leaf

    def single(self) -> Pred:
        return self.leaf.pred

    def fast(self) -> DocPred:
        parts = self.parts
        leaf = self.leaf
        pred = leaf.pred
        expand = leaf.expand
        generic = _generic_path_matcher(parts, pred, expand)
        if len(parts) == 1:
            field = parts[0]
            slow = _expanding(pred) if expand else pred
            if leaf.op is not None and expand:
                return _TOP_LEVEL_FAST[leaf.op](field, leaf.rhs, leaf.fast_types, slow)

            def top(doc: Any) -> bool:
                return slow(doc.get(field, MISSING))

            return top

        if leaf.op is not None and expand:
            return _nested_fast(parts, leaf, generic)

        def nested(doc: Any) -> bool:
            v = doc
            for part in parts:
                if type(v) is dict:
                    v = v.get(part, MISSING)
                else:
                    break
            else:
                if type(v) is not list and not isinstance(v, tuple):
                    return pred(v)
            return generic(doc)

        return nested

    def positional(self) -> PosPred:
        parts = self.parts
        pred = self.leaf.pred
        expand = self.leaf.expand

        def run(doc: Any) -> tuple[bool, int | None]:
            for value, offset in iter_path_candidates_with_offsets(doc, parts, expand):
                if pred(value):
                    return True, offset
            return False, None

        return run


class _ElemMatch(_Path):
    """``{path: {$elemMatch: ...}}``: an array with one element matching the inner spec."""

    __slots__ = ("index_of",)

    def __init__(self, parts: Parts, index_of: Callable[[Any], int]) -> None:
        def pred(value: Any) -> bool:
            return index_of(value) >= 0

        super().__init__(parts, _Leaf(pred, expand=False))
        self.index_of = index_of

    def positional(self) -> PosPred:
        parts = self.parts
        index_of = self.index_of

        def run(doc: Any) -> tuple[bool, int | None]:
            for value, offset in iter_path_candidates_with_offsets(doc, parts, False):
                idx = index_of(value)
                if idx >= 0:
                    return True, (offset if offset is not None else idx)
            return False, None

        return run


def _expanding(pred: Pred) -> Pred:
    """``pred`` over a leaf value: an array matches if an element or the array does."""

    def expanded(v: Any) -> bool:
        if type(v) is list or isinstance(v, tuple):
            for x in v:
                if pred(x):
                    return True
        return pred(v)

    return expanded


def _generic_path_matcher(parts: Parts, pred: Pred, expand: bool) -> DocPred:
    def generic(doc: Any) -> bool:
        return any_path_candidate(doc, parts, pred, expand)

    return generic


# Fast leaves on a top-level field: the common case decided with one dict lookup, one
# type check and one native comparison. Anything else goes to ``slow``.


def _top_eq(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return bool(v == rhs)
        return slow(v)

    return match


def _top_lt(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return bool(v < rhs)
        return slow(v)

    return match


def _top_lte(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return bool(v <= rhs)
        return slow(v)

    return match


def _top_gt(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return bool(v > rhs)
        return slow(v)

    return match


def _top_gte(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return bool(v >= rhs)
        return slow(v)

    return match


def _top_in(field: str, rhs: Any, ft: tuple[type, ...], slow: Pred) -> DocPred:
    def match(doc: Any) -> bool:
        v = doc.get(field, MISSING)
        if type(v) in ft:
            return v in rhs
        return slow(v)

    return match


_TOP_LEVEL_FAST: dict[str, Callable[[str, Any, tuple[type, ...], Pred], DocPred]] = {
    "eq": _top_eq,
    "lt": _top_lt,
    "lte": _top_lte,
    "gt": _top_gt,
    "gte": _top_gte,
    "in": _top_in,
}

_NATIVE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "lt": lambda a, b: bool(a < b),
    "lte": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "gte": lambda a, b: bool(a >= b),
    "in": lambda a, b: a in b,
}


def _nested_fast(parts: Parts, leaf: _Leaf, generic: DocPred) -> DocPred:
    op = _NATIVE_OPS[leaf.op or "eq"]
    rhs = leaf.rhs
    ft = leaf.fast_types
    pred = leaf.pred

    def match(doc: Any) -> bool:
        v = doc
        for part in parts:
            if type(v) is dict:
                v = v.get(part, MISSING)
            else:
                break
        else:
            if type(v) in ft:
                return op(v, rhs)
            if type(v) is not list and not isinstance(v, tuple):
                return pred(v)
        return generic(doc)

    return match


# ---------------------------------------------------------------------------
# Value helpers


def _is_regex(value: Any) -> bool:
    return isinstance(value, (Regex, re.Pattern))


def _is_number(value: Any) -> bool:
    t = type(value)
    if t is int or t is float or t is Int64 or t is Decimal128:
        return True
    return isinstance(value, (int, float, Decimal128, decimal.Decimal)) and not isinstance(
        value, bool
    )


def _bson_truthy(value: Any) -> bool:
    """BSONElement::trueValue(): false, null, missing and numeric zero are false."""
    if value is MISSING or value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        return d.is_nan() or d != 0
    if isinstance(value, (int, float)):
        return value != 0
    return True


def _expr_truthy(value: Any) -> bool:
    """Aggregation truthiness (``$expr``): false, null, missing and zero are false."""
    return _bson_truthy(value)


def _sort_key_of(value: Any, op: str) -> tuple[Any, ...]:
    try:
        return sort_key(value)
    except TypeError:
        raise _bad(f"{op} argument of unsupported type {type(value).__name__}") from None


_NUMERIC_FAST = (int, float, Int64)


def _fast_types_for(rhs: Any) -> tuple[type, ...]:
    """Types of document values that compare with ``rhs`` natively and correctly."""
    t = type(rhs)
    if t is str:
        return (str,)
    if t is int or t is Int64:
        return _NUMERIC_FAST
    if t is float:
        return () if rhs != rhs else _NUMERIC_FAST
    if t is ObjectId:
        return (ObjectId,)
    return ()


def _fast_types_for_eq(rhs: Any) -> tuple[type, ...]:
    if type(rhs) is bool:
        return (bool,)
    return _fast_types_for(rhs)


# ---------------------------------------------------------------------------
# Leaf predicates


def _eq_leaf(rhs: Any, op_name: str = "$eq") -> _Leaf:
    rkey = _sort_key_of(rhs, op_name)
    rhs_null = rhs is None
    ft = _fast_types_for_eq(rhs)

    if ft:

        def eq_fast(v: Any) -> bool:
            if type(v) in ft:
                return bool(v == rhs)
            if v is MISSING:
                return False
            return _safe_key(v) == rkey

        return _Leaf(eq_fast, op="eq", rhs=rhs, fast_types=ft)

    if rhs_null:

        def eq_null(v: Any) -> bool:
            return v is None or v is MISSING

        return _Leaf(eq_null)

    def eq(v: Any) -> bool:
        if v is MISSING:
            return False
        return _safe_key(v) == rkey

    return _Leaf(eq)


def _safe_key(v: Any) -> tuple[Any, ...]:
    try:
        return sort_key(v)
    except TypeError:
        # A value that is not BSON cannot equal or order against anything.
        return (float("nan"),)


def _cmp_leaf(op: str, rhs: Any) -> _Leaf:
    """``$lt $lte $gt $gte`` (op is ``lt lte gt gte``)."""
    if _is_regex(rhs):
        raise _bad(f"Can't have RegEx as arg to ${op}")
    rkey = _sort_key_of(rhs, f"${op}")
    rrank = rkey[0]
    rnan = rkey == _NAN_KEY
    inclusive = op in ("lte", "gte")
    native = _NATIVE_OPS[op]
    if isinstance(rhs, MinKey):
        cross = op in ("gt", "gte")
    elif isinstance(rhs, MaxKey):
        cross = op in ("lt", "lte")
    else:
        cross = False
    # A missing field compares like undefined: equal-ish to null, else cross-type.
    missing_result = inclusive if rrank == RANK_NULL else cross
    ft = _fast_types_for(rhs)

    def compare(v: Any) -> bool:
        if type(v) in ft:
            return native(v, rhs)
        if v is MISSING:
            return missing_result
        k = _safe_key(v)
        if k[0] != rrank:
            return cross
        if rnan or k == _NAN_KEY:
            return inclusive and rnan and k == _NAN_KEY
        return native(k, rkey)

    return _Leaf(compare, op=op, rhs=rhs, fast_types=ft)


def _in_leaf(values: Any, op_name: str) -> _Leaf:
    if not isinstance(values, (list, tuple)):
        raise _bad(f"{op_name} needs an array")
    keys: set[tuple[Any, ...]] = set()
    regexes: list[Pred] = []
    has_null = False
    for item in values:
        if _is_regex(item):
            regexes.append(_regex_pred(regex_from_value(item)))
            continue
        if _is_operator_document(item):
            raise _bad(f"cannot nest $ under {op_name}")
        if item is None:
            has_null = True
        keys.add(_sort_key_of(item, op_name))
    frozen = frozenset(keys)

    def contains(v: Any) -> bool:
        if v is MISSING:
            return has_null
        if _safe_key(v) in frozen:
            return True
        for rx in regexes:
            if rx(v):
                return True
        return False

    # Fast path: every value a string, or every value a plain non-NaN number.
    raw_ft: tuple[type, ...] = ()
    if values and not regexes:
        if all(type(x) is str for x in values):
            raw_ft = (str,)
        elif all(type(x) in _NUMERIC_FAST and x == x for x in values):
            raw_ft = _NUMERIC_FAST
    if raw_ft:
        raw = frozenset(values)

        def contains_fast(v: Any) -> bool:
            if type(v) in raw_ft:
                return v in raw
            return contains(v)

        return _Leaf(contains_fast, op="in", rhs=raw, fast_types=raw_ft)
    return _Leaf(contains)


def _exists_leaf() -> _Leaf:
    def exists(v: Any) -> bool:
        return v is not MISSING

    return _Leaf(exists)


# -- $type

_TYPE_ALIASES: dict[str, int] = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}
_NUMBER_CODES = frozenset({1, 16, 18, 19})
_VALID_CODES = frozenset(_TYPE_ALIASES.values())

_TYPE_CODE_BY_CLASS: dict[type, int] = {
    float: 1,
    str: 2,
    dict: 3,
    list: 4,
    tuple: 4,
    bytes: 5,
    Binary: 5,
    ObjectId: 7,
    bool: 8,
    datetime.datetime: 9,
    DatetimeMS: 9,
    type(None): 10,
    Regex: 11,
    re.Pattern: 11,
    Int64: 18,
    Timestamp: 17,
    Decimal128: 19,
    MinKey: -1,
    MaxKey: 127,
    DBRef: 3,
}


def bson_type_code(value: Any) -> int | None:
    """The BSON type number of ``value`` (None for a missing value)."""
    if value is MISSING:
        return None
    t = type(value)
    if t is int:
        return 16 if -(2**31) <= value < 2**31 else 18
    code = _TYPE_CODE_BY_CLASS.get(t)
    if code is not None:
        return code
    if isinstance(value, Code):
        return 15 if value.scope is not None else 13
    if isinstance(value, bool):
        return 8
    if isinstance(value, Int64):
        return 18
    if isinstance(value, int):
        return 16 if -(2**31) <= value < 2**31 else 18
    for cls, code in _TYPE_CODE_BY_CLASS.items():
        if isinstance(value, cls):
            return code
    if isinstance(value, Mapping):
        return 3
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 5
    if isinstance(value, decimal.Decimal):
        return 19
    return None


def _type_code_of_spec(item: Any) -> frozenset[int]:
    if isinstance(item, str):
        if item == "number":
            return _NUMBER_CODES
        code = _TYPE_ALIASES.get(item)
        if code is None:
            raise _bad(f"Unknown type name alias: {item}")
        return frozenset({code})
    if _is_number(item):
        number = item.to_decimal() if isinstance(item, Decimal128) else item
        if number != number or int(number) != number:
            raise _bad(f"Invalid numerical type code: {item}")
        code = int(number)
        if code not in _VALID_CODES:
            raise _bad(f"Invalid numerical type code: {code}")
        return frozenset({code})
    raise _bad(f"type must be represented as a number or a string, not {item!r}")


def _type_leaf(arg: Any) -> _Leaf:
    items = list(arg) if isinstance(arg, (list, tuple)) else [arg]
    if not items:
        raise _bad("$type must match at least one type")
    codes: set[int] = set()
    for item in items:
        codes |= _type_code_of_spec(item)
    wanted = frozenset(codes)

    def has_type(v: Any) -> bool:
        return bson_type_code(v) in wanted

    return _Leaf(has_type)


# -- $regex


_VALID_REGEX_OPTIONS = frozenset("imsx")
_RE_FLAG_LETTERS = (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X))
_PCRE_NAMED_GROUP = re.compile(r"(?<!\\)\(\?<(?=[A-Za-z_])")


class CompiledRegex:
    """A MongoDB regular expression: its source, its option letters, and the compiled form."""

    __slots__ = ("compiled", "options", "pattern")

    def __init__(self, pattern: str, options: str) -> None:
        if "\x00" in pattern:
            raise _bad("Regular expression cannot contain an embedded null byte")
        flags = 0
        for ch in options:
            if ch not in _VALID_REGEX_OPTIONS:
                raise _bad(f"invalid flag in regex options: {ch}")
        for letter, bit in _RE_FLAG_LETTERS:
            if letter in options:
                flags |= bit
        try:
            compiled = re.compile(_PCRE_NAMED_GROUP.sub("(?P<", pattern), flags)
        except (re.error, OverflowError, RecursionError) as exc:
            raise LauraError(
                ErrorCode.INVALID_REGEX, f"Regular expression is invalid: {exc}"
            ) from None
        self.pattern = pattern
        self.options = "".join(sorted(set(options)))
        self.compiled = compiled


def _flag_letters(flags: int | str) -> str:
    if isinstance(flags, str):
        return "".join(sorted(set(flags) & _VALID_REGEX_OPTIONS))
    return "".join(sorted(letter for letter, bit in _RE_FLAG_LETTERS if flags & bit))


def regex_from_value(value: Any, options: Any = MISSING) -> CompiledRegex:
    """A ``CompiledRegex`` from a string, ``bson.regex.Regex`` or ``re.Pattern``."""
    if options is not MISSING and not isinstance(options, str):
        raise _bad("$options has to be a string")
    if isinstance(value, str):
        return CompiledRegex(value, options if isinstance(options, str) else "")
    if isinstance(value, Regex):
        pattern, letters = value.pattern, _flag_letters(value.flags)
    elif isinstance(value, re.Pattern):
        pattern, letters = value.pattern, _flag_letters(value.flags)
    else:
        raise _bad("$regex has to be a string")
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8", "replace")
    if isinstance(options, str):
        if letters:
            raise _bad("options set in both $regex and $options")
        letters = options
    return CompiledRegex(str(pattern), letters)


def _regex_pred(rx: CompiledRegex) -> Pred:
    search = rx.compiled.search
    pattern = rx.pattern
    options = rx.options

    def regex_match(v: Any) -> bool:
        if type(v) is str:
            return search(v) is not None
        if isinstance(v, (Regex, re.Pattern)):
            other = v.pattern.decode() if isinstance(v.pattern, bytes) else v.pattern
            return bool(other == pattern and _flag_letters(v.flags) == options)
        if isinstance(v, str) and not isinstance(v, Code):
            return search(v) is not None
        return False

    return regex_match


# -- $size, $mod, bit tests


def _size_leaf(arg: Any) -> _Leaf:
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise _bad("$size needs a number")
    if isinstance(arg, float) and (arg != arg or int(arg) != arg):
        raise _bad("$size must be a whole number")
    size = int(arg)
    if size < 0:
        raise _bad("$size may not be negative")
    if size >= 2**31:
        raise _bad("$size must be representable as a 32-bit integer")

    def has_size(v: Any) -> bool:
        return (type(v) is list or isinstance(v, tuple)) and len(v) == size

    return _Leaf(has_size, expand=False)


def _to_int64_truncated(value: Any) -> int | None:
    """A number truncated toward zero, or None if not finite / outside int64."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        if not d.is_finite():
            return None
        n = int(d)
    elif isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        n = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        n = math.trunc(value)
    elif isinstance(value, int):
        n = int(value)
    else:
        return None
    if n < _INT64_MIN or n > _INT64_MAX:
        return None
    return n


def _c_mod(dividend: int, divisor: int) -> int:
    """C's ``%``: the remainder takes the sign of the dividend."""
    r = abs(dividend) % abs(divisor)
    return -r if dividend < 0 else r


def _mod_leaf(arg: Any) -> _Leaf:
    if not isinstance(arg, (list, tuple)):
        raise _bad("malformed mod, needs to be an array")
    if len(arg) < 2:
        raise _bad("malformed mod, not enough elements")
    if len(arg) > 2:
        raise _bad("malformed mod, too many elements")
    divisor_raw, remainder_raw = arg
    if not _is_number(divisor_raw):
        raise _bad("malformed mod, divisor not a number")
    if not _is_number(remainder_raw):
        raise _bad("malformed mod, remainder not a number")
    divisor = _to_int64_truncated(divisor_raw)
    remainder = _to_int64_truncated(remainder_raw)
    if divisor is None:
        raise _bad("malformed mod, divisor value is invalid")
    if remainder is None:
        raise _bad("malformed mod, remainder value is invalid")
    if divisor == 0:
        raise _bad("divisor cannot be 0")

    def mod_matches(v: Any) -> bool:
        if not _is_number(v):
            return False
        dividend = _to_int64_truncated(v)
        if dividend is None:
            return False
        return _c_mod(dividend, divisor) == remainder

    return _Leaf(mod_matches)


def _bit_mask(arg: Any, op: str) -> int:
    if isinstance(arg, (list, tuple)):
        mask = 0
        for pos in arg:
            if isinstance(pos, bool) or not isinstance(pos, int):
                if isinstance(pos, float) and pos == pos and int(pos) == pos:
                    pos = int(pos)
                else:
                    raise _bad(f"bit positions for {op} must be integers")
            if pos < 0:
                raise _bad(f"bit positions for {op} must be non-negative")
            mask |= 1 << int(pos)
        return mask
    if isinstance(arg, (bytes, Binary)):
        return int.from_bytes(bytes(arg), "little")
    if _is_number(arg):
        n = _to_int64_truncated(arg)
        if n is None or n != (arg.to_decimal() if isinstance(arg, Decimal128) else arg):
            raise _bad(f"{op} bitmask must be an integer")
        if n < 0:
            raise _bad(f"{op} bitmask must be non-negative")
        return n
    raise _bad(f"{op} takes an Array, a number, or a BinData but received: {arg!r}")


def _bits_leaf(op: str, arg: Any) -> _Leaf:
    mask = _bit_mask(arg, op)

    def value_bits(v: Any) -> int | None:
        # Numbers are taken in two's complement, sign-extended (Python ints already
        # behave so); BinData is a little-endian bit string, zero-extended.
        if isinstance(v, (bytes, Binary)):
            return int.from_bytes(bytes(v), "little")
        if not _is_number(v):
            return None
        n = _to_int64_truncated(v)
        if n is None:
            return None
        exact = v.to_decimal() if isinstance(v, Decimal128) else v
        if n != exact:
            return None
        return n

    def test(v: Any) -> bool:
        bits = value_bits(v)
        if bits is None:
            return False
        if op == "$bitsAllSet":
            return bits & mask == mask
        if op == "$bitsAllClear":
            return bits & mask == 0
        if op == "$bitsAnySet":
            return bits & mask != 0
        return bits & mask != mask

    return _Leaf(test)


# ---------------------------------------------------------------------------
# Parsing

_TOP_LEVEL_ONLY = frozenset(
    {
        "$and",
        "$or",
        "$nor",
        "$expr",
        "$where",
        "$text",
        "$comment",
        "$alwaysTrue",
        "$alwaysFalse",
        "$jsonSchema",
        "$sampleRate",
    }
)
_UNSUPPORTED_TOP = frozenset({"$where", "$text", "$jsonSchema", "$sampleRate"})
_UNSUPPORTED_FIELD = frozenset(
    {"$near", "$nearSphere", "$geoWithin", "$geoIntersects", "$within", "$maxDistance"}
)


def _is_operator_document(value: Any) -> bool:
    """MongoDB's isExpressionDocument: a non-empty mapping whose first key is ``$``-ed."""
    if not is_document(value) or not value:
        return False
    first = next(iter(value))
    if not isinstance(first, str) or not first.startswith("$"):
        return False
    return first != "$ref"  # a DBRef-like literal


def _check_depth(depth: int) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise LauraError(
            ErrorCode.NESTING_TOO_DEEP,
            f"exceeded maximum query tree depth of {MAX_NESTING_DEPTH}",
        )


def _and_of(nodes: list[_Node]) -> _Node:
    flat: list[_Node] = []
    for node in nodes:
        if isinstance(node, _And):
            flat.extend(node.children)
        elif isinstance(node, _Const) and node.value:
            continue
        else:
            flat.append(node)
    if any(isinstance(n, _Const) and not n.value for n in flat):
        return _Const(False)
    if not flat:
        return _Const(True)
    if len(flat) == 1:
        return flat[0]
    return _And(flat)


def _parse_filter(spec: Mapping[str, Any], depth: int) -> _Node:
    _check_depth(depth)
    nodes: list[_Node] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise _bad(f"filter field names must be strings, not {key!r}")
        if key.startswith("$"):
            node = _parse_top_operator(key, value, depth)
            if node is not None:
                nodes.append(node)
        else:
            nodes.extend(_parse_field(split_path(key), value, depth))
    return _and_of(nodes)


def _parse_clause_list(op: str, value: Any, depth: int) -> list[_Node]:
    if not isinstance(value, (list, tuple)):
        raise _bad(f"{op} must be an array")
    if not value:
        raise _bad("$and/$or/$nor must be a nonempty array")
    out = []
    for item in value:
        if not is_document(item):
            raise _bad("$or/$and/$nor entries need to be full objects")
        out.append(_parse_filter(item, depth + 1))
    return out


def _parse_top_operator(op: str, value: Any, depth: int) -> _Node | None:
    if op == "$and":
        return _and_of(_parse_clause_list(op, value, depth))
    if op == "$or":
        children = _parse_clause_list(op, value, depth)
        if any(isinstance(c, _Const) and c.value for c in children):
            return _Const(True)
        live = [c for c in children if not isinstance(c, _Const)]
        if not live:
            return _Const(False)
        return live[0] if len(live) == 1 else _Or(live)
    if op == "$nor":
        return _Not(_Or(_parse_clause_list(op, value, depth)))
    if op == "$comment":
        return None
    if op in ("$alwaysTrue", "$alwaysFalse"):
        if _is_number(value) and value == 1:
            return _Const(op == "$alwaysTrue")
        raise _bad(f"{op} must be an integer value of 1")
    if op == "$expr":
        return _Expr(_compile_expr(value))
    if op in _UNSUPPORTED_TOP:
        raise LauraError(ErrorCode.NOT_IMPLEMENTED, f"{op} is not supported")
    raise LauraError(ErrorCode.UNKNOWN_OPERATOR, f"unknown top level operator: {op}")


def _compile_expr(spec: Any) -> Callable[[Any, Mapping[str, Any]], Any]:
    try:
        from lauradb.query.expressions import compile_expression
    except ImportError:
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED, "$expr needs the aggregation expression engine"
        ) from None
    fn: Callable[[Any, Mapping[str, Any]], Any] = compile_expression(spec)
    return fn


def _parse_field(parts: Parts, value: Any, depth: int) -> list[_Node]:
    if _is_regex(value):
        return [_Path(parts, _Leaf(_regex_pred(regex_from_value(value))))]
    if _is_operator_document(value):
        return _parse_operators(parts, value, depth)
    return [_Path(parts, _eq_leaf(value))]


def _parse_operators(parts: Parts, ops: Mapping[str, Any], depth: int) -> list[_Node]:
    """The operators of ``{path: {$op: arg, ...}}`` as AND-ed nodes."""
    _check_depth(depth)
    nodes: list[_Node] = []
    regex: Any = MISSING
    options: Any = MISSING
    for op, arg in ops.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise LauraError(ErrorCode.UNKNOWN_OPERATOR, f"unknown operator: {op}")
        if op == "$regex":
            regex = arg
            continue
        if op == "$options":
            options = arg
            continue
        handler = _FIELD_OPERATORS.get(op)
        if handler is None:
            if op in _UNSUPPORTED_FIELD or op.startswith("$geo"):
                raise LauraError(ErrorCode.NOT_IMPLEMENTED, f"{op} is not supported")
            raise LauraError(ErrorCode.UNKNOWN_OPERATOR, f"unknown operator: {op}")
        nodes.extend(handler(parts, arg, depth))
    if regex is not MISSING:
        rx = regex_from_value(regex, options)
        nodes.append(_Path(parts, _Leaf(_regex_pred(rx))))
    elif options is not MISSING:
        raise _bad("$options needs a $regex")
    return nodes


def _op_eq(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Path(parts, _eq_leaf(arg))]


def _op_ne(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    if _is_regex(arg):
        raise _bad("Can't have regex as arg to $ne.")
    return [_Not(_Path(parts, _eq_leaf(arg, "$ne")))]


def _make_cmp_op(op: str) -> Callable[[Parts, Any, int], list[_Node]]:
    def handler(parts: Parts, arg: Any, depth: int) -> list[_Node]:
        return [_Path(parts, _cmp_leaf(op, arg))]

    return handler


def _op_in(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Path(parts, _in_leaf(arg, "$in"))]


def _op_nin(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Not(_Path(parts, _in_leaf(arg, "$nin")))]


def _op_exists(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    node = _Path(parts, _exists_leaf())
    return [node] if _bson_truthy(arg) else [_Not(node)]


def _op_type(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Path(parts, _type_leaf(arg))]


def _op_size(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Path(parts, _size_leaf(arg))]


def _op_mod(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_Path(parts, _mod_leaf(arg))]


def _make_bits_op(op: str) -> Callable[[Parts, Any, int], list[_Node]]:
    def handler(parts: Parts, arg: Any, depth: int) -> list[_Node]:
        return [_Path(parts, _bits_leaf(op, arg))]

    return handler


def _op_not(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    if _is_regex(arg):
        return [_Not(_Path(parts, _Leaf(_regex_pred(regex_from_value(arg)))))]
    if is_document(arg):
        if not arg:
            raise _bad("$not cannot be empty")
        if not _is_operator_document(arg):
            raise _bad("$not needs a regex or a document of operators")
        return [_Not(_and_of(_parse_operators(parts, arg, depth + 1)))]
    raise _bad("$not needs a regex or a document")


def _elem_match_index(arg: Any, depth: int) -> Callable[[Any], int]:
    """index_of(array) for ``$elemMatch: arg``: first matching element index, or -1."""
    if not is_document(arg):
        raise _bad("$elemMatch needs an Object")
    first = next(iter(arg), None)
    value_form = (
        isinstance(first, str)
        and first.startswith("$")
        and first not in _TOP_LEVEL_ONLY
        and _is_operator_document(arg)
    )
    if value_form:
        element_pred = _and_of(_parse_operators((), arg, depth + 1)).single()

        def index_of_value(v: Any) -> int:
            if type(v) is not list and not isinstance(v, tuple):
                return -1
            for i, item in enumerate(v):
                if element_pred(item):
                    return i
            return -1

        return index_of_value

    sub = _parse_filter(arg, depth + 1).fast()

    def index_of_object(v: Any) -> int:
        if type(v) is not list and not isinstance(v, tuple):
            return -1
        for i, item in enumerate(v):
            if type(item) is dict or is_document(item):
                if sub(item):
                    return i
            elif is_array(item):
                # An array element is matched as the object {"0": ..., "1": ...}.
                if sub({str(j): x for j, x in enumerate(item)}):
                    return i
        return -1

    return index_of_object


def _op_elem_match(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    return [_ElemMatch(parts, _elem_match_index(arg, depth))]


def _op_all(parts: Parts, arg: Any, depth: int) -> list[_Node]:
    if not isinstance(arg, (list, tuple)):
        raise _bad("$all needs an array")
    if not arg:
        return [_Const(False)]
    first = arg[0]
    if is_document(first) and first and next(iter(first)) == "$elemMatch":
        nodes: list[_Node] = []
        for item in arg:
            if not (is_document(item) and item and next(iter(item)) == "$elemMatch"):
                raise _bad("$all/$elemMatch has to be consistent")
            if len(item) != 1:
                raise _bad("$all/$elemMatch can only contain $elemMatch")
            nodes.append(_ElemMatch(parts, _elem_match_index(item["$elemMatch"], depth)))
        return nodes
    out: list[_Node] = []
    for item in arg:
        if _is_regex(item):
            out.append(_Path(parts, _Leaf(_regex_pred(regex_from_value(item)))))
        elif _is_operator_document(item):
            raise _bad("no $ expressions in $all")
        else:
            out.append(_Path(parts, _eq_leaf(item, "$all")))
    return out


_FIELD_OPERATORS: dict[str, Callable[[Parts, Any, int], list[_Node]]] = {
    "$eq": _op_eq,
    "$ne": _op_ne,
    "$gt": _make_cmp_op("gt"),
    "$gte": _make_cmp_op("gte"),
    "$lt": _make_cmp_op("lt"),
    "$lte": _make_cmp_op("lte"),
    "$in": _op_in,
    "$nin": _op_nin,
    "$exists": _op_exists,
    "$type": _op_type,
    "$size": _op_size,
    "$mod": _op_mod,
    "$not": _op_not,
    "$elemMatch": _op_elem_match,
    "$all": _op_all,
    "$bitsAllSet": _make_bits_op("$bitsAllSet"),
    "$bitsAllClear": _make_bits_op("$bitsAllClear"),
    "$bitsAnySet": _make_bits_op("$bitsAnySet"),
    "$bitsAnyClear": _make_bits_op("$bitsAnyClear"),
}


# ---------------------------------------------------------------------------
# Public API


class Matcher:
    """A compiled filter. ``matcher(doc)`` answers whether ``doc`` matches.

    For hot loops ``matcher.match`` is the bare closure (one call layer less).
    """

    __slots__ = ("_node", "_positional", "match", "matches_everything", "spec")

    def __init__(self, node: _Node, spec: Mapping[str, Any]) -> None:
        self._node = node
        self._positional: PosPred | None = None
        self.match: DocPred = node.fast()
        self.matches_everything = isinstance(node, _Const) and node.value
        self.spec = spec

    def __call__(self, doc: Any) -> bool:
        return self.match(doc)

    def match_with_position(self, doc: Any) -> tuple[bool, int | None]:
        """Whether ``doc`` matches, and the index of the matched array element.

        The index is that of the element of the first (outermost) array traversed on the
        path of the leaf that recorded it (for ``{"grades": {"$gte": 90}}`` the index in
        ``grades``); None when no array was involved.
        """
        if self._positional is None:
            self._positional = self._node.positional()
        return self._positional(doc)

    def filter(self, docs: Iterable[Any]) -> Iterator[Any]:
        """The documents of ``docs`` that match, lazily."""
        match = self.match
        if self.matches_everything:
            yield from docs
            return
        for doc in docs:
            if match(doc):
                yield doc

    def __repr__(self) -> str:
        return f"Matcher({self.spec!r})"


def compile_filter(spec: Mapping[str, Any] | None) -> Matcher:
    """Parse and compile a MongoDB query filter (``None`` means match everything)."""
    if spec is None:
        spec = {}
    if not is_document(spec):
        raise _bad(f"filter must be an object, not {type(spec).__name__}")
    return Matcher(_parse_filter(spec, 0), spec)


def equality_fields(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The paths a filter pins to one value by equality, with those values.

    Counts ``{path: value}`` (not a regex, not an operator document), ``{path: {$eq: v}}``,
    ``{path: {$in: [v]}}`` and the same inside top-level ``$and`` (recursively). The
    first value seen for a path wins. Keys are the dotted paths as written.
    """
    out: dict[str, Any] = {}
    if spec is not None and is_document(spec):
        _collect_equalities(spec, out)
    return out


def _collect_equalities(spec: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, value in spec.items():
        if not isinstance(key, str):
            continue
        if key == "$and":
            if isinstance(value, (list, tuple)):
                for clause in value:
                    if is_document(clause):
                        _collect_equalities(clause, out)
            continue
        if key.startswith("$"):
            continue
        pinned = _pinned_value(value)
        if pinned is not MISSING and key not in out:
            out[key] = pinned


def _pinned_value(value: Any) -> Any:
    if _is_regex(value):
        return MISSING
    if not _is_operator_document(value):
        return value
    if "$eq" in value:
        return value["$eq"]
    values = value.get("$in")
    if isinstance(values, (list, tuple)) and len(values) == 1:
        only = values[0]
        if not _is_regex(only) and not _is_operator_document(only):
            return only
    return MISSING
