"""Checks of MODEL statements."""

from __future__ import annotations

from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks
from beam_dsl.dsl.vocabulary import DEVICES


class ModelChecks(BaseChecks):
    def check_Model(self, stmt: ast.Model) -> None:
        framework = stmt.get(ast.FrameworkClause)
        custom = stmt.get(ast.CustomClause)
        if framework is None and custom is None:
            self._missing(stmt, "framework (SKLEARN, PYTORCH, HUGGINGFACE, ONNX or CUSTOM)")
        elif framework is not None and custom is not None:
            self.ctx.error(
                "E217",
                "a MODEL has one framework; CUSTOM cannot follow " + framework.keyword,
                custom.span,
            )
        name = framework.framework if framework else "custom"
        if framework:
            self._key_path(stmt, framework.path, stmt.get(ast.PerClause) is not None)
        elif stmt.get(ast.PerClause) is not None:
            self.ctx.error(
                "E217", "PER needs a model path with {key}", stmt.get(ast.PerClause).span
            )
        cls = stmt.get(ast.ClassClause)
        if cls is not None:
            if name != "pytorch":
                self.ctx.error("E217", "CLASS is only for PYTORCH models", cls.span)
            self._call_literals(cls.call, "CLASS")
        call = stmt.get(ast.CallClause)
        if call is not None:
            if name != "huggingface":
                self.ctx.error("E217", "CALL is only for HUGGINGFACE models", call.span)
            self._call_literals(call.call, "CALL")
        if custom is not None:
            self._call_literals(custom.call, "CUSTOM")
        self._trust_and_classes(stmt, name)
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
        batch = stmt.get(ast.BatchClause)
        if batch:
            if batch.min_size < 1:
                self.ctx.error("E220", "BATCH sizes must be at least 1", batch.span)
            elif batch.max_size is not None and batch.max_size < batch.min_size:
                self.ctx.error(
                    "E220",
                    f"BATCH {batch.min_size} TO {batch.max_size}: max is below min",
                    batch.span,
                )
            self._duration(batch.wait, "BATCH WAIT")
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

    # ------------------------------------------------------------ ENSEMBLE

    def _trust_and_classes(self, stmt: ast.Model, framework: str) -> None:
        trust = stmt.get(ast.TrustClause)
        if trust is not None and framework != "sklearn":
            self.ctx.error("E217", "TRUST is only for SKLEARN models (skops files)", trust.span)
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
