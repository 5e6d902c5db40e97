"""The run-time logic of one ENSEMBLE over pandas frames, without Beam."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from beam_dsl.ir.ensemble import EnsembleConfig
from beam_dsl.transforms.ensemble.batch import Batch, nulls_as_none
from beam_dsl.transforms.ensemble.forms import STR, form_of, member_fields


class EnsemblePlan:
    """An ENSEMBLE's form, its SHADOW models and the columns they give.

    ``run(frame, predictors)`` returns the main frame (rows served), the
    errors (index -> reason) and the shadow frame (None without SHADOW).
    """

    def __init__(self, config: EnsembleConfig):
        self.config = config
        self.name = config.name
        self.models = config.models
        self.form = form_of(config)
        self.shadow = config.shadow
        # SHADOW models are there to be compared with the answer: they score too.
        self.scored = self.form.scored() | frozenset(self.shadow)

    def model_names(self) -> list[str]:
        """Every model the ensemble loads, once each."""
        return list(dict.fromkeys([m for _, m in self.form.members()] + list(self.shadow)))

    def max_rows(self) -> int:
        """Rows per batch: one frame feeds every member, so the smallest BATCH maximum."""
        return min(self.models[m].batch.max for m in self.model_names())

    def result_types(self) -> list[tuple[str, Any]]:
        """The main output's columns after the input fields, with their types."""
        out = self.form.result_types()
        for member, model in self.form.members():
            out += member_fields(member, self.models[model])
        return out

    def shadow_types(self) -> list[tuple[str, Any]]:
        out = self.form.shadow_types()
        for model in self.shadow:
            out += [*member_fields(model, self.models[model]), (f"{model}_error", STR)]
        return out

    def run(
        self,
        frame: pd.DataFrame,
        predictors: Mapping[str, Any],
        pool: ThreadPoolExecutor | None = None,
    ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame | None]:
        """One batch: (main frame, reasons of rejected rows by index, shadow frame or None).

        Raises E451 if the members that must answer alike do not.
        """
        batch = Batch(self.name, frame, predictors, self.models, self.scored)
        columns = self.form.answer(batch, pool)
        main = batch.output(batch.alive(), columns, self.form.members())
        shadow = self._run_shadow(batch, main) if self.shadow else None
        batch.check_alike([*self.form.alike(), *self.shadow])
        return main, batch.errors.dropna(), shadow

    def _run_shadow(self, batch: Batch, main: pd.DataFrame) -> pd.DataFrame:
        rows = main.index
        columns = {name: main[name] for name, _ in self.form.shadow_types()}
        for model in self.shadow:
            result = batch.predict(model, model, batch.rows(rows)) if len(rows) else None
            batch.record(model, model, result, reject=False)
        shadow = batch.output(rows, columns, [(m, m) for m in self.shadow])
        for model in self.shadow:
            shadow[f"{model}_error"] = nulls_as_none(batch.column(model, "error", rows))
        return shadow
