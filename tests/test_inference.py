"""MODEL inference: the predictor API (models.py) and RunModel (inference.py).

Every model here is trained in the test (scikit-learn) or built by
``pipelines/`` scripts (PyTorch, ONNX, Hugging Face), written through the
real model store, and loaded back through the real code; pipelines run on
Beam's in-process runner.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import apache_beam as beam
import joblib
import numpy as np
import pandas as pd
import pytest
from apache_beam.ml.inference.base import ModelHandler, ModelMetadata, PredictionResult
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.typehints.row_type import RowTypeConstraint
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.transforms.inference.predictors import build_predictor, key_paths
from beam_dsl.transforms.inference.transform import PredictorHandler, RunModel
from beam_dsl.transforms.training import modelstore


def model_config(name: str, framework: str = "sklearn", **overrides) -> dict:
    """A MODEL config shaped like beam_dsl.dsl.lower emits it."""
    config = {
        "name": name,
        "framework": framework,
        "path": None,
        "handler": None,
        "model_class": None,
        "call": None,
        "per": [],
        "fallback": None,
        "input": None,
        "output": [name],
        "batch": {"min": 1, "max": 1024, "wait_s": None},
        "device": "cpu",
        "shared": False,
        "refresh_s": None,
    }
    config.update(overrides)
    return config


def _json_lines(pcoll, path: str, label: str) -> None:
    _ = (
        pcoll
        | f"{label}Json" >> beam.Map(lambda r: json.dumps(r._asdict(), sort_keys=True))
        | f"{label}Write" >> beam.io.WriteToText(path, shard_name_template="")
    )


def _read_lines(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_model(tmp_path, rows: list[beam.Row], config: dict, before_run=None, **kwargs):
    """Runs RunModel over ``rows``; returns its (main, errors) rows as dicts."""
    out = str(tmp_path / "out")
    pipeline = beam.Pipeline(runner=FnApiRunner())
    results = pipeline | beam.Create(rows) | RunModel(**config, **kwargs)
    _json_lines(results["main"], out + ".main", "Main")
    _json_lines(results["errors"], out + ".errors", "Errors")
    if before_run is not None:
        before_run()
    pipeline.run().wait_until_finish()
    return _read_lines(out + ".main"), _read_lines(out + ".errors")


# ---------------------------------------------------------------- data and models


def census(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Small census-like rows: numbers, a category, a key and a label that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "hours": rng.integers(10, 60, n).astype(float),
            "education": rng.choice(["Bachelors", "Masters", "Doctorate", "HS grad"], n),
        }
    )
    frame["income"] = np.where(frame.age + frame.hours > 85, ">50K", "<=50K")
    return frame


def as_rows(frame: pd.DataFrame) -> list[beam.Row]:
    return [beam.Row(**record) for record in frame.to_dict("records")]


def fit_classifier(frame: pd.DataFrame, flip: bool = False) -> LogisticRegression:
    labels = frame.income
    if flip:  # a model that answers the opposite, to tell models apart
        labels = labels.map({">50K": "<=50K", "<=50K": ">50K"})
    return LogisticRegression(max_iter=500).fit(frame[["age", "hours"]], labels)


# ---------------------------------------------------------------- the predictor API


def test_predictor_answers_a_frame_with_scores_and_provenance(tmp_path):
    frame = census()
    model = fit_classifier(frame)
    path = str(tmp_path / "income.skops")
    sha = modelstore.save_model(model, path)
    predictor = build_predictor(model_config("income", path=path, output=["predicted"]))
    batch = frame.iloc[10:20].set_index(pd.Index(range(100, 110)))
    result = predictor.predict(batch)
    assert list(result.index) == list(batch.index)
    assert result["predicted"].tolist() == model.predict(batch[["age", "hours"]]).tolist()
    proba = model.predict_proba(batch[["age", "hours"]])
    assert result["confidence"].tolist() == pytest.approx(proba.max(axis=1).tolist())
    first = dict(zip(model.classes_, proba[0], strict=True))
    assert result["proba"].iloc[0] == pytest.approx(first)
    assert set(result["model_id"]) == {f"{path}@{sha[:12]}"}
    assert result["model_key"].isna().all() and result["error"].isna().all()
    no_scores = predictor.predict(batch, scores=False)
    assert no_scores["confidence"].isna().all() and no_scores["proba"].isna().all()


def test_predictor_gives_a_regressor_no_confidence(tmp_path):
    frame = census()
    path = str(tmp_path / "hours.skops")
    model = LinearRegression().fit(frame[["age"]], frame.hours)
    modelstore.save_model(model, path)
    result = build_predictor(model_config("hours", path=path)).predict(frame.head(5))
    assert result["hours"].tolist() == pytest.approx(model.predict(frame[["age"]].head(5)))
    assert result["confidence"].isna().all() and result["proba"].isna().all()


def test_predictor_isolates_the_rows_a_model_rejects(tmp_path):
    frame = census(20)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    modelstore.save_model(model, path)
    batch = frame.copy()
    batch.loc[[3, 11], "age"] = np.nan  # LogisticRegression refuses NaN
    result = build_predictor(model_config("income", path=path)).predict(batch)
    assert result.index[result["error"].notna()].tolist() == [3, 11]
    assert "NaN" in result.loc[3, "error"]
    good = batch.drop(index=[3, 11])
    expected = model.predict(good[["age", "hours"]]).tolist()
    assert result.loc[good.index, "income"].tolist() == expected


def test_without_input_a_model_reads_the_columns_it_was_trained_on(tmp_path):
    frame = census(50)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)  # fitted on a frame: feature_names_in_ = age, hours
    modelstore.save_model(model, path)
    predictor = build_predictor(model_config("income", path=path))
    assert predictor.inputs == ["age", "hours"]
    result = predictor.predict(frame)  # education and income are ignored
    assert result["income"].tolist() == model.predict(frame[["age", "hours"]]).tolist()
    missing = predictor.predict(frame.drop(columns=["hours"]))
    assert missing["error"].str.contains("missing input column").all()


def test_pickle_files_need_allow_pickle(tmp_path):
    frame = census(50)
    path = str(tmp_path / "income.joblib")
    joblib.dump(fit_classifier(frame), path)
    config = model_config("income", path=path)
    with pytest.raises(DiagnosticError) as refused:
        build_predictor(config)
    assert refused.value.diagnostics[0].code == "E402"
    assert "allow_pickle" in str(refused.value)
    assert build_predictor(config, allow_pickle=True).predict(frame)["error"].isna().all()


def test_a_missing_model_file_is_an_E401(tmp_path):
    with pytest.raises(DiagnosticError) as missing:
        build_predictor(model_config("income", path=str(tmp_path / "nope.skops")))
    assert missing.value.diagnostics[0].code == "E401"
    assert "MODEL income" in str(missing.value)


# ---------------------------------------------------------------- RunModel


def test_run_model_adds_predictions_and_model_id_to_each_row(tmp_path):
    frame = census(120)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    sha = modelstore.save_model(model, path)
    config = model_config(
        "income", path=path, input=["age", "hours"], output=["predicted_income"],
        batch={"min": 8, "max": 32, "wait_s": None},
    )
    main, errors = run_model(tmp_path, as_rows(frame), config)
    assert errors == []
    assert len(main) == len(frame)
    keys = zip(frame.age, frame.hours, frame.education, strict=True)
    expected = dict(zip(keys, model.predict(frame[["age", "hours"]]), strict=True))
    for row in main:
        assert set(row) == {"age", "hours", "education", "income", "predicted_income", "model_id"}
        assert row["predicted_income"] == expected[(row["age"], row["hours"], row["education"])]
        assert row["model_id"] == f"{path}@{sha[:12]}"


def test_run_model_output_can_replace_an_input_field(tmp_path):
    frame = census(30)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame, flip=True)
    modelstore.save_model(model, path)
    main, _ = run_model(tmp_path, as_rows(frame), model_config("income", path=path))
    assert sorted(r["income"] for r in main) == sorted(model.predict(frame[["age", "hours"]]))
    assert set(main[0]) == {"age", "hours", "education", "income", "model_id"}


def test_run_model_sends_rejected_rows_to_errors_and_finishes(tmp_path):
    frame = census(40)
    path = str(tmp_path / "income.skops")
    modelstore.save_model(fit_classifier(frame), path)
    rows = as_rows(frame)
    rows[5] = beam.Row(age=None, hours=20.0, education="Masters", income="<=50K")
    batch = {"min": 4, "max": 16, "wait_s": 0.05}  # BATCH 4 TO 16 WAIT 50ms
    main, errors = run_model(tmp_path, rows, model_config("income", path=path, batch=batch))
    assert len(main) == 39 and len(errors) == 1
    assert json.loads(errors[0]["row"]) == {
        "age": None, "hours": 20.0, "education": "Masters", "income": "<=50K"}
    assert "NaN" in errors[0]["reason"] and errors[0]["transform"] == "income"


def test_an_input_column_the_rows_lack_is_an_E405_at_construction(tmp_path):
    frame = census(10)
    config = model_config("income", path=str(tmp_path / "x.skops"), input=["age", "salary"])
    with pytest.raises(DiagnosticError) as missing:
        run_model(tmp_path, as_rows(frame), config)
    assert missing.value.diagnostics[0].code == "E405"
    assert "salary" in str(missing.value)


def test_batch_and_shared_clauses_reach_beam():
    config = model_config("m", batch={"min": 32, "max": 1024, "wait_s": 0.1}, shared=True)
    handler = PredictorHandler(config, ["a"])
    assert handler.batch_elements_kwargs() == {
        "min_batch_size": 32, "max_batch_size": 1024, "max_batch_duration_secs": 0.1}
    assert handler.share_model_across_processes()


# ---------------------------------------------------------------- PER models


def save_per_key_models(tmp_path, frame: pd.DataFrame, keys: dict[str, bool], manifest=True):
    """One model per education key (``flip`` on Masters, to tell them apart), plus a manifest.

    ``keys`` maps a key to whether it is promoted: unpromoted ones are listed
    in the manifest but not written, as TRAIN does for models failing GATE.
    """
    template = str(tmp_path / "models" / "income" / "{key}.skops")
    entries, models = [], {}
    for key, promoted in keys.items():
        model = fit_classifier(frame[frame.education == key], flip=key == "Masters")
        path = modelstore.resolve(template, (key,))
        entry = {"key": [key], "file": os.path.basename(path), "promoted": promoted}
        if promoted:
            entry["sha256"] = modelstore.save_model(model, path)
            models[key] = model
        entries.append(entry)
    if manifest:
        modelstore.write_manifest(template, {"models": entries})
    return template, models


def test_per_key_models_come_from_the_manifest_with_a_fallback(tmp_path):
    frame = census(400)
    template, models = save_per_key_models(
        tmp_path, frame, {"Bachelors": True, "Masters": True, "Doctorate": False}
    )
    assert set(key_paths(template)) == {"Bachelors", "Masters"}
    fallback_path = str(tmp_path / "models" / "income_global.skops")
    fallback = fit_classifier(frame)
    fallback_sha = modelstore.save_model(fallback, fallback_path)
    fallback_config = model_config("income_global", path=fallback_path, output=["predicted"])
    config = model_config(
        "income_models", path=template, per=["education"], fallback=fallback_config,
        input=["age", "hours"], output=["predicted"],
    )
    main, errors = run_model(tmp_path, as_rows(frame), config)
    assert errors == [] and len(main) == len(frame)
    fallback_id = f"{fallback_path}@{fallback_sha[:12]}"
    served = pd.DataFrame(main)
    for key, rows in served.groupby("education"):
        # Bachelors, Masters: their own model; Doctorate (failed the gate), HS grad
        # (never trained): the fallback
        model = models.get(key, fallback)
        assert rows["predicted"].tolist() == model.predict(rows[["age", "hours"]]).tolist()
        if key in models:
            assert set(rows["model_key"]) == {key}
            assert rows["model_id"].str.startswith(modelstore.resolve(template, (key,)) + "@").all()
        else:
            assert set(rows["model_key"]) == set(rows["model_id"]) == {fallback_id}
    assert set(served["model_key"]) == {"Bachelors", "Masters", fallback_id}


def test_per_key_without_manifest_or_fallback_sends_unknown_keys_to_errors(tmp_path):
    frame = census(200)
    template, models = save_per_key_models(
        tmp_path, frame, {"Bachelors": True, "Masters": True}, manifest=False
    )
    config = model_config("income_models", path=template, per=["education"],
                          input=["age", "hours"])
    main, errors = run_model(tmp_path, as_rows(frame), config)
    served = frame.education.isin(["Bachelors", "Masters"])
    assert len(main) == served.sum() and len(errors) == (~served).sum()
    assert {r["model_key"] for r in main} == {"Bachelors", "Masters"}
    reasons = {e["reason"] for e in errors}
    assert reasons == {
        "no model for key education='Doctorate' and no FALLBACK",
        "no model for key education='HS grad' and no FALLBACK",
    }


def test_per_key_set_is_read_at_run_time_not_at_construction(tmp_path):
    frame = census(200)
    template = str(tmp_path / "models" / "income" / "{key}.skops")
    config = model_config("income_models", path=template, per=["education"],
                          input=["age", "hours"], output=["predicted"])
    written = {}

    def train_models():  # as a TRAIN earlier in the same pipeline would
        written.update(save_per_key_models(tmp_path, frame, {"Doctorate": True})[1])

    main, errors = run_model(tmp_path, as_rows(frame), config, before_run=train_models)
    assert {r["model_key"] for r in main} == {"Doctorate"}
    assert len(main) == (frame.education == "Doctorate").sum()
    assert len(errors) == len(frame) - len(main)


def test_a_key_whose_model_file_is_broken_gets_errors_not_a_crash(tmp_path):
    frame = census(200)
    template, _ = save_per_key_models(tmp_path, frame, {"Bachelors": True, "Masters": True},
                                      manifest=False)
    with open(modelstore.resolve(template, ("Masters",)), "wb") as f:
        f.write(b"not a model")
    config = model_config("income_models", path=template, per=["education"],
                          input=["age", "hours"])
    main, errors = run_model(tmp_path, as_rows(frame[frame.education != "HS grad"]), config)
    assert {r["model_key"] for r in main} == {"Bachelors"}
    masters = [e for e in errors if json.loads(e["row"])["education"] == "Masters"]
    assert masters and all("Masters.skops" in e["reason"] for e in masters)


def test_per_key_refresh_picks_up_retrained_models(tmp_path):
    frame = census(200)
    template, _ = save_per_key_models(tmp_path, frame, {"Bachelors": True}, manifest=False)
    config = model_config("m", path=template, per=["education"], input=["age", "hours"],
                          refresh_s=0.01)
    predictor = build_predictor(config)
    rows = frame[frame.education == "Bachelors"]
    before = predictor.predict(rows)
    path = modelstore.resolve(template, ("Bachelors",))
    modelstore.save_model(fit_classifier(rows, flip=True), path)
    os.utime(path, (1, 1))  # a different mtime for sure
    after = predictor.predict(rows)
    assert (before["m"] != after["m"]).all()
    assert before["model_id"].iloc[0] != after["model_id"].iloc[0]


# ---------------------------------------------------------------- DEVICE


def test_device_gpu_without_a_gpu_is_an_E403_and_auto_falls_back(tmp_path, caplog):
    from beam_dsl.transforms.inference.predictors import gpu_visible, resolve_device

    if gpu_visible():
        pytest.skip("a GPU is visible here")
    with pytest.raises(DiagnosticError) as no_gpu:
        resolve_device(model_config("blip", device="gpu"))
    assert no_gpu.value.diagnostics[0].code == "E403"
    assert "DEVICE AUTO" in str(no_gpu.value)
    with caplog.at_level(logging.INFO, logger="beam_dsl.transforms.inference.predictors"):
        assert resolve_device(model_config("clip", device="auto")) == "cpu"
    assert "DEVICE AUTO found no GPU" in caplog.text


def test_decision_trees_load_with_the_types_train_recorded(tmp_path):
    frame = census(100)
    template = str(tmp_path / "trees" / "{key}.skops")
    path = modelstore.resolve(template, ("Bachelors",))
    tree = DecisionTreeClassifier(max_depth=3).fit(frame[["age", "hours"]], frame.income)
    sha = modelstore.save_model(tree, path)
    config = model_config("trees", path=template, per=["education"], input=["age", "hours"])
    # no manifest: skops does not trust sklearn's Tree type, so the key's rows get errors
    refused = build_predictor(config).predict(frame[frame.education == "Bachelors"])
    assert refused["error"].str.contains("not trusted").all()
    entry = {"key": ["Bachelors"], "file": "Bachelors.skops", "sha256": sha, "promoted": True,
             "trusted_types": ["sklearn.tree._tree.Tree"]}
    modelstore.write_manifest(template, {"models": [entry]})
    answered = build_predictor(config).predict(frame[frame.education == "Bachelors"])
    assert answered["error"].isna().all()
    modelstore.save_model(DecisionTreeClassifier().fit(frame[["age"]], frame.income), path)
    changed = build_predictor(config).predict(frame[frame.education == "Bachelors"])
    assert changed["error"].str.contains("not trusted").all()  # not the file TRAIN wrote


TRAIN_AND_SERVE_SPEC = """
TRAIN income_by_education
  PER education
  FEATURES age, hours
  LABEL income
  USING sklearn.tree.DecisionTreeClassifier(max_depth = 4, random_state = 0)
  METRICS accuracy
  MIN ROWS 100
  SAVE TO 'models/income/{key}.skops';

TRAIN train_global
  FEATURES age, hours
  LABEL income
  USING sklearn.linear_model.LogisticRegression(max_iter = 500)
  SAVE TO 'models/income_global.skops';

MODEL income_models
  SKLEARN 'models/income/{key}.skops'
  PER education
  FALLBACK income_global
  OUTPUT predicted_income
  BATCH 32 TO 1024;

MODEL income_global
  SKLEARN 'models/income_global.skops'
  OUTPUT predicted_income;
"""

TRAIN_AND_SERVE_PIPELINE = """
specs:
  - income.bdsl
pipeline:
  type: composite
  transforms:
    - type: ReadFromCsv
      name: census
      config: {path: census.csv}
    - type: income_by_education
      input: census
    - type: train_global
      input: census
    - type: income_models
      input: {input: census, models: income_by_education, fallback: train_global}
    - type: WriteToJson
      name: write_predictions
      input: income_models
      config: {path: out/predictions}
"""


def test_one_pipeline_trains_per_key_models_then_serves_them(tmp_path):
    """TRAIN and MODEL in one Beam YAML pipeline: scoring waits for the models it reads.

    Doctorate has too few rows for MIN ROWS, so its rows go to the FALLBACK
    that the same pipeline trains. No INPUT: the models read the columns
    TRAIN fitted them on; TRAIN's decision trees load with the skops types
    its manifest records.
    """
    from beam_dsl.runner import run_pipeline

    frame = census(500)
    frame = frame[(frame.education != "Doctorate") | (frame.index % 2 == 0)]  # < 100 rows
    frame.to_csv(tmp_path / "census.csv", index=False)
    (tmp_path / "income.bdsl").write_text(TRAIN_AND_SERVE_SPEC)
    (tmp_path / "pipeline.yaml").write_text(TRAIN_AND_SERVE_PIPELINE)
    summary = run_pipeline(str(tmp_path / "pipeline.yaml"), progress=None)
    assert summary.rows_out["income_models.main"] == len(frame)
    assert summary.rows_out.get("income_models.errors", 0) == 0
    served = pd.concat(pd.read_json(p, lines=True)
                       for p in glob.glob(str(tmp_path / "out" / "predictions*")))
    fallback = served.model_id[served.education == "Doctorate"].unique()
    assert len(fallback) == 1 and fallback[0].startswith("models/income_global.skops@")
    assert set(served.model_key) == {"Bachelors", "Masters", "HS grad", fallback[0]}
    assert (served.predicted_income == served.income).mean() > 0.8


# ---------------------------------------------------------------- CUSTOM


class ScaleHandler(ModelHandler):
    """A user's own Beam ModelHandler: multiplies by the factor in a JSON model file."""

    def __init__(self, path: str):
        self._path = path

    def load_model(self) -> float:
        with open(self._path) as f:
            return json.load(f)["factor"]

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(x, x * model) for x in batch]

    def update_model_path(self, model_path=None):
        self._path = model_path or self._path


def write_factor(path, factor: float) -> str:
    with open(path, "w") as f:
        json.dump({"factor": factor}, f)
    return str(path)


def custom_config(path: str, **overrides) -> dict:
    handler = {"callable": "test_inference.ScaleHandler", "args": [], "kwargs": {"path": path}}
    return model_config("scaled", "custom", handler=handler, input=["x"], **overrides)


def test_custom_runs_a_users_beam_model_handler(tmp_path):
    path = write_factor(tmp_path / "factor.json", 3)
    rows = [beam.Row(x=float(i), name=f"r{i}") for i in range(10)]
    main, errors = run_model(tmp_path, rows, custom_config(path))
    assert errors == []
    assert sorted((r["x"], r["scaled"]) for r in main) == [(float(i), 3.0 * i) for i in range(10)]
    assert {r["model_id"] for r in main} == {f"{path}@{modelstore.file_sha256(path)[:12]}"}


def test_custom_handler_that_cannot_be_imported_is_an_E404():
    config = model_config("ranker", "custom", handler={
        "callable": "mypkg.handlers.RankerHandler", "args": [], "kwargs": {}})
    with pytest.raises(DiagnosticError) as missing:
        build_predictor(config)
    assert missing.value.diagnostics[0].code == "E404"
    assert "mypkg.handlers.RankerHandler" in str(missing.value)


# ---------------------------------------------------------------- REFRESH


def test_model_updates_switch_predictions_to_the_new_model(tmp_path):
    """RunInference's side-input model updates, fed as REFRESH's file watch feeds them.

    Rows and updates are timestamped into 10-second windows (a bounded,
    deterministic stand-in for a streaming run): rows of the first window
    meet model v1, later rows the v2 file that appeared after it.
    """
    v1 = write_factor(tmp_path / "factor-1.json", 2)
    v2 = write_factor(tmp_path / "factor-2.json", 5)
    out = str(tmp_path / "out")
    window = beam.window.FixedWindows(10)
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        updates = (
            pipeline
            | "Updates" >> beam.Create([(1, v1), (12, v2), (25, v2)])
            | "StampUpdates" >> beam.Map(
                lambda u: beam.window.TimestampedValue(ModelMetadata(u[1], "factor"), u[0]))
            | "WindowUpdates" >> beam.WindowInto(window)
        )
        rows = (
            pipeline
            | "Rows" >> beam.Create([(t, float(t)) for t in (2, 5, 13, 18, 27)])
            | "StampRows" >> beam.Map(
                lambda r: beam.window.TimestampedValue(beam.Row(x=r[1]), r[0])
            ).with_output_types(RowTypeConstraint.from_fields([("x", float)]))
            | "WindowRows" >> beam.WindowInto(window)
        )
        config = custom_config(v1, refresh_s=600.0)
        results = {"input": rows, "model_updates": updates} | RunModel(**config)
        _json_lines(results["main"], out, "Main")
    by_x = {r["x"]: r for r in _read_lines(out)}
    assert {x: r["scaled"] for x, r in by_x.items()} == {
        2.0: 4.0, 5.0: 10.0, 13.0: 65.0, 18.0: 90.0, 27.0: 135.0}
    assert by_x[2.0]["model_id"].startswith(v1 + "@")
    assert by_x[27.0]["model_id"].startswith(v2 + "@")


def test_refresh_watches_the_model_files_in_streaming_pipelines(tmp_path):
    path = write_factor(tmp_path / "factor-1.json", 2)
    config = custom_config(str(tmp_path / "factor-*.json"), refresh_s=30.0)
    labels = []

    class Labels(PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.append(node.full_label)

    for streaming in (True, False):
        labels.clear()
        pipeline = beam.Pipeline(options=PipelineOptions(streaming=streaming))
        rows = pipeline | beam.Create([beam.Row(x=1.0)])
        _ = rows | RunModel(**config)
        pipeline.visit(Labels())
        watching = any(label.endswith("WatchFilePattern") or "Watch scaled" in label
                       for label in labels)
        assert watching == streaming
    assert build_predictor(config).model_id.startswith(path + "@")  # the newest match loads


# ---------------------------------------------------------------- SHARED


def test_shared_loads_one_copy_for_every_process(tmp_path):
    frame = census(40)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    modelstore.save_model(model, path)
    config = model_config("income", path=path, input=["age", "hours"], shared=True)
    main, errors = run_model(tmp_path, as_rows(frame), config)
    assert errors == [] and len(main) == len(frame)
    assert sorted(r["income"] for r in main) == sorted(model.predict(frame[["age", "hours"]]))
