"""DATASET as a Beam transform: each labelled row with every joined feature set as of its time.

Inputs (pipeline.yaml, by name): ``rows``, the labelled rows (any columns,
among them the ENTITY columns and the AS OF time), and per joined FEATURES
statement an input named after it carrying its output rows (the FEATURES
transform's ``main`` in the same pipeline, or its OFFLINE Parquet read
back). A joined set without an input is read from its ONLINE store, as of
each row's time: that is how a serving pipeline gets a MODEL its features.
A single input (not a mapping) is ``rows``.

Each row of ``rows`` comes out exactly once: in ``main`` (its columns, then
each set's features in JOIN order, and ``<set>_expired`` for a set with a
TTL), or in ``errors`` when its entity or time cannot be read, a value does
not fit its schema, or an online store no longer keeps the rows an answer
that early needs. The answer is ``asof.py``'s, the one "as of T" rule
(docs/FEATURES.md): never a window ending after T, expired sets all null.

How: labelled rows and feature rows are hashed to shards by entity (the
same text for the same entity, whatever the column types), one GroupByKey
brings a shard's rows together, and each shard is joined whole: entities
get integer codes, rows and feature rows are sorted by (entity, time)
together, and each row takes the latest feature row at or before its time
(:func:`~beam_dsl.transforms.features.asof.latest_at_or_before`), with no
scan of windows per row. On runners without batched DoFns (Beam's
DaskRunner) the rows themselves are shuffled and become frames after the
GroupByKey, as in ComputeFeatures.
"""

from __future__ import annotations

import datetime
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd

from beam_dsl.diagnostics import did_you_mean
from beam_dsl.ir.dataset import E_DATASET, ROWS_INPUT, DatasetConfig
from beam_dsl.ir.features import EXPIRES_COLUMN
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    FrameDoFn,
    base_type,
    conform_to_schema,
    error_rows,
    optional,
    row_type,
    rows_to_frame,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import by_runner, select
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.features.asof import AsOf, latest_at_or_before, ms_of
from beam_dsl.transforms.features.keys import entity_key, key_text
from beam_dsl.transforms.features.panes import entity_texts, typed_frame
from beam_dsl.transforms.features.stores import read_online, type_hint
from beam_dsl.transforms.features.times import event_ms
from beam_dsl.transforms.features.transform import frame_output

_T = "__as_of_ms"  # helper columns of prepared frames: the row's time, its entity as text
_KEY = "__entity"
_END = "__end_ms"
_EXPIRES = "__expires_ms"


@dataclass(frozen=True)
class JoinedSet:
    """One joined FEATURES statement: its as-of rule, its output columns (features, typed
    optional, and the expiry marker), and the online store to read when it has no input."""

    rule: AsOf
    fields: tuple[tuple[str, Any], ...]
    online: str | None


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    entity: tuple[str, ...]
    as_of: str
    row_fields: dict[str, Any]
    joined: tuple[JoinedSet, ...]
    shards: int
    int_keys: bool  # every input's ENTITY is one integer column: the integers are the keys

    def output_fields(self) -> list[tuple[str, Any]]:
        return [*self.row_fields.items(), *(f for j in self.joined for f in j.fields)]

    @property
    def offline(self) -> tuple[JoinedSet, ...]:
        return tuple(j for j in self.joined if j.online is None)

    @property
    def online(self) -> tuple[JoinedSet, ...]:
        return tuple(j for j in self.joined if j.online is not None)


# ---------------------------------------------------------------- frames


def entity_keys(frame: pd.DataFrame, columns: Sequence[str], int_keys: bool) -> np.ndarray:
    """Each row's entity as one join key: the integer itself where every input's ENTITY is
    one integer column (:attr:`DatasetPlan.int_keys`), else :func:`entity_texts`."""
    if int_keys:
        return frame[columns[0]].to_numpy(np.int64)
    return entity_texts(frame, columns).to_numpy(dtype=object)


def prepare_rows(frame: pd.DataFrame, plan: DatasetPlan) -> tuple[pd.DataFrame, list]:
    """Labelled rows with their time (epoch ms) and entity text added, and ``errors`` rows
    for those whose time or entity cannot be read or whose values do not fit the schema."""
    frame = frame.reset_index(drop=True)
    typed, reasons = conform_to_schema(frame, plan.row_fields)
    ms, not_time = event_ms(typed[plan.as_of])
    for i in np.flatnonzero(not_time & reasons.isna().to_numpy()):
        reasons.iloc[i] = (f"AS OF {plan.as_of}: {frame[plan.as_of].iloc[i]!r} is not an "
                           "epoch time or ISO-8601 string")
    for column in plan.entity:
        reasons = reasons.mask(reasons.isna() & typed[column].isna(), f"ENTITY {column} is null")
    bad = reasons.notna().to_numpy()
    errors = error_rows(frame[bad], reasons[bad], plan.name) if bad.any() else []
    good = typed[~bad].reset_index(drop=True)
    good[_T] = ms[~bad]
    good[_KEY] = entity_keys(good, plan.entity, plan.int_keys)
    return good, errors


def prepare_features(frame: pd.DataFrame, joined: JoinedSet, int_keys: bool) -> pd.DataFrame:
    """A joined set's FEATURES rows reduced to what the join reads: entity key, window end,
    expiry (ms) and the features; rows without an entity or window end cannot match."""
    rule = joined.rule
    usable = frame[[*rule.entity, "window_end"]].notna().all(axis=1).to_numpy()
    if not usable.all():
        frame = frame[usable]
    columns = {
        _KEY: entity_keys(frame, rule.entity, int_keys),
        _END: ms_of(frame["window_end"]),
        _EXPIRES: ms_of(frame[EXPIRES_COLUMN]) if rule.ttl_ms is not None else
        np.zeros(len(frame), dtype=np.int64),
    }
    columns.update({c: frame[c].to_numpy() for c in rule.features})
    return pd.DataFrame(columns)


def shard_of(texts: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    hashes = pd.util.hash_pandas_object(pd.Series(texts), index=False).to_numpy()
    return (hashes % np.uint64(shards)).astype(np.int64)


@dataclass
class Packed:
    """A frame made small for the shuffle, losslessly: each column of numpy integers as its
    offsets from its minimum in the narrowest unsigned type (entity ids, times in ms and
    counts shrink to 1-4 bytes); other columns as they are. The shuffle's cost is its bytes."""

    columns: list[tuple[str, str | None, int, Any]]  # name, integer dtype, minimum, values

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Packed:
        columns = []
        for name in frame.columns:
            values = frame[name]
            array = values.to_numpy()
            if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu" and len(array):
                low, high = int(array.min()), int(array.max())
                if high - low < 2**62:
                    narrow = np.min_scalar_type(high - low)
                    columns.append((name, values.dtype.str, low, (array - low).astype(narrow)))
                    continue
            columns.append((name, None, 0, values.array))
        return cls(columns)

    @classmethod
    def by_shard(cls, frame: pd.DataFrame, shards: int) -> list[tuple[int, Packed]]:
        """A prepared frame split by the shard of its entity key: packed whole, then each
        column sorted by shard (one sort) and sliced."""
        if not len(frame):
            return []
        shard = shard_of(frame[_KEY], shards)
        order = np.argsort(shard, kind="stable")
        whole = [(name, dtype, low, values[order]) for name, dtype, low, values in
                 cls.of(frame).columns]
        ends = np.cumsum(np.bincount(shard, minlength=shards))
        return [(s, cls([(name, dtype, low, values[end - count : end])
                         for name, dtype, low, values in whole]))
                for s, (count, end) in enumerate(zip(np.diff(ends, prepend=0), ends,
                                                     strict=True)) if count]

    def frame(self) -> pd.DataFrame:
        columns = {}
        for name, dtype, low, values in self.columns:
            if dtype is not None:
                values = values.astype(dtype)
                values += np.array(low, dtype=dtype)
            columns[name] = values
        return pd.DataFrame(columns)


def join(rows: pd.DataFrame, features: Mapping[str, pd.DataFrame], plan: DatasetPlan
         ) -> pd.DataFrame:
    """Prepared rows with the features of each offline joined set, as of each row's time."""
    added: dict[str, Any] = {}
    t_ms = rows[_T].to_numpy(np.int64)
    for joined in plan.offline:
        rule = joined.rule
        found_rows = features.get(rule.name)
        if found_rows is None:  # no row of this set in the shard
            none = np.zeros(0, dtype=np.int64)
            found_rows = pd.DataFrame({_KEY: rows[_KEY].iloc[:0], _END: none, _EXPIRES: none,
                                       **{c: [] for c in rule.features}})
        codes = pd.factorize(pd.concat([found_rows[_KEY], rows[_KEY]], ignore_index=True))[0]
        row_codes, codes = codes[: len(found_rows)], codes[len(found_rows):]
        ends = found_rows[_END].to_numpy(np.int64)
        found = latest_at_or_before(row_codes, ends, codes, t_ms)
        current, expired = rule.judge(ends, found_rows[_EXPIRES].to_numpy(np.int64), found, t_ms)
        added.update(rule.answers(found_rows, found, current, expired))
    return pd.concat([rows, pd.DataFrame(added)], axis=1)


def finish(frame: pd.DataFrame, plan: DatasetPlan) -> pd.DataFrame:
    """The output columns: the labelled rows' as they came, the added ones typed."""
    added = [f for j in plan.joined for f in j.fields]
    typed = typed_frame(frame[[name for name, _ in added]], added)
    return pd.concat([frame[list(plan.row_fields)].reset_index(drop=True), typed], axis=1)


def add_online(frame: pd.DataFrame, plan: DatasetPlan, stores: Mapping[str, Any]
               ) -> tuple[pd.DataFrame, list]:
    """Prepared rows with each online set's features read from its store as of each row's
    time; rows an online store cannot answer go to ``errors``."""
    reasons = pd.Series([None] * len(frame), dtype=object)
    t_ms = frame[_T].to_numpy(np.int64)
    codes, texts = pd.factorize(frame[_KEY])
    firsts = pd.Series(np.arange(len(frame))).groupby(codes).first().to_numpy()
    for joined in plan.online:
        rule = joined.rule
        entities = frame[list(plan.entity)].take(firsts).to_numpy(dtype=object)
        unique = [entity_key(dict(zip(rule.entity, values, strict=True)))
                  for values in entities]
        keys = [unique[c] for c in codes]
        answers = rule.from_stored(stores[rule.name].read(unique), keys, t_ms)
        frame = frame.assign(**answers.columns)
        for i in np.flatnonzero(~answers.answerable):
            if reasons[i] is None:  # the first set that cannot answer says why
                reasons[i] = (f"{rule.name}: the online store keeps this entity's rows from "
                              f"{_iso(answers.kept_from_ms[i])} on, not enough to answer as of "
                              f"{_iso(t_ms[i])}")
    bad = reasons.notna().to_numpy()
    errors = error_rows(frame.loc[bad, list(plan.row_fields)], reasons[bad], plan.name) \
        if bad.any() else []
    return frame[~bad].reset_index(drop=True), errors


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _iso(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return stamp.isoformat().replace("+00:00", "Z")


def _tagged(tag: str, value: Any) -> tuple[str, Any]:
    return (tag, value)


# ---------------------------------------------------------------- DoFns


class _Gathered(FrameDoFn):
    """Prepares frames of an input, and at the end of each bundle splits what it gathered by
    shard, each part :class:`Packed` for the shuffle: few large elements rather than one
    per frame and shard."""

    def __init__(self, columns: Sequence[str], plan: DatasetPlan, name: str):
        super().__init__(columns)
        self._plan, self._name = plan, name
        self._gathered: dict[Any, list[pd.DataFrame]] = {}

    def start_bundle(self) -> None:
        super().start_bundle()
        self._gathered = {}

    def gather(self, frame: pd.DataFrame, window: Any) -> None:
        if len(frame):
            self._gathered.setdefault(window, []).append(frame)

    def keyed(self, shard: int, packed: Packed) -> Any:
        return shard, (self._name, packed)

    def finish_frames(self):
        for window, frames in self._gathered.items():
            for shard, part in Packed.by_shard(_concat(frames), self._plan.shards):
                yield self.keyed(shard, part), window
        self._gathered = {}


class _KeyRows(_Gathered):
    """Frames of labelled rows -> ``('rows', (shard, ('rows', Packed)))`` (or, with no set to
    shuffle, ``('frames', (tag, prepared frame))``) and ``('errors', row)``."""

    def __init__(self, plan: DatasetPlan):
        super().__init__(list(plan.row_fields), plan, ROWS_INPUT)

    def keyed(self, shard, packed):
        return _tagged("rows", super().keyed(shard, packed))

    def process_frame(self, frame, window):
        good, errors = prepare_rows(frame, self._plan)
        for row in errors:
            yield _tagged("errors", row)
        if self._plan.offline:
            self.gather(good, window)
        elif len(good):  # no set to shuffle: straight to the online stores
            yield _tagged("frames", ("rows", good))


class _KeyFeatures(_Gathered):
    """Frames of one joined set's FEATURES rows -> ``(shard, (set name, Packed))``."""

    def __init__(self, joined: JoinedSet, columns: Sequence[str], plan: DatasetPlan):
        super().__init__(columns, plan, joined.rule.name)
        self._joined = joined

    def process_frame(self, frame, window):
        self.gather(prepare_features(frame, self._joined, self._plan.int_keys), window)
        return ()


class _JoinShard(beam.DoFn):
    """``(shard, [(input name, Packed frame or row)])`` -> ``('frames', (tag, joined frame))``
    and ``('errors', row)``. Rows (not frames) are those of runners without batched DoFns:
    they are made frames and prepared here."""

    def __init__(self, plan: DatasetPlan, columns: Mapping[str, Sequence[str]]):
        self._plan, self._columns = plan, columns

    def process(self, element):
        shard, values = element
        parts: dict[str, list[Any]] = {}
        for name, value in values:
            parts.setdefault(name, []).append(value)
        rows = parts.pop(ROWS_INPUT, [])
        if not rows:
            return
        if not isinstance(rows[0], Packed):  # rows shuffled one by one
            prepared, errors = prepare_rows(rows_to_frame(rows, self._columns[ROWS_INPUT]),
                                            self._plan)
            for row in errors:
                yield _tagged("errors", row)
            sets = {j.rule.name: j for j in self._plan.offline}
            parts = {name: [prepare_features(rows_to_frame(r, self._columns[name]), sets[name],
                                             self._plan.int_keys)] for name, r in parts.items()}
        else:
            prepared = _concat([r.frame() for r in rows])
            parts = {name: [p.frame() for p in packed] for name, packed in parts.items()}
        features = {name: _concat(frames) for name, frames in parts.items()}
        joined = join(prepared, features, self._plan)
        if len(joined):
            yield _tagged("frames", (f"{shard:05d}",
                                     joined if self._plan.online else finish(joined, self._plan)))


class _ReadOnline(beam.DoFn):
    """``(tag, prepared frame)`` -> ``('frames', (tag, output frame))`` and ``('errors', row)``:
    the online sets' features read from their stores."""

    def __init__(self, plan: DatasetPlan):
        self._plan = plan

    def setup(self):
        self._stores = {j.rule.name: read_online(j.online, j.rule.name) for j in self._plan.online}

    def process(self, element):
        tag, frame = element
        found, errors = add_online(frame, self._plan, self._stores)
        for row in errors:
            yield _tagged("errors", row)
        if len(found):
            yield _tagged("frames", (tag, finish(found, self._plan)))

    def teardown(self):
        for store in getattr(self, "_stores", {}).values():
            store.close()


# ---------------------------------------------------------------- the transform


class BuildDataset(SpecTransform):
    """Labelled rows joined with FEATURES outputs as of each row's time (a DATASET statement).

    Built from a :class:`~beam_dsl.ir.dataset.DatasetConfig` (docs/IR.md,
    "DATASET"); the module docstring and docs/DATASET.md have the contract.
    Outputs: ``main`` and ``errors``.
    """

    config_class = DatasetConfig
    config: DatasetConfig

    def expand(self, inputs: Any) -> dict[str, beam.PCollection]:
        pcolls = dict(inputs) if isinstance(inputs, Mapping) else {ROWS_INPUT: inputs}
        plan, columns = self._plan(pcolls)
        rows = pcolls[ROWS_INPUT]
        if plan.offline and not all(p.is_bounded for p in pcolls.values()):
            raise self.config.error(E_DATASET, "a streaming DATASET reads its feature sets from "
                                    "their ONLINE stores; it cannot join unbounded inputs",
                                    "give only the rows as input")
        frames, errors = by_runner(
            rows,
            batched=lambda: _batched(pcolls, plan, columns),
            portable=lambda: _portable(pcolls, plan, columns),
        )
        if plan.online:
            read = frames | "ReadOnline" >> beam.ParDo(_ReadOnline(plan))
            frames = select(read, "frames", "OnlineFrames")
            errors.append(select(read, "errors", "OnlineErrors"))
        main = frame_output(rows, frames, row_type(plan.output_fields()), "Rows")
        bad = tuple(errors) | "Errors" >> beam.Flatten()
        bad.element_type = ERROR_ROW_TYPE
        return {"main": main, "errors": bad}

    def _plan(self, pcolls: dict[str, beam.PCollection]
              ) -> tuple[DatasetPlan, dict[str, list[str]]]:
        """The plan over the inputs' schemas; E446 for inputs that do not fit the statement."""
        config = self.config
        if ROWS_INPUT not in pcolls:
            raise config.error(E_DATASET, f"DATASET needs an input '{ROWS_INPUT}' (the labelled "
                               f"rows); it has {sorted(pcolls)}",
                               f"input: {{{ROWS_INPUT}: ..., {', '.join(config.features)}: ...}}")
        for name in pcolls:
            if name != ROWS_INPUT and name not in config.features:
                raise config.error(E_DATASET, f"input '{name}' is neither '{ROWS_INPUT}' nor a "
                                   "joined FEATURES", did_you_mean(name, config.features))
        row_fields = self._fields(pcolls[ROWS_INPUT], ROWS_INPUT,
                                  [*config.entity, config.as_of])
        columns = {ROWS_INPUT: list(row_fields)}
        fields_of: dict[str, dict[str, Any]] = {}
        joined = []
        for name, features in config.features.items():
            rule = AsOf.of(features)
            if name in pcolls:
                needed = [*rule.entity, "window_end", *rule.features]
                if rule.ttl_ms is not None:
                    needed.append(EXPIRES_COLUMN)
                fields = self._fields(pcolls[name], name, needed)
                columns[name] = list(fields)
                fields_of[name] = fields
                types = {c: fields[c] for c in rule.features}
                online = None
            elif features.online:
                store = read_online(features.online, name)
                try:
                    types = {c: type_hint(t) for c, t in store.feature_set().fields}
                finally:
                    store.close()
                online = features.online
            else:
                raise config.error(E_DATASET, f"FEATURES {name} has no input '{name}' and no "
                                   "ONLINE store to read", f"give its rows as input '{name}'")
            out = [(c, optional(types[c])) for c in rule.features]
            if rule.marker is not None:
                out.append((rule.marker, bool))
            for column, _ in out:
                if column in row_fields:
                    raise config.error(E_DATASET, f"column '{column}' of {name} clashes with a "
                                       "column of the labelled rows", "rename it with AS")
            joined.append(JoinedSet(rule, tuple(out), online))
        integer = [row_fields[config.entity[0]]] + [
            fields_of[j.rule.name][j.rule.entity[0]] for j in joined if j.online is None]
        int_keys = len(config.entity) == 1 and all(base_type(t) is int for t in integer)
        plan = DatasetPlan(config.name, tuple(config.entity), config.as_of, row_fields,
                           tuple(joined), config.shards, int_keys)
        return plan, columns

    def _fields(self, pcoll: beam.PCollection, name: str, needed: Sequence[str]
                ) -> dict[str, Any]:
        fields = schema_fields(pcoll.element_type)
        if fields is None:
            raise self.config.error(E_DATASET, f"input '{name}' needs rows with a schema; it "
                                    f"has type {pcoll.element_type}")
        for column in needed:
            if column not in fields:
                raise self.config.error(E_DATASET, f"input '{name}' has no column '{column}'",
                                        did_you_mean(column, fields))
        return fields


# Each way of placing the join: inputs -> (frames tagged with a part name, [error rows]).


def _joined(streams: list[beam.PCollection], plan: DatasetPlan,
            columns: Mapping[str, Sequence[str]]) -> beam.PCollection:
    """Keyed rows of every input -> one GroupByKey on the shard -> the join."""
    return (
        tuple(streams)
        | "Together" >> beam.Flatten()
        | "Shuffle" >> beam.GroupByKey()
        | "Join" >> beam.ParDo(_JoinShard(plan, columns))
    )


def _batched(pcolls: Mapping[str, beam.PCollection], plan: DatasetPlan,
             columns: Mapping[str, Sequence[str]]) -> tuple[Any, list]:
    """Runners with batched DoFns: frames prepared and split by shard before the shuffle (no
    shuffle at all when every set is read online)."""
    keyed = pcolls[ROWS_INPUT] | "KeyRows" >> beam.ParDo(_KeyRows(plan))
    errors = [select(keyed, "errors", "RowErrors")]
    if not plan.offline:
        return select(keyed, "frames", "Frames"), errors
    streams = [select(keyed, "rows", "RowParts")]
    for joined in plan.offline:
        name = joined.rule.name
        streams.append(pcolls[name] | f"Key {name}" >> beam.ParDo(
            _KeyFeatures(joined, columns[name], plan)))
    staged = _joined(streams, plan, columns)
    return select(staged, "frames", "Frames"), [*errors, select(staged, "errors", "JoinErrors")]


def _portable(pcolls: Mapping[str, beam.PCollection], plan: DatasetPlan,
              columns: Mapping[str, Sequence[str]]) -> tuple[Any, list]:
    """Other runners: rows shuffled by shard one by one, made frames after the shuffle."""
    streams = [pcolls[ROWS_INPUT] | "KeyRows" >> beam.Map(
        _shard_row, plan.entity, plan.shards, ROWS_INPUT)]
    for joined in plan.offline:
        name = joined.rule.name
        streams.append(pcolls[name] | f"Key {name}" >> beam.Map(
            _shard_row, joined.rule.entity, plan.shards, name))
    staged = _joined(streams, plan, columns)
    return select(staged, "frames", "Frames"), [select(staged, "errors", "JoinErrors")]


def _shard_row(row: Any, entity: Sequence[str], shards: int, name: str) -> tuple[int, Any]:
    """``(shard, (input name, row))``: the shard from the entity's text (a row with a null
    entity goes to shard 0, where a labelled one becomes an error)."""
    record = row._asdict() if hasattr(row, "_asdict") else dict(row)
    values = [record.get(c) for c in entity]
    if any(v is None or (isinstance(v, float) and v != v) for v in values):
        return 0, (name, row)
    text = "\x1f".join(key_text(v) for v in values)
    return zlib.crc32(text.encode()) % shards, (name, row)
