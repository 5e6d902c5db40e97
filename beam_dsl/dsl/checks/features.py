"""Checks of FEATURES statements."""

from __future__ import annotations

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import STORE_SCHEMES, BaseChecks, arity_text
from beam_dsl.dsl.vocabulary import AGGREGATES


class FeaturesChecks(BaseChecks):
    def check_Features(self, stmt: ast.Features) -> None:
        entity = stmt.get(ast.EntityClause)
        if entity:
            self._columns(entity.columns, "ENTITY")
        timestamp = stmt.get(ast.TimestampClause)
        if timestamp:
            self._columns([timestamp.column], "TIMESTAMP")
        where = stmt.get(ast.WhereClause)
        if where:
            self._expr(where.expr, "WHERE")
        window = stmt.get(ast.WindowClause)
        windows = stmt.get(ast.WindowsClause)
        if window is None and windows is None:
            self._missing(stmt, "WINDOW or WINDOWS")
        elif window is not None and windows is not None:
            self.ctx.error("E217", "use WINDOW or WINDOWS, not both", windows.span)
        if window is not None:
            size = self._duration(window.size, "WINDOW")
            every = self._duration(window.every, "EVERY")
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
                seconds = self._duration(lit, "WINDOWS")
                if seconds is not None and seconds in seen:
                    self.ctx.error("E202", f"window length {lit.text} appears twice", lit.span)
                if seconds is not None:
                    seen[seconds] = lit
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
        for clause, what in (
            (stmt.get(ast.TtlClause), "TTL"),
            (stmt.get(ast.LatenessClause), "ALLOWED LATENESS"),
        ):
            if clause is not None:
                self._duration(clause.duration, what)
        online = stmt.get(ast.OnlineClause)
        if online and not online.uri.value.startswith(STORE_SCHEMES):
            self.ctx.error(
                "E224",
                f"unknown online store '{online.uri.value}'",
                online.uri.span,
                "use 'sqlite:///path/to/file.db' or 'redis://host:port/db'",
            )

    def _aggregate(self, agg: ast.Aggregate) -> None:
        name = agg.func.name.lower()
        if name not in AGGREGATES:
            self.ctx.error(
                "E207",
                f"unknown aggregate '{agg.func.name}'",
                agg.func.span,
                did_you_mean(name, AGGREGATES),
            )
            return
        low, high = AGGREGATES[name]
        count = 0 if agg.star else len(agg.args)
        if agg.star and name != "count":
            self.ctx.error("E226", f"{name}(*) is not allowed; name a column", agg.span)
        elif not low <= count <= high:
            self.ctx.error("E226", f"{name}() takes {arity_text(low, high)}, not {count}", agg.span)
        for arg in agg.args[:1]:
            self._expr(arg, f"{name}()")
        if name in ("first_k", "last_k", "top_k") and count == 2:
            k = agg.args[1]
            if not (isinstance(k, ast.Literal) and k.kind == "int" and k.value > 0):
                self.ctx.error("E226", f"{name}() needs a positive integer k", k.span)
        if name == "approx_percentile" and count == 2:
            q = agg.args[1]
            if not (
                isinstance(q, ast.Literal) and q.kind in ("int", "float") and 0 <= q.value <= 1
            ):
                self.ctx.error("E226", "approx_percentile() needs q between 0 and 1", q.span)


