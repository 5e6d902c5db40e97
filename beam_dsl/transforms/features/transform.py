"""FEATURES as a Beam transform: windowed aggregates per entity, online and offline stores.

The plan (``panes.py``) is placed in the pipeline in one of three ways; all
give the same rows:

* Batch, on runners with Beam's batched DoFns (the in-process FnApiRunner,
  portable runners): frames of rows (Beam batches, or rows buffered into
  frames) are pre-aggregated into panes per (entity, pane) with pandas, the
  panes go through one GroupByKey on a hash shard of the entity, and each
  shard's panes merge and roll up into windows. The window rows leave as Beam
  batches (pandas frames), so a batched consumer takes them whole.
* Batch, on other runners (Beam's DaskRunner, the BundleBasedDirectRunner):
  rows go through the GroupByKey on the shard themselves and become frames
  after it; no finish_bundle outputs, no multi-output DoFns, no runner
  windowing, which those runners drop or mishandle.
* Streaming (an unbounded input): a stateful DoFn per entity keeps the
  events its open windows need and, on an event-time timer, emits each row
  once the watermark passes ``window_end + ALLOWED LATENESS``, computed by the
  same plan over the kept events. An event that arrives after a row it belongs
  to was emitted is late: it goes to ``errors``.

Outputs: ``main`` (the rows), ``errors`` (unusable or late rows), and with
ONLINE / OFFLINE, ``online`` / ``offline`` (a row per store write: target,
rows).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from beam_dsl.ir.features import E_COLUMN, FeaturesConfig
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    FrameDoFn,
    error_rows,
    json_records,
    row_type,
    rows_to_frame,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import by_runner, select
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.features.asof import AsOf, ms_of
from beam_dsl.transforms.features.keys import entity_key
from beam_dsl.transforms.features.offline import arrow_schema, write_offline
from beam_dsl.transforms.features.panes import (
    FeaturePlan,
    Panes,
    entity_texts,
    merge,
    panes_of,
    prepare,
    window_rows,
)
from beam_dsl.transforms.features.stores import EntityRows, FeatureSet, open_online, type_name

# Each store write reports what it wrote: the store (URI or file) and the rows.
STORE_ROW_TYPE = row_type([("target", str), ("rows", int)])


def _tagged(tag: str, value: Any) -> tuple[str, Any]:
    return (tag, value)


# ---------------------------------------------------------------- batch


class _PaneStates(FrameDoFn):
    """Frames of rows -> ``('panes', (shard, Panes))`` and ``('errors', row)``."""

    def __init__(self, plan: FeaturePlan, shards: int):
        super().__init__(plan.columns)
        self._plan = plan
        self._shards = shards

    def process_frame(self, frame, window):
        events, rejected, reasons = prepare(frame, self._plan)
        for row in error_rows(rejected, reasons, self._plan.name):
            yield _tagged("errors", row)
        if len(events.ms) == 0:
            return
        panes = panes_of(events, self._plan)
        shard = self._shard(panes.wide)
        long_shards = {i: self._shard(f) for i, f in panes.long.items()}
        for s in np.unique(shard):
            part = Panes(
                panes.wide[shard == s],
                {i: f[long_shards[i] == s] for i, f in panes.long.items()},
            )
            yield _tagged("panes", (int(s), part))

    def _shard(self, frame: pd.DataFrame) -> np.ndarray:
        hashes = pd.util.hash_pandas_object(frame[self._plan.entity], index=False)
        return (hashes.to_numpy() % np.uint64(self._shards)).astype(np.int64)


class _Rollup(beam.DoFn):
    """``(shard, [Panes])`` -> ``(part tag, window rows)``."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan

    def process(self, element):
        shard, parts = element
        merged = merge(list(parts), self._plan, [*self._plan.entity, "_pane"])
        rows = window_rows(merged, self._plan)
        if len(rows):
            yield (f"{shard:05d}", rows)


class _ShardWindows(beam.DoFn):
    """``(shard, [rows])`` -> ``('frames', (part tag, window rows))`` and ``('errors', row)``."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan

    def process(self, element):
        shard, rows = element
        frame = rows_to_frame(list(rows), self._plan.columns)
        events, rejected, reasons = prepare(frame, self._plan)
        for row in error_rows(rejected, reasons, self._plan.name):
            yield _tagged("errors", row)
        if len(events.ms):
            out = window_rows(panes_of(events, self._plan), self._plan)
            yield _tagged("frames", (f"{shard:05d}", out))


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row) if isinstance(row, Mapping) else row._asdict()


def _key_of(row: Mapping[str, Any], entity: Sequence[str]) -> str:
    return entity_key({c: row[c] for c in entity})


# ---------------------------------------------------------------- streaming


class _KeyEvents(beam.DoFn):
    """A row -> ``('events', (entity key, (event ms, row)))``, ``('errors', row)``, or nothing
    (WHERE is false)."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan

    def process(self, row):
        frame = rows_to_frame([row], self._plan.columns)
        events, rejected, reasons = prepare(frame, self._plan)
        if reasons:
            yield _tagged("errors", error_rows(rejected, reasons, self._plan.name)[0])
        elif len(events.ms):
            record = _row_dict(row)
            yield _tagged("events", (_key_of(record, self._plan.entity),
                                     (int(events.ms[0]), record)))


_EVENTS = BagStateSpec("events", PickleCoder())
_CLOSED = ReadModifyWriteStateSpec("closed", PickleCoder())
_DUE = ReadModifyWriteStateSpec("due", PickleCoder())
_TIMER = TimerSpec("timer", TimeDomain.WATERMARK)
_EVENTS_STATE = beam.DoFn.StateParam(_EVENTS)
_CLOSED_STATE = beam.DoFn.StateParam(_CLOSED)
_DUE_STATE = beam.DoFn.StateParam(_DUE)
_TIMER_PARAM = beam.DoFn.TimerParam(_TIMER)


class _StreamWindows(beam.DoFn):
    """Per entity: keeps events, emits each row once ``window_end + lateness`` is behind the
    watermark. ``closed`` is how far rows are final: for sliding windows every row ending at or
    before it was emitted; for sessions, the end of the last emitted session."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan

    def _late(self, ms: int, closed: int | None) -> bool:
        if closed is None:
            return False
        if self._plan.windows.kind == "session":
            return ms < closed
        return self._plan.windows.first_end_ms(ms) <= closed

    def _arm(self, due_ms: int, due_state, timer) -> None:
        pending = due_state.read()
        if pending is None or due_ms < pending:
            timer.set(Timestamp(micros=due_ms * 1000))
            due_state.write(due_ms)

    def process(
        self,
        element,
        events=_EVENTS_STATE,
        closed=_CLOSED_STATE,
        due=_DUE_STATE,
        timer=_TIMER_PARAM,
    ):
        _, (ms, row) = element
        if self._late(ms, closed.read()):
            frame = rows_to_frame([row], self._plan.columns)
            reason = (f"late event: its window was emitted when the watermark passed its end "
                      f"plus the allowed lateness ({self._plan.lateness_ms / 1000:g}s)")
            yield _tagged("errors", error_rows(frame, [reason], self._plan.name)[0])
            return
        events.add((ms, row))
        self._arm(self._plan.windows.first_end_ms(ms) + self._plan.lateness_ms, due, timer)

    @on_timer(_TIMER)
    def fire(
        self,
        key=beam.DoFn.KeyParam,
        now=beam.DoFn.TimestampParam,
        events=_EVENTS_STATE,
        closed=_CLOSED_STATE,
        due=_DUE_STATE,
        timer=_TIMER_PARAM,
    ):
        plan, windows = self._plan, self._plan.windows
        horizon = now.micros // 1000 - plan.lateness_ms  # rows ending by here are final
        done = closed.read()
        kept = sorted(events.read(), key=lambda e: e[0])
        due.clear()
        frame = rows_to_frame([r for _, r in kept], plan.columns)
        found, _, _ = prepare(frame, plan)
        rows = window_rows(panes_of(found, plan), plan)
        ends = np.rint(rows["window_end"].to_numpy() * 1000).astype(np.int64)
        ready = ends <= horizon
        if done is not None:
            ready &= ends > done
        if ready.any():
            yield _tagged("frames", (f"{zlib.crc32(key.encode()):08x}-{horizon}", rows[ready]))
        starts = np.rint(rows["window_start"].to_numpy() * 1000).astype(np.int64)
        if windows.kind == "session":
            emitted = ends[ready]
            closed.write(max([done or 0, *emitted.tolist()]) if len(emitted) else done)
            waiting = ~ready & (ends > (done or 0))
            keep_from = int(starts[waiting].min()) if waiting.any() else None
            next_due = int(ends[waiting].min()) if waiting.any() else None
        else:
            closed.write(horizon)
            keep_from = horizon - windows.longest.size_ms
            next_due = windows.first_end_ms(max(kept[0][0], horizon)) if kept else None
        events.clear()
        left = [e for e in kept if keep_from is not None and e[0] >= keep_from]
        for event in left:
            events.add(event)
        if left and next_due is not None:
            self._arm(max(next_due, windows.first_end_ms(left[0][0])) + plan.lateness_ms,
                      due, timer)


# ---------------------------------------------------------------- outputs


def _read_lists_once() -> None:
    """Beam 2.77 hands a batch to a consumer of another batch type as
    ``consumer_converter.produce_batch(producer_converter.explode_batch(batch))``: the
    exploded rows are a generator, and the pyarrow converter reads its argument once per
    column, so every column but the first comes out empty (``ArrowInvalid: Column 1 named
    window_start expected length N but got length 0``): ComputeFeatures' pandas batches into
    WriteToParquet (or any Arrow-batch consumer) crashed. The pyarrow converter is made to
    read the rows into a list first, as the pandas one does."""
    from apache_beam.typehints.arrow_type_compatibility import PyarrowBatchConverter

    produce = PyarrowBatchConverter.produce_batch
    if getattr(produce, "reads_once", False):
        return

    def produce_batch(self, elements):
        return produce(self, elements if isinstance(elements, list) else list(elements))

    produce_batch.reads_once = True
    PyarrowBatchConverter.produce_batch = produce_batch


_read_lists_once()


class _FrameBatches(beam.DoFn):
    """Frames -> Beam batches of the output schema (no per-row work)."""

    def __init__(self, output_type: Any):
        self._type = output_type

    def infer_output_type(self, input_type):
        return self._type

    def get_output_batch_type(self, input_element_type):
        return pd.DataFrame

    @beam.DoFn.yields_batches
    def process(self, element) -> Iterator[pd.DataFrame]:
        yield element[1]


class _FrameRows(beam.DoFn):
    """Frames -> ``beam.Row`` s (for runners without batched DoFns)."""

    def process(self, element):
        for record in json_records(element[1]):
            yield beam.Row(**record)


def frame_output(pcoll: beam.PCollection, frames: beam.PCollection, output_type: Any,
                 label: str) -> beam.PCollection:
    """``(tag, frame)`` pairs -> rows of ``output_type``: Beam batches where the runner runs
    them, else ``beam.Row`` s."""
    return frames | label >> by_runner(
        pcoll,
        batched=lambda: beam.ParDo(_FrameBatches(output_type)),
        portable=lambda: beam.ParDo(_FrameRows()).with_output_types(output_type),
    )


def entity_tails(frame: pd.DataFrame, rule: AsOf) -> list[EntityRows]:
    """The rows of a frame the online store keeps (:meth:`AsOf.kept`), per entity."""
    if not len(frame):
        return []
    codes = pd.factorize(entity_texts(frame, rule.entity))[0].astype(np.int64)
    ends = ms_of(frame["window_end"])
    keep = rule.kept(codes, ends)
    order = np.lexsort((ends[keep], codes[keep]))
    records = json_records(frame[keep].iloc[order])
    owners = codes[keep][order]
    out: list[EntityRows] = []
    for i, record in enumerate(records):
        if i == 0 or owners[i] != owners[i - 1]:
            out.append(EntityRows(entity_key({c: record[c] for c in rule.entity}), []))
        out[-1].rows.append(record)
    return out


class _WriteOnline(beam.DoFn):
    """Merges the rows each entity's as-of answers need into the online store."""

    def __init__(self, uri: str, definition: FeatureSet):
        self._uri, self._definition = uri, definition

    def setup(self):
        self._rule = AsOf.of(self._definition.config)
        self._store = open_online(self._uri, self._definition)

    def process(self, element):
        written = self._store.write(entity_tails(element[1], self._rule), self._rule.longest_ms)
        yield beam.Row(target=self._uri, rows=written)

    def teardown(self):
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()


class _WriteOffline(beam.DoFn):
    """Writes each frame of window rows as a Parquet part file."""

    def __init__(self, path: str, fields: Sequence[tuple[str, Any]]):
        self._path, self._fields = path, list(fields)

    def process(self, element):
        tag, frame = element
        written = write_offline(frame, self._path, tag, arrow_schema(self._fields))
        yield beam.Row(target=written, rows=len(frame))


# ---------------------------------------------------------------- the transform


class ComputeFeatures(SpecTransform):
    """Windowed aggregate features per entity (a FEATURES statement).

    For each entity and window holding at least one event that passes
    ``where``, one row: the entity columns, ``window_start`` and
    ``window_end`` (epoch seconds, float; windows are half-open and aligned
    to the Unix epoch), ``expires_at`` (with a TTL: the latest event in the
    window plus the TTL, epoch seconds) and each feature. docs/FEATURES.md
    has the full semantics.

    Built from a :class:`~beam_dsl.ir.features.FeaturesConfig` (docs/IR.md,
    "FEATURES"): Beam YAML passes its fields as keyword arguments, Python
    uses :meth:`from_config`. ``shards`` (a run-time option) is how many keys
    the entities are hashed to for the shuffle.
    """

    config_class = FeaturesConfig
    config: FeaturesConfig

    def expand(self, pcoll: beam.PCollection) -> dict[str, beam.PCollection]:
        config = self.config
        fields = schema_fields(pcoll.element_type)
        if fields is None:
            raise config.error(E_COLUMN, "FEATURES needs rows with a schema; its input "
                               f"has type {pcoll.element_type}")
        plan = FeaturePlan.build(config, fields)
        if not pcoll.is_bounded:
            frames, errors = _streamed(pcoll, plan)
        else:
            frames, errors = by_runner(
                pcoll,
                batched=lambda: _batched(pcoll, plan, config.shards),
                portable=lambda: _portable(pcoll, plan, config.shards),
            )
        columns = plan.output_fields()
        main = frame_output(pcoll, frames, row_type(columns), "Rows")
        errors.element_type = ERROR_ROW_TYPE
        outputs = {"main": main, "errors": errors}
        if config.online:
            definition = FeatureSet(config, tuple((n, type_name(t)) for n, t in columns))
            outputs["online"] = frames | "Online" >> beam.ParDo(
                _WriteOnline(config.online, definition)).with_output_types(STORE_ROW_TYPE)
        if config.offline:
            outputs["offline"] = frames | "Offline" >> beam.ParDo(
                _WriteOffline(config.offline, columns)).with_output_types(STORE_ROW_TYPE)
        return outputs


# Each way of placing the plan: input rows -> (frames of window rows tagged with a part name,
# error rows).


def _streamed(pcoll: beam.PCollection, plan: FeaturePlan) -> tuple[Any, Any]:
    """An unbounded input: a stateful DoFn per entity, rows emitted on event-time timers."""
    keyed = pcoll | "KeyEvents" >> beam.ParDo(_KeyEvents(plan))
    windowed = select(keyed, "events", "Events") | "Windows" >> beam.ParDo(_StreamWindows(plan))
    errors = (
        select(keyed, "errors", "BadRows"),
        select(windowed, "errors", "LateRows"),
    ) | "Errors" >> beam.Flatten()
    return select(windowed, "frames", "Frames"), errors


def _batched(pcoll: beam.PCollection, plan: FeaturePlan, shards: int) -> tuple[Any, Any]:
    """Runners with batched DoFns: panes per frame, shuffled by shard, rolled up into windows."""
    staged = pcoll | "Panes" >> beam.ParDo(_PaneStates(plan, shards))
    frames = (
        select(staged, "panes", "SelectPanes")
        | "Shuffle" >> beam.GroupByKey()
        | "Rollup" >> beam.ParDo(_Rollup(plan))
    )
    return frames, select(staged, "errors", "Errors")


def _portable(pcoll: beam.PCollection, plan: FeaturePlan, shards: int) -> tuple[Any, Any]:
    """Other runners: rows shuffled by shard, made frames and windows after the shuffle."""
    entity = plan.entity
    staged = (
        pcoll
        | "Shard" >> beam.Map(
            lambda row: (zlib.crc32(_key_of(_row_dict(row), entity).encode()) % shards, row))
        | "Shuffle" >> beam.GroupByKey()
        | "Windows" >> beam.ParDo(_ShardWindows(plan))
    )
    return select(staged, "frames", "Frames"), select(staged, "errors", "Errors")
