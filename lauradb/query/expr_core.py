"""The core of aggregation expressions: compiling specs to closures.

``compile_expression(spec)`` turns an expression spec into ``fn(doc, variables)``:

- ``doc`` is ``$$CURRENT`` (the document field paths such as ``"$a.b"`` read from);
- ``variables`` maps user variable names (``$let``, ``$map``, ``$filter``...) to values;
  ``ROOT`` and ``CURRENT`` default to ``doc`` when absent, so callers may pass an empty
  mapping. Variables not found there are looked up in the *outer* variables installed
  with ``outer_variables(...)`` (used by ``$lookup`` with ``let`` so that ``$expr`` in
  a sub-pipeline's ``$match`` sees them).

The result of an expression may be ``MISSING`` (a field that is not there, or
``$$REMOVE``); callers decide what missing means (an omitted field, null...).
Outputs may share sub-objects with the inputs: treat documents as immutable.

Operators live in ``expr_*.py`` modules that register themselves in ``OPERATORS``;
they are imported on the first compile.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from lauradb.bsonkit.order import RANK_MINKEY, sort_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING

Variables = Mapping[str, Any]
Expr = Callable[[Any, Variables], Any]
Compiler = Callable[[Any, str], Expr]

OPERATORS: dict[str, Compiler] = {}

_OPERATOR_MODULES = (
    "lauradb.query.expr_arith",
    "lauradb.query.expr_logic",
    "lauradb.query.expr_string",
    "lauradb.query.expr_array",
    "lauradb.query.expr_types",
    "lauradb.query.expr_date",
    "lauradb.query.expr_accum",
)
_loaded = False

# Values of the system variables that are not ROOT/CURRENT.
REMOVE = MISSING
DESCEND = "descend"
PRUNE = "prune"
KEEP = "keep"
_SYSTEM_CONSTANTS: dict[str, Any] = {
    "REMOVE": MISSING,
    "DESCEND": DESCEND,
    "PRUNE": PRUNE,
    "KEEP": KEEP,
}
_RESERVED = {"ROOT", "CURRENT", "REMOVE", "NOW", "CLUSTER_TIME", "DESCEND", "PRUNE", "KEEP"}

_EMPTY: dict[str, Any] = {}
_OUTER: ContextVar[Mapping[str, Any]] = ContextVar("lauradb_outer_variables", default=_EMPTY)
_UNSET = object()


# ---------------------------------------------------------------- errors


def invalid(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_EXPRESSION, message)


def type_error(message: str) -> LauraError:
    return LauraError(ErrorCode.TYPE_MISMATCH, message)


def bad_value(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


# ---------------------------------------------------------------- value helpers


def type_name(value: Any) -> str:
    """MongoDB's name of the BSON type of ``value`` (as ``$type`` reports it)."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    t = type(value)
    if t is bool:
        return "bool"
    if t is int:
        return "int" if -(2**31) <= value < 2**31 else "long"
    if t is Int64:
        return "long"
    if t is float:
        return "double"
    if t is Decimal128:
        return "decimal"
    if t is str:
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, datetime.datetime):
        return "date"
    if t is ObjectId:
        return "objectId"
    if t is Timestamp:
        return "timestamp"
    if t is Regex or t.__name__ == "Pattern":
        return "regex"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long" if isinstance(value, Int64) else "int"
    if isinstance(value, (bytes, bytearray)):
        return "binData"
    if isinstance(value, Mapping):
        return "object"
    rank = sort_key(value)[0]
    return {
        RANK_MINKEY: "minKey",
        100: "maxKey",
        60: "javascript",
        65: "javascriptWithScope",
        55: "dbPointer",
    }.get(rank, t.__name__)


def is_nullish(value: Any) -> bool:
    return value is None or value is MISSING


def truthy(value: Any) -> bool:
    """MongoDB truthiness: false, null, missing and numeric zeros are false."""
    if value is None or value is MISSING or value is False:
        return False
    if value is True:
        return True
    t = type(value)
    if t is int or t is float or t is Int64:
        return bool(value != 0)
    if t is Decimal128:
        return not value.to_decimal().is_zero()
    return True


_MISSING_KEY: tuple[Any, ...] = (0,)


def value_key(value: Any) -> tuple[Any, ...]:
    """The BSON sort key, with missing between MinKey and null (as aggregation does)."""
    if value is MISSING:
        return _MISSING_KEY
    return sort_key(value)


# ---------------------------------------------------------------- field paths


def get_path(value: Any, parts: tuple[str, ...] | list[str], start: int = 0) -> Any:
    """Aggregation field-path traversal: arrays map over their (sub)documents."""
    n = len(parts)
    i = start
    while i < n:
        if isinstance(value, dict):
            value = value.get(parts[i], MISSING)
        elif isinstance(value, list):
            return _get_path_array(value, parts, i)
        else:
            return MISSING
        i += 1
    return value


def _get_path_array(array: list[Any], parts: tuple[str, ...] | list[str], i: int) -> list[Any]:
    out: list[Any] = []
    name = parts[i]
    for element in array:
        if isinstance(element, dict):
            found = get_path(element.get(name, MISSING), parts, i + 1)
            if found is not MISSING:
                out.append(found)
        elif isinstance(element, list):
            out.append(_get_path_array(element, parts, i))
    return out


def split_field_path(path: str, what: str = "FieldPath") -> tuple[str, ...]:
    """Validate a dotted path (without its ``$``) and split it."""
    if not path:
        raise invalid(f"{what} cannot be constructed with empty string")
    parts = tuple(path.split("."))
    for part in parts:
        if not part:
            raise invalid(f"{what} field names may not be empty strings: '{path}'")
        if part.startswith("$"):
            raise invalid(f"{what} field names may not start with '$': '{path}'")
        if "\x00" in part:
            raise invalid(f"{what} field names may not contain '\\0': '{path}'")
    return parts


def compile_field_path(path: str) -> Expr:
    """``path`` is the text after ``$`` in ``"$a.b"``."""
    parts = split_field_path(path)
    if len(parts) == 1:
        name = parts[0]

        def field(doc: Any, variables: Variables) -> Any:
            if isinstance(doc, dict):
                return doc.get(name, MISSING)
            return MISSING

        return field

    if len(parts) == 2:
        first, second = parts

        def field2(doc: Any, variables: Variables) -> Any:
            value = doc.get(first, MISSING) if isinstance(doc, dict) else MISSING
            if isinstance(value, dict):
                return value.get(second, MISSING)
            if isinstance(value, list):
                return _get_path_array(value, parts, 1)
            return MISSING

        return field2

    def field_n(doc: Any, variables: Variables) -> Any:
        return get_path(doc, parts, 0)

    return field_n


# ---------------------------------------------------------------- variables


def validate_variable_name(name: str) -> None:
    """User variable names start with a lowercase letter or a non-ASCII character."""
    if not name:
        raise invalid("empty variable names are not allowed")
    first = name[0]
    if not (first.islower() or ord(first) > 127):
        raise invalid(f"'{name}' starts with an invalid character for a user variable name")
    for ch in name:
        if not (ch.isalnum() or ch == "_" or ord(ch) > 127):
            raise invalid(f"'{name}' contains an invalid character for a variable name: '{ch}'")


def lookup_variable(name: str, variables: Variables) -> Any:
    value = variables.get(name, _UNSET)
    if value is _UNSET:
        value = _OUTER.get().get(name, _UNSET)
        if value is _UNSET:
            raise invalid(f"Use of undefined variable: {name}")
    return value


@contextlib.contextmanager
def outer_variables(values: Mapping[str, Any]) -> Iterator[None]:
    """Make ``values`` visible to every expression evaluated inside the block."""
    current = _OUTER.get()
    merged = {**current, **values} if current else dict(values)
    token = _OUTER.set(merged)
    try:
        yield
    finally:
        _OUTER.reset(token)


def compile_variable(ref: str) -> Expr:
    """``ref`` is the text after ``$$`` in ``"$$name.path"``."""
    name, _, rest = ref.partition(".")
    parts: tuple[str, ...] = ()
    if rest or ref.endswith("."):
        parts = split_field_path(rest)
    if not name:
        raise invalid("empty variable names are not allowed")
    if name == "ROOT":

        def root(doc: Any, variables: Variables) -> Any:
            return variables.get("ROOT", doc)

        base: Expr = root
    elif name == "CURRENT":

        def current(doc: Any, variables: Variables) -> Any:
            return variables.get("CURRENT", doc)

        base = current
    elif name == "NOW":

        def now(doc: Any, variables: Variables) -> Any:
            t = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            return t.replace(microsecond=t.microsecond // 1000 * 1000)

        base = now
    elif name in _SYSTEM_CONSTANTS:
        constant = _SYSTEM_CONSTANTS[name]
        if parts:
            return lambda doc, variables: MISSING
        return lambda doc, variables: constant
    else:
        if name not in _RESERVED:
            validate_variable_name(name)

        def user(doc: Any, variables: Variables) -> Any:
            value = variables.get(name, _UNSET)
            if value is _UNSET:
                return lookup_variable(name, variables)
            return value

        base = user
    if not parts:
        return base

    def with_path(doc: Any, variables: Variables) -> Any:
        return get_path(base(doc, variables), parts, 0)

    return with_path


# ---------------------------------------------------------------- compile


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for module in _OPERATOR_MODULES:
            importlib.import_module(module)
        _loaded = True


def register(*names: str) -> Callable[[Compiler], Compiler]:
    def deco(fn: Compiler) -> Compiler:
        for name in names:
            OPERATORS[name] = fn
        return fn

    return deco


def constant(value: Any) -> Expr:
    def const(doc: Any, variables: Variables) -> Any:
        return value

    return const


def compile_expression(spec: Any) -> Expr:
    """Compile an aggregation expression spec into ``fn(doc, variables)``."""
    _ensure_loaded()
    try:
        return _compile(spec)
    except RecursionError:
        raise LauraError(ErrorCode.NESTING_TOO_DEEP, "expression is nested too deeply") from None


def _compile(spec: Any) -> Expr:
    if isinstance(spec, str):
        if spec.startswith("$$"):
            return compile_variable(spec[2:])
        if spec.startswith("$"):
            return compile_field_path(spec[1:])
        return constant(spec)
    if isinstance(spec, dict):
        return _compile_object(spec)
    if isinstance(spec, (list, tuple)):
        items = [_compile(item) for item in spec]

        def array(doc: Any, variables: Variables) -> Any:
            out = []
            for fn in items:
                v = fn(doc, variables)
                out.append(None if v is MISSING else v)
            return out

        return array
    if isinstance(spec, Mapping):
        return _compile_object(dict(spec))
    return constant(spec)


def _compile_object(spec: dict[str, Any]) -> Expr:
    if len(spec) >= 1:
        first = next(iter(spec))
        if isinstance(first, str) and first.startswith("$"):
            if len(spec) != 1:
                raise invalid(
                    "an expression specification must contain exactly one field, the name "
                    f"of the expression. Found {len(spec)} fields in {spec!r}"
                )
            compiler = OPERATORS.get(first)
            if compiler is None:
                raise LauraError(ErrorCode.UNKNOWN_OPERATOR, f"Unrecognized expression '{first}'")
            return compiler(spec[first], first)
    items: list[tuple[str, Expr]] = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise invalid("field names in an expression object may not be empty")
        if key.startswith("$"):
            raise invalid(
                f"field names in an expression object may not start with '$': '{key}' "
                "(an operator must be the only field of its object)"
            )
        if "." in key:
            raise invalid(f"field names in an expression object may not contain '.': '{key}'")
        items.append((key, _compile(value)))

    def obj(doc: Any, variables: Variables) -> Any:
        out = {}
        for key, fn in items:
            v = fn(doc, variables)
            if v is not MISSING:
                out[key] = v
        return out

    return obj


# ---------------------------------------------------------------- argument helpers


def constant_value(spec: Any) -> tuple[bool, Any]:
    """(True, value) when ``spec`` is a constant expression (no paths, variables, ops)."""
    if isinstance(spec, str):
        if spec.startswith("$"):
            return False, None
        return True, spec
    if isinstance(spec, dict):
        if len(spec) == 1 and "$literal" in spec:
            return True, spec["$literal"]
        out = {}
        for k, v in spec.items():
            if isinstance(k, str) and k.startswith("$"):
                return False, None
            ok, value = constant_value(v)
            if not ok:
                return False, None
            out[k] = value
        return True, out
    if isinstance(spec, (list, tuple)):
        values = []
        for item in spec:
            ok, value = constant_value(item)
            if not ok:
                return False, None
            values.append(value)
        return True, values
    return True, spec


def raw_args(args: Any, name: str, min_n: int, max_n: int | None = -1) -> list[Any]:
    """The raw argument list of an operator; a non-array argument is one argument.

    ``max_n`` -1 means "exactly ``min_n``"; None means unbounded.
    """
    raw = list(args) if isinstance(args, (list, tuple)) else [args]
    n = len(raw)
    if max_n == -1:
        if n != min_n:
            raise invalid(
                f"Expression {name} takes exactly {min_n} arguments. {n} were passed in."
            )
    else:
        if n < min_n:
            raise invalid(
                f"Expression {name} takes at least {min_n} arguments, and {n} were passed in."
            )
        if max_n is not None and n > max_n:
            raise invalid(
                f"Expression {name} takes at most {max_n} arguments, and {n} were passed in."
            )
    return raw


def compile_args(args: Any, name: str, min_n: int, max_n: int | None = -1) -> list[Expr]:
    return [_compile(a) for a in raw_args(args, name, min_n, max_n)]


def object_args(
    args: Any, name: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The named arguments of an object-form operator such as ``$filter``."""
    if not isinstance(args, dict):
        raise invalid(f"{name} only supports an object as its argument")
    allowed = set(required) | set(optional)
    for key in args:
        if key not in allowed:
            raise invalid(f"Unrecognized parameter to {name}: {key}")
    for key in required:
        if key not in args:
            raise invalid(f"Missing '{key}' parameter to {name}")
    return args
