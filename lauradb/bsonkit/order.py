"""MongoDB's BSON value order, as one comparator used everywhere.

``sort_key(v)`` maps a decoded BSON value (pymongo's ``bson`` types) to a Python
tuple whose natural order is MongoDB's order:

MinKey < null < numbers < strings < objects < arrays < binary < ObjectId < bool
< date < timestamp < regex < code < MaxKey.

Numbers of every type (int, Int64, float, Decimal128) compare by value; NaN sorts
below every other number and equals NaN. Strings compare by UTF-8 bytes (the same
as code point order). Objects compare element by element (type rank, then field
name, then value); arrays element by element; a shorter prefix sorts first.
"""

from __future__ import annotations

import calendar
import datetime
import decimal
from collections.abc import Callable, Mapping
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

# MongoDB's canonical type ranks (canonicalizeBSONType).
RANK_MINKEY = -1
RANK_NULL = 5
RANK_NUMBER = 10
RANK_STRING = 15
RANK_OBJECT = 20
RANK_ARRAY = 25
RANK_BINARY = 30
RANK_OBJECTID = 35
RANK_BOOL = 40
RANK_DATE = 45
RANK_TIMESTAMP = 47
RANK_REGEX = 50
RANK_DBREF = 55
RANK_CODE = 60
RANK_CODE_W_SCOPE = 65
RANK_MAXKEY = 100

SortKey = tuple[Any, ...]

_NAN_KEY: SortKey = (RANK_NUMBER, 0)
_NULL_KEY: SortKey = (RANK_NULL,)
_MINKEY_KEY: SortKey = (RANK_MINKEY,)
_MAXKEY_KEY: SortKey = (RANK_MAXKEY,)
_TRUE_KEY: SortKey = (RANK_BOOL, 1)
_FALSE_KEY: SortKey = (RANK_BOOL, 0)


def datetime_to_millis(value: datetime.datetime) -> int:
    """Milliseconds since the Unix epoch; naive datetimes are taken as UTC."""
    if value.tzinfo is not None:
        offset = value.utcoffset()
        if offset is not None:
            value = value - offset
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def _int_key(v: Any) -> SortKey:
    return (RANK_NUMBER, 1, v)


def _float_key(v: float) -> SortKey:
    if v != v:
        return _NAN_KEY
    return (RANK_NUMBER, 1, v)


def _decimal_key(v: Decimal128) -> SortKey:
    d = v.to_decimal()
    if d.is_nan():
        return _NAN_KEY
    return (RANK_NUMBER, 1, d)


def _pydecimal_key(v: decimal.Decimal) -> SortKey:
    if v.is_nan():
        return _NAN_KEY
    return (RANK_NUMBER, 1, v)


def _str_key(v: str) -> SortKey:
    return (RANK_STRING, v)


def _bool_key(v: bool) -> SortKey:
    return _TRUE_KEY if v else _FALSE_KEY


def _none_key(v: None) -> SortKey:
    return _NULL_KEY


def _dict_key(v: Mapping[str, Any]) -> SortKey:
    parts = []
    for name, item in v.items():
        k = sort_key(item)
        parts.append((k[0], name, k))
    return (RANK_OBJECT, tuple(parts))


def _list_key(v: list[Any] | tuple[Any, ...]) -> SortKey:
    return (RANK_ARRAY, tuple([sort_key(x) for x in v]))


def _bytes_key(v: bytes) -> SortKey:
    return (RANK_BINARY, len(v), 0, bytes(v))


def _binary_key(v: Binary) -> SortKey:
    return (RANK_BINARY, len(v), v.subtype, bytes(v))


def _oid_key(v: ObjectId) -> SortKey:
    return (RANK_OBJECTID, v.binary)


def _datetime_key(v: datetime.datetime) -> SortKey:
    return (RANK_DATE, datetime_to_millis(v))


def _datetime_ms_key(v: DatetimeMS) -> SortKey:
    return (RANK_DATE, int(v))


def _timestamp_key(v: Timestamp) -> SortKey:
    return (RANK_TIMESTAMP, v.time, v.inc)


def _regex_key(v: Regex[Any]) -> SortKey:
    return (RANK_REGEX, str(v.pattern), regex_flag_string(v.flags))


def _code_key(v: Code) -> SortKey:
    if v.scope is not None:
        return (RANK_CODE_W_SCOPE, str(v), _dict_key(v.scope))
    return (RANK_CODE, str(v))


def _dbref_key(v: DBRef) -> SortKey:
    return (RANK_DBREF, v.collection, sort_key(v.id))


def regex_flag_string(flags: int | str) -> str:
    if isinstance(flags, str):
        return "".join(sorted(flags))
    import re

    out = ""
    for ch, bit in (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S), ("u", re.U), ("x", re.X)):
        if flags & bit:
            out += ch
    return out


_DISPATCH: dict[type, Callable[[Any], SortKey]] = {
    int: _int_key,
    Int64: _int_key,
    float: _float_key,
    Decimal128: _decimal_key,
    decimal.Decimal: _pydecimal_key,
    str: _str_key,
    bool: _bool_key,
    type(None): _none_key,
    dict: _dict_key,
    list: _list_key,
    tuple: _list_key,
    bytes: _bytes_key,
    Binary: _binary_key,
    ObjectId: _oid_key,
    datetime.datetime: _datetime_key,
    DatetimeMS: _datetime_ms_key,
    Timestamp: _timestamp_key,
    Regex: _regex_key,
    Code: _code_key,
    DBRef: _dbref_key,
    MinKey: lambda v: _MINKEY_KEY,
    MaxKey: lambda v: _MAXKEY_KEY,
}


def _fallback_key(v: Any) -> SortKey:
    import re

    if isinstance(v, bool):
        return _bool_key(v)
    if isinstance(v, int):
        return _int_key(v)
    if isinstance(v, float):
        return _float_key(v)
    if isinstance(v, str):
        return _str_key(v)
    if isinstance(v, Mapping):
        return _dict_key(v)
    if isinstance(v, (list, tuple)):
        return _list_key(v)
    if isinstance(v, datetime.datetime):
        return _datetime_key(v)
    if isinstance(v, re.Pattern):
        return (RANK_REGEX, v.pattern, regex_flag_string(v.flags & ~re.U))
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _bytes_key(bytes(v))
    raise TypeError(f"not a BSON value: {type(v).__name__}")


def sort_key(value: Any) -> SortKey:
    """A tuple whose Python order is MongoDB's BSON order for ``value``."""
    fn = _DISPATCH.get(type(value))
    if fn is not None:
        return fn(value)
    return _fallback_key(value)


def canonical_rank(value: Any) -> int:
    """MongoDB's canonical type rank of ``value`` (numbers share one rank)."""
    rank: int = sort_key(value)[0]
    return rank


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, equal to, or after ``b``."""
    ka = sort_key(a)
    kb = sort_key(b)
    if ka < kb:
        return -1
    if ka > kb:
        return 1
    return 0


def bson_equal(a: Any, b: Any) -> bool:
    """MongoDB equality: 1 == 1.0 == Decimal128('1'); NaN == NaN."""
    return sort_key(a) == sort_key(b)
