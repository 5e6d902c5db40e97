"""FEATURES stores: SQLite and a real Redis server (online), Parquet (offline), `features get`."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import time

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from features_support import collect, collected, payments, rows_of
from test_features import ROW_TYPE

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.features_cli import format_features, get_features
from beam_dsl.transforms.features.panes import entity_key
from beam_dsl.transforms.features.stores import StoreRecord, open_online
from beam_dsl.transforms.features.transform import ComputeFeatures

SPEC = """
FEATURES user_payment_fails
  ENTITY user_id
  TIMESTAMP event_time
  WHERE status = 'failed'
  WINDOW SLIDING 1h EVERY 5m
  SELECT count(*) AS fails_1h, sum(amount) AS failed_amount_1h,
         last_k(merchant, 3) AS recent_merchants
  TTL 1d;
"""


@pytest.fixture(scope="module")
def redis_uri(tmp_path_factory):
    """A real redis-server on a free loopback port, in a temporary directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        server.terminate()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis"])
def store_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/features.db"
    uri = request.getfixturevalue("redis_uri")
    import redis

    redis.Redis.from_url(uri).flushdb()
    return uri


def _record(user: int, end: float, value: int, expires: float | None = None) -> StoreRecord:
    key = entity_key({"user_id": user})
    return StoreRecord(key, end, expires, {"user_id": user, "window_end": end, "n": value})


def test_online_store_upserts_compare_and_set_and_purges(store_uri):
    store = open_online(store_uri, "t")
    try:
        assert store.upsert([_record(1, 100.0, 1), _record(2, 100.0, 5, expires=150.0)]) == 2
        assert store.upsert([_record(1, 200.0, 2)]) == 1  # newer: replaces
        assert store.upsert([_record(1, 150.0, 9)]) == 0  # older: a re-run cannot regress it
        assert store.get(entity_key({"user_id": "1"})).features["n"] == 2  # key given as text
        assert store.get(entity_key({"user_id": 3})) is None
        assert store.purge_expired(now=149.0) == 0
        assert store.purge_expired(now=150.0) == 1
        assert store.get(entity_key({"user_id": 2})) is None
    finally:
        store.close()


def test_pipeline_writes_latest_rows_online_and_every_row_offline(store_uri, tmp_path):
    spec, _ = parse(SPEC)
    offline = str(tmp_path / "offline")
    config = dataclasses.replace(lower_spec(spec)[0].config, online=store_uri, offline=offline,
                                 shards=2)
    frame = payments(n=300, users=5, hours=3.0)

    def run(rows, directory):
        os.makedirs(directory)
        with beam.Pipeline(runner=FnApiRunner()) as p:
            source = p | beam.Create(rows).with_output_types(ROW_TYPE)
            out = source | ComputeFeatures.from_config(config)
            collect(out["main"], directory, "main")
            collect(out["online"], directory, "online")
            collect(out["offline"], directory, "offline")

    run(rows_of(frame), str(tmp_path / "first"))
    rows = collected(str(tmp_path / "first"), "main")
    written = pq.read_table(offline).to_pandas()
    assert len(written) == len(rows) and len(glob.glob(f"{offline}/part-*.parquet")) == 2
    assert written["recent_merchants"].map(len).max() == 3
    latest = pd.DataFrame(rows).sort_values("window_end").groupby("user_id").last()
    for user, row in latest.iterrows():
        stored = get_features("user_payment_fails", store_uri, {"user_id": str(user)},
                              now=row["window_end"])
        assert stored["window_end"] == row["window_end"] and stored["fails_1h"] == row["fails_1h"]
        assert stored["expired"] is False
        later = get_features("user_payment_fails", store_uri, {"user_id": str(user)},
                             now=row["expires_at"])
        assert later["expired"] is True
    # A re-run over only the older half of the events must not regress the store.
    run(rows_of(frame.iloc[: len(frame) // 2]), str(tmp_path / "again"))
    for user, row in latest.iterrows():
        stored = get_features("user_payment_fails", store_uri, {"user_id": user})
        assert stored["window_end"] == row["window_end"]
    text = format_features(stored)
    assert "fails_1h" in text and "Z)" in text


def test_get_features_of_an_unknown_entity_is_none(tmp_path):
    uri = f"sqlite:///{tmp_path}/empty.db"
    assert get_features("user_payment_fails", uri, {"user_id": "7"}) is None


def test_get_features_from_a_uri_that_is_no_store_is_a_coded_error():
    with pytest.raises(DiagnosticError) as caught:
        get_features("user_payment_fails", "postgres://db/features", {"user_id": "7"})
    found = caught.value.diagnostics[0]
    assert (found.code, found.file) == ("E442", "FEATURES user_payment_fails")
    assert "neither sqlite:// nor redis://" in found.message
