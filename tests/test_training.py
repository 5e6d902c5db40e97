"""TRAIN: real models trained through TrainModels in Beam's in-process runner, saved,
reloaded through the model store, and checked against scikit-learn computed here.

Specs are written in the language and lowered by the compiler, so the configs
are the ones a pipeline gets. The data is the census generator's (a few
thousand rows, some broken on purpose).
"""

import importlib.util
import inspect
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from sklearn import metrics as skm

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.ir.train import TrainConfig
from beam_dsl.transforms.training import modelstore
from beam_dsl.transforms.training.fit import split_holdout
from beam_dsl.transforms.training.prepare import COUNTER_NAMESPACE
from beam_dsl.transforms.training.transform import TrainModels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 3000
BAD_EVERY = 100  # a missing income or an unparsable age every 100 rows
FEATURES = ["age", "workclass", "occupation", "hours_per_week", "marital_status"]
TOP = ["HS-grad", "Some-college", "Bachelors"]


def _generate(rows: int, seed: int, bad_every: int) -> pd.DataFrame:
    path = os.path.join(REPO, "pipelines", "census", "generate.py")
    spec = importlib.util.spec_from_file_location("census_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate(rows, seed=seed, bad_every=bad_every)


@pytest.fixture(scope="module")
def census(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    frame = _generate(ROWS, seed=3, bad_every=BAD_EVERY)
    path = str(tmp_path_factory.mktemp("census") / "census.csv")
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path)


def config_of(spec: str) -> TrainConfig:
    statements, diagnostics = parse(spec)
    assert not diagnostics, diagnostics
    (definition,) = lower_spec(statements)
    return definition.config


def _read(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def train(tmp_path, spec: str, source, **kwargs) -> dict:
    """Runs the TRAIN of ``spec`` over a CSV path (ReadFromCsv: pandas batches) or a
    list of beam.Rows (one element at a time); returns its outputs and counters."""
    config = config_of(spec.replace("{models}", str(tmp_path / "models")))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    if isinstance(source, str):
        rows = pipeline | beam.io.ReadFromCsv(source)
    else:
        rows = pipeline | beam.Create(source)
    outputs = rows | TrainModels(**config.to_json(), **kwargs)
    for tag, pcoll in outputs.items():
        path = str(out / f"{tag}.jsonl")

        def write(row, path=path):
            with open(path, "a") as f:
                f.write(json.dumps(row._asdict()) + "\n")

        _ = pcoll | f"Collect {tag}" >> beam.Map(write)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name.split(".", 1)[1]: c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == COUNTER_NAMESPACE
    }
    found = {tag: _read(str(out / f"{tag}.jsonl")) for tag in outputs}
    return {**found, "counters": counters, "config": config}


def as_read(frame: pd.DataFrame, features=FEATURES, label="income") -> pd.DataFrame:
    """The usable rows of ``frame`` with numbers as floats and text as str, as TRAIN reads them."""
    frame = frame.copy()
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    frame = frame.dropna(subset=[*features, label])
    for column in features:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(float)
    return frame


SPEC = """
TRAIN by_education
  PER education
  WHERE education IN ('HS-grad', 'Some-college', 'Bachelors', 'Preschool')
  FEATURES age, workclass, occupation, hours_per_week, marital_status
  LABEL income
  USING sklearn.tree.DecisionTreeClassifier(max_depth = 6, random_state = 0)
  ENCODE onehot(workclass, occupation, marital_status), scale(age, hours_per_week)
  HOLDOUT 25% SEED 7
  METRICS accuracy, precision, recall, f1, roc_auc
  MIN ROWS 30
  SAVE TO '{models}/income/{key}.skops';
"""


@pytest.fixture(scope="module")
def trained(census, tmp_path_factory):
    path, _ = census
    return train(tmp_path_factory.mktemp("trained"), SPEC, path, fit_workers=2)


def test_models_are_saved_and_reload_and_predict(trained, census):
    _, frame = census
    main = {r["education"]: r for r in trained["main"]}
    assert sorted(main) == sorted(TOP)
    manifest = modelstore.ModelStore(trained["config"].save_to).manifest()
    entries = {tuple(e["key"]): e for e in manifest["models"]}
    assert manifest["classes"] == ["<=50K", ">50K"]
    assert manifest["features"] == FEATURES and manifest["per"] == ["education"]
    assert manifest["task"] == "classification"
    for education, row in main.items():
        assert row["promoted"] is True
        entry = entries[(education,)]
        assert modelstore.file_sha256(row["model_uri"]) == entry["sha256"]
        assert entry["rows"] == row["rows"] and entry["metrics"]["accuracy"] == row["accuracy"]
        model = modelstore.load_model(row["model_uri"], trusted=entry["trusted_types"])
        rows = as_read(frame[frame.education == education])
        predicted = model.predict(rows[FEATURES])
        assert set(predicted) <= {"<=50K", ">50K"}
        # a real model: better than always answering the majority class on its own rows
        majority = rows.income.value_counts(normalize=True).max()
        assert (predicted == rows.income).mean() > majority
    promoted = modelstore.ModelStore(trained["config"].save_to).promoted()
    assert promoted.keys() == {modelstore.key_id([k]) for k in TOP}


def test_metrics_match_sklearn_on_the_holdout(trained, census):
    _, frame = census
    for row in trained["main"]:
        rows = as_read(frame[frame.education == row["education"]])
        train_rows, held = split_holdout(rows[[*FEATURES, "income"]], 0.25, 7)
        assert (len(train_rows), len(held)) == (row["train_rows"], row["holdout_rows"])
        assert len(held) == round(len(rows) * 0.25)
        model = modelstore.load_model(row["model_uri"], trusted=["sklearn.tree._tree.Tree"])
        predicted = model.predict(held[FEATURES])
        proba = model.predict_proba(held[FEATURES])[:, list(model.classes_).index(">50K")]
        truth = held.income
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
        for name, score in [("precision", skm.precision_score), ("recall", skm.recall_score),
                            ("f1", skm.f1_score)]:
            assert row[name] == pytest.approx(score(truth, predicted, pos_label=">50K"))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(truth == ">50K", proba))


def test_every_row_is_accounted_for(trained, census):
    _, frame = census
    counters = trained["counters"]
    kept = frame.education.isin([*TOP, "Preschool"])
    assert counters["rows_in"] == len(frame) == ROWS
    assert counters["filtered"] == (~kept).sum()
    assert counters["errors"] == len(trained["errors"])
    assert counters["trained"] + counters["held_out"] == sum(r["rows"] for r in trained["main"])
    assert counters["skipped"] == sum(r["rows"] for r in trained["skipped"])
    assert (
        counters["filtered"] + counters["errors"] + counters["trained"] + counters["held_out"]
        + counters["skipped"] == ROWS
    )
    usable = as_read(frame[kept])
    for row in trained["main"]:
        assert row["rows"] == (usable.education == row["education"]).sum()


def test_bad_rows_go_to_errors_with_their_reason(trained, census):
    _, frame = census
    kept = frame[frame.education.isin([*TOP, "Preschool"])]
    no_label = kept.income.isna().sum()
    bad_age = (pd.to_numeric(kept.age, errors="coerce").isna() & kept.age.notna()).sum()
    assert no_label > 0 and bad_age > 0
    reasons = [e["reason"] for e in trained["errors"]]
    assert reasons.count("missing label 'income'") == no_label
    assert reasons.count("unparsable feature 'age': 'unknown'") == bad_age
    assert len(reasons) == no_label + bad_age
    for error in trained["errors"]:
        assert error["transform"] == "by_education"
        original = json.loads(error["row"])
        assert original["education"] in [*TOP, "Preschool"] and "fnlwgt" in original


def test_keys_under_min_rows_are_skipped_and_not_written(trained):
    (skipped,) = trained["skipped"]
    assert skipped["education"] == "Preschool" and skipped["rows"] < 30
    assert skipped["reason"] == f"{skipped['rows']} rows, fewer than MIN ROWS 30"
    models = os.path.dirname(trained["config"].save_to)
    assert not os.path.exists(os.path.join(models, "Preschool.skops"))
    manifest = modelstore.ModelStore(trained["config"].save_to).manifest()
    assert [e["key"] for e in manifest["skipped"]] == [["Preschool"]]


def test_holdout_and_models_do_not_depend_on_row_order_or_batching(trained, census, tmp_path):
    """The same rows, shuffled and fed one by one (beam.Create), give the same results."""
    path, frame = census
    subset = pd.read_csv(path, dtype={"age": str})
    subset = subset[subset.education.isin(TOP)].sample(frac=1.0, random_state=1)
    rows = [
        beam.Row(**{k: (None if pd.isna(v) else v) for k, v in record.items()})
        for record in subset.to_dict("records")
    ]
    again = train(tmp_path, SPEC, rows, fit_workers=1)
    assert again["counters"]["rows_in"] == len(rows)
    first = {r["education"]: r for r in trained["main"]}
    for row in again["main"]:
        before = first[row["education"]]
        for column in ("rows", "train_rows", "holdout_rows", "accuracy", "f1", "roc_auc"):
            assert row[column] == before[column]
        a = modelstore.load_model(row["model_uri"], trusted=["sklearn.tree._tree.Tree"])
        b = modelstore.load_model(before["model_uri"], trusted=["sklearn.tree._tree.Tree"])
        probe = as_read(frame[frame.education == row["education"]])[FEATURES]
        assert (a.predict_proba(probe) == b.predict_proba(probe)).all()


def test_split_holdout_is_seeded_and_order_free():
    frame = pd.DataFrame({"x": np.arange(200.0), "y": ["a", "b"] * 100})
    train_a, held_a = split_holdout(frame, 0.2, 7)
    train_b, held_b = split_holdout(frame.sample(frac=1.0, random_state=3), 0.2, 7)
    _, held_c = split_holdout(frame, 0.2, 8)
    assert len(held_a) == 40 and len(train_a) == 160
    assert sorted(held_a.x) == sorted(held_b.x)
    assert sorted(held_a.x) != sorted(held_c.x)
    assert len(split_holdout(frame.head(1), 0.5, 7)[0]) == 1  # a lone row always trains


def test_gate_failure_reports_the_model_but_writes_no_file(census, tmp_path):
    path, _ = census
    spec = SPEC.replace("MIN ROWS 30", "MIN ROWS 30 GATE accuracy >= 0.99 AND rows > 10")
    result = train(tmp_path, spec, path)
    assert {r["education"] for r in result["main"]} == set(TOP)
    for row in result["main"]:
        assert row["promoted"] is False and row["model_uri"] is None
    assert result["counters"]["rejected"] == len(TOP)
    assert not [f for f in os.listdir(tmp_path / "models" / "income") if f.endswith(".skops")]
    manifest = modelstore.ModelStore(result["config"].save_to).manifest()
    assert all(e["file"] is None and e["promoted"] is False for e in manifest["models"])
    assert modelstore.ModelStore(result["config"].save_to).promoted() == {}


def test_keys_never_leave_the_model_directory(tmp_path):
    rng = np.random.default_rng(0)
    keys = ["../x", "a/b", "..", "ok key", "ü"]
    frame = pd.DataFrame({"group": np.repeat(keys, 40), "x": rng.normal(size=200)})
    frame["y"] = np.where(frame.x > 0, "pos", "neg")
    path = str(tmp_path / "keys.csv")
    frame.to_csv(path, index=False)
    spec = """TRAIN by_group PER group FEATURES x LABEL y
      USING sklearn.tree.DecisionTreeClassifier(max_depth = 2)
      SAVE TO '{models}/{key}.pkl';"""
    result = train(tmp_path, spec, path)
    models = tmp_path / "models"
    assert sorted(r["group"] for r in result["main"]) == sorted(keys)
    for row in result["main"]:
        file = os.path.realpath(row["model_uri"])
        assert os.path.dirname(file) == os.path.realpath(models)  # the published version
        assert os.path.basename(file) == modelstore.key_name([row["group"]]) + ".pkl"
        model = modelstore.load_model(row["model_uri"], allow_pickle=True)
        assert list(model.predict(pd.DataFrame({"x": [-2.0, 2.0]}))) == ["neg", "pos"]
    assert sorted(os.listdir(models)) == sorted(
        [modelstore.key_name([k]) + ".pkl" for k in keys] + ["manifest.json"]
    )


def test_features_star_except_and_a_global_regressor(census, tmp_path):
    path, frame = census
    spec = """TRAIN hours
      FEATURES * EXCEPT (fnlwgt, income, native_country)
      LABEL hours_per_week
      USING sklearn.tree.DecisionTreeRegressor(max_depth = 4, random_state = 0)
      HOLDOUT 20% SEED 1
      METRICS r2, mae, rmse
      SAVE TO '{models}/hours.skops';"""
    result = train(tmp_path, spec, path)
    (row,) = result["main"]
    manifest = modelstore.ModelStore(result["config"].save_to).manifest()
    expected = [c for c in frame.columns
                if c not in ("fnlwgt", "income", "native_country", "hours_per_week")]
    assert manifest["features"] == expected
    assert manifest["task"] == "regression" and manifest["classes"] is None
    assert manifest["feature_types"]["education"] == "text"
    assert manifest["feature_types"]["capital_gain"] == "number"
    assert os.path.realpath(row["model_uri"]) == os.path.realpath(result["config"].save_to)
    rows = frame.copy()
    rows["age"] = pd.to_numeric(rows.age, errors="coerce")
    rows = rows.dropna(subset=[*expected, "hours_per_week"])  # only the bad ages are unusable
    for column in expected:
        if pd.api.types.is_numeric_dtype(rows[column]):
            rows[column] = rows[column].astype(float)
    assert row["rows"] == len(rows)
    _, held = split_holdout(rows[[*expected, "hours_per_week"]].astype(
        {"hours_per_week": float}), 0.2, 1)
    model = modelstore.load_model(row["model_uri"], trusted=["sklearn.tree._tree.Tree"])
    predicted = model.predict(held[expected])
    truth = held.hours_per_week
    assert row["r2"] == pytest.approx(skm.r2_score(truth, predicted))
    assert row["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    assert row["rmse"] == pytest.approx(skm.root_mean_squared_error(truth, predicted))


def test_multiclass_metrics_are_weighted_and_failed_fits_are_skipped(census, tmp_path):
    path, frame = census
    spec = """TRAIN race_by_sex PER sex
      WHERE NOT (sex = 'Female' AND race != 'White')
      FEATURES age, education, occupation
      LABEL race
      USING sklearn.linear_model.LogisticRegression(max_iter = 500)
      ENCODE scale(age)
      HOLDOUT 30% SEED 2
      METRICS accuracy, f1, roc_auc
      SAVE TO '{models}/race/{key}.skops';"""
    result = train(tmp_path, spec, path)
    # Female rows are all White after WHERE: LogisticRegression cannot fit one class.
    (skipped,) = result["skipped"]
    assert skipped["sex"] == "Female" and skipped["reason"].startswith("fit failed: ValueError")
    (row,) = result["main"]
    assert row["sex"] == "Male"
    manifest = modelstore.ModelStore(result["config"].save_to).manifest()
    (entry,) = manifest["models"]
    rows = as_read(frame[frame.sex == "Male"], ["age", "education", "occupation"], "race")
    _, held = split_holdout(rows[["age", "education", "occupation", "race"]], 0.3, 2)
    model = modelstore.load_model(row["model_uri"], trusted=entry["trusted_types"])
    predicted = model.predict(held[["age", "education", "occupation"]])
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(held.race, predicted))
    assert row["f1"] == pytest.approx(
        skm.f1_score(held.race, predicted, average="weighted", zero_division=np.nan)
    )
    proba = model.predict_proba(held[["age", "education", "occupation"]])
    assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(
        held.race, proba, multi_class="ovr", average="weighted", labels=model.classes_))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (("FEATURES age,", "FEATURES age, fnlwgtt,"), "E430"),
        (("FEATURES age,", "FEATURES agee,"), "E433"),  # ENCODE scale(age): not a feature
        (("sklearn.tree.DecisionTreeClassifier", "sklearn.tree.NoSuchTree"), "E431"),
        (("sklearn.tree.DecisionTreeClassifier", "os.path.join"), "E431"),
        (("max_depth = 6", "max_depht = 6"), "E431"),
        (("METRICS accuracy, precision, recall, f1, roc_auc", "METRICS r2, mae"), "E432"),
        (("METRICS accuracy, precision, recall, f1, roc_auc", "GATE r2 > 0.1"), "E432"),
        (("METRICS accuracy,", "METRICS r2, accuracy,"), "E433"),
        (("MIN ROWS 30", "GATE auc > 0.5"), "E433"),
        (("{key}.skops", "{key}.model"), "E433"),
    ],
)
def test_configuration_mistakes_are_coded(census, tmp_path, change, code):
    path, _ = census
    with pytest.raises(DiagnosticError) as raised:
        train(tmp_path, SPEC.replace(*change), path)
    assert raised.value.diagnostics[0].code == code


@pytest.mark.slow
def test_census_example_runs_through_the_cli_runner(tmp_path):
    """pipelines/census as `python -m beam_dsl run` runs it: Beam YAML, ReadFromCsv, TRAIN,
    WriteToJson of main, skipped and errors."""
    from beam_dsl.runner import run_pipeline

    example = tmp_path / "census"
    shutil.copytree(os.path.join(REPO, "pipelines", "census"), example,
                    ignore=shutil.ignore_patterns("out", "models", "data"))
    (example / "data" / "generated").mkdir(parents=True)
    frame = _generate(4000, seed=5, bad_every=500)
    frame.to_csv(example / "data" / "generated" / "census.csv", index=False)
    run_pipeline(str(example / "pipeline.yaml"), progress=None)
    written = {
        name: [json.loads(line) for path in sorted((example / "out").glob(f"{name}-*"))
               for line in path.read_text().splitlines()]
        for name in ("metrics", "skipped", "errors")
    }
    broken = frame.income.isna() | (frame.age == "unknown")
    assert broken.sum() == 8  # rows 450, 950, ..., 3950
    assert len(written["errors"]) == broken.sum()
    levels = {r["education"] for r in written["metrics"]} | {
        r["education"] for r in written["skipped"]}
    assert levels == set(frame.education)
    manifest = modelstore.ModelStore(str(example / "models" / "income" / "{key}.skops")).manifest()
    assert len(manifest["models"]) == len(written["metrics"])
    for row in written["metrics"]:
        assert row["promoted"] == (row["accuracy"] >= 0.7)
        assert (row["model_uri"] is not None) == row["promoted"]


ADULT = os.path.join(os.path.dirname(REPO), "shared", "data", "adult.csv")


@pytest.mark.skipif(not os.path.exists(ADULT), reason="the UCI Adult data is not beside the repo")
def test_per_education_trees_on_the_real_adult_data(tmp_path):
    spec = """TRAIN adult_by_education PER education
      FEATURES age, type_employer, occupation, hr_per_week, marital, sex, capital_gain
      LABEL income
      USING sklearn.tree.DecisionTreeClassifier(max_depth = 6, random_state = 0)
      HOLDOUT 20% SEED 7
      METRICS accuracy, roc_auc
      MIN ROWS 200
      SAVE TO '{models}/adult/{key}.skops';"""
    result = train(tmp_path, spec, ADULT)
    frame = pd.read_csv(ADULT)
    counts = frame.education.value_counts()
    assert {r["education"] for r in result["main"]} == set(counts[counts >= 200].index)
    assert {r["education"] for r in result["skipped"]} == set(counts[counts < 200].index)
    assert result["errors"] == [] and result["counters"]["rows_in"] == len(frame)
    # The trees learn: held-out ranking clearly better than chance wherever there are
    # enough rows (a small level's holdout may hold one class: roc_auc is then null).
    for row in result["main"]:
        if row["rows"] >= 1000:
            assert row["roc_auc"] > 0.7, row
    assert any(row["roc_auc"] is None for row in result["main"])


@pytest.mark.skipif(not os.path.exists(ADULT), reason="the UCI Adult data is not beside the repo")
def test_a_long_unicode_key_trains_and_serves_and_inf_rows_are_errors(tmp_path):
    """A key of 30 CJK characters (270 bytes %-encoded) once broke every key's model."""
    from beam_dsl.ir.model import ModelConfig
    from beam_dsl.transforms.inference.predictors import build_predictor

    frame = pd.read_csv(ADULT).head(3000)
    long_key = "教育" * 15
    odd = frame.head(200).assign(education=long_key)
    bad = frame.head(10).assign(age=np.inf)
    data = pd.concat([frame, odd, bad], ignore_index=True)
    data.to_csv(tmp_path / "adult.csv", index=False)
    spec = """TRAIN t PER education
      FEATURES age, hr_per_week, type_employer
      LABEL income
      USING sklearn.tree.DecisionTreeClassifier(max_depth = 3, random_state = 0)
      MIN ROWS 100
      SAVE TO '{models}/t/{key}.skops';"""
    result = train(tmp_path, spec, str(tmp_path / "adult.csv"))
    assert long_key in {r["education"] for r in result["main"]}
    assert len(result["errors"]) == 10
    assert all("not a finite number" in e["reason"] for e in result["errors"])
    template = str(tmp_path / "models" / "t" / "{key}.skops")
    model = ModelConfig(name="m", framework="sklearn", path=template, per=("education",),
                        output=("predicted",), vouched=("sklearn.tree._tree.Tree",))
    served = build_predictor(model).predict(odd[["age", "hr_per_week", "type_employer",
                                                 "education"]].reset_index(drop=True))
    assert served["model_key"].eq(long_key).all()
    assert served["predicted"].isin(["<=50K", ">50K"]).all()


# ---------------------------------------------------------------- the config, checked once

CONFIG = {
    "name": "t", "per": ["k"], "where": None, "features": ["a", "b"], "features_except": [],
    "label": "y", "estimator": {"callable": "sklearn.tree.DecisionTreeClassifier"},
    "encode": {"onehot": ["b"]}, "holdout": 0.2, "seed": 0, "metrics": ["accuracy"],
    "min_rows": 1, "gate": None, "save_to": "models/{key}.skops",
}


def _gate(name: str) -> dict:
    return {"op": ">", "args": [{"col": name}, {"lit": 0.5}]}


def test_train_config_reads_its_own_json_and_builds_the_transform():
    config = TrainConfig.from_json(CONFIG)
    assert config.per == ("k",) and config.encode == {"onehot": ("b",)}
    assert config.estimator.callable == "sklearn.tree.DecisionTreeClassifier"
    assert TrainConfig.from_json(config.to_json()) == config
    transform = TrainModels.from_config(config)
    assert transform.config == config and transform.label == transform.name == "t"
    assert list(inspect.signature(TrainModels).parameters) == [
        "name", "per", "where", "features", "features_except", "label", "estimator", "encode",
        "holdout", "seed", "metrics", "min_rows", "gate", "save_to", "resource_hints",
        "fit_workers",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fit_worker": 2}, "unknown key 'fit_worker'; did you mean 'fit_workers'?"),
        ({"holdout": "20%"}, "'holdout' must be a number, not '20%'"),
        ({"per": "k"}, "'per' must be a list, not 'k'"),
        ({"estimator": {"class": "x.Y"}}, "unknown key 'estimator.class'"),
        ({"seed": True}, "'seed' must be an integer, not True"),
    ],
)
def test_train_config_json_mistakes_are_e400(change, message):
    with pytest.raises(DiagnosticError) as raised:
        TrainModels(**{**CONFIG, **change})
    (diagnostic,) = raised.value.diagnostics
    assert (diagnostic.code, diagnostic.file) == ("E400", "TRAIN t")
    assert diagnostic.message == message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"save_to": "models/m.skops"}, "'models/m.skops' needs {key}, since TRAIN has PER"),
        ({"per": []}, "SAVE TO 'models/{key}.skops' has {key}, but TRAIN has no PER"),
        ({"save_to": "models/{key}.bin"}, "names no model format"),
        ({"save_to": "models/{key}/../m.skops"}, "has '..' after {key}"),
        ({"holdout": 1}, "HOLDOUT 1.0 is not in [0, 1)"),
        ({"min_rows": 0}, "MIN ROWS 0 is not at least 1"),
        ({"fit_workers": -1}, "fit_workers -1 is negative"),
        ({"encode": {"bucket": ["a"]}}, "unknown encoder 'bucket'"),
        ({"encode": {"onehot": ["b"], "scale": ["b"]}}, "names 'b' twice (onehot and scale)"),
        ({"encode": {"scale": ["c"]}}, "ENCODE names 'c', which is not a feature"),
        ({"metrics": ["acuracy"]}, "unknown metric 'acuracy'"),
        ({"metrics": ["accuracy", "r2"]},
         "METRICS mixes classification (accuracy) and regression (r2) metrics"),
        ({"gate": _gate("f1")}, "GATE reads 'f1', which is not a metric of this TRAIN"),
        ({"features": ["b", "y"]}, "the label 'y' is also a feature"),
        ({"per": ["rows"]}, "PER column 'rows' clashes with an output column of TRAIN"),
        ({"per": ["accuracy"]}, "PER column 'accuracy' clashes with an output column of TRAIN"),
    ],
)
def test_train_config_rules_are_e433(change, message):
    with pytest.raises(DiagnosticError) as raised:
        TrainConfig.from_json({**CONFIG, **change})
    (diagnostic,) = raised.value.diagnostics
    assert (diagnostic.code, diagnostic.file) == ("E433", "TRAIN t")
    assert message in diagnostic.message


def test_gate_reads_row_counts_and_without_metrics_the_task_default():
    gate = {"op": "AND", "args": [_gate("train_rows"), _gate("holdout_rows")]}
    assert TrainModels(**{**CONFIG, "gate": gate}).config.gate == gate
    assert TrainModels(**{**CONFIG, "metrics": [], "gate": _gate("accuracy")})
    with pytest.raises(DiagnosticError) as raised:
        TrainModels(**{**CONFIG, "metrics": [], "gate": _gate("r2")})
    assert raised.value.diagnostics[0].code == "E432"
    assert "metric 'r2' does not apply to classification" in str(raised.value)
