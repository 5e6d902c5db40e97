"""MODEL as a Beam transform: :class:`RunModel` (LANGUAGE.md section 2).

RunModel is Beam's ``RunInference`` over :class:`PredictorHandler`, a Beam
``ModelHandler`` whose model is a :class:`~beam_dsl.transforms.inference.base.Predictor`
and whose batches are pandas frames: ``BatchElements`` (BATCH min TO max
[WAIT]) gathers rows, the predictor answers the whole frame at once, and one
step turns the answer back into rows. So RunInference's model sharing
(``SHARED`` = one copy per machine), metrics and side-input model updates
(``REFRESH EVERY``) all apply, with no per-row model call.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.ml.inference.utils import WatchFilePattern
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.util import WaitOn

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    ConformRows,
    error_rows,
    optional,
    row_type,
    rows_to_frame,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import RowBatches, runs_batches, select
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.inference.base import E_INPUT_MISSING, Predictor, configured_path
from beam_dsl.transforms.inference.predictors import build_predictor

_LOG = logging.getLogger(__name__)

Scored = tuple[Sequence[Any], pd.DataFrame]  # a batch of rows and the predictions for them


class PredictorHandler(ModelHandler[Any, Scored, Predictor]):
    """A Beam ModelHandler that predicts whole batches of schema'd rows as one frame.

    ``run_inference`` answers a batch with a single element, the batch and its
    prediction frame, so the DoFn that makes output rows from it is the only
    per-row step.

    Args:
        config: the MODEL's config (its ``allow_pickle`` allows pickle / joblib files).
        columns: the input rows' field names.
    """

    def __init__(self, config: ModelConfig, columns: Sequence[str]):
        super().__init__()
        self._config = config
        self._columns = list(columns)

    def load_model(self) -> Predictor:
        return build_predictor(self._config, self._config.allow_pickle)

    def run_inference(
        self,
        batch: Sequence[Any],
        model: Predictor,
        inference_args: dict[str, Any] | None = None,
    ) -> list[Scored]:
        frame = rows_to_frame(batch, self._columns)
        return [(batch, model.predict(frame, scores=False))]

    def update_model_path(self, model_path: str | None = None) -> None:
        """A REFRESH found a newer model file: the next load reads it."""
        if model_path:
            self._config = dataclasses.replace(self._config, path=model_path)

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        batch = self._config.batch
        kwargs = {"min_batch_size": batch.min, "max_batch_size": batch.max}
        if batch.wait_s:
            kwargs["max_batch_duration_secs"] = batch.wait_s
        return kwargs

    def share_model_across_processes(self) -> bool:
        return self._config.shared

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return len(batch)  # Beam's default pickles the batch only to measure it

    def get_metrics_namespace(self) -> str:
        return f"beam_dsl.{self._config.name}"


class _PredictBatches(beam.DoFn):
    """Lists of rows -> scored batches, through the handler RunInference would use."""

    def __init__(self, handler: PredictorHandler):
        self._handler = handler

    def setup(self) -> None:
        self._model = self._handler.load_model()

    def process(self, rows: list[Any]) -> Iterable[Scored]:
        return self._handler.run_inference(rows, self._model)


class _EmitRows(beam.DoFn):
    """Scored batches -> output rows (input fields + OUTPUT fields + provenance) and error rows.

    Output rows are instances of the output schema's NamedTuple type, built
    positionally: the one per-row step of RunModel, so it stays lean.
    """

    def __init__(
        self, name: str, columns: Sequence[str], added: Sequence[str], out_type, pairs: bool
    ):
        self._pairs = pairs  # emit ("main" | "errors", row) pairs instead of tagged outputs
        self._name = name
        self._columns = list(columns)
        self._added = list(added)
        self._kept = [c for c in columns if c not in added]  # an OUTPUT may replace a field
        self._out = out_type.user_type

    def setup(self) -> None:
        self._get = operator.attrgetter(*self._kept) if self._kept else (lambda row: ())
        self._single = len(self._kept) == 1

    def _inputs(self, rows: Sequence[Any]) -> Iterable[tuple]:
        """Each row's kept input values, as a tuple."""
        first = rows[0]
        if self._kept == self._columns and getattr(first, "_fields", None) == tuple(self._kept):
            return rows  # NamedTuples in schema order already are those tuples
        if self._single:
            return [(self._get(row),) for row in rows]
        return map(self._get, rows)

    def process(self, scored: Scored) -> list[Any]:
        rows, result = scored
        if not len(rows):
            return []
        failed = result["error"].notna().to_numpy()
        added = zip(*(result[c].tolist() for c in self._added), strict=True)
        new, out = tuple.__new__, self._out
        if not failed.any():
            pairs = zip(self._inputs(rows), added, strict=True)
            outputs = [new(out, (*kept, *more)) for kept, more in pairs]
            return [("main", o) for o in outputs] if self._pairs else outputs
        outputs: list[Any] = [
            new(out, (*kept, *more))
            for kept, more, bad in zip(self._inputs(rows), added, failed.tolist(), strict=True)
            if not bad
        ]
        bad_rows = [row for row, bad in zip(rows, failed, strict=True) if bad]
        frame = rows_to_frame(bad_rows, self._columns)
        errors = error_rows(frame, result["error"][failed], self._name)
        if self._pairs:
            return [("main", o) for o in outputs] + [("errors", e) for e in errors]
        return outputs + [beam.pvalue.TaggedOutput("errors", e) for e in errors]


def _failed_batch_rows(
    failed: tuple[Sequence[Any], Any], columns: Sequence[str], name: str
) -> list[beam.Row]:
    """Error rows for a batch whose inference raised (RunInference's dead-letter output)."""
    batch, exc_info = failed
    why = f"inference failed: {exc_info[1] if isinstance(exc_info, tuple) else exc_info}"
    return error_rows(rows_to_frame(batch, columns), [why] * len(batch), name)


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
        outputs, keyed = list(config.outputs), bool(config.per)
        added = [*outputs, "model_id"] + (["model_key"] if keyed else [])
        out_type = row_type(
            [(n, t) for n, t in fields.items() if n not in outputs]
            + [(n, Any) for n in outputs]
            + [("model_id", str)]
            + ([("model_key", optional(str))] if keyed else [])
        )
        pcoll, unfit = self._conform(pcoll, fields)
        handler = PredictorHandler(config, list(fields))
        emit = functools.partial(_EmitRows, config.name, list(fields), added, out_type)
        updates = updates if updates is not None else self._watch(pcoll.pipeline)
        if not runs_batches(pcoll.pipeline):
            # Beam 2.77's DaskRunner drops what finish_bundle emits (BatchElements
            # loses each bundle's last batch) and hands every output of a
            # multi-output ParDo to every consumer: batch with a GroupByKey, predict
            # with the same handler, and emit (tag, row) pairs.
            pairs = (
                pcoll
                | "Batch" >> RowBatches(config.batch.max)
                | "Predict" >> beam.ParDo(_PredictBatches(handler))
                | "Rows" >> beam.ParDo(emit(pairs=True))
            )
            errors = select(pairs, "errors", "Errors", ERROR_ROW_TYPE)
            return {
                "main": select(pairs, "main", "Main", out_type),
                "errors": (errors, unfit) | "AllErrors" >> beam.Flatten(),
            }
        inference = RunInference(handler, model_metadata_pcoll=updates)
        answers, dead = pcoll | "RunInference" >> inference.with_exception_handling()
        results = answers | "Rows" >> beam.ParDo(emit(pairs=False)).with_output_types(
            out_type
        ).with_outputs("errors", main="main")
        failed = dead.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_rows, list(fields), config.name
        )
        errors = (results.errors, failed, unfit) | "Errors" >> beam.Flatten().with_output_types(
            ERROR_ROW_TYPE
        )
        return {"main": results.main, "errors": errors}

    def _conform(
        self, pcoll: beam.PCollection, fields: Mapping[str, Any]
    ) -> tuple[beam.PCollection, beam.PCollection]:
        """Rows whose values fit their own schema, and error rows for the others.

        They leave first: RunInference encodes rows when batching them, and
        Beam cannot encode those.
        """
        batches = runs_batches(pcoll.pipeline)
        conform = ConformRows(fields, self.config.name, pairs=not batches)
        if batches:
            checked = pcoll | "Conform" >> beam.ParDo(conform).with_output_types(
                pcoll.element_type
            ).with_outputs("errors", main="main")
            return checked.main, checked.errors
        checked = pcoll | "Conform" >> beam.ParDo(conform)
        return (select(checked, "main", "Fitting", pcoll.element_type),
                select(checked, "errors", "Unfit", ERROR_ROW_TYPE))

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
        """REFRESH: newer files matching the path, as RunInference model updates."""
        config = self.config
        if not config.refresh_s or config.per:
            return None  # PER models re-read their key set themselves
        if not pipeline.options.view_as(StandardOptions).streaming:
            _LOG.info("MODEL %s: REFRESH applies to streaming pipelines", config.name)
            return None
        return pipeline | f"Watch {config.name}" >> WatchFilePattern(
            file_pattern=configured_path(config), interval=config.refresh_s
        )
