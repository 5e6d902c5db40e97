"""``python -m beam_dsl features get SPEC_NAME --store URI KEY=VALUE...``: one entity's features.

Reads the ONLINE store a FEATURES statement wrote (``sqlite:///...`` or
``redis://...``) and shows the entity's latest row: its window, its
features, and whether the row has expired (TTL) at the time of asking.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from beam_dsl.transforms.features.panes import entity_key
from beam_dsl.transforms.features.stores import open_online

_TIMES = ("window_start", "window_end", "expires_at")


def get_features(spec_name: str, store_uri: str, key: dict[str, Any],
                 now: float | None = None) -> dict[str, Any] | None:
    """The stored row of the entity ``key`` (column -> value; values may be text), or None.

    The row is the one with the latest ``window_end``; ``expired`` says whether
    its ``expires_at`` is at or before ``now`` (epoch seconds, default: the
    current time). Raises DiagnosticError (E442) for a URI that is no store.
    """
    store = open_online(store_uri, spec_name)
    try:
        record = store.get(entity_key(key))
    finally:
        store.close()
    if record is None:
        return None
    at = time.time() if now is None else now
    return {**record.features,
            "expired": record.expires_at is not None and record.expires_at <= at}


def _text(name: str, value: Any) -> str:
    if name in _TIMES and isinstance(value, (int, float)):
        stamp = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        return f"{value} ({stamp.isoformat().replace('+00:00', 'Z')})"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def format_features(features: dict[str, Any]) -> str:
    """One ``name: value`` line per column, names aligned; times also as ISO-8601 UTC."""
    width = max(len(name) for name in features)
    return "\n".join(f"{name:<{width}}  {_text(name, value)}" for name, value in features.items())
