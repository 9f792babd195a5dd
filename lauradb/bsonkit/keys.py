"""Order-preserving byte encoding of BSON values (memcmp order == MongoDB order).

``encode_value(a) < encode_value(b)`` (plain ``bytes`` comparison) exactly when
``order.compare(a, b) < 0``, and values equal under the comparator encode to
identical bytes (so 1, 1.0, Int64(1) and Decimal128("1.0") share one encoding;
hashing relies on this).

Layout: one type byte (``canonical rank + 2``; all numbers share one) then a body.
Every encoding is prefix-free (self-delimiting), so a compound key is the plain
concatenation of its components, and a descending component is its encoding with
every byte inverted (``0xFF - b``), which exactly reverses its order.

Bodies:

* numbers: a class byte (NaN < -inf < negative < zero < positive < +inf); finite
  values are written exactly as ``0.DIGITS x 10**E``: 2 bytes ``E + 0x8000``,
  the ASCII digits (no leading or trailing zeros) and ``0x00``; negatives have
  those bytes inverted. Floats are expanded exactly (``n / 2**k`` is
  ``n * 5**k / 10**k``), so 2**63 - 1 and 9.223372036854776e18 order correctly.
* strings (also field names, regex parts, code): UTF-8 with ``0x00`` escaped as
  ``0x00 0xFF``, terminated by ``0x00 0x00``.
* objects: per field ``type byte, name, body``, then ``0x00``; arrays: the
  element encodings then ``0x00`` (type bytes are never 0, so a prefix sorts first).
* binary: 4-byte length, subtype, data (MongoDB orders by length first).
* ObjectId: 12 bytes; bool: 1 byte; date: millis + 2**63 as 8 bytes;
  timestamp: time and increment as 4 bytes each; MinKey/MaxKey/null: no body.

``UNDEFINED`` is the sort-only stand-in for an empty array in a sort key (MongoDB
sorts ``[]`` before null); it ranks between MinKey and null.
"""

from __future__ import annotations

import datetime
import decimal
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

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

from lauradb.bsonkit import order
from lauradb.bsonkit.order import datetime_to_millis
from lauradb.errors import ErrorCode, LauraError

__all__ = [
    "TYPE_MAXKEY",
    "TYPE_MINKEY",
    "UNDEFINED",
    "decode_key",
    "decode_value",
    "encode_int",
    "encode_key",
    "encode_value",
    "invert",
    "type_byte",
]


class _Undefined:
    """Sort-key stand-in for an empty array: below null, above MinKey."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Undefined, ())


UNDEFINED: Final = _Undefined()

# Type bytes: canonical rank + 2 (all >= 1, so 0x00 can terminate sequences).
TYPE_MINKEY: Final = order.RANK_MINKEY + 2
TYPE_UNDEFINED: Final = 0 + 2
TYPE_NULL: Final = order.RANK_NULL + 2
TYPE_NUMBER: Final = order.RANK_NUMBER + 2
TYPE_STRING: Final = order.RANK_STRING + 2
TYPE_OBJECT: Final = order.RANK_OBJECT + 2
TYPE_ARRAY: Final = order.RANK_ARRAY + 2
TYPE_BINARY: Final = order.RANK_BINARY + 2
TYPE_OBJECTID: Final = order.RANK_OBJECTID + 2
TYPE_BOOL: Final = order.RANK_BOOL + 2
TYPE_DATE: Final = order.RANK_DATE + 2
TYPE_TIMESTAMP: Final = order.RANK_TIMESTAMP + 2
TYPE_REGEX: Final = order.RANK_REGEX + 2
TYPE_DBREF: Final = order.RANK_DBREF + 2
TYPE_CODE: Final = order.RANK_CODE + 2
TYPE_CODE_W_SCOPE: Final = order.RANK_CODE_W_SCOPE + 2
TYPE_MAXKEY: Final = order.RANK_MAXKEY + 2

# Number classes.
_NUM_NAN = 1
_NUM_NEG_INF = 2
_NUM_NEG = 3
_NUM_ZERO = 4
_NUM_POS = 5
_NUM_POS_INF = 6

_ENC_MINKEY = bytes([TYPE_MINKEY])
_ENC_MAXKEY = bytes([TYPE_MAXKEY])
_ENC_NULL = bytes([TYPE_NULL])
_ENC_UNDEFINED = bytes([TYPE_UNDEFINED])
_ENC_TRUE = bytes([TYPE_BOOL, 1])
_ENC_FALSE = bytes([TYPE_BOOL, 0])
_ENC_NAN = bytes([TYPE_NUMBER, _NUM_NAN])
_ENC_NEG_INF = bytes([TYPE_NUMBER, _NUM_NEG_INF])
_ENC_ZERO = bytes([TYPE_NUMBER, _NUM_ZERO])
_ENC_POS_INF = bytes([TYPE_NUMBER, _NUM_POS_INF])
_PFX_NEG = bytes([TYPE_NUMBER, _NUM_NEG])
_PFX_POS = bytes([TYPE_NUMBER, _NUM_POS])
_PFX_STRING = bytes([TYPE_STRING])
_PFX_OBJECT = bytes([TYPE_OBJECT])
_PFX_ARRAY = bytes([TYPE_ARRAY])
_PFX_OBJECTID = bytes([TYPE_OBJECTID])

_INVERT_TABLE: Final = bytes(range(255, -1, -1))
_EXP_OFFSET = 0x8000
_STR_END = b"\x00\x00"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_DATE_OFFSET = 2**63
_BIN_HEADER = struct.Struct(">IB")
_TS = struct.Struct(">II")
_EXP = struct.Struct(">H")

# Precomputed exponent bytes for the int fast path (E = number of digits).
_EXP_POS: Final = [_EXP.pack(e + _EXP_OFFSET) for e in range(64)]
_EXP_NEG: Final = [_EXP.pack(e + _EXP_OFFSET).translate(_INVERT_TABLE) for e in range(64)]
_DIGITS_INV: Final = bytes.maketrans(b"0123456789", bytes(0xFF - c for c in b"0123456789"))


def invert(data: bytes) -> bytes:
    """Every byte inverted (``0xFF - b``): reverses the order of prefix-free codes."""
    return data.translate(_INVERT_TABLE)


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


# --------------------------------------------------------------------------- numbers


def _finite(negative: bool, digits: str, exp: int) -> bytes:
    """``0.digits * 10**exp``; ``digits`` has no leading zero and is non-empty."""
    digits = digits.rstrip("0")
    e = exp + _EXP_OFFSET
    if not 0 <= e <= 0xFFFF:
        raise _bad("number out of the encodable range")
    body = _EXP.pack(e) + digits.encode("ascii") + b"\x00"
    if negative:
        return _PFX_NEG + body.translate(_INVERT_TABLE)
    return _PFX_POS + body


def _enc_int(v: int) -> bytes:
    if v > 0:
        try:
            s = int.__repr__(v)
        except ValueError:  # more digits than Python will print
            raise _bad("integer too large to encode") from None
        n = len(s)
        if n < 64:
            return _PFX_POS + _EXP_POS[n] + s.rstrip("0").encode("ascii") + b"\x00"
        return _finite(False, s, n)
    if v < 0:
        try:
            s = int.__repr__(-v)
        except ValueError:
            raise _bad("integer too large to encode") from None
        n = len(s)
        if n < 64:
            return (
                _PFX_NEG
                + _EXP_NEG[n]
                + s.rstrip("0").encode("ascii").translate(_DIGITS_INV)
                + b"\xff"
            )
        return _finite(True, s, n)
    return _ENC_ZERO


def _enc_float(v: float) -> bytes:
    if v != v:
        return _ENC_NAN
    if v == 0.0:
        return _ENC_ZERO
    if v == _INF:
        return _ENC_POS_INF
    if v == _NEG_INF:
        return _ENC_NEG_INF
    if v.is_integer():
        return _enc_int(int(v))
    n, d = v.as_integer_ratio()
    k = d.bit_length() - 1  # d == 2**k; v == n * 5**k / 10**k
    negative = n < 0
    s = str(abs(n) * 5**k)
    return _finite(negative, s, len(s) - k)


_INF = float("inf")
_NEG_INF = float("-inf")


def _enc_pydecimal(d: decimal.Decimal) -> bytes:
    sign, digit_tuple, exp = d.as_tuple()
    if not isinstance(exp, int):
        if exp == "F":
            return _ENC_NEG_INF if sign else _ENC_POS_INF
        return _ENC_NAN
    s = "".join(map(str, digit_tuple)).lstrip("0")
    if not s:
        return _ENC_ZERO
    return _finite(bool(sign), s, len(s) + exp)


def _enc_decimal128(v: Decimal128) -> bytes:
    return _enc_pydecimal(v.to_decimal())


# --------------------------------------------------------------------------- strings


def _str_body(s: str) -> bytes:
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        b = s.encode("utf-8", "surrogatepass")
    if b"\x00" in b:
        b = b.replace(b"\x00", b"\x00\xff")
    return b + _STR_END


def _enc_str(v: str) -> bytes:
    try:
        b = v.encode("utf-8")
    except UnicodeEncodeError:
        b = v.encode("utf-8", "surrogatepass")
    if b"\x00" in b:
        b = b.replace(b"\x00", b"\x00\xff")
    return _PFX_STRING + b + _STR_END


# --------------------------------------------------------------------------- containers


def _enc_dict(v: Mapping[str, Any]) -> bytes:
    parts = [_PFX_OBJECT]
    append = parts.append
    for name, item in v.items():
        if not isinstance(name, str):
            raise _bad(f"field names must be strings, not {type(name).__name__}")
        e = encode_value(item)
        append(e[:1])
        append(_str_body(name))
        append(e[1:])
    append(b"\x00")
    return b"".join(parts)


def _enc_list(v: Sequence[Any]) -> bytes:
    return _PFX_ARRAY + b"".join([encode_value(x) for x in v]) + b"\x00"


# --------------------------------------------------------------------------- others


def _enc_bytes(v: bytes) -> bytes:
    return bytes([TYPE_BINARY]) + _BIN_HEADER.pack(len(v), 0) + bytes(v)


def _enc_binary(v: Binary) -> bytes:
    return bytes([TYPE_BINARY]) + _BIN_HEADER.pack(len(v), v.subtype) + bytes(v)


def _enc_oid(v: ObjectId) -> bytes:
    return _PFX_OBJECTID + v.binary


def _enc_millis(ms: int) -> bytes:
    return bytes([TYPE_DATE]) + (ms + _DATE_OFFSET).to_bytes(8, "big")


def _enc_datetime(v: datetime.datetime) -> bytes:
    return _enc_millis(datetime_to_millis(v))


def _enc_datetime_ms(v: DatetimeMS) -> bytes:
    return _enc_millis(int(v))


def _enc_timestamp(v: Timestamp) -> bytes:
    return bytes([TYPE_TIMESTAMP]) + _TS.pack(v.time, v.inc)


def _enc_regex(v: Regex[Any]) -> bytes:
    return (
        bytes([TYPE_REGEX])
        + _str_body(str(v.pattern))
        + _str_body(order.regex_flag_string(v.flags))
    )


def _enc_re_pattern(v: re.Pattern[Any]) -> bytes:
    return (
        bytes([TYPE_REGEX])
        + _str_body(str(v.pattern))
        + _str_body(order.regex_flag_string(v.flags & ~re.U))
    )


def _enc_code(v: Code) -> bytes:
    if v.scope is not None:
        return bytes([TYPE_CODE_W_SCOPE]) + _str_body(str(v)) + _enc_dict(v.scope)[1:]
    return bytes([TYPE_CODE]) + _str_body(str(v))


def _enc_dbref(v: DBRef) -> bytes:
    return bytes([TYPE_DBREF]) + _str_body(v.collection) + encode_value(v.id)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    int: _enc_int,
    Int64: _enc_int,
    float: _enc_float,
    Decimal128: _enc_decimal128,
    decimal.Decimal: _enc_pydecimal,
    str: _enc_str,
    bool: lambda v: _ENC_TRUE if v else _ENC_FALSE,
    type(None): lambda v: _ENC_NULL,
    dict: _enc_dict,
    list: _enc_list,
    tuple: _enc_list,
    bytes: _enc_bytes,
    Binary: _enc_binary,
    ObjectId: _enc_oid,
    datetime.datetime: _enc_datetime,
    DatetimeMS: _enc_datetime_ms,
    Timestamp: _enc_timestamp,
    Regex: _enc_regex,
    Code: _enc_code,
    DBRef: _enc_dbref,
    MinKey: lambda v: _ENC_MINKEY,
    MaxKey: lambda v: _ENC_MAXKEY,
    _Undefined: lambda v: _ENC_UNDEFINED,
}


def _encode_fallback(v: Any) -> bytes:
    if isinstance(v, bool):
        return _ENC_TRUE if v else _ENC_FALSE
    if isinstance(v, int):
        return _enc_int(v)
    if isinstance(v, float):
        return _enc_float(v)
    if isinstance(v, str):
        return _enc_str(v)
    if isinstance(v, Mapping):
        return _enc_dict(v)
    if isinstance(v, (list, tuple)):
        return _enc_list(v)
    if isinstance(v, datetime.datetime):
        return _enc_datetime(v)
    if isinstance(v, re.Pattern):
        return _enc_re_pattern(v)
    if isinstance(v, Binary):
        return _enc_binary(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _enc_bytes(bytes(v))
    raise _bad(f"not a BSON value: {type(v).__name__}")


def encode_int(v: int) -> bytes:
    """``encode_value`` of a Python ``int`` (not bool), without the type dispatch."""
    return _enc_int(v)


def encode_value(v: Any) -> bytes:
    """The order-preserving encoding of one BSON value (ascending)."""
    fn = _ENCODERS.get(type(v))
    if fn is not None:
        return fn(v)
    return _encode_fallback(v)


def type_byte(v: Any) -> int:
    """The leading byte of ``encode_value(v)`` (one per canonical type bracket)."""
    return encode_value(v)[0]


def encode_key(values: Sequence[Any], directions: Sequence[int] | None = None) -> bytes:
    """A compound key: the component encodings concatenated; -1 components inverted."""
    if directions is None:
        if len(values) == 1:
            return encode_value(values[0])
        return b"".join([encode_value(v) for v in values])
    if len(directions) != len(values):
        raise _bad("key directions do not match the number of key values")
    parts = []
    for v, d in zip(values, directions, strict=True):
        e = encode_value(v)
        parts.append(e.translate(_INVERT_TABLE) if d < 0 else e)
    return b"".join(parts)


# --------------------------------------------------------------------------- decoding


def _number_value(negative: bool, digits: str, exp: int) -> Any:
    """The BSON number equal to ``(-)0.digits * 10**exp``, in the simplest type."""
    n = len(digits)
    shift = exp - n  # value == int(digits) * 10**shift
    if shift >= 0 and exp <= 19:
        iv = int(digits) * 10**shift
        if negative:
            iv = -iv
        if _INT32_MIN <= iv <= _INT32_MAX:
            return iv
        if _INT64_MIN <= iv <= _INT64_MAX:
            return Int64(iv)
    d = decimal.Decimal(f"{'-' if negative else ''}{digits}E{shift}")
    if -330 <= exp <= 310:
        f = float(d)
        if f not in (_INF, _NEG_INF) and decimal.Decimal(f) == d:
            return f
    if n <= 34:
        try:
            return Decimal128(d)
        except (decimal.DecimalException, ValueError):
            pass
    if shift >= 0:
        return int(d)
    return d


def _decode_str(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    if buf[end + 1] == 0:
        raw = buf[pos:end]
        return raw.decode("utf-8", "surrogatepass"), end + 2
    chunks = []
    while True:
        nxt = buf[end + 1]
        if nxt == 0xFF:
            chunks.append(buf[pos : end + 1])
            pos = end + 2
        elif nxt == 0:
            chunks.append(buf[pos:end])
            return b"".join(chunks).decode("utf-8", "surrogatepass"), end + 2
        else:
            raise ValueError("bad string escape")
        end = buf.index(b"\x00", pos)


def _decode_number(buf: bytes, pos: int) -> tuple[Any, int]:
    cls = buf[pos]
    pos += 1
    if cls == _NUM_ZERO:
        return 0, pos
    if cls == _NUM_POS:
        (e,) = _EXP.unpack_from(buf, pos)
        end = buf.index(b"\x00", pos + 2)
        digits = buf[pos + 2 : end].decode("ascii")
        return _number_value(False, digits, e - _EXP_OFFSET), end + 1
    if cls == _NUM_NEG:
        raw_e = bytes(buf[pos : pos + 2]).translate(_INVERT_TABLE)
        (e,) = _EXP.unpack(raw_e)
        end = buf.index(b"\xff", pos + 2)
        digits = buf[pos + 2 : end].translate(_INVERT_TABLE).decode("ascii")
        return _number_value(True, digits, e - _EXP_OFFSET), end + 1
    if cls == _NUM_NAN:
        return float("nan"), pos
    if cls == _NUM_POS_INF:
        return _INF, pos
    if cls == _NUM_NEG_INF:
        return _NEG_INF, pos
    raise ValueError("bad number class")


def _decode_dict_body(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while True:
        t = buf[pos]
        if t == 0:
            return out, pos + 1
        name, pos = _decode_str(buf, pos + 1)
        out[name], pos = _decode_body(t, buf, pos)


def _decode_body(t: int, buf: bytes, pos: int) -> tuple[Any, int]:
    if t == TYPE_NUMBER:
        return _decode_number(buf, pos)
    if t == TYPE_STRING:
        return _decode_str(buf, pos)
    if t == TYPE_OBJECTID:
        return ObjectId(bytes(buf[pos : pos + 12])), pos + 12
    if t == TYPE_NULL:
        return None, pos
    if t == TYPE_OBJECT:
        return _decode_dict_body(buf, pos)
    if t == TYPE_ARRAY:
        items = []
        while buf[pos] != 0:
            item, pos = _decode_body(buf[pos], buf, pos + 1)
            items.append(item)
        return items, pos + 1
    if t == TYPE_BINARY:
        length, subtype = _BIN_HEADER.unpack_from(buf, pos)
        pos += _BIN_HEADER.size
        data = bytes(buf[pos : pos + length])
        if len(data) != length:
            raise ValueError("truncated binary")
        return (data if subtype == 0 else Binary(data, subtype)), pos + length
    if t == TYPE_BOOL:
        return bool(buf[pos]), pos + 1
    if t == TYPE_DATE:
        ms = int.from_bytes(buf[pos : pos + 8], "big") - _DATE_OFFSET
        return _millis_value(ms), pos + 8
    if t == TYPE_TIMESTAMP:
        time, inc = _TS.unpack_from(buf, pos)
        return Timestamp(time, inc), pos + 8
    if t == TYPE_REGEX:
        pattern, pos = _decode_str(buf, pos)
        flags, pos = _decode_str(buf, pos)
        return Regex(pattern, flags), pos
    if t == TYPE_CODE:
        code, pos = _decode_str(buf, pos)
        return Code(code), pos
    if t == TYPE_CODE_W_SCOPE:
        code, pos = _decode_str(buf, pos)
        scope, pos = _decode_dict_body(buf, pos)
        return Code(code, scope), pos
    if t == TYPE_DBREF:
        collection, pos = _decode_str(buf, pos)
        ident, pos = _decode_body(buf[pos], buf, pos + 1)
        return DBRef(collection, ident), pos
    if t == TYPE_MINKEY:
        return MinKey(), pos
    if t == TYPE_MAXKEY:
        return MaxKey(), pos
    if t == TYPE_UNDEFINED:
        return UNDEFINED, pos
    raise ValueError(f"unknown type byte {t}")


_EPOCH = datetime.datetime(1970, 1, 1)


def _millis_value(ms: int) -> datetime.datetime | DatetimeMS:
    try:
        return _EPOCH + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        return DatetimeMS(ms)


def decode_value(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one ascending value starting at ``pos``; returns (value, next pos)."""
    try:
        return _decode_body(data[pos], data, pos + 1)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _bad(f"malformed key encoding: {exc}") from None


def decode_key(data: bytes, directions: Sequence[int] | None = None) -> list[Any]:
    """The values of ``encode_key(values, directions)`` (equal under the comparator)."""
    data = bytes(data)
    out: list[Any] = []
    pos = 0
    if directions is None:
        while pos < len(data):
            value, pos = decode_value(data, pos)
            out.append(value)
        return out
    for d in directions:
        if d < 0:
            tail = data[pos:].translate(_INVERT_TABLE)
            value, used = decode_value(tail, 0)
            pos += used
        else:
            value, pos = decode_value(data, pos)
        out.append(value)
    if pos != len(data):
        raise _bad("malformed key encoding: trailing bytes")
    return out
