"""Feature stores: ONLINE (latest row per entity, SQLite or Redis) and OFFLINE (Parquet).

ONLINE keeps, per entity, the row with the latest ``window_end``. A write is
a compare-and-set upsert: it replaces the stored row only when its
``window_end`` is not older, so re-running a pipeline, or a late shard that
finishes after a newer one, never duplicates or regresses a value. The row
keeps its ``expires_at`` (TTL): readers treat a row past it as expired, and
:meth:`OnlineStore.purge_expired` deletes such rows.

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: one
  table per FEATURES name: ``entity_key`` (primary key), ``window_end``,
  ``expires_at``, ``features`` (the row as JSON).
* ``redis://host:port/db``: one hash per entity at
  ``beam_dsl:features:<name>:<entity_key>`` with the same fields; the
  compare-and-set is a Lua script, atomic in Redis.

The entity key is :func:`beam_dsl.transforms.features.panes.entity_key`: the entity
columns and their values as text, sorted by column name.

OFFLINE writes every window's row to ``<path>/part-<tag>.parquet`` (written
to a temporary name, then renamed), with a schema taken from the rows'
Beam schema, so every part file has the same columns and types.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from beam_dsl.diagnostics import config_error
from beam_dsl.ir.features import E_STORE, FeaturesConfig, online_store_problem
from beam_dsl.transforms.common.rows import base_type, row_type

# Each store write reports what it wrote: the store (URI or file) and the rows.
STORE_ROW_TYPE = row_type([("target", str), ("rows", int)])


@dataclass(frozen=True)
class StoreRecord:
    """One entity's latest row."""

    key: str
    window_end: float
    expires_at: float | None
    features: dict[str, Any]


class OnlineStore:
    """The latest features per entity."""

    def upsert(self, records: Sequence[StoreRecord]) -> int:
        """Writes each record unless a newer one (later window_end) is stored; returns writes."""
        raise NotImplementedError

    def get(self, key: str) -> StoreRecord | None:
        raise NotImplementedError

    def purge_expired(self, now: float) -> int:
        """Deletes the rows whose expires_at is at or before ``now``; returns how many."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteStore(OnlineStore):
    def __init__(self, path: str, table: str):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._table = _quoted(table)
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table} (entity_key TEXT PRIMARY KEY, "
            "window_end REAL NOT NULL, expires_at REAL, features TEXT NOT NULL)"
        )

    def upsert(self, records):
        before = self._db.total_changes
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                f"INSERT INTO {self._table} VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) "
                "DO UPDATE SET window_end = excluded.window_end, expires_at = "
                "excluded.expires_at, features = excluded.features "
                f"WHERE excluded.window_end >= {self._table}.window_end",
                [(r.key, r.window_end, r.expires_at, json.dumps(r.features, default=str))
                 for r in records],
            )
        return self._db.total_changes - before

    def get(self, key):
        found = self._db.execute(
            f"SELECT window_end, expires_at, features FROM {self._table} WHERE entity_key = ?",
            (key,),
        ).fetchone()
        if found is None:
            return None
        return StoreRecord(key, found[0], found[1], json.loads(found[2]))

    def purge_expired(self, now):
        with self._db:
            cursor = self._db.execute(
                f"DELETE FROM {self._table} WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )
        return cursor.rowcount

    def close(self):
        self._db.close()


# KEYS[1]: the entity's hash; ARGV: window_end, expires_at ('' for none), features JSON.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], 'window_end')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'window_end', ARGV[1], 'expires_at', ARGV[2], 'features', ARGV[3])
return 1
"""


class RedisStore(OnlineStore):
    def __init__(self, uri: str, table: str):
        import redis

        self._redis = redis.Redis.from_url(uri)
        self._prefix = f"beam_dsl:features:{table}:"
        self._script = self._redis.register_script(_COMPARE_AND_SET)

    def upsert(self, records):
        pipe = self._redis.pipeline(transaction=False)
        for r in records:
            self._script(
                keys=[self._prefix + r.key],
                args=[repr(r.window_end), "" if r.expires_at is None else repr(r.expires_at),
                      json.dumps(r.features, default=str)],
                client=pipe,
            )
        return sum(pipe.execute())

    def get(self, key):
        found = self._redis.hgetall(self._prefix + key)
        if not found:
            return None
        expires = found.get(b"expires_at", b"")
        return StoreRecord(key, float(found[b"window_end"]), float(expires) if expires else None,
                           json.loads(found[b"features"]))

    def purge_expired(self, now):
        removed = 0
        for name in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            expires = self._redis.hget(name, "expires_at")
            if expires and float(expires) <= now:
                removed += self._redis.delete(name)
        return removed

    def close(self):
        self._redis.close()


def open_online(uri: str, table: str) -> OnlineStore:
    """The online store at ``uri`` (see the module docstring), for the FEATURES ``table``;
    E442 for a URI that names none."""
    problem = online_store_problem(uri)
    if problem:
        raise config_error(FeaturesConfig.KIND, table, E_STORE, *problem)
    if urlparse(uri).scheme == "sqlite":
        # sqlite:///a.db -> "a.db" (relative); sqlite:////tmp/a.db -> "/tmp/a.db"
        return SQLiteStore(uri[len("sqlite:///"):], table)
    return RedisStore(uri, table)


# ---------------------------------------------------------------- offline


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
