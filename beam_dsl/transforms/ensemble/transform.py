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

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.schemas import named_fields_to_schema, named_tuple_from_schema

from beam_dsl.ir.ensemble import EnsembleConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    FrameDoFn,
    conform_to_schema,
    error_rows,
    row_type,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import RowsToFrames, runs_batches, select
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.ensemble.plan import EnsemblePlan

E_INPUT = "E452"  # input rows without a schema, or fields the outputs would overwrite

RowMaker = Callable[[Sequence[Any]], Any]
Answers = tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.DataFrame | None]

# Batches at work at once beyond the one whose rows are being made: two threads
# keep each model busy while another model (or the main thread) works on the
# batch before.
AHEAD = 2


def row_maker(fields: Sequence[tuple[str, Any]]) -> RowMaker:
    """Builds rows of this schema from value tuples.

    Beam's own NamedTuple for the schema (what its RowCoder decodes to, and
    picklable) is several times faster to build than ``beam.Row(**fields)``;
    field names that are not Python identifiers need ``beam.Row``.
    """
    try:
        return named_tuple_from_schema(named_fields_to_schema(list(fields)))._make
    except ValueError:
        names = [n for n, _ in fields]
        return lambda values: beam.Row(**dict(zip(names, values, strict=True)))


def row_values(series: pd.Series) -> list:
    """A column's values for Beam rows: None where a value is missing.

    Beam's frames hold nullable fields in pandas' extension types (``string``
    for ``Optional[str]``), whose missing value ``pd.NA`` Beam's RowCoder
    cannot encode: it fails on the first such row it encodes (every row at a
    fusion break, and the rows Beam samples to estimate sizes, at random).
    """
    if isinstance(series.dtype, np.dtype):
        return series.tolist()
    return series.to_numpy(dtype=object, na_value=None).tolist()


def _rows(frame: pd.DataFrame, columns: Sequence[str], make: RowMaker) -> Iterator[Any]:
    return map(make, zip(*(row_values(frame[c]) for c in columns), strict=True))


class _OneAtATime:
    """A predictor that serves one batch at a time, whichever thread asks.

    Predictors keep state that is not safe to share across threads (a PER
    model's key set and loaded models, a CUSTOM handler's, a decoder's caches).
    """

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.lock = threading.Lock()

    def predict(self, frame: pd.DataFrame, scores: bool = False) -> pd.DataFrame:
        with self.lock:
            return self.predictor.predict(frame, scores=scores)


class _Ensemble:
    """An :class:`EnsemblePlan` at work on frames of rows, with its models loaded.

    Yields ``(tag, row)`` pairs; the DoFns below turn them into Beam outputs.
    """

    def __init__(self, plan: EnsemblePlan, fields: Mapping[str, Any], allow_pickle: bool):
        self.plan = plan
        self.fields = dict(fields)
        self.max_rows = plan.max_rows()
        # rows that arrive one by one gather into frames of several batches, to pipeline
        self.frame_rows = self.max_rows * (AHEAD + 1)
        self.allow_pickle = allow_pickle
        self.main_fields = [*fields.items(), *plan.result_types()]
        self.shadow_fields = [*fields.items(), *plan.shadow_types()]

    def setup(self) -> None:
        from beam_dsl.transforms.inference.predictors import build_predictor

        self.predictors = {
            m: _OneAtATime(build_predictor(self.plan.models[m], allow_pickle=self.allow_pickle))
            for m in self.plan.model_names()
        }
        self.make_main = row_maker(self.main_fields)
        self.make_shadow = row_maker(self.shadow_fields)
        threads = self.plan.form.threads()
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.ahead = ThreadPoolExecutor(AHEAD, thread_name_prefix="beam_dsl-ensemble")

    def teardown(self) -> None:
        for pool in (getattr(self, "pool", None), getattr(self, "ahead", None)):
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def outputs(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        # Frames from a reader can be larger than the models' BATCH maximum.
        chunks = [
            frame.iloc[start : start + self.max_rows].reset_index(drop=True)
            for start in range(0, len(frame), self.max_rows)
        ]
        for chunk, (main, unfit, rejected, shadow) in zip(
            chunks, self._answers(chunks), strict=True
        ):
            for row in _rows(main, [n for n, _ in self.main_fields], self.make_main):
                yield "main", row
            errors = pd.concat([unfit, rejected])
            for row in error_rows(chunk.loc[errors.index], errors, self.plan.name):
                yield "errors", row
            if shadow is not None:
                for row in _rows(shadow, [n for n, _ in self.shadow_fields], self.make_shadow):
                    yield "shadow", row

    def _answers(self, chunks: Sequence[pd.DataFrame]) -> Iterator[Answers]:
        """Each chunk's answers in order, with up to :data:`AHEAD` later chunks at work."""
        if len(chunks) == 1:
            yield self._answer(chunks[0])
            return
        pending: deque[Future] = deque()
        try:
            for chunk in chunks:
                pending.append(self.ahead.submit(self._answer, chunk))
                if len(pending) > AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a failed chunk (or a consumer that stopped) leaves nothing running
            for future in pending:
                future.cancel()

    def _answer(self, chunk: pd.DataFrame) -> Answers:
        """(main, unfit, rejected, shadow): the plan's answers for one chunk, and the
        rows that do not fit the input schema."""
        typed, unfit = conform_to_schema(chunk, self.fields)
        unfit = unfit.dropna()
        main, rejected, shadow = self.plan.run(
            typed.drop(index=unfit.index), self.predictors, self.pool
        )
        return main, unfit, rejected, shadow


class _EnsembleFn(FrameDoFn):
    """Runner with batched DoFns: Beam's frames (or buffered rows) in, tagged outputs out."""

    def __init__(self, ensemble: _Ensemble):
        super().__init__(list(ensemble.fields), ensemble.frame_rows)
        self.ensemble = ensemble

    def setup(self) -> None:
        self.ensemble.setup()

    def teardown(self) -> None:
        self.ensemble.teardown()

    def process_frame(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterator[Any]:
        for tag, row in self.ensemble.outputs(frame):
            yield row if tag == "main" else beam.pvalue.TaggedOutput(tag, row)


class _EnsembleFramesFn(beam.DoFn):
    """Other runners (see :func:`runs_batches`): frames as elements, ``(tag, row)`` out."""

    def __init__(self, ensemble: _Ensemble):
        self.ensemble = ensemble

    def setup(self) -> None:
        self.ensemble.setup()

    def teardown(self) -> None:
        self.ensemble.teardown()

    def process(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        yield from self.ensemble.outputs(frame)


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
        if runs_batches(pcoll.pipeline):
            outputs = pcoll | "Ensemble" >> beam.ParDo(_EnsembleFn(ensemble)).with_outputs(
                "errors", "shadow", main="main"
            )
            main, errors, shadow = outputs.main, outputs.errors, outputs.shadow
        else:
            tagged = (
                pcoll
                | "Frames" >> RowsToFrames(list(fields), ensemble.frame_rows)
                | "Ensemble" >> beam.ParDo(_EnsembleFramesFn(ensemble))
            )
            main, errors, shadow = (
                select(tagged, tag, f"Select {tag}") for tag in ("main", "errors", "shadow")
            )
        main.element_type = row_type(ensemble.main_fields)
        errors.element_type = ERROR_ROW_TYPE
        shadow.element_type = row_type(ensemble.shadow_fields)
        return {"main": main, "errors": errors, "shadow": shadow}
