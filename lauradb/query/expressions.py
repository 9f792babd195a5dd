"""Aggregation expressions: ``compile_expression(spec) -> fn(doc, variables)``.

The compiler and the evaluation model live in ``expr_core`` (read its docstring);
the operators in ``expr_arith``, ``expr_logic``, ``expr_string``, ``expr_array``
(including the object operators), ``expr_types``, ``expr_date`` and ``expr_accum``.
"""

from __future__ import annotations

from lauradb.query.expr_core import (
    OPERATORS,
    Expr,
    Variables,
    compile_expression,
    get_path,
    outer_variables,
    truthy,
    type_name,
    value_key,
)

__all__ = [
    "OPERATORS",
    "Expr",
    "Variables",
    "compile_expression",
    "get_path",
    "outer_variables",
    "truthy",
    "type_name",
    "value_key",
]
