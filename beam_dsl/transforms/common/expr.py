"""Evaluates lowered expressions (see beam_dsl.dsl.lower.lower_expr) over pandas frames.

No Python ``eval``: each node is one of a fixed set of operators, or a
scalar function of :mod:`~beam_dsl.transforms.common.functions`, applied
column-wise, so WHERE / FILTER / WHEN / GATE run vectorised over a whole
batch. SQL-like nulls: a comparison with a null is false in a
filter (:func:`mask`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from beam_dsl.transforms.common.functions import REGISTRY as FUNCTIONS


class ExprError(ValueError):
    """An expression could not be evaluated on this data (e.g. a missing column)."""


def _like_regex(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.S)


def _as_series(value: Any, index: pd.Index) -> pd.Series:
    if isinstance(value, pd.Series):
        return value
    return pd.Series([value] * len(index), index=index, dtype=object if value is None else None)


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "%": lambda a, b: a % b,
}


def columns_of(expr: Any) -> set[str]:
    """The column names an expression reads (qualified ones as ``of.col``)."""
    if not isinstance(expr, Mapping):
        return set()
    if "col" in expr:
        return {f"{expr['of']}.{expr['col']}" if expr.get("of") else expr["col"]}
    out: set[str] = set()
    for arg in expr.get("args", ()):
        out |= columns_of(arg)
    return out


def evaluate(expr: Mapping[str, Any], frame: pd.DataFrame) -> pd.Series:
    """The value of ``expr`` for every row of ``frame``.

    A qualified column ``{"col": "confidence", "of": "m"}`` reads the frame
    column ``m.confidence``.
    """
    if "lit" in expr:
        return _as_series(expr["lit"], frame.index)
    if "col" in expr:
        name = f"{expr['of']}.{expr['col']}" if expr.get("of") else expr["col"]
        if name not in frame.columns:
            raise ExprError(f"unknown column '{name}'")
        return frame[name]
    args = [evaluate(a, frame) for a in expr.get("args", ())]
    if "fn" in expr:
        function = FUNCTIONS.get(expr["fn"])
        if function is None:
            raise ExprError(f"unknown function '{expr['fn']}'")
        return function.impl(*args)
    op = expr["op"]
    negated = expr.get("negated", False)
    if op == "and":
        out = _truth(args[0]) & _truth(args[1])
    elif op == "or":
        out = _truth(args[0]) | _truth(args[1])
    elif op == "not":
        out = ~_truth(args[0])
    elif op == "neg":
        out = -args[0]
    elif op in _BINARY:
        left, right = args
        out = _BINARY[op](left, right)
        if op in ("=", "!=", "<", "<=", ">", ">="):
            out = out & left.notna() & right.notna()
    elif op == "in":
        operand, *items = args
        values = {i.iloc[0] for i in items} if len(frame) else set()
        out = operand.isin(values)
    elif op == "between":
        operand, low, high = args
        out = (operand >= low) & (operand <= high)
    elif op == "like":
        operand, pattern = args
        regex = _like_regex(str(pattern.iloc[0])) if len(frame) else None
        out = pd.Series(
            [isinstance(v, str) and bool(regex.match(v)) for v in operand], index=frame.index
        )
    elif op == "is_null":
        out = args[0].isna()
    else:  # pragma: no cover - lowering produces only the operators above
        raise ExprError(f"unknown operator {op!r}")
    return ~_truth(out) if negated else out


def _truth(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def mask(expr: Mapping[str, Any] | None, frame: pd.DataFrame) -> pd.Series:
    """A boolean filter for ``frame``: rows where ``expr`` is true (null is false)."""
    if expr is None:
        return pd.Series(True, index=frame.index)
    return _truth(evaluate(expr, frame))


def evaluate_scalar(expr: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
    """``expr`` over one record (a GATE over metrics, a WHEN over one row)."""
    frame = pd.DataFrame([dict(values)])
    result = evaluate(expr, frame).iloc[0]
    return result.item() if hasattr(result, "item") else result
