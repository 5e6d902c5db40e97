"""TRAIN's start: the estimator's task read from scikit-learn's source (the run's process
never imports scikit-learn when workers fit), and worker processes started before Beam
is imported."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import warnings

import pytest
from conftest import run_listing_heavy_imports
from sklearn.utils import all_estimators
from test_training import config_of

from beam_dsl.dsl import pyref
from beam_dsl.ir import Call
from beam_dsl.transforms.training.fit import resolve_task, task_from_source


def _public_estimators() -> list[tuple[str, type, str]]:
    """scikit-learn's classifiers and regressors by their public dotted path, and task."""
    out = []
    for kind, task in (("classifier", "classification"), ("regressor", "regression")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = all_estimators(type_filter=kind)
        for name, cls in found:
            parts = cls.__module__.split(".")
            public = next((i for i, p in enumerate(parts) if p.startswith("_")), len(parts))
            module = ".".join(parts[:public])
            out.append((f"{module}.{name}", cls, task))
    return out


@pytest.mark.parametrize(("dotted", "cls", "task"), _public_estimators(), ids=lambda v: str(v))
def test_the_source_shows_each_estimators_task_and_keywords(dotted, cls, task):
    found = pyref.resolve(dotted)
    assert isinstance(found, pyref.ClassInfo) and found.task == task
    if found.params is not None:
        assert found.params == set(inspect.signature(cls).parameters)


def test_the_task_comes_from_the_source_where_it_is_certain():
    spec = """TRAIN t PER k FEATURES x LABEL y
      USING sklearn.linear_model.RidgeCV(cv = 3)
      METRICS r2 SAVE TO 'm/{key}.pkl';"""
    config = config_of(spec)
    assert task_from_source(config) == "regression"
    assert resolve_task(config) == ("regression", False)
    ridge_cv = "sklearn.linear_model.RidgeCV"
    unsure = [  # a keyword the constructor lacks, a positional argument, not scikit-learn
        dataclasses.replace(config, estimator=Call(ridge_cv, (), {"cvv": 3})),
        dataclasses.replace(config, estimator=Call(ridge_cv, ((0.1, 1.0),), {})),
        dataclasses.replace(config, estimator=Call("os.path.join", (), {})),
    ]
    assert [task_from_source(c) for c in unsure] == [None, None, None]


def test_a_run_fitting_in_workers_imports_no_scikit_learn(tmp_path):
    """The run's process learns the task from the source and writes the bytes workers
    send back: scikit-learn and skops load only in the worker processes."""
    rows = ["k,x,c,y"] + [f"{'ab'[i % 2]},{i % 7},{'uvw'[i % 3]},{(i // 3) % 2}"
                          for i in range(200)]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "spec.bdsl").write_text(
        "TRAIN t PER k FEATURES x, c LABEL y\n"
        "  USING sklearn.tree.DecisionTreeClassifier(max_depth = 3)\n"
        "  SAVE TO 'models/{key}.skops';\n")
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent("""
        specs: [spec.bdsl]
        pipeline:
          type: composite
          transforms:
            - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
            - {type: t, input: rows}
            - {type: WriteToJson, input: t, config: {path: out/metrics}}
    """))
    done = run_listing_heavy_imports(tmp_path, "--workers", "2", "pipeline.yaml")
    assert "EXIT 0 HEAVY []" in done.stdout, done.stderr[-3000:]
    assert len(list((tmp_path / "models").glob("*.skops"))) == 2
