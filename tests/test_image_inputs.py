"""Image decoding and weight dtype for HUGGINGFACE models (inference/image_inputs.py)."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from beam_dsl.transforms.inference.image_inputs import (  # noqa: E402
    decode_image,
    decode_images,
    load_kwargs,
)


def _encoded(fmt: str, size=(20, 12), seed=0) -> bytes:
    """A smooth random image (JPEG decoders differ most on pixel noise)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize(size, Image.BICUBIC).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def values(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_encoded("JPEG", (640, 480), seed=1))
    return [str(path), _encoded("PNG", (7, 5)), b"not an image", str(tmp_path / "missing.jpg")]


def test_host_decoding_keeps_row_order_and_reports_bad_rows(values):
    images, errors = decode_images(values)
    sizes = [im.size if im is not None else None for im in images]
    assert sizes == [(640, 480), (7, 5), None, None]
    assert errors[0] is None and errors[1] is None
    assert "not an image" in str(errors[2])
    assert isinstance(errors[3], (OSError, ValueError))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")
def test_gpu_decoding_gives_device_tensors_matching_the_host(values):
    pytest.importorskip("torchvision")
    images, errors = decode_images(values, "cuda")
    assert [e is None for e in errors] == [True, True, False, False]
    assert images[0].device.type == "cuda" and tuple(images[0].shape) == (3, 480, 640)
    host = torch.from_numpy(np.array(decode_image(values[0]))).permute(2, 0, 1)
    # nvJPEG upsamples 4:2:0 chroma unlike libjpeg: 0.17 levels apart on average at this size
    assert (images[0].cpu().int() - host.int()).abs().float().mean() < 1
    assert tuple(images[1].shape) == (3, 5, 7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")
def test_the_next_model_reuses_the_last_two_batches_on_a_stream_of_its_own():
    """An ENSEMBLE's BLIP decodes batch i+1 while its CLIP (on another CUDA stream) reads
    batch i: both stay decoded; a third batch pushes the oldest out."""
    pytest.importorskip("torchvision")
    batches = [[_encoded("JPEG", (64, 48), seed=seed)] for seed in (2, 3, 4)]
    first = [decode_images(batch, "cuda")[0][0] for batch in batches[:2]]
    with torch.cuda.stream(torch.cuda.Stream()):
        again = [decode_images(batch, "cuda")[0][0] for batch in batches[:2]]
        assert again[0] is first[0] and again[1] is first[1]
        decode_images(batches[2], "cuda")
        fresh = decode_images(batches[0], "cuda")[0][0]
        assert fresh is not first[0] and torch.equal(fresh, first[0])


def test_dtype_choice():
    assert load_kwargs("float32", "cuda") == {"dtype": torch.float32}
    assert load_kwargs("bfloat16", "cpu") == {"dtype": torch.bfloat16}
    assert load_kwargs("auto", "cpu") == {}  # the checkpoint's own dtype
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert load_kwargs("auto", "cuda") == {"dtype": torch.bfloat16}
