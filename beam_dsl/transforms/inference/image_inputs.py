"""Image inputs and weight precision for HUGGINGFACE models (on a GPU where there is one).

:func:`decode_image` makes one value (a file path, encoded bytes, a PIL image)
an RGB PIL image, and :func:`is_image` tells such values from text.
:func:`decode_images` turns a column of image values into what the model's
processor takes:

* on a CUDA device, with a torchvision-backed image processor (transformers'
  default where torchvision is installed), JPEGs are decoded on the GPU in one
  nvJPEG batch and stay there as uint8 tensors, so the processor resizes and
  normalizes them on the GPU as well: the host reads the compressed files and
  uploads them (about 15 times fewer bytes than decoded pixels), and its cores
  are free for the rest of the pipeline. Other formats, and JPEGs nvJPEG
  refuses, are decoded by the host and uploaded. (nvJPEG upsamples 4:2:0
  chroma unlike libjpeg: pixels differ from PIL's by 0.17 levels on average
  on a 640x480 photo-like JPEG, by none for 4:4:4);
* otherwise PIL decodes them on a thread pool (Pillow lets go of the GIL while
  it decodes).

:func:`load_kwargs` picks the dtype to load weights in: the MODEL's run-time
option ``dtype`` (``float32``, ``bfloat16``, ``float16``), else ``auto``:
bfloat16 on a CUDA device that supports it (as vLLM's ``auto`` runs float32
checkpoints in half precision), the checkpoint's own dtype elsewhere.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

_JPEG_MAGIC = b"\xff\xd8"


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="beam_dsl-images")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def is_image(value: Any) -> bool:
    """Whether a value is an image: bytes, a PIL image, or the path of an image file."""
    from PIL import Image

    if isinstance(value, (bytes, bytearray, memoryview, Image.Image)):
        return True
    return isinstance(value, str) and (
        value.lower().endswith(IMAGE_SUFFIXES) or os.path.isfile(value)
    )


def load_kwargs(dtype: str, device: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the weights' ``dtype`` option (``auto``, or
    a torch dtype's name; see the module docstring)."""
    import torch

    if dtype != "auto":
        return {"dtype": getattr(torch, dtype)}
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return {"dtype": torch.bfloat16}
    return {}


def decodes_on_device(processor: Any, device: str) -> bool:
    """Whether images can be decoded on ``device`` and handed to ``processor`` there."""
    if device != "cuda":
        return False
    try:
        import torchvision.io  # noqa: F401 - nvJPEG decoding
    except ImportError:
        return False
    try:
        from transformers.image_processing_backends import TorchvisionBackend as OnDevice
    except ImportError:  # transformers 4
        try:
            from transformers.image_processing_utils_fast import BaseImageProcessorFast as OnDevice
        except ImportError:
            return False
    return isinstance(getattr(processor, "image_processor", processor), OnDevice)


def decode_images(
    values: Sequence[Any], device: str | None = None
) -> tuple[list[Any], list[BaseException | None]]:
    """Each value's image (None where it failed) and exception (None where it worked).

    With a ``device``, JPEGs are decoded there and every image is a (3, H, W)
    uint8 tensor on it; without one, images are RGB PIL images decoded on
    threads (:func:`decode_image`).
    """
    if device is None:
        return _on_threads(values)
    import torch

    key = _batch_key(values, device)
    with _RECENT_LOCK:
        recent = _RECENT.get(key) if key is not None else None
    if recent is not None:  # the ensemble's next MODEL, maybe on a CUDA stream of its own
        images, errors, decoded = recent
        if decoded is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(decoded)  # the decoding stream's work is done first
            for image in images:
                if image is not None:
                    image.record_stream(stream)  # its memory outlives this stream's reads
        return list(images), list(errors)
    images, errors = _on_device(values, device)
    if key is not None:
        decoded = None
        if torch.device(device).type == "cuda":
            decoded = torch.cuda.Event()
            decoded.record()
        with _RECENT_LOCK:
            _RECENT[key] = (images, errors, decoded)
            while len(_RECENT) > _KEPT:
                del _RECENT[next(iter(_RECENT))]
    return list(images), list(errors)


# The batches last decoded on a device, oldest first: an ENSEMBLE's MODELs (BLIP,
# then CLIP) ask for the same images one after the other, and decode them once.
# The ENSEMBLE has two batches at work at once (BLIP on one while CLIP is on the
# one before), so two are kept.
_RECENT: dict[tuple, tuple[list[Any], list[Any], Any]] = {}  # images, errors, CUDA event
_KEPT = 2
_RECENT_LOCK = threading.Lock()


def _batch_key(values: Sequence[Any], device: str) -> tuple | None:
    """What identifies a batch: bytes as they are, files by path, size and change time."""
    key: list[Any] = [device]
    for value in values:
        if isinstance(value, bytes):
            key.append(value)
        elif isinstance(value, str):
            try:
                stat = os.stat(value)
            except OSError:
                return None
            key.append((value, stat.st_size, stat.st_mtime_ns))
        else:
            return None
    return tuple(key)


def _on_device(values: Sequence[Any], device: str) -> tuple[list[Any], list[Any]]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    images: list[Any] = [None] * len(values)
    errors: list[BaseException | None] = [None] * len(values)
    jpegs = {i: data for i, data in enumerate(map(_encoded, values))
             if data is not None and data[:2] == _JPEG_MAGIC}
    if jpegs:
        try:
            decoded = decode_jpeg(
                [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in jpegs.values()],
                mode=ImageReadMode.RGB,
                device=device,
            )
        except RuntimeError:  # one bad file fails the batch: the host finds which
            jpegs = {}
        else:
            for i, tensor in zip(jpegs, decoded, strict=True):
                images[i] = tensor
    rest = [i for i in range(len(values)) if i not in jpegs]
    decoded_rest, rest_errors = _on_threads([values[i] for i in rest])
    for i, image, error in zip(rest, decoded_rest, rest_errors, strict=True):
        if image is not None:
            images[i] = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device)
        errors[i] = error
    return images, errors


def _encoded(value: Any) -> bytes | None:
    """The encoded bytes of a path or bytes value; None for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and os.path.isfile(value):
        try:
            with open(value, "rb") as handle:
                return handle.read()
        except OSError:
            return None  # the host decoder reports it
    return None


def _on_threads(values: Sequence[Any]) -> tuple[list[Any], list[BaseException | None]]:
    futures = [_pool().submit(decode_image, v) for v in values]
    images: list[Any] = []
    errors: list[BaseException | None] = []
    for future in futures:
        try:
            images.append(future.result())
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - an undecodable image is a row error
            images.append(None)
            errors.append(exc)
    return images, errors
