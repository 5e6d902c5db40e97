"""TRAIN's Prepare stage: input rows to each key's parts, ``errors`` rows and labels.

Rows are filtered by WHERE, checked and typed column-wise (bad rows go to
``errors``) and split by key (:func:`~beam_dsl.transforms.training.fit.prepare_chunk`),
chunk by chunk, in worker processes where workers run; what leaves is one
``keyed`` ``(key, [part, ...])`` per key and bundle (each part pickled:
:func:`~beam_dsl.transforms.training.fit.pack`), the ``errors`` rows and the
``labels`` seen. Three DoFns, one per way rows come in:

* :class:`PrepareFrames`: frames of rows (Beam's pandas batches, as ReadFromCsv
  gives them) on Fn API runners (batched DoFns, finish_bundle outputs).
* :class:`ReadAndPrepare`: a TRAIN that reads its CSV file itself (``beam_dsl
  run`` fuses a ReadFromCsv that only the TRAIN reads into it), each worker
  reading a part of the file in the frames Beam's reader gives.
* :class:`PrepareGroups`: runners without batched DoFns or finish_bundle
  outputs (Beam's DaskRunner): rows grouped by key first.

Stage outputs are ``(tag, value)`` pairs split by FlatMaps, because the
DaskRunner mixes up tagged outputs. Semantics are described in
:mod:`beam_dsl.transforms.training.transform`.
"""

import logging
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.dataframe.io import _DEFAULT_LINES_CHUNKSIZE
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import BoundedWindow

from beam_dsl.failures import DataFailure
from beam_dsl.transforms.common import workers
from beam_dsl.transforms.common.csvfile import CsvFile, Diverged
from beam_dsl.transforms.common.rows import (
    FrameDoFn,
    as_type,
    error_rows,
    rows_to_frame,
    slices,
)
from beam_dsl.transforms.training import worker_modules
from beam_dsl.transforms.training.fit import Plan, Prepared, prepare_chunk, read_and_prepare

COUNTER_NAMESPACE = "beam_dsl"
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


class Counters:
    """The transform's Beam counters, ``beam_dsl:<name>.<what>``."""

    NAMES = ("rows_in", "filtered", "errors", "trained", "held_out", "skipped", "promoted",
             "rejected", "fitted_in_workers")

    def __init__(self, name: str):
        for what in self.NAMES:
            setattr(self, what, Metrics.counter(COUNTER_NAMESPACE, f"{name}.{what}"))


def tagged(tag: str, value: Any) -> tuple[str, Any]:
    """An output of a stage with several: Beam's DaskRunner mixes up tagged outputs."""
    return (tag, value)


def _report(plan: Plan, prepared: Prepared, counters: Counters) -> Iterator[Any]:
    """Counts a prepared chunk's rows and yields its ``errors`` rows."""
    counters.rows_in.inc(prepared.rows)
    counters.filtered.inc(prepared.filtered)
    if len(prepared.bad):
        counters.errors.inc(len(prepared.bad))
        for row in error_rows(prepared.bad, prepared.reasons, plan.config.name):
            yield tagged("errors", row)


class _Preparer:
    """Prepares chunks of input rows (:func:`~beam_dsl.transforms.training.fit.prepare_chunk`:
    WHERE, typing, one split by key) in worker processes (``pool``) while more are read,
    or in line where there are none, and gathers what they make per window: one
    ``keyed`` (key, [part, ...]) per key, ``errors`` rows and ``labels``.

    Frames (:meth:`add`) are gathered into chunks of :data:`CHUNK_ROWS` rows; a
    full chunk goes when the next frame comes, so that the last one, which the
    fits wait for, is split over the workers. :meth:`add_job` takes a chunk a
    worker prepares already (a part of a CSV file). :meth:`outputs` closes the
    pool once every chunk is prepared, so that its workers are gone (memory
    and cores freed) before Fit starts."""

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
        self, counters: Counters, grouped: bool = False
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
        if self._pool is not None:  # its workers go before Fit's start
            self._pool.close()
        for window, by_key in parts.items():
            classes = union([labels[window]])
            for key, packed in by_key.items():
                value = (key, [packed], classes) if grouped else (key, packed)
                yield tagged("keyed", value), window
        for window, found in labels.items():
            yield tagged("labels", found), window


def _pool_if(in_workers: bool, plan: Plan, processes: int | None) -> workers.WorkerPool | None:
    """Prepare's worker processes, where it prepares in workers."""
    if not in_workers:
        return None
    return workers.WorkerPool(processes or workers.cores(), worker_modules(plan.config))


class PrepareFrames(FrameDoFn):
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
        self._counters = Counters(self._plan.config.name)
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
        yield from self._preparer.outputs(self._counters)


def _prepares_in_workers(plan: Plan, processes: int | None) -> bool:
    """Whether Prepare prepares chunks in worker processes: where their fork server runs
    (started here where Fit will use workers) and there is more than one."""
    if processes is not None and processes > 1:
        workers.start_server(worker_modules(plan.config))
    return workers.server_started() and (processes or workers.cores()) > 1


class ReadAndPrepare(beam.DoFn):
    """Prepare where TRAIN reads its input CSV file itself (``beam_dsl run`` fuses a
    ReadFromCsv that only the TRAIN reads into it: :func:`beam_dsl.run_start.fuse_csv_reads`):
    one element in, the outputs of :class:`PrepareFrames` out.

    The file is read in exactly the frames Beam's ReadFromCsv gives
    (:mod:`beam_dsl.transforms.common.csvfile`): in worker processes, each reading
    a part of the file and preparing it, where there are workers and each line of
    the file is one record; else in this process, frame by frame, with chunks
    prepared as :class:`PrepareFrames` prepares them. A part that raises (a line
    pandas cannot parse, the file changed, a part that would not read as the
    whole file does) makes it read the whole file that way instead, so that what
    fails, fails as it does under Beam's reader (as the ReadFromCsv's failure)."""

    def __init__(self, plan: Plan, csv: CsvFile, read: str, processes: int | None):
        self._plan = plan
        self._csv = csv
        self._source = read  # the name of the ReadFromCsv it reads for
        self._processes = processes

    def setup(self) -> None:
        self._counters = Counters(self._plan.config.name)
        self._in_workers = _prepares_in_workers(self._plan, self._processes)

    def process(self, _, window=beam.DoFn.WindowParam):
        pool = _pool_if(self._in_workers, self._plan, self._processes)
        for value, _ in self._read(pool, window).outputs(self._counters, grouped=True):
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
            _LOG.info("TRAIN %s reads %s in its own process, not in parts: %s",
                      self._plan.config.name, self._csv.path, failed)
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


class PrepareGroups(beam.DoFn):
    """A key's rows (after a GroupByKey of rows) -> ``keyed``, ``errors`` and ``labels``
    (runners without batched DoFns or finish_bundle outputs, such as Beam's DaskRunner)."""

    def __init__(self, plan: Plan):
        self._plan = plan

    def setup(self) -> None:
        self._counters = Counters(self._plan.config.name)

    def process(self, element):
        _, rows = element
        prepared = prepare_chunk(self._plan, rows_to_frame(list(rows), self._plan.columns))
        yield from _report(self._plan, prepared, self._counters)
        yield tagged("labels", prepared.labels)
        for key, part in prepared.parts:
            yield tagged("keyed", (key, [part]))


def union(label_sets: Iterable[Iterable[Any]]) -> list:
    """The sorted union of the label sets the Prepare stage saw."""
    out: set = set()
    for labels in label_sets:
        out.update(labels)
    return sorted(out)


def prepare_groups(rows: beam.PCollection, plan: Plan) -> beam.PCollection:
    """Prepare for runners without batched DoFns or finish_bundle outputs: rows grouped
    by key first, each key's rows one frame."""
    key = _row_key(plan)
    return (
        rows
        | "KeyRows" >> beam.Map(lambda row: (key(row), row))
        | "GroupRows" >> beam.GroupByKey()
        | "Prepare" >> beam.ParDo(PrepareGroups(plan))
    )
