"""ENSEMBLE: steps, forms (SPLIT, CASCADE, SWITCH) and combiners."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "RunEnsemble":
        from beam_dsl.transforms.ensemble.transform import RunEnsemble

        return RunEnsemble
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
