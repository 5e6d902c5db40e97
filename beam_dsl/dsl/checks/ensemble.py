"""Checks of ENSEMBLE statements.

The rules shared with :meth:`beam_dsl.ir.ensemble.EnsembleConfig.validate`
come from :mod:`beam_dsl.ir.ensemble` and the ``combiners`` family; here they
get source positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from beam_dsl import vocabulary
from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks, expr_children
from beam_dsl.dsl.units import percent_fraction
from beam_dsl.ir.ensemble import label_set, step_input_problem, unlike
from beam_dsl.transforms.ensemble.combiners import problems as combiner_problems

E_UNLIKE = "E229"  # members that cannot answer alike (OUTPUT counts, CLASSES)


def _outputs(model: ast.Model) -> int:
    clause = model.get(ast.OutputClause)
    return len(clause.columns) if clause else 1  # without OUTPUT, the MODEL's name


def _classes(model: ast.Model | None) -> tuple[Any, ...] | None:
    """A MODEL's CLASSES, in their order; None where it has none (or is unknown)."""
    clause = model.get(ast.ClassesClause) if model is not None else None
    return tuple(lit.value for lit in clause.labels) if clause else None


def _shown(labels: tuple[Any, ...]) -> str:
    return "(" + ", ".join(repr(v) for v in labels) + ")"


def _value(node: Any) -> Any:
    """A literal argument as its value (a tuple as a list); anything else as itself."""
    if isinstance(node, ast.Literal) and node.kind != "quantity":
        return node.value
    if isinstance(node, ast.TupleValue):
        return [_value(item) for item in node.items]
    return node


class EnsembleChecks(BaseChecks):
    def check_Ensemble(self, stmt: ast.Ensemble) -> None:
        self._ensemble_forms(stmt)
        bindings = self._ensemble_steps(stmt)
        combine = stmt.get(ast.CombineClause)
        if bindings and combine is None:
            self._missing(stmt, "OUTPUT")
        if combine is not None:
            if not bindings:
                self.ctx.error(
                    "E217", "OUTPUT combines STEPs; this ENSEMBLE has none", combine.span
                )
            else:
                self._combiner(combine.value, bindings)
        self._split(stmt)
        self._cascade(stmt)
        switch = stmt.get(ast.SwitchClause)
        if switch:
            for case in switch.cases:
                self._model_ref(case.model, "SWITCH")
                self._expr(case.when, "SWITCH")
            if switch.default is not None:
                self._model_ref(switch.default, "SWITCH ELSE")
        self._routed_alike(stmt)

    def _ensemble_forms(self, stmt: ast.Ensemble) -> None:
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

    def _ensemble_steps(self, stmt: ast.Ensemble) -> dict[str, ast.StepClause]:
        """Checks the STEPs; returns them by binding (the first of a name)."""
        steps = stmt.all(ast.StepClause)
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
            model = self._model_ref(step.model, "STEP")
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
            inputs = model.get(ast.InputClause) if model is not None else None
            problem = step_input_problem(
                step.name.name,
                step.model.name,
                None if step.star else [a.dotted for a in step.args],
                [c.name for c in inputs.columns] if inputs else None,
            )
            if problem:
                self.ctx.error("E226", problem, step.span, "pass one field per INPUT column")
        self._step_cycles(bindings)
        return bindings

    def _split(self, stmt: ast.Ensemble) -> None:
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

    def _cascade(self, stmt: ast.Ensemble) -> None:
        cascade = stmt.get(ast.CascadeClause)
        if not cascade:
            return
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

    # ------------------------------------------------------------ OUTPUT

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
        family = vocabulary.family("combiners")
        if value.func not in family:
            self._unknown_combiner(value, family.names())
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
        literals = [a for a in value.args if not isinstance(a, ast.ColumnRef)]
        for arg in literals:
            self._literal_value(arg, value.func)
        kwargs = {k.name: k for k in value.kwargs}
        problems = combiner_problems(
            value.func,
            [m.dotted for m in members],
            [_value(a) for a in literals],
            {name: _value(k.value) for name, k in kwargs.items()},
        )
        for where, message in problems:
            self.ctx.error("E226", message, kwargs[where].span if where else value.span)
        if family[value.func].meta.get("alike"):
            known = [m for m in members if m.dotted in bindings]
            self._alike(
                f"steps of {value.func}()",
                [(m, self._declared_model(bindings[m.dotted].model.name)) for m in known],
            )

    def _unknown_combiner(self, call: ast.Call, known: tuple[str, ...]) -> None:
        self.ctx.error(
            "E209",
            f"unknown combiner '{call.func}'",
            call.func_span or call.span,
            did_you_mean(call.func, known) or f"combiners are {', '.join(known)}",
        )

    def _declared_model(self, name: str) -> ast.Model | None:
        """The MODEL statement of that name (None if there is none: reported elsewhere)."""
        model = self.ctx.statements.get(name)
        return model if isinstance(model, ast.Model) else None

    # ------------------------------------------------------------ answers alike

    def _routed_alike(self, stmt: ast.Ensemble) -> None:
        """The models that answer rows of a SPLIT, CASCADE or SWITCH (and SHADOW models
        beside them) must answer alike: as many OUTPUT columns, the same CLASSES."""
        split, cascade = stmt.get(ast.SplitClause), stmt.get(ast.CascadeClause)
        switch, shadow = stmt.get(ast.SwitchClause), stmt.get(ast.ShadowClause)
        clauses = [("SPLIT", split and [a.model for a in split.arms]),
                   ("CASCADE", cascade and [a.model for a in cascade.arms]),
                   ("SWITCH", switch and [c.model for c in switch.cases]
                    + [d for d in [switch.default] if d]),
                   ("SHADOW", shadow and list(shadow.models))]
        what = " and ".join(keyword for keyword, idents in clauses if idents)
        first: dict[str, ast.Ident] = {}
        for ident in (i for _, idents in clauses for i in idents or ()):
            first.setdefault(ident.name, ident)
        members = [(i, self._declared_model(i.name)) for i in first.values()]
        counts = unlike((i, _outputs(m)) for i, m in members if m is not None)
        if counts:
            (a, n), (b, k) = counts
            self.ctx.error(
                E_UNLIKE,
                f"models of {what} answer with different OUTPUT counts: "
                f"'{a.name}' has {n}, '{b.name}' has {k}",
                b.span,
                "the answer takes the first model's OUTPUT names; give each as many",
            )
        self._alike(f"models of {what}", members)

    def _alike(self, what: str, members: Iterable[tuple[Any, ast.Model | None]]) -> None:
        """Members (AST nodes with a span and a name, and their MODEL) whose CLASSES are
        both known must name the same labels."""
        classes = [(node, _classes(model)) for node, model in members]
        pair = unlike((i, label_set(labels)) for i, (_, labels) in enumerate(classes))
        if pair:
            (a, first), (b, second) = (classes[i] for i, _ in pair)
            self.ctx.error(
                E_UNLIKE,
                f"{what} answer different labels: '{_name(a)}' has CLASSES {_shown(first)}, "
                f"'{_name(b)}' has {_shown(second)}",
                b.span,
                "members of a vote, mean, SPLIT, CASCADE or SWITCH must answer the same labels",
            )


def _name(node: Any) -> str:
    return node.dotted if isinstance(node, ast.ColumnRef) else node.name
