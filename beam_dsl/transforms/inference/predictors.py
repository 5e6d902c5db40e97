"""Loading MODELs and predicting on pandas frames (LANGUAGE.md section 2).

:func:`build_predictor` turns one lowered MODEL config (the keyword arguments
that ``beam_dsl.dsl.lower._model_config`` emits) into a :class:`Predictor`.
RunModel (inference.py) and RunEnsemble (ensemble.py) both predict through it,
so every framework has one loading and one predicting path.

This module holds the predictor contract, per-key models (``PER`` with a
``{key}`` path, ``FALLBACK``), scikit-learn and CUSTOM (a user's Beam
``ModelHandler``); PyTorch, ONNX and Hugging Face live in
:mod:`beam_dsl.transforms.inference.deep_models`.

Run-time configuration problems raise :class:`DiagnosticError` with an E4xx
code; a row a model rejects only gets an ``error`` (see :class:`Predictor`).
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from beam_dsl.diagnostics import Diagnostic, DiagnosticError
from beam_dsl.transforms.common.rows import to_python
from beam_dsl.transforms.training import modelstore

_LOG = logging.getLogger(__name__)

# E4xx codes of model loading (LANGUAGE.md section 6 lists the families).
E_MODEL_MISSING = "E401"  # no model file / directory at the path, or not a model
E_MODEL_REFUSED = "E402"  # a pickle without allow_pickle, untrusted skops types
E_NO_GPU = "E403"  # DEVICE GPU where no GPU is visible
E_MODEL_SETUP = "E404"  # a class or handler that cannot be imported or built
E_INPUT_MISSING = "E405"  # INPUT names a column the input rows do not have

# Columns of a prediction frame besides the model's OUTPUT columns.
PREDICTION_COLUMNS = ("confidence", "proba", "model_id", "model_key", "error")


class Predictor(ABC):
    """A loaded MODEL (one model, or one per key) that predicts on pandas frames.

    ``predict(frame)`` returns a frame aligned to ``frame.index`` (which must be
    unique) with these columns:

    * one per OUTPUT name: the prediction (Python values; lists for models that
      answer with several values, such as BLIP captions or CLIP scores);
    * ``confidence``: the highest class probability (float; NaN where the model
      is not a classifier, or when ``scores`` is off);
    * ``proba``: ``{class: probability}`` or None, likewise;
    * ``model_id``: ``path@sha256[:12]`` of the model that answered;
    * ``model_key``: for PER models, the key whose model answered (the
      fallback's ``model_id`` where the fallback answered); else None;
    * ``error``: None, or why this row got no prediction (its other columns
      are then null).

    A bad row never raises: a batch the model rejects is split until the rows
    it rejects are found, and only those get an ``error``. Load problems raise
    :class:`DiagnosticError` from :func:`build_predictor` instead.
    """

    name: str
    outputs: list[str]
    model_id: str

    @abstractmethod
    def predict(self, frame: pd.DataFrame, scores: bool = True) -> pd.DataFrame:
        """Predictions for ``frame``; ``scores=False`` skips confidence and proba."""


def build_predictor(config: dict[str, Any], allow_pickle: bool = False) -> Predictor:
    """Loads the MODEL that ``config`` describes (call once per DoFn setup).

    Args:
        config: a lowered MODEL config (name, framework, path, handler,
            model_class, call, per, fallback, input, output, device, ...).
        allow_pickle: allow pickle / joblib model files, which can run code
            when loaded.
    """
    if not isinstance(config, dict):  # a ModelConfig (until predictors read it directly)
        config = config.to_json()
    if config.get("per"):
        return KeyedPredictor(config, allow_pickle)
    framework = config["framework"]
    if framework == "sklearn":
        return SklearnModel(config, resolve_path(config), allow_pickle)
    if framework == "custom":
        return CustomModel(config)
    from beam_dsl.transforms.inference import deep_models

    builders: dict[str, Callable[[dict[str, Any], str], Predictor]] = {
        "pytorch": deep_models.TorchModel,
        "onnx": deep_models.OnnxModel,
        "huggingface": deep_models.HuggingFaceModel,
    }
    if framework not in builders:
        raise config_error(E_MODEL_SETUP, config, f"unknown framework '{framework}'")
    return builders[framework](config, resolve_path(config))


# ---------------------------------------------------------------- errors, paths, ids


def config_error(code: str, config: dict[str, Any], message: str, hint: str | None = None):
    """A DiagnosticError about the MODEL ``config`` (no source position at run time)."""
    return DiagnosticError([Diagnostic(code, message, f"MODEL {config['name']}", None, hint)])


def reason(exc: BaseException) -> str:
    """An exception as an ``errors`` reason."""
    return f"{type(exc).__name__}: {exc}"


def configured_path(config: dict[str, Any]) -> str | None:
    """The path a MODEL names: its file or directory, or for CUSTOM its handler's ``path``."""
    if config.get("path"):
        return config["path"]
    handler = config.get("handler") or {}
    return handler.get("kwargs", {}).get("path")


def resolve_path(config: dict[str, Any]) -> str:
    """The model path to load: a glob picks its newest match (REFRESH swaps in newer ones)."""
    path = configured_path(config)
    if not glob.has_magic(path):
        if config["framework"] not in ("huggingface", "custom") and not os.path.exists(path):
            raise config_error(E_MODEL_MISSING, config, f"model file '{path}' does not exist")
        return path  # a Hugging Face path that is not a directory is a hub id
    matches = glob.glob(path)
    if not matches:
        raise config_error(E_MODEL_MISSING, config, f"no model file matches '{path}'")
    return max(matches, key=lambda p: (os.path.getmtime(p), p))


def model_id(path: str) -> str:
    """``path@sha256[:12]`` of a model file or directory (a hub id stays as it is)."""
    if os.path.isfile(path):
        return f"{path}@{modelstore.file_sha256(path)[:12]}"
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode() + b"\0")
                digest.update(modelstore.file_sha256(full).encode())
        return f"{path}@{digest.hexdigest()[:12]}"
    return path


def import_object(dotted: str, config: dict[str, Any]) -> Any:
    """The Python object a dotted name (``pkg.module.Name``) names.

    Modules resolve against installed packages, then the working directory
    (``beam_dsl run`` works in the pipeline's directory, so a user's
    ``mypkg/nets.py`` beside pipeline.yaml is found).
    """
    module_name, _, attr = dotted.rpartition(".")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            if os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise config_error(E_MODEL_SETUP, config, f"cannot import '{dotted}': {exc}") from exc


def gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        try:
            import onnxruntime
        except ImportError:
            return False
        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return torch.cuda.is_available()


def resolve_device(config: dict[str, Any], gpu: bool | None = None) -> str:
    """``'cuda'`` or ``'cpu'`` for DEVICE GPU | CPU | AUTO.

    ``gpu`` says whether the framework can use a GPU here (default:
    :func:`gpu_visible`).
    """
    device = config.get("device", "cpu")
    if device == "cpu":
        return "cpu"
    if gpu_visible() if gpu is None else gpu:
        return "cuda"
    if device == "gpu":
        raise config_error(
            E_NO_GPU,
            config,
            "DEVICE GPU, but no GPU is visible to this worker",
            "use DEVICE AUTO to fall back to the CPU, or give the step an accelerator HINT",
        )
    _LOG.info("MODEL %s: DEVICE AUTO found no GPU; running on the CPU", config["name"])
    return "cpu"


# ---------------------------------------------------------------- answers and result frames


@dataclass
class Answer:
    """A model's answer for a batch of n rows (what :meth:`SingleModel.answer` returns)."""

    values: list[Any]  # per OUTPUT name, n values (an array, or a list of lists)
    confidence: Any = None  # n floats, or None where the model has no class scores
    proba: list[dict] | None = None  # n {class: probability} dicts, or None
    errors: list[str | None] | None = None  # rows refused before the model ran (bad image)


def _column(value: Any, index: pd.Index, fill: Any = None) -> Any:
    """One prediction-frame column: an array, a Series of objects, or ``fill`` everywhere."""
    if value is None or isinstance(value, str):
        return np.full(len(index), value if value is not None else fill, dtype=object)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()  # a list (of lists) per row
    return pd.Series(list(value), index=index, dtype=object)


def prediction_frame(
    index: pd.Index,
    outputs: Sequence[str],
    answer: Answer | None,
    model_id: str | None,
    model_key: str | None = None,
    error: str | None = None,
) -> pd.DataFrame:
    """The :class:`Predictor` frame for the rows at ``index``; ``error`` fails them all."""
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


def split_outputs(values: Any, outputs: Sequence[str]) -> list[Any]:
    """A model's answer as one column per OUTPUT name."""
    if len(outputs) == 1:
        return [values]
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] != len(outputs):
        raise ValueError(
            f"the model answers with shape {array.shape[1:] or '()'} per batch row, "
            f"but OUTPUT names {len(outputs)} fields"
        )
    return [array[:, i] for i in range(len(outputs))]


def class_scores(proba: np.ndarray, classes: Sequence[Any]) -> tuple[np.ndarray, list[dict]]:
    """``confidence`` (highest probability) and ``proba`` dicts of a probability matrix."""
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


def stack_frames(index: pd.Index, parts: Sequence[tuple[np.ndarray, pd.DataFrame]]):
    """Prediction frames of disjoint row positions, as one frame over ``index``.

    A column keeps its dtype where every part has the same one; else it holds
    Python objects.
    """
    data = {}
    for column in parts[0][1].columns:
        dtypes = {part[column].dtype for _, part in parts}
        dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(object)
        values = np.empty(len(index), dtype=dtype)
        for positions, part in parts:
            values[positions] = part[column].to_numpy()
        data[column] = values
    return pd.DataFrame(data, index=index, copy=False)


# ---------------------------------------------------------------- one model


class SingleModel(Predictor):
    """One loaded model; subclasses implement :meth:`answer` for a whole frame.

    :meth:`predict` checks the input columns, runs :meth:`answer` on the whole
    frame and, where that raises, on halves of it, down to single rows, so
    that only the rows the model rejects get an error.
    """

    def __init__(self, config: dict[str, Any], path: str | None):
        self.name = config["name"]
        self.outputs = list(config["output"])
        self.path = path
        self.inputs: list[str] | None = config.get("input")
        self.model_id = model_id(path) if path else self.name

    @abstractmethod
    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        """The model's answer for every row of ``frame`` (it may raise)."""

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns the model reads: INPUT, else the whole row."""
        return frame if self.inputs is None else frame[self.inputs]

    def predict(self, frame: pd.DataFrame, scores: bool = True) -> pd.DataFrame:
        missing = [c for c in self.inputs or () if c not in frame.columns]
        if missing:
            why = f"missing input column(s) {', '.join(missing)}"
            return prediction_frame(frame.index, self.outputs, None, self.model_id, error=why)
        if len(frame) == 0:
            return prediction_frame(frame.index, self.outputs, None, self.model_id)
        parts = self._isolate(frame, scores, 0)
        if len(parts) == 1 and isinstance(parts[0][1], Answer):
            answer = parts[0][1]
        else:  # some rows were rejected: one answer for the others, an error for each of them
            errors: list[str | None] = [None] * len(frame)
            answered, positions = [], []
            for start, answer_or_reason in parts:
                if isinstance(answer_or_reason, Answer):
                    answered.append(answer_or_reason)
                    positions.extend(range(start, start + answer_length(answer_or_reason)))
                else:
                    errors[start] = answer_or_reason
            width = len(self.outputs)
            answer = spread(concat_answers(answered, width), positions, errors, width)
        return prediction_frame(frame.index, self.outputs, answer, self.model_id)

    def _isolate(self, frame: pd.DataFrame, scores: bool, start: int) -> list[tuple[int, Any]]:
        """(first position, answer) for row runs answered, (position, reason) per rejected row."""
        try:
            answer = self.answer(frame, scores)
            if answer_length(answer) != len(frame):
                raise ValueError(f"the model answered {answer_length(answer)} of {len(frame)} rows")
            return [(start, answer)]
        except Exception as exc:  # noqa: BLE001 - a rejected row becomes an error row
            if len(frame) == 1:
                return [(start, reason(exc))]
        middle = len(frame) // 2
        return self._isolate(frame.iloc[:middle], scores, start) + self._isolate(
            frame.iloc[middle:], scores, start + middle
        )


class SklearnModel(SingleModel):
    """A scikit-learn estimator or pipeline (``.skops``; ``.pkl``/``.joblib`` with allow_pickle).

    skops files load with skops' trusted types, the MODEL's TRUST and the
    types beam_dsl vouches for (its TRAIN in the same pipeline writes the
    path). Without INPUT it reads the columns it was fitted on
    (``feature_names_in_``).
    """

    def __init__(self, config: dict[str, Any], path: str, allow_pickle: bool = False):
        super().__init__(config, path)
        trusted = [*config.get("trust", ()), *config.get("vouched", ())]
        try:
            self.model = modelstore.load_model(path, allow_pickle=allow_pickle, trusted=trusted)
        except modelstore.ModelStoreError as exc:
            code = E_MODEL_MISSING if not os.path.exists(path) else E_MODEL_REFUSED
            raise config_error(code, config, str(exc)) from exc
        except Exception as exc:
            why = f"cannot read '{path}': {reason(exc)}"
            raise config_error(E_MODEL_MISSING, config, why) from exc
        # A model fitted on a frame checks column names; one fitted on an array
        # gets an array (sklearn would only warn about the names, and slower).
        self.named = hasattr(self.model, "feature_names_in_")
        if self.inputs is None and self.named:
            self.inputs = [str(c) for c in self.model.feature_names_in_]
        from sklearn.base import is_classifier

        self.classifier = is_classifier(self.model) and hasattr(self.model, "predict_proba")

    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        features = self.features(frame) if self.named else self.features(frame).to_numpy()
        values = split_outputs(self.model.predict(features), self.outputs)
        if not (scores and self.classifier):
            return Answer(values)
        confidence, proba = class_scores(self.model.predict_proba(features), self.model.classes_)
        return Answer(values, confidence, proba)


class CustomModel(SingleModel):
    """CUSTOM: a user's own Beam ``ModelHandler``, by dotted name with keyword arguments.

    Each row's example is its single INPUT column's value, else a dict of the
    INPUT columns (or of the whole row). The handler's ``run_inference``
    answers a list of examples with one ``PredictionResult`` (or value) each;
    with several OUTPUT names, a value is a dict by name or a tuple.
    """

    def __init__(self, config: dict[str, Any]):
        handler_call = config["handler"]
        path = resolve_path(config) if configured_path(config) else None
        super().__init__(config, path if path and os.path.exists(path) else None)
        handler_class = import_object(handler_call["callable"], config)
        try:
            self.handler = handler_class(*handler_call["args"], **handler_call["kwargs"])
            if path and path != handler_call["kwargs"].get("path"):
                self.handler.update_model_path(path)  # a glob's newest match, or a REFRESH
            self.model = self.handler.load_model()
        except Exception as exc:
            raise config_error(
                E_MODEL_SETUP, config, f"{handler_call['callable']} failed to load: {reason(exc)}"
            ) from exc
        if self.path is None:
            self.model_id = handler_call["callable"]

    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        features = self.features(frame)
        if features.shape[1] == 1 and self.inputs is not None:
            examples = features.iloc[:, 0].tolist()
        else:
            examples = features.to_dict("records")
        answers = [getattr(p, "inference", p) for p in self.handler.run_inference(
            examples, self.model)]
        if len(self.outputs) == 1:
            return Answer([answers])
        return Answer(
            [
                [a[name] if isinstance(a, dict) else a[i] for a in answers]
                for i, name in enumerate(self.outputs)
            ]
        )


# ---------------------------------------------------------------- one model per key


def key_label(key: Sequence[Any]) -> str:
    """A key as ``model_key`` shows it: its values, joined by ``+`` for several columns."""
    return "+".join("" if v is None else str(v) for v in key)


def key_paths(template: str) -> dict[str, str]:
    """The models a PER path has now: by :func:`modelstore.key_id` of their key for a set
    TRAIN published (its manifest lists the promoted ones); without one, every file
    matching the path (``{key}`` as a wildcard) is a model, by :func:`key_label`."""
    promoted = modelstore.ModelStore(template).promoted()
    if promoted is not None:
        return promoted
    prefix, suffix = template.split("{key}", 1)
    pattern = glob.escape(prefix) + "*" + glob.escape(suffix)
    return {
        path[len(prefix) : len(path) - len(suffix)]: path
        for path in glob.glob(pattern)
        if os.sep not in path[len(prefix) : len(path) - len(suffix)]
    }


class KeyedPredictor(Predictor):
    """``PER key`` with ``{key}`` in the path: one model per key, plus a FALLBACK.

    The key set is read when the first rows come (at run time, in the
    worker: after a TRAIN of the same pipeline that RunModel waits for), and
    again every REFRESH period; each key's model is loaded the first time
    one of its rows comes, and again once its file changed. Rows of a key
    with no model go to the fallback, or get an error where there is none; a
    key whose model file cannot be loaded gets an error with the reason.
    """

    def __init__(self, config: dict[str, Any], allow_pickle: bool = False):
        self.name = config["name"]
        self.outputs = list(config["output"])
        self.model_id = config["path"]
        self._config = config
        self._allow_pickle = allow_pickle
        self.per = list(config["per"])
        fallback = config.get("fallback")
        self.fallback = build_predictor(fallback, allow_pickle) if fallback else None
        # by key name: the model (or why it did not load) and the file's mtime then
        self._models: dict[str, tuple[Predictor | str, float]] = {}
        self.paths: dict[str, str] | None = None  # read by the first predict

    def _read_keys(self) -> None:
        """(Re-)reads the key set; models whose file changed since loading are dropped."""
        self.paths = key_paths(self._config["path"])
        self._read_at = time.monotonic()
        if not self.paths and self.fallback is None:
            _LOG.warning("MODEL %s: no model matches '%s'", self.name, self._config["path"])
        for name, (_, mtime) in list(self._models.items()):
            path = self.paths.get(name)
            if path is None or not os.path.exists(path) or os.path.getmtime(path) != mtime:
                del self._models[name]

    def model_for(self, name: str) -> Predictor | str | None:
        """The model of the key named ``name`` (loaded once), the reason it failed, or None."""
        if name not in self._models:
            path = self.paths.get(name)
            if path is None:
                return None
            mtime = os.path.getmtime(path) if os.path.exists(path) else 0.0
            single = {**self._config, "per": [], "fallback": None, "path": path,
                      "template": self._config["path"]}
            try:
                self._models[name] = (build_predictor(single, self._allow_pickle), mtime)
            except DiagnosticError as exc:
                self._models[name] = ("; ".join(d.message for d in exc.diagnostics), mtime)
        return self._models[name][0]

    def predict(self, frame: pd.DataFrame, scores: bool = True) -> pd.DataFrame:
        refresh_s = self._config.get("refresh_s")
        if self.paths is None or refresh_s and time.monotonic() - self._read_at >= refresh_s:
            self._read_keys()
        missing = [c for c in self.per if c not in frame.columns]
        if missing:
            why = f"missing key column(s) {', '.join(missing)}"
            return prediction_frame(frame.index, self.outputs, None, None, error=why)
        if len(frame) == 0:
            return prediction_frame(frame.index, self.outputs, None, None)
        parts = []
        groups = frame.groupby(self.per, sort=False, dropna=False).indices
        for raw, positions in groups.items():
            key = tuple(to_python(v) for v in (raw if isinstance(raw, tuple) else (raw,)))
            parts.append((positions, self._predict_key(key, frame.iloc[positions], scores)))
        if len(parts) == 1:
            return parts[0][1]
        return stack_frames(frame.index, parts)

    def _predict_key(self, key: tuple, rows: pd.DataFrame, scores: bool) -> pd.DataFrame:
        model = self.model_for(modelstore.key_id(key))
        if model is None:  # files named by their key, with no manifest
            model = self.model_for(key_label(key))
        if isinstance(model, Predictor):
            result = model.predict(rows, scores)
            result["model_key"] = key_label(key)
            return result
        if model is None and self.fallback is not None:
            result = self.fallback.predict(rows, scores)
            result["model_key"] = self.fallback.model_id
            return result
        named = ", ".join(f"{c}={v!r}" for c, v in zip(self.per, key, strict=True))
        why = model or f"no model for key {named} and no FALLBACK"
        return prediction_frame(rows.index, self.outputs, None, None, error=why)
