"""Checked AST -> IR: one :class:`TransformDef` per statement.

The IR is what the compiled Beam YAML carries: for each declared name, the
beam_dsl PTransform class that implements it and its typed config (one
:mod:`beam_dsl.ir` dataclass per statement kind, written as the transform's
``config:``), plus Beam resource hints. docs/IR.md lists the fields.

Lowering assumes checks.py passed: names resolve and literals are valid.
Each statement kind has one ``lower_<Class>`` function; expressions lower to
JSON (see :func:`lower_expr`) that ``beam_dsl.transforms.common.expr`` evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.dsl import ast
from beam_dsl.dsl.units import (
    duration_seconds,
    duration_suffix,
    percent_fraction,
    size_bytes,
)
from beam_dsl.ir import Call, Config
from beam_dsl.ir.dataset import DatasetConfig
from beam_dsl.ir.ensemble import Arm, CascadeArm, Case, EnsembleConfig, Output, Split, Step, Switch
from beam_dsl.ir.features import FeaturesConfig, Item, Window
from beam_dsl.ir.model import Batch, ModelConfig
from beam_dsl.ir.train import TrainConfig
from beam_dsl.transforms.training.modelstore import vouched_types

TRANSFORM_CLASSES = {
    "Train": "beam_dsl.transforms.training.TrainModels",
    "Model": "beam_dsl.transforms.inference.RunModel",
    "Ensemble": "beam_dsl.transforms.ensemble.RunEnsemble",
    "Features": "beam_dsl.transforms.features.ComputeFeatures",
    "Dataset": "beam_dsl.transforms.features.BuildDataset",
}

CONFIG_CLASSES: dict[str, type[Config]] = {
    "Train": TrainConfig,
    "Model": ModelConfig,
    "Ensemble": EnsembleConfig,
    "Features": FeaturesConfig,
    "Dataset": DatasetConfig,
}

DEFAULT_HOLDOUT = 0.2
DEFAULT_SEED = 0


@dataclass(frozen=True)
class TransformDef:
    """One declared name, ready for codegen."""

    name: str
    kind: str  # Train | Model | Ensemble | Features | Dataset
    class_path: str
    config: Config
    resource_hints: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the spec file that declared it


# ---------------------------------------------------------------- values and expressions


def lower_value(node: Any) -> Any:
    """A literal-ish AST value (kwarg value, tuple, quantity) as plain JSON."""
    if isinstance(node, ast.Literal):
        if node.kind == "quantity":
            for convert in (duration_seconds, percent_fraction, size_bytes):
                converted = convert(node.value, node.unit)
                if converted is not None:
                    return converted
            return node.text
        return node.value
    if isinstance(node, ast.TupleValue):
        return [lower_value(v) for v in node.items]
    if isinstance(node, ast.ColumnRef):
        return node.dotted
    if isinstance(node, ast.Call):
        return lower_call(node)
    raise TypeError(f"not a value: {node!r}")  # pragma: no cover - grammar rules it out


def lower_call(call: ast.Call) -> dict[str, Any]:
    """``f(a, k = v)`` -> ``{"callable": "f", "args": [a], "kwargs": {"k": v}}``."""
    return {
        "callable": call.func,
        "args": [lower_value(a) for a in call.args],
        "kwargs": {k.name: lower_value(k.value) for k in sorted(call.kwargs, key=lambda k: k.name)},
    }


def lower_expr(node: Any) -> Any:
    """An expression as JSON.

    * ``{"col": "x"}``, ``{"col": "confidence", "of": "churn_lr"}``
    * ``{"lit": 1}``
    * ``{"op": "and", "args": [...]}`` for and, or, not, neg, = != < <= > >=,
      + - * / %, in, between, like, is_null; ``"negated": true`` on the
      negatable ones
    * ``{"fn": "lower", "args": [...]}`` for scalar functions.
    """
    if isinstance(node, ast.Literal):
        return {"lit": lower_value(node)}
    if isinstance(node, ast.ColumnRef):
        return {"col": node.name, "of": node.qualifier} if node.qualifier else {"col": node.name}
    if isinstance(node, ast.Ident):
        return {"col": node.name}
    if isinstance(node, ast.Unary):
        return {"op": node.op, "args": [lower_expr(node.operand)]}
    if isinstance(node, ast.Binary):
        return {"op": node.op, "args": [lower_expr(node.left), lower_expr(node.right)]}
    if isinstance(node, ast.InList):
        args = [lower_expr(node.operand)] + [lower_expr(i) for i in node.items]
        return _negatable("in", args, node.negated)
    if isinstance(node, ast.Between):
        args = [lower_expr(node.operand), lower_expr(node.low), lower_expr(node.high)]
        return _negatable("between", args, node.negated)
    if isinstance(node, ast.Like):
        return _negatable(
            "like", [lower_expr(node.operand), lower_expr(node.pattern)], node.negated
        )
    if isinstance(node, ast.IsNull):
        return _negatable("is_null", [lower_expr(node.operand)], node.negated)
    if isinstance(node, ast.FuncCall):
        return {"fn": node.func.lower(), "args": [lower_expr(a) for a in node.args]}
    raise TypeError(f"not an expression: {node!r}")  # pragma: no cover


def _negatable(op: str, args: list, negated: bool) -> dict:
    out: dict[str, Any] = {"op": op, "args": args}
    if negated:
        out["negated"] = True
    return out


def _names(idents) -> tuple[str, ...]:
    return tuple(i.name for i in idents)


def _maybe(clause, attr: str, convert=lambda v: v):
    return convert(getattr(clause, attr)) if clause is not None else None


def lower_hints(stmt: ast.Statement) -> dict[str, str]:
    """HINTS as Beam resource hints: strings, with a bare accelerator expanded."""
    clause = stmt.get(ast.HintsClause)
    if clause is None:
        return {}
    hints: dict[str, str] = {}
    for kwarg in sorted(clause.hints, key=lambda k: k.name):
        value = kwarg.value
        # Beam parses sizes itself ('8GB', 512MB), so a size keeps its text.
        if isinstance(value, ast.Literal) and value.kind == "quantity":
            text = value.text
        else:
            text = str(lower_value(value))
        if kwarg.name == "accelerator" and ":" not in text:
            text = f"type:{text};count:1;install-nvidia-driver"
        hints[kwarg.name] = text
    return hints


# ---------------------------------------------------------------- statements


def _call(call: ast.Call) -> Call:
    return Call.from_json(lower_call(call))


def lower_Train(stmt: ast.Train, statements: Mapping[str, ast.Statement]) -> TrainConfig:
    features = stmt.get(ast.FeaturesClause)
    holdout = stmt.get(ast.HoldoutClause)
    encode = stmt.get(ast.EncodeClause)
    metrics = stmt.get(ast.MetricsClause)
    min_rows = stmt.get(ast.MinRowsClause)
    per = stmt.get(ast.PerClause)
    return TrainConfig(
        name=stmt.name.name,
        per=_names(per.columns) if per else (),
        where=_maybe(stmt.get(ast.WhereClause), "expr", lower_expr),
        features=None if features.star else _names(features.columns),
        features_except=_names(features.except_) if features.star else (),
        label=stmt.get(ast.LabelClause).column.name,
        estimator=_call(stmt.get(ast.UsingClause).call),
        encode={e.name.name: _names(e.columns) for e in encode.encoders} if encode else None,
        holdout=(
            percent_fraction(holdout.fraction.value, holdout.fraction.unit)
            if holdout
            else DEFAULT_HOLDOUT
        ),
        seed=holdout.seed if holdout and holdout.seed is not None else DEFAULT_SEED,
        metrics=_names(metrics.metrics) if metrics else (),
        min_rows=min_rows.count if min_rows else 1,
        gate=_maybe(stmt.get(ast.GateClause), "expr", lower_expr),
        save_to=stmt.get(ast.SaveClause).path.value,
        # TRAIN applies its hints to the fitting step only: hints on the whole
        # transform would stop Beam fusing the read into it (every row re-encoded).
        resource_hints=lower_hints(stmt),
    )


def lower_Model(stmt: ast.Model, statements: Mapping[str, ast.Statement]) -> ModelConfig:
    framework = stmt.get(ast.FrameworkClause)
    custom = stmt.get(ast.CustomClause)
    batch = stmt.get(ast.BatchClause)
    device = stmt.get(ast.DeviceClause)
    fallback = stmt.get(ast.FallbackClause)
    refresh = stmt.get(ast.RefreshClause)
    inputs = stmt.get(ast.InputClause)
    outputs = stmt.get(ast.OutputClause)
    per = stmt.get(ast.PerClause)
    trust = stmt.get(ast.TrustClause)
    classes = stmt.get(ast.ClassesClause)
    return ModelConfig(
        name=stmt.name.name,
        framework=framework.framework if framework else "custom",
        path=framework.path.value if framework else None,
        handler=_call(custom.call) if custom else None,
        model_class=_maybe(stmt.get(ast.ClassClause), "call", _call),
        call=_maybe(stmt.get(ast.CallClause), "call", _call),
        per=_names(per.columns) if per else (),
        fallback=(
            lower_Model(statements[fallback.model.name], statements) if fallback else None
        ),
        input=_names(inputs.columns) if inputs else None,
        output=_names(outputs.columns) if outputs else (stmt.name.name,),
        batch=Batch(
            min=batch.min_size,
            max=batch.max_size or batch.min_size,
            wait_s=_seconds(batch.wait),
        )
        if batch
        else Batch(),
        device=device.device.name.lower() if device else "cpu",
        shared=stmt.get(ast.SharedClause) is not None,
        refresh_s=_seconds(refresh.every) if refresh else None,
        trust=tuple(t.value for t in trust.types) if trust else (),
        classes=tuple(lower_value(c) for c in classes.labels) if classes else None,
        vouched=_vouched(framework.path.value if framework else None, statements),
    )


def _vouched(path: str | None, statements: Mapping[str, ast.Statement]) -> tuple[str, ...]:
    """The skops types a MODEL trusts because a TRAIN of the same pipeline writes its path
    with an estimator the spec names (see modelstore.vouched_types)."""
    found: set[str] = set()
    for stmt in statements.values():
        if isinstance(stmt, ast.Train) and stmt.get(ast.SaveClause).path.value == path:
            found.update(vouched_types(stmt.get(ast.UsingClause).call.func))
    return tuple(sorted(found))


def _ensemble_output(stmt: ast.Ensemble) -> Output | None:
    combine = stmt.get(ast.CombineClause)
    if combine is None:
        return None
    alias = combine.alias.name if combine.alias else stmt.name.name
    value = combine.value
    if isinstance(value, ast.Call):
        call = lower_call(value)
        return Output(value.func, tuple(call["args"]), call["kwargs"], alias)
    return Output("step", (value.dotted,), {}, alias)


def _ensemble_members(stmt: ast.Ensemble) -> set[str]:
    """Every MODEL an ENSEMBLE names, in any clause."""
    used = {step.model.name for step in stmt.all(ast.StepClause)}
    for clause, members in (
        (ast.SplitClause, lambda c: [a.model.name for a in c.arms]),
        (ast.ShadowClause, lambda c: [m.name for m in c.models]),
        (ast.CascadeClause, lambda c: [a.model.name for a in c.arms]),
        (ast.SwitchClause, lambda c: [k.model.name for k in c.cases]
            + ([c.default.name] if c.default else [])),
    ):
        found = stmt.get(clause)
        if found is not None:
            used.update(members(found))
    return used


def lower_Ensemble(stmt: ast.Ensemble, statements: Mapping[str, ast.Statement]) -> EnsembleConfig:
    split = stmt.get(ast.SplitClause)
    shadow = stmt.get(ast.ShadowClause)
    cascade = stmt.get(ast.CascadeClause)
    switch = stmt.get(ast.SwitchClause)
    return EnsembleConfig(
        name=stmt.name.name,
        models={
            n: lower_Model(statements[n], statements) for n in sorted(_ensemble_members(stmt))
        },
        steps=tuple(
            Step(s.name.name, s.model.name, None if s.star else tuple(a.dotted for a in s.args))
            for s in stmt.all(ast.StepClause)
        ),
        output=_ensemble_output(stmt),
        split=Split(
            _names(split.keys),
            tuple(
                Arm(a.model.name, percent_fraction(a.share.value, a.share.unit))
                for a in split.arms
            ),
        )
        if split
        else None,
        shadow=_names(shadow.models) if shadow else (),
        cascade=tuple(
            CascadeArm(a.model.name, lower_expr(a.when) if a.when is not None else None)
            for a in cascade.arms
        )
        if cascade
        else None,
        switch=Switch(
            tuple(Case(lower_expr(c.when), c.model.name) for c in switch.cases),
            switch.default.name if switch.default else None,
        )
        if switch
        else None,
    )


def _seconds(lit: ast.Literal | None) -> float | None:
    return duration_seconds(lit.value, lit.unit) if lit is not None else None


def _windows(stmt: ast.Features) -> tuple[Window, ...]:
    window = stmt.get(ast.WindowClause)
    if window is not None:
        size = _seconds(window.size)
        return (Window(window.kind, size, _seconds(window.every) if window.every else size),)
    # WINDOWS (1h, 1d, 7d): sliding windows of each length, all ending on
    # the grid of the shortest one, so one row per entity and end time
    # carries every length's features (suffixed _1h, _1d, _7d).
    sizes = [_seconds(size) for size in stmt.get(ast.WindowsClause).sizes]
    every = min(sizes)
    return tuple(Window("sliding", size, every, "_" + duration_suffix(size)) for size in sizes)


def lower_Features(stmt: ast.Features, statements: Mapping[str, ast.Statement]) -> FeaturesConfig:
    online = stmt.get(ast.OnlineClause)
    offline = stmt.get(ast.OfflineClause)
    return FeaturesConfig(
        name=stmt.name.name,
        entity=_names(stmt.get(ast.EntityClause).columns),
        timestamp=stmt.get(ast.TimestampClause).column.name,
        where=_maybe(stmt.get(ast.WhereClause), "expr", lower_expr),
        windows=_windows(stmt),
        select=tuple(
            Item(
                func=item.aggregate.func.name.lower(),
                args=(
                    ()
                    if item.aggregate.star
                    else tuple(lower_expr(a) for a in item.aggregate.args)
                ),
                alias=item.alias.name,
                filter=lower_expr(item.filter) if item.filter is not None else None,
            )
            for item in stmt.get(ast.SelectClause).items
        ),
        ttl_s=_seconds(_maybe(stmt.get(ast.TtlClause), "duration")),
        allowed_lateness_s=_seconds(_maybe(stmt.get(ast.LatenessClause), "duration")) or 0.0,
        online=online.uri.value if online else None,
        offline=offline.path.value if offline else None,
    )


def lower_Dataset(stmt: ast.Dataset, statements: Mapping[str, ast.Statement]) -> DatasetConfig:
    joined = stmt.get(ast.JoinClause).features
    return DatasetConfig(
        name=stmt.name.name,
        entity=_names(stmt.get(ast.EntityClause).columns),
        as_of=stmt.get(ast.AsOfClause).column.name,
        features={f.name: lower_Features(statements[f.name], statements) for f in joined},
    )


_LOWERERS = {name: globals()[f"lower_{name}"] for name in TRANSFORM_CLASSES}


def lower_spec(
    spec: ast.SpecFile, statements: Mapping[str, ast.Statement] | None = None
) -> list[TransformDef]:
    """Lowers every statement of a checked spec, in source order.

    ``statements`` holds every statement visible to the spec (all spec files
    of a pipeline), for FALLBACK, ENSEMBLE and DATASET references.
    """
    if statements is None:
        statements = {s.name.name: s for s in spec.statements}
    out = []
    for stmt in spec.statements:
        kind = type(stmt).__name__
        out.append(
            TransformDef(
                name=stmt.name.name,
                kind=kind,
                class_path=TRANSFORM_CLASSES[kind],
                config=_LOWERERS[kind](stmt, statements),
                # TRAIN's hints are its config's (see lower_Train).
                resource_hints={} if kind == "Train" else lower_hints(stmt),
                source=spec.path,
            )
        )
    return out
