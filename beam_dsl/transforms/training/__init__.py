"""TRAIN: per-key training, metrics, encoders and the model store."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "TrainModels":
        from beam_dsl.transforms.training.transform import TrainModels

        return TrainModels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
