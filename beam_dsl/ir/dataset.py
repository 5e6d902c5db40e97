"""DATASET's config (docs/IR.md, "DATASET")."""

from __future__ import annotations

from dataclasses import dataclass

from beam_dsl.ir import Config
from beam_dsl.ir.features import FeaturesConfig


@dataclass(frozen=True)
class DatasetConfig(Config):
    """One DATASET: the point-in-time join of labelled rows with FEATURES outputs.

    ``features`` holds the config of each joined FEATURES statement, by name
    and in JOIN order, so the join knows each set's windows, TTL and empty values.
    """

    KIND = "DATASET"

    entity: tuple[str, ...]
    as_of: str
    features: dict[str, FeaturesConfig]
