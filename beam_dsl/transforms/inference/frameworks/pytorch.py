"""PYTORCH: a state dict plus ``CLASS pkg.Net(k = v)``, or a TorchScript file without CLASS,
loaded and run through Beam's ``PytorchModelHandlerTensor``.

The INPUT columns are one float32 tensor (:func:`~..answers.input_array`); the
answer is read by :func:`~..answers.array_answer` (CLASSES names the class
indices).
"""

from __future__ import annotations

from typing import Any

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import Answer, array_answer, input_array
from beam_dsl.transforms.inference.base import (
    E_MODEL_MISSING,
    SingleModel,
    import_object,
    reason,
    require,
    resolve_device,
    resolve_path,
)
from beam_dsl.transforms.inference.frameworks import REGISTRY


def _forward(batch, model, device, inference_args, model_id=None) -> Any:
    """Beam's PyTorch inference_fn: the whole batch through the model, back as one array."""
    import torch

    with torch.no_grad():
        out = model(torch.stack(batch).to(device), **(inference_args or {}))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().cpu().numpy()


@REGISTRY.register(
    "pytorch", kind="torch", meta={"clauses": ("CLASS", "CLASSES"), "suffixes": (".pt", ".pth")}
)
class TorchModel(SingleModel):
    """PYTORCH: a state dict with CLASS, or a TorchScript file without it."""

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        path = resolve_path(config, must_exist=True)
        super().__init__(config, path)
        self._torch = require(config, "torch", "torch")
        from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

        self.device = resolve_device(config)
        kwargs: dict[str, Any] = {
            "device": "GPU" if self.device == "cuda" else "CPU",
            "inference_fn": _forward,
        }
        model_class = config.model_class
        if model_class:
            net = import_object(model_class.callable, config)
            kwargs.update(
                state_dict_path=path,
                model_class=lambda **params: net(*model_class.args, **params),
                model_params=model_class.kwargs,
            )
        else:
            kwargs["torch_script_model_path"] = path
        self.handler = PytorchModelHandlerTensor(**kwargs)
        try:
            self.model = self.handler.load_model()
        except Exception as exc:
            what = "a state dict for CLASS" if model_class else "a TorchScript file"
            raise config.error(
                E_MODEL_MISSING, f"cannot load '{path}' as {what}: {reason(exc)}"
            ) from exc

    def answer(self, frame: Any, scores: bool) -> Answer:
        tensors = list(self._torch.from_numpy(input_array(self.features(frame))))
        out = self.handler.run_inference(tensors, self.model)
        return array_answer(out, self.outputs, scores, classes=self.config.classes)
