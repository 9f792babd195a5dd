"""String expression operators ($concat ... $strcasecmp, $regex*)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from bson.regex import Regex

from lauradb.errors import ErrorCode, LauraError
from lauradb.query import expr_numeric as num
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    bad_value,
    compile_args,
    compile_expression,
    constant_value,
    object_args,
    register,
    type_error,
    type_name,
)
from lauradb.query.expr_date import coerce_date, is_date, iso_string

_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
WHITESPACE = (
    "\x00 \t\n\x0b\x0c\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def coerce_to_string(value: Any, name: str) -> str:
    """MongoDB's string coercion: null/missing → "", numbers and dates formatted."""
    if isinstance(value, str):
        return value
    if value is None or value is MISSING:
        return ""
    if num.kind(value) != num.NOT_NUMBER:
        return num.format_number(value)
    if is_date(value):
        return iso_string(coerce_date(value, name))
    raise type_error(f"{name}: can't convert from BSON type {type_name(value)} to String")


def _integral(value: Any, name: str, what: str) -> int:
    if num.kind(value) == num.NOT_NUMBER:
        raise type_error(f"{name}: {what} must be a numeric type (is BSON type {type_name(value)})")
    f = num.to_float(value)
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise bad_value(f"{name}: {what} must be an integral value, found {value}")
    return int(f)


@register("$concat")
def _concat(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def concat(doc: Any, variables: Variables) -> Any:
        parts = []
        null = False
        for fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                null = True
            elif isinstance(v, str):
                parts.append(v)
            else:
                raise type_error(f"$concat only supports strings, not {type_name(v)}")
        return None if null else "".join(parts)

    return concat


def _substr_bytes(args: Any, name: str) -> Expr:
    s_fn, start_fn, len_fn = compile_args(args, name, 3)

    def substr(doc: Any, variables: Variables) -> Any:
        data = coerce_to_string(s_fn(doc, variables), name).encode()
        start_v = start_fn(doc, variables)
        len_v = len_fn(doc, variables)
        if num.kind(start_v) == num.NOT_NUMBER:
            raise type_error(
                f"{name}: starting index must be a numeric type (is BSON type "
                f"{type_name(start_v)})"
            )
        if num.kind(len_v) == num.NOT_NUMBER:
            raise type_error(
                f"{name}: length must be a numeric type (is BSON type {type_name(len_v)})"
            )
        start = int(num.to_float(start_v))
        length = int(num.to_float(len_v))
        if start < 0 or start >= len(data):
            return ""
        end = len(data) if length < 0 else min(len(data), start + length)
        if _is_continuation(data, start):
            raise bad_value(f"{name}: Invalid range, starting index is a UTF-8 continuation byte.")
        if end < len(data) and _is_continuation(data, end):
            raise bad_value(
                f"{name}: Invalid range, ending index is in the middle of a UTF-8 character."
            )
        return data[start:end].decode()

    return substr


def _is_continuation(data: bytes, i: int) -> bool:
    return (data[i] & 0xC0) == 0x80


register("$substr", "$substrBytes")(_substr_bytes)


@register("$substrCP")
def _substr_cp(args: Any, name: str) -> Expr:
    s_fn, start_fn, len_fn = compile_args(args, name, 3)

    def substr(doc: Any, variables: Variables) -> Any:
        s = coerce_to_string(s_fn(doc, variables), name)
        start = _integral(start_fn(doc, variables), name, "starting index")
        length = _integral(len_fn(doc, variables), name, "length")
        if start < 0:
            raise bad_value(f"{name}: starting index must be non-negative (got: {start})")
        if length < 0:
            raise bad_value(f"{name}: length must be a nonnegative integer.")
        return s[start : start + length]

    return substr


def _case(table: dict[int, int]) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, name: str) -> Expr:
        (fn,) = compile_args(args, name, 1)

        def change(doc: Any, variables: Variables) -> Any:
            return coerce_to_string(fn(doc, variables), name).translate(table)

        return change

    return compiler


register("$toLower")(_case(_LOWER))
register("$toUpper")(_case(_UPPER))


def _str_len(measure: Callable[[str], int]) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, name: str) -> Expr:
        (fn,) = compile_args(args, name, 1)

        def length(doc: Any, variables: Variables) -> Any:
            v = fn(doc, variables)
            if not isinstance(v, str):
                raise type_error(f"{name} requires a string argument, found: {type_name(v)}")
            return measure(v)

        return length

    return compiler


register("$strLenCP")(_str_len(len))
register("$strLenBytes")(_str_len(lambda s: len(s.encode())))


@register("$split")
def _split(args: Any, name: str) -> Expr:
    s_fn, d_fn = compile_args(args, name, 2)

    def split(doc: Any, variables: Variables) -> Any:
        s = s_fn(doc, variables)
        d = d_fn(doc, variables)
        if s is None or s is MISSING or d is None or d is MISSING:
            return None
        if not isinstance(s, str):
            raise type_error(
                "$split requires an expression that evaluates to a string as a first argument, "
                f"found: {type_name(s)}"
            )
        if not isinstance(d, str):
            raise type_error(
                "$split requires an expression that evaluates to a string as a second argument, "
                f"found: {type_name(d)}"
            )
        if not d:
            raise bad_value("$split requires a non-empty separator")
        return s.split(d)

    return split


def _trim(left: bool, right: bool) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, name: str) -> Expr:
        spec = object_args(args, name, ("input",), ("chars",))
        input_fn = compile_expression(spec["input"])
        chars_fn = compile_expression(spec["chars"]) if "chars" in spec else None

        def trim(doc: Any, variables: Variables) -> Any:
            s = input_fn(doc, variables)
            if s is None or s is MISSING:
                return None
            if not isinstance(s, str):
                raise type_error(f"{name} requires its input to be a string, got {type_name(s)}")
            chars = WHITESPACE
            if chars_fn is not None:
                c = chars_fn(doc, variables)
                if c is None or c is MISSING:
                    return None
                if not isinstance(c, str):
                    raise type_error(f"{name} requires 'chars' to be a string, got {type_name(c)}")
                chars = c
            if left and right:
                return s.strip(chars)
            return s.lstrip(chars) if left else s.rstrip(chars)

        return trim

    return compiler


register("$trim")(_trim(True, True))
register("$ltrim")(_trim(True, False))
register("$rtrim")(_trim(False, True))


def _index_of(in_bytes: bool) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, name: str) -> Expr:
        fns = compile_args(args, name, 2, 4)

        def index_of(doc: Any, variables: Variables) -> Any:
            s = fns[0](doc, variables)
            if s is None or s is MISSING:
                return None
            if not isinstance(s, str):
                raise type_error(
                    f"{name} requires a string as the first argument, found: {type_name(s)}"
                )
            sub = fns[1](doc, variables)
            if not isinstance(sub, str):
                raise type_error(
                    f"{name} requires a string as the second argument, found: {type_name(sub)}"
                )
            hay: str | bytes = s.encode() if in_bytes else s
            needle: str | bytes = sub.encode() if in_bytes else sub
            start = 0
            end = len(hay)
            if len(fns) > 2:
                start = _integral(fns[2](doc, variables), name, "starting index")
                if start < 0:
                    raise bad_value(f"{name} requires a nonnegative start index, found: {start}")
            if len(fns) > 3:
                end = _integral(fns[3](doc, variables), name, "ending index")
                if end < 0:
                    raise bad_value(f"{name} requires a nonnegative ending index, found: {end}")
            if start > len(hay) or start > end:
                return -1
            return hay.find(needle, start, end)  # type: ignore[arg-type]

        return index_of

    return compiler


register("$indexOfCP")(_index_of(False))
register("$indexOfBytes")(_index_of(True))


@register("$strcasecmp")
def _strcasecmp(args: Any, name: str) -> Expr:
    a_fn, b_fn = compile_args(args, name, 2)

    def strcasecmp(doc: Any, variables: Variables) -> Any:
        a = coerce_to_string(a_fn(doc, variables), name).translate(_LOWER).encode()
        b = coerce_to_string(b_fn(doc, variables), name).translate(_LOWER).encode()
        return -1 if a < b else (1 if a > b else 0)

    return strcasecmp


# ---------------------------------------------------------------- regex

_FLAG_BITS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}


@functools.lru_cache(maxsize=512)
def compile_regex(pattern: str, options: str, name: str = "$regexMatch") -> re.Pattern[str]:
    flags = 0
    for ch in options:
        bit = _FLAG_BITS.get(ch)
        if bit is None:
            raise LauraError(
                ErrorCode.INVALID_REGEX,
                f"{name}: invalid flag in regex options: {ch}"
            )
        flags |= bit
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise LauraError(
            ErrorCode.INVALID_REGEX,
            f"{name}: invalid regular expression: {exc}"
        ) from None


def _regex_parts(regex: Any, options: Any, name: str) -> tuple[str, str]:
    if isinstance(regex, Regex):
        pattern = str(regex.pattern)
        flags = regex.flags
        regex_options = flags if isinstance(flags, str) else "".join(
            ch for ch, bit in _FLAG_BITS.items() if bit and flags & bit
        )
    elif isinstance(regex, re.Pattern):
        pattern = regex.pattern
        regex_options = "".join(ch for ch, bit in _FLAG_BITS.items() if bit and regex.flags & bit)
    elif isinstance(regex, str):
        pattern, regex_options = regex, ""
    else:
        raise type_error(
            f"{name} needs 'regex' to be of type string or regex, found {type_name(regex)}"
        )
    if options is None or options is MISSING:
        return pattern, regex_options
    if not isinstance(options, str):
        raise type_error(f"{name} needs 'options' to be of type string, found {type_name(options)}")
    if regex_options and options:
        raise bad_value(
            f"{name}: found regex options specified in both 'regex' and 'option' fields"
        )
    return pattern, options or regex_options


RegexBody = Callable[[re.Pattern[str], str], Any]


def _regex_operator(on_null: Callable[[], Any], body: RegexBody) -> Callable[[Any, str], Expr]:
    def compiler(args: Any, name: str) -> Expr:
        spec = object_args(args, name, ("input", "regex"), ("options",))
        input_fn = compile_expression(spec["input"])
        regex_fn = compile_expression(spec["regex"])
        options_fn = compile_expression(spec["options"]) if "options" in spec else None
        fixed: re.Pattern[str] | None = None
        const_regex, regex_value = constant_value(spec["regex"])
        const_opts, opts_value = constant_value(spec.get("options"))
        if const_regex and const_opts and regex_value is not None:
            fixed = compile_regex(*_regex_parts(regex_value, opts_value, name), name)

        def evaluate(doc: Any, variables: Variables) -> Any:
            s = input_fn(doc, variables)
            pattern = fixed
            if pattern is None:
                regex = regex_fn(doc, variables)
                options = options_fn(doc, variables) if options_fn is not None else None
                if regex is None or regex is MISSING:
                    return on_null()
                pattern = compile_regex(*_regex_parts(regex, options, name), name)
            if s is None or s is MISSING:
                return on_null()
            if not isinstance(s, str):
                raise type_error(f"{name} needs 'input' to be of type string, found {type_name(s)}")
            return body(pattern, s)

        return evaluate

    return compiler


def _match_doc(m: re.Match[str]) -> dict[str, Any]:
    return {"match": m.group(0), "idx": m.start(), "captures": list(m.groups())}


register("$regexMatch")(_regex_operator(lambda: False, lambda p, s: p.search(s) is not None))
def _find_first(pattern: re.Pattern[str], s: str) -> Any:
    m = pattern.search(s)
    return _match_doc(m) if m else None


register("$regexFind")(_regex_operator(lambda: None, _find_first))
register("$regexFindAll")(
    _regex_operator(lambda: [], lambda p, s: [_match_doc(m) for m in p.finditer(s)])
)
