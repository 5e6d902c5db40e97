"""ENSEMBLE: several MODELs behind one Beam transform (LANGUAGE.md section 3).

:class:`RunEnsemble` is built from an :class:`~beam_dsl.ir.ensemble.EnsembleConfig`
and runs its :class:`~beam_dsl.transforms.ensemble.plan.EnsemblePlan` over
frames of rows: the config's form (:mod:`~beam_dsl.transforms.ensemble.forms`:
STEPs with an OUTPUT combiner, SPLIT, CASCADE or SWITCH) and its SHADOW
models. Each model loads once per worker, through the predictors MODEL uses.

The batches of a frame are pipelined: while the runner's thread makes the rows
of one batch, the next two are at work on two threads, and each model serves
one batch at a time (its predictor is never called from two threads at once).
So a model's batches follow each other with no gap for the others' work: BLIP
generates batch i+1 on the GPU while CLIP scores batch i and the host decodes
and tokenizes its captions.

Outputs (docs/ENSEMBLES.md lists their columns):

* ``main``: the input fields, the result and each member's answer and provenance;
* ``shadow``: the SHADOW models' answers beside the served one;
* ``errors``: rows a member rejected or the combiner could not combine, as
  ``row`` (the input fields as JSON), ``reason`` and ``transform``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import pandas as pd

from beam_dsl.ir.ensemble import EnsembleConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    error_rows,
    fitting_rows,
    frame_rows,
    row_maker,
    row_type,
    schema_fields,
    slices,
)
from beam_dsl.transforms.common.runner_compat import FrameOutputs
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.ensemble.plan import EnsemblePlan

E_INPUT = "E452"  # input rows without a schema, or fields the outputs would overwrite

Answers = tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.DataFrame | None]

# Batches at work at once beyond the one whose rows are being made: two threads
# keep each model busy while another model (or the main thread) works on the
# batch before.
AHEAD = 2


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

    Yields ``(tag, row)`` pairs, which ``runner_compat.FrameOutputs`` turns into Beam
    outputs.
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
        chunks = slices(frame, self.max_rows)
        for chunk, (main, unfit, rejected, shadow) in zip(
            chunks, self._answers(chunks), strict=True
        ):
            for row in frame_rows(main, [n for n, _ in self.main_fields], self.make_main):
                yield "main", row
            errors = pd.concat([unfit, rejected])
            for row in error_rows(chunk.loc[errors.index], errors, self.plan.name):
                yield "errors", row
            if shadow is not None:
                columns = [n for n, _ in self.shadow_fields]
                for row in frame_rows(shadow, columns, self.make_shadow):
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
        fitting, unfit = fitting_rows(chunk, self.fields)
        main, rejected, shadow = self.plan.run(fitting, self.predictors, self.pool)
        return main, unfit, rejected, shadow


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
            ensemble, list(fields), ensemble.frame_rows, ("main", "errors", "shadow"))
        main, errors, shadow = outputs["main"], outputs["errors"], outputs["shadow"]
        main.element_type = row_type(ensemble.main_fields)
        errors.element_type = ERROR_ROW_TYPE
        shadow.element_type = row_type(ensemble.shadow_fields)
        return {"main": main, "errors": errors, "shadow": shadow}
