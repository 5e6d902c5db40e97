"""TRAIN: one scikit-learn model per key, as a Beam transform (LANGUAGE.md section 1).

The work is columnar from end to end, so that a Beam pipeline trains about as
fast as a hand-written pandas script (benchmarks/bench_training.py):

1. **Prepare** (a :class:`~beam_dsl.transforms.common.rows.FrameDoFn`): frames of
   rows (Beam's pandas batches straight from ReadFromCsv) are gathered into
   chunks, each filtered by WHERE, checked and typed column-wise (bad rows go
   to ``errors``) and split by key, in a worker process where workers run
   (:func:`~beam_dsl.transforms.training.fit.prepare_chunk`); the parts are
   gathered per key over the whole bundle: one ``(key, [part, ...])`` per key
   and bundle goes on, not one element per row, each part pickled
   (:func:`~beam_dsl.transforms.training.fit.pack`) so that the shuffle and
   the worker processes get bytes. Where ``beam_dsl run`` fused a ReadFromCsv
   into the TRAIN (the read feeds it alone, on the in-process runner:
   :func:`beam_dsl.run_start.fuse_csv_reads`), Prepare reads the file itself,
   in the frames Beam's reader gives, each worker reading and preparing a part
   of the file (:class:`_ReadAndPrepare`).
2. **GroupByKey** over those parts (not after a Prepare that read the whole
   file: each key comes once, and Fit fuses with it).
3. **Fit**: each key's rows are split (holdout), encoded, fitted, scored and
   gated (:func:`beam_dsl.transforms.training.fit.fit_key`) in worker processes
   (:mod:`beam_dsl.transforms.common.workers`: one per core, or ``--workers``,
   or the ``fit_workers`` option; a run left to itself uses them from the
   first key where their fork server runs already (``beam_dsl run`` starts
   it before importing Beam: :mod:`beam_dsl.run_start`), else only where they
   pay: from the first key after reading :data:`SERVER_AFTER_ROWS` rows, else
   after :data:`~beam_dsl.transforms.common.workers.POOL_AFTER_S` of fitting in line);
   this process writes the
   promoted models into the run's staging folder
   (:func:`~beam_dsl.transforms.training.fit.save_key`).
4. **Manifest**: once every key is done, one manifest beside the models
   records them all; only then are the per-key rows emitted on ``main`` and
   ``skipped``.

Runners without batched DoFns or finish_bundle outputs (Beam's DaskRunner)
get another Prepare (:func:`~beam_dsl.transforms.common.runner_compat.by_runner`
picks): rows are grouped by key first and each key's rows become
one frame; Fit then runs in line. Either way, stage outputs are ``(tag,
value)`` pairs split by FlatMaps and "after all keys" is a side input, not a
combine, because the DaskRunner mishandles tagged outputs and CombineGlobally.

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

import logging
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.dataframe.io import _DEFAULT_LINES_CHUNKSIZE
from apache_beam.dataframe.schemas import element_typehint_from_dataframe_proxy
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.windowed_value import WindowedValue

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.failures import DataFailure
from beam_dsl.ir.train import ROW_COUNTS, TrainConfig
from beam_dsl.transforms.common import expr, workers
from beam_dsl.transforms.common.csvfile import CsvFile, Diverged
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    FrameDoFn,
    as_type,
    base_type,
    error_rows,
    kind_of,
    optional,
    row_type,
    rows_to_frame,
    schema_fields,
    slices,
    windowed,
)
from beam_dsl.transforms.common.runner_compat import by_runner, select, worker_processes
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.training import encoders, metrics, modelstore, worker_modules
from beam_dsl.transforms.training.fit import (
    Plan,
    Prepared,
    fit_key,
    prepare_chunk,
    read_and_prepare,
    resolve_task,
    save_key,
)

COUNTER_NAMESPACE = "beam_dsl"
# Fit jobs queued per worker process before Fit waits for the oldest (bounds memory).
QUEUED_PER_WORKER = 2
# Left to itself (no --workers), Fit fits keys in line until that has taken
# workers.POOL_AFTER_S, unless the fork server runs already: Prepare starts it once it has
# read this many rows (so that it imports while the rest is read), and Fit then uses
# workers from its first key.
SERVER_AFTER_ROWS = 500_000
# Prepare's chunks: rows typed and split by key at once (in a worker where workers run);
# the last is split over the workers in pieces of at least MIN_PIECE_ROWS.
CHUNK_ROWS = 200_000
MIN_PIECE_ROWS = 20_000
# The records in each frame of Beam's ReadFromCsv (TRAIN reading its CSV file gives the same).
LINES_PER_FRAME = _DEFAULT_LINES_CHUNKSIZE

_LOG = logging.getLogger(__name__)

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


class _Counters:
    """The transform's Beam counters, ``beam_dsl:<name>.<what>``."""

    NAMES = ("rows_in", "filtered", "errors", "trained", "held_out", "skipped", "promoted",
             "rejected", "fitted_in_workers")

    def __init__(self, name: str):
        for what in self.NAMES:
            setattr(self, what, Metrics.counter(COUNTER_NAMESPACE, f"{name}.{what}"))


def _tagged(tag: str, value: Any) -> tuple[str, Any]:
    """An output of a stage with several: Beam's DaskRunner mixes up tagged outputs."""
    return (tag, value)


def _report(plan: Plan, prepared: Prepared, counters: "_Counters") -> Iterator[Any]:
    """Counts a prepared chunk's rows and yields its ``errors`` rows."""
    counters.rows_in.inc(prepared.rows)
    counters.filtered.inc(prepared.filtered)
    if len(prepared.bad):
        counters.errors.inc(len(prepared.bad))
        for row in error_rows(prepared.bad, prepared.reasons, plan.config.name):
            yield _tagged("errors", row)


class _Preparer:
    """Prepares chunks of input rows (:func:`~beam_dsl.transforms.training.fit.prepare_chunk`:
    WHERE, typing, one split by key) in worker processes (``pool``) while more are read,
    or in line where there are none, and gathers what they make per window: one
    ``keyed`` (key, [part, ...]) per key, ``errors`` rows and ``labels``.

    Frames (:meth:`add`) are gathered into chunks of :data:`CHUNK_ROWS` rows; a
    full chunk goes when the next frame comes, so that the last one, which the
    fits wait for, is split over the workers. :meth:`add_job` takes a chunk a
    worker prepares already (a part of a CSV file)."""

    def __init__(self, plan: Plan, pool: workers.WorkerPool | None):
        self._plan = plan
        self._pool = pool
        self._frames: dict[BoundedWindow, list[pd.DataFrame]] = defaultdict(list)
        self._chunks: deque[tuple[BoundedWindow, Future]] = deque()  # in order

    def add(self, frame: pd.DataFrame, window: BoundedWindow) -> None:
        if sum(map(len, self._frames[window])) >= CHUNK_ROWS:
            self._send(window)
        self._frames[window].append(frame)

    def add_job(self, window: BoundedWindow, job: Future) -> None:
        self._chunks.append((window, job))

    def _send(self, window: BoundedWindow, last: bool = False) -> None:
        """Starts preparing the frames gathered in ``window`` (in a worker, or here); the
        ``last`` chunk in as many pieces as there are workers, each in one."""
        frames = self._frames.pop(window)
        chunk = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        del frames
        if self._pool is None:
            done: Future = Future()
            done.set_result(prepare_chunk(self._plan, chunk))
            self._chunks.append((window, done))
            return
        pieces = self._pool.workers if last and len(chunk) >= 2 * MIN_PIECE_ROWS else 1
        for piece in slices(chunk, -(-len(chunk) // pieces)) if pieces > 1 else [chunk]:
            self.add_job(window, self._pool.submit(prepare_chunk, self._plan, piece))

    def jobs_failed(self) -> BaseException | None:
        """Waits for every job; the first one's exception, if one raised (E436 where a
        worker died)."""
        for _, job in self._chunks:
            failed = job.exception()
            if isinstance(failed, BrokenProcessPool):
                raise workers.died(self._plan.config, "preparing rows", failed) from None
            if failed is not None:
                return failed
        return None

    def cancel(self) -> None:
        """Drops every job (those not started yet do not run)."""
        while self._chunks:
            self._chunks.popleft()[1].cancel()

    def outputs(
        self, counters: "_Counters", grouped: bool = False
    ) -> Iterator[tuple[Any, BoundedWindow]]:
        """Everything prepared, as outputs with their windows, once every chunk is.
        ``grouped``: these are all the rows (no GroupByKey follows): each ``keyed`` is
        ``(key, [[part, ...]], classes)``, as Fit takes it."""
        for window in list(self._frames):
            self._send(window, last=True)
        parts: dict[BoundedWindow, dict[tuple, list[bytes]]] = defaultdict(
            lambda: defaultdict(list))
        labels: dict[BoundedWindow, set] = defaultdict(set)
        while self._chunks:
            window, job = self._chunks.popleft()
            prepared = _prepared(self._plan, job)
            for value in _report(self._plan, prepared, counters):
                yield value, window
            labels[window] |= prepared.labels
            for key, part in prepared.parts:
                parts[window][key].append(part)
        for window, by_key in parts.items():
            classes = _union([labels[window]])
            for key, packed in by_key.items():
                value = (key, [packed], classes) if grouped else (key, packed)
                yield _tagged("keyed", value), window
        for window, found in labels.items():
            yield _tagged("labels", found), window


def _closing(pool: workers.WorkerPool | None, outputs: Callable[[], Iterable[Any]]) -> list:
    """Every output of a Prepare, made with ``pool``, which is closed before they go on:
    its workers are gone (memory and cores freed) before Fit's start."""
    try:
        return list(outputs())
    finally:
        if pool is not None:
            pool.close()


def _pool_if(in_workers: bool, plan: Plan, processes: int | None) -> workers.WorkerPool | None:
    """Prepare's worker processes, where it prepares in workers."""
    if not in_workers:
        return None
    return workers.WorkerPool(processes or workers.cores(), worker_modules(plan.config))


class _PrepareFrames(FrameDoFn):
    """Frames of rows -> one ``keyed`` (key, [part, ...]) per key and bundle, ``errors``
    rows and the bundle's ``labels`` (Fn API runners: batches in, finish_bundle outputs).

    Chunks are prepared (:class:`_Preparer`) in worker processes where their
    fork server ran when this started (``beam_dsl run`` starts it early), while
    this process reads on; else here. Where Fit will (``processes`` > 1) or may
    (None, after :data:`SERVER_AFTER_ROWS` rows) use worker processes, the fork
    server starts here, so that it imports what fits need while rows are still
    read."""

    def __init__(self, plan: Plan, processes: int | None):
        super().__init__(plan.columns)
        self._plan = plan
        self._processes = processes

    def setup(self) -> None:
        self._counters = _Counters(self._plan.config.name)
        self._rows = 0
        self._in_workers = _prepares_in_workers(self._plan, self._processes)

    def start_bundle(self) -> None:
        super().start_bundle()
        # Its workers start while the first rows are read.
        self._pool = _pool_if(self._in_workers, self._plan, self._processes)
        self._preparer = _Preparer(self._plan, self._pool)

    def process_frame(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterator[Any]:
        self._rows += len(frame)
        due = self._rows - len(frame) < SERVER_AFTER_ROWS <= self._rows
        if self._processes is None and due and workers.cores() > 1:
            workers.start_server(worker_modules(self._plan.config))
        self._preparer.add(frame, window)
        yield from ()

    def finish_frames(self) -> Iterator[tuple[Any, BoundedWindow]]:
        yield from _closing(self._pool, lambda: self._preparer.outputs(self._counters))


def _prepares_in_workers(plan: Plan, processes: int | None) -> bool:
    """Whether Prepare prepares chunks in worker processes: where their fork server runs
    (started here where Fit will use workers) and there is more than one."""
    if processes is not None and processes > 1:
        workers.start_server(worker_modules(plan.config))
    return workers.server_started() and (processes or workers.cores()) > 1


class _ReadAndPrepare(beam.DoFn):
    """Prepare where TRAIN reads its input CSV file itself (``beam_dsl run`` fuses a
    ReadFromCsv that only the TRAIN reads into it: :func:`beam_dsl.run_start.fuse_csv_reads`):
    one element in, the outputs of :class:`_PrepareFrames` out.

    The file is read in exactly the frames Beam's ReadFromCsv gives
    (:mod:`beam_dsl.transforms.common.csvfile`): in worker processes, each reading
    a part of the file and preparing it, where there are workers and each line of
    the file is one record; else in this process, frame by frame, with chunks
    prepared as :class:`_PrepareFrames` prepares them. A part that raises (a line
    pandas cannot parse, the file changed, a part that would not read as the
    whole file does) makes it read the whole file that way instead, so that what
    fails, fails as it does under Beam's reader (as the ReadFromCsv's failure)."""

    def __init__(self, plan: Plan, csv: CsvFile, read: str, processes: int | None):
        self._plan = plan
        self._csv = csv
        self._source = read  # the name of the ReadFromCsv it reads for
        self._processes = processes

    def setup(self) -> None:
        self._counters = _Counters(self._plan.config.name)
        self._in_workers = _prepares_in_workers(self._plan, self._processes)

    def process(self, _, window=beam.DoFn.WindowParam):
        pool = _pool_if(self._in_workers, self._plan, self._processes)
        outputs = _closing(pool, lambda: self._read(pool, window).outputs(
            self._counters, grouped=True))
        for value, _ in outputs:
            yield value

    def _read(self, pool: workers.WorkerPool | None, window: BoundedWindow) -> _Preparer:
        """The file read and every chunk of it on its way to being prepared."""
        if pool is not None:
            preparer = _Preparer(self._plan, pool)
            try:  # each part goes to a worker as soon as the scan has found it
                for part in self._csv.parts(LINES_PER_FRAME, pool.workers):
                    preparer.add_job(window, pool.submit(
                        read_and_prepare, self._plan, self._csv, part, LINES_PER_FRAME))
                failed = preparer.jobs_failed()
            except Diverged as e:
                failed = e
            if failed is None:
                return preparer
            preparer.cancel()
            _LOG.info("TRAIN %s reads %s in one process: %s", self._plan.config.name,
                      self._csv.path, failed)
        preparer = _Preparer(self._plan, pool)
        frames = self._csv.frames(LINES_PER_FRAME)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return preparer
            except Exception as e:  # the file's failure, as ReadFromCsv's
                raise DataFailure.of(e, self._source) from e
            preparer.add(frame, window)


def _prepared(plan: Plan, job: Future) -> Prepared:
    """A chunk's preparation, done; E436 where the worker preparing it died."""
    try:
        return job.result()
    except BrokenProcessPool as e:
        raise workers.died(plan.config, "preparing rows", e) from None


def _row_key(plan: Plan) -> Any:
    """A function of a row to its key's values as TRAIN reads them (None where unusable)."""

    def key(row: Any) -> tuple:
        return tuple(as_type(getattr(row, c), t) for c, t in zip(plan.config.per, plan.per_types,
                                                                  strict=True))

    return key


class _PrepareGroups(beam.DoFn):
    """A key's rows (after a GroupByKey of rows) -> ``keyed``, ``errors`` and ``labels``
    (runners without batched DoFns or finish_bundle outputs, such as Beam's DaskRunner)."""

    def __init__(self, plan: Plan):
        self._plan = plan

    def setup(self) -> None:
        self._counters = _Counters(self._plan.config.name)

    def process(self, element):
        _, rows = element
        prepared = prepare_chunk(self._plan, rows_to_frame(list(rows), self._plan.columns))
        yield from _report(self._plan, prepared, self._counters)
        yield _tagged("labels", prepared.labels)
        for key, part in prepared.parts:
            yield _tagged("keyed", (key, [part]))


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
        self._counters = _Counters(self._plan.config.name)
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
        args = (self._plan, self._estimator, key, parts, known[0] if known else _union(classes))
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
        store.publish(plan.run, _manifest(plan, trained, skipped, _union(classes)))
        per = plan.config.per
        for r in trained:
            yield _tagged("main", beam.Row(
                **dict(zip(per, r["key"], strict=True)),
                **{n: r[n] for n in ROW_COUNTS},
                **{k: _finite(v) for k, v in r["metrics"].items()},
                model_uri=store.published_path(r["file"]) if r["file"] else None,
                promoted=r["promoted"],
            ))
        for r in skipped:
            yield _tagged("skipped", beam.Row(
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


def _union(label_sets: Iterable[Iterable[Any]]) -> list:
    """The sorted union of the label sets the Prepare stage saw."""
    out: set = set()
    for labels in label_sets:
        out.update(labels)
    return sorted(out)


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
        if self._csv is not None:  # rows is the pipeline's start
            return self._expand(rows, element_typehint_from_dataframe_proxy(self._csv.proxy()))
        return self._expand(rows, rows.element_type)

    def _expand(self, rows: Any, element_type: Any) -> dict[str, beam.PCollection]:
        fields = schema_fields(element_type)
        if fields is None:
            raise self.config.error(
                "E430", f"TRAIN needs rows with a schema; its input has type {rows.element_type}",
                hint="read with ReadFromCsv/ReadFromParquet, or produce beam.Row",
            )
        plan = make_plan(self.config, fields, self._task, self._begin_run(), self._imported)
        processes = self.config.fit_workers or worker_processes(rows.pipeline)
        if self._csv is not None:
            staged = (rows | "File" >> beam.Create([None])
                      | "Prepare" >> beam.ParDo(
                          _ReadAndPrepare(plan, self._csv, self._source, processes)))
        else:
            staged, processes = by_runner(
                rows,
                batched=lambda: (rows | "Prepare" >> beam.ParDo(
                    _PrepareFrames(plan, processes)), processes),
                # There the runner has worker processes of its own (Dask's).
                portable=lambda: (_prepare_groups(rows, plan), 1),
            )
        # Side inputs, not combines: Beam's DaskRunner mishandles CombineGlobally.
        classes = beam.pvalue.AsList(select(staged, "labels", "Labels"))
        keyed = select(staged, "keyed", "Keyed")
        if self._csv is None:
            fit = beam.ParDo(_Fit(plan, processes), classes=classes)
            keyed = keyed | "GroupByKey" >> beam.GroupByKey()
        else:  # one Prepare saw every row: its keys come grouped, with the classes, and
            # Fit fuses with it (the parts never go through the runner's shuffle)
            fit = beam.ParDo(_Fit(plan, processes))
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


def _prepare_groups(rows: beam.PCollection, plan: Plan) -> beam.PCollection:
    """Prepare for runners without batched DoFns or finish_bundle outputs: rows grouped
    by key first, each key's rows one frame."""
    key = _row_key(plan)
    return (
        rows
        | "KeyRows" >> beam.Map(lambda row: (key(row), row))
        | "GroupRows" >> beam.GroupByKey()
        | "Prepare" >> beam.ParDo(_PrepareGroups(plan))
    )


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
