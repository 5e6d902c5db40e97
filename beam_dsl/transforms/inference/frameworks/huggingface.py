"""HUGGINGFACE: a ``save_pretrained`` directory (or a hub id where the network allows).

The model class its config names is loaded with ``AutoProcessor``, which does
the pre- and post-processing. ``CALL generate(...)`` makes text (BLIP
captions: a list of strings per row when ``num_return_sequences`` > 1), through
:mod:`..decoding`'s fast path for image encoder-decoders it knows and through
``generate`` otherwise (a log line says which); an
image with a list of texts (CLIP) scores each text (softmax over the row's
texts); otherwise the model's logits are class scores, named by CLASSES or
else by the model's ``id2label``. Images are decoded by
:mod:`..image_inputs` (on the GPU where it can).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.inference.answers import Answer, array_answer, softmax, spread
from beam_dsl.transforms.inference.base import (
    E_MODEL_MISSING,
    E_MODEL_SETUP,
    SingleModel,
    reason,
    require,
    resolve_device,
    resolve_path,
)
from beam_dsl.transforms.inference.decoding import fast_decoder
from beam_dsl.transforms.inference.frameworks import REGISTRY
from beam_dsl.transforms.inference.image_inputs import (
    decode_images,
    decodes_on_device,
    is_image,
    load_kwargs,
)

_LOG = logging.getLogger(__name__)
# from_pretrained is not thread-safe (it switches torch's default device while it
# builds a model): runners that set up several DoFns at once on threads load one by one
_LOADING = threading.Lock()


def _column_kind(values: Sequence[Any]) -> str:
    """``texts`` (a list of strings per row), ``image`` (bytes, a path) or ``text``."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in present):
        return "texts"
    if any(is_image(v) for v in present):
        return "image"
    return "text"


@REGISTRY.register(
    "huggingface", kind="torch", meta={"clauses": ("CALL", "CLASSES"), "suffixes": ()}
)
class HuggingFaceModel(SingleModel):
    """HUGGINGFACE: a save_pretrained directory; its processor does pre- and post-processing."""

    def __init__(self, config: ModelConfig, allow_pickle: bool = False):
        path = resolve_path(config, must_exist=False)  # not a directory: a hub id
        super().__init__(config, path)
        self._torch = require(config, "torch", "huggingface")
        transformers = require(config, "transformers", "huggingface")
        self.device = resolve_device(config)
        self.call = config.call.callable if config.call else None
        self.call_kwargs = dict(config.call.kwargs) if config.call else {}
        try:
            with _LOADING:
                auto = transformers.AutoConfig.from_pretrained(path)
                named = (auto.architectures or [None])[0]
                model_class = getattr(transformers, named) if named else transformers.AutoModel
                self.model = model_class.from_pretrained(path, **load_kwargs(config.dtype,
                                                                             self.device))
                self.model.to(self.device).eval()
                self.processor = transformers.AutoProcessor.from_pretrained(path)
                # JPEGs decoded and preprocessed on the GPU where the processor can
                # (image_inputs.py)
                self.image_device = self.device if decodes_on_device(self.processor, self.device) \
                    else None
        except Exception as exc:
            raise config.error(
                E_MODEL_MISSING, f"cannot load '{path}' with transformers: {reason(exc)}"
            ) from exc
        if self.call and not callable(getattr(self.model, self.call, None)):
            raise config.error(
                E_MODEL_SETUP, f"{type(self.model).__name__} has no method '{self.call}'"
            )
        # A CUDA stream of its own: an ENSEMBLE's models work on consecutive batches at
        # once (BLIP generating one while CLIP scores the one before), and on one stream
        # each model's kernels would queue behind the other's.
        self.stream = None
        if self.device == "cuda":
            self.stream = self._torch.cuda.Stream()
            self._torch.cuda.synchronize()  # the weights are in place before the stream reads
        self.decoder, self.decoding = None, None  # CALL generate's path (decoding.py)
        if self.call == "generate":
            fast = fast_decoder(self.model, self.call_kwargs)
            if isinstance(fast, str):
                self.decoding = f"Hugging Face generate ({fast})"
            else:
                self.decoder, self.decoding = fast, fast.describe()
            _LOG.info("MODEL %s: CALL generate runs through the %s", config.name, self.decoding)

    def answer(self, frame: Any, scores: bool) -> Answer:
        if self.stream is None:
            return self._answer(frame, scores)
        with self._torch.cuda.stream(self.stream):
            return self._answer(frame, scores)

    def _answer(self, frame: Any, scores: bool) -> Answer:
        features = self.features(frame)
        kinds = {c: _column_kind(features[c].tolist()) for c in features.columns}
        errors: list[str | None] = [None] * len(frame)
        images: list[Any] = []
        image_column = next((c for c, k in kinds.items() if k == "image"), None)
        if image_column is not None:
            decoded, failures = decode_images(features[image_column].tolist(), self.image_device)
            images = [image for image in decoded if image is not None]
            for i, exc in enumerate(failures):
                if exc is not None:
                    errors[i] = f"cannot decode {image_column}: {reason(exc)}"
        good = [i for i, e in enumerate(errors) if e is None]
        answer = self._run(features.iloc[good], kinds, images, scores) if good else None
        return spread(answer, good, errors, len(self.outputs))

    def _run(self, features: Any, kinds: dict[str, str], images: list, scores: bool) -> Answer:
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
                if self.decoder is not None and set(inputs) == {"pixel_values"}:
                    return self._generated(self.decoder.generate(inputs["pixel_values"]))
                return self._generated(self.model.generate(**inputs, **self.call_kwargs))
            out = getattr(self.model, self.call or "__call__")(**inputs, **self.call_kwargs)
        if lists is not None:
            return self._text_scores(out.logits_per_image, [len(row) for row in lists])
        if isinstance(out, torch.Tensor):
            return Answer([out.float().cpu().numpy()])
        labels = getattr(self.model.config, "id2label", None)
        named = [labels[i] for i in range(out.logits.shape[-1])] if labels else None
        return array_answer(out.logits.float().cpu().numpy(), self.outputs, scores, named,
                            self.config.classes)

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
            scores.append(softmax(logits[row, start : start + count]).tolist() if count else [])
            start += count
        return Answer([scores])
