"""TRAIN's config (docs/IR.md, "TRAIN")."""

from __future__ import annotations

from dataclasses import dataclass

from beam_dsl.ir import Call, Config, Expr, optional, runtime


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
    fit_threads: int = runtime(0)
