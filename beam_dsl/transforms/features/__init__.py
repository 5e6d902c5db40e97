"""FEATURES and DATASET: windows over panes, aggregates, online and offline stores, "as of T"."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "ComputeFeatures":
        from beam_dsl.transforms.features.transform import ComputeFeatures

        return ComputeFeatures
    if name == "BuildDataset":
        from beam_dsl.transforms.features.dataset import BuildDataset

        return BuildDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
