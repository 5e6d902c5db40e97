"""TRAIN's families (metrics, encoders): every name lint accepts is one the transform
implements, and adding a member is one registration that lint, the config's rules
and the transform all pick up."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler
from sklearn.tree import DecisionTreeRegressor

from beam_dsl import vocabulary
from beam_dsl.diagnostics import Source
from beam_dsl.dsl.checks import check_spec
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.ir.train import TrainConfig
from beam_dsl.transforms.training import encoders, metrics
from beam_dsl.transforms.training.fit import Plan
from beam_dsl.transforms.training.transform import TrainModels

SPEC = """TRAIN t FEATURES x, c LABEL y USING sklearn.{estimator}
  {clauses}
  SAVE TO 'models/t.skops';"""


def lint(clauses: str, estimator: str = "tree.DecisionTreeClassifier") -> list[str]:
    """The codes lint reports for a TRAIN with ``clauses``."""
    text = SPEC.format(estimator=estimator, clauses=clauses)
    statements, diagnostics = parse(text)
    assert not diagnostics, diagnostics
    names = {s.name.name: s for s in statements.statements}
    found = check_spec(statements, Source("t.bdsl", text), names, {"t": ["x", "c", "y"]})
    return [d.code for d in found]


def config_of(clauses: str, estimator: str = "tree.DecisionTreeClassifier") -> TrainConfig:
    statements, _ = parse(SPEC.format(estimator=estimator, clauses=clauses))
    (definition,) = lower_spec(statements)
    return definition.config


def held_out(task: str) -> tuple:
    """A real fitted model and held-out rows for ``task``: three classes or numbers."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"x": rng.normal(size=300), "z": rng.normal(size=300)})
    if task == "classification":
        y = pd.Series(np.where(x.x > 0.5, "c", np.where(x.x > -0.5, "b", "a")))
        y[rng.random(300) < 0.1] = "a"  # some noise, so no metric is trivially 1
        model = LogisticRegression().fit(x[:200], y[:200])
        return model, x[200:], y[200:], sorted(set(y))
    y = pd.Series(2 * x.x - x.z + rng.normal(scale=0.3, size=300))
    return DecisionTreeRegressor(max_depth=3).fit(x[:200], y[:200]), x[200:], y[200:], []


def test_the_families_are_the_registries_lint_reads():
    assert vocabulary.family("metrics") is metrics.REGISTRY
    assert vocabulary.family("encoders") is encoders.REGISTRY
    assert set(metrics.names()) == set(metrics.names("classification")) | set(
        metrics.names("regression"))
    assert metrics.defaults() == ("accuracy", "r2")


@pytest.mark.parametrize("name", metrics.names())
def test_every_metric_lint_accepts_is_implemented(name):
    task = metrics.REGISTRY[name].kind
    estimator = "tree.DecisionTreeClassifier" if task == "classification" else (
        "tree.DecisionTreeRegressor")
    assert lint(f"METRICS {name} GATE {name} > 0", estimator) == []
    TrainModels.from_config(config_of(f"METRICS {name}", estimator))  # its task's E432 check
    model, features, labels, classes = held_out(task)
    (value,) = metrics.score([name], model, features, labels, classes).values()
    assert np.isfinite(value) and 0 < abs(value) < 1e6
    assert math.isnan(metrics.score([name], model, features[:0], labels[:0], classes)[name])


def test_a_name_outside_the_families_is_refused_by_lint():
    assert lint("METRICS accuracy, auc") == ["E208"]
    assert lint("ENCODE bucket(x)") == ["E218"]
    assert lint("METRICS accuracy, mae") == ["E208"]  # one task only


@pytest.mark.parametrize("name", encoders.names())
def test_every_encoder_lint_accepts_is_implemented(name):
    assert lint(f"ENCODE {name}(x)") == []
    frame = pd.DataFrame({"x": [1.0, 2.0, 2.0, 5.0]})
    encoded = ColumnTransformer([(name, encoders.build(name), ["x"])]).fit_transform(frame)
    assert encoded.shape[0] == 4 and encoded.shape[1] >= 1
    if name != "passthrough":
        assert not np.array_equal(np.asarray(encoded)[:, 0], frame.x.to_numpy())


def test_adding_a_metric_is_one_registration(monkeypatch):
    monkeypatch.setattr(metrics.REGISTRY, "_entries", dict(metrics.REGISTRY._entries))

    @metrics.REGISTRY.register("max_error", kind="regression")
    def max_error(held: metrics.Held) -> float:
        return skm.max_error(held.y_true, held.y_pred)

    regressor = "tree.DecisionTreeRegressor"
    assert lint("METRICS r2, max_error GATE max_error < 3", regressor) == []
    assert lint("METRICS accuracy, max_error") == ["E208"]  # a regression metric
    TrainModels.from_config(config_of("METRICS max_error", regressor))
    model, features, labels, _ = held_out("regression")
    scores = metrics.score(["r2", "max_error"], model, features, labels, [])
    assert scores["max_error"] == skm.max_error(labels, model.predict(features))


def test_adding_an_encoder_is_one_registration(monkeypatch):
    monkeypatch.setattr(encoders.REGISTRY, "_entries", dict(encoders.REGISTRY._entries))

    @encoders.REGISTRY.register("minmax", kind="number")
    def minmax():
        return MinMaxScaler()

    assert lint("ENCODE minmax(x)") == []
    config = TrainConfig.from_json(config_of("ENCODE minmax(x)").to_json())  # validate() too
    plan = Plan(config, "classification", ("x", "c", "y"), (), ("x", "c"),
                {"x": "number", "c": "text"}, {"x": "minmax", "c": "onehot"}, str, ("accuracy",),
                "test-run")
    pipeline = plan.make_pipeline(LogisticRegression())
    frame = pd.DataFrame({"x": [0.0, 5.0, 10.0], "c": ["a", "b", "a"]})
    encoded = pipeline.named_steps["encode"].fit_transform(frame)
    assert [name for name, _, _ in pipeline.named_steps["encode"].transformers] == [
        "onehot", "minmax"]
    assert list(encoded[:, -1]) == [0.0, 0.5, 1.0]
