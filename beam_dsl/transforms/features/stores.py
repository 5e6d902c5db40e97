"""ONLINE feature stores: SQLite or Redis (OFFLINE, Parquet, is ``offline.py``).

ONLINE keeps, per entity, the FEATURES rows that an answer "as of T"
(``asof.py``) can need for any T at or after the entity's latest event: the
rows ending after its last window end minus the longest window, and the
latest row ending at or before that (:meth:`AsOf.kept`). Readers answer from
them with the same rule as DATASET, so ``features get --as-of T`` equals
DATASET's answer at T.

A write is a compare-and-set merge per entity: rows whose latest window end
is older than the stored rows' change nothing (a re-run over older events
cannot regress the store); otherwise they replace the stored rows ending at
or after their first window end, and the rows the rule no longer needs are
dropped. The same rule, in SQL or in a Lua script, runs inside the store, so
concurrent writers (shards, a stream's firings) merge correctly.

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a table
  per FEATURES name (``entity_key``, ``window_end``, ``expires_at``, ``row``:
  the row as JSON; primary key ``(entity_key, window_end)``) and the table
  ``beam_dsl_feature_sets`` (each set's definition: its config and column
  types). Writers use WAL mode (readers go on while they write) and leave the
  file in rollback mode when the last one closes, so that reading a store at
  rest creates no ``-wal`` / ``-shm`` files.
* ``redis://host:port/db``: a sorted set per entity at
  ``beam_dsl:features:<name>:<entity_key>`` (the rows as JSON, scored by
  ``window_end``) and the hash ``beam_dsl:feature_sets``.

The entity key is :func:`beam_dsl.transforms.features.keys.entity_key`.

Reading never creates anything: SQLite is opened read-only (``mode=ro``),
and a missing file, feature set or entity is E445 (with a "did you mean").
Faults are E444 with a bounded wait: a database locked by another process
(:data:`BUSY_TIMEOUT_S`), one that cannot be written, a Redis server that
refuses connections or does not answer (:data:`REDIS_TIMEOUT_S`).

Opening and reading a store imports no Beam, pyarrow or pandas (``features
get`` starts fast); :func:`type_name`, which writers use, imports Beam.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

from beam_dsl.diagnostics import DiagnosticError, config_error, did_you_mean
from beam_dsl.ir.features import E_STORE, FeaturesConfig, online_store_problem

E_FAULT = "E444"  # the store cannot be used: locked, read-only, unreachable, not a store
E_NOT_FOUND = "E445"  # a read finds no store, feature set or entity, or cannot answer at T

BUSY_TIMEOUT_S = 5.0  # how long SQLite waits for a lock another process holds
REDIS_TIMEOUT_S = 5.0  # how long Redis may take to connect, and to answer

_META_TABLE = "beam_dsl_feature_sets"
_META_KEY = "beam_dsl:feature_sets"
_COLUMNS = ["entity_key", "window_end", "expires_at", "row"]


@dataclass(frozen=True)
class FeatureSet:
    """What a store knows of a feature set: its FEATURES config and its rows' column types
    (``int``, ``float``, ``str``, ``bool``, ``list[...]``), in order."""

    config: FeaturesConfig
    fields: tuple[tuple[str, str], ...]

    def to_text(self) -> str:
        return json.dumps({"config": self.config.to_json(), "fields": self.fields})

    @classmethod
    def from_text(cls, text: str | bytes) -> FeatureSet:
        data = json.loads(text)
        return cls(FeaturesConfig.from_json(data["config"]),
                   tuple((name, kind) for name, kind in data["fields"]))


@dataclass(frozen=True)
class EntityRows:
    """An entity's rows to store (JSON-able FEATURES rows), ordered by ``window_end``."""

    key: str
    rows: list[dict[str, Any]]


class OnlineStore:
    """The rows of one feature set (``name``) an as-of answer needs, per entity; a store opened
    without a name only lists its feature sets."""

    def __init__(self, uri: str, name: str | None):
        self.uri, self.name = uri, name

    def error(self, code: str, message: str, hint: str | None = None) -> DiagnosticError:
        """A coded error about the feature set (or the store, opened without a name)."""
        if self.name is None:
            return config_error("ONLINE", self.uri, code, message, hint)
        return config_error(FeaturesConfig.KIND, self.name, code, message, hint)

    def write(self, entities: Sequence[EntityRows], longest_ms: int) -> int:
        """Merges each entity's rows (see the module docstring); returns the rows written."""
        raise NotImplementedError

    def read(self, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored rows of each key that has some, ordered by ``window_end``."""
        raise NotImplementedError

    def sample_keys(self, limit: int) -> list[str]:
        """Up to ``limit`` stored entity keys (for "did you mean")."""
        raise NotImplementedError

    def feature_sets(self) -> dict[str, FeatureSet]:
        """Every feature set written to this store, by name."""
        raise NotImplementedError

    def purge_expired(self, now: float) -> int:
        """Forgets the entities whose every answer from ``now`` on has expired (the latest
        row's ``expires_at`` is at or before it); returns how many. A purged entity then
        reads as one never seen."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def feature_set(self) -> FeatureSet:
        """This store's definition of ``name``; E445 if it holds no such feature set."""
        sets = self.feature_sets()
        if self.name not in sets:
            known = ", ".join(sorted(sets)) or "none"
            raise self.error(E_NOT_FOUND, f"the store {self.uri} has no feature set "
                             f"'{self.name}' (it has: {known})", did_you_mean(self.name, sets))
        return sets[self.name]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_text(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, sort_keys=True)


class SQLiteStore(OnlineStore):
    def __init__(self, uri: str, name: str | None, definition: FeatureSet | None):
        super().__init__(uri, name)
        self._path = uri[len("sqlite:///"):]  # sqlite:///a.db -> a.db; sqlite:////tmp/a -> /tmp/a
        self._table = _quoted(name or "")
        self._writes = definition is not None
        self._db: sqlite3.Connection | None = None
        try:
            with self._guard("open"):
                self._db = self._open_write(definition) if definition else self._open_read()
        except DiagnosticError:
            self.close()
            raise

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as e:
            text = str(e)
            if "locked" in text or "busy" in text:
                raise self.error(E_FAULT, f"the SQLite store {self._path} is locked by another "
                                 f"process: waited {BUSY_TIMEOUT_S:g} s to {doing} it",
                                 "let the other process finish, then run again") from None
            if "readonly" in text or "read-only" in text:
                raise self.error(E_FAULT, f"the SQLite store {self._path} is read-only: cannot "
                                 f"{doing} it", "give ONLINE a database file this process can "
                                 "write") from None
            raise self.error(E_FAULT, f"cannot {doing} the SQLite store {self._path}: {text}"
                             ) from None
        except (sqlite3.DatabaseError, OSError) as e:
            raise self.error(E_FAULT, f"cannot {doing} the SQLite store {self._path}: {e}"
                             ) from None

    def _open_read(self) -> sqlite3.Connection:
        if not os.path.isfile(self._path):
            raise self.error(E_NOT_FOUND, f"no feature store at {os.path.abspath(self._path)}",
                             "name the file a FEATURES ONLINE clause writes (relative paths "
                             "are relative to the directory the pipeline ran in)")
        location = quote(os.path.abspath(self._path))
        db = sqlite3.connect(f"file:{location}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                             isolation_level=None)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if _META_TABLE not in tables:
            db.close()
            raise self.error(E_NOT_FOUND, f"{self._path} is not a beam_dsl feature store (no "
                             f"table {_META_TABLE})")
        return db

    def _open_write(self, definition: FeatureSet) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (name TEXT PRIMARY KEY, "
                       "definition TEXT NOT NULL)")
            db.execute(f"CREATE TABLE IF NOT EXISTS {self._table} (entity_key TEXT NOT NULL, "
                       "window_end REAL NOT NULL, expires_at REAL, row TEXT NOT NULL, "
                       "PRIMARY KEY (entity_key, window_end)) WITHOUT ROWID")
            db.execute(f"INSERT INTO {_META_TABLE} VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                       "SET definition = excluded.definition", (self.name, definition.to_text()))
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({self._table})")]
        if columns != _COLUMNS:
            raise self.error(E_FAULT, f"table {self.name} of {self._path} has columns {columns}, "
                             f"not a beam_dsl feature table's {_COLUMNS}",
                             "delete the table (an older beam_dsl's layout?) or use another "
                             "database file")
        return db

    def write(self, entities, longest_ms):
        table = self._table
        with self._guard("write to"), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            stored: dict[str, float] = {}
            for chunk in _chunks([e.key for e in entities]):
                marks = ",".join("?" * len(chunk))
                stored.update(self._db.execute(
                    f"SELECT entity_key, max(window_end) FROM {table} WHERE entity_key IN "
                    f"({marks}) GROUP BY entity_key", list(chunk)).fetchall())
            fresh = [e for e in entities
                     if e.key not in stored or e.rows[-1]["window_end"] >= stored[e.key]]
            self._db.executemany(
                f"DELETE FROM {table} WHERE entity_key = ? AND window_end >= ?",
                [(e.key, e.rows[0]["window_end"]) for e in fresh])
            self._db.executemany(
                f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
                [(e.key, r["window_end"], r.get("expires_at"), _row_text(r))
                 for e in fresh for r in e.rows])
            self._db.executemany(
                f"DELETE FROM {table} WHERE entity_key = ?1 AND window_end < (SELECT "
                f"max(window_end) FROM {table} WHERE entity_key = ?1 AND window_end <= ?2)",
                [(e.key, _cut(e, longest_ms)) for e in fresh])
        return sum(len(e.rows) for e in fresh)

    def read(self, keys):
        out: dict[str, list[dict[str, Any]]] = {}
        with self._guard("read"):
            self.feature_set()
            for chunk in _chunks(list(keys)):
                marks = ",".join("?" * len(chunk))
                for key, text in self._db.execute(
                        f"SELECT entity_key, row FROM {self._table} WHERE entity_key IN "
                        f"({marks}) ORDER BY entity_key, window_end", list(chunk)):
                    out.setdefault(key, []).append(json.loads(text))
        return out

    def sample_keys(self, limit):
        with self._guard("read"):
            return [r[0] for r in self._db.execute(
                f"SELECT DISTINCT entity_key FROM {self._table} LIMIT ?", (limit,))]

    def feature_sets(self):
        with self._guard("read"):
            tables = {r[0] for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            return {name: FeatureSet.from_text(text) for name, text in self._db.execute(
                f"SELECT name, definition FROM {_META_TABLE} ORDER BY name") if name in tables}

    def purge_expired(self, now):
        table = self._table
        with self._guard("write to"), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            gone = [r[0] for r in self._db.execute(
                f"SELECT entity_key FROM {table} GROUP BY entity_key HAVING "
                "max(expires_at) <= ? AND count(expires_at) = count(*)", (now,))]
            self._db.executemany(f"DELETE FROM {table} WHERE entity_key = ?",
                                 [(k,) for k in gone])
        return len(gone)

    def close(self):
        if self._db is None:
            return
        if self._writes:  # leave a store at rest as one file, which readers open as it is
            try:
                self._db.execute("PRAGMA busy_timeout = 0")
                self._db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:  # another connection still has it open: it stays in WAL
                pass
        self._db.close()


def _cut(entity: EntityRows, longest_ms: int) -> float:
    """The entity's last window end minus the longest window, in the rows' seconds."""
    return (round(entity.rows[-1]["window_end"] * 1000) - longest_ms) / 1000.0


# KEYS[1]: the entity's sorted set. ARGV: the rows' last window end, their first, the cut (last
# minus the longest window), then (window_end, row JSON) pairs. See the module docstring.
_MERGE = """
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')
for i = 4, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
local keep = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if keep[2] then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. keep[2]) end
return (#ARGV - 3) / 2
"""


class RedisStore(OnlineStore):
    def __init__(self, uri: str, name: str | None, definition: FeatureSet | None):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__(uri, name)
        parsed = urlparse(uri)
        self._where = f"{parsed.hostname}:{parsed.port or 6379}"
        self._redis = redis.Redis.from_url(
            uri, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0))
        self._prefix = f"beam_dsl:features:{name}:"
        with self._guard("open"):
            self._redis.ping()
            if definition is not None:
                self._redis.hset(_META_KEY, name, definition.to_text())
                self._merge = self._redis.register_script(_MERGE)

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.TimeoutError:
            raise self.error(E_FAULT, f"Redis at {self._where} did not answer within "
                             f"{REDIS_TIMEOUT_S:g} s (to {doing} the store)",
                             "check that the address is a Redis server and that it is not "
                             "overloaded") from None
        except redis.ConnectionError as e:
            raise self.error(E_FAULT, f"cannot connect to Redis at {self._where} (to {doing} "
                             f"the store): {e}", "start the server, or fix the host and port "
                             "in the URI") from None
        except redis.RedisError as e:
            raise self.error(E_FAULT, f"Redis at {self._where} refused to {doing} the store: "
                             f"{e}") from None

    def write(self, entities, longest_ms):
        with self._guard("write to"):
            pipe = self._redis.pipeline(transaction=False)
            for e in entities:
                args: list[Any] = [repr(e.rows[-1]["window_end"]), repr(e.rows[0]["window_end"]),
                                   repr(_cut(e, longest_ms))]
                for row in e.rows:
                    args += [repr(row["window_end"]), _row_text(row)]
                self._merge(keys=[self._prefix + e.key], args=args, client=pipe)
            return int(sum(pipe.execute()))

    def read(self, keys):
        keys = list(keys)
        with self._guard("read"):
            self.feature_set()
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.zrange(self._prefix + key, 0, -1)
            found = pipe.execute()
        return {key: [json.loads(m) for m in members]
                for key, members in zip(keys, found, strict=True) if members}

    def sample_keys(self, limit):
        out = []
        with self._guard("read"):
            for name in self._redis.scan_iter(match=self._prefix + "*", count=1000):
                out.append(name.decode()[len(self._prefix):])
                if len(out) >= limit:
                    break
        return out

    def feature_sets(self):
        with self._guard("read"):
            found = self._redis.hgetall(_META_KEY)
        return {name.decode(): FeatureSet.from_text(text) for name, text in sorted(found.items())}

    def purge_expired(self, now):
        removed = 0
        with self._guard("write to"):
            for name in self._redis.scan_iter(match=self._prefix + "*", count=1000):
                latest = self._redis.zrevrange(name, 0, 0)
                expires = json.loads(latest[0]).get("expires_at") if latest else None
                if expires is not None and expires <= now:
                    removed += self._redis.delete(name)
        return removed

    def close(self):
        self._redis.close()


def _store(uri: str, name: str | None, definition: FeatureSet | None) -> OnlineStore:
    problem = online_store_problem(uri)
    if problem:
        raise OnlineStore(uri, name).error(E_STORE, *problem)
    if urlparse(uri).scheme == "sqlite":
        return SQLiteStore(uri, name, definition)
    return RedisStore(uri, name, definition)


def open_online(uri: str, definition: FeatureSet) -> OnlineStore:
    """The online store at ``uri`` (see the module docstring) for writing the feature set
    ``definition`` (created where missing); E442 for a URI that names no store, E444 when it
    cannot be used."""
    return _store(uri, definition.config.name, definition)


def read_online(uri: str, name: str | None) -> OnlineStore:
    """The online store at ``uri`` for reading the feature set ``name`` (None: to list its
    feature sets): creates nothing; E445 where there is no store."""
    return _store(uri, name, None)


def type_name(hint: Any) -> str:
    """A row field's type as a store records it: ``int``, ``float``, ``str``, ``bool`` or
    ``list[...]`` (:func:`type_hint` reads it back)."""
    from beam_dsl.transforms.common.rows import base_type  # Beam: writers only, not reads

    hint = base_type(hint)
    inner = getattr(hint, "inner_type", None)
    if inner is not None:
        return f"list[{type_name(inner)}]"
    return hint.__name__ if hint in (int, float, str, bool) else "str"


def type_hint(name: str) -> Any:
    """The Python type of a :func:`type_name`."""
    if name.startswith("list[") and name.endswith("]"):
        return Sequence[type_hint(name[5:-1])]
    return {"int": int, "float": float, "bool": bool}.get(name, str)
