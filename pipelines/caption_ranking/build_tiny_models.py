"""Builds tiny BLIP and CLIP models with random weights, for tests and examples.

    python pipelines/caption_ranking/build_tiny_models.py OUT_DIR

writes ``OUT_DIR/blip`` (BlipForConditionalGeneration, image captioning) and
``OUT_DIR/clip`` (CLIPModel, image-text matching), each a ``save_pretrained``
directory holding the model, its processor and its tokenizer, as a Hugging
Face hub download would be, but a few hundred kilobytes in size. No hub
access is needed: each tokenizer is built from a small vocabulary written
here. Random weights produce random (but well-formed) captions and scores:
these models exercise the loading and pre/post-processing code, not quality.
"""

from __future__ import annotations

import argparse
import os

IMAGE_SIZE = 32
WORDS = (
    "a an the of on in with and photo picture image cat dog bird horse car bus train boat "
    "plane tree house street beach field sky water snow grass red blue green white black "
    "small large two three man woman child people sitting standing running flying parked "
    "near next to over under front back"
).split()
# A transformer this small: 2 layers, 2 heads, width 32.
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2}
VISION = {**SMALL, "image_size": IMAGE_SIZE, "patch_size": 8}


def text_config(tokenizer, positions: int, **extra) -> dict:
    """A small text transformer sized to ``tokenizer``'s vocabulary, with its special ids."""
    return {
        **SMALL,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": positions,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def blip_tokenizer():
    """BERT's word-piece tokenizer as BLIP uses it, with its [DEC] (bos) and [ENC] tokens."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(specials + list(WORDS))})
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def clip_tokenizer():
    """CLIP's byte-level BPE over the 256 byte symbols (no merges: one token per character)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def build_blip(folder: str) -> str:
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = blip_tokenizer()
    config = BlipConfig(
        vision_config=VISION,
        text_config=text_config(
            tokenizer,
            positions=64,
            encoder_hidden_size=SMALL["hidden_size"],
            sep_token_id=tokenizer.sep_token_id,
        ),
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    BlipProcessor(BlipImageProcessor(size=size), tokenizer).save_pretrained(folder)
    return folder


def build_clip(folder: str) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        vision_config=VISION,
        text_config=text_config(tokenizer, positions=77, eos_token_id=tokenizer.eos_token_id),
        projection_dim=32,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor, tokenizer).save_pretrained(folder)
    return folder


def build(out_dir: str, seed: int = 0) -> dict[str, str]:
    """Writes ``out_dir/blip`` and ``out_dir/clip``; returns their paths by name."""
    import torch

    torch.manual_seed(seed)
    return {
        "blip": build_blip(os.path.join(out_dir, "blip")),
        "clip": build_clip(os.path.join(out_dir, "clip")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where blip/ and clip/ are written")
    args = parser.parse_args(argv)
    for name, path in build(args.out_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
