"""Importing this module makes ``import torch`` fail in this process for good.

The first module the worker fork server of a run that hides torch imports
(:mod:`~beam_dsl.transforms.common.workers`, :mod:`~beam_dsl.transforms.common.torch_guard`).
"""

import sys

from beam_dsl.transforms.common.torch_guard import NoTorch

if NoTorch not in sys.meta_path:
    sys.meta_path.insert(0, NoTorch)
