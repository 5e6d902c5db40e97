"""Semantic checks: every problem in a set of spec files, as coded diagnostics.

One ``check_<Statement>`` method per statement kind, in one module per kind,
plus shared helpers (``base``) for
clauses, literals and expressions. Checks never stop at the first problem.
Codes (stable; docs/LANGUAGE_REFERENCE.md lists them):

E201 unknown column          E211 malformed duration      E221 unknown step
E202 duplicate name          E212 malformed size          E222 unknown device
E203 unknown model           E213 malformed percentage    E223 unknown hint
E204 dependency cycle        E214 {key} missing from path E224 bad store URI
E205 missing clause          E215 window period > size    E225 unknown function
E206 duplicate clause        E216 {key} without PER       E226 bad argument
E207 unknown aggregate       E217 clause not allowed here
E208 unknown metric          E218 unknown encoder
E209 unknown combiner        E219 shares do not add to 100%
E210 wrong statement kind    E220 bad number              E227 feature name clash
                                                          E228 bad SAVE TO path
                                                          E229 members answer unlike
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from beam_dsl.diagnostics import Diagnostic, Source
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import Context
from beam_dsl.dsl.checks.dataset import DatasetChecks
from beam_dsl.dsl.checks.ensemble import EnsembleChecks
from beam_dsl.dsl.checks.features import FeaturesChecks
from beam_dsl.dsl.checks.model import ModelChecks
from beam_dsl.dsl.checks.train import TrainChecks


class Checker(TrainChecks, ModelChecks, EnsembleChecks, FeaturesChecks, DatasetChecks):
    """Checks the statements of one spec file against the whole pipeline."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def run(self, spec: ast.SpecFile) -> list[Diagnostic]:
        for stmt in spec.statements:
            self.ctx.columns = self.ctx.columns_by_name.get(stmt.name.name)
            self._check_clauses(stmt)
            getattr(self, f"check_{type(stmt).__name__}")(stmt)
        return self.ctx.diagnostics


def check_names(specs: Iterable[tuple[ast.SpecFile, Source]]) -> tuple[dict, list[Diagnostic]]:
    """Collects every declared name across spec files; duplicates are E202."""
    names: dict[str, ast.Statement] = {}
    where: dict[str, str] = {}
    diagnostics = []
    for spec, source in specs:
        for stmt in spec.statements:
            name = stmt.name.name
            if name in names:
                diagnostics.append(
                    source.diagnostic(
                        "E202",
                        f"'{name}' is already declared as a {names[name].keyword}",
                        stmt.name.span,
                        f"the first one is at {where[name]}:{names[name].name.span.line}",
                    )
                )
                continue
            names[name] = stmt
            where[name] = spec.path
    return names, diagnostics


def check_spec(
    spec: ast.SpecFile,
    source: Source,
    statements: Mapping[str, ast.Statement],
    columns: Mapping[str, Iterable[str]] | None = None,
) -> list[Diagnostic]:
    """Every semantic problem in one spec file.

    ``columns`` maps a statement name to the columns of its input, where the
    pipeline makes them known (a CSV header, say); unknown columns are E201.
    """
    by_name = {k: frozenset(v) for k, v in (columns or {}).items()}
    ctx = Context(source, statements, by_name)
    return Checker(ctx).run(spec)
