"""The one place where beam_dsl's transforms fork by runner.

Fn API runners (the in-process FnApiRunner, Dataflow, Flink, Prism) run
batched DoFns, deliver what ``finish_bundle`` emits and keep the tagged
outputs of a multi-output ParDo apart. Beam 2.77's DaskRunner does none of
the three (docs/RUNNERS.md). Each transform states both ways of doing its
work and :func:`by_runner` picks one; :func:`select` and :class:`RowBatches`
are the runner-agnostic building blocks of the portable way. Transforms whose
work is frames in, rows of several outputs out (MODEL, ENSEMBLE) use
:class:`FrameOutputs`, which holds both ways. The run's own
settings live here too: the options object of a run (:class:`RunOptions`) and the
transforms' own option (:class:`WorkerOptions`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_dsl.transforms.common.rows import AsFrames, PairedFrames, TaggedFrames, rows_to_frame


def by_runner(pcoll: beam.PCollection, batched: Callable[[], Any], portable: Callable[[], Any]):
    """``batched()`` where the runner runs batches (:func:`runs_batches`), else ``portable()``."""
    return batched() if runs_batches(pcoll.pipeline) else portable()


def runs_batches(pipeline: beam.Pipeline) -> bool:
    """Whether the runner runs batched DoFns, finish_bundle outputs and tagged outputs.

    Fn API runners do. Beam 2.77's DaskRunner does none of the three: it calls
    ``process`` only, drops what ``finish_bundle`` emits, and hands every
    output of a multi-output ParDo to every consumer.
    """
    return pipeline.runner is not None and pipeline.runner.is_fnapi_compatible()


def select(
    tagged: beam.PCollection, tag: str, label: str, element_type: Any = None
) -> beam.PCollection:
    """The values of one tag of a PCollection of ``(tag, value)`` pairs (the runner-agnostic
    way to have several outputs), typed ``element_type`` where given (a schema, say)."""
    pick = beam.FlatMap(lambda tv: [tv[1]] if tv[0] == tag else [])
    return tagged | label >> (pick.with_output_types(element_type) if element_type else pick)


class _KeyByBatch(beam.DoFn):
    """Keys each row by its bundle and its batch of ``size`` rows within the bundle."""

    def __init__(self, size: int):
        self._size = size

    def start_bundle(self) -> None:
        import uuid

        self._bundle, self._seen = uuid.uuid4().hex, 0

    def process(self, row):
        yield (self._bundle, self._seen // self._size), row
        self._seen += 1


class RowBatches(beam.PTransform):
    """Rows -> lists of up to ``max_rows`` rows, with no output at bundle ends.

    For runners that drop what ``finish_bundle`` emits (see :func:`runs_batches`),
    where Beam's BatchElements loses each bundle's last batch: a GroupByKey
    gathers each batch instead.

    Args:
        max_rows: rows per batch.
    """

    def __init__(self, max_rows: int):
        super().__init__()
        self._max_rows = max_rows

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "KeyByBatch" >> beam.ParDo(_KeyByBatch(self._max_rows))
            | "Gather" >> beam.GroupByKey()
            | "List" >> beam.MapTuple(lambda _, batch: list(batch))
        )


class RowsToFrames(beam.PTransform):
    """Rows -> pandas frames of up to ``max_rows`` rows (:class:`RowBatches` as frames),
    which a :class:`FrameDoFn` takes as they come.

    Args:
        columns: the rows' field names, in schema order.
        max_rows: rows per frame.
    """

    def __init__(self, columns: Sequence[str], max_rows: int):
        super().__init__()
        self._columns = list(columns)
        self._max_rows = max_rows

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        columns = self._columns
        return (
            rows
            | "Batch" >> RowBatches(self._max_rows)
            | "Frame" >> beam.Map(lambda batch: rows_to_frame(batch, columns))
        )


class FrameOutputs(beam.PTransform):
    """Rows -> frames of up to ``max_rows`` rows -> ``work.outputs(frame, *side)`` (see
    :class:`~beam_dsl.transforms.common.rows.TaggedFrames`), as one PCollection per tag.

    Where the runner runs batches, a reader's frames pass through whole
    (:class:`~beam_dsl.transforms.common.rows.AsFrames`); elsewhere
    :class:`RowsToFrames` gathers the rows and :func:`select` parts the tags.

    Args:
        work: the transform's work on frames.
        columns: the rows' field names, in schema order.
        max_rows: rows per frame.
        tags: the output tags, ``"main"`` first.
        side: side inputs (``beam.pvalue.AsSingleton(...)``, ...) for ``work.outputs``.
    """

    def __init__(self, work: Any, columns: Sequence[str], max_rows: int, tags: Sequence[str],
                 *side: Any):
        super().__init__()
        self._work, self._columns, self._max_rows = work, list(columns), max_rows
        self._tags, self._side = list(tags), side

    def expand(self, rows: beam.PCollection):
        if runs_batches(rows.pipeline):
            outputs = (
                rows
                | "Frames" >> beam.ParDo(AsFrames(self._columns, self._max_rows))
                | "Outputs" >> beam.ParDo(TaggedFrames(self._work), *self._side).with_outputs(
                    *self._tags[1:], main="main")
            )
            return {tag: outputs[tag] for tag in self._tags}
        pairs = (
            rows
            | "Frames" >> RowsToFrames(self._columns, self._max_rows)
            | "Outputs" >> beam.ParDo(PairedFrames(self._work), *self._side)
        )
        return {tag: select(pairs, tag, f"Select {tag}") for tag in self._tags}


class RunOptions(PipelineOptions):
    """A run's pipeline options, whose views are made once per class.

    Beam asks the options for a view at every transform it applies
    (``view_as(TypeOptions)``: 200 times for the training benchmark's three
    transforms) and each view builds and runs an argument parser for its
    class, about 0.6 ms: 0.15 s of a run's start. Every view reads and writes
    the options' one store of values (``_all_options``), so one view per class
    behaves as a new view each time. Views stay out of the pickled state.
    """

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self):
        return {k: v for k, v in super().__getstate__().items() if k != "_views"}


class WorkerOptions(PipelineOptions):
    """beam_dsl's pipeline option for worker processes (``beam_dsl run --workers N``)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--beam_dsl_workers",
            type=int,
            default=None,
            help="processes for the CPU-heavy steps of beam_dsl's transforms (TRAIN's fits, "
            "MODEL's predictions) "
            "on each machine: 1 runs them in line; default: every core, once a step's data "
            "repays starting them",
        )


def worker_processes(pipeline: beam.Pipeline) -> int | None:
    """``--beam_dsl_workers`` of ``pipeline``'s options, or None where the run leaves it
    to beam_dsl."""
    return pipeline.options.view_as(WorkerOptions).beam_dsl_workers
