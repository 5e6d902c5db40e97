"""The predictor contract, and what every framework's predictor shares.

:class:`Predictor` is what RunModel and ENSEMBLE predict through;
:class:`SingleModel` is the base of each framework's predictor (one module
per framework in :mod:`.frameworks`), which implements ``answer`` for a
whole frame. The helpers here resolve a MODEL's path, identify its file,
import a user's class, pick the device and import a framework's library,
raising :class:`~beam_dsl.diagnostics.DiagnosticError` with an E4xx code
(``config.error``) for what is wrong with the MODEL rather than with a row.

Beam-free and pandas-free at import, like the framework modules.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import logging
import os
import sys
from abc import ABC, abstractmethod
from typing import Any

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import (
    Answer,
    ModelMismatch,
    answer_length,
    concat_answers,
    prediction_frame,
    spread,
)
from beam_dsl.transforms.training import modelstore

_LOG = logging.getLogger(__name__)

# E4xx codes of model loading (LANGUAGE.md section 6 lists the families).
E_MODEL_MISSING = "E401"  # no model file / directory at the path, or not a model
E_MODEL_REFUSED = "E402"  # a pickle without allow_pickle, untrusted skops types
E_NO_GPU = "E403"  # DEVICE GPU where no GPU is visible
E_MODEL_SETUP = "E404"  # a class or handler that cannot be imported or built
E_INPUT_MISSING = "E405"  # no schema, or INPUT / PER names a column the rows lack
E_CLASSES = "E407"  # CLASSES that are not the scikit-learn model's classes_


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
    :class:`DiagnosticError` from ``build_predictor`` instead.
    """

    name: str
    outputs: list[str]
    model_id: str

    @abstractmethod
    def predict(self, frame: Any, scores: bool = True) -> Any:
        """Predictions for ``frame``; ``scores=False`` skips confidence and proba."""


# ---------------------------------------------------------------- paths, ids, imports, devices


def reason(exc: BaseException) -> str:
    """An exception as an ``errors`` reason."""
    return f"{type(exc).__name__}: {exc}"


def configured_path(config: ModelConfig) -> str | None:
    """The path a MODEL names: its file or directory, or for CUSTOM its handler's ``path``."""
    if config.path:
        return config.path
    return config.handler.kwargs.get("path") if config.handler else None


def resolve_path(config: ModelConfig, must_exist: bool) -> str:
    """The model path to load: a glob picks its newest match (REFRESH swaps in newer ones).

    ``must_exist``: a path that is not a glob must be a local file or
    directory (a Hugging Face hub id or a CUSTOM handler's URI need not be).
    """
    path = configured_path(config)
    if not glob.has_magic(path):
        if must_exist and not os.path.exists(path):
            raise config.error(E_MODEL_MISSING, f"model file '{path}' does not exist")
        return path
    matches = glob.glob(path)
    if not matches:
        raise config.error(E_MODEL_MISSING, f"no model file matches '{path}'")
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


def import_object(dotted: str, config: ModelConfig) -> Any:
    """The Python object a dotted name (``pkg.module.Name``) names; E404 if there is none.

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
        raise config.error(E_MODEL_SETUP, f"cannot import '{dotted}': {exc}") from exc


def require(config: ModelConfig, module: str, extra: str) -> Any:
    """Imports a framework's library, or says which beam_dsl extra installs it (E404)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise config.error(
            E_MODEL_SETUP,
            f"{config.framework.upper()} models need the '{module}' package",
            f"pip install 'beam_dsl[{extra}]'",
        ) from exc


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


def resolve_device(config: ModelConfig, gpu: bool | None = None) -> str:
    """``'cuda'`` or ``'cpu'`` for DEVICE GPU | CPU | AUTO.

    ``gpu`` says whether the framework can use a GPU here (default:
    :func:`gpu_visible`).
    """
    if config.device == "cpu":
        return "cpu"
    if gpu_visible() if gpu is None else gpu:
        return "cuda"
    if config.device == "gpu":
        raise config.error(
            E_NO_GPU,
            "DEVICE GPU, but no GPU is visible to this worker",
            "use DEVICE AUTO to fall back to the CPU, or give the step an accelerator HINT",
        )
    _LOG.info("MODEL %s: DEVICE AUTO found no GPU; running on the CPU", config.name)
    return "cpu"


# ---------------------------------------------------------------- one model


class SingleModel(Predictor):
    """One loaded model; each framework implements :meth:`answer` for a whole frame.

    :meth:`predict` checks the input columns, runs :meth:`answer` on the whole
    frame and, where that raises, on halves of it, down to single rows, so
    that only the rows the model rejects get an error. A
    :class:`~.answers.ModelMismatch` (an answer that does not fit OUTPUT or
    CLASSES) fails the rows it was raised for at once.
    """

    def __init__(self, config: ModelConfig, path: str | None):
        self.config = config
        self.name = config.name
        self.outputs = list(config.outputs)
        self.path = path
        self.inputs: list[str] | None = list(config.input) if config.input is not None else None
        self.model_id = model_id(path) if path else self.name

    @abstractmethod
    def answer(self, frame: Any, scores: bool) -> Answer:
        """The model's answer for every row of ``frame`` (it may raise)."""

    def features(self, frame: Any) -> Any:
        """The columns the model reads: INPUT, else the whole row."""
        return frame if self.inputs is None else frame[self.inputs]

    def predict(self, frame: Any, scores: bool = True) -> Any:
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

    def _isolate(self, frame: Any, scores: bool, start: int) -> list[tuple[int, Any]]:
        """(first position, answer) for row runs answered, (position, reason) per rejected row."""
        try:
            answer = self.answer(frame, scores)
            if answer_length(answer) != len(frame):
                raise ValueError(f"the model answered {answer_length(answer)} of {len(frame)} rows")
            return [(start, answer)]
        except ModelMismatch as exc:
            return [(start + i, reason(exc)) for i in range(len(frame))]
        except Exception as exc:  # noqa: BLE001 - a rejected row becomes an error row
            if len(frame) == 1:
                return [(start, reason(exc))]
        middle = len(frame) // 2
        return self._isolate(frame.iloc[:middle], scores, start) + self._isolate(
            frame.iloc[middle:], scores, start + middle
        )
