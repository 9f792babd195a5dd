"""Date helpers and date expression operators ($year ... $dateToString).

Dates are naive ``datetime`` values in UTC (as pymongo decodes them); aware ones are
accepted and converted. Timezones are Olson names (``"Europe/Paris"``), ``"UTC"``/
``"GMT"``, or offsets ``"+hh:mm"``, ``"+hhmm"``, ``"+hh"``.
"""

from __future__ import annotations

import datetime
import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from bson.datetime_ms import DatetimeMS
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from lauradb.bsonkit.order import datetime_to_millis
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    bad_value,
    compile_args,
    compile_expression,
    constant,
    object_args,
    register,
    type_error,
    type_name,
)

_EPOCH = datetime.datetime(1970, 1, 1)
_UTC = datetime.UTC
_OFFSET = re.compile(r"^([+-])(\d{2})(?::?(\d{2}))?$")


def is_date(value: Any) -> bool:
    return isinstance(value, (datetime.datetime, DatetimeMS))


def to_millis(value: Any) -> int:
    if isinstance(value, DatetimeMS):
        return int(value)
    return datetime_to_millis(value)


def millis_to_date(millis: int) -> Any:
    """The BSON date ``millis`` ms after the epoch (DatetimeMS outside datetime's range)."""
    if not -(2**63) <= millis < 2**63:
        raise bad_value("date overflow")
    try:
        return _EPOCH + datetime.timedelta(milliseconds=millis)
    except OverflowError:
        return DatetimeMS(millis)


def coerce_date(value: Any, name: str) -> int:
    """Milliseconds of a date-like value (date, ObjectId, Timestamp) or a TYPE_MISMATCH."""
    if isinstance(value, datetime.datetime):
        return datetime_to_millis(value)
    if isinstance(value, DatetimeMS):
        return int(value)
    if isinstance(value, ObjectId):
        return datetime_to_millis(value.generation_time)
    if isinstance(value, Timestamp):
        return value.time * 1000
    raise type_error(f"{name}: can't convert from BSON type {type_name(value)} to Date")


@functools.lru_cache(maxsize=256)
def parse_timezone(name: str) -> datetime.tzinfo:
    if name in ("UTC", "GMT", "Z", "utc"):
        return _UTC
    m = _OFFSET.match(name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        hours = int(m.group(2))
        minutes = int(m.group(3) or 0)
        return datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise bad_value(f'unrecognized time zone identifier: "{name}"') from None


def local_time(millis: int, tz: datetime.tzinfo | None) -> datetime.datetime:
    """The wall-clock time (aware, in ``tz`` or UTC) of ``millis``."""
    try:
        utc = datetime.datetime(1970, 1, 1, tzinfo=_UTC) + datetime.timedelta(milliseconds=millis)
        return utc.astimezone(tz) if tz is not None else utc
    except OverflowError:
        raise bad_value("date is outside the supported range (years 1-9999)") from None


def _timezone_value(value: Any, name: str) -> datetime.tzinfo | None:
    if not isinstance(value, str):
        raise type_error(f"{name}: timezone must be a string, found {type_name(value)}")
    return parse_timezone(value)


def _date_input(args: Any, name: str) -> tuple[Expr, Expr | None]:
    """The (date, timezone) expressions of a date part operator's argument."""
    if isinstance(args, dict) and "date" in args and not any(k.startswith("$") for k in args):
        spec = object_args(args, name, ("date",), ("timezone",))
        tz = compile_expression(spec["timezone"]) if "timezone" in spec else None
        return compile_expression(spec["date"]), tz
    (fn,) = compile_args(args, name, 1)
    return fn, None


def _date_part(name: str, part: Callable[[datetime.datetime], int]) -> None:
    def compiler(args: Any, opname: str) -> Expr:
        date_fn, tz_fn = _date_input(args, opname)

        def evaluate(doc: Any, variables: Variables) -> Any:
            v = date_fn(doc, variables)
            if v is None or v is MISSING:
                return None
            tz = None
            if tz_fn is not None:
                tzv = tz_fn(doc, variables)
                if tzv is None or tzv is MISSING:
                    return None
                tz = _timezone_value(tzv, opname)
            return part(local_time(coerce_date(v, opname), tz))

        return evaluate

    register(name)(compiler)


def _sunday_week(t: datetime.datetime) -> int:
    yday = t.timetuple().tm_yday - 1
    weekday_sun0 = t.isoweekday() % 7
    return (yday + 7 - weekday_sun0) // 7


_date_part("$year", lambda t: t.year)
_date_part("$month", lambda t: t.month)
_date_part("$dayOfMonth", lambda t: t.day)
_date_part("$hour", lambda t: t.hour)
_date_part("$minute", lambda t: t.minute)
_date_part("$second", lambda t: t.second)
_date_part("$millisecond", lambda t: t.microsecond // 1000)
_date_part("$dayOfYear", lambda t: t.timetuple().tm_yday)
_date_part("$dayOfWeek", lambda t: t.isoweekday() % 7 + 1)
_date_part("$week", _sunday_week)
_date_part("$isoDayOfWeek", lambda t: t.isoweekday())
_date_part("$isoWeek", lambda t: t.isocalendar()[1])
_date_part("$isoWeekYear", lambda t: t.isocalendar()[0])

_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip


def _utc_offset_minutes(t: datetime.datetime) -> int:
    offset = t.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _offset_hhmm(t: datetime.datetime) -> str:
    minutes = _utc_offset_minutes(t)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


_SPECIFIERS: dict[str, Callable[[datetime.datetime], str]] = {
    "d": lambda t: f"{t.day:02d}",
    "G": lambda t: f"{t.isocalendar()[0]:04d}",
    "H": lambda t: f"{t.hour:02d}",
    "j": lambda t: f"{t.timetuple().tm_yday:03d}",
    "L": lambda t: f"{t.microsecond // 1000:03d}",
    "m": lambda t: f"{t.month:02d}",
    "M": lambda t: f"{t.minute:02d}",
    "S": lambda t: f"{t.second:02d}",
    "u": lambda t: str(t.isoweekday()),
    "U": lambda t: f"{_sunday_week(t):02d}",
    "V": lambda t: f"{t.isocalendar()[1]:02d}",
    "w": lambda t: str(t.isoweekday() % 7 + 1),
    "Y": lambda t: f"{t.year:04d}",
    "z": _offset_hhmm,
    "Z": lambda t: str(_utc_offset_minutes(t)),
    "b": lambda t: _MONTHS[t.month - 1][:3],
    "B": lambda t: _MONTHS[t.month - 1],
    "%": lambda t: "%",
}

Formatter = Callable[[datetime.datetime], str]


@functools.lru_cache(maxsize=256)
def compile_date_format(fmt: str) -> tuple[Formatter | str, ...]:
    """Split a ``$dateToString`` format into literal text and specifier functions."""
    parts: list[Formatter | str] = []
    literal = ""
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            literal += ch
            i += 1
            continue
        if i + 1 >= len(fmt):
            raise bad_value("Unmatched '%' at end of format string")
        spec = fmt[i + 1]
        fn = _SPECIFIERS.get(spec)
        if fn is None:
            raise bad_value(f"Invalid format character '%{spec}' in format string")
        if spec == "%":
            literal += "%"
        else:
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(fn)
        i += 2
    if literal:
        parts.append(literal)
    return tuple(parts)


def format_date(t: datetime.datetime, fmt: tuple[Formatter | str, ...]) -> str:
    return "".join(p if isinstance(p, str) else p(t) for p in fmt)


DEFAULT_FORMAT = "%Y-%m-%dT%H:%M:%S.%LZ"
DEFAULT_FORMAT_TZ = "%Y-%m-%dT%H:%M:%S.%L"


def iso_string(millis: int) -> str:
    return format_date(local_time(millis, None), compile_date_format(DEFAULT_FORMAT))


@register("$dateToString")
def _date_to_string(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("date",), ("format", "timezone", "onNull"))
    date_fn = compile_expression(spec["date"])
    tz_fn = compile_expression(spec["timezone"]) if "timezone" in spec else None
    default = DEFAULT_FORMAT_TZ if tz_fn is not None else DEFAULT_FORMAT
    fmt_fn = compile_expression(spec["format"]) if "format" in spec else constant(default)
    on_null = compile_expression(spec["onNull"]) if "onNull" in spec else None
    if isinstance(spec.get("format"), str) and not spec["format"].startswith("$"):
        compile_date_format(spec["format"])  # validate eagerly

    def date_to_string(doc: Any, variables: Variables) -> Any:
        fmt = fmt_fn(doc, variables)
        if fmt is None or fmt is MISSING:
            return None
        if not isinstance(fmt, str):
            raise type_error(
                f"$dateToString requires that 'format' be a string, found: {type_name(fmt)}"
            )
        tz = None
        if tz_fn is not None:
            tzv = tz_fn(doc, variables)
            if tzv is None or tzv is MISSING:
                return None
            tz = _timezone_value(tzv, name)
        v = date_fn(doc, variables)
        if v is None or v is MISSING:
            return on_null(doc, variables) if on_null is not None else None
        return format_date(local_time(coerce_date(v, name), tz), compile_date_format(fmt))

    return date_to_string


@register("$dateFromParts")
def _date_from_parts(args: Any, name: str) -> Expr:
    fields = ("year", "month", "day", "hour", "minute", "second", "millisecond")
    spec = object_args(args, name, ("year",), (*fields[1:], "timezone"))
    fns = [(f, compile_expression(spec[f])) for f in fields if f in spec]
    tz_fn = compile_expression(spec["timezone"]) if "timezone" in spec else None

    def date_from_parts(doc: Any, variables: Variables) -> Any:
        values = {"month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0, "millisecond": 0}
        for field, fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise type_error(f"'{field}' must evaluate to an integer, found {type_name(v)}")
            values[field] = int(v)
        tz: datetime.tzinfo = _UTC
        if tz_fn is not None:
            tzv = tz_fn(doc, variables)
            if tzv is None or tzv is MISSING:
                return None
            tz = _timezone_value(tzv, name) or _UTC
        try:
            base = datetime.datetime(values["year"], 1, 1, tzinfo=tz)
        except ValueError:
            raise bad_value("'year' must evaluate to an integer in the range 1 to 9999") from None
        delta = datetime.timedelta(
            days=values["day"] - 1,
            hours=values["hour"],
            minutes=values["minute"],
            seconds=values["second"],
            milliseconds=values["millisecond"],
        )
        month = values["month"] - 1
        year = values["year"] + month // 12
        t = base.replace(year=year, month=month % 12 + 1) + delta
        return millis_to_date(datetime_to_millis(t))

    return date_from_parts
