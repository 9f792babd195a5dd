"""$group accumulators, with the partial/merge forms the router's pipeline split uses.

Each accumulator is a small state object:

- ``add(value)`` feeds one evaluated argument (``MISSING`` for a missing field);
- ``result()`` is the final value (never ``MISSING``: a group field is null then);
- ``partial()`` is a BSON-encodable state that a shard sends to the router;
- ``merge(partial)`` folds such a state in (states are merged in shard order).

Merging partials is exact for ``$sum``/``$avg`` (integers and doubles are summed
exactly and rounded once, so the result does not depend on how documents were
spread over shards), by the comparator for ``$min``/``$max``, a
union for ``$addToSet``, a concatenation in shard order for ``$push`` and
``$mergeObjects``, and Chan's parallel formula (count, mean, M2) for ``$stdDev*``.

``$first``/``$last`` only mean something over an ordered stream: their partial form
takes the first/last partial in stream order, but the split keeps a ``$group`` that
uses them whole on the merge side (see ``ORDER_DEPENDENT``).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bson
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.bsonkit.order import sort_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query import expr_numeric as num
from lauradb.query.common import MISSING
from lauradb.query.expr_core import Expr, compile_expression, constant, type_name


def approx_size(value: Any) -> int:
    """An approximate BSON size in bytes of a value (for memory limits)."""
    t = type(value)
    if t is dict:
        try:
            return len(bson.encode(value))
        except Exception:
            return 5 + sum(len(k) + 2 + approx_size(v) for k, v in value.items())
    if t is str:
        return 5 + len(value)
    if t is list or t is tuple:
        return 5 + sum(4 + approx_size(v) for v in value)
    if t is bytes or t is Binary:
        return 5 + len(value)
    if t is Decimal128:
        return 16
    return 8


# ---------------------------------------------------------------- exact sums


# Finite doubles are summed exactly as integers in units of 2**-1074 (the smallest
# subnormal double): the total is then rounded once, so it does not depend on the
# order of the values or on how they were spread over shards.
_FIXED_BITS = 1074
_FIXED_SCALE = 1 << _FIXED_BITS


class SumState:
    """An exact running sum of numbers with MongoDB's result type rules."""

    __slots__ = ("dec", "fixed", "ints", "kind", "special")

    def __init__(self) -> None:
        self.kind = num.INT
        self.ints = 0  # the exact sum of the int/long values
        self.fixed = 0  # the exact sum of the finite doubles, in units of 2**-1074
        self.special = 0.0  # the sum of the non-finite doubles seen
        self.dec: decimal.Decimal | None = None

    def add_number(self, value: Any, k: int) -> None:
        if k > self.kind:
            self.kind = k
        if k == num.DOUBLE:
            if value - value == 0.0:  # finite
                n, d = value.as_integer_ratio()
                self.fixed += n << (_FIXED_BITS + 1 - d.bit_length())
            else:
                self.special += value
        elif k <= num.LONG:
            self.ints += int(value)
        else:
            d128 = num.to_decimal(value)
            with decimal.localcontext(num.DECIMAL_CONTEXT):
                self.dec = d128 if self.dec is None else self.dec + d128

    def add(self, value: Any) -> bool:
        """Add ``value`` if it is a number; returns whether it was (hot path)."""
        t = type(value)
        if t is float:
            if self.kind < num.DOUBLE:
                self.kind = num.DOUBLE
            if value - value == 0.0:
                n, d = value.as_integer_ratio()
                self.fixed += n << (_FIXED_BITS + 1 - d.bit_length())
            else:
                self.special += value
            return True
        if t is int and -(2**31) <= value < 2**31:
            self.ints += value
            return True
        k = num.kind(value)
        if k == num.NOT_NUMBER:
            return False
        self.add_number(value, k)
        return True

    def _has_special(self) -> bool:
        return self.special != 0.0 or self.special != self.special

    def total_float(self) -> float:
        if self._has_special():
            return self.special
        exact = self.fixed + (self.ints << _FIXED_BITS)
        try:
            return exact / _FIXED_SCALE  # int / int rounds correctly
        except OverflowError:
            return math.inf if exact > 0 else -math.inf

    def total_decimal(self) -> decimal.Decimal:
        with decimal.localcontext(num.DECIMAL_CONTEXT):
            total = decimal.Decimal(self.ints)
            if self.fixed:
                total += decimal.Decimal(self.fixed) / decimal.Decimal(_FIXED_SCALE)
            if self._has_special():
                total += num.to_decimal(self.special)
            if self.dec is not None:
                total += self.dec
            return +total

    def result(self) -> Any:
        if self.kind == num.DECIMAL:
            return num.make_decimal(self.total_decimal())
        if self.kind == num.DOUBLE:
            return self.total_float()
        return num.make_int(self.ints, self.kind)

    def partial(self) -> dict[str, Any]:
        ints: Any = str(self.ints)  # exact, even beyond int64
        if num.INT64_MIN <= self.ints <= num.INT64_MAX:
            ints = Int64(self.ints)
        return {
            "k": self.kind,
            "i": ints,
            "f": hex(self.fixed),
            "s": self.special,
            "d": None if self.dec is None else num.make_decimal(self.dec),
        }

    def merge(self, partial: Any) -> None:
        try:
            k = int(partial["k"])
            self.kind = max(self.kind, k)
            self.ints += int(partial["i"])
            self.fixed += int(partial["f"], 16)
            self.special += float(partial["s"])
            if partial["d"] is not None:
                self.add_number(partial["d"], num.DECIMAL)
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_partial("$sum", partial) from exc


def _bad_partial(name: str, partial: Any) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, f"malformed partial state for {name}: {partial!r}")


# ---------------------------------------------------------------- accumulators


class Accumulator:
    """Base class; see the module docstring."""

    __slots__ = ()

    def add(self, value: Any) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def partial(self) -> Any:
        raise NotImplementedError

    def merge(self, partial: Any) -> None:
        raise NotImplementedError


class Sum(Accumulator):
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = SumState()

    def add(self, value: Any) -> None:
        self.state.add(value)

    def result(self) -> Any:
        return self.state.result()

    def partial(self) -> Any:
        return self.state.partial()

    def merge(self, partial: Any) -> None:
        self.state.merge(partial)


class Avg(Accumulator):
    __slots__ = ("count", "state")

    def __init__(self) -> None:
        self.state = SumState()
        self.count = 0

    def add(self, value: Any) -> None:
        if self.state.add(value):
            self.count += 1

    def result(self) -> Any:
        if self.count == 0:
            return None
        s = self.state
        if s.kind == num.DECIMAL:
            with decimal.localcontext(num.DECIMAL_CONTEXT):
                return num.make_decimal(s.total_decimal() / self.count)
        if s.kind == num.DOUBLE:
            return s.total_float() / self.count
        return s.ints / self.count

    def partial(self) -> Any:
        return {"sum": self.state.partial(), "n": Int64(self.count)}

    def merge(self, partial: Any) -> None:
        try:
            self.state.merge(partial["sum"])
            self.count += int(partial["n"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_partial("$avg", partial) from exc


class _Extreme(Accumulator):
    __slots__ = ("key", "value")
    sign = 1

    def __init__(self) -> None:
        self.value: Any = None
        self.key: tuple[Any, ...] | None = None

    def add(self, value: Any) -> None:
        if value is None or value is MISSING:
            return
        k = sort_key(value)
        if self.key is None or (k < self.key if self.sign < 0 else k > self.key):
            self.key = k
            self.value = value

    def result(self) -> Any:
        return self.value

    def partial(self) -> Any:
        return self.value

    def merge(self, partial: Any) -> None:
        self.add(partial)


class Min(_Extreme):
    __slots__ = ()
    sign = -1


class Max(_Extreme):
    __slots__ = ()
    sign = 1


class First(Accumulator):
    __slots__ = ("seen", "value")

    def __init__(self) -> None:
        self.seen = False
        self.value: Any = None

    def add(self, value: Any) -> None:
        if not self.seen:
            self.seen = True
            self.value = None if value is MISSING else value

    def result(self) -> Any:
        return self.value

    def partial(self) -> Any:
        return {"seen": self.seen, "v": self.value}

    def merge(self, partial: Any) -> None:
        if not isinstance(partial, dict):
            raise _bad_partial("$first/$last", partial)
        if partial.get("seen"):
            self.add(partial.get("v"))


class Last(First):
    __slots__ = ()

    def add(self, value: Any) -> None:
        self.seen = True
        self.value = None if value is MISSING else value


class Push(Accumulator):
    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> None:
        if value is not MISSING:
            self.values.append(value)

    def result(self) -> Any:
        return self.values

    def partial(self) -> Any:
        return self.values

    def merge(self, partial: Any) -> None:
        if not isinstance(partial, list):
            raise _bad_partial("$push", partial)
        self.values.extend(partial)


class AddToSet(Accumulator):
    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}

    def add(self, value: Any) -> None:
        if value is not MISSING:
            key = sort_key(value)
            if key not in self.values:
                self.values[key] = value

    def result(self) -> Any:
        return list(self.values.values())

    def partial(self) -> Any:
        return list(self.values.values())

    def merge(self, partial: Any) -> None:
        if not isinstance(partial, list):
            raise _bad_partial("$addToSet", partial)
        for value in partial:
            self.add(value)


class Count(Accumulator):
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, value: Any) -> None:
        self.n += 1

    def result(self) -> Any:
        return num.make_int(self.n, num.INT)

    def partial(self) -> Any:
        return Int64(self.n)

    def merge(self, partial: Any) -> None:
        if isinstance(partial, bool) or not isinstance(partial, int):
            raise _bad_partial("$count", partial)
        self.n += int(partial)


class _StdDev(Accumulator):
    __slots__ = ("m2", "mean", "n")
    sample = False

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, value: Any) -> None:
        if num.kind(value) == num.NOT_NUMBER:
            return
        x = num.to_float(value)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def result(self) -> Any:
        if self.n == 0 or (self.sample and self.n < 2):
            return None
        variance = self.m2 / (self.n - 1 if self.sample else self.n)
        return math.sqrt(variance) if variance >= 0 else (math.nan if variance != variance else 0.0)

    def partial(self) -> Any:
        return {"n": Int64(self.n), "mean": self.mean, "m2": self.m2}

    def merge(self, partial: Any) -> None:
        try:
            nb = int(partial["n"])
            mb = float(partial["mean"])
            m2b = float(partial["m2"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_partial("$stdDev", partial) from exc
        if nb == 0:
            return
        na = self.n
        n = na + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * na * nb / n
        self.n = n


class StdDevPop(_StdDev):
    __slots__ = ()
    sample = False


class StdDevSamp(_StdDev):
    __slots__ = ()
    sample = True


class MergeObjects(Accumulator):
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}

    def add(self, value: Any) -> None:
        if value is None or value is MISSING:
            return
        if not isinstance(value, dict):
            raise LauraError(
                ErrorCode.TYPE_MISMATCH,
                f"$mergeObjects requires object inputs, but input {value!r} is of type "
                f"{type_name(value)}",
            )
        self.value.update(value)

    def result(self) -> Any:
        return self.value

    def partial(self) -> Any:
        return self.value

    def merge(self, partial: Any) -> None:
        self.add(partial)


ACCUMULATORS: dict[str, Callable[[], Accumulator]] = {
    "$sum": Sum,
    "$avg": Avg,
    "$min": Min,
    "$max": Max,
    "$first": First,
    "$last": Last,
    "$push": Push,
    "$addToSet": AddToSet,
    "$count": Count,
    "$stdDevPop": StdDevPop,
    "$stdDevSamp": StdDevSamp,
    "$mergeObjects": MergeObjects,
}

# Accumulators whose result depends on which document comes first: a $group using
# them is not pushed down to the shards by the split.
ORDER_DEPENDENT = frozenset({"$first", "$last"})

# Accumulators whose state grows with the input (counted against memory limits).
GROWING = frozenset({"$push", "$addToSet", "$mergeObjects"})


@dataclass(frozen=True)
class AccumulatorSpec:
    """One output field of a $group: ``field: {op: argument}``."""

    field: str
    op: str
    argument: Expr
    factory: Callable[[], Accumulator]

    @property
    def grows(self) -> bool:
        return self.op in GROWING


def compile_accumulator(field: str, spec: Any) -> AccumulatorSpec:
    """Parse ``{"$sum": expr}``-style accumulator specs (the values of a $group)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise LauraError(
            ErrorCode.INVALID_PIPELINE,
            f"The field '{field}' must be an accumulator object",
        )
    op, argument = next(iter(spec.items()))
    factory = ACCUMULATORS.get(op)
    if factory is None:
        raise LauraError(ErrorCode.UNKNOWN_OPERATOR, f"unknown group operator '{op}'")
    if op == "$count":
        if argument != {}:
            raise LauraError(
                ErrorCode.INVALID_PIPELINE,
                "$count takes no arguments, i.e. $count:{}"
            )
        return AccumulatorSpec(field, op, constant(1), factory)
    if isinstance(argument, list):
        raise LauraError(
            ErrorCode.INVALID_EXPRESSION, f"The {op} accumulator is a unary operator"
        )
    return AccumulatorSpec(field, op, compile_expression(argument), factory)


def accumulate(op: str, values: Iterable[Any]) -> Any:
    """Run accumulator ``op`` over ``values`` and return its result."""
    acc = ACCUMULATORS[op]()
    for value in values:
        acc.add(value)
    return acc.result()
