"""The caption ranking example end to end: tiny models, images, the pipeline, the captions.

    python pipelines/caption_ranking/run_example.py [--images 6]

1. Builds tiny BLIP and CLIP models with random weights into models/ (once),
   with build_tiny_models.py.
2. Draws a few PNG images (coloured shapes) with PIL into data/generated/ and
   lists their paths in data/generated/images.csv.
3. Runs pipeline.yaml and prints the three best captions of each image.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
DATA = os.path.join(HERE, "data", "generated")
SHAPES = ("ellipse", "rectangle", "triangle")
COLOURS = ((200, 40, 40), (40, 160, 60), (50, 80, 200), (230, 200, 40), (20, 20, 20))


def write_images(count: int, size: int = 96) -> str:
    """``count`` PNGs of a shape on a plain background; returns the CSV that lists them."""
    from PIL import Image, ImageDraw

    os.makedirs(DATA, exist_ok=True)
    listing = os.path.join(DATA, "images.csv")
    with open(listing, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "image"])
        for i in range(count):
            shape = SHAPES[i % len(SHAPES)]
            image = Image.new("RGB", (size, size), COLOURS[(i + 2) % len(COLOURS)])
            box = (size // 5, size // 5, size - size // 5, size - size // 5)
            draw = ImageDraw.Draw(image)
            fill = COLOURS[i % len(COLOURS)]
            if shape == "triangle":
                draw.polygon([(box[0], box[3]), (box[2], box[3]), (size // 2, box[1])], fill=fill)
            else:
                getattr(draw, shape)(box, fill=fill)
            path = os.path.join("data", "generated", f"image_{i}.png")
            image.save(os.path.join(HERE, path))
            writer.writerow([f"image_{i}", path])  # relative to the pipeline, where it runs
    return listing


def build_models() -> None:
    if all(os.path.isdir(os.path.join(MODELS, m)) for m in ("blip", "clip")):
        return
    sys.path.insert(0, HERE)
    from build_tiny_models import build

    build(MODELS)


def read_captions() -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(HERE, "out", "captions-*"))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return sorted(rows, key=lambda r: r["image_id"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args(argv)

    from beam_dsl.runner import run_pipeline

    build_models()
    write_images(args.images)
    print(run_pipeline(os.path.join(HERE, "pipeline.yaml"), progress=None).render())
    for row in read_captions():
        print(f"{row['image_id']}:")
        for caption, score in zip(row["best_captions"], row["best_captions_scores"], strict=True):
            print(f"  {score:8.4f}  {caption}")


if __name__ == "__main__":
    main()
