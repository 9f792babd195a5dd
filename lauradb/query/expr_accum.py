"""Accumulators used as expressions: {$sum: "$array"} or {$max: ["$a", "$b"]}.

With one argument that evaluates to an array the accumulator runs over its
elements; otherwise it runs over the argument values.
"""

from __future__ import annotations

from typing import Any

from lauradb.query.accumulators import accumulate
from lauradb.query.expr_core import Expr, Variables, compile_args, register


def _compiler(args: Any, name: str) -> Expr:
    single = not isinstance(args, list) or len(args) == 1
    fns = compile_args(args, name, 0, None)

    def evaluate(doc: Any, variables: Variables) -> Any:
        if single and fns:
            value = fns[0](doc, variables)
            values = value if isinstance(value, list) else [value]
        else:
            values = [fn(doc, variables) for fn in fns]
        return accumulate(name, values)

    return evaluate


for _name in ("$sum", "$avg", "$min", "$max", "$stdDevPop", "$stdDevSamp"):
    register(_name)(_compiler)
