"""DATASET's config (docs/IR.md, "DATASET")."""

from __future__ import annotations

from dataclasses import dataclass

from beam_dsl.ir import Config, runtime
from beam_dsl.ir.features import DEFAULT_SHARDS, FeaturesConfig

E_DATASET = "E446"  # a DATASET's inputs or a config the checks did not see

ROWS_INPUT = "rows"  # the labelled rows' input; each joined set's input is named after it


def expired_column(features: str) -> str:
    """The column saying that a joined set's features expired (sets with a TTL)."""
    return f"{features}_expired"


@dataclass(frozen=True, kw_only=True)
class DatasetConfig(Config):
    """One DATASET: the point-in-time join of labelled rows with FEATURES outputs.

    ``features`` holds the config of each joined FEATURES statement, by name
    and in JOIN order, so the join knows each set's windows, TTL and empty
    values. ``shards`` (a run-time option) is how many keys the entities are
    hashed to for the shuffle.
    """

    KIND = "DATASET"

    entity: tuple[str, ...]
    as_of: str
    features: dict[str, FeaturesConfig]
    shards: int = runtime(DEFAULT_SHARDS)

    def validate(self) -> None:
        """The rules lint checks, for a config built from Python (E446)."""
        if not self.entity or len(set(self.entity)) != len(self.entity):
            raise self.error(E_DATASET, f"ENTITY {list(self.entity)} must name distinct columns")
        if not self.features:
            raise self.error(E_DATASET, "DATASET joins no FEATURES")
        if self.shards < 1:
            raise self.error(E_DATASET, f"shards must be at least 1, not {self.shards}")
        owners = {c: "an ENTITY column" for c in self.entity}
        owners[self.as_of] = "the AS OF column"
        for name, config in self.features.items():
            if config.name != name:
                raise self.error(E_DATASET, f"the FEATURES config under '{name}' is named "
                                 f"'{config.name}'")
            config.validate()
            if len(config.entity) != len(self.entity):
                raise self.error(E_DATASET, f"ENTITY has {len(self.entity)} column(s); "
                                 f"FEATURES {name} is keyed by {len(config.entity)}")
            columns = config.feature_names()
            if config.ttl_s is not None:
                columns.append(expired_column(name))
            for column in columns:
                if column in owners:
                    raise self.error(E_DATASET, f"column '{column}' of {name} clashes with "
                                     f"{owners[column]}", "rename it with AS")
                owners[column] = f"a column of {name}"
