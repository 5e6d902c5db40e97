"""Loading MODELs as predictors (LANGUAGE.md section 2).

:func:`build_predictor` turns one MODEL config into a
:class:`~beam_dsl.transforms.inference.base.Predictor`: the predictor class
its framework registers (:mod:`.frameworks`), or for ``PER`` with a
``{key}`` path a :class:`KeyedPredictor` (one model per key, ``FALLBACK``).
RunModel (transform.py) and RunEnsemble both predict through it, so every
framework has one loading and one predicting path.

Run-time configuration problems raise :class:`DiagnosticError` with an E4xx
code; a row a model rejects only gets an ``error`` (see ``Predictor``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.ir.model import E_MODEL_CONFIG, ModelConfig
from beam_dsl.transforms.inference.answers import prediction_frame, stack_frames
from beam_dsl.transforms.inference.base import Predictor
from beam_dsl.transforms.inference.frameworks import REGISTRY
from beam_dsl.transforms.training import modelstore

_LOG = logging.getLogger(__name__)


def build_predictor(config: ModelConfig, allow_pickle: bool = False) -> Predictor:
    """Loads the MODEL that ``config`` describes (call once per DoFn setup).

    Args:
        config: the MODEL's config.
        allow_pickle: allow pickle / joblib model files, which can run code
            when loaded.
    """
    if config.per:
        return KeyedPredictor(config, allow_pickle)
    entry = REGISTRY.get(config.framework)
    if entry is None:
        raise config.error(E_MODEL_CONFIG, f"unknown framework '{config.framework}'")
    return entry.impl(config, allow_pickle)


def model_tag(config: ModelConfig) -> str:
    """A name for the model ``config`` loads, the same in every process."""
    return f"beam_dsl.{config.name}." + hashlib.sha256(
        json.dumps(config.to_json(), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- in worker processes

_LOADED: dict[str, Predictor] = {}  # a worker process's model, by model_tag


def load_in_worker(config: ModelConfig) -> Predictor:
    """``config``'s model in a worker process: loaded once, through the same loading code
    and trust as in the run's process (one model per worker: a newer file replaces
    it)."""
    tag = model_tag(config)
    predictor = _LOADED.get(tag)
    if predictor is None:
        _LOADED.clear()
        predictor = _LOADED[tag] = build_predictor(config, config.allow_pickle)
    return predictor


def predict_slice(config: ModelConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """``config``'s answers for ``rows`` (``Predictor.predict`` without scores), in a worker
    process."""
    return load_in_worker(config).predict(rows, scores=False)


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
    again once a REFRESH period has passed since it was last read; each key's
    model is loaded the first time one of its rows comes, and again once its
    file changed. Rows of a key with no model go to the fallback, or get an
    error where there is none; a key whose model file cannot be loaded gets
    an error with the reason.
    """

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        self.name = config.name
        self.outputs = list(config.outputs)
        self.model_id = config.path
        self.config = config
        self._allow_pickle = allow_pickle
        self.per = list(config.per)
        fallback = config.fallback
        self.fallback = build_predictor(fallback, allow_pickle) if fallback else None
        # by key name: the model (or why it did not load) and the file's mtime then
        self._models: dict[str, tuple[Predictor | str, float]] = {}
        self.paths: dict[str, str] | None = None  # read by the first predict
        self._read_at = 0.0

    def _read_keys(self) -> None:
        """(Re-)reads the key set; models whose file changed since loading are dropped."""
        self.paths = key_paths(self.config.path)
        self._read_at = time.monotonic()
        if not self.paths and self.fallback is None:
            _LOG.warning("MODEL %s: no model matches '%s'", self.name, self.config.path)
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
            single = dataclasses.replace(self.config, per=(), fallback=None, path=path)
            try:
                self._models[name] = (build_predictor(single, self._allow_pickle), mtime)
            except DiagnosticError as exc:
                why = "; ".join(f"error[{d.code}]: {d.message}" for d in exc.diagnostics)
                self._models[name] = (why, mtime)
        return self._models[name][0]

    def predict(self, frame: pd.DataFrame, scores: bool = True) -> pd.DataFrame:
        refresh_s = self.config.refresh_s
        if self.paths is None or refresh_s and time.monotonic() - self._read_at >= refresh_s:
            self._read_keys()
        missing = [c for c in self.per if c not in frame.columns]
        if missing:
            why = f"missing key column(s) {', '.join(missing)}"
            return prediction_frame(frame.index, self.outputs, None, None, error=why)
        if len(frame) == 0:
            return prediction_frame(frame.index, self.outputs, None, None)
        from beam_dsl.transforms.common.rows import to_python  # Beam: not in MODEL's workers

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
