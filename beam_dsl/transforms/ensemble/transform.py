"""ENSEMBLE: several MODELs behind one Beam transform (LANGUAGE.md section 3).

:class:`RunEnsemble` is built from an :class:`~beam_dsl.ir.ensemble.EnsembleConfig`
and runs its :class:`~beam_dsl.transforms.ensemble.plan.EnsemblePlan` over
frames of rows: the config's form (:mod:`~beam_dsl.transforms.ensemble.forms`:
STEPs with an OUTPUT combiner, SPLIT, CASCADE or SWITCH) and its SHADOW
models. Each model loads once per worker, through the predictors MODEL uses.

Outputs (docs/ENSEMBLES.md lists their columns):

* ``main``: the input fields, the result and each member's answer and provenance;
* ``shadow``: the SHADOW models' answers beside the served one;
* ``errors``: rows a member rejected or the combiner could not combine, as
  ``row`` (the input fields as JSON), ``reason`` and ``transform``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import pandas as pd

from beam_dsl.ir.ensemble import EnsembleConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    conform_to_schema,
    error_rows,
    frame_rows,
    row_maker,
    row_type,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import FrameOutputs
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.ensemble.plan import EnsemblePlan

E_INPUT = "E452"  # input rows without a schema, or fields the outputs would overwrite


class _Ensemble:
    """An :class:`EnsemblePlan` at work on frames of rows, with its models loaded.

    Yields ``(tag, row)`` pairs, which ``runner_compat.FrameOutputs`` turns into Beam
    outputs.
    """

    def __init__(self, plan: EnsemblePlan, fields: Mapping[str, Any], allow_pickle: bool):
        self.plan = plan
        self.fields = dict(fields)
        self.max_rows = plan.max_rows()
        self.allow_pickle = allow_pickle
        self.main_fields = [*fields.items(), *plan.result_types()]
        self.shadow_fields = [*fields.items(), *plan.shadow_types()]

    def setup(self) -> None:
        from beam_dsl.transforms.inference.predictors import build_predictor

        self.predictors = {
            m: build_predictor(self.plan.models[m], allow_pickle=self.allow_pickle)
            for m in self.plan.model_names()
        }
        self.make_main = row_maker(self.main_fields)
        self.make_shadow = row_maker(self.shadow_fields)
        threads = self.plan.form.threads()
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def teardown(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown()

    def outputs(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        # Frames from a reader can be larger than the models' BATCH maximum.
        for start in range(0, len(frame), self.max_rows):
            chunk = frame.iloc[start : start + self.max_rows].reset_index(drop=True)
            typed, unfit = conform_to_schema(chunk, self.fields)
            unfit = unfit.dropna()
            main, rejected, shadow = self.plan.run(
                typed.drop(index=unfit.index), self.predictors, self.pool
            )
            for row in frame_rows(main, [n for n, _ in self.main_fields], self.make_main):
                yield "main", row
            errors = pd.concat([unfit, rejected])
            for row in error_rows(chunk.loc[errors.index], errors, self.plan.name):
                yield "errors", row
            if shadow is not None:
                for row in frame_rows(shadow, [n for n, _ in self.shadow_fields], self.make_shadow):
                    yield "shadow", row


class RunEnsemble(SpecTransform):
    """Runs an ENSEMBLE of MODELs: steps with a combiner, or a SPLIT, CASCADE or SWITCH.

    Built from an :class:`~beam_dsl.ir.ensemble.EnsembleConfig` (docs/IR.md);
    docs/ENSEMBLES.md describes the outputs and their columns.
    """

    config_class = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.plan = EnsemblePlan(self.config)

    def expand(self, pcoll: beam.PCollection) -> dict[str, beam.PCollection]:
        fields = schema_fields(pcoll.element_type)
        if fields is None:
            raise self.config.error(
                E_INPUT, f"needs rows with a schema (beam.Row); got {pcoll.element_type}"
            )
        clash = {c for c, _ in self.plan.result_types() + self.plan.shadow_types()} & set(fields)
        if clash:
            raise self.config.error(
                E_INPUT,
                f"would overwrite input fields {sorted(clash)}",
                "rename them or the ENSEMBLE's outputs",
            )
        ensemble = _Ensemble(self.plan, fields, self.config.allow_pickle)
        outputs = pcoll | "Ensemble" >> FrameOutputs(
            ensemble, list(fields), ensemble.max_rows, ("main", "errors", "shadow"))
        main, errors, shadow = outputs["main"], outputs["errors"], outputs["shadow"]
        main.element_type = row_type(ensemble.main_fields)
        errors.element_type = ERROR_ROW_TYPE
        shadow.element_type = row_type(ensemble.shadow_fields)
        return {"main": main, "errors": errors, "shadow": shadow}
