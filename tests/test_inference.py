"""MODEL inference: the predictor API (models.py) and RunModel (inference.py).

Every model here is trained in the test (scikit-learn) or built by
``pipelines/`` scripts (PyTorch, ONNX, Hugging Face), written through the
real model store, and loaded back through the real code; pipelines run on
Beam's in-process runner.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import time
import zipfile
from pathlib import Path

import apache_beam as beam
import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from apache_beam.ml.inference.base import ModelHandler, ModelMetadata, PredictionResult
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.typehints.row_type import RowTypeConstraint
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

import beam_dsl.dsl
from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.ir import Call
from beam_dsl.ir.model import Batch, ModelConfig
from beam_dsl.transforms.inference.predictors import build_predictor, key_paths
from beam_dsl.transforms.inference.transform import RunModel
from beam_dsl.transforms.training import modelstore


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


def run_model(tmp_path, rows: list[beam.Row], config: ModelConfig, before_run=None):
    """Runs RunModel over ``rows``; returns its (main, errors) rows as dicts."""
    out = str(tmp_path / "out")
    pipeline = beam.Pipeline(runner=FnApiRunner())
    results = pipeline | beam.Create(rows) | RunModel.from_config(config)
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
    predictor = build_predictor(ModelConfig("income", "sklearn", path=path, output=("predicted",)))
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
    result = build_predictor(ModelConfig("hours", "sklearn", path=path)).predict(frame.head(5))
    assert result["hours"].tolist() == pytest.approx(model.predict(frame[["age"]].head(5)))
    assert result["confidence"].isna().all() and result["proba"].isna().all()


def test_predictor_isolates_the_rows_a_model_rejects(tmp_path):
    frame = census(20)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    modelstore.save_model(model, path)
    batch = frame.copy()
    batch.loc[[3, 11], "age"] = np.nan  # LogisticRegression refuses NaN
    result = build_predictor(ModelConfig("income", "sklearn", path=path)).predict(batch)
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
    predictor = build_predictor(ModelConfig("income", "sklearn", path=path))
    assert predictor.inputs == ["age", "hours"]
    result = predictor.predict(frame)  # education and income are ignored
    assert result["income"].tolist() == model.predict(frame[["age", "hours"]]).tolist()
    missing = predictor.predict(frame.drop(columns=["hours"]))
    assert missing["error"].str.contains("missing input column").all()


def test_pickle_files_need_allow_pickle(tmp_path):
    frame = census(50)
    path = str(tmp_path / "income.joblib")
    joblib.dump(fit_classifier(frame), path)
    config = ModelConfig("income", "sklearn", path=path)
    with pytest.raises(DiagnosticError) as refused:
        build_predictor(config)
    assert refused.value.diagnostics[0].code == "E402"
    assert "allow_pickle" in str(refused.value)
    assert build_predictor(config, allow_pickle=True).predict(frame)["error"].isna().all()


def test_a_missing_model_file_is_an_E401(tmp_path):
    with pytest.raises(DiagnosticError) as missing:
        build_predictor(ModelConfig("income", "sklearn", path=str(tmp_path / "nope.skops")))
    assert missing.value.diagnostics[0].code == "E401"
    assert "MODEL income" in str(missing.value)


# ---------------------------------------------------------------- RunModel


def test_run_model_adds_predictions_and_model_id_to_each_row(tmp_path):
    frame = census(120)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    sha = modelstore.save_model(model, path)
    config = ModelConfig(
        "income", "sklearn", path=path, input=("age", "hours"), output=("predicted_income",),
        batch=Batch(min=8, max=32),
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
    main, _ = run_model(tmp_path, as_rows(frame), ModelConfig("income", "sklearn", path=path))
    assert sorted(r["income"] for r in main) == sorted(model.predict(frame[["age", "hours"]]))
    assert set(main[0]) == {"age", "hours", "education", "income", "model_id"}


def test_run_model_sends_rejected_rows_to_errors_and_finishes(tmp_path):
    frame = census(40)
    path = str(tmp_path / "income.skops")
    modelstore.save_model(fit_classifier(frame), path)
    rows = as_rows(frame)
    rows[5] = beam.Row(age=None, hours=20.0, education="Masters", income="<=50K")
    batch = Batch(min=4, max=16, wait_s=0.05)  # BATCH 4 TO 16 WAIT 50ms
    main, errors = run_model(tmp_path, rows, ModelConfig("income", "sklearn", path=path,
                                                         batch=batch))
    assert len(main) == 39 and len(errors) == 1
    assert json.loads(errors[0]["row"]) == {
        "age": None, "hours": 20.0, "education": "Masters", "income": "<=50K"}
    assert "NaN" in errors[0]["reason"] and errors[0]["transform"] == "income"


def test_an_input_column_the_rows_lack_is_an_E405_at_construction(tmp_path):
    frame = census(10)
    config = ModelConfig("income", "sklearn", path=str(tmp_path / "x.skops"),
                         input=("age", "salary"))
    with pytest.raises(DiagnosticError) as missing:
        run_model(tmp_path, as_rows(frame), config)
    assert missing.value.diagnostics[0].code == "E405"
    assert "salary" in str(missing.value)


def test_batch_max_bounds_the_rows_each_prediction_sees(tmp_path):
    """BATCH 1 TO 7: the model is called on slices of at most 7 rows."""
    handler = Call("test_inference.BatchSizeHandler")
    config = ModelConfig("seen", "custom", handler=handler, input=("x",), batch=Batch(1, 7))
    main, errors = run_model(tmp_path, [beam.Row(x=float(i)) for i in range(30)], config)
    assert errors == [] and len(main) == 30
    assert max(r["seen"] for r in main) == 7


def test_rows_without_a_schema_are_an_E405():
    pipeline = beam.Pipeline(runner=FnApiRunner())
    rows = pipeline | beam.Create([{"age": 30.0}])
    with pytest.raises(DiagnosticError) as no_schema:
        _ = rows | RunModel.from_config(ModelConfig("m", "sklearn", path="m.skops"))
    assert no_schema.value.diagnostics[0].code == "E405"
    assert "MODEL m" in str(no_schema.value) and "schema" in str(no_schema.value)


@pytest.mark.parametrize(
    "mistake, message",
    [
        ({"framework": "tensorflow"}, "unknown framework 'tensorflow'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"batch": {"min": 64, "max": 8}}, "BATCH 64 TO 8"),
        ({"refresh_s": 0}, "REFRESH EVERY must be a positive duration"),
        ({"per": ["region"]}, "PER needs {key}"),
        ({"path": "models/{key}.skops"}, "has {key} but there is no PER"),
        ({"handler": {"callable": "pkg.Handler"}}, "a CUSTOM MODEL has a handler and no path"),
        ({"model_class": {"callable": "pkg.Net"}}, "CLASS is only for PYTORCH models"),
        ({"framework": "onnx", "path": "m.onnx", "trust": ["x.Y"]},
         "TRUST is only for SKLEARN models"),
        ({"classes": ["yes"]}, "two or more distinct labels"),
        ({"classes": ["no", "yes"], "output": ["label", "score"]}, "a single OUTPUT"),
        ({"fallback": {"name": "g", "framework": "sklearn", "path": "g.skops"}},
         "FALLBACK is only for PER models"),
        ({"path": "models/{key}.skops", "per": ["k"],
          "fallback": {"name": "g", "framework": "sklearn", "path": "g.skops", "device": "tpu"}},
         "MODEL g: error[E406]: unknown device 'tpu'"),
    ],
)
def test_a_model_config_lint_would_refuse_is_an_E406(mistake, message):
    """RunModel built from Python (or a hand-edited compiled file) gets the checks lint makes."""
    config = {"name": "m", "framework": "sklearn", "path": "models/m.skops", **mistake}
    with pytest.raises(DiagnosticError) as refused:
        RunModel(**config)
    assert refused.value.diagnostics[0].code == "E406"
    assert message in str(refused.value)


def test_the_grammar_and_the_frameworks_registry_name_the_same_frameworks():
    """Adding a framework is its module, its import in frameworks/__init__.py and its
    grammar keyword; the CUSTOM clause is the ``custom`` framework."""
    from beam_dsl.transforms.inference.base import SingleModel
    from beam_dsl.vocabulary import family

    grammar = Path(beam_dsl.dsl.__file__).with_name("grammar.lark").read_text()
    token = re.search(r"^FRAMEWORK\.\d+: /\((.*)\)\\b/i$", grammar, re.M)
    frameworks = family("frameworks")
    assert {k.lower() for k in token.group(1).split("|")} | {"custom"} == set(frameworks)
    for name in frameworks:
        entry = frameworks[name]
        assert issubclass(entry.impl, SingleModel) and entry.kind in ("torch", "python")
        assert set(entry.meta["clauses"]) <= {"CLASS", "CALL", "TRUST", "CLASSES"}
    assert set(frameworks.names(kind="torch")) == {"pytorch", "huggingface", "custom"}


# ---------------------------------------------------------------- PER models


def save_per_key_models(tmp_path, frame: pd.DataFrame, keys: dict[str, bool], manifest=True):
    """One model per education key (``flip`` on Masters, to tell them apart).

    With ``manifest``, the models are published as TRAIN publishes them (a
    version with its manifest; ``keys`` maps a key to whether it is promoted:
    unpromoted ones are listed but not written, as for models failing GATE).
    Without, each is a plain file named by its key, as a user would save them.
    """
    template = str(tmp_path / "models" / "income" / "{key}.skops")
    store = modelstore.ModelStore(template)
    if manifest:
        store.begin("test")
    entries, models = [], {}
    for key, promoted in keys.items():
        model = fit_classifier(frame[frame.education == key], flip=key == "Masters")
        entry = {"key": [key], "file": None, "promoted": promoted}
        if promoted and manifest:
            entry["file"], entry["sha256"] = store.save(model, "test", (key,))
        elif promoted:
            modelstore.save_model(model, template.replace("{key}", key))
        if promoted:
            models[key] = model
        entries.append(entry)
    if manifest:
        store.publish("test", {"models": entries})
    return template, models


def model_path(template: str, key: str) -> str:
    """Where ``key``'s model is: in the published set, else the file named by the key."""
    published = modelstore.ModelStore(template).promoted() or {}
    return published.get(modelstore.key_id([key]), template.replace("{key}", key))


def test_per_key_models_come_from_the_manifest_with_a_fallback(tmp_path):
    frame = census(400)
    template, models = save_per_key_models(
        tmp_path, frame, {"Bachelors": True, "Masters": True, "Doctorate": False}
    )
    assert set(key_paths(template)) == {modelstore.key_id([k]) for k in ("Bachelors", "Masters")}
    fallback_path = str(tmp_path / "models" / "income_global.skops")
    fallback = fit_classifier(frame)
    fallback_sha = modelstore.save_model(fallback, fallback_path)
    fallback_config = ModelConfig("income_global", "sklearn", path=fallback_path,
                                  output=("predicted",))
    config = ModelConfig(
        "income_models", "sklearn", path=template, per=("education",), fallback=fallback_config,
        input=("age", "hours"), output=("predicted",),
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
            assert rows["model_id"].str.startswith(model_path(template, key) + "@").all()
        else:
            assert set(rows["model_key"]) == set(rows["model_id"]) == {fallback_id}
    assert set(served["model_key"]) == {"Bachelors", "Masters", fallback_id}


def test_per_key_without_manifest_or_fallback_sends_unknown_keys_to_errors(tmp_path):
    frame = census(200)
    template, models = save_per_key_models(
        tmp_path, frame, {"Bachelors": True, "Masters": True}, manifest=False
    )
    config = ModelConfig("income_models", "sklearn", path=template, per=("education",),
                         input=("age", "hours"))
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
    config = ModelConfig("income_models", "sklearn", path=template, per=("education",),
                         input=("age", "hours"), output=("predicted",))
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
    with open(model_path(template, "Masters"), "wb") as f:
        f.write(b"not a model")
    config = ModelConfig("income_models", "sklearn", path=template, per=("education",),
                         input=("age", "hours"))
    main, errors = run_model(tmp_path, as_rows(frame[frame.education != "HS grad"]), config)
    assert {r["model_key"] for r in main} == {"Bachelors"}
    masters = [e for e in errors if json.loads(e["row"])["education"] == "Masters"]
    assert masters and all("Masters.skops" in e["reason"] for e in masters)


def test_per_key_refresh_picks_up_retrained_models(tmp_path):
    """REFRESH EVERY d: a retrained key's model answers once d has passed since the key
    set was read, and not before (the old test re-predicted within its own 10 ms period,
    so it failed whenever retraining took less than that)."""
    frame = census(200)
    template, _ = save_per_key_models(tmp_path, frame, {"Bachelors": True}, manifest=False)
    config = ModelConfig("m", "sklearn", path=template, per=("education",),
                         input=("age", "hours"), refresh_s=0.2)
    hourly = build_predictor(dataclasses.replace(config, refresh_s=3600.0))
    predictor = build_predictor(config)
    rows = frame[frame.education == "Bachelors"]
    before = predictor.predict(rows)
    assert hourly.predict(rows)["model_id"].tolist() == before["model_id"].tolist()
    path = model_path(template, "Bachelors")
    modelstore.save_model(fit_classifier(rows, flip=True), path)
    os.utime(path, (1, 1))  # a different mtime for sure
    time.sleep(0.25)  # the fast predictor's REFRESH period has passed, the hourly one's not
    after = predictor.predict(rows)
    assert (before["m"] != after["m"]).all()
    assert before["model_id"].iloc[0] != after["model_id"].iloc[0]
    unchanged = hourly.predict(rows)
    assert unchanged["m"].tolist() == before["m"].tolist()
    assert unchanged["model_id"].tolist() == before["model_id"].tolist()


# ---------------------------------------------------------------- DEVICE


def test_device_gpu_without_a_gpu_is_an_E403_and_auto_falls_back(tmp_path, caplog):
    from beam_dsl.transforms.inference.base import gpu_visible, resolve_device

    if gpu_visible():
        pytest.skip("a GPU is visible here")
    with pytest.raises(DiagnosticError) as no_gpu:
        resolve_device(ModelConfig("blip", "huggingface", path="blip", device="gpu"))
    assert no_gpu.value.diagnostics[0].code == "E403"
    assert "DEVICE AUTO" in str(no_gpu.value)
    with caplog.at_level(logging.INFO, logger="beam_dsl.transforms.inference.base"):
        assert resolve_device(ModelConfig("clip", "huggingface", path="clip",
                                          device="auto")) == "cpu"
    assert "DEVICE AUTO found no GPU" in caplog.text


# ---------------------------------------------------------------- TRUST


def skops_running(path: str, command: str) -> str:
    """A real skops dump of a classifier, edited so that loading it calls
    ``os.system(command)``: its ``verbose`` becomes a node whose constructor is
    ``os.system`` (skops' LossNode takes module and name from the file)."""
    source = str(path) + ".real.skops"
    skops.io.dump(fit_classifier(census(50)), source)
    with zipfile.ZipFile(source) as real:
        schema = json.loads(real.read("schema.json"))
        files = {n: real.read(n) for n in real.namelist() if n != "schema.json"}

    def node(cls: str, loader: str, content, **more):
        return {"__class__": cls, "__module__": "builtins", "__loader__": loader,
                "content": content, **more}

    argument = node("str", "JsonNode", json.dumps(command), is_json=True)
    schema["content"]["content"]["verbose"] = {
        "__class__": "system", "__module__": "os", "__loader__": "LossNode",
        "__reduce__": {"args": node("tuple", "TupleNode", [argument])},
        "content": node("dict", "DictNode", {}, key_types=node("list", "ListNode", [])),
    }
    with zipfile.ZipFile(path, "w") as forged:
        forged.writestr("schema.json", json.dumps(schema))
        for name, data in files.items():
            forged.writestr(name, data)
    return str(path)


def test_a_forged_manifest_never_makes_a_skops_file_run_code(tmp_path):
    # The payload is live: trusting os.system, as the manifest asks, runs it.
    probe = tmp_path / "probe-ran"
    skops.io.load(skops_running(tmp_path / "probe.skops", f"touch {probe}"),
                  trusted=["os.system"])
    assert probe.exists()
    marker = tmp_path / "payload-ran"
    template = str(tmp_path / "models" / "{key}.skops")
    path = template.replace("{key}", "Bachelors")
    os.makedirs(os.path.dirname(path))
    skops_running(path, f"touch {marker}")
    assert skops.io.get_untrusted_types(file=path) == ["os.system"]
    entry = {"key": ["Bachelors"], "file": "Bachelors.skops", "promoted": True,
             "sha256": modelstore.file_sha256(path), "trusted_types": ["os.system"]}
    with open(tmp_path / "models" / modelstore.MANIFEST, "w") as f:  # forged beside the model
        json.dump({"version": 2, "models": [entry]}, f)
    assert modelstore.ModelStore(template).promoted()  # read as a set: its trust is not
    single = ModelConfig("m", "sklearn", path=path)
    with pytest.raises(DiagnosticError) as refused:
        build_predictor(single)
    assert refused.value.diagnostics[0].code == "E402"
    assert "os.system" in str(refused.value)
    frame = census(60)
    config = ModelConfig("m", "sklearn", path=template, per=("education",),
                         input=("age", "hours"))
    main, errors = run_model(tmp_path, as_rows(frame[frame.education == "Bachelors"]), config)
    assert main == [] and len(errors) == (frame.education == "Bachelors").sum()
    assert all("error[E402]" in e["reason"] and "os.system" in e["reason"] for e in errors)
    assert not marker.exists()


def test_a_users_own_skops_tree_serves_with_trust(tmp_path):
    """skops does not trust a tree's internals by default; beam_dsl vouches for them only
    where a TRAIN of the same pipeline writes the path, so a user's own tree needs TRUST."""
    frame = census(100)
    tree_path = str(tmp_path / "tree.skops")
    tree = DecisionTreeClassifier(max_depth=3).fit(frame[["age", "hours"]], frame.income)
    skops.io.dump(tree, tree_path)  # plain skops, saved outside beam_dsl
    tree_type = "sklearn.tree._tree.Tree"
    assert skops.io.get_untrusted_types(file=tree_path) == [tree_type]
    config = ModelConfig("tree", "sklearn", path=tree_path)
    with pytest.raises(DiagnosticError) as refused:
        build_predictor(config)
    assert refused.value.diagnostics[0].code == "E402"
    assert f"TRUST '{tree_type}'" in refused.value.diagnostics[0].hint
    for trusting in (dataclasses.replace(config, trust=(tree_type,)),
                     dataclasses.replace(config, vouched=(tree_type,))):
        served = build_predictor(trusting).predict(frame)
        assert served["tree"].tolist() == tree.predict(frame[["age", "hours"]]).tolist()


# ---------------------------------------------------------------- CLASSES


def test_sklearn_classes_must_be_the_models_classes(tmp_path):
    frame = census(100)
    path = str(tmp_path / "income.skops")
    model = fit_classifier(frame)
    modelstore.save_model(model, path)
    labelled = ModelConfig("income", "sklearn", path=path, classes=("<=50K", ">50K"))
    result = build_predictor(labelled).predict(frame)
    assert result["income"].tolist() == model.predict(frame[["age", "hours"]]).tolist()
    assert set(result["proba"].iloc[0]) == {"<=50K", ">50K"}
    for wrong in ((">50K", "<=50K"), ("no", "yes")):
        with pytest.raises(DiagnosticError) as mismatch:
            build_predictor(dataclasses.replace(labelled, classes=wrong))
        assert mismatch.value.diagnostics[0].code == "E407"
        assert "'<=50K', '>50K'" in str(mismatch.value)
    regressor = str(tmp_path / "hours.skops")
    modelstore.save_model(LinearRegression().fit(frame[["age"]], frame.hours), regressor)
    with pytest.raises(DiagnosticError) as no_classes:
        build_predictor(dataclasses.replace(labelled, path=regressor))
    assert "not a classifier" in str(no_classes.value)


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
    TRAIN fitted them on; TRAIN's decision trees load because beam_dsl vouches
    for the tree types its TRAIN writes (not because the manifest lists them).
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


class BatchSizeHandler(ModelHandler):
    """Answers each example with the number of examples the model was called on."""

    def load_model(self) -> None:
        return None

    def run_inference(self, batch, model, inference_args=None):
        return [len(batch)] * len(batch)


def write_factor(path, factor: float) -> str:
    with open(path, "w") as f:
        json.dump({"factor": factor}, f)
    return str(path)


def custom_config(path: str, **overrides) -> ModelConfig:
    handler = Call("test_inference.ScaleHandler", kwargs={"path": path})
    return ModelConfig("scaled", "custom", handler=handler, input=("x",), **overrides)


def test_custom_runs_a_users_beam_model_handler(tmp_path):
    path = write_factor(tmp_path / "factor.json", 3)
    rows = [beam.Row(x=float(i), name=f"r{i}") for i in range(10)]
    main, errors = run_model(tmp_path, rows, custom_config(path))
    assert errors == []
    assert sorted((r["x"], r["scaled"]) for r in main) == [(float(i), 3.0 * i) for i in range(10)]
    assert {r["model_id"] for r in main} == {f"{path}@{modelstore.file_sha256(path)[:12]}"}


def test_custom_handler_that_cannot_be_imported_is_an_E404():
    config = ModelConfig("ranker", "custom", handler=Call("mypkg.handlers.RankerHandler"))
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
        results = {"input": rows, "model_updates": updates} | RunModel.from_config(config)
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
        _ = rows | RunModel.from_config(config)
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
    config = ModelConfig("income", "sklearn", path=path, input=("age", "hours"), shared=True)
    main, errors = run_model(tmp_path, as_rows(frame), config)
    assert errors == [] and len(main) == len(frame)
    assert sorted(r["income"] for r in main) == sorted(model.predict(frame[["age", "hours"]]))
