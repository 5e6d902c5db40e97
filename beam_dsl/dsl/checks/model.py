"""Checks of MODEL statements.

The frameworks, the clauses each one takes and the file suffixes it reads
come from the frameworks family (``beam_dsl.transforms.inference.frameworks``).
"""

from __future__ import annotations

from collections.abc import Sequence

from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks
from beam_dsl.vocabulary import DEVICES, family

# Clauses that only some frameworks take (their registry entries' meta["clauses"]).
_FRAMEWORK_CLAUSES = (
    (ast.ClassClause, "CLASS"),
    (ast.CallClause, "CALL"),
    (ast.TrustClause, "TRUST"),
    (ast.ClassesClause, "CLASSES"),
)


def _either(names: Sequence[str]) -> str:
    """``A, B or C``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class ModelChecks(BaseChecks):
    def check_Model(self, stmt: ast.Model) -> None:
        name = self._framework(stmt)
        self._framework_clauses(stmt, name)
        for clause, what in ((ast.ClassClause, "CLASS"), (ast.CallClause, "CALL"),
                             (ast.CustomClause, "CUSTOM")):
            if stmt.get(clause) is not None:
                self._call_literals(stmt.get(clause).call, what)
        self._classes(stmt)
        fallback = stmt.get(ast.FallbackClause)
        if fallback is not None:
            if stmt.get(ast.PerClause) is None:
                self.ctx.error("E217", "FALLBACK is only for PER models", fallback.span)
            target = self._model_ref(fallback.model, "FALLBACK")
            if target is not None and self._fallback_cycle(stmt):
                self.ctx.error(
                    "E204",
                    f"FALLBACK of '{stmt.name.name}' leads back to itself",
                    fallback.model.span,
                )
        inputs = stmt.get(ast.InputClause)
        if inputs:
            self._columns(inputs.columns, "INPUT")
        self._batch(stmt.get(ast.BatchClause))
        device = stmt.get(ast.DeviceClause)
        if device and device.device.name.lower() not in DEVICES:
            self.ctx.error(
                "E222",
                f"unknown device '{device.device.name}'",
                device.device.span,
                "DEVICE is GPU, CPU or AUTO",
            )
        refresh = stmt.get(ast.RefreshClause)
        if refresh:
            self._duration(refresh.every, "REFRESH EVERY")
        self._hints(stmt)

    def _framework(self, stmt: ast.Model) -> str:
        """The MODEL's framework name; checks there is one, and its path."""
        framework = stmt.get(ast.FrameworkClause)
        custom = stmt.get(ast.CustomClause)
        per = stmt.get(ast.PerClause)
        if framework is None and custom is None:
            names = [n.upper() for n in family("frameworks")]
            self._missing(stmt, f"framework ({_either(names)})")
        elif framework is not None and custom is not None:
            self.ctx.error(
                "E217",
                "a MODEL has one framework; CUSTOM cannot follow " + framework.keyword,
                custom.span,
            )
        if framework is None:
            if per is not None:
                self.ctx.error("E217", "PER needs a model path with {key}", per.span)
            return "custom"
        self._key_path(stmt, framework.path, per is not None)
        suffixes = family("frameworks")[framework.framework].meta["suffixes"]
        if suffixes and not framework.path.value.endswith(suffixes):
            self.ctx.error(
                "E230",
                f"{framework.framework.upper()} reads {_either(suffixes)} files, "
                f"not '{framework.path.value}'",
                framework.path.span,
                f"name the model file with its format's suffix ({_either(suffixes)})",
            )
        return framework.framework

    def _framework_clauses(self, stmt: ast.Model, name: str) -> None:
        """CLASS, CALL, TRUST, CLASSES: only with the frameworks that take them."""
        frameworks = family("frameworks")
        for clause_type, keyword in _FRAMEWORK_CLAUSES:
            clause = stmt.get(clause_type)
            if clause is not None and keyword not in frameworks[name].meta["clauses"]:
                takers = [n.upper() for n in frameworks if keyword in frameworks[n].meta["clauses"]]
                self.ctx.error("E217", f"{keyword} is only for {_either(takers)} models",
                               clause.span)

    def _classes(self, stmt: ast.Model) -> None:
        classes = stmt.get(ast.ClassesClause)
        if classes is None:
            return
        seen: set = set()
        for label in classes.labels:
            if label.value in seen:
                self.ctx.error("E226", f"CLASSES names {label.text} twice", label.span)
            seen.add(label.value)
        if len(classes.labels) < 2:
            self.ctx.error("E226", "CLASSES needs at least two labels", classes.span)
        output = stmt.get(ast.OutputClause)
        if output is not None and len(output.columns) > 1:
            self.ctx.error("E217", "CLASSES names the classes of a single OUTPUT field; "
                           f"OUTPUT names {len(output.columns)}", classes.span)

    def _batch(self, batch: ast.BatchClause | None) -> None:
        if batch is None:
            return
        if batch.min_size < 1:
            self.ctx.error("E220", "BATCH sizes must be at least 1", batch.span)
        elif batch.max_size is not None and batch.max_size < batch.min_size:
            self.ctx.error(
                "E220",
                f"BATCH {batch.min_size} TO {batch.max_size}: max is below min",
                batch.span,
            )
        self._duration(batch.wait, "BATCH WAIT")

    def _fallback_cycle(self, stmt: ast.Model) -> bool:
        seen = {stmt.name.name}
        current: ast.Statement | None = stmt
        while current is not None:
            fallback = current.get(ast.FallbackClause)
            if fallback is None:
                return False
            name = fallback.model.name
            if name in seen:
                return True
            seen.add(name)
            current = self.ctx.statements.get(name)
            if not isinstance(current, ast.Model):
                return False
        return False  # pragma: no cover
