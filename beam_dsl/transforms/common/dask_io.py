"""What beam_dsl needs to run Beam YAML correctly on Beam's DaskRunner.

Beam 2.77's DaskRunner computes only the last Dask bag of the pipeline
("connected to the full graph", its comment says), so a pipeline with several
sinks (main, errors, skipped) silently runs one of them:
:class:`AllSinksDaskRunner` computes every bag.

Beam 2.77's DaskRunner does not run batched DoFns (``process_batch``), and
Beam YAML's ReadFromCsv / WriteToJson / WriteToCsv are built on the DataFrame
API, which uses them: on Dask, ReadFromCsv yields whole DataFrames (twice) and
WriteToJson fails with NotImplementedError. WriteToParquet gathers rows into
tables in ``finish_bundle``, whose outputs Dask drops. ``beam_dsl run --runner
DaskRunner`` substitutes these transforms, which read with pandas and emit
schema'd rows with plain DoFns, and write a file per bundle. Output files are
JSON lines / CSV / Parquet like Beam's. (Beam YAML picks a provider for a
transform by affinity with its neighbours: a pipeline with Beam's
WriteToParquet also got Beam's ReadFromCsv, so every one of them is
substituted.)
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.dask.dask_runner import DaskRunner, DaskRunnerResult
from apache_beam.typehints.row_type import RowTypeConstraint

from beam_dsl.transforms.common.rows import as_type, is_missing


def _python_type(dtype: Any) -> type:
    if pd.api.types.is_bool_dtype(dtype):
        return bool
    if pd.api.types.is_integer_dtype(dtype):
        return int
    if pd.api.types.is_float_dtype(dtype):
        return float
    return str


# Beam's ReadFromCsv infers its schema from the first 100 rows of the first file.
_SAMPLE_ROWS = 100


def _schema(path: str, kwargs: dict) -> list[tuple[str, type]]:
    """Column types as Beam's ReadFromCsv infers them: from the first rows of the first file."""
    first = FileSystems.match([path])[0].metadata_list
    if not first:
        raise FileNotFoundError(f"no file matches '{path}'")
    with FileSystems.open(first[0].path) as f:
        sample = pd.read_csv(f, nrows=_SAMPLE_ROWS, **kwargs)
    return [(str(c), _python_type(t)) for c, t in sample.dtypes.items()]


def _value(value: Any, kind: type) -> Any:
    """``value`` as ``kind``; as it was where it is not one (Beam's reader passes such
    values on too, and beam_dsl's transforms send those rows to ``errors``)."""
    converted = as_type(value, kind)
    return value if converted is None and not is_missing(value) else converted


class ReadFromCsv(beam.PTransform):
    """Reads CSV files into schema'd rows with plain DoFns (runs on Dask).

    Args:
      path: a file path or glob.
      **kwargs: passed to pandas.read_csv.
    """

    def __init__(self, path: str, **kwargs: Any):
        super().__init__()
        self.path = path
        self.kwargs = kwargs

    def expand(self, pbegin):
        fields = _schema(self.path, self.kwargs)
        row_type = RowTypeConstraint.from_fields(fields)
        kwargs = self.kwargs

        def rows(readable: fileio.ReadableFile):
            with readable.open() as f:
                for chunk in pd.read_csv(f, chunksize=50_000, **kwargs):
                    # As in Beam's reader, a chunk where a numeric column holds text
                    # passes that column's values on as pandas read them (strings).
                    kinds = [
                        str if kind is not str and chunk[name].dtype == object else kind
                        for name, kind in fields
                    ]
                    columns = [chunk[name].tolist() for name, _ in fields]
                    for values in zip(*columns, strict=True):
                        yield beam.Row(
                            **{
                                name: _value(v, kind)
                                for (name, _), kind, v in zip(fields, kinds, values, strict=True)
                            }
                        )

        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self.path)
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> beam.FlatMap(rows).with_output_types(row_type)
        )


def _as_dict(row: Any) -> dict:
    return row._asdict() if hasattr(row, "_asdict") else dict(row)


class _WriteBundles(beam.DoFn):
    """Writes each bundle (a Dask partition) to its own file ``<prefix>-<uuid><suffix>``.

    Beam's file sinks finalise through side inputs that the DaskRunner
    recomputes, leaving empty outputs; one file per bundle needs none.
    """

    def __init__(self, prefix: str, suffix: str, header: str | None, encode):
        self.prefix, self.suffix, self.header, self.encode = prefix, suffix, header, encode

    def start_bundle(self):
        self.lines: list[str] = []

    def process(self, row):
        self.lines.append(self.encode(row))

    def finish_bundle(self):
        if not self.lines:
            return
        import os
        import uuid

        path = f"{self.prefix}-{uuid.uuid4().hex[:12]}{self.suffix}"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            if self.header:
                f.write(self.header + "\n")
            f.write("\n".join(self.lines) + "\n")


class _WriteFiles(beam.PTransform):
    """Rows to text files, a file per bundle; subclasses say how a row becomes a line."""

    suffix = ""

    def __init__(self, path: str, **kwargs: Any):
        super().__init__()
        self.path = path

    def header(self, element_type: Any) -> str | None:
        return None

    @staticmethod
    def encode(row: Any) -> str:
        raise NotImplementedError

    def expand(self, pcoll):
        write = _WriteBundles(self.path, self.suffix, self.header(pcoll.element_type), self.encode)
        _ = pcoll | "Write" >> beam.ParDo(write)
        return {}


class WriteToJson(_WriteFiles):
    """Writes rows as JSON lines, a file per bundle (runs on Dask).

    Args:
      path: the output prefix.
      **kwargs: accepted for compatibility with Beam YAML's WriteToJson; ignored.
    """

    suffix = ".json"

    @staticmethod
    def encode(row: Any) -> str:
        return json.dumps(_as_dict(row), default=str)


class WriteToCsv(_WriteFiles):
    """Writes rows as CSV with a header, a file per bundle (runs on Dask).

    Args:
      path: the output prefix.
      **kwargs: accepted for compatibility with Beam YAML's WriteToCsv; ignored.
    """

    suffix = ".csv"

    def header(self, element_type: Any) -> str | None:
        fields = getattr(element_type, "_fields", None) or ()
        return ",".join(name for name, _ in fields) or None

    @staticmethod
    def encode(row: Any) -> str:
        out = io.StringIO()
        csv.writer(out).writerow(_as_dict(row).values())
        return out.getvalue().rstrip("\r\n")


class _WriteParquetBundles(beam.DoFn):
    """Writes each bundle's rows to its own Parquet file ``<prefix>-<uuid>.parquet``."""

    def __init__(self, prefix: str, element_type: Any):
        self.prefix, self.element_type = prefix, element_type

    def setup(self):
        from apache_beam.typehints.arrow_type_compatibility import (
            arrow_schema_from_beam_schema,
        )
        from apache_beam.typehints.schemas import typing_to_runner_api

        self.schema = arrow_schema_from_beam_schema(
            typing_to_runner_api(self.element_type).row_type.schema
        )

    def start_bundle(self):
        self.rows: list[dict] = []

    def process(self, row):
        self.rows.append(_as_dict(row))

    def finish_bundle(self):
        if not self.rows:
            return
        import os
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        path = f"{self.prefix}-{uuid.uuid4().hex[:12]}.parquet"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), path)


class WriteToParquet(beam.PTransform):
    """Writes rows to Parquet, a file per bundle, with the rows' schema (runs on Dask).

    Args:
      path: the output prefix.
      **kwargs: accepted for compatibility with Beam YAML's WriteToParquet; ignored.
    """

    def __init__(self, path: str, **kwargs: Any):
        super().__init__()
        self.path = path

    def expand(self, pcoll):
        _ = pcoll | "Write" >> beam.ParDo(_WriteParquetBundles(self.path, pcoll.element_type))
        return {}


class AllSinksDaskRunner(DaskRunner):
    """Beam's DaskRunner, computing every branch of the pipeline rather than the last."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist
        from apache_beam.runners.dask.dask_runner import DaskOptions
        from apache_beam.runners.dask.overrides import dask_overrides

        dask_options = options.view_as(DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = self.to_dask_bag_visitor(bag_kwargs)
        pipeline.visit(visitor)
        bags = list(visitor.bags.values())
        return DaskRunnerResult(client, client.compute(bags))
