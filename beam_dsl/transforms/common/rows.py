"""Rows <-> pandas frames, for transforms that work on whole batches of rows.

beam_dsl's transforms receive schema'd ``beam.Row`` PCollections (as Beam
YAML's ReadFromCsv makes them) and do their work column-wise on pandas
frames. :class:`FrameDoFn` is the one place where rows become frames:

* Where the producer emits Beam batches of ``pd.DataFrame`` (ReadFromCsv does:
  its reader yields one frame per chunk of the file), the frames pass
  straight into ``process_batch`` with no per-row work at all.
* Otherwise rows arrive one by one and are buffered, per window, into frames
  of up to ``max_rows`` rows.
* Runners without batch support (Beam's DaskRunner) hand the reader's frames
  over as plain elements; those are taken as frames too.

Subclasses implement :meth:`FrameDoFn.process_frame`; :class:`TaggedFrames`
(and :class:`PairedFrames`, for runners without batched DoFns) run a
transform's work that turns each frame into rows of several outputs. The
module also holds the helpers every transform needs around that: the input
schema (:func:`schema_fields`), frames back to Beam rows (:func:`row_maker`,
:func:`frame_rows`), JSON-able records of a frame (:func:`json_records`) and
the shared shape of ``errors`` rows (:func:`error_rows`).
"""

import functools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam import typehints
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.native_type_compatibility import convert_to_beam_type
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.typehints.schemas import named_fields_to_schema, named_tuple_from_schema
from apache_beam.utils.windowed_value import WindowedValue

DEFAULT_MAX_ROWS = 10_000

# Every beam_dsl transform's ``errors`` output has this shape: the input row
# as a JSON object, why it could not be used, and which transform said so.
ERROR_ROW_TYPE = RowTypeConstraint.from_fields(
    [("row", str), ("reason", str), ("transform", str)]
)


# ---------------------------------------------------------------- schemas and values


def base_type(hint: Any) -> Any:
    """The type of a schema field with ``Optional`` taken off (``Optional[str]`` -> ``str``)."""
    hint = convert_to_beam_type(hint)
    if isinstance(hint, typehints.typehints.UnionConstraint):
        members = [t for t in hint.union_types if t is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


def kind_of(hint: Any) -> str:
    """``'number'`` (ints, floats, bools, numpy numbers), ``'text'`` (str) or ``'other'``."""
    hint = base_type(hint)
    if isinstance(hint, type):
        if issubclass(hint, (bool, int, float, np.number, np.bool_)):
            return "number"
        if issubclass(hint, str):
            return "text"
    return "other"


def schema_fields(element_type: Any) -> dict[str, Any] | None:
    """The fields of a schema'd PCollection's element type, by name; None if it has no schema."""
    if element_type is None:
        return None
    row_type = (
        element_type
        if isinstance(element_type, RowTypeConstraint)
        else RowTypeConstraint.from_user_type(element_type)
    )
    if row_type is None:
        return None
    return dict(row_type._fields)


def row_type(fields: Sequence[tuple[str, Any]]) -> RowTypeConstraint:
    """A Beam schema (row type) from ``(name, python type)`` pairs."""
    return RowTypeConstraint.from_fields(list(fields))


def optional(hint: Any) -> Any:
    return Optional[hint]  # noqa: UP045 - typing.Optional is what Beam schemas read


def is_missing(raw: Any) -> bool:
    """None or a float NaN: how a reader gives an empty cell."""
    return raw is None or (isinstance(raw, float) and math.isnan(raw))


def as_type(raw: Any, to: type) -> Any:
    """``raw`` read as a value of ``to`` (str, int, float or bool), as a reader's text
    or numbers come; None where it is missing or cannot be one (``'unknown'`` as an
    int, ``3.5`` as an int). A parsed float may be NaN (``'nan'``)."""
    if is_missing(raw):
        return None
    if to is str:
        return str(raw)
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    if to is int:
        return int(number) if number.is_integer() else None
    return number != 0 if to is bool else number


def to_python(value: Any) -> Any:
    """A plain Python value for a cell: numpy scalars unwrapped, NaN/NA/NaT as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-able dicts."""
    columns = list(frame.columns)
    return [
        {c: to_python(v) for c, v in zip(columns, values, strict=True)}
        for values in frame.itertuples(index=False, name=None)
    ]


def error_rows(frame: pd.DataFrame, reasons: Iterable[str], transform: str) -> list[beam.Row]:
    """``errors`` rows for the rows of ``frame``, each with its reason."""
    return [
        beam.Row(row=json.dumps(record, default=str, sort_keys=True), reason=reason,
                 transform=transform)
        for record, reason in zip(json_records(frame), reasons, strict=True)
    ]


def rows_to_frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    """A frame of schema'd rows (``beam.Row``, NamedTuples or dicts); missing fields are null."""
    if rows and getattr(rows[0], "_fields", None) == tuple(columns):
        kind = type(rows[0])
        if all(type(r) is kind for r in rows):  # NamedTuples in schema order: no dicts needed
            return pd.DataFrame.from_records(rows, columns=list(columns))
    records = [r if isinstance(r, Mapping) else r._asdict() for r in rows]
    return pd.DataFrame.from_records(records, columns=list(columns))


RowMaker = Callable[[Sequence[Any]], Any]


def row_maker(fields: Sequence[tuple[str, Any]]) -> RowMaker:
    """Builds rows of this schema from value tuples.

    Beam's own NamedTuple for the schema (what its RowCoder decodes to, and
    picklable) is several times faster to build than ``beam.Row(**fields)``;
    field names that are not Python identifiers need ``beam.Row``.
    """
    try:
        return named_tuple_from_schema(named_fields_to_schema(list(fields)))._make
    except ValueError:
        names = [n for n, _ in fields]
        return lambda values: beam.Row(**dict(zip(names, values, strict=True)))


def row_values(series: pd.Series) -> list:
    """A column's values for Beam rows: None where a value is missing.

    Beam's frames hold nullable fields in pandas' extension types (``string``
    for ``Optional[str]``), whose missing value ``pd.NA`` Beam's RowCoder
    cannot encode: it fails on the first such row it encodes (every row at a
    fusion break, and the rows Beam samples to estimate sizes, at random).
    """
    if isinstance(series.dtype, np.dtype):
        return series.tolist()
    return series.to_numpy(dtype=object, na_value=None).tolist()


def frame_rows(frame: pd.DataFrame, columns: Sequence[str], make: RowMaker) -> Iterator[Any]:
    """The rows of ``frame``'s ``columns`` (in that order), built by ``make``."""
    return map(make, zip(*(row_values(frame[c]) for c in columns), strict=True))


@functools.cache
def _number_field(hint: Any) -> tuple[bool, bool, bool]:
    """(numeric, integer, nullable) for a schema field's type."""
    base = base_type(hint)
    numeric = kind_of(hint) == "number"
    integer = numeric and isinstance(base, type) and issubclass(base, (int, np.integer)) and (
        not issubclass(base, (bool, np.bool_))
    )
    return numeric, integer, convert_to_beam_type(hint) != base


def conform_to_schema(
    frame: pd.DataFrame, fields: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.Series]:
    """``frame`` with numeric fields typed as the schema says, and why rows cannot be.

    A reader's chunk can disagree with the schema inferred from a sample: one
    ``'unknown'`` in an int column turns that chunk's column to text, an empty
    cell makes it float. Transforms that pass input fields on must send such
    rows to ``errors`` (Beam cannot encode them). Returns the typed frame (the
    same frame where nothing needed typing) and, per row, the first problem
    (None where the row fits).
    """
    reasons = pd.Series(None, index=frame.index, dtype=object)
    typed = {}
    for name, hint in fields.items():
        numeric, integer, nullable = _number_field(hint)
        values = frame[name]
        if not numeric or values.dtype.kind in ("iu" if integer else "fiub"):
            continue
        missing = values.isna()
        parsed = pd.to_numeric(values.astype(object), errors="coerce").astype("float64")
        bad = ~missing & (parsed.isna() | (integer & (parsed != np.floor(parsed))))
        if not nullable:
            reasons = reasons.mask(reasons.isna() & missing, f"missing value for field '{name}'")
        shown = values.astype(str).map(repr)
        what = "an integer" if integer else "a number"
        reasons = reasons.mask(reasons.isna() & bad, f"field '{name}' is not {what}: " + shown)
        if integer:
            parsed = pd.Series(
                [None if pd.isna(v) else int(v) for v in parsed], index=frame.index, dtype=object
            )
        typed[name] = parsed
    if not typed:
        return frame, reasons
    out = frame.copy()
    for name, values in typed.items():
        out[name] = values
    return out, reasons


def slices(frame: pd.DataFrame, max_rows: int) -> list[pd.DataFrame]:
    """``frame`` in slices of at most ``max_rows`` rows, each indexed from 0 (a reader's
    frames can be larger than a model's BATCH maximum)."""
    return [frame.iloc[start : start + max_rows].reset_index(drop=True)
            for start in range(0, len(frame), max_rows)]


def fitting_rows(frame: pd.DataFrame, fields: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    """The rows of ``frame`` that fit the schema, typed (:func:`conform_to_schema`), and
    why each of the others does not (indexed as ``frame``)."""
    typed, reasons = conform_to_schema(frame, fields)
    unfit = reasons.dropna()
    return (typed.drop(index=unfit.index) if len(unfit) else typed), unfit


def windowed(value: Any, window: BoundedWindow) -> WindowedValue:
    """``value`` placed in ``window`` (for outputs emitted outside ``process``)."""
    if isinstance(value, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(value.tag, windowed(value.value, window))
    return WindowedValue(value, window.max_timestamp(), (window,))


# ---------------------------------------------------------------- the DoFn


class FrameDoFn(beam.DoFn):
    """A DoFn that sees its schema'd input as pandas frames, however the rows arrive.

    Subclasses implement :meth:`process_frame`, and may override
    :meth:`finish_frames` to emit what they gathered over a bundle. The
    input PCollection must have a schema (Beam's batched DoFns need one to
    convert between rows and frames).

    Args:
        columns: the input's field names, in schema order.
        max_rows: rows per frame when rows arrive one by one.
    """

    def __init__(self, columns: Sequence[str], max_rows: int = DEFAULT_MAX_ROWS):
        self._columns = list(columns)
        self._max_rows = max_rows
        self._buffers: dict[BoundedWindow, list[Any]] = defaultdict(list)

    def get_input_batch_type(self, input_element_type: Any) -> type:
        return pd.DataFrame

    def process_frame(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterable[Any]:
        """Outputs (values or TaggedOutputs) for one frame of rows, all in ``window``."""
        raise NotImplementedError

    def finish_frames(self) -> Iterable[tuple[Any, BoundedWindow]]:
        """Outputs at the end of a bundle, each with its window (default: none)."""
        return ()

    def start_bundle(self) -> None:
        self._buffers = defaultdict(list)

    def process(self, element, window=beam.DoFn.WindowParam):
        if isinstance(element, pd.DataFrame):  # a runner that passes batches as elements
            yield from self._frame_outputs(element, window)
            return
        buffer = self._buffers[window]
        buffer.append(element)
        if len(buffer) >= self._max_rows:
            yield from self._flush(window)

    @beam.DoFn.yields_elements
    def process_batch(self, batch, window=beam.DoFn.WindowParam):
        yield from self.process_frame(batch, window)

    def finish_bundle(self):
        for window in list(self._buffers):
            yield from self._flush(window)
        for value, window in self.finish_frames():
            yield windowed(value, window)

    def _flush(self, window: BoundedWindow) -> Iterator[Any]:
        rows = self._buffers.pop(window, [])
        if rows:
            yield from self._frame_outputs(rows_to_frame(rows, self._columns), window)

    def _frame_outputs(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterator[Any]:
        for value in self.process_frame(frame, window):
            yield windowed(value, window)


class AsFrames(FrameDoFn):
    """Rows -> frames of up to ``max_rows`` rows, as elements (a reader's frames pass
    through whole). A step that takes frames as elements follows it, rather than
    being a FrameDoFn itself: what a DoFn emits from ``finish_bundle`` (here, the
    rows gathered one by one) into a step that takes batches only (Beam's
    dataframe writers: WriteToJson, WriteToCsv) is never flushed to it in Beam
    2.77, as ``DoOperation.finish`` flushes the outputs before calling
    ``finish_bundle``; emitted into a step that takes elements, it is processed
    at once."""

    def process_frame(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterator[Any]:
        yield frame


class TaggedFrames(beam.DoFn):
    """Frames (:class:`AsFrames`) in, ``work``'s outputs out as tagged outputs.

    ``work`` holds a transform's work on frames: ``setup()``, ``teardown()``
    and ``outputs(frame, *side)``, which yields ``(tag, row)`` pairs (``side``:
    the values of the ParDo's side inputs); ``"main"`` rows go to the main
    output, the others to the output of their tag.
    """

    def __init__(self, work: Any):
        self.work = work

    def setup(self) -> None:
        self.work.setup()

    def teardown(self) -> None:
        self.work.teardown()

    def process(self, frame: pd.DataFrame, *side: Any) -> Iterator[Any]:
        for tag, row in self.work.outputs(frame, *side):
            yield row if tag == "main" else beam.pvalue.TaggedOutput(tag, row)


class PairedFrames(TaggedFrames):
    """:class:`TaggedFrames` for runners without tagged outputs (see
    ``runner_compat.runs_batches``): ``(tag, row)`` pairs out."""

    def process(self, frame: pd.DataFrame, *side: Any) -> Iterator[tuple[str, Any]]:
        yield from self.work.outputs(frame, *side)
