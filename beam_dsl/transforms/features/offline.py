"""OFFLINE feature store: every window's row as Parquet.

Each write is ``<path>/part-<tag>.parquet`` (written to a temporary name,
then renamed), with a schema taken from the rows' Beam schema
(:func:`arrow_schema`), so every part file has the same columns and types.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from beam_dsl.transforms.common.rows import base_type


def _arrow_type(hint: Any) -> pa.DataType:
    hint = base_type(hint)
    if hint is bool:
        return pa.bool_()
    if hint is int:
        return pa.int64()
    if hint is float:
        return pa.float64()
    if hint is str:
        return pa.string()
    inner = getattr(hint, "inner_type", None)  # Beam's Sequence[...] constraint
    if inner is not None:
        return pa.list_(_arrow_type(inner))
    return pa.string()


def arrow_schema(fields: Sequence[tuple[str, Any]]) -> pa.Schema:
    return pa.schema([(name, _arrow_type(hint)) for name, hint in fields])


def write_offline(frame, directory: str, tag: str, schema: pa.Schema) -> str:
    """Writes ``frame`` as ``<directory>/part-<tag>.parquet`` (atomically); returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"part-{tag}.parquet")
    temporary = os.path.join(directory, f".part-{tag}-{uuid.uuid4().hex}.tmp")
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return path
