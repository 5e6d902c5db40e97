"""Entity keys: one text per entity, the same whatever types its values came as.

The online stores, FEATURES' streaming state and DATASET's shards key
entities by this rule (``panes.entity_texts`` applies it column-wise to a
frame). Imports no pandas and no Beam.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np


def key_text(value: Any) -> str:
    """An entity value as text in keys: ``42``, ``42.0`` and ``'42'`` are all ``42``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def entity_key(values: Mapping[str, Any]) -> str:
    """The entity's key in stores and for streaming state: independent of column order and of
    whether a value came as text (``42`` from a command line) or a number."""
    return json.dumps(sorted((str(k), key_text(v)) for k, v in values.items()))
