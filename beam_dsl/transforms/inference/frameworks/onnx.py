"""ONNX: an ``onnxruntime`` session from Beam's ``OnnxModelHandlerNumpy``.

One graph input is fed from the INPUT columns as one array, or each graph
input from the INPUT column of its name, as the type the graph asks for.
OUTPUT names that are graph outputs are read by name; otherwise the first
graph output answers, read by :func:`~..answers.array_answer` (CLASSES names
the class indices).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import Answer, array_answer, input_array
from beam_dsl.transforms.inference.base import (
    E_MODEL_MISSING,
    SingleModel,
    gpu_visible,
    reason,
    require,
    resolve_device,
    resolve_path,
)
from beam_dsl.transforms.inference.frameworks import REGISTRY

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


@REGISTRY.register("onnx", kind="python", meta={"clauses": ("CLASSES",), "suffixes": (".onnx",)})
class OnnxModel(SingleModel):
    """ONNX: one graph input fed from the INPUT columns, or one input per column of its name."""

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        path = resolve_path(config, must_exist=True)
        super().__init__(config, path)
        onnxruntime = require(config, "onnxruntime", "onnx")
        from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and gpu_visible()
        providers = ["CPUExecutionProvider"]
        if resolve_device(config, gpu=cuda) == "cuda":  # onnxruntime-gpu, and a GPU
            providers.insert(0, "CUDAExecutionProvider")
        handler = OnnxModelHandlerNumpy(model_uri=path, providers=providers)
        try:
            self.session = handler.load_model()
        except Exception as exc:
            raise config.error(
                E_MODEL_MISSING, f"cannot load '{path}' as ONNX: {reason(exc)}"
            ) from exc
        self.graph_inputs = [(i.name, _ONNX_TYPES.get(i.type, np.float32))
                             for i in self.session.get_inputs()]
        names = [o.name for o in self.session.get_outputs()]
        self.by_name = all(o in names for o in self.outputs)

    def answer(self, frame: Any, scores: bool) -> Answer:
        features = self.features(frame)
        if len(self.graph_inputs) == 1:
            name, dtype = self.graph_inputs[0]
            feeds = {name: input_array(features, dtype)}
        else:
            absent = [n for n, _ in self.graph_inputs if n not in features.columns]
            if absent:
                raise ValueError(f"the ONNX graph's inputs {absent} are not INPUT columns")
            feeds = {n: input_array(features[[n]], t) for n, t in self.graph_inputs}
        if not self.by_name:
            out = np.asarray(self.session.run(None, feeds)[0])
            return array_answer(out, self.outputs, scores, classes=self.config.classes)
        outs = [np.asarray(o) for o in self.session.run(list(self.outputs), feeds)]
        if self.config.classes is not None:  # with CLASSES, OUTPUT is a single name
            return array_answer(outs[0], self.outputs, scores, classes=self.config.classes)
        return Answer([o[:, 0] if o.ndim == 2 and o.shape[1] == 1 else o for o in outs])
