"""PYTORCH, ONNX and HUGGINGFACE models as predictors (see :mod:`.predictors`).

* PYTORCH: a state dict plus ``CLASS pkg.Net(k = v)``, or a TorchScript file
  without CLASS, loaded and run through Beam's ``PytorchModelHandlerTensor``.
* ONNX: an ``onnxruntime`` session from Beam's ``OnnxModelHandlerNumpy``.
* HUGGINGFACE: a ``save_pretrained`` directory (or a hub id where the network
  allows): the model class its config names and ``AutoProcessor``, which does
  the pre- and post-processing. ``CALL generate(...)`` makes text (BLIP
  captions: a list of strings per row when ``num_return_sequences`` > 1); an
  image with a list of texts (CLIP) scores each text (softmax over the row's
  texts); otherwise the model's logits are class scores.

Tensor models read their INPUT columns as one array: a single column of
numbers or of lists (a vector per row), or several numeric columns side by
side, as float32 unless the ONNX graph asks for another type. An answer of
one value per row fills OUTPUT; several OUTPUT names take one column each;
a single OUTPUT over a score per class answers the best class's index with
its softmax ``confidence`` and ``proba``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from beam_dsl.transforms.inference.image_inputs import decode_images, decodes_on_device, load_kwargs
from beam_dsl.transforms.inference.predictors import (
    E_MODEL_MISSING,
    E_MODEL_SETUP,
    Answer,
    SingleModel,
    class_scores,
    config_error,
    gpu_visible,
    import_object,
    reason,
    resolve_device,
    split_outputs,
    spread,
)

_EXTRAS = {"pytorch": "torch", "onnx": "onnx", "huggingface": "huggingface"}


def _require(config: dict[str, Any], module: str) -> Any:
    """Imports a framework's library, or says which beam_dsl extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS[config["framework"]]
        raise config_error(
            E_MODEL_SETUP,
            config,
            f"{config['framework'].upper()} models need the '{module}' package",
            f"pip install 'beam_dsl[{extra}]'",
        ) from exc


# ---------------------------------------------------------------- arrays in and out


def input_array(features: pd.DataFrame, dtype: Any = np.float32) -> np.ndarray:
    """The INPUT columns as one array: a vector per row (or one value per row).

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


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _is_probability(scores: np.ndarray) -> bool:
    in_range = (scores >= 0).all() and (scores <= 1).all()
    return bool(in_range and np.allclose(scores.sum(axis=1), 1, atol=1e-3))


def array_answer(
    out: np.ndarray, outputs: Sequence[str], scores: bool, labels: Sequence[Any] | None = None
) -> Answer:
    """A tensor model's answer (batch first) for the OUTPUT names (see the module docstring)."""
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim == 1 or len(outputs) > 1:
        return Answer(split_outputs(out, outputs))
    if out.ndim > 2:
        return Answer([out])  # a nested list per row
    proba = out if _is_probability(out) else _softmax(out)
    classes = list(labels) if labels is not None else list(range(out.shape[1]))
    best = [classes[i] for i in proba.argmax(axis=1).tolist()]
    if not scores:
        return Answer([best])
    confidence, dicts = class_scores(proba, classes)
    return Answer([best], confidence, dicts)


# ---------------------------------------------------------------- PyTorch


def _forward(batch, model, device, inference_args, model_id=None) -> np.ndarray:
    """Beam's PyTorch inference_fn: the whole batch through the model, back as one array."""
    import torch

    with torch.no_grad():
        out = model(torch.stack(batch).to(device), **(inference_args or {}))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().cpu().numpy()


class TorchModel(SingleModel):
    """PYTORCH: a state dict with CLASS, or a TorchScript file without it."""

    def __init__(self, config: dict[str, Any], path: str):
        super().__init__(config, path)
        torch = _require(config, "torch")
        from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

        self.device = resolve_device(config)
        kwargs: dict[str, Any] = {
            "device": "GPU" if self.device == "cuda" else "CPU",
            "inference_fn": _forward,
        }
        model_class = config.get("model_class")
        if model_class:
            net = import_object(model_class["callable"], config)
            kwargs.update(
                state_dict_path=path,
                model_class=lambda **params: net(*model_class["args"], **params),
                model_params=model_class["kwargs"],
            )
        else:
            kwargs["torch_script_model_path"] = path
        self.handler = PytorchModelHandlerTensor(**kwargs)
        try:
            self.model = self.handler.load_model()
        except Exception as exc:
            what = "a state dict for CLASS" if model_class else "a TorchScript file"
            raise config_error(
                E_MODEL_MISSING, config, f"cannot load '{path}' as {what}: {reason(exc)}"
            ) from exc
        self._torch = torch

    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        tensors = list(self._torch.from_numpy(input_array(self.features(frame))))
        return array_answer(self.handler.run_inference(tensors, self.model), self.outputs, scores)


# ---------------------------------------------------------------- ONNX

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class OnnxModel(SingleModel):
    """ONNX: one graph input fed from the INPUT columns, or one input per column of its name.

    OUTPUT names that are graph outputs are read by name; otherwise the first
    graph output answers.
    """

    def __init__(self, config: dict[str, Any], path: str):
        super().__init__(config, path)
        onnxruntime = _require(config, "onnxruntime")
        from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and gpu_visible()
        providers = ["CPUExecutionProvider"]
        if resolve_device(config, gpu=cuda) == "cuda":  # onnxruntime-gpu, and a GPU
            providers.insert(0, "CUDAExecutionProvider")
        handler = OnnxModelHandlerNumpy(model_uri=path, providers=providers)
        try:
            self.session = handler.load_model()
        except Exception as exc:
            raise config_error(
                E_MODEL_MISSING, config, f"cannot load '{path}' as ONNX: {reason(exc)}"
            ) from exc
        self.graph_inputs = [(i.name, _ONNX_TYPES.get(i.type, np.float32))
                             for i in self.session.get_inputs()]
        names = [o.name for o in self.session.get_outputs()]
        self.by_name = all(o in names for o in self.outputs)

    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        features = self.features(frame)
        if len(self.graph_inputs) == 1:
            name, dtype = self.graph_inputs[0]
            feeds = {name: input_array(features, dtype)}
        else:
            absent = [n for n, _ in self.graph_inputs if n not in features.columns]
            if absent:
                raise ValueError(f"the ONNX graph's inputs {absent} are not INPUT columns")
            feeds = {n: input_array(features[[n]], t) for n, t in self.graph_inputs}
        if self.by_name:
            outs = [np.asarray(o) for o in self.session.run(list(self.outputs), feeds)]
            return Answer([o[:, 0] if o.ndim == 2 and o.shape[1] == 1 else o for o in outs])
        return array_answer(np.asarray(self.session.run(None, feeds)[0]), self.outputs, scores)


# ---------------------------------------------------------------- Hugging Face


def decode_image(value: Any):
    """A PIL image (RGB) from encoded bytes, a file path, or a PIL image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        try:
            image = Image.open(io.BytesIO(bytes(value)))
        except OSError as exc:
            raise ValueError(f"{len(bytes(value))} bytes that are not an image") from exc
    elif isinstance(value, str):
        image = Image.open(value)
    else:
        raise ValueError(f"not an image: {type(value).__name__}")
    return image.convert("RGB")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _is_image(value: Any) -> bool:
    from PIL import Image

    if isinstance(value, (bytes, bytearray, memoryview, Image.Image)):
        return True
    return isinstance(value, str) and (
        value.lower().endswith(IMAGE_SUFFIXES) or os.path.isfile(value)
    )


def _column_kind(values: Sequence[Any]) -> str:
    """``texts`` (a list of strings per row), ``image`` (bytes, a path) or ``text``."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in present):
        return "texts"
    if any(_is_image(v) for v in present):
        return "image"
    return "text"


class HuggingFaceModel(SingleModel):
    """HUGGINGFACE: a save_pretrained directory; its processor does pre- and post-processing."""

    def __init__(self, config: dict[str, Any], path: str):
        super().__init__(config, path)
        self._torch = _require(config, "torch")
        transformers = _require(config, "transformers")
        self.device = resolve_device(config)
        call = config.get("call")
        self.call = call["callable"] if call else None
        self.call_kwargs = dict(call["kwargs"]) if call else {}
        try:
            auto = transformers.AutoConfig.from_pretrained(path)
            named = (auto.architectures or [None])[0]
            model_class = getattr(transformers, named) if named else transformers.AutoModel
            self.model = model_class.from_pretrained(path, **load_kwargs(config, self.device))
            self.model.to(self.device).eval()
            self.processor = transformers.AutoProcessor.from_pretrained(path)
            # JPEGs decoded and preprocessed on the GPU where the processor can (image_inputs.py)
            self.image_device = self.device if decodes_on_device(self.processor, self.device) \
                else None
        except Exception as exc:
            raise config_error(
                E_MODEL_MISSING, config, f"cannot load '{path}' with transformers: {reason(exc)}"
            ) from exc
        if self.call and not callable(getattr(self.model, self.call, None)):
            raise config_error(
                E_MODEL_SETUP, config, f"{type(self.model).__name__} has no method '{self.call}'"
            )

    def answer(self, frame: pd.DataFrame, scores: bool) -> Answer:
        features = self.features(frame)
        kinds = {c: _column_kind(features[c].tolist()) for c in features.columns}
        errors: list[str | None] = [None] * len(frame)
        images: list[Any] = []
        image_column = next((c for c, k in kinds.items() if k == "image"), None)
        if image_column is not None:
            decoded, failures = decode_images(
                features[image_column].tolist(), decode_image, self.image_device)
            images = [image for image in decoded if image is not None]
            for i, exc in enumerate(failures):
                if exc is not None:
                    errors[i] = f"cannot decode {image_column}: {reason(exc)}"
        good = [i for i, e in enumerate(errors) if e is None]
        answer = self._run(features.iloc[good], kinds, images, scores) if good else None
        return spread(answer, good, errors, len(self.outputs))

    def _run(self, features: pd.DataFrame, kinds: dict[str, str], images: list, scores: bool):
        torch = self._torch
        texts = next((features[c].tolist() for c, k in kinds.items() if k == "text"), None)
        lists = next((features[c].tolist() for c, k in kinds.items() if k == "texts"), None)
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        # Texts longer than the model's positions (a long caption for CLIP) are cut to fit.
        text_config = getattr(self.model.config, "text_config", self.model.config)
        fit = {"padding": True, "truncation": True,
               "max_length": getattr(text_config, "max_position_embeddings", None)}
        if lists is not None:  # CLIP: every text of every row, scored against the row's image
            kwargs.update(text=[str(t) for row in lists for t in row], **fit)
        elif texts is not None:
            kwargs.update(text=texts, **fit)
        inputs = self.processor(**kwargs).to(self.device)
        with torch.no_grad():
            if self.call == "generate":
                return self._generated(self.model.generate(**inputs, **self.call_kwargs))
            out = getattr(self.model, self.call or "__call__")(**inputs, **self.call_kwargs)
        if lists is not None:
            return self._text_scores(out.logits_per_image, [len(row) for row in lists])
        if isinstance(out, torch.Tensor):
            return Answer([out.float().cpu().numpy()])
        labels = getattr(self.model.config, "id2label", None)
        classes = [labels[i] for i in range(out.logits.shape[-1])] if labels else None
        return array_answer(out.logits.float().cpu().numpy(), self.outputs, scores, classes)

    def _generated(self, tokens) -> Answer:
        texts = [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        per_row = int(self.call_kwargs.get("num_return_sequences", 1))
        if per_row == 1:
            return Answer([texts])
        return Answer([[texts[i : i + per_row] for i in range(0, len(texts), per_row)]])

    def _text_scores(self, logits, counts: Sequence[int]) -> Answer:
        logits = logits.float().cpu().numpy()
        scores, start = [], 0
        for row, count in enumerate(counts):
            scores.append(_softmax(logits[row, start : start + count]).tolist() if count else [])
            start += count
        return Answer([scores])
