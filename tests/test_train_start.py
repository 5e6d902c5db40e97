"""TRAIN's start: the estimator's task read from scikit-learn's source."""

from __future__ import annotations

import inspect
import warnings

import pytest
from sklearn.utils import all_estimators

from beam_dsl.dsl import pyref


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
