"""MODEL as a Beam transform: :class:`RunModel` (LANGUAGE.md section 2).

RunModel works on pandas frames, as ENSEMBLE does
(:class:`~beam_dsl.transforms.common.runner_compat.FrameOutputs`): a reader's
chunks come in as frames (rows that come one by one are gathered into
frames), each slice of up to BATCH max rows is checked
against the input schema, the predictor answers the whole slice at once, and
the output rows are built column-wise as Beam's NamedTuple of the output
schema. The model loads once per worker process (``SHARED``: once per
machine, through Beam's ``MultiProcessShared``); side-input model updates
(``REFRESH EVERY``, or a ``model_updates`` input) swap it, as in Beam's
RunInference.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.ml.inference.utils import WatchFilePattern
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.util import WaitOn
from apache_beam.utils import multi_process_shared, shared

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    error_rows,
    fitting_rows,
    frame_rows,
    optional,
    row_maker,
    row_type,
    schema_fields,
    slices,
)
from beam_dsl.transforms.common.runner_compat import FrameOutputs, runs_batches
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.inference.base import E_INPUT_MISSING, Predictor, configured_path
from beam_dsl.transforms.inference.predictors import build_predictor

_LOG = logging.getLogger(__name__)


def _load(config: ModelConfig) -> Predictor:
    return build_predictor(config, config.allow_pickle)


class _Model:
    """A MODEL at work on frames of rows, with its model loaded.

    ``outputs(frame)`` yields ``("main" | "errors", row)`` pairs, which
    ``runner_compat.FrameOutputs`` turns into Beam outputs.

    Args:
        config: the MODEL's config.
        fields: the input rows' fields (name -> type), in schema order.
        out_fields: the main output's fields, in schema order.
    """

    def __init__(
        self, config: ModelConfig, fields: Mapping[str, Any], out_fields: list[tuple[str, Any]]
    ):
        self.config = config
        self.fields = dict(fields)
        self.max_rows = config.batch.max
        self.out_fields = out_fields
        self.kept = [c for c in fields if c not in config.outputs]  # OUTPUT replaces a field
        self.added = [n for n, _ in out_fields[len(self.kept):]]
        self._handle = shared.Shared()  # one model per process for every thread's DoFn

    def setup(self) -> None:
        self.make = row_maker(self.out_fields)
        self.path = self.config.path
        self.predictor = self._acquire(self.config)

    def teardown(self) -> None:
        pass

    def _acquire(self, config: ModelConfig) -> Predictor:
        """The loaded model of ``config``, shared by the process (SHARED: by the machine)."""
        tag = f"beam_dsl.{config.name}." + hashlib.sha256(
            json.dumps(config.to_json(), sort_keys=True).encode()).hexdigest()
        load = functools.partial(_load, config)
        if config.shared:
            return multi_process_shared.MultiProcessShared(load, tag, always_proxy=True).acquire()
        return self._handle.acquire(load, tag)

    def use(self, update: Any) -> None:
        """Swaps in the model a side-input update names (a newer file), once."""
        if isinstance(update, ModelMetadata) and update.model_id and update.model_id != self.path:
            self.path = update.model_id
            self.predictor = self._acquire(dataclasses.replace(self.config, path=self.path))

    def outputs(self, frame: pd.DataFrame, update: Any = None) -> Iterator[tuple[str, Any]]:
        """Each row's output; ``update``: the model update of the frame's window (a side
        input), if any."""
        self.use(update)
        for chunk in slices(frame, self.max_rows):
            fitting, unfit = fitting_rows(chunk, self.fields)
            answered, rejected = self._predict(fitting)
            for row in frame_rows(answered, [*self.kept, *self.added], self.make):
                yield "main", row
            errors = pd.concat([unfit, rejected]) if len(unfit) else rejected
            for row in error_rows(chunk.loc[errors.index], errors, self.config.name):
                yield "errors", row

    def _predict(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """The rows the model answered (input fields and answers), and why it did not
        answer the others. A prediction that raises fails its whole slice."""
        if not len(rows):
            return rows, pd.Series(dtype=object)
        try:
            result = self.predictor.predict(rows, scores=False)
        except Exception as exc:  # noqa: BLE001 - the slice's rows become error rows
            return rows.iloc[:0], pd.Series(f"inference failed: {exc}", index=rows.index)
        failed = result["error"].notna().to_numpy()
        answers = result[self.added]
        if failed.any():
            rows, answers = rows[~failed], answers[~failed]
        answered = pd.concat([rows[self.kept], answers], axis=1) if self.kept else answers
        return answered, result["error"][failed]


class RunModel(SpecTransform):
    """Runs a MODEL over rows: one prediction per row, plus provenance.

    Built from a :class:`~beam_dsl.ir.model.ModelConfig` (docs/IR.md, "MODEL").
    Output ``main``: each input row's fields, the OUTPUT field(s), ``model_id``
    (``path@sha256[:12]`` of the model that answered) and, for PER models,
    ``model_key`` (the key whose model answered; the fallback's ``model_id``
    where the fallback did). Output ``errors``: rows the model rejected or no
    model serves, with the reason. The input may also be a dict: ``input`` (the
    rows), ``model_updates`` (optional: Beam ``ModelMetadata`` whose
    ``model_id`` is a new model path; it replaces REFRESH's file watch), and
    any other names: PCollections to wait for before scoring, such as the
    output of a TRAIN in the same pipeline that writes the models.
    """

    config_class = ModelConfig
    config: ModelConfig

    def expand(self, pcoll: beam.PCollection | Mapping[str, beam.PCollection]):
        config = self.config
        inputs = dict(pcoll) if isinstance(pcoll, Mapping) else {"input": pcoll}
        pcoll = inputs.pop("input")
        updates = inputs.pop("model_updates", None)
        fields = schema_fields(pcoll.element_type)
        if fields is None:
            raise config.error(
                E_INPUT_MISSING,
                "RunModel needs schema'd rows (beam.Row), "
                f"not elements of type {pcoll.element_type}",
                "give the input a schema, e.g. beam.Row or Beam YAML's ReadFromCsv",
            )
        self._check_columns(fields)
        if inputs:  # e.g. the TRAINs of the same pipeline that write the models
            pcoll = pcoll | "WaitForModels" >> WaitOn(*inputs.values())
        outputs = list(config.outputs)
        out_fields = (
            [(n, t) for n, t in fields.items() if n not in outputs]
            + [(n, Any) for n in outputs]
            + [("model_id", str)]
            + ([("model_key", optional(str))] if config.per else [])
        )
        model = _Model(config, fields, out_fields)
        updates = updates if updates is not None else self._watch(pcoll.pipeline)
        side = ()
        if updates is not None and runs_batches(pcoll.pipeline):  # Dask: batch pipelines only
            side = (beam.pvalue.AsSingleton(updates),)
        outputs = pcoll | "Predict" >> FrameOutputs(
            model, list(fields), model.max_rows, ("main", "errors"), *side)
        main, errors = outputs["main"], outputs["errors"]
        main.element_type = row_type(out_fields)
        errors.element_type = ERROR_ROW_TYPE
        return {"main": main, "errors": errors}

    def _check_columns(self, fields: Mapping[str, Any]) -> None:
        config = self.config
        for clause, columns in (("INPUT", config.input), ("PER", config.per)):
            missing = [c for c in columns or () if c not in fields]
            if missing:
                raise config.error(
                    E_INPUT_MISSING,
                    f"{clause} names {', '.join(missing)}, which the input rows lack",
                    f"the input rows have: {', '.join(fields)}",
                )

    def _watch(self, pipeline: beam.Pipeline) -> beam.PCollection | None:
        """REFRESH: newer files matching the path, as side-input model updates."""
        config = self.config
        if not config.refresh_s or config.per:
            return None  # PER models re-read their key set themselves
        if not pipeline.options.view_as(StandardOptions).streaming:
            _LOG.info("MODEL %s: REFRESH applies to streaming pipelines", config.name)
            return None
        return pipeline | f"Watch {config.name}" >> WatchFilePattern(
            file_pattern=configured_path(config), interval=config.refresh_s
        )
