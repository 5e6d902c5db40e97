"""What every statement's checks share: the context, clause rules, literals, expressions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.diagnostics import Diagnostic, Source, Span, did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.units import duration_seconds, parse_size, percent_fraction, size_bytes
from beam_dsl.vocabulary import HINTS, family

FUNCTIONS = family("functions")

# Which clauses each statement takes: clause class -> (required, repeatable).
_CLAUSES: dict[type, dict[type, tuple[bool, bool]]] = {
    ast.Train: {
        ast.PerClause: (False, False),
        ast.WhereClause: (False, False),
        ast.FeaturesClause: (True, False),
        ast.LabelClause: (True, False),
        ast.UsingClause: (True, False),
        ast.EncodeClause: (False, False),
        ast.HoldoutClause: (False, False),
        ast.MetricsClause: (False, False),
        ast.MinRowsClause: (False, False),
        ast.GateClause: (False, False),
        ast.SaveClause: (True, False),
        ast.HintsClause: (False, False),
    },
    ast.Model: {
        ast.FrameworkClause: (False, False),
        ast.CustomClause: (False, False),
        ast.PerClause: (False, False),
        ast.FallbackClause: (False, False),
        ast.InputClause: (False, False),
        ast.OutputClause: (False, False),
        ast.BatchClause: (False, False),
        ast.DeviceClause: (False, False),
        ast.HintsClause: (False, False),
        ast.ClassClause: (False, False),
        ast.CallClause: (False, False),
        ast.SharedClause: (False, False),
        ast.RefreshClause: (False, False),
        ast.TrustClause: (False, False),
        ast.ClassesClause: (False, False),
    },
    ast.Ensemble: {
        ast.StepClause: (False, True),
        ast.CombineClause: (False, False),
        ast.SplitClause: (False, False),
        ast.ShadowClause: (False, False),
        ast.CascadeClause: (False, False),
        ast.SwitchClause: (False, False),
    },
    ast.Features: {
        ast.EntityClause: (True, False),
        ast.TimestampClause: (True, False),
        ast.WhereClause: (False, False),
        ast.WindowClause: (False, False),
        ast.WindowsClause: (False, False),
        ast.SelectClause: (True, False),
        ast.TtlClause: (False, False),
        ast.OnlineClause: (False, False),
        ast.OfflineClause: (False, False),
        ast.LatenessClause: (False, False),
    },
    ast.Dataset: {
        ast.EntityClause: (True, False),
        ast.AsOfClause: (True, False),
        ast.JoinClause: (True, False),
    },
}

# Clause keyword for "missing clause" messages.
_KEYWORDS = {
    ast.FeaturesClause: "FEATURES",
    ast.LabelClause: "LABEL",
    ast.UsingClause: "USING",
    ast.SaveClause: "SAVE TO",
    ast.EntityClause: "ENTITY",
    ast.TimestampClause: "TIMESTAMP",
    ast.SelectClause: "SELECT",
    ast.AsOfClause: "AS OF",
    ast.JoinClause: "JOIN",
}



@dataclass
class Context:
    """What the checks know beyond one statement."""

    source: Source
    statements: Mapping[str, ast.Statement]  # every declared name in the pipeline
    # The input columns of each statement, where the pipeline tells them.
    columns_by_name: Mapping[str, frozenset[str]] = field(default_factory=dict)
    columns: frozenset[str] | None = None  # those of the statement being checked
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None):
        self.diagnostics.append(self.source.diagnostic(code, message, span, hint))



class BaseChecks:
    """Helpers for the per-statement checks (mixed into :class:`~beam_dsl.dsl.checks.Checker`)."""

    ctx: Context


    def _check_clauses(self, stmt: ast.Statement) -> None:
        allowed = _CLAUSES[type(stmt)]
        seen: dict[type, ast.Clause] = {}
        for clause in stmt.clauses:
            kind = type(clause)
            if kind not in allowed:
                self.ctx.error(
                    "E217",
                    f"{clause.keyword} is not allowed in {stmt.keyword}",
                    clause.span,
                )
                continue
            if kind in seen and not allowed[kind][1]:
                self.ctx.error(
                    "E206",
                    f"duplicate {clause.keyword} clause in {stmt.keyword} '{stmt.name.name}'",
                    clause.span,
                    f"the first one is on line {seen[kind].span.line}",
                )
            seen.setdefault(kind, clause)
        for kind, (required, _) in allowed.items():
            if required and kind not in seen:
                self._missing(stmt, _KEYWORDS[kind])

    def _missing(self, stmt: ast.Statement, keyword: str) -> None:
        self.ctx.error(
            "E205",
            f"{stmt.keyword} '{stmt.name.name}' has no {keyword} clause",
            stmt.name.span,
        )

    # ------------------------------------------------------------ literals

    def _duration(self, lit: ast.Literal | None, what: str) -> float | None:
        if lit is None:
            return None
        seconds = duration_seconds(lit.value, lit.unit) if lit.kind == "quantity" else None
        if seconds is None or seconds <= 0:
            self.ctx.error(
                "E211",
                f"malformed duration '{lit.text}' in {what}",
                lit.span,
                "write a positive number with ms, s, m, h or d, such as 5m or 1h",
            )
        return seconds

    def _percent(self, lit: ast.Literal, what: str) -> float | None:
        fraction = percent_fraction(lit.value, lit.unit) if lit.kind == "quantity" else None
        if fraction is None or not 0 < fraction < 1:
            self.ctx.error(
                "E213",
                f"malformed percentage '{lit.text}' in {what}",
                lit.span,
                "write a percentage between 0% and 100%, such as 20%",
            )
            return None
        return fraction

    def _columns(self, idents: Iterable[ast.Ident], clause: str) -> None:
        known = self.ctx.columns
        if known is None:
            return
        for ident in idents:
            if ident.name not in known:
                self.ctx.error(
                    "E201",
                    f"unknown column '{ident.name}' in {clause}",
                    ident.span,
                    did_you_mean(ident.name, known),
                )

    def _call_literals(self, call: ast.Call, what: str) -> None:
        for value in [*call.args, *(k.value for k in call.kwargs)]:
            self._literal_value(value, what)

    def _literal_value(self, value: Any, what: str) -> None:
        if isinstance(value, ast.TupleValue):
            for item in value.items:
                self._literal_value(item, what)
        elif not isinstance(value, ast.Literal):
            self.ctx.error(
                "E226",
                f"arguments of {what} must be literals",
                value.span,
                "use numbers, strings, true/false/null or tuples of them",
            )

    def _expr(self, node: Any, what: str, names: frozenset[str] | None = None) -> None:
        """Checks functions and (when known) column references of an expression.

        ``names`` overrides the input columns (e.g. metric names for GATE).
        """
        if isinstance(node, ast.FuncCall):
            func = node.func.lower()
            entry = FUNCTIONS.get(func)
            if entry is None:
                self.ctx.error(
                    "E225",
                    f"unknown function '{node.func}' in {what}",
                    node.span,
                    did_you_mean(func, FUNCTIONS),
                )
            elif not entry.min_args <= len(node.args) <= entry.max_args:
                self.ctx.error(
                    "E226",
                    f"{func}() takes {arity_text(entry.min_args, entry.max_args)}, "
                    f"not {len(node.args)}",
                    node.span,
                )
        elif isinstance(node, ast.ColumnRef):
            known = names if names is not None else self.ctx.columns
            if known is not None and node.qualifier is None and node.name not in known:
                self.ctx.error(
                    "E201",
                    f"unknown {'name' if names is not None else 'column'} '{node.name}' in {what}",
                    node.span,
                    did_you_mean(node.name, known),
                )
        for child in expr_children(node):
            self._expr(child, what, names)

    def _hints(self, stmt: ast.Statement) -> None:
        clause = stmt.get(ast.HintsClause)
        if clause is None:
            return
        for kwarg in clause.hints:
            value = kwarg.value
            if kwarg.name not in HINTS:
                self._unknown("E223", "hint", kwarg.name, kwarg.span, HINTS)
            elif kwarg.name == "min_ram":
                ok = isinstance(value, ast.Literal) and (
                    (value.kind == "string" and parse_size(value.value) is not None)
                    or (value.kind == "quantity" and size_bytes(value.value, value.unit))
                    or value.kind == "int"
                )
                if not ok:
                    self.ctx.error(
                        "E212",
                        "malformed size in min_ram",
                        value.span,
                        "write a size such as '8GB' or 512MB",
                    )
            elif kwarg.name == "cpu_count" and not (
                isinstance(value, ast.Literal) and value.kind == "int" and value.value > 0
            ):
                self.ctx.error("E220", "cpu_count must be a positive integer", value.span)
            elif kwarg.name == "accelerator" and not (
                isinstance(value, ast.Literal) and value.kind == "string" and value.value
            ):
                self.ctx.error(
                    "E226", "accelerator must be a string such as 'nvidia-l4'", value.span
                )

    def _unknown(self, code: str, what: str, name: str, span: Span, known: Iterable[str]) -> None:
        """``name`` is not one of the ``known`` names of ``what`` (a hint, a metric, ...)."""
        known = tuple(known)
        self.ctx.error(
            code,
            f"unknown {what} '{name}'",
            span,
            did_you_mean(name, known) or f"{what}s are {', '.join(known)}",
        )

    def _model_ref(self, ident: ast.Ident, what: str) -> ast.Model | None:
        """The MODEL an ident names, or a diagnostic."""
        return self._statement_ref(ident, ast.Model, what)

    def _statement_ref(self, ident: ast.Ident, kind: type, what: str) -> Any:
        """The statement of class ``kind`` an ident names; E203 if there is none by that
        name, E210 if it is another kind of statement."""
        stmt = self.ctx.statements.get(ident.name)
        keyword = kind.keyword
        if stmt is None:
            names = [n for n, s in self.ctx.statements.items() if isinstance(s, kind)]
            label = "model" if kind is ast.Model else keyword
            self.ctx.error(
                "E203",
                f"unknown {label} '{ident.name}' in {what}",
                ident.span,
                did_you_mean(ident.name, names),
            )
            return None
        if not isinstance(stmt, kind):
            self.ctx.error(
                "E210",
                f"'{ident.name}' is a {stmt.keyword}, not a {keyword}, in {what}",
                ident.span,
            )
            return None
        return stmt

    # ------------------------------------------------------------ TRAIN



def arity_text(low: int, high: int) -> str:
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def expr_children(node: Any) -> tuple:
    if isinstance(node, ast.Unary):
        return (node.operand,)
    if isinstance(node, ast.Binary):
        return (node.left, node.right)
    if isinstance(node, ast.InList):
        return (node.operand, *node.items)
    if isinstance(node, ast.Between):
        return (node.operand, node.low, node.high)
    if isinstance(node, (ast.Like,)):
        return (node.operand, node.pattern)
    if isinstance(node, ast.IsNull):
        return (node.operand,)
    if isinstance(node, ast.FuncCall):
        return node.args
    return ()

