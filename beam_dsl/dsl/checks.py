"""Semantic checks: every problem in a set of spec files, as coded diagnostics.

One ``check_<Statement>`` method per statement kind, plus shared helpers for
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
E210 wrong statement kind    E220 bad number
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.diagnostics import Diagnostic, Source, Span, did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.units import duration_seconds, parse_size, percent_fraction, size_bytes
from beam_dsl.dsl.vocabulary import (
    AGGREGATES,
    COMBINERS,
    DEVICES,
    ENCODERS,
    FUNCTIONS,
    HINTS,
    METRICS,
)

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
}

_STORE_SCHEMES = ("sqlite://", "redis://")


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


class Checker:
    """Checks the statements of one spec file against the whole pipeline."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def run(self, spec: ast.SpecFile) -> list[Diagnostic]:
        for stmt in spec.statements:
            self.ctx.columns = self.ctx.columns_by_name.get(stmt.name.name)
            self._check_clauses(stmt)
            getattr(self, f"check_{type(stmt).__name__}")(stmt)
        return self.ctx.diagnostics

    # ------------------------------------------------------------ generic clause rules

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
            if func not in FUNCTIONS:
                self.ctx.error(
                    "E225",
                    f"unknown function '{node.func}' in {what}",
                    node.span,
                    did_you_mean(func, FUNCTIONS),
                )
            else:
                low, high = FUNCTIONS[func]
                if not low <= len(node.args) <= high:
                    self.ctx.error(
                        "E226",
                        f"{func}() takes {_arity(low, high)}, not {len(node.args)}",
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
        for child in _children(node):
            self._expr(child, what, names)

    def _hints(self, stmt: ast.Statement) -> None:
        clause = stmt.get(ast.HintsClause)
        if clause is None:
            return
        for kwarg in clause.hints:
            value = kwarg.value
            if kwarg.name not in HINTS:
                self.ctx.error(
                    "E223",
                    f"unknown hint '{kwarg.name}'",
                    kwarg.span,
                    did_you_mean(kwarg.name, HINTS) or f"hints are {', '.join(HINTS)}",
                )
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

    def _model_ref(self, ident: ast.Ident, what: str) -> ast.Model | None:
        """The MODEL an ident names, or a diagnostic."""
        stmt = self.ctx.statements.get(ident.name)
        if stmt is None:
            models = [n for n, s in self.ctx.statements.items() if isinstance(s, ast.Model)]
            self.ctx.error(
                "E203",
                f"unknown model '{ident.name}' in {what}",
                ident.span,
                did_you_mean(ident.name, models),
            )
            return None
        if not isinstance(stmt, ast.Model):
            self.ctx.error(
                "E210",
                f"'{ident.name}' is a {stmt.keyword}, not a MODEL, in {what}",
                ident.span,
            )
            return None
        return stmt

    # ------------------------------------------------------------ TRAIN

    def check_Train(self, stmt: ast.Train) -> None:
        per = stmt.get(ast.PerClause)
        features = stmt.get(ast.FeaturesClause)
        label = stmt.get(ast.LabelClause)
        if per:
            self._columns(per.columns, "PER")
        where = stmt.get(ast.WhereClause)
        if where:
            self._expr(where.expr, "WHERE")
        feature_names: set[str] | None = None
        if features:
            if features.star:
                self._columns(features.except_, "FEATURES * EXCEPT")
                if self.ctx.columns is not None:
                    feature_names = set(self.ctx.columns) - {c.name for c in features.except_}
            else:
                self._columns(features.columns, "FEATURES")
                feature_names = {c.name for c in features.columns}
                if label and label.column.name in feature_names:
                    self.ctx.error(
                        "E226",
                        f"the label '{label.column.name}' is also a feature",
                        label.column.span,
                    )
        if label:
            self._columns([label.column], "LABEL")
        using = stmt.get(ast.UsingClause)
        if using:
            if "." not in using.call.func:
                self.ctx.error(
                    "E226",
                    f"USING needs a dotted class name, not '{using.call.func}'",
                    using.call.func_span or using.span,
                    "for example sklearn.tree.DecisionTreeClassifier",
                )
            self._call_literals(using.call, "USING")
        encode = stmt.get(ast.EncodeClause)
        if encode:
            for encoder in encode.encoders:
                if encoder.name.name.lower() not in ENCODERS:
                    self.ctx.error(
                        "E218",
                        f"unknown encoder '{encoder.name.name}'",
                        encoder.name.span,
                        did_you_mean(encoder.name.name.lower(), ENCODERS)
                        or f"encoders are {', '.join(ENCODERS)}",
                    )
                for column in encoder.columns:
                    if feature_names is not None and column.name not in feature_names:
                        self.ctx.error(
                            "E201",
                            f"ENCODE names '{column.name}', which is not a feature",
                            column.span,
                            did_you_mean(column.name, feature_names),
                        )
        holdout = stmt.get(ast.HoldoutClause)
        if holdout:
            self._percent(holdout.fraction, "HOLDOUT")
        metrics = stmt.get(ast.MetricsClause)
        for metric in metrics.metrics if metrics else ():
            if metric.name not in METRICS:
                self.ctx.error(
                    "E208",
                    f"unknown metric '{metric.name}'",
                    metric.span,
                    did_you_mean(metric.name, METRICS) or f"metrics are {', '.join(METRICS)}",
                )
        min_rows = stmt.get(ast.MinRowsClause)
        if min_rows and min_rows.count < 1:
            self.ctx.error("E220", "MIN ROWS must be at least 1", min_rows.span)
        gate = stmt.get(ast.GateClause)
        if gate:
            names = frozenset(m.name for m in metrics.metrics) if metrics else frozenset(METRICS)
            self._expr(gate.expr, "GATE", names | {"rows"})
        save = stmt.get(ast.SaveClause)
        if save:
            self._key_path(stmt, save.path, per is not None)
        self._hints(stmt)

    def _key_path(self, stmt: ast.Statement, path: ast.Literal, has_per: bool) -> None:
        has_key = "{key}" in path.value
        if has_per and not has_key:
            self.ctx.error(
                "E214",
                f"{stmt.keyword} '{stmt.name.name}' has PER but its path has no {{key}}",
                path.span,
                "one model per key needs {key} in the path, e.g. 'models/{key}.skops'",
            )
        elif has_key and not has_per:
            self.ctx.error(
                "E216",
                f"the path of {stmt.keyword} '{stmt.name.name}' has {{key}} but there is no PER",
                path.span,
                "add PER <column> or remove {key} from the path",
            )

    # ------------------------------------------------------------ MODEL

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
        for child in _children(node):
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
        if online and not online.uri.value.startswith(_STORE_SCHEMES):
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
            self.ctx.error("E226", f"{name}() takes {_arity(low, high)}, not {count}", agg.span)
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


def _arity(low: int, high: int) -> str:
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def _children(node: Any) -> tuple:
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
