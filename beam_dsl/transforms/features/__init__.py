"""FEATURES: windows over panes, aggregates, online and offline stores."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "ComputeFeatures":
        from beam_dsl.transforms.features.transform import ComputeFeatures

        return ComputeFeatures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
