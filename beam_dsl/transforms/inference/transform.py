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

A model that predicts on one core (scikit-learn's) has its slices predicted
in worker processes (:class:`~beam_dsl.transforms.common.workers.Jobs`,
eager: from the first slice where their fork server runs, as ``beam_dsl
run`` starts it, or ``--workers N`` sets their number; else once predicting
in line has taken :data:`~beam_dsl.transforms.common.workers.POOL_AFTER_S`),
and the run's process does not load the model then: every slice of a
frame goes out at once, each worker loads the model once
(:func:`~beam_dsl.transforms.inference.predictors.predict_slice`), and this
process checks the rows and builds the output rows, in the input's order.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.ml.inference.utils import WatchFilePattern
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.util import WaitOn
from apache_beam.utils import multi_process_shared, shared

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.common import workers
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
from beam_dsl.transforms.common.runner_compat import FrameOutputs, runs_batches, worker_processes
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.inference import predicts_in_workers, worker_modules
from beam_dsl.transforms.inference.base import E_INPUT_MISSING, Predictor, configured_path
from beam_dsl.transforms.inference.predictors import (
    build_predictor,
    load_in_worker,
    model_tag,
    predict_slice,
)

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
        processes: ``--workers`` (None: left to beam_dsl), for a model that predicts
            in worker processes (:func:`beam_dsl.transforms.inference.predicts_in_workers`).
    """

    def __init__(
        self, config: ModelConfig, fields: Mapping[str, Any], out_fields: list[tuple[str, Any]],
        processes: int | None = None,
    ):
        self.config = config
        self.processes = processes
        self.fields = dict(fields)
        self.max_rows = config.batch.max
        self.out_fields = out_fields
        self.kept = [c for c in fields if c not in config.outputs]  # OUTPUT replaces a field
        self.added = [n for n, _ in out_fields[len(self.kept):]]
        self._handle = shared.Shared()  # one model per process for every thread's DoFn

    def setup(self) -> None:
        self.make = row_maker(self.out_fields)
        self.current = self.config  # with the path of the latest model update
        processes = self.processes if predicts_in_workers(self.config) else 1
        self.jobs = workers.Jobs(processes, worker_modules(self.config),
                                 f"MODEL {self.config.name} predicts", eager=True,
                                 warm_up=(load_in_worker, (self.config,)))
        self.in_workers = Metrics.counter("beam_dsl", f"{self.config.name}.predicted_in_workers")
        self._predictor: Predictor | None = None
        self._load()

    @property
    def predictor(self) -> Predictor:
        """The model, loaded here (the first time a slice is predicted here, where every
        slice was to go to workers)."""
        if self._predictor is None:
            self._predictor = self._acquire(self.current)
        return self._predictor

    def _load(self) -> None:
        """Loads the model here now (load errors end the run at once), unless every slice
        goes to workers, which load it themselves."""
        self._predictor = None
        if not self.jobs.in_workers_from_start:
            _ = self.predictor

    def teardown(self) -> None:
        self.jobs.close()

    def _acquire(self, config: ModelConfig) -> Predictor:
        """The loaded model of ``config``, shared by the process (SHARED: by the machine)."""
        tag = model_tag(config)
        load = functools.partial(_load, config)
        if config.shared:
            return multi_process_shared.MultiProcessShared(load, tag, always_proxy=True).acquire()
        return self._handle.acquire(load, tag)

    def use(self, update: Any) -> None:
        """Swaps in the model a side-input update names (a newer file), once."""
        if (isinstance(update, ModelMetadata) and update.model_id
                and update.model_id != self.current.path):
            self.current = dataclasses.replace(self.config, path=update.model_id)
            self._load()

    def outputs(self, frame: pd.DataFrame, update: Any = None) -> Iterator[tuple[str, Any]]:
        """Each row's output; ``update``: the model update of the frame's window (a side
        input), if any."""
        self.use(update)
        started = []  # every slice goes out before the first is collected
        for chunk in slices(frame, self.max_rows):
            fitting, unfit = fitting_rows(chunk, self.fields)
            started.append((chunk, unfit, fitting, self._start(fitting)))
        for chunk, unfit, fitting, job in started:
            answered, rejected = self._answers(fitting, job)
            for row in frame_rows(answered, [*self.kept, *self.added], self.make):
                yield "main", row
            errors = pd.concat([unfit, rejected]) if len(unfit) else rejected
            for row in error_rows(chunk.loc[errors.index], errors, self.config.name):
                yield "errors", row

    def _start(self, rows: pd.DataFrame) -> tuple[Future, bool] | None:
        """The prediction of ``rows``, started in a worker (counted) or made here, and
        whether a worker makes it (None for no rows). A prediction made here that
        raises raises from the future, as a worker's does."""
        if not len(rows):
            return None
        try:
            job, in_worker = self.jobs.submit(predict_slice, self.current, rows,
                                              here=self._predict_here)
        except Exception as exc:  # noqa: BLE001 - fails the slice (_answers)
            job, in_worker = Future(), False
            job.set_exception(exc)
        if in_worker:
            self.in_workers.inc(len(rows))
        return job, in_worker

    def _predict_here(self, _config: ModelConfig, rows: pd.DataFrame) -> pd.DataFrame:
        return self.predictor.predict(rows, scores=False)

    def _answers(self, rows: pd.DataFrame,
                 job: tuple[Future, bool] | None) -> tuple[pd.DataFrame, pd.Series]:
        """The rows the model answered (input fields and answers), and why it did not
        answer the others. A prediction that raises fails its whole slice; a worker
        that cannot load the model (a diagnostic, as loading it here gives) or that
        died (E436) ends the run."""
        if job is None:
            return rows, pd.Series(dtype=object)
        future, in_worker = job
        try:
            result = future.result()
        except workers.NotShippable as why:  # a worker could not load the job
            self.jobs.run_in_line(why)
            return self._answers(rows, self._start(rows))
        except BrokenProcessPool as why:
            raise workers.died(self.config, "predicting", why) from None
        except Exception as exc:  # noqa: BLE001 - the slice's rows become error rows
            if in_worker and isinstance(exc, DiagnosticError):
                raise
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
        # Where the runner has worker processes of its own (Dask's), predictions stay there.
        processes = worker_processes(pcoll.pipeline) if runs_batches(pcoll.pipeline) else 1
        model = _Model(config, fields, out_fields, processes)
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
