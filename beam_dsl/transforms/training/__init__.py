"""TRAIN: per-key training, metrics, encoders and the model store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beam_dsl.transforms.training import modelstore

if TYPE_CHECKING:  # beam_dsl.ir.train imports this package
    from beam_dsl.ir.train import TrainConfig


def worker_modules(config: TrainConfig) -> tuple[str, ...]:
    """What fitting a TRAIN's keys imports: a worker process's fork server loads it once
    for all workers (:mod:`beam_dsl.transforms.common.workers`)."""
    estimator = config.estimator.callable.rpartition(".")[0]
    return ("beam_dsl.transforms.training.fit", "sklearn.compose", "sklearn.pipeline",
            "sklearn.preprocessing", "sklearn.metrics", estimator,
            *modelstore.format_modules(config.save_to))


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "TrainModels":
        from beam_dsl.transforms.training.transform import TrainModels

        return TrainModels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
