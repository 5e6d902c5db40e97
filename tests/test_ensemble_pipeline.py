"""An ENSEMBLE pipelines the batches of a frame (beam_dsl/transforms/ensemble/transform.py):
the next batches are at work while the rows of one are made, each model serves one
batch at a time, and the outputs come out in the input's order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from beam_dsl.ir.ensemble import EnsembleConfig, Output, Step
from beam_dsl.ir.model import Batch, ModelConfig
from beam_dsl.transforms.ensemble.transform import RunEnsemble, _Ensemble
from beam_dsl.transforms.inference import predictors

FIELDS = {"user_id": int, "x": float}


class _Recorder:
    """A predictor that answers ``<model>:<x>``, notices two threads inside it at once,
    and waits at ``barrier`` on the calls numbered in ``meet_on``."""

    def __init__(self, name: str, barrier: threading.Barrier | None = None, meet_on=()):
        self.name, self.barrier, self.meet_on = name, barrier, set(meet_on)
        self.calls, self.inside, self.shared, self.met = 0, 0, False, []
        self.guard = threading.Lock()

    def predict(self, frame: pd.DataFrame, scores: bool = True) -> pd.DataFrame:
        with self.guard:
            call, self.calls = self.calls, self.calls + 1
            self.inside += 1
            self.shared |= self.inside > 1
        try:
            if call in self.meet_on:
                try:
                    self.barrier.wait()
                    self.met.append(True)
                except threading.BrokenBarrierError:
                    self.met.append(False)
            else:
                time.sleep(np.random.default_rng(call).uniform(0, 0.004))
            first = frame.columns[-1]
            labels = [f"{self.name}:{v}" for v in frame[first]]
            return pd.DataFrame({"label": labels, "confidence": 1.0, "proba": None,
                                 "model_id": self.name, "model_key": None, "error": None},
                                index=frame.index)
        finally:
            with self.guard:
                self.inside -= 1


def _chain(rows_per_batch: int) -> EnsembleConfig:
    """``STEP a = first(x); STEP b = second(a); OUTPUT b``: the second model reads the first's."""
    models = {m: ModelConfig(m, "custom", input=("x",), output=("label",),
                             batch=Batch(1, rows_per_batch)) for m in ("first", "second")}
    return EnsembleConfig("chain", models, steps=(Step("a", "first", ("x",)),
                                                  Step("b", "second", ("a",))),
                          output=Output("step", ("b",), {}, "label"))


def _ensemble(monkeypatch, config: EnsembleConfig, recorders: dict) -> _Ensemble:
    monkeypatch.setattr(predictors, "build_predictor",
                        lambda model, allow_pickle: recorders[model.name])
    ensemble = _Ensemble(RunEnsemble.from_config(config).plan, FIELDS, allow_pickle=False)
    ensemble.setup()
    return ensemble


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.arange(rows), "x": np.arange(rows) / 4})


def test_the_next_batch_runs_while_the_one_before_is_in_the_next_model(monkeypatch):
    """The first model's second batch meets the second model's first batch: they run at
    once (without pipelining the second model waits for the first alone and the barrier
    breaks)."""
    barrier = threading.Barrier(2, timeout=5)
    recorders = {"first": _Recorder("first", barrier, meet_on={1}),
                 "second": _Recorder("second", barrier, meet_on={0})}
    ensemble = _ensemble(monkeypatch, _chain(4), recorders)
    try:
        outputs = list(ensemble.outputs(_frame(12)))
    finally:
        ensemble.teardown()
    assert recorders["first"].met == recorders["second"].met == [True]
    assert [row.user_id for tag, row in outputs if tag == "main"] == list(range(12))


@pytest.mark.parametrize("rows", [1, 4, 5, 37])
def test_pipelined_batches_keep_order_and_never_share_a_predictor(monkeypatch, rows):
    recorders = {m: _Recorder(m) for m in ("first", "second")}
    ensemble = _ensemble(monkeypatch, _chain(4), recorders)
    try:
        outputs = list(ensemble.outputs(_frame(rows)))
    finally:
        ensemble.teardown()
    assert not recorders["first"].shared and not recorders["second"].shared
    assert recorders["first"].calls == recorders["second"].calls == -(-rows // 4)
    main = [row for tag, row in outputs if tag == "main"]
    assert [row.user_id for row in main] == list(range(rows))
    assert [row.label for row in main] == [f"second:first:{x / 4}" for x in range(rows)]


def test_a_failing_batch_fails_the_frame_and_leaves_nothing_running(monkeypatch):
    class _Fails(_Recorder):
        def predict(self, frame, scores=True):
            if self.calls == 1:
                self.calls += 1
                raise RuntimeError("batch 2 failed")
            return super().predict(frame, scores)

    recorders = {"first": _Fails("first"), "second": _Recorder("second")}
    ensemble = _ensemble(monkeypatch, _chain(4), recorders)
    with pytest.raises(RuntimeError, match="batch 2 failed"):
        list(ensemble.outputs(_frame(40)))
    ensemble.teardown()
    time.sleep(0.1)
    calls = recorders["first"].calls
    time.sleep(0.1)
    assert recorders["first"].calls == calls < 10  # the batches after it were cancelled


def test_rows_that_arrive_one_by_one_all_reach_a_writer_of_batches(monkeypatch, tmp_path):
    """After WaitOn the rows arrive one by one and are answered at the end of the bundle.
    Beam 2.77 flushes a step's outputs before its finish_bundle, so what a DoFn emits
    there into a step that takes batches (WriteToJson) never reaches it: every row
    must still reach the file (runner_compat.FrameOutputs)."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.util import WaitOn

    recorders = {m: _Recorder(m) for m in ("first", "second")}
    monkeypatch.setattr(predictors, "build_predictor",
                        lambda model, allow_pickle: recorders[model.name])
    _frame(37).to_csv(tmp_path / "in.csv", index=False)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        rows = p | beam.io.ReadFromCsv(str(tmp_path / "in.csv")) | WaitOn(p | beam.Create([1]))
        outputs = rows | RunEnsemble.from_config(_chain(4))
        _ = outputs["main"] | beam.io.WriteToJson(str(tmp_path / "main"))
    written = pd.concat(pd.read_json(f, lines=True) for f in tmp_path.glob("main*"))
    assert sorted(written.user_id) == list(range(37))
