""""As of T": a feature set's answer at a time T, defined once (docs/FEATURES.md, "As of T").

DATASET (over FEATURES rows), the online store (over the rows it keeps),
``features get --as-of T`` and :func:`beam_dsl.features_cli.get_features`
all answer through :class:`AsOf`. Over an entity's FEATURES rows (one per
window that holds an event), the answer at T is:

* windows (SLIDING, TUMBLING, WINDOWS (...)): ``b``, the latest window end
  at or before T (window ends are Beam's: multiples of the period, shifted by
  ``size mod period`` for one SLIDING window; multiples of the shortest length
  for WINDOWS). The row of the window ending at ``b``, computed over the
  entity's events in ``[b - size, b)``; when it holds no event, every
  feature's empty value (0, ``[]`` or null), never an older window's.
* SESSION: the row of the latest session whose end (last event + gap) is at
  or before T; none: the empty values.
* TTL: the answer has seen the entity's events before ``b`` (before the
  session's end). It has expired when T is at or after the latest of them
  plus the TTL, which is the ``expires_at`` of the entity's latest row ending
  at or before T: every feature is then null, and ``expired`` true. With no
  event before ``b`` there is nothing to expire.

Events at or after ``b`` are not yet seen (an event at T never is), by the
features and by the TTL alike: that is what makes the answer a function of
the FEATURES rows, so that DATASET, the online store and the offline Parquet
agree exactly.

The online store keeps, per entity, the rows an answer at any T at or after
the entity's latest event can need (:meth:`AsOf.kept`); :meth:`AsOf.answerable`
says for which T its rows suffice.

Everything here works on whole arrays (epoch milliseconds, integer entity
codes): no Python loop per row. Imports no Beam and no pandas: DATASET's
join hands :meth:`AsOf.answers` frames, while the online store's answers
(:meth:`AsOf.from_stored`, ``features get``) are built on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from beam_dsl.ir.dataset import expired_column
from beam_dsl.ir.features import FeaturesConfig
from beam_dsl.transforms.features.aggregates import REGISTRY, empty_value
from beam_dsl.transforms.features.windows import WindowPlan, to_ms

if TYPE_CHECKING:
    import pandas as pd


def latest_at_or_before(row_codes: np.ndarray, row_ms: np.ndarray, codes: np.ndarray,
                        t_ms: np.ndarray) -> np.ndarray:
    """For each query ``(codes[i], t_ms[i])``, the index of the row of the same code with the
    latest ``row_ms`` at or before ``t_ms[i]``; -1 where there is none. One sort of rows and
    queries together by (code, time, rows first), then a running maximum."""
    n = len(row_codes)
    all_codes = np.concatenate([row_codes, codes]).astype(np.int64, copy=False)
    all_ms = np.concatenate([row_ms, t_ms]).astype(np.int64, copy=False)
    is_query = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(len(codes), dtype=np.int64)])
    order = _order(all_codes, all_ms, is_query)
    query = is_query[order].astype(bool)
    latest = np.maximum.accumulate(np.where(query, -1, np.arange(len(order))))
    at = np.maximum(latest, 0)
    sorted_codes = all_codes[order]
    found = np.where((latest >= 0) & (sorted_codes[at] == sorted_codes), order[at], -1)
    out = np.empty(len(codes), dtype=np.int64)
    out[order[query] - n] = found[query]
    return out


def _order(codes: np.ndarray, ms: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The order of (code, time, last) triples: one sort of a packed int64 key where the
    values fit (codes are small, times span less than 2**61 / codes), else a lexsort."""
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    low = int(ms.min())
    span = int(ms.max()) - low + 1
    if int(codes.min()) >= 0 and (int(codes.max()) + 1) * span < 2**61:
        return np.argsort((codes * span + (ms - low)) * 2 + last)
    return np.lexsort((last, ms, codes))


def per_code(codes: np.ndarray, values: np.ndarray, how: str, size: int) -> np.ndarray:
    """``how`` ("max" or "min") of ``values`` per code ``0..size-1`` (int64)."""
    info = np.iinfo(np.int64)
    out = np.full(size, info.min if how == "max" else info.max, dtype=np.int64)
    (np.maximum if how == "max" else np.minimum).at(out, codes, values)
    return out


@dataclass(frozen=True)
class AsOf:
    """One feature set's "as of T" rule, from its FEATURES config."""

    name: str
    entity: tuple[str, ...]
    session: bool
    every_ms: int  # the period of window ends (the gap for sessions)
    offset_ms: int  # window ends are offset_ms modulo every_ms
    longest_ms: int  # the longest window (the gap for sessions)
    ttl_ms: int | None
    features: tuple[str, ...]
    empty: tuple[Any, ...]  # each feature's value over a window without events

    @classmethod
    def of(cls, config: FeaturesConfig) -> AsOf:
        windows = WindowPlan.build(config.windows)
        kinds = [REGISTRY[item.func].kind for _ in config.windows for item in config.select]
        return cls(
            name=config.name,
            entity=tuple(config.entity),
            session=windows.kind == "session",
            every_ms=windows.every_ms,
            offset_ms=windows.longest.offset_ms,
            longest_ms=windows.longest.size_ms,
            ttl_ms=None if config.ttl_s is None else to_ms(config.ttl_s),
            features=tuple(config.feature_names()),
            empty=tuple(empty_value(kind) for kind in kinds),
        )

    @property
    def marker(self) -> str | None:
        """DATASET's column saying that this set's features expired (sets with a TTL)."""
        return None if self.ttl_ms is None else expired_column(self.name)

    def window_end_ms(self, t_ms: np.ndarray) -> np.ndarray:
        """The latest window end at or before each time (windows, not sessions)."""
        t_ms = np.asarray(t_ms, dtype=np.int64)
        return t_ms - (t_ms - self.offset_ms) % self.every_ms

    def judge(self, row_end_ms: np.ndarray, row_expires_ms: np.ndarray | None,
              found: np.ndarray, t_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query, whether the found row (:func:`latest_at_or_before`) is the answer, and
        whether the answer has expired. Neither: the empty values."""
        has = found >= 0
        at = np.maximum(found, 0)
        if len(row_end_ms) == 0:
            nothing = np.zeros(len(found), dtype=bool)
            return nothing, nothing.copy()
        current = has if self.session else has & (row_end_ms[at] == self.window_end_ms(t_ms))
        if self.ttl_ms is None or row_expires_ms is None:
            expired = np.zeros(len(found), dtype=bool)
        else:
            expired = has & (np.asarray(t_ms, dtype=np.int64) >= row_expires_ms[at])
        return current & ~expired, expired

    def answers(self, rows: Mapping[str, Any], found: np.ndarray, current: np.ndarray,
                expired: np.ndarray) -> dict[str, Any]:
        """The features of each query's answer: the found row's where it is current, null where
        expired, the empty values otherwise; and the marker column (with a TTL). ``rows``:
        the rows' columns, a frame's or object arrays."""
        out: dict[str, Any] = {}
        at = np.maximum(found, 0)
        for name, empty in zip(self.features, self.empty, strict=True):
            column = rows[name]
            out[name] = _pick(column if len(column) else None, at, current, expired, empty)
        if self.marker is not None:
            out[self.marker] = expired
        return out

    def from_stored(self, rows_by_key: dict[str, list[dict[str, Any]]], keys: Sequence[str],
                    t_ms: np.ndarray) -> StoredAnswers:
        """The answers for entity keys at times ``t_ms`` from an online store's rows."""
        return _stored_answers(self, rows_by_key, keys, t_ms)

    def kept(self, codes: np.ndarray, ends_ms: np.ndarray) -> np.ndarray:
        """Which of the entities' rows the online store keeps: those ending after the entity's
        last window end minus the longest window, and the latest one ending at or before it.
        Every answer at or after the entity's latest event needs only these (and so does
        every answer from the earliest kept row's end on: :meth:`answerable`)."""
        if len(codes) == 0:
            return np.zeros(0, dtype=bool)
        size = int(codes.max()) + 1
        cut = per_code(codes, ends_ms, "max", size)[codes] - self.longest_ms
        after = ends_ms > cut
        before = per_code(codes[~after], ends_ms[~after], "max", size)
        return after | (ends_ms == before[codes])

    def answerable(self, first_ms: np.ndarray, last_ms: np.ndarray,
                   t_ms: np.ndarray) -> np.ndarray:
        """Whether an entity's kept rows (their earliest and latest window ends) answer at
        ``t_ms``: always, unless older rows may have been dropped (the earliest kept row ends
        at or before the latest minus the longest window) and T is before that row's end."""
        pruned = first_ms <= last_ms - self.longest_ms
        return ~pruned | (np.asarray(t_ms, dtype=np.int64) >= first_ms)


@dataclass
class StoredAnswers:
    """Answers from an online store's rows (:meth:`AsOf.from_stored`), one per query."""

    columns: dict[str, Any]  # each feature: object arrays of stored (JSON) values, empty
    # values and None; and the marker (with a TTL)
    found: dict[str, np.ndarray]  # per query, the found row's window_start / _end / expires_at
    known: np.ndarray  # whether the store has rows of the entity
    answerable: np.ndarray  # whether those rows answer at T (:meth:`AsOf.answerable`)
    kept_from_ms: np.ndarray  # the earliest kept row's window end


def _stored_answers(rule: AsOf, rows_by_key: dict[str, list[dict[str, Any]]],
                    keys: Sequence[str], t_ms: np.ndarray) -> StoredAnswers:
    codes_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    records, owners = [], []
    for key, code in codes_of.items():
        for row in rows_by_key.get(key, ()):
            records.append(row)
            owners.append(code)
    times = ["window_start", "window_end", "expires_at"]
    rows = {c: np.fromiter((r.get(c) for r in records), dtype=object, count=len(records))
            for c in [*times, *rule.features]}
    row_codes = np.asarray(owners, dtype=np.int64)
    ends, expires = ms_of(rows["window_end"]), ms_of(rows["expires_at"])
    codes = np.array([codes_of[k] for k in keys], dtype=np.int64)
    t_ms = np.asarray(t_ms, dtype=np.int64)
    found = latest_at_or_before(row_codes, ends, codes, t_ms)
    current, expired = rule.judge(ends, expires, found, t_ms)
    size = len(codes_of)
    counts = np.bincount(row_codes, minlength=size)
    first = per_code(row_codes, ends, "min", size)[codes]
    last = per_code(row_codes, ends, "max", size)[codes]
    which = {c: np.where(found >= 0, rows[c][np.maximum(found, 0)], None) if records
             else np.full(len(keys), None, dtype=object) for c in times}
    return StoredAnswers(rule.answers(rows, found, current, expired), which,
                         counts[codes] > 0, rule.answerable(first, last, t_ms), first)


def _pick(column: pd.Series | np.ndarray | None, at: np.ndarray, current: np.ndarray,
          expired: np.ndarray, empty: Any) -> Any:
    """One feature for every query: ``column[at]`` where current, ``empty`` where neither
    current nor expired, null where expired. An object column (text, lists; every column of
    stored rows) gives an object array; a frame's typed column a Series (integers and
    booleans nullable)."""
    n = len(at)
    if isinstance(empty, list) or column is None or column.dtype == object:
        values = (np.full(n, None, dtype=object) if column is None
                  else np.asarray(column, dtype=object)[at])
        values = np.where(current, values, None)
        fill = ~current & ~expired
        if isinstance(empty, list):
            for i in np.flatnonzero(fill):
                values[i] = []
        elif empty is not None:
            values[fill] = empty
        return values
    kind = column.dtype.kind
    if kind in "iu":
        column = column.astype("Int64")
    elif kind == "b":
        column = column.astype("boolean")
    taken = column.iloc[at].reset_index(drop=True)
    if empty is not None:
        taken = taken.where(current | expired, empty)
    return taken.where(~expired & (current | (empty is not None)))


def ms_of(seconds: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Epoch seconds (FEATURES' ``window_end`` / ``expires_at``) as epoch milliseconds (int64);
    a missing value (NaN, None) becomes the largest int64, a time no T reaches."""
    values = np.asarray(seconds, dtype=np.float64)
    out = np.full(len(values), np.iinfo(np.int64).max, dtype=np.int64)
    ok = np.isfinite(values)
    out[ok] = np.rint(values[ok] * 1000).astype(np.int64)
    return out
