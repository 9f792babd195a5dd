"""MongoDB's numeric type rules: int < long < double < decimal.

Results take the widest type of their operands; an int result that overflows
int32 becomes a long, a long that overflows int64 becomes a double. Decimal128
arithmetic uses the IEEE 754-2008 decimal128 context (34 digits).
"""

from __future__ import annotations

import decimal
import math
from typing import Any

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64

INT = 0
LONG = 1
DOUBLE = 2
DECIMAL = 3
NOT_NUMBER = -1

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

DECIMAL_CONTEXT = create_decimal128_context()
DECIMAL_CONTEXT.traps[decimal.InvalidOperation] = False
DECIMAL_CONTEXT.traps[decimal.DivisionByZero] = False
DECIMAL_CONTEXT.traps[decimal.Overflow] = False


def kind(value: Any) -> int:
    """The numeric kind of ``value`` or NOT_NUMBER (bools are not numbers)."""
    t = type(value)
    if t is int:
        return INT if INT32_MIN <= value <= INT32_MAX else LONG
    if t is float:
        return DOUBLE
    if t is Int64:
        return LONG
    if t is Decimal128:
        return DECIMAL
    if t is bool:
        return NOT_NUMBER
    if isinstance(value, bool):
        return NOT_NUMBER
    if isinstance(value, Int64):
        return LONG
    if isinstance(value, int):
        return INT if INT32_MIN <= value <= INT32_MAX else LONG
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, decimal.Decimal):
        return DECIMAL
    return NOT_NUMBER


def is_number(value: Any) -> bool:
    return kind(value) != NOT_NUMBER


def to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return decimal.Decimal("NaN")
        if math.isinf(value):
            return decimal.Decimal("Infinity" if value > 0 else "-Infinity")
        return decimal.Decimal(repr(value))
    return decimal.Decimal(int(value))


def make_decimal(value: decimal.Decimal) -> Decimal128:
    with decimal.localcontext(DECIMAL_CONTEXT) as ctx:
        return Decimal128(ctx.plus(value))


def to_float(value: Any) -> float:
    if isinstance(value, Decimal128):
        return float(value.to_decimal())
    return float(value)


def make_int(value: int, k: int) -> Any:
    """An exact integer result of kind ``k`` (INT or LONG), widened on overflow."""
    if k == INT and INT32_MIN <= value <= INT32_MAX:
        return value
    if INT64_MIN <= value <= INT64_MAX:
        return Int64(value)
    return float(value)


def as_kind(value: Any, k: int) -> Any:
    """Convert a number to kind ``k`` (never narrowing)."""
    if k == DECIMAL:
        return to_decimal(value)
    if k == DOUBLE:
        return to_float(value)
    return int(value)


def result(value: Any, k: int) -> Any:
    """Wrap a Python number computed in kind ``k`` as the BSON value."""
    if k == DECIMAL:
        return make_decimal(value)
    if k == DOUBLE:
        return float(value)
    return make_int(int(value), k)


def add(a: Any, b: Any) -> Any:
    k = max(kind(a), kind(b))
    if k == DECIMAL:
        with decimal.localcontext(DECIMAL_CONTEXT):
            return make_decimal(to_decimal(a) + to_decimal(b))
    if k == DOUBLE:
        return to_float(a) + to_float(b)
    return make_int(int(a) + int(b), k)


def subtract(a: Any, b: Any) -> Any:
    k = max(kind(a), kind(b))
    if k == DECIMAL:
        with decimal.localcontext(DECIMAL_CONTEXT):
            return make_decimal(to_decimal(a) - to_decimal(b))
    if k == DOUBLE:
        return to_float(a) - to_float(b)
    return make_int(int(a) - int(b), k)


def multiply(a: Any, b: Any) -> Any:
    k = max(kind(a), kind(b))
    if k == DECIMAL:
        with decimal.localcontext(DECIMAL_CONTEXT):
            return make_decimal(to_decimal(a) * to_decimal(b))
    if k == DOUBLE:
        return to_float(a) * to_float(b)
    return make_int(int(a) * int(b), k)


def is_zero(value: Any) -> bool:
    if isinstance(value, Decimal128):
        return value.to_decimal().is_zero()
    return bool(value == 0)


def sign(value: Any) -> int:
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        return 0 if d.is_zero() or d.is_nan() else (-1 if d.is_signed() else 1)
    if value != value:
        return 0
    return (value > 0) - (value < 0)


def format_double(value: float) -> str:
    """MongoDB's string form of a double (``$toString``, ``$concat`` of numbers)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)) if value != 0 or math.copysign(1, value) > 0 else "-0"
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        sign_char = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-").lstrip("0") or "0"
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{sign_char}{digits}"
    return text


def format_number(value: Any) -> str:
    k = kind(value)
    if k == DOUBLE:
        return format_double(value)
    if k == DECIMAL:
        return str(value)
    return str(int(value))
