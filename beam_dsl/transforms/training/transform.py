"""TRAIN: one scikit-learn model per key, as a Beam transform (LANGUAGE.md section 1).

The work is columnar from end to end, so that a Beam pipeline trains about as
fast as a hand-written pandas script (benchmarks/bench_training.py):

1. **Prepare** (:mod:`beam_dsl.transforms.training.prepare`): rows are gathered
   into chunks, each filtered by WHERE, checked and typed column-wise (bad rows
   go to ``errors``) and split by key, in a worker process where workers run
   (:func:`~beam_dsl.transforms.training.fit.prepare_chunk`); the parts are
   gathered per key over the whole bundle: one ``(key, [part, ...])`` per key
   and bundle goes on, not one element per row, each part pickled
   (:func:`~beam_dsl.transforms.training.fit.pack`) so that the shuffle and
   the worker processes get bytes. Where ``beam_dsl run`` fused a ReadFromCsv
   into the TRAIN (the read feeds it alone, on the in-process runner:
   :func:`beam_dsl.run_start.fuse_csv_reads`), Prepare reads the file itself,
   in the frames Beam's reader gives, each worker reading and preparing a part
   of the file.
2. **GroupByKey** over those parts (not after a Prepare that read the whole
   file: each key comes once, and Fit fuses with it).
3. **Fit**: each key's rows are split (holdout), encoded, fitted, scored and
   gated (:func:`beam_dsl.transforms.training.fit.fit_key`) in worker processes
   (:mod:`beam_dsl.transforms.common.workers`: one per core, or ``--workers``,
   or the ``fit_workers`` option; a run left to itself uses them from the
   first key where their fork server runs already (``beam_dsl run`` starts
   it before importing Beam: :mod:`beam_dsl.run_start`), else only where they
   pay: from the first key after Prepare has read
   :data:`~beam_dsl.transforms.training.prepare.SERVER_AFTER_ROWS` rows, else
   after :data:`~beam_dsl.transforms.common.workers.POOL_AFTER_S` of fitting in
   line); this process writes the promoted models into the run's staging
   folder (:func:`~beam_dsl.transforms.training.fit.save_key`).
4. **Manifest**: once every key is done, one manifest beside the models
   records them all; only then are the per-key rows emitted on ``main`` and
   ``skipped``.

Runners without batched DoFns or finish_bundle outputs (Beam's DaskRunner)
get another Prepare (:func:`~beam_dsl.transforms.common.runner_compat.by_runner`
picks): rows are grouped by key first and each key's rows become
one frame; Fit then runs in line. Either way "after all keys" is a side
input, not a combine, because the DaskRunner mishandles CombineGlobally.

Semantics (see docs of :class:`TrainModels` for the outputs):

* Column types come from the input schema. Numeric columns (and columns
  ENCODE scales) are read as numbers, the others as strings; a row with a
  missing or unparsable PER column, label or feature goes to ``errors``.
* Without ENCODE, string features are one-hot encoded (unknown categories
  ignored at inference) and numeric ones pass through; ENCODE picks an
  encoder per column (:mod:`~beam_dsl.transforms.training.encoders`:
  ``onehot``, ``ordinal``, ``scale``, ``passthrough``). The
  encoders and the estimator are saved together as one scikit-learn
  Pipeline, so inference feeds the raw feature columns.
* HOLDOUT: a key's rows are ordered by a hash of their feature and label
  values keyed by SEED, and the first ``round(rows * fraction)`` are held
  out (at least one row is always trained on). The split depends on the
  data and the seed only, never on the order rows arrive in.
* METRICS (:mod:`~beam_dsl.transforms.training.metrics`) are computed on
  the held-out rows: accuracy, precision, recall,
  f1, roc_auc for classifiers (binary: the positive class is the second of
  the label's sorted classes over all keys; more classes: weighted
  averages; roc_auc needs ``predict_proba``) and r2, mae, rmse for
  regressors. A metric that cannot be computed (no held-out rows, a class
  never predicted) is null. Without METRICS: accuracy or r2.
* GATE is evaluated over the metrics and ``rows``, ``train_rows``,
  ``holdout_rows``; a null metric fails it. A model that fails is reported
  with ``promoted = false`` and is not written at all (a file an earlier run
  wrote at that path is left alone, but the new manifest no longer lists it).
* USING names an estimator class by dotted path: any class under
  ``sklearn.``, ``xgboost.`` or ``lightgbm.``, or any other importable
  class with ``fit`` and ``predict`` that scikit-learn recognises as a
  classifier or a regressor. Its module is imported (which runs its code),
  so a spec is trusted like the Python of a pipeline. Arguments are literals.
* A key whose fit raises (say, one class only, for LogisticRegression) goes
  to ``skipped`` with the error as the reason.
"""

import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.dataframe.schemas import element_typehint_from_dataframe_proxy
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.windowed_value import WindowedValue

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.failures import DataFailure
from beam_dsl.ir.train import ROW_COUNTS, TrainConfig
from beam_dsl.transforms.common import expr, workers
from beam_dsl.transforms.common.csvfile import CsvFile
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    base_type,
    kind_of,
    optional,
    row_type,
    schema_fields,
    windowed,
)
from beam_dsl.transforms.common.runner_compat import by_runner, select, worker_processes
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.training import encoders, metrics, modelstore, worker_modules
from beam_dsl.transforms.training.fit import Plan, fit_key, resolve_task, save_key
from beam_dsl.transforms.training.prepare import (
    Counters,
    PrepareFrames,
    ReadAndPrepare,
    prepare_groups,
    tagged,
    union,
)

# Fit jobs queued per worker process before Fit waits for the oldest (bounds memory).
QUEUED_PER_WORKER = 2
_PYTHON_TYPES = ((bool, np.bool_), (int, np.integer), (float, np.floating), (str, str))


def _python_type(hint: Any) -> type | None:
    hint = base_type(hint)
    if isinstance(hint, type):
        for python, bases in _PYTHON_TYPES:
            if issubclass(hint, bases):
                return python
    return None


def make_plan(
    config: TrainConfig, fields: Mapping[str, Any], task: str, run: str, imported: bool
) -> Plan:
    """Resolves ``config`` against the input's schema fields; E430/E434 on mismatch.
    ``run`` is the id of this run's staging folder in the model store; ``imported``
    whether this process imported the estimator's class (``resolve_task``)."""

    def need(column: str, what: str) -> None:
        if column not in fields:
            raise config.error(
                "E430", f"the input has no column '{column}' ({what})",
                hint=did_you_mean(column, fields),
            )

    for column in config.per:
        need(column, "PER")
    need(config.label, "LABEL")
    features = _features(config, fields, need)
    for column in expr.columns_of(config.where):
        need(column, "WHERE")
    chosen = {c: encoder for encoder, columns in (config.encode or {}).items() for c in columns}
    for column in chosen:
        if column not in features:
            raise config.error("E430", f"ENCODE names '{column}', which is not a feature")
    kinds = {}
    for column in features:
        kinds[column] = kind_of(fields[column])
        if kinds[column] == "other":
            raise config.error(
                "E434", f"feature '{column}' has type {fields[column]}; "
                "TRAIN reads numbers and strings"
            )
        if column in chosen and encoders.reads_numbers(chosen[column]):
            kinds[column] = "number"

    def python_type(column: str) -> type:
        found = _python_type(fields[column])
        if found is None:
            raise config.error(
                "E434", f"column '{column}' has type {fields[column]}; "
                "PER and LABEL columns must hold strings, numbers or booleans"
            )
        return found

    return Plan(
        config=config,
        task=task,
        columns=tuple(fields),
        per_types=tuple(python_type(c) for c in config.per),
        features=features,
        feature_kinds=kinds,
        encoders={c: chosen.get(c) or encoders.default(kinds[c]) for c in features},
        label_type=float if task == "regression" else python_type(config.label),
        metrics=config.metrics or (metrics.default(task),),
        run=run,
        estimator_imported=imported,
    )


def _features(config: TrainConfig, fields: Mapping[str, Any], need) -> tuple[str, ...]:
    """The feature columns: FEATURES, or every field but EXCEPT, the label and PER."""
    if config.features is None:
        for column in config.features_except:
            need(column, "FEATURES * EXCEPT")
        excluded = {*config.features_except, config.label, *config.per}
        features = tuple(c for c in fields if c not in excluded)
    else:
        features = config.features
        for column in features:
            need(column, "FEATURES")
    if not features:
        raise config.error("E430", "TRAIN has no feature columns left")
    return features


# ---------------------------------------------------------------- the DoFns


class _Fit(beam.DoFn):
    """Fits each key's model, in this process or in worker processes
    (:class:`~beam_dsl.transforms.common.workers.Jobs`, eager: from the first key
    where their fork server runs): ``processes`` 1 fits in line, N > 1 in N
    workers, None in one worker per core where it pays. Results leave in the
    order keys came in, in their key's window; this process writes the models
    (:func:`~beam_dsl.transforms.training.fit.save_key`), workers only fit them."""

    def __init__(self, plan: Plan, processes: int | None):
        self._plan = plan
        self._processes = processes

    def setup(self) -> None:
        self._counters = Counters(self._plan.config.name)
        # None where keys go to workers from the first (their server runs) and this
        # process need not import the class: each fit builds it. Else it is built here
        # now, so that importing scikit-learn does not count as fitting in line.
        here = self._plan.estimator_imported or not workers.server_started()
        self._estimator = self._plan.make_estimator() if here else None
        self._jobs = workers.Jobs(self._processes, worker_modules(self._plan.config),
                                  f"TRAIN {self._plan.config.name} fits its keys", eager=True)

    def start_bundle(self) -> None:
        # (the fit's arguments, its job, whether a worker fits it, its key's window)
        self._pending: deque[tuple[tuple, Future, bool, BoundedWindow]] = deque()

    def process(self, element, window=beam.DoFn.WindowParam, classes=()):
        # From a GroupByKey: (key, [[part, ...] per bundle]), the classes a side input; or
        # from a Prepare that saw every row: (key, [[part, ...]], classes).
        key, packed, *known = element
        parts = [part for bundle_parts in packed for part in bundle_parts]
        args = (self._plan, self._estimator, key, parts, known[0] if known else union(classes))
        self._pending.append((args, *self._jobs.submit(fit_key, *args), window))
        limit = QUEUED_PER_WORKER * self._jobs.workers
        while self._pending and (self._pending[0][1].done() or len(self._pending) > limit):
            yield self._collect()

    def finish_bundle(self):
        while self._pending:
            yield self._collect()

    def teardown(self) -> None:
        self._jobs.close()

    def _collect(self) -> WindowedValue:
        """The oldest pending key's result, saved, in the window its key came in."""
        args, job, in_worker, window = self._pending.popleft()
        result = None
        try:
            result = job.result()
            if in_worker:
                self._counters.fitted_in_workers.inc()
        except workers.NotShippable as e:
            self._jobs.run_in_line(e)
        except BrokenProcessPool as e:
            raise workers.died(self._plan.config, f"fitting key {list(args[2])}", e) from None
        if result is None:  # fitted here, outside the handler: a failure of its own is not
            result = fit_key(*args)  # chained to the worker's (failures.py reads the chain)
        return windowed(self._count(save_key(self._plan, result)), window)

    def _count(self, result: dict[str, Any]) -> dict[str, Any]:
        counters = self._counters
        if "skipped" in result:
            counters.skipped.inc(result["rows"])
        else:
            counters.trained.inc(result["train_rows"])
            counters.held_out.inc(result["holdout_rows"])
            (counters.promoted if result["promoted"] else counters.rejected).inc()
        return result


class _WriteManifest(beam.DoFn):
    """Writes the one manifest for all keys, then emits the ``main`` and ``skipped`` rows."""

    def __init__(self, plan: Plan):
        self._plan = plan

    def process(self, _, results=(), classes=()):
        plan = self._plan
        results = sorted(results, key=lambda r: modelstore.key_id(r["key"]))
        trained = [r for r in results if "skipped" not in r]
        skipped = [r for r in results if "skipped" in r]
        store = modelstore.ModelStore(plan.config.save_to)
        store.publish(plan.run, _manifest(plan, trained, skipped, union(classes)))
        per = plan.config.per
        for r in trained:
            yield tagged("main", beam.Row(
                **dict(zip(per, r["key"], strict=True)),
                **{n: r[n] for n in ROW_COUNTS},
                **{k: _finite(v) for k, v in r["metrics"].items()},
                model_uri=store.published_path(r["file"]) if r["file"] else None,
                promoted=r["promoted"],
            ))
        for r in skipped:
            yield tagged("skipped", beam.Row(
                **dict(zip(per, r["key"], strict=True)), rows=r["rows"], reason=r["skipped"],
            ))


def _manifest(plan: Plan, trained: list[dict], skipped: list[dict], classes: list) -> dict:
    """The manifest of one run (ModelStore.publish adds its format version)."""
    return {
        **plan.manifest_header(),
        "classes": classes if plan.task == "classification" else None,
        "models": [
            {
                "key": list(r["key"]),
                "file": r["file"],
                "sha256": r["sha256"],
                "trusted_types": r["trusted_types"],
                **{n: r[n] for n in ROW_COUNTS},
                "metrics": {k: _finite(v) for k, v in r["metrics"].items()},
                "promoted": r["promoted"],
            }
            for r in trained
        ],
        "skipped": [
            {"key": list(r["key"]), "rows": r["rows"], "reason": r["skipped"]} for r in skipped
        ],
    }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


# ---------------------------------------------------------------- the transform


class TrainModels(SpecTransform):
    """Trains one scikit-learn model per key (``TRAIN``), saves them and a manifest.

    Built from a :class:`~beam_dsl.ir.train.TrainConfig` (its fields are the
    keyword arguments; docs/IR.md, "TRAIN"), checked once: the config's rules
    (E400, E433), then the estimator and the metrics of its task (E431, E432).
    The input is a schema'd PCollection of rows. Outputs:

    * ``main``: one row per trained key: the PER columns, ``rows`` (usable
      rows: trained on or held out), ``train_rows``, ``holdout_rows``, each
      metric (float, null when not computable), ``model_uri`` (null when the
      model failed GATE and was not written) and ``promoted``.
    * ``skipped``: keys not trained: the PER columns, ``rows`` and ``reason``
      (fewer than MIN ROWS rows, or the fit failed).
    * ``errors``: rows that could not be used (``row`` as JSON, ``reason``,
      ``transform``).

    Every input row is counted once in the Beam counters ``beam_dsl`` /
    ``<name>.rows_in`` = ``filtered`` (by WHERE) + ``errors`` + ``trained``
    + ``held_out`` + ``skipped``; ``promoted`` and ``rejected`` count models.
    ``resource_hints`` apply to the fitting step alone, so that reading and
    preparing rows still fuse with the step before.
    """

    config_class = TrainConfig
    config: TrainConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._task, self._imported = resolve_task(self.config)
        self._csv: CsvFile | None = None
        self._source = ""  # the name of the ReadFromCsv whose file it reads

    @classmethod
    def reading_csv(cls, csv: dict[str, Any], read: str, train: dict[str, Any]) -> "TrainModels":
        """This TRAIN (``train``: its config) reading its rows from a local CSV file itself
        (``csv``: ``path`` and the pandas arguments of Beam's ReadFromCsv), as ``beam_dsl
        run`` builds it where a ReadFromCsv (named ``read``) feeds it and nothing else
        (:func:`beam_dsl.run_start.fuse_csv_reads`); the rows are those ReadFromCsv gives,
        and a file pandas cannot read fails the run as ``read``'s failure."""
        transform = cls(**train)
        try:
            transform._csv = CsvFile.open(**csv)
        except Exception as e:
            raise DataFailure.of(e, read) from e
        transform._source = read
        return transform

    def _begin_run(self) -> str:
        """Opens this run's staging folder in the model store (E435 if it cannot be used),
        before any row is read: a run that cannot publish does not train."""
        run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        try:
            modelstore.ModelStore(self.config.save_to).begin(run)
        except (OSError, modelstore.ModelStoreError) as e:
            raise self.config.error(
                "E435", f"SAVE TO '{self.config.save_to}' cannot be used: {e}"
            ) from None
        return run

    def expand(self, rows: beam.PCollection) -> dict[str, beam.PCollection]:
        # Reading its file, the TRAIN starts the pipeline: ``rows`` is its start.
        element_type = rows.element_type if self._csv is None else (
            element_typehint_from_dataframe_proxy(self._csv.proxy()))
        fields = schema_fields(element_type)
        if fields is None:
            raise self.config.error(
                "E430", f"TRAIN needs rows with a schema; its input has type {element_type}",
                hint="read with ReadFromCsv/ReadFromParquet, or produce beam.Row",
            )
        plan = make_plan(self.config, fields, self._task, self._begin_run(), self._imported)
        processes = self.config.fit_workers or worker_processes(rows.pipeline)
        if self._csv is None:
            staged, processes = by_runner(
                rows,
                batched=lambda: (rows | "Prepare" >> beam.ParDo(
                    PrepareFrames(plan, processes)), processes),
                # There the runner has worker processes of its own (Dask's).
                portable=lambda: (prepare_groups(rows, plan), 1),
            )
            keyed = select(staged, "keyed", "Keyed") | "GroupByKey" >> beam.GroupByKey()
        else:  # one Prepare sees every row: its keys come grouped, with the classes, and
            # Fit fuses with it (the parts never go through the runner's shuffle)
            staged = (rows | "File" >> beam.Create([None])
                      | "Prepare" >> beam.ParDo(
                          ReadAndPrepare(plan, self._csv, self._source, processes)))
            keyed = select(staged, "keyed", "Keyed")
        # Side inputs, not combines: Beam's DaskRunner mishandles CombineGlobally.
        classes = beam.pvalue.AsList(select(staged, "labels", "Labels"))
        # Not after a Prepare that sees every row: a side input would keep Fit out of its
        # stage, and its keys bring the classes.
        side = {"classes": classes} if self._csv is None else {}
        fit = beam.ParDo(_Fit(plan, processes), **side)
        if self.config.resource_hints:
            fit = fit.with_resource_hints(**self.config.resource_hints)
        results = keyed | "Fit" >> fit
        done = (
            rows.pipeline
            | "Once" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                _WriteManifest(plan), results=beam.pvalue.AsList(results), classes=classes
            )
        )
        return _outputs(plan, staged, done)


def _outputs(
    plan: Plan, staged: beam.PCollection, done: beam.PCollection
) -> dict[str, beam.PCollection]:
    """``main`` and ``skipped`` (from the manifest step) and ``errors`` (from Prepare),
    typed."""
    key_fields = list(zip(plan.config.per, plan.per_types, strict=True))
    main = select(done, "main", "Main")
    main.element_type = row_type(
        [
            *key_fields,
            *[(n, int) for n in ROW_COUNTS],
            *[(m, optional(float)) for m in plan.metrics],
            ("model_uri", optional(str)),
            ("promoted", bool),
        ]
    )
    skipped = select(done, "skipped", "Skipped")
    skipped.element_type = row_type([*key_fields, ("rows", int), ("reason", str)])
    errors = select(staged, "errors", "Errors")
    errors.element_type = ERROR_ROW_TYPE
    return {"main": main, "skipped": skipped, "errors": errors}
