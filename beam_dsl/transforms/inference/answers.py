"""What models answer, as prediction frames (see :class:`.base.Predictor`).

A framework's predictor turns its model's output into an :class:`Answer`
(values per OUTPUT name, class scores, rows refused before the model ran);
:func:`prediction_frame` makes the frame RunModel and ENSEMBLE read from it.
Tensor models go through :func:`input_array` and :func:`array_answer`:

* the INPUT columns are one array: a single column of numbers or of lists (a
  vector per row), or several numeric columns side by side;
* an answer of one value per row fills OUTPUT; several OUTPUT names take one
  column each; a single OUTPUT over a score per class answers the best class
  (its index, or its label from CLASSES or the model's own labels) with its
  softmax ``confidence`` and ``proba``.

Beam-free, and pandas is imported where a frame is built, so that the
framework modules that import this one stay light for ``lint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class ModelMismatch(ValueError):
    """The model answers in a shape the MODEL does not fit (OUTPUT or CLASSES): every row
    of the batch gets this reason, without looking for the rows at fault."""


@dataclass
class Answer:
    """A model's answer for a batch of n rows (what ``SingleModel.answer`` returns)."""

    values: list[Any]  # per OUTPUT name, n values (an array, or a list of lists)
    confidence: Any = None  # n floats, or None where the model has no class scores
    proba: list[dict] | None = None  # n {class: probability} dicts, or None
    errors: list[str | None] | None = None  # rows refused before the model ran (bad image)


def _column(value: Any, index: Any, fill: Any = None) -> Any:
    """One prediction-frame column: an array, a Series of objects, or ``fill`` everywhere."""
    import pandas as pd

    if value is None or isinstance(value, str):
        return np.full(len(index), value if value is not None else fill, dtype=object)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()  # a list (of lists) per row
    return pd.Series(list(value), index=index, dtype=object)


def prediction_frame(
    index: Any,
    outputs: Sequence[str],
    answer: Answer | None,
    model_id: str | None,
    model_key: str | None = None,
    error: str | None = None,
) -> Any:
    """The predictor frame for the rows at ``index`` (a pandas Index); ``error`` fails them
    all."""
    import pandas as pd

    if answer is None:
        answer = Answer(values=[None] * len(outputs))
    confidence = answer.confidence
    data = {name: _column(values, index) for name, values in zip(outputs, answer.values,
                                                                  strict=True)}
    data["confidence"] = (
        np.full(len(index), np.nan) if confidence is None else np.asarray(confidence, float)
    )
    data["proba"] = _column(answer.proba, index)
    data["model_id"] = _column(model_id, index)
    data["model_key"] = _column(model_key, index)
    data["error"] = _column(error if error is not None else answer.errors, index)
    return pd.DataFrame(data, index=index, copy=False)


def stack_frames(index: Any, parts: Sequence[tuple[np.ndarray, Any]]) -> Any:
    """Prediction frames of disjoint row positions, as one frame over ``index``.

    A column keeps its dtype where every part has the same one; else it holds
    Python objects.
    """
    import pandas as pd

    data = {}
    for column in parts[0][1].columns:
        dtypes = {part[column].dtype for _, part in parts}
        dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(object)
        values = np.empty(len(index), dtype=dtype)
        for positions, part in parts:
            values[positions] = part[column].to_numpy()
        data[column] = values
    return pd.DataFrame(data, index=index, copy=False)


def split_outputs(values: Any, outputs: Sequence[str]) -> list[Any]:
    """A model's answer as one column per OUTPUT name."""
    if len(outputs) == 1:
        return [values]
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] != len(outputs):
        raise ModelMismatch(
            f"the model answers with shape {array.shape[1:] or '()'} per batch row, "
            f"but OUTPUT names {len(outputs)} fields"
        )
    return [array[:, i] for i in range(len(outputs))]


def class_scores(proba: np.ndarray, classes: Sequence[Any]) -> tuple[np.ndarray, list[dict]]:
    """``confidence`` (highest probability) and ``proba`` dicts of a probability matrix."""
    from beam_dsl.transforms.common.rows import to_python

    keys = [to_python(c) for c in classes]
    return proba.max(axis=1), [dict(zip(keys, row, strict=True)) for row in proba.tolist()]


def _as_list(values: Any) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def answer_length(answer: Answer) -> int:
    return len(answer.values[0])


def concat_answers(answers: Sequence[Answer], width: int) -> Answer | None:
    """Answers for consecutive runs of rows, as one answer."""
    if not answers:
        return None
    if len(answers) == 1:
        return answers[0]
    sizes = [answer_length(a) for a in answers]

    def joined(pick, fill):
        if all(pick(a) is None for a in answers):
            return None
        return [v for a, n in zip(answers, sizes, strict=True)
                for v in (_as_list(pick(a)) if pick(a) is not None else [fill] * n)]

    return Answer(
        [joined(lambda a, i=i: a.values[i], None) for i in range(width)],
        joined(lambda a: a.confidence, np.nan),
        joined(lambda a: a.proba, None),
        joined(lambda a: a.errors, None),
    )


def spread(
    answer: Answer | None, positions: Sequence[int], errors: list[str | None], width: int
) -> Answer:
    """An answer for the rows at ``positions``, widened to all rows; the others keep ``errors``.

    ``errors`` has one entry per row (None where the row was answered);
    ``width`` is the number of OUTPUT names.
    """
    n = len(errors)
    if answer is not None and len(positions) == n and answer.errors is None:
        return answer
    if answer is None:
        return Answer([[None] * n for _ in range(width)], errors=list(errors))

    def widen(values, fill):
        column: list[Any] = [fill] * n
        for position, value in zip(positions, _as_list(values), strict=True):
            column[position] = value
        return column

    merged = list(errors)
    for position, error in zip(positions, answer.errors or [None] * len(positions), strict=True):
        if error is not None:
            merged[position] = error
    return Answer(
        [widen(answer.values[i], None) for i in range(width)],
        None if answer.confidence is None else widen(answer.confidence, np.nan),
        None if answer.proba is None else widen(answer.proba, None),
        merged,
    )


# ---------------------------------------------------------------- tensor models


def input_array(features: Any, dtype: Any = np.float32) -> np.ndarray:
    """The INPUT columns of a frame as one array: a vector per row (or one value per row).

    Raises on a missing number (NaN): a network would answer it with NaN.
    """
    if features.shape[1] == 1:
        column = features.iloc[:, 0].tolist()
        array = np.stack([np.asarray(v, dtype=dtype) for v in column])
    else:
        array = features.to_numpy(dtype=dtype)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("an INPUT value is missing (NaN) or infinite")
    return array


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _is_probability(scores: np.ndarray) -> bool:
    in_range = (scores >= 0).all() and (scores <= 1).all()
    return bool(in_range and np.allclose(scores.sum(axis=1), 1, atol=1e-3))


def array_answer(
    out: np.ndarray,
    outputs: Sequence[str],
    scores: bool,
    labels: Sequence[Any] | None = None,
    classes: Sequence[Any] | None = None,
) -> Answer:
    """A tensor model's answer (batch first) for the OUTPUT names (see the module docstring).

    ``classes`` (CLASSES) names the class indices and must fit the answer:
    one score per class, or a class index per row. ``labels`` are the
    model's own names for them, used without CLASSES.
    """
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if classes is not None:
        return _labelled(out, scores, classes)
    if out.ndim == 1 or len(outputs) > 1:
        return Answer(split_outputs(out, outputs))
    if out.ndim > 2:
        return Answer([out])  # a nested list per row
    return _best_class(out, scores, list(labels) if labels is not None else
                       list(range(out.shape[1])))


def _best_class(out: np.ndarray, scores: bool, classes: list[Any]) -> Answer:
    proba = out if _is_probability(out) else softmax(out)
    best = [classes[i] for i in proba.argmax(axis=1).tolist()]
    if not scores:
        return Answer([best])
    confidence, dicts = class_scores(proba, classes)
    return Answer([best], confidence, dicts)


def _labelled(out: np.ndarray, scores: bool, classes: Sequence[Any]) -> Answer:
    """CLASSES: class index i answers ``classes[i]``; scores become per-label scores."""
    labels = list(classes)
    if out.ndim == 2 and out.shape[1] == len(labels):
        return _best_class(out, scores, labels)
    if out.ndim == 1 and np.issubdtype(out.dtype, np.integer):
        bad = out[(out < 0) | (out >= len(labels))]
        if len(bad):
            raise ModelMismatch(f"the model answers class index {int(bad[0])} "
                                f"but CLASSES names {len(labels)} labels")
        return Answer([[labels[i] for i in out.tolist()]])
    shape = "one number" if out.ndim == 1 else f"{out.shape[1:]} values"
    raise ModelMismatch(f"CLASSES names {len(labels)} labels but the model answers {shape} per "
                        "row; it must answer one score per class, or a class index")
