"""CUSTOM: a user's own Beam ``ModelHandler``, by dotted name with keyword arguments.

Each row's example is its single INPUT column's value, else a dict of the
INPUT columns (or of the whole row). The handler's ``run_inference`` answers
a list of examples with one ``PredictionResult`` (or value) each; with
several OUTPUT names, a value is a dict by name or a tuple. A user's handler
may import anything, torch included (kind ``torch``).
"""

from __future__ import annotations

import os
from typing import Any

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import Answer
from beam_dsl.transforms.inference.base import (
    E_MODEL_SETUP,
    SingleModel,
    configured_path,
    import_object,
    reason,
    resolve_path,
)
from beam_dsl.transforms.inference.frameworks import REGISTRY


@REGISTRY.register("custom", kind="torch", meta={"clauses": (), "suffixes": ()})
class CustomModel(SingleModel):
    """A user's ``ModelHandler``, its model loaded once; ``model_id`` from its ``path``
    keyword (a file), else its dotted name."""

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        handler_call = config.handler
        path = resolve_path(config, must_exist=False) if configured_path(config) else None
        super().__init__(config, path if path and os.path.exists(path) else None)
        handler_class = import_object(handler_call.callable, config)
        try:
            self.handler = handler_class(*handler_call.args, **handler_call.kwargs)
            if path and path != handler_call.kwargs.get("path"):
                self.handler.update_model_path(path)  # a glob's newest match, or a REFRESH
            self.model = self.handler.load_model()
        except Exception as exc:
            raise config.error(
                E_MODEL_SETUP, f"{handler_call.callable} failed to load: {reason(exc)}"
            ) from exc
        if self.path is None:
            self.model_id = handler_call.callable

    def answer(self, frame: Any, scores: bool) -> Answer:
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
