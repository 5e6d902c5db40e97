"""TRAIN's METRICS: the ``metrics`` family (:mod:`beam_dsl.vocabulary`).

Each metric is one function registered here with its task (``kind``:
``classification`` or ``regression``) and what it needs (``meta``:
``needs_proba`` for a metric of ``predict_proba``'s scores, ``default`` for
the metric a task gets without METRICS). It reads a model's predictions on one
key's held-out rows (:class:`Held`) and returns a float, NaN where it cannot be
computed. Adding a metric is one decorated function below: lint, the IR's
checks, the transform's output columns and :func:`score` all read this
registry.

Beam-free and scikit-learn-free at import time (lint reads the registry);
scikit-learn is imported inside the functions that run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from beam_dsl.vocabulary import Registry

REGISTRY = Registry("metrics")

TASKS = ("classification", "regression")
NAN = math.nan


@dataclass(frozen=True)
class Held:
    """A model's predictions on one key's held-out rows: what a metric reads.

    Args:
        y_true: the held-out labels (a pandas Series; not empty).
        y_pred: the model's predictions for them.
        proba: ``predict_proba``'s scores, columns in ``model_classes``
            order; None when no metric needs them or the model has none.
        model_classes: the classes the model was fitted on (classifiers).
        classes: every class over all keys' labels, sorted (classifiers): with
            two, the positive class is the second.
    """

    y_true: Any
    y_pred: Any
    proba: Any = None
    model_classes: Sequence[Any] = ()
    classes: Sequence[Any] = ()

    @property
    def binary(self) -> bool:
        return len(self.classes) <= 2

    @property
    def positive(self) -> Any:
        return self.classes[-1] if self.classes else None

    def averaged(self) -> dict[str, Any]:
        """How precision, recall and f1 average: the positive class of two, else weighted."""
        if self.binary:
            return {"pos_label": self.positive, "average": "binary"}
        return {"average": "weighted"}


def names(task: str | None = None) -> tuple[str, ...]:
    """The metrics of ``task`` (every metric when None), in registration order."""
    return REGISTRY.names(task)


def default(task: str) -> str:
    """The metric a TRAIN of ``task`` reports without METRICS."""
    (name,) = [n for n in names(task) if REGISTRY[n].meta.get("default")]
    return name


def defaults() -> tuple[str, ...]:
    """Each task's default metric."""
    return tuple(default(task) for task in TASKS)


def tasks_of(metrics: Sequence[str]) -> tuple[str, ...]:
    """The tasks the known names of ``metrics`` belong to, in :data:`TASKS` order."""
    kinds = {REGISTRY[m].kind for m in metrics if m in REGISTRY}
    return tuple(t for t in TASKS if t in kinds)


def score(
    metrics: Sequence[str], model: Any, features: Any, labels: Any, classes: Sequence[Any]
) -> dict[str, float]:
    """Each of ``metrics`` for ``model`` on the held-out rows (``features``, ``labels``);
    NaN where it cannot be computed (no held-out rows, say)."""
    if len(labels) == 0:
        return {name: NAN for name in metrics}
    entries = [REGISTRY[name] for name in metrics]
    proba, model_classes = None, ()
    if any(e.meta.get("needs_proba") for e in entries) and hasattr(model, "predict_proba"):
        proba, model_classes = model.predict_proba(features), list(model.classes_)
    held = Held(labels, model.predict(features), proba, model_classes, list(classes))
    return {e.name: float(e.impl(held)) for e in entries}


# ---------------------------------------------------------------- classification


@REGISTRY.register("accuracy", kind="classification", meta={"default": True})
def accuracy(held: Held) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(held.y_true, held.y_pred)


@REGISTRY.register("precision", kind="classification")
def precision(held: Held) -> float:
    from sklearn.metrics import precision_score

    return precision_score(held.y_true, held.y_pred, zero_division=NAN, **held.averaged())


@REGISTRY.register("recall", kind="classification")
def recall(held: Held) -> float:
    from sklearn.metrics import recall_score

    return recall_score(held.y_true, held.y_pred, zero_division=NAN, **held.averaged())


@REGISTRY.register("f1", kind="classification")
def f1(held: Held) -> float:
    from sklearn.metrics import f1_score

    return f1_score(held.y_true, held.y_pred, zero_division=NAN, **held.averaged())


@REGISTRY.register("roc_auc", kind="classification", meta={"needs_proba": True})
def roc_auc(held: Held) -> float:
    """Binary: the positive class's score; more classes: one-vs-rest, weighted."""
    from sklearn.metrics import roc_auc_score

    if held.proba is None or len(set(held.y_true)) < 2:
        return NAN
    model_classes = list(held.model_classes)
    try:
        if held.binary:
            if held.positive not in model_classes:
                return NAN
            scores = held.proba[:, model_classes.index(held.positive)]
            return roc_auc_score(held.y_true == held.positive, scores)
        return roc_auc_score(
            held.y_true, held.proba, multi_class="ovr", average="weighted", labels=model_classes
        )
    except ValueError:  # e.g. held-out classes the model never saw
        return NAN


# ---------------------------------------------------------------- regression


@REGISTRY.register("r2", kind="regression", meta={"default": True})
def r2(held: Held) -> float:
    from sklearn.metrics import r2_score

    return r2_score(held.y_true, held.y_pred) if len(held.y_true) > 1 else NAN


@REGISTRY.register("mae", kind="regression")
def mae(held: Held) -> float:
    from sklearn.metrics import mean_absolute_error

    return mean_absolute_error(held.y_true, held.y_pred)


@REGISTRY.register("rmse", kind="regression")
def rmse(held: Held) -> float:
    from sklearn.metrics import root_mean_squared_error

    return root_mean_squared_error(held.y_true, held.y_pred)
