"""Array expression operators ($size ... $reduce, $setUnion & co.)."""

from __future__ import annotations

from typing import Any

from lauradb.query import expr_numeric as num
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    bad_value,
    compile_args,
    compile_expression,
    invalid,
    object_args,
    register,
    truthy,
    type_error,
    type_name,
    validate_variable_name,
    value_key,
)


def _int_arg(value: Any, name: str, what: str) -> int:
    if num.kind(value) == num.NOT_NUMBER:
        raise type_error(f"{name}'s {what} must be a numeric value, but is type {type_name(value)}")
    f = num.to_float(value)
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise bad_value(
            f"{name}'s {what} must be representable as a 32-bit integral value: {value}"
        )
    return int(f)


def _array(value: Any, name: str, what: str = "argument") -> list[Any]:
    if not isinstance(value, list):
        raise type_error(f"{name}'s {what} must be an array, but is {type_name(value)}")
    return value


@register("$size")
def _size(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)

    def size(doc: Any, variables: Variables) -> Any:
        v = fn(doc, variables)
        if not isinstance(v, list):
            raise type_error(
                f"The argument to $size must be an array. Type of argument: {type_name(v)}"
            )
        return len(v)

    return size


@register("$isArray")
def _is_array(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)
    return lambda doc, variables: isinstance(fn(doc, variables), list)


@register("$arrayElemAt")
def _array_elem_at(args: Any, name: str) -> Expr:
    arr_fn, idx_fn = compile_args(args, name, 2)

    def elem_at(doc: Any, variables: Variables) -> Any:
        arr = arr_fn(doc, variables)
        idx = idx_fn(doc, variables)
        if arr is None or arr is MISSING or idx is None or idx is MISSING:
            return None
        arr = _array(arr, name, "first argument")
        i = _int_arg(idx, name, "second argument")
        if -len(arr) <= i < len(arr):
            return arr[i]
        return MISSING

    return elem_at


def _first_last(index: int) -> Any:
    def compiler(args: Any, name: str) -> Expr:
        (fn,) = compile_args(args, name, 1)

        def pick(doc: Any, variables: Variables) -> Any:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                return None
            arr = _array(v, name)
            return arr[index] if arr else MISSING

        return pick

    return compiler


register("$first")(_first_last(0))
register("$last")(_first_last(-1))


@register("$concatArrays")
def _concat_arrays(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def concat(doc: Any, variables: Variables) -> Any:
        out: list[Any] = []
        null = False
        for fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                null = True
            elif isinstance(v, list):
                out.extend(v)
            else:
                raise type_error(f"$concatArrays only supports arrays, not {type_name(v)}")
        return None if null else out

    return concat


@register("$reverseArray")
def _reverse_array(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)

    def reverse(doc: Any, variables: Variables) -> Any:
        v = fn(doc, variables)
        if v is None or v is MISSING:
            return None
        return list(reversed(_array(v, name)))

    return reverse


@register("$in")
def _in(args: Any, name: str) -> Expr:
    x_fn, arr_fn = compile_args(args, name, 2)

    def in_(doc: Any, variables: Variables) -> Any:
        key = value_key(x_fn(doc, variables))
        arr = arr_fn(doc, variables)
        if not isinstance(arr, list):
            raise type_error(f"$in requires an array as a second argument, found: {type_name(arr)}")
        return any(value_key(item) == key for item in arr)

    return in_


@register("$indexOfArray")
def _index_of_array(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 2, 4)

    def index_of(doc: Any, variables: Variables) -> Any:
        arr = fns[0](doc, variables)
        if arr is None or arr is MISSING:
            return None
        arr = _array(arr, name, "first argument")
        key = value_key(fns[1](doc, variables))
        start = 0
        end = len(arr)
        if len(fns) > 2:
            start = _int_arg(fns[2](doc, variables), name, "starting index")
            if start < 0:
                raise bad_value(f"{name} requires a nonnegative starting index, found: {start}")
        if len(fns) > 3:
            end = _int_arg(fns[3](doc, variables), name, "ending index")
            if end < 0:
                raise bad_value(f"{name} requires a nonnegative ending index, found: {end}")
        for i in range(start, min(end, len(arr))):
            if value_key(arr[i]) == key:
                return i
        return -1

    return index_of


@register("$slice")
def _slice(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 2, 3)

    def slice_(doc: Any, variables: Variables) -> Any:
        values = [fn(doc, variables) for fn in fns]
        if any(v is None or v is MISSING for v in values):
            return None
        arr = _array(values[0], name, "first argument")
        if len(values) == 2:
            n = _int_arg(values[1], name, "second argument")
            return arr[:n] if n >= 0 else arr[max(0, len(arr) + n) :]
        pos = _int_arg(values[1], name, "second argument")
        n = _int_arg(values[2], name, "third argument")
        if n <= 0:
            raise bad_value(f"{name}'s third argument must be positive: {n}")
        start = pos if pos >= 0 else max(0, len(arr) + pos)
        return arr[start : start + n]

    return slice_


@register("$range")
def _range(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 2, 3)

    def range_(doc: Any, variables: Variables) -> Any:
        start = _int_arg(fns[0](doc, variables), name, "starting value")
        end = _int_arg(fns[1](doc, variables), name, "ending value")
        step = _int_arg(fns[2](doc, variables), name, "step value") if len(fns) == 3 else 1
        if step == 0:
            raise bad_value("$range requires a non-zero step value")
        return list(range(start, end, step))

    return range_


def _bound_name(spec: dict[str, Any], name: str) -> str:
    var = spec.get("as", "this")
    if not isinstance(var, str):
        raise invalid(f"{name}: 'as' must be a string")
    validate_variable_name(var)
    return var


@register("$filter")
def _filter(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("input", "cond"), ("as", "limit"))
    var = _bound_name(spec, name)
    input_fn = compile_expression(spec["input"])
    cond_fn = compile_expression(spec["cond"])
    limit_fn = compile_expression(spec["limit"]) if "limit" in spec else None

    def filter_(doc: Any, variables: Variables) -> Any:
        arr = input_fn(doc, variables)
        if arr is None or arr is MISSING:
            return None
        arr = _array(arr, name, "input")
        limit = None
        if limit_fn is not None:
            lv = limit_fn(doc, variables)
            if lv is not None and lv is not MISSING:
                limit = _int_arg(lv, name, "limit")
                if limit <= 0:
                    raise bad_value(f"{name}: limit must be greater than 0: {limit}")
        scope = dict(variables)
        out = []
        for item in arr:
            scope[var] = item
            if truthy(cond_fn(doc, scope)):
                out.append(item)
                if limit is not None and len(out) >= limit:
                    break
        return out

    return filter_


@register("$map")
def _map(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("input", "in"), ("as",))
    var = _bound_name(spec, name)
    input_fn = compile_expression(spec["input"])
    in_fn = compile_expression(spec["in"])

    def map_(doc: Any, variables: Variables) -> Any:
        arr = input_fn(doc, variables)
        if arr is None or arr is MISSING:
            return None
        arr = _array(arr, name, "input")
        scope = dict(variables)
        out = []
        for item in arr:
            scope[var] = item
            v = in_fn(doc, scope)
            out.append(None if v is MISSING else v)
        return out

    return map_


@register("$reduce")
def _reduce(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("input", "initialValue", "in"))
    input_fn = compile_expression(spec["input"])
    init_fn = compile_expression(spec["initialValue"])
    in_fn = compile_expression(spec["in"])

    def reduce_(doc: Any, variables: Variables) -> Any:
        arr = input_fn(doc, variables)
        if arr is None or arr is MISSING:
            return None
        arr = _array(arr, name, "input")
        scope = dict(variables)
        value = init_fn(doc, variables)
        for item in arr:
            scope["this"] = item
            scope["value"] = value
            value = in_fn(doc, scope)
        return value

    return reduce_


def _all_any(want_all: bool) -> Any:
    def compiler(args: Any, name: str) -> Expr:
        (fn,) = compile_args(args, name, 1)

        def test(doc: Any, variables: Variables) -> Any:
            v = fn(doc, variables)
            if not isinstance(v, list):
                raise type_error(f"{name}'s argument must be an array, but is {type_name(v)}")
            if want_all:
                return all(truthy(x) for x in v)
            return any(truthy(x) for x in v)

        return test

    return compiler


register("$allElementsTrue")(_all_any(True))
register("$anyElementTrue")(_all_any(False))


def _set_op(kind: str) -> Any:
    def compiler(args: Any, name: str) -> Expr:
        min_n = {"union": 0, "intersection": 1}.get(kind, 2)
        fns = compile_args(args, name, min_n, -1 if kind == "diff" else None)

        def evaluate(doc: Any, variables: Variables) -> Any:
            arrays = []
            for fn in fns:
                v = fn(doc, variables)
                if v is None or v is MISSING:
                    return None
                if not isinstance(v, list):
                    raise type_error(
                        f"All operands of {name} must be arrays. One argument is of type: "
                        f"{type_name(v)}"
                    )
                arrays.append(v)
            if kind == "union" or not arrays:
                return _unique(x for arr in arrays for x in arr)
            if kind == "intersection":
                keys = set.intersection(*({value_key(x) for x in arr} for arr in arrays))
                return _unique(x for x in arrays[0] if value_key(x) in keys)
            if kind == "diff":
                exclude = {value_key(x) for x in arrays[1]}
                return _unique(x for x in arrays[0] if value_key(x) not in exclude)
            sets = [{value_key(x) for x in arr} for arr in arrays]
            return all(s == sets[0] for s in sets)

        return evaluate

    return compiler


def _unique(values: Any) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for x in values:
        k = value_key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


register("$setUnion")(_set_op("union"))
register("$setIntersection")(_set_op("intersection"))
register("$setDifference")(_set_op("diff"))
register("$setEquals")(_set_op("equals"))


# ---------------------------------------------------------------- objects


@register("$mergeObjects")
def _merge_objects(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def merge(doc: Any, variables: Variables) -> Any:
        out: dict[str, Any] = {}
        for fn in fns:
            v = fn(doc, variables)
            if v is None or v is MISSING:
                continue
            if not isinstance(v, dict):
                raise type_error(
                    f"$mergeObjects requires object inputs, but input {v!r} is of type "
                    f"{type_name(v)}"
                )
            out.update(v)
        return out

    return merge


@register("$objectToArray")
def _object_to_array(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)

    def to_array(doc: Any, variables: Variables) -> Any:
        v = fn(doc, variables)
        if v is None or v is MISSING:
            return None
        if not isinstance(v, dict):
            raise type_error(f"$objectToArray requires a document input, found: {type_name(v)}")
        return [{"k": k, "v": item} for k, item in v.items()]

    return to_array


@register("$arrayToObject")
def _array_to_object(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)

    def to_object(doc: Any, variables: Variables) -> Any:
        v = fn(doc, variables)
        if v is None or v is MISSING:
            return None
        arr = _array(v, name, "input")
        out: dict[str, Any] = {}
        for item in arr:
            if isinstance(item, list):
                if len(item) != 2:
                    raise bad_value(
                        "$arrayToObject requires an array of size 2 arrays, found array of size: "
                        f"{len(item)}"
                    )
                key, value = item
            elif isinstance(item, dict):
                if set(item) != {"k", "v"} or len(item) != 2:
                    raise bad_value("$arrayToObject requires an object with keys 'k' and 'v'.")
                key, value = item["k"], item["v"]
            else:
                raise type_error(
                    "$arrayToObject requires an array of key-value pairs, found: "
                    f"{type_name(item)}"
                )
            if not isinstance(key, str):
                raise type_error(f"$arrayToObject requires a string key, found: {type_name(key)}")
            if "\x00" in key:
                raise bad_value("Key field cannot contain an embedded null byte")
            out[key] = value
        return out

    return to_object


@register("$getField")
def _get_field(args: Any, name: str) -> Expr:
    if isinstance(args, dict) and "field" in args:
        spec = object_args(args, name, ("field",), ("input",))
        field_spec = spec["field"]
        input_fn = compile_expression(spec["input"]) if "input" in spec else None
    else:
        field_spec = args
        input_fn = None
    literal = isinstance(field_spec, dict) and set(field_spec) == {"$literal"}
    if literal:
        field_spec = field_spec["$literal"]
    if not isinstance(field_spec, str) or (field_spec.startswith("$") and not literal):
        raise invalid(
            "$getField requires 'field' to evaluate to type String (a constant string; use "
            "$literal for names starting with '$')"
        )
    field = field_spec

    def get_field(doc: Any, variables: Variables) -> Any:
        source = input_fn(doc, variables) if input_fn is not None else variables.get("CURRENT", doc)
        if source is None or source is MISSING:
            return None if source is None else MISSING
        if not isinstance(source, dict):
            raise type_error(
                "$getField requires 'input' to evaluate to type Object, but found "
                f"{type_name(source)}"
            )
        return source.get(field, MISSING)

    return get_field
