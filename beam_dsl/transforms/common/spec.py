"""The base of every transform a spec statement compiles to."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

import apache_beam as beam

from beam_dsl.ir import Config


class SpecTransform(beam.PTransform):
    """A PTransform built from one typed IR config (:mod:`beam_dsl.ir`).

    Beam YAML calls ``Class(**config)`` with the compiled file's ``config:``;
    :meth:`Config.from_json` checks it once, with coded errors, and the
    transform reads ``self.config`` and nothing else. Subclasses name their
    config class; the constructor's signature (which Beam YAML shows in its
    docs) is derived from the config's fields.
    """

    config_class: ClassVar[type[Config]]

    def __init__(self, **config: Any):
        self.config = self.config_class.from_json(config)
        super().__init__(label=self.config.name)
        self.name = self.config.name  # the declared name, for run summaries

    @classmethod
    def from_config(cls, config: Config) -> SpecTransform:
        """The transform for an already-built config (from Python)."""
        return cls(**config.to_json())

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        config_class = cls.__dict__.get("config_class")
        if config_class is not None:
            parameters = [
                inspect.Parameter(
                    f.metadata.get("json", f.name),
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=f.type,
                    default=(
                        f.default
                        if f.default is not dataclasses.MISSING
                        else inspect.Parameter.empty
                    ),
                )
                for f in dataclasses.fields(config_class)
            ]
            cls.__signature__ = inspect.Signature(parameters)
