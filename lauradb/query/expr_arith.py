"""Arithmetic expression operators ($add ... $log10)."""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from typing import Any

from bson.decimal128 import Decimal128

from lauradb.query import expr_numeric as num
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    bad_value,
    compile_args,
    register,
    type_error,
    type_name,
)
from lauradb.query.expr_date import is_date, millis_to_date, to_millis


def _require_number(name: str, value: Any) -> int:
    k = num.kind(value)
    if k == num.NOT_NUMBER:
        raise type_error(f"{name} only supports numeric types, not {type_name(value)}")
    return k


@register("$add")
def _add(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def add(doc: Any, variables: Variables) -> Any:
        total: Any = 0
        date_ms: int | None = None
        null = False
        for fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                null = True
                continue
            if is_date(v):
                if date_ms is not None:
                    raise type_error("only one date allowed in an $add expression")
                date_ms = to_millis(v)
                continue
            if num.kind(v) == num.NOT_NUMBER:
                raise type_error(f"$add only supports numeric or date types, not {type_name(v)}")
            total = num.add(total, v)
        if null:
            return None
        if date_ms is not None:
            return millis_to_date(date_ms + _round_millis(total))
        return total

    return add


def _round_millis(value: Any) -> int:
    f = num.to_float(value)
    if math.isnan(f) or math.isinf(f):
        raise bad_value("date overflow in $add")
    if isinstance(value, (Decimal128, float)):
        return math.floor(f + 0.5) if f >= 0 else -math.floor(-f + 0.5)
    return int(value)


@register("$subtract")
def _subtract(args: Any, name: str) -> Expr:
    left, right = compile_args(args, name, 2)

    def subtract(doc: Any, variables: Variables) -> Any:
        a = left(doc, variables)
        b = right(doc, variables)
        if a is None or a is MISSING or b is None or b is MISSING:
            return None
        ka = num.kind(a)
        kb = num.kind(b)
        if ka != num.NOT_NUMBER and kb != num.NOT_NUMBER:
            return num.subtract(a, b)
        if is_date(a):
            if is_date(b):
                return num.make_int(to_millis(a) - to_millis(b), num.LONG)
            if kb != num.NOT_NUMBER:
                return millis_to_date(to_millis(a) - _round_millis(b))
        raise type_error(f"can't $subtract {type_name(b)} from {type_name(a)}")

    return subtract


@register("$multiply")
def _multiply(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def multiply(doc: Any, variables: Variables) -> Any:
        product: Any = 1
        null = False
        for fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                null = True
                continue
            _require_number(name, v)
            product = num.multiply(product, v)
        return None if null else product

    return multiply


def _binary_numbers(
    args: Any, name: str, body: Callable[[Any, Any, int], Any]
) -> Expr:
    left, right = compile_args(args, name, 2)

    def binary(doc: Any, variables: Variables) -> Any:
        a = left(doc, variables)
        b = right(doc, variables)
        if a is None or a is MISSING or b is None or b is MISSING:
            return None
        ka = num.kind(a)
        kb = num.kind(b)
        if ka == num.NOT_NUMBER or kb == num.NOT_NUMBER:
            raise type_error(
                f"{name} only supports numeric types, not {type_name(a)} and {type_name(b)}"
            )
        return body(a, b, max(ka, kb))

    return binary


def _divide_body(a: Any, b: Any, k: int) -> Any:
    if num.is_zero(b):
        raise bad_value("can't $divide by zero")
    if k == num.DECIMAL:
        with decimal.localcontext(num.DECIMAL_CONTEXT):
            return num.make_decimal(num.to_decimal(a) / num.to_decimal(b))
    return num.to_float(a) / num.to_float(b)


def _mod_body(a: Any, b: Any, k: int) -> Any:
    if num.is_zero(b):
        raise bad_value("can't $mod by zero")
    if k == num.DECIMAL:
        with decimal.localcontext(num.DECIMAL_CONTEXT):
            return num.make_decimal(num.to_decimal(a) % num.to_decimal(b))
    if k == num.DOUBLE:
        return math.fmod(num.to_float(a), num.to_float(b))
    x, y = int(a), int(b)
    r = abs(x) % abs(y)
    return num.make_int(-r if x < 0 else r, k)


@register("$divide")
def _divide(args: Any, name: str) -> Expr:
    return _binary_numbers(args, name, _divide_body)


@register("$mod")
def _mod(args: Any, name: str) -> Expr:
    return _binary_numbers(args, name, _mod_body)


def _unary(
    name: str,
    on_int: Callable[[int, int], Any],
    on_double: Callable[[float], Any],
    on_decimal: Callable[[decimal.Decimal], Any],
) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, opname: str) -> Expr:
        (fn,) = compile_args(args, opname, 1)

        def unary(doc: Any, variables: Variables) -> Any:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                return None
            k = _require_number(opname, v)
            if k == num.DECIMAL:
                with decimal.localcontext(num.DECIMAL_CONTEXT):
                    return num.make_decimal(on_decimal(num.to_decimal(v)))
            if k == num.DOUBLE:
                return on_double(v)
            return on_int(int(v), k)

        return unary

    register(name)(compiler)
    return compiler


def _abs_int(v: int, k: int) -> Any:
    if v == num.INT64_MIN:
        raise bad_value("can't take $abs of long long min")
    return num.make_int(abs(v), k)


def _ceil_double(v: float) -> float:
    return v if math.isnan(v) or math.isinf(v) else float(math.ceil(v))


def _floor_double(v: float) -> float:
    return v if math.isnan(v) or math.isinf(v) else float(math.floor(v))


def _sqrt_check(v: Any) -> None:
    if v < 0:
        raise bad_value("$sqrt's argument must be greater than or equal to 0")


def _sqrt_double(v: float) -> float:
    if math.isnan(v):
        return v
    _sqrt_check(v)
    return math.sqrt(v)


def _sqrt_decimal(v: decimal.Decimal) -> decimal.Decimal:
    if v.is_nan():
        return v
    _sqrt_check(v)
    return v.sqrt()


def _exp_double(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _ln_check(name: str, v: Any) -> None:
    if v <= 0:
        raise bad_value(f"{name}'s argument must be a positive number, but is {v}")


def _log_double(name: str, fn: Callable[[float], float]) -> Callable[[float], float]:
    def log(v: float) -> float:
        if math.isnan(v):
            return v
        _ln_check(name, v)
        return fn(v)

    return log


def _log_decimal(
    name: str, fn: Callable[[decimal.Decimal], decimal.Decimal]
) -> Callable[[decimal.Decimal], decimal.Decimal]:
    def log(v: decimal.Decimal) -> decimal.Decimal:
        if v.is_nan():
            return v
        _ln_check(name, v)
        return fn(v)

    return log


def _log_int(name: str, fn: Callable[[float], float]) -> Callable[[int, int], Any]:
    def log(v: int, k: int) -> float:
        _ln_check(name, v)
        return fn(v)

    return log


_unary("$abs", _abs_int, abs, abs)
_unary(
    "$ceil",
    lambda v, k: num.make_int(v, k),
    _ceil_double,
    lambda d: d.to_integral_value(rounding=decimal.ROUND_CEILING),
)
_unary(
    "$floor",
    lambda v, k: num.make_int(v, k),
    _floor_double,
    lambda d: d.to_integral_value(rounding=decimal.ROUND_FLOOR),
)
_unary("$sqrt", lambda v, k: _sqrt_double(float(v)), _sqrt_double, _sqrt_decimal)
_unary("$exp", lambda v, k: _exp_double(float(v)), _exp_double, lambda d: d.exp())
_unary(
    "$ln",
    _log_int("$ln", math.log),
    _log_double("$ln", math.log),
    _log_decimal("$ln", lambda d: d.ln()),
)
_unary(
    "$log10",
    _log_int("$log10", math.log10),
    _log_double("$log10", math.log10),
    _log_decimal("$log10", lambda d: d.log10()),
)


@register("$log")
def _log(args: Any, name: str) -> Expr:
    def body(a: Any, b: Any, k: int) -> Any:
        if num.sign(a) <= 0 and not _is_nan(a):
            raise bad_value(f"$log's argument must be a positive number, but is {a}")
        if (num.sign(b) <= 0 or num.to_float(b) == 1.0) and not _is_nan(b):
            raise bad_value(f"$log's base must be a positive number not equal to 1, but is {b}")
        if k == num.DECIMAL:
            with decimal.localcontext(num.DECIMAL_CONTEXT):
                x, base = num.to_decimal(a), num.to_decimal(b)
                return num.make_decimal(x.ln() / base.ln())
        return math.log(num.to_float(a)) / math.log(num.to_float(b))

    return _binary_numbers(args, name, body)


def _is_nan(v: Any) -> bool:
    if isinstance(v, Decimal128):
        return v.to_decimal().is_nan()
    return bool(v != v)


@register("$pow")
def _pow(args: Any, name: str) -> Expr:
    def body(a: Any, b: Any, k: int) -> Any:
        if k == num.DECIMAL:
            with decimal.localcontext(num.DECIMAL_CONTEXT):
                x, y = num.to_decimal(a), num.to_decimal(b)
                if x.is_zero() and y < 0:
                    raise bad_value("$pow cannot take a base of 0 and a negative exponent")
                return num.make_decimal(x**y)
        if k == num.DOUBLE:
            fx, fy = num.to_float(a), num.to_float(b)
            try:
                return math.pow(fx, fy)
            except (ValueError, ZeroDivisionError):
                return math.inf if fx == 0 else math.nan
            except OverflowError:
                return math.inf
        base, exp = int(a), int(b)
        if exp < 0:
            if base == 0:
                raise bad_value("$pow cannot take a base of 0 and a negative exponent")
            if base == 1:
                return num.make_int(1, k)
            if base == -1:
                return num.make_int(1 if exp % 2 == 0 else -1, k)
            return float(base) ** exp
        if abs(base) > 1 and exp > 64:
            return math.pow(float(base), float(exp))
        return num.make_int(base**exp, k)

    return _binary_numbers(args, name, body)


def _rounding(name: str, mode: str) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, opname: str) -> Expr:
        fns = compile_args(args, opname, 1, 2)

        def apply(doc: Any, variables: Variables) -> Any:
            v = fns[0](doc, variables)
            place: Any = 0
            if len(fns) == 2:
                place = fns[1](doc, variables)
                if place is None or place is MISSING:
                    return None
            if v is None or v is MISSING:
                return None
            k = _require_number(opname, v)
            places = _place(opname, place)
            return _round(v, k, places, mode)

        return apply

    register(name)(compiler)
    return compiler


def _place(name: str, place: Any) -> int:
    k = num.kind(place)
    if k == num.NOT_NUMBER:
        raise type_error(f"{name} requires \"place\" to be a numeric type, not {type_name(place)}")
    f = num.to_float(place)
    if math.isnan(f) or math.isinf(f) or f != int(f):
        raise bad_value(f"{name} requires \"place\" to be an integral value, but found {place}")
    places = int(f)
    if not -20 < places < 100:
        raise bad_value(f"{name} requires \"place\" to be in the range (-20, 100), found {places}")
    return places


def _round(v: Any, k: int, places: int, mode: str) -> Any:
    if k in (num.INT, num.LONG) and places >= 0:
        return v
    if k == num.DOUBLE and (math.isnan(v) or math.isinf(v)):
        return v
    d = num.to_decimal(v)
    if d.is_nan() or d.is_infinite():
        return v
    quantum = decimal.Decimal(1).scaleb(-places)
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        rounded = d.quantize(quantum, rounding=mode)
    if k == num.DECIMAL:
        return num.make_decimal(rounded)
    if k == num.DOUBLE:
        return float(rounded)
    return num.make_int(int(rounded), k)


_rounding("$round", decimal.ROUND_HALF_EVEN)
_rounding("$trunc", decimal.ROUND_DOWN)
