"""Comparison, boolean and conditional operators, plus $literal and $let."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.expr_core import (
    Expr,
    Variables,
    compile_args,
    compile_expression,
    constant,
    invalid,
    object_args,
    register,
    truthy,
    validate_variable_name,
    value_key,
)

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: bool(a == b),
    "$ne": lambda a, b: bool(a != b),
    "$gt": lambda a, b: bool(a > b),
    "$gte": lambda a, b: bool(a >= b),
    "$lt": lambda a, b: bool(a < b),
    "$lte": lambda a, b: bool(a <= b),
}


def _comparison(args: Any, name: str) -> Expr:
    left, right = compile_args(args, name, 2)
    test = _COMPARISONS[name]

    def compare(doc: Any, variables: Variables) -> Any:
        return test(value_key(left(doc, variables)), value_key(right(doc, variables)))

    return compare


for _name in _COMPARISONS:
    register(_name)(_comparison)


@register("$cmp")
def _cmp(args: Any, name: str) -> Expr:
    left, right = compile_args(args, name, 2)

    def cmp(doc: Any, variables: Variables) -> Any:
        a = value_key(left(doc, variables))
        b = value_key(right(doc, variables))
        return -1 if a < b else (1 if a > b else 0)

    return cmp


@register("$and")
def _and(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def and_(doc: Any, variables: Variables) -> Any:
        for fn in fns:
            if not truthy(fn(doc, variables)):
                return False
        return True

    return and_


@register("$or")
def _or(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 0, None)

    def or_(doc: Any, variables: Variables) -> Any:
        for fn in fns:
            if truthy(fn(doc, variables)):
                return True
        return False

    return or_


@register("$not")
def _not(args: Any, name: str) -> Expr:
    (fn,) = compile_args(args, name, 1)

    def not_(doc: Any, variables: Variables) -> Any:
        return not truthy(fn(doc, variables))

    return not_


@register("$cond")
def _cond(args: Any, name: str) -> Expr:
    if isinstance(args, dict):
        spec = object_args(args, name, (), ("if", "then", "else"))
        for key in ("if", "then", "else"):
            if key not in spec:
                raise invalid(f"Missing '{key}' parameter to $cond")
        if_fn = compile_expression(spec["if"])
        then_fn = compile_expression(spec["then"])
        else_fn = compile_expression(spec["else"])
    else:
        if_fn, then_fn, else_fn = compile_args(args, name, 3)

    def cond(doc: Any, variables: Variables) -> Any:
        if truthy(if_fn(doc, variables)):
            return then_fn(doc, variables)
        return else_fn(doc, variables)

    return cond


@register("$ifNull")
def _if_null(args: Any, name: str) -> Expr:
    fns = compile_args(args, name, 2, None)
    *candidates, replacement = fns

    def if_null(doc: Any, variables: Variables) -> Any:
        for fn in candidates:
            v = fn(doc, variables)
            if v is not None and v is not MISSING:
                return v
        return replacement(doc, variables)

    return if_null


@register("$switch")
def _switch(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("branches",), ("default",))
    branches_spec = spec["branches"]
    if not isinstance(branches_spec, list):
        raise invalid("$switch expected an array for 'branches'")
    branches: list[tuple[Expr, Expr]] = []
    for branch in branches_spec:
        if not isinstance(branch, dict):
            raise invalid("$switch expected each branch to be an object")
        for key in branch:
            if key not in ("case", "then"):
                raise invalid(f"$switch found an unknown argument to a branch: {key}")
        if "case" not in branch:
            raise invalid("$switch requires each branch have a 'case' expression")
        if "then" not in branch:
            raise invalid("$switch requires each branch have a 'then' expression")
        branches.append((compile_expression(branch["case"]), compile_expression(branch["then"])))
    default = compile_expression(spec["default"]) if "default" in spec else None
    if not branches and default is None:
        raise invalid("$switch requires at least one branch")

    def switch(doc: Any, variables: Variables) -> Any:
        for case, then in branches:
            if truthy(case(doc, variables)):
                return then(doc, variables)
        if default is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "$switch could not find a matching branch for an input, and no default was "
                "specified.",
            )
        return default(doc, variables)

    return switch


@register("$literal")
def _literal(args: Any, name: str) -> Expr:
    return constant(args)


@register("$let")
def _let(args: Any, name: str) -> Expr:
    spec = object_args(args, name, ("vars", "in"))
    if not isinstance(spec["vars"], dict):
        raise invalid("invalid parameter: expected an object (vars)")
    bindings: list[tuple[str, Expr]] = []
    for var, expr in spec["vars"].items():
        validate_variable_name(var)
        bindings.append((var, compile_expression(expr)))
    body = compile_expression(spec["in"])

    def let(doc: Any, variables: Variables) -> Any:
        scope = dict(variables)
        for var, fn in bindings:
            scope[var] = fn(doc, variables)
        return body(doc, scope)

    return let
