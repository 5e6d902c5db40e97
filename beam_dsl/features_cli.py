"""``python -m beam_dsl features get | list``: read an online feature store.

``features get NAME --store URI [--as-of T] KEY=VALUE...`` answers one
entity's features as of T (default: now) by the one "as of T" rule
(``beam_dsl/transforms/features/asof.py``, docs/FEATURES.md), the rule DATASET
uses: the same entity and T give the same features. ``features list --store
URI`` lists the feature sets a store holds. Reads never create a file, a
folder or a table; what they cannot find is E445 with a "did you mean".
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import numpy as np

from beam_dsl.diagnostics import config_error, did_you_mean
from beam_dsl.ir.features import FeaturesConfig
from beam_dsl.transforms.features.asof import AsOf
from beam_dsl.transforms.features.keys import entity_key
from beam_dsl.transforms.features.stores import E_NOT_FOUND, read_online

_TIMES = ("as_of", "window_start", "window_end", "expires_at")


def time_ms(value: Any) -> int | None:
    """Epoch milliseconds of a time given as epoch seconds (a number or its text), ISO-8601
    text (UTC without a zone) or a datetime, as FEATURES reads event times; None if it is none.
    Imports pandas (FEATURES' reader of times): a read without ``--as-of`` does not.
    """
    import pandas as pd

    from beam_dsl.transforms.features.times import event_ms

    ms, bad = event_ms(pd.Series([value], dtype=object))
    return None if bad[0] else int(ms[0])


def get_features(name: str, store_uri: str, key: dict[str, Any],
                 as_of: Any = None) -> dict[str, Any]:
    """The features of the entity ``key`` (column -> value; values may be text) as of ``as_of``
    (epoch seconds, ISO-8601 text or a datetime; default: now), from the online store.

    The answer is the entity columns, ``as_of``, the answer's window
    (``window_start``, ``window_end``), ``expires_at`` (with a TTL), each
    feature, and ``expired``. Raises DiagnosticError: E442 for a URI that
    is no store, E444 when the store cannot be read, E445 when there is no
    such store, feature set or entity, or when the store no longer keeps the
    rows an answer that early needs.
    """
    t_ms = int(time.time() * 1000) if as_of is None else time_ms(as_of)
    if t_ms is None:
        raise config_error(FeaturesConfig.KIND, name, E_NOT_FOUND, f"as of {as_of!r}: not a "
                           "time", "give epoch seconds or ISO-8601 (2024-03-01T12:00:00Z)")
    store = read_online(store_uri, name)
    try:
        rule = AsOf.of(store.feature_set().config)
        _check_columns(store, rule, key)
        wanted = entity_key(key)
        stored = store.read([wanted])
        answer = rule.from_stored(stored, [wanted], np.array([t_ms]))
        if not answer.known[0]:
            shown = [_shown(k) for k in store.sample_keys(10_000)]
            raise store.error(E_NOT_FOUND, f"no entity {_shown(wanted)} in {name}",
                              did_you_mean(_shown(wanted), shown))
    finally:
        store.close()
    if not answer.answerable[0]:
        raise store.error(E_NOT_FOUND, f"the store keeps {_shown(wanted)}'s rows from "
                          f"{_iso(answer.kept_from_ms[0] / 1000)} on, not enough to answer "
                          f"as of {_iso(t_ms / 1000)}",
                          "the online store answers from the entity's latest event on; "
                          "for older times, use DATASET over the FEATURES rows")
    out: dict[str, Any] = {c: stored[wanted][0][c] for c in rule.entity}
    out["as_of"] = t_ms / 1000
    if rule.session:
        out["window_start"] = answer.found["window_start"][0]
        out["window_end"] = answer.found["window_end"][0]
    else:
        end = int(rule.window_end_ms(np.array([t_ms]))[0])
        out["window_start"], out["window_end"] = (end - rule.longest_ms) / 1000, end / 1000
    if rule.ttl_ms is not None:
        out["expires_at"] = answer.found["expires_at"][0]
    for column, values in answer.columns.items():
        if column != rule.marker:
            out[column] = values[0]  # a stored (JSON) value, an empty value or None
    out["expired"] = bool(rule.marker is not None and answer.columns[rule.marker][0])
    return out


def _check_columns(store: Any, rule: AsOf, key: dict[str, Any]) -> None:
    wrong = [c for c in key if c not in rule.entity]
    missing = [c for c in rule.entity if c not in key]
    if wrong or missing:
        hint = did_you_mean(wrong[0], rule.entity) if wrong else None
        raise store.error(E_NOT_FOUND, f"{rule.name} is keyed by {', '.join(rule.entity)}; "
                          f"got {', '.join(key) or 'no key'}",
                          hint or f"give {' '.join(c + '=VALUE' for c in rule.entity)}")


def _shown(key: str) -> str:
    """An entity key (:func:`entity_key`) as typed on a command line: ``user_id=1001``."""
    return " ".join(f"{column}={value}" for column, value in json.loads(key))


def list_features(store_uri: str) -> list[dict[str, Any]]:
    """The feature sets an online store holds: name, ENTITY, windows, TTL and each feature
    with its type. E445 where there is no store."""
    store = read_online(store_uri, None)
    try:
        sets = store.feature_sets()
    finally:
        store.close()
    out = []
    for name, definition in sets.items():
        config = definition.config
        features = set(config.feature_names())
        out.append({
            "name": name,
            "entity": list(config.entity),
            "windows": [_window(w) for w in config.windows],
            "ttl_s": config.ttl_s,
            "features": [(c, kind) for c, kind in definition.fields if c in features],
        })
    return out


def _window(window: Any) -> str:
    if window.kind == "session":
        return f"SESSION {window.size_s:g}s"
    if window.kind == "tumbling":
        return f"TUMBLING {window.size_s:g}s"
    return f"SLIDING {window.size_s:g}s EVERY {window.every_s:g}s"


def _iso(seconds: float) -> str:
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return stamp.isoformat().replace("+00:00", "Z")


def _text(name: str, value: Any) -> str:
    if name in _TIMES and isinstance(value, (int, float)):
        return f"{value} ({_iso(value)})"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def format_features(features: dict[str, Any]) -> str:
    """One ``name: value`` line per column, names aligned; times also as ISO-8601 UTC."""
    width = max(len(name) for name in features)
    return "\n".join(f"{name:<{width}}  {_text(name, value)}" for name, value in features.items())


def format_feature_sets(sets: list[dict[str, Any]]) -> str:
    """The feature sets of :func:`list_features`, one block each."""
    blocks = []
    for s in sets:
        ttl = f", TTL {s['ttl_s']:g}s" if s["ttl_s"] is not None else ""
        lines = [f"{s['name']}  (ENTITY {', '.join(s['entity'])}; "
                 f"{'; '.join(s['windows'])}{ttl})"]
        lines += [f"  {column}  {kind}" for column, kind in s["features"]]
        blocks.append("\n".join(lines))
    return "\n".join(blocks) if blocks else "no feature sets"
