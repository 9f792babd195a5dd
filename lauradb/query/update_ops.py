"""The update operators: one leaf class per operator, compiled once, applied per document.

A leaf receives the current value at its path (or ``MISSING``, or a ``Blocked``
marker when the path cannot exist) and returns the new value (``MISSING`` removes the
field). Returning the very object it received means "no change": the update tree
relies on identity to copy only what changes, never mutating the input document.

Numbers follow MongoDB's arithmetic (SafeNum): int32 op int32 widens to int64 on
overflow, an int64 overflow is an error, anything with a double is a double and
anything with a Decimal128 is a Decimal128 (a double taken to 15 significant digits).
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64
from bson.regex import Regex
from bson.timestamp import Timestamp

from lauradb.bsonkit.order import compare, sort_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.update_paths import Blocked, array_index, describe, describe_id, type_name

Path = tuple[str, ...]

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_DECIMAL_CONTEXT = create_decimal128_context()


# ----------------------------------------------------------------------------------
# Values: strict identity of BSON values, copies of update arguments.


def identical(a: Any, b: Any) -> bool:
    """True when two BSON values are the same type and the same bytes.

    Stricter than ``bson_equal``: ``1``, ``1.0`` and ``Int64(1)`` differ, field order
    matters, ``0.0`` and ``-0.0`` differ. Used to decide whether an update changed
    anything.
    """
    if a is b:
        return True
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        if len(a) != len(b):
            return False
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            if ka != kb or not identical(va, vb):
                return False
        return True
    if ta is list:
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if ta is float:
        if a != a:
            return bool(b != b)
        return bool(a == b) and math.copysign(1.0, a) == math.copysign(1.0, b)
    if ta is Decimal128:
        return bool(a.bid == b.bid)
    if ta is datetime.datetime:
        return bool(a == b) and a.utcoffset() == b.utcoffset()
    try:
        return bool(a == b)
    except Exception:
        return False


def normalize_value(value: Any) -> Any:
    """A private copy of an update argument: mappings become dicts, sequences lists."""
    if isinstance(value, Mapping):
        return {k: normalize_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize_value(v) for v in value]
    return value


def clone(value: Any) -> Any:
    """A copy of the containers of a (normalized) value; scalars are shared."""
    t = type(value)
    if t is dict:
        return {k: clone(v) for k, v in value.items()}
    if t is list:
        return [clone(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return type(value) in (int, Int64, float, Decimal128)


# ----------------------------------------------------------------------------------
# Arithmetic (MongoDB's SafeNum).

_INT32, _INT64, _DOUBLE, _DECIMAL = 1, 2, 3, 4


def number_kind(value: Any) -> int | None:
    """The numeric BSON type of a value, or None if it is not a number."""
    t = type(value)
    if t is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            return _INT32
        return _INT64 if _INT64_MIN <= value <= _INT64_MAX else None
    if t is Int64:
        return _INT64
    if t is float:
        return _DOUBLE
    if t is Decimal128:
        return _DECIMAL
    return None


def double_to_decimal(value: float) -> decimal.Decimal:
    """MongoDB's Decimal128(double): rounded to 15 significant digits."""
    if math.isnan(value):
        return decimal.Decimal("NaN")
    if math.isinf(value):
        return decimal.Decimal("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return decimal.Decimal("-0" if math.copysign(1.0, value) < 0 else "0")
    return decimal.Decimal(format(value, ".14e"))


def _to_decimal(value: Any, kind: int) -> decimal.Decimal:
    if kind == _DECIMAL:
        return value.to_decimal()  # type: ignore[no-any-return]
    if kind == _DOUBLE:
        return double_to_decimal(value)
    return decimal.Decimal(int(value))


def arithmetic(op: str, a: Any, b: Any) -> Any:
    """``a + b`` (op "add") or ``a * b`` (op "mul") with BSON type promotion.

    Returns None when the result cannot be represented (int64 overflow).
    """
    ka = number_kind(a)
    kb = number_kind(b)
    if ka is None or kb is None:
        return None
    if ka == _DECIMAL or kb == _DECIMAL:
        da = _to_decimal(a, ka)
        db = _to_decimal(b, kb)
        result = _DECIMAL_CONTEXT.add(da, db) if op == "add" else _DECIMAL_CONTEXT.multiply(da, db)
        return Decimal128(result)
    if ka == _DOUBLE or kb == _DOUBLE:
        return float(a) + float(b) if op == "add" else float(a) * float(b)
    ia = int(a)
    ib = int(b)
    r = ia + ib if op == "add" else ia * ib
    if ka == _INT32 and kb == _INT32 and _INT32_MIN <= r <= _INT32_MAX:
        return r
    if _INT64_MIN <= r <= _INT64_MAX:
        return Int64(r)
    return None


def _same_number(a: Any, b: Any) -> bool:
    """SafeNum::isIdentical: the same numeric type and the same value."""
    if type(a) is not type(b):
        return False
    if type(a) is Decimal128:
        da = a.to_decimal()
        db = b.to_decimal()
        return bool(da.is_nan() and db.is_nan()) or bool(da == db)
    if type(a) is float and a != a:
        return bool(b != b)
    return bool(a == b)


def _safe_num_repr(value: Any) -> str:
    kind = number_kind(value)
    label = {_INT32: "NumberInt", _INT64: "NumberLong", _DOUBLE: "NumberDouble"}.get(
        kind or 0, "NumberDecimal"
    )
    return f"({label}){describe(value)}"


# ----------------------------------------------------------------------------------
# The apply context.


class ApplyContext:
    """Per-document state of one ``Update.apply`` call."""

    __slots__ = ("_now", "_timestamp_inc", "doc", "is_insert", "position", "rename_values")

    def __init__(
        self,
        doc: dict[str, Any],
        position: int | None,
        is_insert: bool,
        now: datetime.datetime | None,
    ) -> None:
        self.doc = doc
        self.position = position
        self.is_insert = is_insert
        self._now = now
        self._timestamp_inc = 0
        self.rename_values: list[Any] = []

    def now(self) -> datetime.datetime:
        """The update's clock: naive UTC with millisecond precision (BSON date)."""
        now = self._now
        if now is None:
            now = datetime.datetime.now(datetime.UTC)
        if now.tzinfo is not None:
            now = now.astimezone(datetime.UTC).replace(tzinfo=None)
        now = now.replace(microsecond=now.microsecond - now.microsecond % 1000)
        self._now = now
        return now

    def next_timestamp(self) -> Timestamp:
        self._timestamp_inc += 1
        return Timestamp(calendar.timegm(self.now().timetuple()), self._timestamp_inc)

    def id_text(self) -> str:
        return describe_id(self.doc)


# ----------------------------------------------------------------------------------
# Leaves.


class Leaf:
    """One operator applied at one path."""

    __slots__ = ("operator",)

    def __init__(self, operator: str) -> None:
        self.operator = operator

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        raise NotImplementedError


def _arg_text(path: str, arg: Any) -> str:
    return f"{{{path}: {describe(arg)}}}"


class SetLeaf(Leaf):
    """``$set`` (and ``$setOnInsert`` with ``insert_only``)."""

    __slots__ = ("insert_only", "value")

    def __init__(self, value: Any, insert_only: bool = False) -> None:
        super().__init__("$setOnInsert" if insert_only else "$set")
        self.value = normalize_value(value)
        self.insert_only = insert_only

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if self.insert_only and not ctx.is_insert:
            return value
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is not MISSING and identical(value, self.value):
            return value
        return clone(self.value)


class UnsetLeaf(Leaf):
    """``$unset``: removes a field; an array element becomes null (done by the parent)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("$unset")

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if value is MISSING or type(value) is Blocked:
            return value
        return MISSING


class ArithmeticLeaf(Leaf):
    """``$inc`` (op "add") and ``$mul`` (op "mul")."""

    __slots__ = ("op", "value")

    def __init__(self, op: str, value: Any, path: str) -> None:
        super().__init__("$inc" if op == "add" else "$mul")
        self.op = op
        if number_kind(value) is None:
            verb = "increment" if op == "add" else "multiply"
            raise LauraError(
                ErrorCode.TYPE_MISMATCH,
                f"Cannot {verb} with non-numeric argument: {_arg_text(path, value)}",
            )
        self.value = value

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is MISSING:
            if self.op == "add":
                return self.value
            return arithmetic("mul", self.value, 0)
        if number_kind(value) is None:
            raise LauraError(
                ErrorCode.TYPE_MISMATCH,
                f"Cannot apply {self.operator} to a value of non-numeric type. "
                f"{{{ctx.id_text()}}} has the field '{path[-1]}' of non-numeric type "
                f"{type_name(value)}",
            )
        result = arithmetic(self.op, value, self.value)
        if result is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"Failed to apply {self.operator} operations to current value "
                f"({_safe_num_repr(value)}) for document {{{ctx.id_text()}}}",
            )
        if _same_number(result, value):
            return value
        return result


class CompareLeaf(Leaf):
    """``$min`` / ``$max``: replace when the argument sorts before / after the value."""

    __slots__ = ("keep_sign", "value")

    def __init__(self, mode: str, value: Any) -> None:
        super().__init__(mode)
        # $max replaces when compare(value, arg) < 0; $min when > 0.
        self.keep_sign = -1 if mode == "$max" else 1
        self.value = normalize_value(value)

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is MISSING:
            return clone(self.value)
        if compare(value, self.value) == self.keep_sign:
            return clone(self.value)
        return value


class CurrentDateLeaf(Leaf):
    """``$currentDate``: ``true`` / ``{$type: "date"}`` or ``{$type: "timestamp"}``."""

    __slots__ = ("is_date",)

    def __init__(self, arg: Any) -> None:
        super().__init__("$currentDate")
        if isinstance(arg, bool):
            self.is_date = True
            return
        if not isinstance(arg, Mapping):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"{type_name(arg)} is not valid type for $currentDate. Please use a boolean "
                "('true') or a $type expression ({$type: 'timestamp/date'}).",
            )
        found: bool | None = None
        for key, item in arg.items():
            if key != "$type":
                raise LauraError(ErrorCode.BAD_VALUE, f"Unrecognized $currentDate option: {key}")
            if item == "date" and isinstance(item, str):
                found = True
            elif item == "timestamp" and isinstance(item, str):
                found = False
        if found is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "The '$type' string field is required to be 'date' or 'timestamp': "
                "{$currentDate: {field : {$type: 'date'}}}",
            )
        self.is_date = found

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        new: Any = ctx.now() if self.is_date else ctx.next_timestamp()
        if value is not MISSING and identical(value, new):
            return value
        return new


def _integer_argument(value: Any) -> int | None:
    """MongoDB's parseIntegerElementToLong: an integral number in int64 range, else None."""
    kind = number_kind(value)
    if kind is None:
        return None
    if kind == _DOUBLE:
        if not math.isfinite(value) or value != math.floor(value):
            return None
        value = int(value)
    elif kind == _DECIMAL:
        d = value.to_decimal()
        if not d.is_finite() or d != d.to_integral_value():
            return None
        value = int(d)
    as_int = int(value)
    return as_int if _INT64_MIN <= as_int <= _INT64_MAX else None


class _PushSort:
    """``$sort`` of ``$push``: 1/-1 on whole elements or ``{field: 1/-1, ...}``."""

    __slots__ = ("fields", "whole")

    def __init__(self, spec: Any) -> None:
        self.whole = 0
        self.fields: list[tuple[tuple[str, ...], int]] = []
        if isinstance(spec, Mapping):
            if not spec:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "The $sort pattern is empty when it should be a set of fields.",
                )
            for field, direction in spec.items():
                self.fields.append((self._field_parts(field), self._direction(direction)))
        elif _is_number(spec):
            self.whole = self._direction(spec)
        else:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} "
                "to sort embedded fields",
            )

    @staticmethod
    def _direction(value: Any) -> int:
        if _is_number(value):
            number = value.to_decimal() if isinstance(value, Decimal128) else value
            if number == 1:
                return 1
            if number == -1:
                return -1
        raise LauraError(ErrorCode.BAD_VALUE, "The $sort element value must be either 1 or -1")

    @staticmethod
    def _field_parts(field: str) -> tuple[str, ...]:
        if field == "":
            raise LauraError(ErrorCode.BAD_VALUE, "The $sort field cannot be empty")
        parts = tuple(field.split("."))
        if any(part == "" for part in parts):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The $sort field is a dotted field but has an empty part: {field}",
            )
        return parts

    def sort(self, items: list[Any]) -> None:
        if self.whole:
            items.sort(key=sort_key, reverse=self.whole < 0)
            return
        # Stable sorts, least significant field first, give the compound order.
        for parts, direction in reversed(self.fields):
            keys = {id(item): sort_key(_sort_field(item, parts)) for item in items}
            items.sort(key=lambda item: keys[id(item)], reverse=direction < 0)


def _sort_field(item: Any, parts: tuple[str, ...]) -> Any:
    """The value a ``$push`` ``$sort`` field selects (null when absent; no array fan-out)."""
    if type(item) is not dict:
        return None
    current: Any = item
    for part in parts:
        if type(current) is dict:
            current = current.get(part, MISSING)
        elif type(current) is list:
            index = array_index(part)
            current = current[index] if index is not None and index < len(current) else MISSING
        else:
            return None
        if current is MISSING:
            return None
    return current


class PushLeaf(Leaf):
    """``$push`` with optional ``$each``, ``$position``, ``$sort``, ``$slice``."""

    __slots__ = ("position", "slice", "sorter", "values")

    _CLAUSES = frozenset({"$each", "$slice", "$sort", "$position"})

    def __init__(self, arg: Any) -> None:
        super().__init__("$push")
        self.position: int | None = None
        self.slice: int | None = None
        self.sorter: _PushSort | None = None
        if isinstance(arg, Mapping) and "$each" in arg:
            for clause in arg:
                if clause not in self._CLAUSES:
                    raise LauraError(
                        ErrorCode.BAD_VALUE, f"Unrecognized clause in $push: {clause}"
                    )
            each = arg["$each"]
            if not isinstance(each, (list, tuple)):
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "The argument to $each in $push must be an array but it was of type: "
                    f"{type_name(each)}",
                )
            self.values = normalize_value(each)
            if "$slice" in arg:
                self.slice = _integer_argument(arg["$slice"])
                if self.slice is None:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        "The value for $slice must be an integer value but was given type: "
                        f"{type_name(arg['$slice'])}",
                    )
            if "$sort" in arg:
                self.sorter = _PushSort(arg["$sort"])
            if "$position" in arg:
                self.position = _integer_argument(arg["$position"])
                if self.position is None:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        "The value for $position must be an integer value, not of type: "
                        f"{type_name(arg['$position'])}",
                    )
        else:
            self.values = [normalize_value(arg)]

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is MISSING:
            return self._push([])
        if type(value) is not list:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The field '{'.'.join(path)}' must be an array but is of type "
                f"{type_name(value)} in document {{{ctx.id_text()}}}",
            )
        result = self._push(list(value))
        return value if identical(result, value) else result

    def _push(self, items: list[Any]) -> list[Any]:
        if self.values:
            size = len(items)
            position = self.position
            if position is None or position >= size:
                at = size
            elif position >= 0:
                at = position
            elif -position < size:
                at = size + position
            else:
                at = 0
            items[at:at] = clone(self.values)
        if self.sorter is not None:
            self.sorter.sort(items)
        if self.slice is not None:
            limit = abs(self.slice)
            if len(items) > limit:
                items = items[:limit] if self.slice >= 0 else items[len(items) - limit :]
        return items


class AddToSetLeaf(Leaf):
    """``$addToSet`` (optionally ``{$each: [...]}``): append values not already there."""

    __slots__ = ("keys", "values")

    def __init__(self, arg: Any) -> None:
        super().__init__("$addToSet")
        values: list[Any]
        if isinstance(arg, Mapping) and arg and next(iter(arg)) == "$each":
            each = arg["$each"]
            if not isinstance(each, (list, tuple)):
                raise LauraError(
                    ErrorCode.TYPE_MISMATCH,
                    "The argument to $each in $addToSet must be an array but it was of type "
                    f"{type_name(each)}",
                )
            if len(arg) > 1:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"Found unexpected fields after $each in $addToSet: {describe(dict(arg))}",
                )
            values = normalize_value(each)
        else:
            values = [normalize_value(arg)]
        self.values: list[Any] = []
        self.keys: list[Any] = []
        seen: set[Any] = set()
        for item in values:
            key = sort_key(item)
            if key not in seen:
                seen.add(key)
                self.values.append(item)
                self.keys.append(key)

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is MISSING:
            return clone(self.values)
        if type(value) is not list:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"Cannot apply $addToSet to non-array field. Field named '{path[-1]}' has "
                f"non-array type {type_name(value)}",
            )
        present = {sort_key(item) for item in value}
        added = [
            clone(item) for item, key in zip(self.values, self.keys, strict=True) if key not in present
        ]
        if not added:
            return value
        return [*value, *added]


# Operators that make a $pull condition a condition on the element itself ({$gt: 1})
# rather than a query on subdocument fields ({qty: {$gt: 1}}).
_PATH_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$all", "$exists",
        "$mod", "$type", "$regex", "$options", "$elemMatch", "$size", "$not", "$near",
        "$nearSphere", "$geoWithin", "$within", "$geoIntersects", "$bitsAllSet",
        "$bitsAllClear", "$bitsAnySet", "$bitsAnyClear",
    }
)  # fmt: skip


def _compile_query(spec: Mapping[str, Any]) -> Callable[[Any], bool]:
    try:
        from lauradb.query.filter import compile_filter
    except ImportError as exc:  # pragma: no cover - the filter engine ships with us
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED, "$pull conditions need the filter engine"
        ) from exc
    matcher: Callable[[Any], bool] = compile_filter(spec)
    return matcher


def pull_predicate(cond: Any) -> Callable[[Any], bool]:
    """What ``$pull`` removes: a query on subdocuments, a condition, or equal values."""
    if isinstance(cond, Mapping) and (not cond or next(iter(cond)) not in _PATH_OPERATORS):
        query = _compile_query(normalize_value(cond))
        return lambda item: type(item) is dict and bool(query(item))
    if isinstance(cond, (Mapping, Regex, re.Pattern)):
        wrapped = _compile_query({"v": normalize_value(cond)})
        return lambda item: bool(wrapped({"v": item}))
    key = sort_key(normalize_value(cond))
    return lambda item: sort_key(item) == key


class ArrayCullingLeaf(Leaf):
    """``$pull`` and ``$pullAll``: remove the elements a predicate selects."""

    __slots__ = ("predicate",)

    def __init__(self, operator: str, predicate: Callable[[Any], bool]) -> None:
        super().__init__(operator)
        self.predicate = predicate

    @classmethod
    def pull(cls, arg: Any) -> ArrayCullingLeaf:
        return cls("$pull", pull_predicate(arg))

    @classmethod
    def pull_all(cls, arg: Any) -> ArrayCullingLeaf:
        if not isinstance(arg, (list, tuple)):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"$pullAll requires an array argument but was given a {type_name(arg)}",
            )
        keys = {sort_key(normalize_value(item)) for item in arg}
        return cls("$pullAll", lambda item: sort_key(item) in keys)

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_traverse(path)
        if value is MISSING:
            return value
        if type(value) is not list:
            raise LauraError(ErrorCode.BAD_VALUE, "Cannot apply $pull to a non-array value")
        predicate = self.predicate
        kept = [item for item in value if not predicate(item)]
        return value if len(kept) == len(value) else kept


class PopLeaf(Leaf):
    """``$pop``: 1 removes the last element, -1 the first."""

    __slots__ = ("from_front",)

    def __init__(self, arg: Any, path: str) -> None:
        super().__init__("$pop")
        if number_kind(arg) is None:
            raise LauraError(
                ErrorCode.FAILED_TO_PARSE, f"Expected a number in: {path}: {describe(arg)}"
            )
        number = _integer_argument(arg)
        if number is None:
            raise LauraError(
                ErrorCode.FAILED_TO_PARSE, f"Expected an integer: {path}: {describe(arg)}"
            )
        if number not in (1, -1):
            raise LauraError(ErrorCode.FAILED_TO_PARSE, f"$pop expects 1 or -1, found: {number}")
        self.from_front = number == -1

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_traverse(path)
        if value is MISSING:
            return value
        if type(value) is not list:
            raise LauraError(
                ErrorCode.TYPE_MISMATCH,
                f"Path '{'.'.join(path)}' contains an element of non-array type "
                f"'{type_name(value)}'",
            )
        if not value:
            return value
        return value[1:] if self.from_front else value[:-1]


class BitLeaf(Leaf):
    """``$bit``: and / or / xor on int32 and int64 values, in the order given."""

    __slots__ = ("ops",)

    def __init__(self, arg: Any) -> None:
        super().__init__("$bit")
        if not isinstance(arg, Mapping):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The $bit modifier is not compatible with a {type_name(arg)}. You must pass "
                "in an embedded document: {$bit: {field: {and/or/xor: #}}",
            )
        self.ops: list[tuple[str, Any]] = []
        for name, operand in arg.items():
            if name not in ("and", "or", "xor"):
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"The $bit modifier only supports 'and', 'or', and 'xor', not '{name}' "
                    f"which is an unknown operator: {{{name}: {describe(operand)}}}",
                )
            if number_kind(operand) not in (_INT32, _INT64):
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "The $bit modifier field must be an Integer(32/64 bit); a "
                    f"'{type_name(operand)}' is not supported here: "
                    f"{{{name}: {describe(operand)}}}",
                )
            self.ops.append((name, operand))
        if not self.ops:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "You must pass in at least one bitwise operation. The format is: "
                "{$bit: {field: {and/or/xor: #}}",
            )

    def _compute(self, value: Any) -> Any:
        kind = number_kind(value)
        result = int(value)
        for name, operand in self.ops:
            if number_kind(operand) == _INT64:
                kind = _INT64
            other = int(operand)
            if name == "and":
                result &= other
            elif name == "or":
                result |= other
            else:
                result ^= other
        return result if kind == _INT32 else Int64(result)

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is MISSING:
            return self._compute(0)
        if number_kind(value) not in (_INT32, _INT64):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"Cannot apply $bit to a value of non-integral type.{{{ctx.id_text()}}} has the "
                f"field {path[-1]} of non-integer type {type_name(value)}",
            )
        result = self._compute(value)
        return value if _same_number(result, value) else result


class RenameSourceLeaf(Leaf):
    """The ``from`` side of ``$rename``: removes the field once its value has moved."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        super().__init__("$rename")
        self.index = index

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if ctx.rename_values[self.index] is MISSING or value is MISSING:
            return value
        if type(value) is Blocked:
            return value
        return MISSING


class RenameTargetLeaf(Leaf):
    """The ``to`` side of ``$rename``: receives the source value read before applying."""

    __slots__ = ("index", "target")

    def __init__(self, index: int, target: str) -> None:
        super().__init__("$rename")
        self.index = index
        self.target = target

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        moved = ctx.rename_values[self.index]
        if moved is MISSING:
            return value
        if under_array:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The destination field cannot be an array element, '{self.target}' in doc "
                f"with {ctx.id_text()} has an array field called "
                f"'{_first_array_field(ctx.doc, path)}'",
            )
        if type(value) is Blocked:
            raise value.cannot_create(path)
        if value is not MISSING and compare(value, moved) == 0:
            return value
        return moved


def _first_array_field(doc: Any, path: Path) -> str:
    current = doc
    for part in path:
        if type(current) is list:
            break
        if type(current) is not dict or part not in current:
            return part
        current = current[part]
        if type(current) is list:
            return part
    return path[-1]


def read_rename_source(doc: dict[str, Any], parts: Path) -> Any:
    """The value ``$rename`` moves, read from the document before the update."""
    current: Any = doc
    array_field: str | None = None
    for i, part in enumerate(parts):
        if type(current) is dict:
            if part not in current:
                return MISSING
            current = current[part]
        elif type(current) is list:
            index = array_index(part)
            if index is None:
                raise _not_viable(parts, i, current)
            array_field = parts[i - 1]
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            raise _not_viable(parts, i, current)
    if array_field is not None:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"The source field cannot be an array element, '{'.'.join(parts)}' in doc with "
            f"{describe_id(doc)} has an array field called '{array_field}'",
        )
    return current


def _not_viable(parts: Path, i: int, blocking: Any) -> LauraError:
    return LauraError(
        ErrorCode.PATH_NOT_VIABLE,
        f"cannot use the part ({parts[i]} of {'.'.join(parts)}) to traverse the element "
        f"({{{parts[i - 1]}: {describe(blocking)}}})",
    )


def make_leaf(operator: str, path: str, arg: Any) -> Leaf:
    """The leaf for ``{operator: {path: arg}}`` (``$rename`` is built by the caller)."""
    if operator == "$set":
        return SetLeaf(arg)
    if operator == "$setOnInsert":
        return SetLeaf(arg, insert_only=True)
    if operator == "$unset":
        return UnsetLeaf()
    if operator == "$inc":
        return ArithmeticLeaf("add", arg, path)
    if operator == "$mul":
        return ArithmeticLeaf("mul", arg, path)
    if operator in ("$min", "$max"):
        return CompareLeaf(operator, arg)
    if operator == "$currentDate":
        return CurrentDateLeaf(arg)
    if operator == "$push":
        return PushLeaf(arg)
    if operator == "$addToSet":
        return AddToSetLeaf(arg)
    if operator == "$pull":
        return ArrayCullingLeaf.pull(arg)
    if operator == "$pullAll":
        return ArrayCullingLeaf.pull_all(arg)
    if operator == "$pop":
        return PopLeaf(arg, path)
    if operator == "$bit":
        return BitLeaf(arg)
    raise LauraError(ErrorCode.FAILED_TO_PARSE, f"Unknown modifier: {operator}")
