"""$type, $isNumber and the type conversions ($toString ... $convert)."""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Callable
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from lauradb.bsonkit.order import datetime_to_millis
from lauradb.errors import ErrorCode, LauraError
from lauradb.query import expr_numeric as num
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    compile_args,
    compile_expression,
    invalid,
    object_args,
    register,
    type_name,
)
from lauradb.query.expr_date import coerce_date, is_date, iso_string, millis_to_date


class ConversionError(LauraError):
    """A value that cannot be converted ($convert's onError catches these)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_VALUE, message)


@register("$type")
def _type(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)
    return lambda doc, variables: type_name(fn(doc, variables))


@register("$isNumber")
def _is_number(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)
    return lambda doc, variables: num.is_number(fn(doc, variables))


def _unsupported(value: Any, target: str) -> ConversionError:
    return ConversionError(
        f"Unsupported conversion from {type_name(value)} to {target} in $convert with no onError "
        "value"
    )


_INT_TEXT = re.compile(r"^[+-]?\d+$")
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _float_from_text(text: str) -> float:
    special = {"Infinity": math.inf, "-Infinity": -math.inf, "inf": math.inf, "-inf": -math.inf,
               "NaN": math.nan, "nan": math.nan}  # fmt: skip
    if text in special:
        return special[text]
    if not _FLOAT_TEXT.match(text):
        raise ConversionError(
            f'Failed to parse number \'{text}\' in $convert with no onError value: Did not '
            'consume whole string.'
        )
    return float(text)


def _whole_number(value: Any, target: str, low: int, high: int) -> int:
    k = num.kind(value)
    if k in (num.INT, num.LONG):
        v = int(value)
    elif k == num.DOUBLE or k == num.DECIMAL:
        f = num.to_decimal(value)
        if f.is_nan():
            raise ConversionError(
                "Attempt to convert NaN value to integer type in $convert with no onError value"
            )
        if f.is_infinite():
            raise ConversionError(
                "Attempt to convert infinity value to integer type in $convert with no onError "
                "value"
            )
        v = int(f)
    elif isinstance(value, bool):
        return int(value)
    elif isinstance(value, str):
        if not _INT_TEXT.match(value):
            raise ConversionError(
                f"Failed to parse number '{value}' in $convert with no onError value: Bad digit"
            )
        v = int(value)
    elif is_date(value) and target == "long":
        v = coerce_date(value, "$convert")
    else:
        raise _unsupported(value, target)
    if not low <= v <= high:
        raise ConversionError(
            f"Conversion would overflow target type in $convert with no onError value: {value}"
        )
    return v


def to_int(value: Any) -> Any:
    return _whole_number(value, "int", num.INT32_MIN, num.INT32_MAX)


def to_long(value: Any) -> Any:
    return Int64(_whole_number(value, "long", num.INT64_MIN, num.INT64_MAX))


def to_double(value: Any) -> Any:
    k = num.kind(value)
    if k != num.NOT_NUMBER:
        f = num.to_float(value)
        if k == num.DECIMAL and math.isinf(f) and not value.to_decimal().is_infinite():
            raise ConversionError(
                "Conversion would overflow target type in $convert with no onError value"
            )
        return f
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        return _float_from_text(value)
    if is_date(value):
        return float(coerce_date(value, "$convert"))
    raise _unsupported(value, "double")


def to_decimal(value: Any) -> Any:
    k = num.kind(value)
    if k == num.DECIMAL:
        return value
    if k == num.DOUBLE:
        if math.isnan(value) or math.isinf(value):
            return num.make_decimal(num.to_decimal(value))
        return num.make_decimal(decimal.Decimal(f"{value:.15g}"))
    if k != num.NOT_NUMBER:
        return num.make_decimal(decimal.Decimal(int(value)))
    if isinstance(value, bool):
        return Decimal128("1" if value else "0")
    if isinstance(value, str):
        try:
            with decimal.localcontext(num.DECIMAL_CONTEXT) as ctx:
                ctx.traps[decimal.InvalidOperation] = True
                return num.make_decimal(decimal.Decimal(value))
        except decimal.InvalidOperation:
            raise ConversionError(
                f"Failed to parse number '{value}' in $convert with no onError value"
            ) from None
    if is_date(value):
        return Decimal128(str(coerce_date(value, "$convert")))
    raise _unsupported(value, "decimal")


def to_bool(value: Any) -> Any:
    k = num.kind(value)
    if k != num.NOT_NUMBER:
        return not num.is_zero(value)
    if isinstance(value, bool):
        return value
    return True


def to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if num.kind(value) != num.NOT_NUMBER:
        return num.format_number(value)
    if isinstance(value, ObjectId):
        return str(value)
    if is_date(value):
        return iso_string(coerce_date(value, "$convert"))
    raise _unsupported(value, "string")


def to_date(value: Any) -> Any:
    if is_date(value):
        return millis_to_date(coerce_date(value, "$convert"))
    if isinstance(value, (ObjectId, Timestamp)):
        return millis_to_date(coerce_date(value, "$convert"))
    k = num.kind(value)
    if k in (num.LONG, num.DOUBLE, num.DECIMAL):
        f = num.to_decimal(value)
        if f.is_nan() or f.is_infinite():
            raise ConversionError("Attempt to convert a non-finite value to a date in $convert")
        return millis_to_date(int(f))
    if isinstance(value, str):
        return _date_from_text(value)
    raise _unsupported(value, "date")


def _date_from_text(text: str) -> Any:
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ConversionError(f"Error parsing date string '{text}' in $convert") from None
    if parsed.tzinfo is not None:
        return millis_to_date(datetime_to_millis(parsed))
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def to_object_id(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str):
        try:
            return ObjectId(value)
        except Exception:
            raise ConversionError(
                f"Failed to parse objectId '{value}' in $convert with no onError value: Invalid "
                f"string length for parsing to OID, expected 24 but found {len(value)}"
            ) from None
    raise _unsupported(value, "objectId")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "double": to_double,
    "string": to_string,
    "objectId": to_object_id,
    "bool": to_bool,
    "date": to_date,
    "int": to_int,
    "long": to_long,
    "decimal": to_decimal,
}
_TYPE_CODES = {
    1: "double", 2: "string", 7: "objectId", 8: "bool", 9: "date", 16: "int", 18: "long",
    19: "decimal",
}  # fmt: skip


def _target_name(value: Any) -> str:
    if isinstance(value, str):
        if value not in CONVERTERS:
            raise invalid(f"Unknown type name: {value}")
        return value
    if num.kind(value) != num.NOT_NUMBER:
        code = int(num.to_float(value))
        if code not in _TYPE_CODES:
            raise invalid(f"Invalid type code for $convert: {code}")
        return _TYPE_CODES[code]
    raise invalid(f"$convert's 'to' argument must be a string or number, but is {type_name(value)}")


def _shorthand(target: str) -> Callable[[Any, str], Expr]:
    convert = CONVERTERS[target]

    def compiler(args: Any, name: str) -> Expr:
        (fn,) = compile_args(args, name, 1)

        def evaluate(doc: Any, variables: Variables) -> Any:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                return None
            return convert(v)

        return evaluate

    return compiler


for _op, _target in (("$toDouble", "double"), ("$toString", "string"), ("$toObjectId", "objectId"),
                     ("$toBool", "bool"), ("$toDate", "date"), ("$toInt", "int"),
                     ("$toLong", "long"), ("$toDecimal", "decimal")):  # fmt: skip
    register(_op)(_shorthand(_target))


@register("$convert")
def _convert(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("input", "to"), ("onError", "onNull"))
    input_fn = compile_expression(spec["input"])
    to_fn = compile_expression(spec["to"])
    on_error = compile_expression(spec["onError"]) if "onError" in spec else None
    on_null = compile_expression(spec["onNull"]) if "onNull" in spec else None
    to_spec = spec["to"]
    fixed = _target_name(to_spec) if isinstance(to_spec, (str, int)) and not (
        isinstance(to_spec, str) and to_spec.startswith("$")
    ) else None

    def convert(doc: Any, variables: Variables) -> Any:
        target = fixed
        if target is None:
            t = to_fn(doc, variables)
            if t is None or t is MISSING:
                return None
            target = _target_name(t)
        v = input_fn(doc, variables)
        if v is None or v is MISSING:
            return on_null(doc, variables) if on_null is not None else None
        try:
            return CONVERTERS[target](v)
        except ConversionError:
            if on_error is None:
                raise
            return on_error(doc, variables)

    return convert
