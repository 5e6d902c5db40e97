"""Caption ranking (BLIP writes 5 captions, CLIP keeps the best 3) on one GPU.

    python benchmarks/bench_caption_gpu.py --out DIR [--device cuda] [--images 3072]
    python benchmarks/bench_caption_gpu.py --out /tmp/cap --device cpu --tiny   # rehearsal

Three ways over the same JPEG files, side by side in one process:

1. **beam_dsl**: the caption_ranking spec of LANGUAGE.md section 3 (MODEL blip
   HUGGINGFACE with CALL generate(...), MODEL clip HUGGINGFACE, ENSEMBLE
   caption_ranking with top_k(captions, scores, 3)), DEVICE GPU, parsed and
   lowered by beam_dsl's compiler and run as its RunEnsemble transform over
   ``beam.io.ReadFromCsv`` of image paths, on Beam's in-process FnApiRunner.
2. **talk-style Beam**: as in the Beam image-captioning talk and notebook:
   PIL decode and CPU preprocessing per image, RunInference with
   KeyedModelHandler over PytorchModelHandlerTensor / KeyedTensor at
   ``max_batch_size=1`` (fp32, state-dict files), a CoGroupByKey joining
   images and BLIP captions, then the CLIP step and a ranking step.
3. **HF generate loop**: no Beam, BLIP's Hugging Face ``generate``; file
   reads prefetched one batch ahead on a thread, JPEG decode on the GPU
   (torchvision's batched nvJPEG; PIL on threads without a GPU), resize and
   normalize on the GPU, bf16 models, swept over batch sizes.

The models are full-size architectures with random weights (no hub needed):
BlipForConditionalGeneration with blip-image-captioning-base shapes (ViT-B/16
at 384 px, BERT-base decoder, vocab 30524) and CLIPModel with ViT-B/32 shapes
(vocab 49408), saved with save_pretrained together with processors built
locally. Random weights never sample the end token, so every caption runs to
max_length 50: each image costs the same work in every variant.

Beam variants run a small warm-up pipeline, then are timed twice
(``--images`` and a quarter of it; the talk style with ``--talk-images`` and a
quarter): the steady rate is the extra images over the extra seconds, so
model loading (once per pipeline) cancels out; the end-to-end rate of the
larger run is shown too. Row 1b runs (1) again as beam_dsl ran before
beam_dsl/transforms/inference/image_inputs.py (float32 weights, images decoded and
preprocessed by the host); row 1c runs (1) with the runner processing
``--thread-workers`` bundles at once on threads; ``--profile`` times beam_dsl's
model calls. The
table also gives peak
GPU memory per variant and the fraction of the GPU's dense bf16 peak
(an 8192^3 bf16 matmul, measured in the same run) that each rate achieves,
from FLOPs per image counted with torch's FlopCounterMode.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GENERATE = {"max_length": 50, "min_length": 10, "num_return_sequences": 5, "do_sample": True}
CAPTIONS = GENERATE["num_return_sequences"]
TOP_K = 3
UNIQUE_IMAGES = 256  # distinct JPEG files; rows cycle through them
IMAGE_SIZE = (640, 480)  # COCO-like
DECODE_THREADS = 8

SPEC = """
MODEL blip
  HUGGINGFACE '{blip}'
  CALL generate(max_length = 50, min_length = 10, num_return_sequences = 5, do_sample = true)
  INPUT image
  OUTPUT captions
  BATCH {batch_min} TO {batch_max}
  DEVICE {device};

MODEL clip
  HUGGINGFACE '{clip}'
  INPUT image, captions
  OUTPUT caption_scores
  BATCH {batch_min} TO {batch_max}
  DEVICE {device};

ENSEMBLE caption_ranking
  STEP captions = blip(image)
  STEP scores   = clip(image, captions)
  OUTPUT top_k(captions, scores, 3) AS best_captions;
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- models and data


def pseudo_words(count: int, seed: int) -> list[str]:
    """``count`` distinct lowercase words of 3 to 7 letters."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: dict[str, None] = {}
    while len(words) < count:
        words["".join(rng.choice(letters, rng.integers(3, 8)))] = None
    return list(words)


def bert_tokenizer(folder: str):
    """BLIP's tokenizer: BERT's layout (specials at 0, 100-103), [DEC] = 30522, [ENC] = 30523."""
    from transformers import BertTokenizer

    specials = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    words = iter(pseudo_words(30522 - 104, seed=1))
    vocab = [specials.get(i) or (f"[unused{i}]" if i < 100 else next(words)) for i in range(30522)]
    path = os.path.join(folder, "bert_vocab.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=path)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def clip_tokenizer(folder: str):
    """A byte-level BPE tokenizer with CLIP's special tokens and no merges (ids < 514)."""
    from transformers import CLIPTokenizer

    # GPT-2's byte -> printable character table, which CLIP's BPE starts from
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab_path = os.path.join(folder, "clip_vocab.json")
    merges_path = os.path.join(folder, "clip_merges.txt")
    with open(vocab_path, "w") as handle:
        json.dump(vocab, handle)
    with open(merges_path, "w") as handle:
        handle.write("#version: 0.2\n")
    return CLIPTokenizer(vocab=vocab_path, merges=merges_path)


def build_models(root: str, tiny: bool, device: str) -> dict[str, str]:
    """Random-weight BLIP and CLIP: save_pretrained folders (+ processors) and state dicts."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
    )

    paths = {name: os.path.join(root, name) for name in ("blip", "clip", "state_dicts")}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    # The defaults are blip-image-captioning-base and ViT-B/32 CLIP shapes.
    blip_config, clip_config = BlipConfig(), CLIPConfig()
    if tiny:
        small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 2}
        blip_config = BlipConfig(
            vision_config={**small},
            text_config={**small, "encoder_hidden_size": 32},
            projection_dim=32,
        )
        clip_config = CLIPConfig(vision_config=small, text_config=small, projection_dim=32)
    assert blip_config.text_config.vocab_size == 30524
    assert clip_config.text_config.vocab_size == 49408
    blip_config.text_config.bos_token_id = 30522
    blip_config.text_config.sep_token_id = 102
    blip_config.text_config.pad_token_id = 0
    torch.manual_seed(0)
    for name, model_class, config in (
        ("blip", BlipForConditionalGeneration, blip_config),
        ("clip", CLIPModel, clip_config),
    ):
        with torch.device(device):  # random init on the GPU takes seconds, not minutes
            model = model_class(config).eval()
        model.save_pretrained(paths[name])
        torch.save(model.state_dict(), os.path.join(paths["state_dicts"], f"{name}.pth"))
        del model
    BlipProcessor(
        image_processor=BlipImageProcessor(), tokenizer=bert_tokenizer(root)
    ).save_pretrained(paths["blip"])
    CLIPProcessor(
        image_processor=CLIPImageProcessor(), tokenizer=clip_tokenizer(root)
    ).save_pretrained(paths["clip"])
    return paths


def make_images(folder: str, count: int) -> list[str]:
    """``UNIQUE_IMAGES`` smooth random JPEGs; ``count`` paths cycling through them."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    unique = []
    for i in range(UNIQUE_IMAGES):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(IMAGE_SIZE, Image.BICUBIC)
        noise = rng.integers(-12, 13, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"img{i:04d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        unique.append(path)
    return [unique[i % UNIQUE_IMAGES] for i in range(count)]


def write_csv(path: str, images: Sequence[str]) -> str:
    with open(path, "w") as handle:
        handle.write("image\n" + "\n".join(images) + "\n")
    return path


# ---------------------------------------------------------------- GPU helpers


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def matmul_peak(device: str, n: int) -> float:
    """Dense bf16 TFLOP/s of an n^3 matmul on random data (median of 20 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = []
    for i in range(23):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            seconds = time.perf_counter() - t0
        if i >= 3:
            times.append(seconds)
    return 2 * n**3 / statistics.median(times) / 1e12


# ---------------------------------------------------------------- 3. the PyTorch loop


def decode(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def load_images(paths: Sequence[str], files: Sequence[bytes], device: str) -> list[torch.Tensor]:
    """(3, H, W) uint8 images on ``device``: nvJPEG on a GPU, else PIL on threads."""
    if device == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return [torch.from_numpy(a).permute(2, 0, 1) for a in pool.map(decode, paths)]


class TorchRanker:
    """BLIP + CLIP in bf16 on one device, with preprocessing on that device."""

    def __init__(self, paths: dict[str, str], device: str, dtype: torch.dtype):
        from transformers import (
            BlipForConditionalGeneration,
            BlipProcessor,
            CLIPModel,
            CLIPProcessor,
        )

        self.device, self.dtype = device, dtype
        self.blip = BlipForConditionalGeneration.from_pretrained(paths["blip"], dtype=dtype)
        self.blip.to(device).eval()
        self.clip = CLIPModel.from_pretrained(paths["clip"], dtype=dtype).to(device).eval()
        self.blip_processor = BlipProcessor.from_pretrained(paths["blip"])
        self.clip_processor = CLIPProcessor.from_pretrained(paths["clip"])

    def _pixels(self, images: Sequence[torch.Tensor], processor: Any, crop: bool) -> torch.Tensor:
        """Resize (bicubic), centre-crop for CLIP, rescale and normalize, on the device."""
        size = dict(processor.size.items()) if hasattr(processor.size, "items") else vars(
            processor.size)
        batch = torch.stack(list(images)).to(self.device).float()
        if crop:  # shortest edge to size, then a centre crop
            h, w = batch.shape[-2:]
            scale = size["shortest_edge"] / min(h, w)
            batch = F.interpolate(batch, size=(round(h * scale), round(w * scale)),
                                  mode="bicubic", antialias=True)
            crop_h = crop_w = size["shortest_edge"]
            top, left = (batch.shape[-2] - crop_h) // 2, (batch.shape[-1] - crop_w) // 2
            batch = batch[..., top : top + crop_h, left : left + crop_w]
        else:
            batch = F.interpolate(batch, size=(size["height"], size["width"]), mode="bicubic",
                                  antialias=True)
        mean = torch.tensor(processor.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std, device=self.device).view(1, 3, 1, 1)
        return ((batch * processor.rescale_factor - mean) / std).to(self.dtype)

    @torch.inference_mode()
    def generate(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.blip.generate(pixel_values=pixels, **GENERATE)

    @torch.inference_mode()
    def rank(self, images: Sequence[torch.Tensor]) -> list[list[str]]:
        """The best TOP_K of CAPTIONS sampled captions for each image."""
        tokens = self.generate(self._pixels(images, self.blip_processor.image_processor, False))
        captions = self.blip_processor.batch_decode(tokens, skip_special_tokens=True)
        text = self.clip_processor.tokenizer(
            captions, padding=True, truncation=True, max_length=77, return_tensors="pt"
        ).to(self.device)
        pixels = self._pixels(images, self.clip_processor.image_processor, True)
        out = self.clip(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                        pixel_values=pixels)
        n = len(images)
        # each image against its own CAPTIONS captions
        logits = out.logits_per_image.view(n, n, CAPTIONS)[torch.arange(n), torch.arange(n)]
        best = logits.softmax(-1).topk(TOP_K, dim=-1).indices.cpu().tolist()
        return [[captions[i * CAPTIONS + j] for j in row] for i, row in enumerate(best)]


def run_loop(ranker: TorchRanker, paths: Sequence[str], batch: int) -> list[list[str]]:
    """Reads the files of batch i+1 on a thread while the GPU ranks batch i."""
    chunks = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    with ThreadPoolExecutor(1) as ahead:
        pending = ahead.submit(lambda c: [read_bytes(p) for p in c], chunks[0])
        results: list[list[str]] = []
        for i, chunk in enumerate(chunks):
            files = pending.result()
            if i + 1 < len(chunks):
                pending = ahead.submit(lambda c: [read_bytes(p) for p in c], chunks[i + 1])
            results += ranker.rank(load_images(chunk, files, ranker.device))
    return results


def flops_per_image(ranker: TorchRanker, paths: Sequence[str]) -> dict[str, float]:
    """FLOPs per image of BLIP generation and of the whole ranking (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = load_images(paths, [read_bytes(p) for p in paths], ranker.device)
    pixels = ranker._pixels(images, ranker.blip_processor.image_processor, False)
    with FlopCounterMode(display=False) as counter:
        ranker.generate(pixels)
    generate = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        ranker.rank(images)
    return {"generate": generate / len(images), "total": counter.get_total_flops() / len(images)}


def bench_loop(paths: dict[str, str], images: Sequence[str], batches: Sequence[int],
               device: str, rounds: int) -> dict[str, Any]:
    """3: end-to-end and generation-only images/s per batch size."""
    reset_memory(device)
    ranker = TorchRanker(paths, device, torch.bfloat16 if device == "cuda" else torch.float32)
    out: dict[str, Any] = {"batches": {}}
    out["flops"] = flops_per_image(ranker, images[:2])
    log(f"FLOPs per image: {out['flops']}")
    for batch in batches:
        reset_memory(device)
        work = list(images[: batch * rounds])
        run_loop(ranker, work[:batch], batch)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        ranked = run_loop(ranker, work, batch)
        sync(device)
        seconds = time.perf_counter() - t0
        assert len(ranked) == len(work) and all(len(r) == TOP_K for r in ranked)
        first = work[:batch]
        pixels = ranker._pixels(load_images(first, [read_bytes(p) for p in first], device),
                                ranker.blip_processor.image_processor, False)
        ranker.generate(pixels)
        sync(device)
        t1 = time.perf_counter()
        for _ in range(rounds):
            tokens = ranker.generate(pixels)
        sync(device)
        generate_s = (time.perf_counter() - t1) / rounds
        out["batches"][batch] = {
            "images": len(work),
            "images_per_s": len(work) / seconds,
            "generate_images_per_s": batch / generate_s,
            "fast_generate_images_per_s": fast_generate_rate(ranker.blip, pixels, rounds,
                                                             device),
            "tokens": tokens.shape[-1],
            "memory_gib": peak_memory_gib(device),
            "example": ranked[0],
        }
        log(f"loop batch {batch}: {out['batches'][batch]}")
    del ranker
    return out


def fast_generate_rate(blip: Any, pixels: torch.Tensor, rounds: int, device: str) -> float:
    """Images/s of beam_dsl's fast decoding path alone on preprocessed pixels: the most
    the pipeline could reach if the GPU never waited for anything else."""
    from beam_dsl.transforms.inference.decoding import fast_decoder

    fast = fast_decoder(blip, dict(GENERATE))
    if isinstance(fast, str):
        raise RuntimeError(f"no fast decoding path: {fast}")
    with torch.inference_mode():
        fast.generate(pixels)  # buffers and CUDA graphs
        sync(device)
        t0 = time.perf_counter()
        for _ in range(rounds):
            fast.generate(pixels)
        sync(device)
    return len(pixels) * rounds / (time.perf_counter() - t0)


# ---------------------------------------------------------------- Beam helpers


def run_beam(build: Callable[[Any], Any], label: str, workers: int) -> float:
    """Builds a pipeline with ``build(pipeline)`` and runs it in-process; seconds taken.

    ``workers`` > 1: the runner processes that many bundles at once on threads (as
    a Dataflow or Flink worker runs several bundles at once), so one bundle's host
    work (rows, text decoding, tokenizing) overlaps another's GPU work.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options = PipelineOptions(direct_num_workers=workers, direct_running_mode="multi_threading") \
        if workers > 1 else PipelineOptions()
    t0 = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        build(pipeline)
    seconds = time.perf_counter() - t0
    log(f"{label}: {seconds:.1f} s")
    return seconds


def read_lines(prefix: str) -> list[str]:
    folder, stem = os.path.split(prefix)
    lines: list[str] = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(stem):
            with open(os.path.join(folder, name)) as handle:
                lines += handle.read().splitlines()
    return lines


def steady_rate(small: tuple[int, float], large: tuple[int, float]) -> dict[str, float]:
    (n1, t1), (n2, t2) = small, large
    return {"images_per_s": (n2 - n1) / (t2 - t1), "end_to_end_images_per_s": n2 / t2,
            "seconds_small": t1, "seconds_large": t2, "images_small": n1, "images_large": n2}


# ---------------------------------------------------------------- 1. beam_dsl


@contextlib.contextmanager
def profile_dsl(device: str, timings: dict[str, list[float]]) -> Iterator[None]:
    """Times beam_dsl's HUGGINGFACE calls (decode, generate, whole answer) while active.

    It patches them for the duration (adding GPU synchronizations around each call).
    """
    from transformers import BlipForConditionalGeneration

    from beam_dsl.transforms.inference import decoding
    from beam_dsl.transforms.inference.frameworks import huggingface

    def timed(original: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        def wrapper(*args, **kwargs):
            sync(device)
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            sync(device)
            timings.setdefault(label(*args), []).append(time.perf_counter() - t0)
            return out

        return wrapper

    patches = [
        (huggingface, "decode_images", lambda values, *_: f"decode {len(values)}"),
        (BlipForConditionalGeneration, "generate", lambda *_: "HF generate"),
        (decoding.FastDecoder, "generate", lambda *_: "fast generate"),
        (huggingface.HuggingFaceModel, "answer",
         lambda model, frame, *_: f"{model.name} answer {len(frame)}"),
    ]
    originals = [getattr(owner, name) for owner, name, _ in patches]
    for (owner, name, label), original in zip(patches, originals, strict=True):
        setattr(owner, name, timed(original, label))
    try:
        yield
    finally:
        for (owner, name, _), original in zip(patches, originals, strict=True):
            setattr(owner, name, original)


class PathLog(logging.Handler):
    """Keeps the log lines that say which path each MODEL's CALL generate takes."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if "CALL generate runs through" in record.getMessage():
            self.lines.add(record.getMessage())


def bench_dsl(paths: dict[str, str], images: Sequence[str], work: str, device: str,
              batch_min: int, batch_max: int, workers: int,
              host: bool = False) -> dict[str, Any]:
    """1: beam_dsl; ``host`` measures it as it was before image_inputs.py (float32
    weights, images decoded and preprocessed by the host) for comparison."""
    import apache_beam as beam

    from beam_dsl.dsl.lower import lower_spec
    from beam_dsl.dsl.parser import parse
    from beam_dsl.transforms.ensemble.transform import RunEnsemble

    text = SPEC.format(blip=paths["blip"], clip=paths["clip"], batch_min=batch_min,
                       batch_max=batch_max, device="GPU" if device == "cuda" else "CPU")
    spec, diagnostics = parse(text)
    if diagnostics:
        raise RuntimeError(f"spec does not parse: {diagnostics}")
    config = {t.name: t.config for t in lower_spec(spec)}["caption_ranking"]
    if host:
        from beam_dsl.transforms.inference.frameworks import huggingface

        models = {m: dataclasses.replace(c, dtype="float32") for m, c in config.models.items()}
        config = dataclasses.replace(config, models=models)
        huggingface.decodes_on_device = lambda processor, device: False

    def one(count: int) -> tuple[int, float, dict[str, Any]]:
        csv = write_csv(os.path.join(work, f"dsl_{count}.csv"), images[:count])
        prefix = os.path.join(work, f"dsl{'_host' if host else ''}_out_{count}_{time.time_ns()}")

        def build(pipeline):
            rows = pipeline | "Read" >> beam.io.ReadFromCsv(csv)
            outputs = rows | "caption_ranking" >> RunEnsemble.from_config(config)
            _ = (outputs["main"]
                 | "Best" >> beam.Map(lambda row: json.dumps(list(row.best_captions)))
                 | "WriteMain" >> beam.io.WriteToText(prefix + "_main"))
            _ = (outputs["errors"] | "Why" >> beam.Map(lambda row: row.reason)
                 | "WriteErrors" >> beam.io.WriteToText(prefix + "_errors"))

        reset_memory(device)
        seconds = run_beam(build, f"beam_dsl {count} images", workers)
        main, errors = read_lines(prefix + "_main"), read_lines(prefix + "_errors")
        if errors:
            raise RuntimeError(f"{len(errors)} error rows, e.g. {errors[0]}")
        if len(main) != count or any(len(json.loads(x)) != TOP_K for x in main):
            raise RuntimeError(f"{len(main)} output rows for {count} images")
        return count, seconds, {"memory_gib": peak_memory_gib(device),
                                "example": json.loads(main[0])}

    paths_log = PathLog()
    logger = logging.getLogger("beam_dsl.transforms.inference.frameworks.huggingface")
    logger.addHandler(paths_log)
    logger.setLevel(logging.INFO)
    try:
        one(min(batch_max, len(images)))  # warm-up: first-pipeline costs stay out of the rates
        n_small, t_small, _ = one(max(len(images) // 4, 1))
        n_large, t_large, info = one(len(images))
    finally:
        logger.removeHandler(paths_log)
    for line in sorted(paths_log.lines):
        log(line)
    return {**steady_rate((n_small, t_small), (n_large, t_large)), **info,
            "batch": f"{batch_min} TO {batch_max}", "batch_max": batch_max, "workers": workers,
            "generate_paths": sorted(paths_log.lines)}


# ---------------------------------------------------------------- 2. talk-style Beam


def blip_inference_fn(batch, model, device, inference_args, model_id=None):
    from apache_beam.ml.inference.base import PredictionResult

    tokens = model.generate(pixel_values=torch.stack(batch).to(device), **GENERATE)
    tokens = tokens.view(len(batch), CAPTIONS, -1).cpu()
    return [PredictionResult(x, t, model_id) for x, t in zip(batch, tokens, strict=True)]


def clip_inference_fn(batch, model, device, inference_args, model_id=None):
    from apache_beam.ml.inference.base import PredictionResult

    results = []
    for example in batch:
        logits = model(**{k: v.to(device) for k, v in example.items()}).logits_per_image
        results.append(PredictionResult(example, logits[0].softmax(-1).cpu(), model_id))
    return results


def bench_talk(paths: dict[str, str], images: Sequence[str], work: str,
               device: str, workers: int) -> dict[str, Any]:
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.ml.inference.pytorch_inference import (
        PytorchModelHandlerKeyedTensor,
        PytorchModelHandlerTensor,
    )
    from PIL import Image
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipProcessor,
        CLIPConfig,
        CLIPModel,
        CLIPProcessor,
    )

    beam_device = "GPU" if device == "cuda" else "CPU"
    blip_handler = KeyedModelHandler(PytorchModelHandlerTensor(
        state_dict_path=os.path.join(paths["state_dicts"], "blip.pth"),
        model_class=BlipForConditionalGeneration,
        model_params={"config": BlipConfig.from_pretrained(paths["blip"])},
        device=beam_device, inference_fn=blip_inference_fn, max_batch_size=1))
    clip_handler = KeyedModelHandler(PytorchModelHandlerKeyedTensor(
        state_dict_path=os.path.join(paths["state_dicts"], "clip.pth"),
        model_class=CLIPModel,
        model_params={"config": CLIPConfig.from_pretrained(paths["clip"])},
        device=beam_device, inference_fn=clip_inference_fn, max_batch_size=1))

    class ReadImage(beam.DoFn):
        def process(self, path):
            with Image.open(path) as image:
                yield path, image.convert("RGB")

    class PreprocessBLIP(beam.DoFn):
        def setup(self):
            self.processor = BlipProcessor.from_pretrained(paths["blip"])

        def process(self, element):
            key, image = element
            yield key, self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    class PostprocessBLIP(beam.DoFn):
        def setup(self):
            self.processor = BlipProcessor.from_pretrained(paths["blip"])

        def process(self, element):
            key, result = element
            yield key, self.processor.batch_decode(result.inference, skip_special_tokens=True)

    class PreprocessCLIP(beam.DoFn):
        def setup(self):
            self.processor = CLIPProcessor.from_pretrained(paths["clip"])

        def process(self, element):
            key, joined = element
            (image,), (captions,) = joined["image"], joined["captions"]
            inputs = self.processor(text=captions, images=image, return_tensors="pt",
                                    padding=True, truncation=True, max_length=77)
            yield (key, tuple(captions)), dict(inputs)

    def rank(element):
        (_, captions), result = element
        best = result.inference.topk(TOP_K).indices.tolist()
        return json.dumps([captions[i] for i in best])

    def one(count: int) -> tuple[int, float, dict[str, Any]]:
        prefix = os.path.join(work, f"talk_out_{count}_{time.time_ns()}")

        def build(pipeline):
            read = (pipeline | "Paths" >> beam.Create(list(images[:count]))
                    | "ReadImages" >> beam.ParDo(ReadImage()))
            captions = (read | "PreprocessBLIP" >> beam.ParDo(PreprocessBLIP())
                        | "RunInferenceBLIP" >> RunInference(blip_handler)
                        | "PostprocessBLIP" >> beam.ParDo(PostprocessBLIP()))
            _ = ({"image": read, "captions": captions}
                 | "CoGroupByKey" >> beam.CoGroupByKey()
                 | "PreprocessCLIP" >> beam.ParDo(PreprocessCLIP())
                 | "RunInferenceCLIP" >> RunInference(clip_handler)
                 | "Rank" >> beam.Map(rank)
                 | "Write" >> beam.io.WriteToText(prefix))

        reset_memory(device)
        seconds = run_beam(build, f"talk-style {count} images", workers)
        main = read_lines(prefix)
        if len(main) != count or any(len(json.loads(x)) != TOP_K for x in main):
            raise RuntimeError(f"{len(main)} output rows for {count} images")
        return count, seconds, {"memory_gib": peak_memory_gib(device),
                                "example": json.loads(main[0])}

    one(2)  # warm-up
    n_small, t_small, _ = one(max(len(images) // 4, 1))
    n_large, t_large, info = one(len(images))
    return {**steady_rate((n_small, t_small), (n_large, t_large)), **info}


# ---------------------------------------------------------------- report


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({platform.node()}, {os.cpu_count()} CPUs)"
    return f"CPU only ({platform.node()}, {os.cpu_count()} CPUs)"


def table(results: dict[str, Any]) -> str:
    peak = results.get("peak_tflops")
    flops = results.get("loop", {}).get("flops", {}).get("total")

    def fraction(rate: float | None) -> str:
        if not (rate and peak and flops):
            return "-"
        return f"{rate * flops / 1e12:.1f} TF/s = {100 * rate * flops / 1e12 / peak:.1f}%"

    def memory(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    rows = []
    dsl, talk = results.get("dsl"), results.get("talk")
    loop = results.get("loop", {}).get("batches", {})
    best_batch = max(loop, key=lambda b: loop[b]["images_per_s"]) if loop else None
    best = loop[best_batch]["images_per_s"] if loop else None
    if isinstance(dsl, dict):
        rows.append((f"1 beam_dsl ENSEMBLE (BATCH {dsl['batch']})", dsl["images_per_s"],
                     dsl["end_to_end_images_per_s"], dsl["memory_gib"]))
    threads = results.get("dsl_threads")
    if isinstance(threads, dict):
        rows.append((f"1c beam_dsl, {threads['workers']} runner worker threads",
                     threads["images_per_s"], threads["end_to_end_images_per_s"],
                     threads["memory_gib"]))
    host = results.get("dsl_host")
    if isinstance(host, dict):
        rows.append(("1b beam_dsl before image_inputs.py (fp32, host decode)",
                     host["images_per_s"], host["end_to_end_images_per_s"], host["memory_gib"]))
    if isinstance(talk, dict):
        rows.append(("2 talk-style Beam, batch 1, fp32", talk["images_per_s"],
                     talk["end_to_end_images_per_s"], talk["memory_gib"]))
    for batch, r in loop.items():
        rows.append((f"3 HF generate loop, batch {batch}, bf16", r["images_per_s"], None,
                     r["memory_gib"]))
    lines = [
        "| variant | images/s (steady) | images/s (end to end) | peak GPU GiB | "
        "achieved of bf16 peak |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, rate, e2e, mem in rows:
        lines.append(f"| {name} | {rate:.2f} | {f'{e2e:.2f}' if e2e else '-'} | "
                     f"{memory(mem)} | {fraction(rate)} |")
    lines.append("")
    if loop:
        lines.append("| loop batch | HF generate only, images/s | end to end, images/s | "
                     "beam_dsl's fast path, generate only, images/s |")
        lines.append("| ---: | ---: | ---: | ---: |")
        for batch, r in loop.items():
            lines.append(f"| {batch} | {r['generate_images_per_s']:.1f} | "
                         f"{r['images_per_s']:.1f} | {r['fast_generate_images_per_s']:.1f} |")
        lines.append("")
    if isinstance(dsl, dict) and isinstance(talk, dict):
        ratio = dsl["images_per_s"] / talk["images_per_s"]
        lines.append(f"ratio 1/2 (beam_dsl / talk-style): {ratio:.1f}x (goal >= 50x)")
    if isinstance(dsl, dict) and best:
        lines.append(f"ratio 1/3 (beam_dsl / best HF generate loop, batch {best_batch}): "
                     f"{dsl['images_per_s'] / best:.2f}x (goal >= 2.2x)")
    if isinstance(dsl, dict):
        lines.append(f"beam_dsl steady: {dsl['images_per_s']:.0f} images/s (goal >= 450)")
        fast = loop.get(dsl["batch_max"], {}).get("fast_generate_images_per_s")
        if fast:
            lines.append(f"beam_dsl steady / its generation alone at batch {dsl['batch_max']}: "
                         f"{dsl['images_per_s'] / fast:.0%} (the share of the time the GPU "
                         "generates; the rest it waits or does CLIP)")
        lines += [f"path: {line}" for line in dsl.get("generate_paths", [])]
    if peak:
        lines.append(f"dense bf16 matmul peak (8192^3, random): {peak:.0f} TFLOP/s")
    if flops:
        gen = results["loop"]["flops"]["generate"]
        lines.append(f"FLOPs per image: {flops / 1e9:.0f} GFLOP ({gen / 1e9:.0f} in BLIP generate)")
    for key in ("dsl", "dsl_threads", "talk", "dsl_host"):
        if isinstance(results.get(key), str):
            lines.append(f"{key}: NOT RUN: {results[key]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results.json and caption_gpu.md")
    parser.add_argument("--work", default=None, help="scratch folder (default: OUT/work)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (rehearsal)")
    parser.add_argument("--images", type=int, default=3072, help="images for beam_dsl")
    parser.add_argument("--talk-images", type=int, default=32, help="images for the talk style")
    parser.add_argument("--loop-batches", default="64,128,256,512")
    parser.add_argument("--loop-rounds", type=int, default=3, help="batches timed per size")
    parser.add_argument("--batch-min", type=int, default=64)
    parser.add_argument("--batch-max", type=int, default=512)
    parser.add_argument("--matmul", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=1,
                        help="bundles the Beam runner processes at once (threads)")
    parser.add_argument("--thread-workers", type=int, default=2,
                        help="runner worker threads of variant dsl_threads")
    parser.add_argument("--skip", default="",
                        help="comma list of loop,dsl,talk,dsl_threads,dsl_host")
    parser.add_argument("--profile", action="store_true",
                        help="time beam_dsl's model calls (adds GPU synchronizations)")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = args.work or os.path.join(args.out, "work")
    os.makedirs(work, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(args.device),
        "torch": torch.__version__,
        "argv": list(sys.argv[1:]),
    }
    try:
        import transformers

        results["transformers"] = transformers.__version__
    except ImportError:
        pass

    def save() -> None:
        with open(os.path.join(args.out, "results.json"), "w") as handle:
            json.dump(results, handle, indent=1, default=str)

    log(f"{results['machine']}, torch {torch.__version__}")
    paths = build_models(os.path.join(work, "models"), args.tiny, args.device)
    log(f"models built in {paths}")
    total = max(args.images, args.talk_images,
                max(int(b) for b in args.loop_batches.split(",")) * args.loop_rounds)
    images = make_images(os.path.join(work, "images"), total)
    log(f"{UNIQUE_IMAGES} JPEGs written")
    results["peak_tflops"] = matmul_peak(args.device, args.matmul)
    log(f"bf16 matmul peak: {results['peak_tflops']:.1f} TFLOP/s")
    save()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("loop", lambda: bench_loop(paths, images, [int(b) for b in args.loop_batches.split(",")],
                                    args.device, args.loop_rounds)),
        ("dsl", lambda: bench_dsl(paths, images[: args.images], work, args.device,
                                  args.batch_min, args.batch_max, args.workers)),
        ("talk", lambda: bench_talk(paths, images[: args.talk_images], work, args.device,
                                    args.workers)),
        ("dsl_threads", lambda: bench_dsl(paths, images[: args.images], work, args.device,
                                          args.batch_min, args.batch_max,
                                          args.thread_workers)),
        ("dsl_host", lambda: bench_dsl(paths, images[: args.images], work, args.device,
                                       args.batch_min, args.batch_max, args.workers,
                                       host=True)),
    ]
    for key, step in steps:
        if key in skip:
            continue
        timings: dict[str, list[float]] = {}
        try:
            with (profile_dsl(args.device, timings) if key.startswith("dsl") and args.profile
                  else contextlib.nullcontext()):
                results[key] = step()
        except Exception as exc:  # noqa: BLE001 - report the other variants anyway
            traceback.print_exc()
            results[key] = f"{type(exc).__name__}: {exc}"[:500]
        log(f"{key}: {results[key] if isinstance(results[key], str) else 'done'}")
        if timings:
            results[f"{key}_profile"] = {k: [sum(v), len(v)] for k, v in timings.items()}
            for name, values in sorted(timings.items()):
                log(f"  profile {name}: {len(values)} calls, {sum(values):.2f} s, "
                    f"median {statistics.median(values):.3f} s")
        save()
    text = f"{results['date']}, {results['machine']}, torch {results['torch']}, " \
           f"transformers {results.get('transformers')}\n\n{table(results)}\n"
    with open(os.path.join(args.out, "caption_gpu.md"), "w") as handle:
        handle.write(text)
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
