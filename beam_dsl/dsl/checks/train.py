"""Checks of TRAIN statements."""

from __future__ import annotations

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks.base import BaseChecks
from beam_dsl.dsl.vocabulary import ENCODERS, METRICS


class TrainChecks(BaseChecks):
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

