"""TRAIN's config (docs/IR.md, "TRAIN") and the rules between its fields.

The rules that need no estimator (so no scikit-learn) are
:meth:`TrainConfig.validate` (E433); lint states the same rules with source
positions (:mod:`beam_dsl.dsl.checks.train`) through the helpers here. The
rules that need the estimator (classifier or regressor, metrics of its task)
are the transform's (E431/E432).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from beam_dsl.ir import Call, Config, Expr, optional, runtime
from beam_dsl.transforms.training import encoders
from beam_dsl.transforms.training import metrics as metric_family

E_TRAIN = "E433"

# TRAIN's own columns on ``main`` / ``skipped``, beside the PER columns and the metrics.
ROW_COUNTS = ("rows", "train_rows", "holdout_rows")
OUTPUT_COLUMNS = (*ROW_COUNTS, "model_uri", "promoted", "reason")


def gate_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """The names GATE may read: the metrics (without METRICS, each task's default, as
    the task is the estimator's) and the row counts."""
    return (*(tuple(metrics) or metric_family.defaults()), *ROW_COUNTS)


def save_path_problem(path: str) -> str | None:
    """Why TRAIN cannot write its models at the SAVE TO ``path``, or None.

    The suffix picks the format; a ``..`` after ``{key}`` would put a key's model
    outside the folder the template names (or onto another key's file).
    """
    from beam_dsl.transforms.training.modelstore import PICKLE_SUFFIXES, SKOPS_SUFFIXES

    suffixes = SKOPS_SUFFIXES + PICKLE_SUFFIXES
    if not path.endswith(suffixes):
        return f"SAVE TO '{path}' names no model format: end it with {', '.join(suffixes)}"
    segments = re.split(r"[\\/]", path)
    keyed = next((i for i, s in enumerate(segments) if "{key}" in s), len(segments))
    if ".." in segments[keyed + 1:]:
        return f"SAVE TO '{path}' has '..' after {{key}}: keys would leave its folder or collide"
    if keyed < len(segments) and (keyed == 0 or not segments[keyed].startswith("{key}")):
        # A run publishes the folder before {key} as a whole (modelstore.py).
        return (
            f"SAVE TO '{path}' must start a name with {{key}} inside a folder of its own, "
            "as in 'models/income/{key}.skops': a run publishes that folder as a whole"
        )
    return None


@dataclass(frozen=True)
class TrainConfig(Config):
    """One TRAIN statement: what :class:`~beam_dsl.transforms.training.TrainModels` builds."""

    KIND = "TRAIN"

    per: tuple[str, ...]
    where: Expr | None
    features: tuple[str, ...] | None
    features_except: tuple[str, ...]
    label: str
    estimator: Call
    encode: dict[str, tuple[str, ...]] | None
    holdout: float
    seed: int
    metrics: tuple[str, ...]
    min_rows: int
    gate: Expr | None
    save_to: str
    resource_hints: dict[str, str] = optional(default_factory=dict)
    fit_workers: int = runtime(0)

    def validate(self) -> None:
        """The rules lint checks, for a config built from Python or a hand-edited file."""
        problem = (
            self._save_to_problem()
            or self._encode_problem()
            or self._metrics_problem()
            or self._gate_problem()
            or self._columns_problem()
        )
        if problem:
            raise self.error(E_TRAIN, *problem)
        if not 0 <= self.holdout < 1:
            raise self.error(E_TRAIN, f"HOLDOUT {self.holdout} is not in [0, 1)")
        if self.min_rows < 1:
            raise self.error(E_TRAIN, f"MIN ROWS {self.min_rows} is not at least 1")
        if self.fit_workers < 0:
            raise self.error(E_TRAIN, f"fit_workers {self.fit_workers} is negative",
                             hint="0 leaves it to the run (--workers; default: every core)")

    # Each returns (message, hint) for the first problem it finds, or None.

    def _save_to_problem(self) -> tuple[str, str | None] | None:
        if ("{key}" in self.save_to) != bool(self.per):
            needs = "needs {key}, since TRAIN has PER" if self.per else (
                "has {key}, but TRAIN has no PER")
            return f"SAVE TO '{self.save_to}' {needs}", None
        problem = save_path_problem(self.save_to)
        return (problem, None) if problem else None

    def _encode_problem(self) -> tuple[str, str | None] | None:
        seen: dict[str, str] = {}
        for encoder, columns in (self.encode or {}).items():
            if encoder not in encoders.REGISTRY:
                return f"unknown encoder '{encoder}'", f"encoders: {', '.join(encoders.names())}"
            for column in columns:
                if column in seen:
                    return f"ENCODE names '{column}' twice ({seen[column]} and {encoder})", None
                seen[column] = encoder
        if self.features is not None:
            outside = [c for c in seen if c not in self.features]
            if outside:
                return f"ENCODE names '{outside[0]}', which is not a feature", None
        return None

    def _metrics_problem(self) -> tuple[str, str | None] | None:
        for metric in self.metrics:
            if metric not in metric_family.REGISTRY:
                return f"unknown metric '{metric}'", f"metrics: {', '.join(metric_family.names())}"
        mixed = mixed_metrics(self.metrics)
        return (mixed, None) if mixed else None

    def _gate_problem(self) -> tuple[str, str | None] | None:
        from beam_dsl.transforms.common.expr import columns_of

        allowed = gate_names(self.metrics)
        for name in sorted(columns_of(self.gate)):
            if name not in allowed:
                return (f"GATE reads '{name}', which is not a metric of this TRAIN",
                        f"GATE can read {', '.join(allowed)}")
        return None

    def _columns_problem(self) -> tuple[str, str | None] | None:
        if self.features is not None and self.label in self.features:
            return f"the label '{self.label}' is also a feature", None
        clash = [c for c in self.per if c in per_clashes(self.metrics)]
        if clash:
            return f"PER column '{clash[0]}' clashes with an output column of TRAIN", None
        return None


def mixed_metrics(metrics: Sequence[str]) -> str | None:
    """Why ``metrics`` cannot go together (they are of two tasks), or None."""
    tasks = metric_family.tasks_of(metrics)
    if len(tasks) < 2:
        return None
    listed = " and ".join(
        f"{task} ({', '.join(m for m in metrics if m in metric_family.names(task))})"
        for task in tasks
    )
    return f"METRICS mixes {listed} metrics; a model is scored as one or the other"


def per_clashes(metrics: Sequence[str]) -> tuple[str, ...]:
    """The names a PER column may not have: TRAIN's own output columns and the metrics
    (without METRICS, each task's default)."""
    return (*OUTPUT_COLUMNS, *(tuple(metrics) or metric_family.defaults()))
