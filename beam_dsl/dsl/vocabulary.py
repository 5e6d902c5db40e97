"""The fixed names of the language: the one list the checks and the transforms share."""

from __future__ import annotations

FRAMEWORKS = ("sklearn", "pytorch", "huggingface", "onnx", "custom")

DEVICES = ("gpu", "cpu", "auto")

# Beam resource hints a HINTS clause may set (see apache_beam.transforms.resources).
HINTS = ("accelerator", "min_ram", "cpu_count")
