"""Checks of ENSEMBLE statements."""

from __future__ import annotations

from typing import Any

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks, expr_children
from beam_dsl.dsl.units import percent_fraction
from beam_dsl.dsl.vocabulary import COMBINERS


class EnsembleChecks(BaseChecks):
    def check_Ensemble(self, stmt: ast.Ensemble) -> None:
        steps = stmt.all(ast.StepClause)
        forms = [
            c
            for c in (
                steps[0] if steps else None,
                stmt.get(ast.SplitClause),
                stmt.get(ast.CascadeClause),
                stmt.get(ast.SwitchClause),
            )
            if c is not None
        ]
        if not forms:
            self._missing(stmt, "STEP, SPLIT, CASCADE or SWITCH")
        for extra in forms[1:]:
            self.ctx.error(
                "E217",
                f"{extra.keyword} cannot be combined with {forms[0].keyword} in one ENSEMBLE",
                extra.span,
            )
        bindings: dict[str, ast.StepClause] = {}
        for step in steps:
            if step.name.name in bindings:
                self.ctx.error(
                    "E202",
                    f"duplicate step '{step.name.name}'",
                    step.name.span,
                    f"the first one is on line {bindings[step.name.name].span.line}",
                )
                continue
            bindings[step.name.name] = step
        for step in steps:
            self._model_ref(step.model, "STEP")
            for arg in step.args:
                if arg.qualifier is None and arg.name not in bindings:
                    self._columns([ast.Ident(arg.span, arg.name)], f"STEP {step.name.name}")
                elif arg.qualifier is not None and arg.qualifier not in bindings:
                    self.ctx.error(
                        "E221",
                        f"unknown step '{arg.qualifier}'",
                        arg.span,
                        did_you_mean(arg.qualifier, bindings),
                    )
        self._step_cycles(bindings)
        combine = stmt.get(ast.CombineClause)
        if steps and combine is None:
            self._missing(stmt, "OUTPUT")
        if combine is not None:
            if not steps:
                self.ctx.error(
                    "E217", "OUTPUT combines STEPs; this ENSEMBLE has none", combine.span
                )
            else:
                self._combiner(combine.value, bindings)
        split = stmt.get(ast.SplitClause)
        if split:
            self._columns(split.keys, "SPLIT BY")
            total = 0.0
            for arm in split.arms:
                self._model_ref(arm.model, "SPLIT")
                share = self._percent_share(arm.share)
                total += share or 0.0
            if abs(total - 1.0) > 1e-9:
                self.ctx.error(
                    "E219", f"SPLIT shares add up to {total * 100:g}%, not 100%", split.span
                )
        shadow = stmt.get(ast.ShadowClause)
        if shadow:
            if split is None:
                self.ctx.error("E217", "SHADOW goes with SPLIT", shadow.span)
            for model in shadow.models:
                self._model_ref(model, "SHADOW")
        cascade = stmt.get(ast.CascadeClause)
        if cascade:
            arm_names = frozenset(a.model.name for a in cascade.arms)
            for i, arm in enumerate(cascade.arms):
                self._model_ref(arm.model, "CASCADE")
                if arm.when is None and i < len(cascade.arms) - 1:
                    self.ctx.error(
                        "E205",
                        f"CASCADE arm '{arm.model.name}' needs a WHEN (only the last may omit it)",
                        arm.span,
                    )
                if arm.when is not None:
                    self._qualified(arm.when, arm_names, "CASCADE")
        switch = stmt.get(ast.SwitchClause)
        if switch:
            for case in switch.cases:
                self._model_ref(case.model, "SWITCH")
                self._expr(case.when, "SWITCH")
            if switch.default is not None:
                self._model_ref(switch.default, "SWITCH ELSE")

    def _percent_share(self, lit: ast.Literal) -> float | None:
        fraction = percent_fraction(lit.value, lit.unit) if lit.kind == "quantity" else None
        if fraction is None or not 0 < fraction <= 1:
            self.ctx.error(
                "E213",
                f"malformed percentage '{lit.text}' in SPLIT",
                lit.span,
                "write a share such as 90%",
            )
            return None
        return fraction

    def _qualified(self, node: Any, models: frozenset[str], what: str) -> None:
        """WHEN in CASCADE may read ``model.confidence`` of its arms."""
        if isinstance(node, ast.ColumnRef) and node.qualifier is not None:
            if node.qualifier not in models:
                self.ctx.error(
                    "E203",
                    f"unknown model '{node.qualifier}' in {what} WHEN",
                    node.span,
                    did_you_mean(node.qualifier, models),
                )
            return
        for child in expr_children(node):
            self._qualified(child, models, what)

    def _step_cycles(self, bindings: dict[str, ast.StepClause]) -> None:
        deps = {
            name: [a.qualifier or a.name for a in step.args if (a.qualifier or a.name) in bindings]
            for name, step in bindings.items()
        }
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = path[path.index(name) :] + [name]
                step = bindings[name]
                self.ctx.error(
                    "E204",
                    "steps depend on each other in a cycle: " + " -> ".join(cycle),
                    step.span,
                )
                return
            state[name] = 1
            for dep in deps[name]:
                visit(dep, path + [name])
            state[name] = 2

        for name in bindings:
            visit(name, [])

    def _combiner(self, value: Any, bindings: dict[str, ast.StepClause]) -> None:
        if isinstance(value, ast.ColumnRef):
            if value.dotted not in bindings:
                self.ctx.error(
                    "E221",
                    f"unknown step '{value.dotted}' in OUTPUT",
                    value.span,
                    did_you_mean(value.dotted, bindings),
                )
            return
        if not isinstance(value, ast.Call):
            self.ctx.error("E209", "OUTPUT takes a combiner or a step name", value.span)
            return
        if value.func not in COMBINERS:
            self.ctx.error(
                "E209",
                f"unknown combiner '{value.func}'",
                value.func_span or value.span,
                did_you_mean(value.func, COMBINERS) or f"combiners are {', '.join(COMBINERS)}",
            )
            return
        members = [a for a in value.args if isinstance(a, ast.ColumnRef)]
        for member in members:
            if member.dotted not in bindings:
                self.ctx.error(
                    "E221",
                    f"unknown step '{member.dotted}' in {value.func}()",
                    member.span,
                    did_you_mean(member.dotted, bindings),
                )
        kwargs = {k.name: k for k in value.kwargs}
        if value.func == "top_k":
            if (
                len(members) != 2
                or len(value.args) != 3
                or not (
                    isinstance(value.args[2], ast.Literal)
                    and value.args[2].kind == "int"
                    and value.args[2].value > 0
                )
            ):
                self.ctx.error(
                    "E226", "top_k takes (items, scores, k) with a positive integer k", value.span
                )
            return
        for arg in value.args:
            if not isinstance(arg, ast.ColumnRef):
                self._literal_value(arg, value.func)
        weights = kwargs.get("weights")
        if weights is not None:
            items = weights.value.items if isinstance(weights.value, ast.TupleValue) else None
            if items is None or len(items) != len(members):
                self.ctx.error(
                    "E226",
                    f"weights must be a tuple of {len(members)} numbers, one per member",
                    weights.span,
                )
        mode = kwargs.get("mode")
        if mode is not None and not (
            isinstance(mode.value, ast.Literal) and mode.value.value in ("hard", "soft")
        ):
            self.ctx.error("E226", "mode is 'hard' or 'soft'", mode.span)
        for name, kwarg in kwargs.items():
            if name not in ("weights", "mode", "k"):
                self.ctx.error("E226", f"{value.func}() has no argument '{name}'", kwarg.span)

    # ------------------------------------------------------------ FEATURES

