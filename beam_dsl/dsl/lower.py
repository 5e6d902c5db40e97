"""Checked AST -> IR: one :class:`TransformDef` per statement.

The IR is what the compiled Beam YAML carries: for each declared name, the
beam_dsl PTransform class that implements it and the JSON-able keyword
arguments of that class (its ``config``), plus Beam resource hints. The
keyword arguments are the contract between this compiler and
``beam_dsl.transforms``; docs/IR.md lists them.

Lowering assumes checks.py passed: names resolve and literals are valid.
Each statement kind has one ``lower_<Class>`` function; expressions lower to
JSON (see :func:`lower_expr`) that ``beam_dsl.transforms.expr`` evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beam_dsl.dsl import ast
from beam_dsl.dsl.units import (
    duration_seconds,
    duration_suffix,
    percent_fraction,
    size_bytes,
)

TRANSFORM_CLASSES = {
    "Train": "beam_dsl.transforms.training.TrainModels",
    "Model": "beam_dsl.transforms.inference.RunModel",
    "Ensemble": "beam_dsl.transforms.ensemble.RunEnsemble",
    "Features": "beam_dsl.transforms.features.ComputeFeatures",
}

DEFAULT_HOLDOUT = 0.2
DEFAULT_SEED = 0


@dataclass(frozen=True)
class TransformDef:
    """One declared name, ready for codegen."""

    name: str
    kind: str  # Train | Model | Ensemble | Features
    class_path: str
    config: dict[str, Any]
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


def _names(idents) -> list[str]:
    return [i.name for i in idents]


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


def lower_Train(stmt: ast.Train, models: dict[str, ast.Model]) -> dict[str, Any]:
    features = stmt.get(ast.FeaturesClause)
    holdout = stmt.get(ast.HoldoutClause)
    encode = stmt.get(ast.EncodeClause)
    metrics = stmt.get(ast.MetricsClause)
    min_rows = stmt.get(ast.MinRowsClause)
    return {
        "name": stmt.name.name,
        "per": _names(stmt.get(ast.PerClause).columns) if stmt.get(ast.PerClause) else [],
        "where": _maybe(stmt.get(ast.WhereClause), "expr", lower_expr),
        "features": None if features.star else _names(features.columns),
        "features_except": _names(features.except_) if features.star else [],
        "label": stmt.get(ast.LabelClause).column.name,
        "estimator": lower_call(stmt.get(ast.UsingClause).call),
        "encode": ({e.name.name: _names(e.columns) for e in encode.encoders} if encode else None),
        "holdout": (
            percent_fraction(holdout.fraction.value, holdout.fraction.unit)
            if holdout
            else DEFAULT_HOLDOUT
        ),
        "seed": holdout.seed if holdout and holdout.seed is not None else DEFAULT_SEED,
        "metrics": _names(metrics.metrics) if metrics else [],
        "min_rows": min_rows.count if min_rows else 1,
        "gate": _maybe(stmt.get(ast.GateClause), "expr", lower_expr),
        "save_to": stmt.get(ast.SaveClause).path.value,
    }


def _model_config(stmt: ast.Model, models: dict[str, ast.Model]) -> dict[str, Any]:
    framework = stmt.get(ast.FrameworkClause)
    custom = stmt.get(ast.CustomClause)
    batch = stmt.get(ast.BatchClause)
    device = stmt.get(ast.DeviceClause)
    fallback = stmt.get(ast.FallbackClause)
    refresh = stmt.get(ast.RefreshClause)
    inputs = stmt.get(ast.InputClause)
    outputs = stmt.get(ast.OutputClause)
    per = stmt.get(ast.PerClause)
    return {
        "name": stmt.name.name,
        "framework": framework.framework if framework else "custom",
        "path": framework.path.value if framework else None,
        "handler": lower_call(custom.call) if custom else None,
        "model_class": _maybe(stmt.get(ast.ClassClause), "call", lower_call),
        "call": _maybe(stmt.get(ast.CallClause), "call", lower_call),
        "per": _names(per.columns) if per else [],
        "fallback": (_model_config(models[fallback.model.name], models) if fallback else None),
        "input": _names(inputs.columns) if inputs else None,
        "output": _names(outputs.columns) if outputs else [stmt.name.name],
        "batch": {
            "min": batch.min_size if batch else 1,
            "max": (batch.max_size or batch.min_size) if batch else 1024,
            "wait_s": (
                duration_seconds(batch.wait.value, batch.wait.unit)
                if batch and batch.wait
                else None
            ),
        },
        "device": device.device.name.lower() if device else "cpu",
        "shared": stmt.get(ast.SharedClause) is not None,
        "refresh_s": (
            duration_seconds(refresh.every.value, refresh.every.unit) if refresh else None
        ),
    }


def lower_Model(stmt: ast.Model, models: dict[str, ast.Model]) -> dict[str, Any]:
    return _model_config(stmt, models)


def lower_Ensemble(stmt: ast.Ensemble, models: dict[str, ast.Model]) -> dict[str, Any]:
    used: set[str] = set()
    steps = []
    for step in stmt.all(ast.StepClause):
        used.add(step.model.name)
        steps.append(
            {
                "name": step.name.name,
                "model": step.model.name,
                "args": None if step.star else [a.dotted for a in step.args],
            }
        )
    combine = stmt.get(ast.CombineClause)
    output = None
    if combine is not None:
        value = combine.value
        if isinstance(value, ast.Call):
            output = {
                "combiner": value.func,
                **{k: v for k, v in lower_call(value).items() if k != "callable"},
            }
        else:
            output = {"combiner": "step", "args": [value.dotted], "kwargs": {}}
        output["as"] = combine.alias.name if combine.alias else stmt.name.name
    split = stmt.get(ast.SplitClause)
    if split:
        used.update(a.model.name for a in split.arms)
    shadow = stmt.get(ast.ShadowClause)
    if shadow:
        used.update(m.name for m in shadow.models)
    cascade = stmt.get(ast.CascadeClause)
    if cascade:
        used.update(a.model.name for a in cascade.arms)
    switch = stmt.get(ast.SwitchClause)
    if switch:
        used.update(c.model.name for c in switch.cases)
        if switch.default:
            used.add(switch.default.name)
    return {
        "name": stmt.name.name,
        "models": {name: _model_config(models[name], models) for name in sorted(used)},
        "steps": steps,
        "output": output,
        "split": (
            {
                "keys": _names(split.keys),
                "arms": [
                    {"model": a.model.name, "share": percent_fraction(a.share.value, a.share.unit)}
                    for a in split.arms
                ],
            }
            if split
            else None
        ),
        "shadow": _names(shadow.models) if shadow else [],
        "cascade": (
            [
                {"model": a.model.name, "when": lower_expr(a.when) if a.when is not None else None}
                for a in cascade.arms
            ]
            if cascade
            else None
        ),
        "switch": (
            {
                "cases": [
                    {"when": lower_expr(c.when), "model": c.model.name} for c in switch.cases
                ],
                "default": switch.default.name if switch.default else None,
            }
            if switch
            else None
        ),
    }


def _seconds(lit: ast.Literal | None) -> float | None:
    return duration_seconds(lit.value, lit.unit) if lit is not None else None


def lower_Features(stmt: ast.Features, models: dict[str, ast.Model]) -> dict[str, Any]:
    window = stmt.get(ast.WindowClause)
    windows = stmt.get(ast.WindowsClause)
    select = stmt.get(ast.SelectClause)
    online = stmt.get(ast.OnlineClause)
    offline = stmt.get(ast.OfflineClause)
    if window is not None:
        lowered_windows = [
            {
                "kind": window.kind,
                "size_s": _seconds(window.size),
                "every_s": _seconds(window.every) if window.every else _seconds(window.size),
                "suffix": "",
            }
        ]
    else:
        # WINDOWS (1h, 1d, 7d): sliding windows of each length, all ending on
        # the grid of the shortest one, so one row per entity and end time
        # carries every length's features (suffixed _1h, _1d, _7d).
        every = min(_seconds(size) for size in windows.sizes)
        lowered_windows = [
            {
                "kind": "sliding",
                "size_s": _seconds(size),
                "every_s": every,
                "suffix": "_" + duration_suffix(_seconds(size)),
            }
            for size in windows.sizes
        ]
    return {
        "name": stmt.name.name,
        "entity": _names(stmt.get(ast.EntityClause).columns),
        "timestamp": stmt.get(ast.TimestampClause).column.name,
        "where": _maybe(stmt.get(ast.WhereClause), "expr", lower_expr),
        "windows": lowered_windows,
        "select": [
            {
                "func": item.aggregate.func.name.lower(),
                "args": [] if item.aggregate.star else [lower_expr(a) for a in item.aggregate.args],
                "filter": lower_expr(item.filter) if item.filter is not None else None,
                "alias": item.alias.name,
            }
            for item in select.items
        ],
        "ttl_s": _seconds(_maybe(stmt.get(ast.TtlClause), "duration")),
        "allowed_lateness_s": _seconds(_maybe(stmt.get(ast.LatenessClause), "duration")) or 0.0,
        "online": online.uri.value if online else None,
        "offline": offline.path.value if offline else None,
    }


_LOWERERS = {name: globals()[f"lower_{name}"] for name in TRANSFORM_CLASSES}


def lower_spec(
    spec: ast.SpecFile, models: dict[str, ast.Model] | None = None
) -> list[TransformDef]:
    """Lowers every statement of a checked spec, in source order.

    ``models`` holds every MODEL visible to the spec (all spec files of a
    pipeline), for FALLBACK and ENSEMBLE references.
    """
    if models is None:
        models = {s.name.name: s for s in spec.statements if isinstance(s, ast.Model)}
    out = []
    for stmt in spec.statements:
        kind = type(stmt).__name__
        config = _LOWERERS[kind](stmt, models)
        hints = lower_hints(stmt)
        if kind == "Train" and hints:
            # TRAIN applies its hints to the fitting step only: hints on the whole
            # transform would stop Beam fusing the read into it (every row re-encoded).
            config["resource_hints"], hints = hints, {}
        out.append(
            TransformDef(
                name=stmt.name.name,
                kind=kind,
                class_path=TRANSFORM_CLASSES[kind],
                config=config,
                resource_hints=hints,
                source=spec.path,
            )
        )
    return out
