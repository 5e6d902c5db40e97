"""SKLEARN: a scikit-learn estimator or pipeline, from ``.skops`` (or, with allow_pickle,
``.pkl`` / ``.joblib``).

skops files load trusting skops' defaults, the MODEL's ``TRUST`` types and
the types beam_dsl vouches for because a TRAIN of the same pipeline writes
the path (``config.vouched``, from ``modelstore.vouched_types``); nothing
stored beside the file widens that. With ``CLASSES``, the labels must
be the estimator's ``classes_`` in order (E407 at load). Without INPUT the
model reads the columns it was fitted on (``feature_names_in_``).
"""

from __future__ import annotations

import os
from typing import Any

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import Answer, class_scores, split_outputs
from beam_dsl.transforms.inference.base import (
    E_CLASSES,
    E_MODEL_MISSING,
    E_MODEL_REFUSED,
    SingleModel,
    reason,
    resolve_path,
)
from beam_dsl.transforms.inference.frameworks import REGISTRY
from beam_dsl.transforms.training import modelstore


@REGISTRY.register(
    "sklearn",
    kind="python",
    meta={
        "clauses": ("TRUST", "CLASSES"),
        "suffixes": modelstore.SKOPS_SUFFIXES + modelstore.PICKLE_SUFFIXES,
        "one_core": True,
    },
)
class SklearnModel(SingleModel):
    """A scikit-learn model answering a frame: ``predict``, and ``predict_proba`` for scores."""

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        path = resolve_path(config, must_exist=True)
        super().__init__(config, path)
        try:
            trusted = (*config.trust, *config.vouched)
            self.model = modelstore.load_model(path, allow_pickle, trusted=trusted)
        except modelstore.UntrustedTypes as exc:
            trust = ", ".join(f"'{t}'" for t in exc.types)
            raise config.error(E_MODEL_REFUSED, str(exc), f"if you know the file is safe, add "
                               f"TRUST {trust} to the MODEL") from exc
        except modelstore.ModelStoreError as exc:
            code = E_MODEL_MISSING if not os.path.exists(path) else E_MODEL_REFUSED
            raise config.error(code, str(exc)) from exc
        except Exception as exc:
            why = f"cannot read '{path}': {reason(exc)}"
            raise config.error(E_MODEL_MISSING, why) from exc
        if config.classes is not None:
            self._check_classes(config)
        # A model fitted on a frame checks column names; one fitted on an array
        # gets an array (sklearn would only warn about the names, and slower).
        self.named = hasattr(self.model, "feature_names_in_")
        if self.inputs is None and self.named:
            self.inputs = [str(c) for c in self.model.feature_names_in_]
        from sklearn.base import is_classifier

        self.classifier = is_classifier(self.model) and hasattr(self.model, "predict_proba")

    def _check_classes(self, config: ModelConfig) -> None:
        from beam_dsl.transforms.common.rows import to_python

        found = [to_python(c) for c in getattr(self.model, "classes_", ())]
        if found != list(config.classes):
            raise config.error(
                E_CLASSES,
                f"CLASSES {tuple(config.classes)} are not the classes of '{self.path}': "
                + (repr(tuple(found)) if found else "it has none (not a classifier)"),
                "CLASSES lists a scikit-learn model's classes_, in their order",
            )

    def answer(self, frame: Any, scores: bool) -> Answer:
        features = self.features(frame) if self.named else self.features(frame).to_numpy()
        values = split_outputs(self.model.predict(features), self.outputs)
        if not (scores and self.classifier):
            return Answer(values)
        confidence, proba = class_scores(self.model.predict_proba(features), self.model.classes_)
        return Answer(values, confidence, proba)
