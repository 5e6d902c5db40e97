"""Checks of TRAIN statements: every mistake knowable from the spec, with its position.

Metric and encoder names are their families' (:func:`beam_dsl.vocabulary.family`);
the rules between clauses are :mod:`beam_dsl.ir.train`'s, which the transform
applies again to a config built from Python (E433).
"""

from __future__ import annotations

import os

from beam_dsl import vocabulary
from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast, pyref
from beam_dsl.dsl.checks.base import BaseChecks
from beam_dsl.ir.train import gate_names, mixed_metrics, per_clashes, save_path_problem


class TrainChecks(BaseChecks):
    def check_Train(self, stmt: ast.Train) -> None:
        per = stmt.get(ast.PerClause)
        if per:
            self._columns(per.columns, "PER")
        where = stmt.get(ast.WhereClause)
        if where:
            self._expr(where.expr, "WHERE")
        label = stmt.get(ast.LabelClause)
        feature_names = self._train_features(stmt.get(ast.FeaturesClause), label)
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
            self._estimator(using, stmt.get(ast.MetricsClause))
        encode = stmt.get(ast.EncodeClause)
        if encode:
            self._encode(encode, feature_names)
        holdout = stmt.get(ast.HoldoutClause)
        if holdout:
            self._percent(holdout.fraction, "HOLDOUT")
        metrics = stmt.get(ast.MetricsClause)
        metric_names = self._metrics(metrics) if metrics else ()
        if per:
            self._per_clashes(per, metric_names)
        min_rows = stmt.get(ast.MinRowsClause)
        if min_rows and min_rows.count < 1:
            self.ctx.error("E220", "MIN ROWS must be at least 1", min_rows.span)
        gate = stmt.get(ast.GateClause)
        if gate:
            self._expr(gate.expr, "GATE", frozenset(gate_names(metric_names)))
        save = stmt.get(ast.SaveClause)
        if save:
            self._key_path(stmt, save.path, per is not None)
            problem = save_path_problem(save.path.value)
            if problem:
                self.ctx.error("E228", problem, save.path.span)
        self._hints(stmt)

    def _train_features(
        self, features: ast.FeaturesClause | None, label: ast.LabelClause | None
    ) -> set[str] | None:
        """Checks FEATURES; the feature names where they are known."""
        if not features:
            return None
        if features.star:
            self._columns(features.except_, "FEATURES * EXCEPT")
            if self.ctx.columns is None:
                return None
            return set(self.ctx.columns) - {c.name for c in features.except_}
        self._columns(features.columns, "FEATURES")
        names = {c.name for c in features.columns}
        if label and label.column.name in names:
            self.ctx.error(
                "E226", f"the label '{label.column.name}' is also a feature", label.column.span
            )
        return names

    def _encode(self, encode: ast.EncodeClause, feature_names: set[str] | None) -> None:
        known = vocabulary.family("encoders").names()
        used: set[str] = set()
        encoded: dict[str, str] = {}  # column -> its encoder
        for encoder in encode.encoders:
            name = encoder.name.name
            if name not in known:
                self._unknown("E218", "encoder", name, encoder.name.span, known)
            elif name in used:
                self.ctx.error(
                    "E202", f"ENCODE names {name} twice", encoder.name.span,
                    f"list its columns once: {name}(a, b)",
                )
            used.add(name)
            for column in encoder.columns:
                if column.name in encoded:
                    self.ctx.error(
                        "E202",
                        f"ENCODE names '{column.name}' twice ({encoded[column.name]} and {name})",
                        column.span,
                    )
                elif feature_names is not None and column.name not in feature_names:
                    self.ctx.error(
                        "E201",
                        f"ENCODE names '{column.name}', which is not a feature",
                        column.span,
                        did_you_mean(column.name, feature_names),
                    )
                encoded.setdefault(column.name, name)

    def _estimator(self, using: ast.UsingClause, metrics: ast.MetricsClause | None) -> None:
        """USING names a class the installed source shows exists (E231), with keywords its
        constructor takes (E232), of the task METRICS measure (E233). The source is read,
        never imported (:mod:`beam_dsl.dsl.pyref`); what it cannot tell stays silent."""
        call = using.call
        folder = os.path.dirname(os.path.abspath(self.ctx.source.path))
        found = pyref.resolve(call.func, (folder,))
        span = call.func_span or using.span
        if isinstance(found, pyref.Missing):
            where = (f"'{found.where}' has no '{found.name}'" if found.where
                     else f"no module named '{found.name}' is installed")
            self.ctx.error("E231", f"USING {call.func}: {where}", span,
                           did_you_mean(found.name, found.choices))
            return
        if found is None:
            return
        for kwarg in call.kwargs if found.params is not None else ():
            if kwarg.name not in found.params:
                self.ctx.error("E232", f"{call.func} takes no argument '{kwarg.name}'",
                               kwarg.span, did_you_mean(kwarg.name, found.params))
        family = vocabulary.family("metrics")
        if not metrics or not found.task or mixed_metrics(tuple(m.name for m in metrics.metrics)):
            return  # mixed METRICS are E208 already
        for metric in metrics.metrics:
            entry = family.get(metric.name)
            if entry is not None and entry.kind != found.task:
                self.ctx.error(
                    "E233", f"metric '{metric.name}' measures {entry.kind}; {call.func} is "
                    f"a {'classifier' if found.task == 'classification' else 'regressor'}",
                    metric.span, f"{found.task} metrics: {', '.join(family.names(found.task))}",
                )

    def _metrics(self, clause: ast.MetricsClause) -> tuple[str, ...]:
        """Checks METRICS: known names, one task; returns the names."""
        known = vocabulary.family("metrics").names()
        for metric in clause.metrics:
            if metric.name not in known:
                self._unknown("E208", "metric", metric.name, metric.span, known)
        names = tuple(m.name for m in clause.metrics)
        mixed = mixed_metrics(names)
        if mixed:
            self.ctx.error("E208", mixed, clause.span)
        return names

    def _per_clashes(self, per: ast.PerClause, metric_names: tuple[str, ...]) -> None:
        taken = per_clashes(metric_names)
        for column in per.columns:
            if column.name in taken:
                self.ctx.error(
                    "E202",
                    f"PER column '{column.name}' clashes with an output column of TRAIN",
                    column.span,
                    f"TRAIN's output has {', '.join(taken)} beside the PER columns",
                )

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
