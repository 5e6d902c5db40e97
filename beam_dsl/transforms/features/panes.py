"""The FEATURES plan: events -> pane states -> window rows, on pandas frames, runner-free.

A FEATURES statement is computed in three column-wise steps, each a function
here, which the Beam transform (``transform.py``) places in a pipeline:

1. :func:`prepare`: a frame of input rows becomes *events*: WHERE applied,
   event time parsed to epoch milliseconds, each aggregate's FILTER and
   argument evaluated; rows that cannot be used come back with a reason.
2. :func:`panes_of` / :func:`merge`: events are pre-aggregated into *panes*,
   fixed intervals of ``pane_ms`` (the gcd of the window sizes and period),
   one mergeable state per (entity, pane); panes of the same key from
   different bundles merge exactly.
3. :func:`window_rows`: the panes of each entity roll up into its windows:
   every pane is copied to the windows that contain it (``size / period`` of
   them), the copies merge per (entity, window end), and the states become
   features. Sessions instead sort an entity's panes and cut where the gap
   between events reaches the session gap.

Nothing here depends on the runner's windowing: the keys carry the time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.ir.features import E_COLUMN, FeaturesConfig
from beam_dsl.ir.features import Item as ItemConfig
from beam_dsl.transforms.common import expr as expressions
from beam_dsl.transforms.common.functions import REGISTRY as FUNCTIONS
from beam_dsl.transforms.common.rows import base_type, kind_of
from beam_dsl.transforms.features.aggregates import Aggregate, Groups, aggregate
from beam_dsl.transforms.features.keys import key_text
from beam_dsl.transforms.features.times import event_ms
from beam_dsl.transforms.features.windows import WindowLength, WindowPlan, to_ms

# ---------------------------------------------------------------- the plan


@dataclass
class PlanItem:
    """A SELECT item with its lowered argument and FILTER expressions."""

    aggregate: Aggregate
    func: str
    arg: Mapping[str, Any] | None
    filter: Mapping[str, Any] | None


@dataclass
class FeaturePlan:
    """Everything the steps need, resolved against the input schema."""

    name: str
    entity: list[str]
    timestamp: str
    where: Mapping[str, Any] | None
    items: list[PlanItem]
    windows: WindowPlan
    ttl_ms: int | None
    lateness_ms: int
    entity_types: dict[str, Any]
    columns: list[str] = field(default_factory=list)  # the input's fields
    int_columns: list[str] = field(default_factory=list)  # fields the schema types as integers

    @classmethod
    def build(cls, config: FeaturesConfig, fields: Mapping[str, Any]) -> FeaturePlan:
        """The plan of a (validated) config over input rows of schema ``fields``; E440 where
        the config reads a column the rows lack."""

        def need(column: str, where: str) -> None:
            if column not in fields:
                raise config.error(E_COLUMN, f"{where} reads column '{column}', which the "
                                   "input rows do not have", did_you_mean(column, fields))

        for column in config.entity:
            need(column, "ENTITY")
        need(config.timestamp, "TIMESTAMP")
        for column in expressions.columns_of(config.where):
            need(column, "WHERE")
        items = []
        for index, item in enumerate(config.select):
            for expr in [*item.args[:1], item.filter]:
                for column in expressions.columns_of(expr):
                    need(column, f"{item.func}() AS {item.alias}")
            items.append(_item(index, item, fields))
        ttl = config.ttl_s
        return cls(
            name=config.name,
            entity=list(config.entity),
            timestamp=config.timestamp,
            where=config.where,
            items=items,
            windows=WindowPlan.build(config.windows),
            ttl_ms=to_ms(ttl) if ttl is not None else None,
            lateness_ms=to_ms(config.allowed_lateness_s),
            entity_types={c: _python_type(fields[c]) for c in config.entity},
            columns=list(fields),
            int_columns=[c for c, hint in fields.items() if _python_type(hint) is int],
        )

    def output_fields(self) -> list[tuple[str, Any]]:
        """The schema of the output rows, in order."""
        out = [(c, self.entity_types[c]) for c in self.entity]
        out += [("window_start", float), ("window_end", float)]
        if self.ttl_ms is not None:
            out.append(("expires_at", float))
        for length in self.windows.lengths:
            out += [(i.aggregate.alias + length.suffix, i.aggregate.output_type())
                    for i in self.items]
        return out


def _python_type(hint: Any) -> Any:
    hint = base_type(hint)
    kind = kind_of(hint)
    if kind == "text":
        return str
    if kind == "number":
        if isinstance(hint, type) and issubclass(hint, (bool, np.bool_)):
            return bool
        if isinstance(hint, type) and issubclass(hint, (float, np.floating)):
            return float
        return int
    return str


def expr_type(expr: Mapping[str, Any], fields: Mapping[str, Any]) -> type:
    """The Python type an expression evaluates to: int, float, str or bool."""
    if "lit" in expr:
        value = expr["lit"]
        return type(value) if isinstance(value, (bool, int, float, str)) else str
    if "col" in expr:
        return _python_type(fields[expr["col"]])
    args = [expr_type(a, fields) for a in expr.get("args", ())]
    if "fn" in expr:
        kind = FUNCTIONS[expr["fn"]].kind
        return args[0] if kind == "same" else {"str": str, "int": int, "float": float}[kind]
    op = expr["op"]
    if op in ("+", "-", "*", "%", "neg"):
        return float if float in args else int
    if op == "/":
        return float
    return bool


def _item(index: int, item: ItemConfig, fields: Mapping[str, Any]) -> PlanItem:
    arg = item.args[0] if item.args else None
    param = item.args[1]["lit"] if len(item.args) > 1 else None
    arg_type = expr_type(arg, fields) if arg is not None else None
    return PlanItem(aggregate(item.func, item.alias, index, arg_type, param), item.func, arg,
                    item.filter)


# ---------------------------------------------------------------- step 1: events


@dataclass
class Events:
    """Usable events of one frame: entity keys, event time, per item a mask and values."""

    keys: pd.DataFrame
    ms: np.ndarray
    masks: list[np.ndarray]
    values: list[np.ndarray | None]


def _safe(function: Callable[[pd.DataFrame], pd.Series], frame: pd.DataFrame, what: str
          ) -> tuple[pd.Series, dict[int, str]]:
    """``function`` over the frame; where it raises, row by row, with the failing rows' reasons
    (by position)."""
    reasons: dict[int, str] = {}
    try:
        return function(frame), reasons
    except Exception:  # a bad value somewhere: find the rows
        out = []
        for i in range(len(frame)):
            try:
                out.append(function(frame.iloc[i : i + 1]).iloc[0])
            except Exception as e:  # noqa: BLE001 - the reason goes to the errors output
                out.append(None)
                reasons[i] = f"{what}: {e}"
        return pd.Series(out, index=frame.index, dtype=object), reasons


def _flags(values: pd.Series) -> np.ndarray:
    """A boolean mask: true where a value is true (null is false)."""
    if values.dtype == bool:
        return values.to_numpy()
    return np.array([bool(v) if v is not None and not pd.isna(v) else False for v in values],
                    dtype=bool)


def _typed(values: pd.Series, wanted: type, what: str) -> tuple[np.ndarray, dict[int, str]]:
    """Values as ``wanted`` (numbers parsed; text as str); reasons where a value is not one."""
    present = values.notna().to_numpy()
    if wanted in (int, float, bool):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = present & numbers.isna().to_numpy()
        reasons = {int(i): f"{what}: {values.iloc[i]!r} is not a number"
                   for i in np.flatnonzero(bad)}
        if wanted is float or numbers.dtype.kind == "f" or not present.all():
            return numbers.to_numpy(np.float64, na_value=np.nan), reasons
        return numbers.to_numpy(np.int64), reasons
    out = values.astype(object).to_numpy()
    if values.dtype == object:
        out[present] = [v if isinstance(v, str) else str(v) for v in out[present]]
    return out, {}


def prepare(frame: pd.DataFrame, plan: FeaturePlan) -> tuple[Events, pd.DataFrame, list[str]]:
    """The usable events of a frame of input rows, the unusable rows and their reasons.

    Rows that fail WHERE are neither: they are not events of this feature set.
    """
    frame = frame.reset_index(drop=True)
    for column in plan.int_columns:  # rows with a null made a float column of an int field
        if column in frame and frame[column].dtype.kind == "f":
            try:
                frame[column] = frame[column].astype("Int64")
            except TypeError:  # not all integral: leave the values as they came
                pass
    where, reasons = _safe(lambda f: expressions.mask(plan.where, f), frame, "WHERE")
    keep = _flags(where)
    keep[list(reasons)] = False
    rows = frame[keep].reset_index(drop=True)
    positions = np.flatnonzero(keep)
    bad: dict[int, str] = {}  # position in rows -> the first reason found

    def blame(more: dict[int, str]) -> None:
        for i, reason in more.items():
            bad.setdefault(i, reason)

    ms, not_time = event_ms(rows[plan.timestamp])
    column = plan.timestamp
    blame({int(i): f"TIMESTAMP {column}: {rows[column].iloc[i]!r} is not an epoch time or "
           "ISO-8601 string" for i in np.flatnonzero(not_time)})
    for c in plan.entity:
        blame({int(i): f"ENTITY {c} is null" for i in np.flatnonzero(rows[c].isna().to_numpy())})
    masks, values = [], []
    for item in plan.items:
        label = f"{item.func}() AS {item.aggregate.alias}"
        chosen, why = _safe(lambda f, e=item.filter: expressions.mask(e, f), rows,
                            f"{label} FILTER")
        blame(why)
        mask = _flags(chosen)
        if item.arg is None:
            masks.append(mask)
            values.append(None)
            continue
        raw, why = _safe(lambda f, e=item.arg: expressions.evaluate(e, f), rows, label)
        blame(why)
        typed, why = _typed(raw, item.aggregate.arg_type, label)
        blame({i: reason for i, reason in why.items() if mask[i]})
        masks.append(mask & raw.notna().to_numpy())
        values.append(typed)
    good = np.ones(len(rows), dtype=bool)
    good[list(bad)] = False
    rejected = np.flatnonzero(~good)
    events = Events(
        keys=rows.loc[good, plan.entity].reset_index(drop=True),
        ms=ms[good],
        masks=[m[good] for m in masks],
        values=[v[good] if v is not None else None for v in values],
    )
    return events, frame.iloc[positions[rejected]], [bad[int(i)] for i in rejected]


# ---------------------------------------------------------------- step 2: panes


@dataclass
class Panes:
    """Partial states: ``wide`` has key columns, ``_n`` (events), ``_last_ms`` (latest event)
    and the wide aggregates' state columns; ``long`` has a frame per long aggregate."""

    wide: pd.DataFrame
    long: dict[int, pd.DataFrame]


def panes_of(events: Events, plan: FeaturePlan) -> Panes:
    """The events of a frame, pre-aggregated per (entity, pane)."""
    keys = events.keys.assign(_pane=events.ms // plan.windows.pane_ms)
    groups = Groups(keys, list(keys.columns))
    wide = groups.keys.assign(_n=groups.count(), _last_ms=groups.reduce(events.ms, "max"))
    columns: dict[str, Any] = {}
    long = {}
    for item, mask, values in zip(plan.items, events.masks, events.values, strict=True):
        agg = item.aggregate
        if agg.long:
            long[agg.index] = agg.init_long(keys[mask], events.ms[mask], values[mask])
        else:
            columns.update(agg.init(groups, events.ms, values, mask))
    return Panes(wide.assign(**columns), long)


def merge(parts: Sequence[Panes], plan: FeaturePlan, by: list[str]) -> Panes:
    """States of the same key (``by``) merged into one."""
    wide = parts[0].wide if len(parts) == 1 else pd.concat([p.wide for p in parts],
                                                           ignore_index=True)
    long = {
        i: frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        for i, frames in ((i, [p.long[i] for p in parts]) for i in parts[0].long)
    }
    return _merged(Groups(wide, by), wide, long, plan, by)


def _merged(groups: Groups, wide: pd.DataFrame, long: dict[int, pd.DataFrame],
            plan: FeaturePlan, by: list[str]) -> Panes:
    """The rows of ``wide`` merged per group, and the long frames merged per ``by``."""
    out = groups.keys.assign(
        _n=groups.sum(wide["_n"].to_numpy()),
        _last_ms=groups.reduce(wide["_last_ms"].to_numpy(), "max").to_numpy(np.int64),
    )
    columns: dict[str, Any] = {}
    merged_long = {}
    for item in plan.items:
        agg = item.aggregate
        if agg.long:
            merged_long[agg.index] = agg.merge_long(long[agg.index], by)
        else:
            columns.update(agg.merge(groups, wide))
    return Panes(out.assign(**columns), merged_long)


# ---------------------------------------------------------------- step 3: windows


def _entity_codes(frame: pd.DataFrame, entity: list[str]) -> np.ndarray:
    """An integer per entity: the same entity, the same code."""
    if len(entity) == 1:
        return pd.factorize(frame[entity[0]])[0].astype(np.int64)
    return frame.groupby(entity, sort=False).ngroup().to_numpy(np.int64)


def _copies(pane: np.ndarray, size: int, every: int, offset: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each pane, the ends (in panes) of the windows holding it: (row, end) pairs."""
    low = pane + 1 + (offset - (pane + 1)) % every
    count = (pane + size - (pane + size - offset) % every - low) // every + 1
    rows = np.repeat(np.arange(len(pane)), count)
    return rows, low[rows] + (np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)) \
        * every


def _slide(panes: Panes, plan: FeaturePlan, length: WindowLength, base: int, span: int
           ) -> tuple[Panes, np.ndarray]:
    """Merged panes rolled up into the windows of ``length``; and each window's sort key
    (entity code * span + end - base, comparable between the lengths of one WINDOWS).

    Panes are sorted by (entity, pane); an entity's window ends are the union
    of its panes' end ranges, enumerated in order without duplicates, so each
    pane's copies land on consecutive window numbers: no hashing of keys.
    """
    unit = plan.windows.pane_ms
    size, every, offset = (length.size_ms // unit, plan.windows.every_ms // unit,
                           length.offset_ms // unit)
    codes = _entity_codes(panes.wide, plan.entity)
    pane = panes.wide["_pane"].to_numpy(np.int64)
    order = np.lexsort((pane, codes))
    wide, codes, pane = panes.wide.take(order).reset_index(drop=True), codes[order], pane[order]
    low = pane + 1 + (offset - (pane + 1)) % every  # each pane's first window end
    high = pane + size - (pane + size - offset) % every  # and its last
    previous = np.full(len(pane), np.iinfo(np.int64).min // 2)
    same = np.zeros(len(pane), dtype=bool)
    same[1:] = codes[1:] == codes[:-1]
    previous[1:][same[1:]] = high[:-1][same[1:]]
    first_new = np.maximum(low, previous + every)
    new = np.maximum((high - first_new) // every + 1, 0)
    owner = np.repeat(np.arange(len(pane)), new)
    ends = first_new[owner] + (np.arange(len(owner)) - np.repeat(np.cumsum(new) - new, new)) \
        * every
    window_keys = codes[owner] * span + (ends - base)
    # A pane's windows are consecutive among its entity's: the first one's number, plus j.
    first = np.searchsorted(window_keys, codes * span + (low - base))
    copies = (high - low) // every + 1
    rows = np.repeat(np.arange(len(pane)), copies)
    window = first[rows] + np.arange(len(rows)) - np.repeat(np.cumsum(copies) - copies, copies)
    keys = wide[plan.entity].take(owner).reset_index(drop=True).assign(_end=ends * unit)
    groups = Groups.of_codes(window, keys)
    states = wide.drop(columns=[*plan.entity, "_pane"])
    copied = pd.DataFrame({c: states[c].to_numpy()[rows] for c in states.columns})

    def spread(frame: pd.DataFrame) -> pd.DataFrame:  # a long frame: rows copied per window
        at, end = _copies(frame["_pane"].to_numpy(np.int64), size, every, offset)
        return frame.take(at).drop(columns="_pane").reset_index(drop=True).assign(
            _end=end * unit)

    long = {i: spread(f) for i, f in panes.long.items()}
    by = [*plan.entity, "_end"]
    return _merged(groups, copied, long, plan, by), window_keys


def _sessions(panes: Panes, plan: FeaturePlan) -> Panes:
    """Panes (here single milliseconds) cut into sessions where the gap reaches the session gap."""
    gap = plan.windows.every_ms
    codes = _entity_codes(panes.wide, plan.entity)
    pane = panes.wide["_pane"].to_numpy(np.int64)
    order = np.lexsort((pane, codes))
    wide, codes, pane = panes.wide.take(order).reset_index(drop=True), codes[order], pane[order]
    new = np.ones(len(wide), dtype=bool)
    new[1:] = (codes[1:] != codes[:-1]) | (pane[1:] - pane[:-1] >= gap)
    session = np.cumsum(new) - 1
    starts = pane[new]
    ends = pd.Series(pane).groupby(session).max().to_numpy() + gap
    wide = wide.assign(_start=starts[session], _end=ends[session])
    where = wide[[*plan.entity, "_pane", "_start", "_end"]]
    long = {i: f.merge(where, on=[*plan.entity, "_pane"]).drop(columns="_pane")
            for i, f in panes.long.items()}
    by = [*plan.entity, "_start", "_end"]
    keys = wide[by].loc[new].reset_index(drop=True)
    return _merged(Groups.of_codes(session, keys), wide.drop(columns="_pane"), long, plan, by)


def _column(agg: Aggregate, merged: Panes, by: list[str], index: pd.MultiIndex | None,
            position: np.ndarray | None) -> np.ndarray:
    """One feature for the base rows: ``position`` maps them to ``merged``'s rows (-1: none)."""
    if agg.long:
        values = agg.final_long(merged.long[agg.index], by)
        values = values.reindex(index if index is not None else pd.MultiIndex.from_frame(
            merged.wide[by])).to_numpy(dtype=object)
        missing = np.array([not isinstance(v, list) and pd.isna(v) for v in values], dtype=bool)
    else:
        values = agg.final(merged.wide).to_numpy()
        if position is None:
            return values
        values = values.astype(object)[position]
        missing = position < 0
    for i in np.flatnonzero(missing):
        values[i] = agg.empty()
    return values


def window_rows(panes: Panes, plan: FeaturePlan) -> pd.DataFrame:
    """The output rows (one per entity and window end) of merged panes, typed as the schema says."""
    windows = plan.windows
    if windows.kind == "session":
        per_length = [(_sessions(panes, plan), None)]
        base, base_keys = per_length[0]
        start_ms = base.wide["_start"].to_numpy()
        by = [*plan.entity, "_start", "_end"]
    else:
        pane = panes.wide["_pane"].to_numpy(np.int64)
        base = int(pane.min()) if len(pane) else 0
        span = int(pane.max()) - base + windows.longest.size_ms // windows.pane_ms + 1 \
            if len(pane) else 1
        per_length = [_slide(panes, plan, length, base, span) for length in windows.lengths]
        base, base_keys = per_length[windows.lengths.index(windows.longest)]
        start_ms = base.wide["_end"].to_numpy() - windows.longest.size_ms
        by = [*plan.entity, "_end"]
    out = {c: base.wide[c] for c in plan.entity}
    out["window_start"] = start_ms / 1000.0
    out["window_end"] = base.wide["_end"].to_numpy() / 1000.0
    if plan.ttl_ms is not None:
        out["expires_at"] = (base.wide["_last_ms"].to_numpy() + plan.ttl_ms) / 1000.0
    index = pd.MultiIndex.from_frame(base.wide[by]) if any(
        i.aggregate.long for i in plan.items) else None
    for length, (merged, keys) in zip(windows.lengths, per_length, strict=True):
        position = None
        if merged is not base:  # a shorter length: find the base rows' windows in it
            found = np.minimum(np.searchsorted(keys, base_keys), max(len(keys) - 1, 0))
            position = np.where(keys[found] == base_keys, found, -1) if len(keys) else np.full(
                len(base_keys), -1)
        for item in plan.items:
            out[item.aggregate.alias + length.suffix] = _column(
                item.aggregate, merged, by, index, position)
    return typed_frame(pd.DataFrame(out), plan.output_fields())


def typed_frame(frame: pd.DataFrame, fields: Sequence[tuple[str, Any]]) -> pd.DataFrame:
    """Columns cast to the schema's types: ints, nullable ints, floats, text, lists."""
    out = {}
    for name, hint in fields:
        column = frame[name]
        base = base_type(hint)
        nullable = base is not hint
        if base is int or base is bool:
            dtype = ("Int64" if base is int else "boolean") if nullable else (
                np.int64 if base is int else bool)
            out[name] = column.astype(dtype, copy=False)
        elif base is float:
            if column.dtype == object:
                column = pd.to_numeric(column, errors="coerce")
            out[name] = column.astype(np.float64, copy=False)
        else:  # text and lists stay Python objects, with None for null
            values = column.to_numpy(dtype=object)
            if base is str:
                null = pd.isna(values)
                values[null] = None
            out[name] = values
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def entity_texts(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Each row's entity as one text, by :func:`.keys.entity_key`'s rule for values (columns
    joined by a unit separator): the same entity gives the same text whatever the column
    types. Column-wise for numbers; null values must have been set aside."""
    parts = []
    for column in columns:
        values = frame[column].reset_index(drop=True)
        kind = values.dtype.kind
        if kind in "iu":
            parts.append(values.astype(np.int64).astype(str))
            continue
        if kind == "f":
            numbers = values.to_numpy(np.float64)
            whole = np.isfinite(numbers) & (numbers == np.floor(numbers)) & (
                np.abs(numbers) < 2**63)
            if whole.all():
                parts.append(pd.Series(numbers.astype(np.int64)).astype(str))
                continue
        parts.append(values.map(key_text).astype(object))
    text = parts[0]
    for part in parts[1:]:
        text = text + "\x1f" + part
    return text
