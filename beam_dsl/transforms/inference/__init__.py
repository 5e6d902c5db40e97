"""MODEL: batched inference, predictors and the model frameworks."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "RunModel":
        from beam_dsl.transforms.inference.transform import RunModel

        return RunModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
