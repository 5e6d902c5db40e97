"""Checks of FEATURES statements.

Aggregates (arity, ``(*)``, their literal parameters' rules) come from the
``aggregates`` family (:mod:`beam_dsl.transforms.features.aggregates`); the
rules about windows, names and stores are those
:meth:`~beam_dsl.ir.features.FeaturesConfig.validate` applies at run time.
"""

from __future__ import annotations

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks, arity_text
from beam_dsl.dsl.checks.dataset import feature_names
from beam_dsl.dsl.lower import lower_expr
from beam_dsl.ir.features import (
    EXPIRES_COLUMN,
    WINDOW_COLUMNS,
    online_store_problem,
    whole_milliseconds,
)
from beam_dsl.vocabulary import family

AGGREGATES = family("aggregates")


class FeaturesChecks(BaseChecks):
    def check_Features(self, stmt: ast.Features) -> None:
        entity = stmt.get(ast.EntityClause)
        if entity:
            self._columns(entity.columns, "ENTITY")
            seen: set[str] = set()
            for ident in entity.columns:
                if ident.name in seen:
                    self.ctx.error("E202", f"ENTITY names '{ident.name}' twice", ident.span)
                seen.add(ident.name)
        timestamp = stmt.get(ast.TimestampClause)
        if timestamp:
            self._columns([timestamp.column], "TIMESTAMP")
        where = stmt.get(ast.WhereClause)
        if where:
            self._expr(where.expr, "WHERE")
        self._windows(stmt)
        select = stmt.get(ast.SelectClause)
        aliases: dict[str, ast.SelectItem] = {}
        for item in select.items if select else ():
            self._aggregate(item.aggregate)
            if item.filter is not None:
                self._expr(item.filter, "FILTER")
            if item.alias.name in aliases:
                self.ctx.error(
                    "E202", f"duplicate feature name '{item.alias.name}'", item.alias.span
                )
            aliases[item.alias.name] = item
        if select:
            self._output_names(stmt)
        for clause, what in (
            (stmt.get(ast.TtlClause), "TTL"),
            (stmt.get(ast.LatenessClause), "ALLOWED LATENESS"),
        ):
            if clause is not None:
                self._duration(clause.duration, what)
        self._stores(stmt)

    def _windows(self, stmt: ast.Features) -> None:
        window = stmt.get(ast.WindowClause)
        windows = stmt.get(ast.WindowsClause)
        if window is None and windows is None:
            self._missing(stmt, "WINDOW or WINDOWS")
        elif window is not None and windows is not None:
            self.ctx.error("E217", "use WINDOW or WINDOWS, not both", windows.span)
        if window is not None:
            size = self._window_length(window.size, "WINDOW")
            every = self._window_length(window.every, "EVERY")
            if size and every and every > size:
                self.ctx.error(
                    "E215",
                    f"window period {window.every.text} is larger than its size {window.size.text}",
                    window.every.span,
                    "a sliding window moves by at most its own size",
                )
        if windows is not None:
            seen: dict[float, ast.Literal] = {}
            for lit in windows.sizes:
                seconds = self._window_length(lit, "WINDOWS")
                if seconds is not None and seconds in seen:
                    self.ctx.error("E202", f"window length {lit.text} appears twice", lit.span)
                if seconds is not None:
                    seen[seconds] = lit

    def _window_length(self, lit: ast.Literal | None, what: str) -> float | None:
        """A window duration in seconds: positive (E211) and whole milliseconds (E211)."""
        seconds = self._duration(lit, what)
        if seconds is not None and seconds > 0 and not whole_milliseconds(seconds):
            self.ctx.error(
                "E211",
                f"window duration '{lit.text}' in {what} is not a whole number of milliseconds",
                lit.span,
                "windows are computed in milliseconds",
            )
            return None
        return seconds

    def _output_names(self, stmt: ast.Features) -> None:
        """A feature's output name (its alias, suffixed for WINDOWS) must not be an ENTITY
        column or a window column (duplicate aliases are reported once, above)."""
        entity = stmt.get(ast.EntityClause)
        taken = {c.name: "an ENTITY column" for c in entity.columns} if entity else {}
        fixed = WINDOW_COLUMNS + ((EXPIRES_COLUMN,) if stmt.get(ast.TtlClause) else ())
        taken.update({c: "a column of every row" for c in fixed})
        items = stmt.get(ast.SelectClause).items
        for i, name in enumerate(feature_names(stmt)):
            if name in taken:
                alias = items[i % len(items)].alias
                self.ctx.error(
                    "E202",
                    f"feature '{name}' has the name of {taken[name]}",
                    alias.span,
                    "rename it with AS",
                )

    def _stores(self, stmt: ast.Features) -> None:
        online = stmt.get(ast.OnlineClause)
        problem = online_store_problem(online.uri.value) if online else None
        if problem:
            self.ctx.error("E224", problem[0], online.uri.span, problem[1])
        offline = stmt.get(ast.OfflineClause)
        if offline and not str(offline.path.value).strip():
            self.ctx.error("E224", "OFFLINE names no directory", offline.path.span)

    def _aggregate(self, agg: ast.Aggregate) -> None:
        name = agg.func.name.lower()
        entry = AGGREGATES.get(name)
        if entry is None:
            self.ctx.error(
                "E207",
                f"unknown aggregate '{agg.func.name}'",
                agg.func.span,
                did_you_mean(name, AGGREGATES),
            )
            return
        count = 0 if agg.star else len(agg.args)
        if agg.star and entry.min_args > 0:
            self.ctx.error("E226", f"{name}(*) is not allowed; name a column", agg.span)
        elif not entry.min_args <= count <= entry.max_args:
            text = arity_text(entry.min_args, entry.max_args)
            self.ctx.error("E226", f"{name}() takes {text}, not {count}", agg.span)
        for arg in agg.args[:1]:
            self._expr(arg, f"{name}()")
        for param, arg in zip(entry.params, agg.args[1:], strict=False):
            # Judged as lowered, the value the transform gets (50% is 0.5).
            rule, lowered = entry.meta["rules"][param], lower_expr(arg)
            if lowered.keys() != {"lit"}:
                self.ctx.error(
                    "E226", f"{name}(): {param} must be a literal, {rule.text}", arg.span
                )
            elif not rule.accepts(lowered["lit"]):
                self.ctx.error(
                    "E226", f"{name}(): {param} must be {rule.text}, not {arg.text}", arg.span
                )
