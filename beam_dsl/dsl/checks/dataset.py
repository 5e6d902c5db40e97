"""Checks of DATASET statements."""

from __future__ import annotations

from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks
from beam_dsl.dsl.units import duration_seconds, duration_suffix
from beam_dsl.ir.dataset import expired_column


def feature_names(stmt: ast.Features) -> list[str]:
    """The feature columns a FEATURES statement outputs (suffixed for WINDOWS (...))."""
    aliases = [item.alias.name for item in stmt.get(ast.SelectClause).items]
    windows = stmt.get(ast.WindowsClause)
    if windows is None:
        return aliases
    suffixes = []
    for size in windows.sizes:
        seconds = duration_seconds(size.value, size.unit)
        suffixes.append("_" + duration_suffix(seconds) if seconds else "")
    return [alias + suffix for suffix in suffixes for alias in aliases]


class DatasetChecks(BaseChecks):
    def check_Dataset(self, stmt: ast.Dataset) -> None:
        entity = stmt.get(ast.EntityClause)
        as_of = stmt.get(ast.AsOfClause)
        join = stmt.get(ast.JoinClause)
        if entity is not None:
            self._columns(entity.columns, "ENTITY")
        if as_of is not None:
            self._columns([as_of.column], "AS OF")
        if join is None:
            return
        owners: dict[str, str] = {}
        if self.ctx.columns is not None:
            owners.update({c: "the labelled rows" for c in self.ctx.columns})
        for ident in join.features:
            features = self._statement_ref(ident, ast.Features, "JOIN")
            if features is None:
                continue
            width = len(features.get(ast.EntityClause).columns)
            if entity is not None and width != len(entity.columns):
                self.ctx.error(
                    "E226",
                    f"ENTITY has {len(entity.columns)} column(s); FEATURES {ident.name} "
                    f"is keyed by {width}",
                    ident.span,
                )
            columns = feature_names(features)
            if features.get(ast.TtlClause) is not None:
                columns.append(expired_column(ident.name))  # DATASET's expiry marker
            for name in columns:
                if name in owners:
                    self.ctx.error(
                        "E227",
                        f"feature '{name}' of {ident.name} clashes with a column of "
                        f"{owners[name]}",
                        ident.span,
                        "rename it with AS in one of the FEATURES statements",
                    )
                owners.setdefault(name, ident.name)
