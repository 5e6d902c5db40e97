"""FEATURES stores: SQLite and a real Redis server (online), Parquet (offline), `features get`
and `features list`, and the store's faults (locked, read-only, refused, silent) as coded
errors after a bounded wait."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from features_support import (
    FIELDS,
    check_answer,
    collect,
    collected,
    expected_as_of,
    fill_store,
    payments,
    rows_of,
    seconds,
)
from test_features import ROW_TYPE

from beam_dsl.cli import main
from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.features_cli import format_features, get_features, list_features
from beam_dsl.transforms.features import stores
from beam_dsl.transforms.features.keys import entity_key
from beam_dsl.transforms.features.stores import EntityRows, FeatureSet, open_online, read_online
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
ITEMS = [("count", None, None, None, "fails_1h"), ("sum", "amount", None, None,
                                                  "failed_amount_1h"),
         ("last_k", "merchant", 3, None, "recent_merchants")]
FAILED = lambda f: f["status"] == "failed"  # noqa: E731
NAME = "user_payment_fails"


def config_for(uri: str | None = None, **changes):
    spec, _ = parse(SPEC)
    return dataclasses.replace(lower_spec(spec)[0].config, online=uri, **changes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_uri(tmp_path_factory):
    """A real redis-server on a free loopback port, in a temporary directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
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


def _definition() -> FeatureSet:
    fields = (("user_id", "int"), ("window_start", "float"), ("window_end", "float"),
              ("expires_at", "float"), ("fails_1h", "int"))
    return FeatureSet(config_for(), fields)


def _entity(user: int, ends: list[float], value: int = 1) -> EntityRows:
    return EntityRows(entity_key({"user_id": user}), [
        {"user_id": user, "window_start": e - 3600, "window_end": e, "expires_at": e + 10,
         "fails_1h": value} for e in ends])


def _ends(store, user) -> list[float]:
    key = entity_key({"user_id": str(user)})  # the key given as text finds the integer
    return [r["window_end"] for r in store.read([key]).get(key, [])]


def test_online_store_merges_compare_and_set_keeps_what_answers_need_and_purges(store_uri):
    hour = 3_600_000
    store = open_online(store_uri, _definition())
    try:
        assert store.write([_entity(1, [1000.0, 2000.0, 5000.0, 6000.0])], hour) == 4
        # Kept: rows ending after 6000 - 3600, and the latest ending at or before it.
        assert _ends(store, 1) == [2000.0, 5000.0, 6000.0]
        assert store.write([_entity(1, [1000.0, 3000.0], value=9)], hour) == 0  # older: no
        assert _ends(store, 1) == [2000.0, 5000.0, 6000.0]
        assert store.write([_entity(1, [6000.0, 7000.0], value=2)], hour) == 2
        assert _ends(store, 1) == [2000.0, 5000.0, 6000.0, 7000.0]
        key = entity_key({"user_id": 1})
        assert [r["fails_1h"] for r in store.read([key])[key]] == [1, 1, 2, 2]
        assert store.write([_entity(2, [100.0])], hour) == 1
        assert store.purge_expired(now=109.0) == 0
        assert store.purge_expired(now=110.0) == 1  # user 2's latest row expired at 110
        assert _ends(store, 2) == [] and len(_ends(store, 1)) == 4
    finally:
        store.close()


def test_pipeline_store_answers_as_of_any_time_after_the_latest_event(store_uri, tmp_path):
    offline = str(tmp_path / "offline")
    config = config_for(store_uri, offline=offline, shards=2)
    frame = payments(n=300, users=5, hours=3.0)

    def run(rows, directory):
        os.makedirs(directory)
        with beam.Pipeline(runner=FnApiRunner()) as p:
            source = p | beam.Create(rows).with_output_types(ROW_TYPE)
            out = source | ComputeFeatures.from_config(config)
            collect(out["main"], directory, "main")
            collect(out["online"], directory, "online")

    run(rows_of(frame), str(tmp_path / "first"))
    rows = collected(str(tmp_path / "first"), "main")
    written = pq.read_table(offline).to_pandas()
    assert len(written) == len(rows) and len(glob.glob(f"{offline}/part-*.parquet")) == 2
    failed = frame[FAILED(frame)]
    latest = failed.assign(t=failed["event_time"].map(seconds)).groupby("user_id")["t"].max()
    queries = [(user, t + offset) for user, t in latest.items()
               for offset in (0.0, 1.0, 299.0, 1800.0, 3599.0, 3600.0, 86399.0, 86400.0, 9e5)]
    want = expected_as_of(frame, "user_id", "event_time", ITEMS, queries,
                          windows=[(3600, 300, "")], ttl_s=86400.0, where=FAILED)

    def check(where):
        for (user, t), answer in zip(queries, want, strict=True):
            got = get_features(NAME, store_uri, {"user_id": str(user)}, as_of=t)
            check_answer(got, answer, ITEMS, f"{where} user {user} at {t}")

    check("first run")
    assert any(a["expired"] for a in want) and any(not a["expired"] for a in want)
    # A re-run over only the older half of the events must not regress the store.
    run(rows_of(frame.iloc[: len(frame) // 2]), str(tmp_path / "again"))
    check("after a re-run over older events")


# ---------------------------------------------------------------- reads


@pytest.fixture
def filled(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path}/store/features.db"
    fill_store(uri, config_for(uri), payments(n=200, users=4, hours=2.0), FIELDS)
    return uri


def _error(call, *args, **kwargs):
    with pytest.raises(DiagnosticError) as caught:
        call(*args, **kwargs)
    return caught.value.diagnostics[0]


def _tables(uri: str) -> set[str]:
    db = sqlite3.connect(uri[len("sqlite:///"):])
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_reads_create_nothing_and_say_what_is_missing(filled, tmp_path):
    files = sorted(os.listdir(tmp_path / "store"))
    assert files == ["features.db"]  # a store at rest is one file
    assert get_features(NAME, filled, {"user_id": "1"})["user_id"] == 1
    assert sorted(os.listdir(tmp_path / "store")) == files
    missing = f"sqlite:///{tmp_path}/nowhere/features.db"
    found = _error(get_features, NAME, missing, {"user_id": "1"})
    assert found.code == "E445" and "no feature store at" in found.message
    assert not os.path.exists(tmp_path / "nowhere")
    before = _tables(filled)
    found = _error(get_features, "user_payment_fail", filled, {"user_id": "1"})
    assert found.code == "E445" and found.hint == f"did you mean '{NAME}'?"
    assert _tables(filled) == before and "user_payment_fail" not in before
    found = _error(get_features, NAME, filled, {"usr_id": "1"})
    assert "keyed by user_id" in found.message and found.hint == "did you mean 'user_id'?"
    found = _error(get_features, NAME, filled, {"user_id": "31"})
    assert found.message == f"no entity user_id=31 in {NAME}"
    assert found.hint is not None and found.hint.startswith("did you mean 'user_id=")
    found = _error(get_features, NAME, filled, {"user_id": "1"}, as_of=1_000_000_000)
    assert "keeps user_id=1's rows from" in found.message
    assert _error(get_features, NAME, filled, {"user_id": "1"}, as_of="soon").code == "E445"


def test_reading_redis_creates_no_keys(redis_uri):
    import redis

    client = redis.Redis.from_url(redis_uri)
    client.flushdb()
    fill_store(redis_uri, config_for(redis_uri), payments(n=100, users=3, hours=1.0), FIELDS)
    keys = set(client.keys("*"))
    found = _error(get_features, "user_payment_fail", redis_uri, {"user_id": "1"})
    assert found.code == "E445" and found.hint == f"did you mean '{NAME}'?"
    assert _error(get_features, NAME, redis_uri, {"user_id": "99"}).code == "E445"
    assert set(client.keys("*")) == keys
    client.close()


def test_features_cli_lists_gets_as_of_and_reports_mistakes(filled, capsys):
    assert main(["features", "list", "--store", filled]) == 0
    listing = capsys.readouterr().out
    assert NAME in listing and "SLIDING 3600s EVERY 300s" in listing
    assert "recent_merchants  list[str]" in listing
    assert list_features(filled)[0]["features"][0] == ("fails_1h", "int")
    t = 1_700_000_000 + 2 * 3600 + 61  # just after the data's end
    want = format_features(get_features(NAME, filled, {"user_id": "1"}, as_of=t))
    for given in (str(t), "2023-11-15T00:14:21Z", "2023-11-15 00:14:21"):
        assert main(["features", "get", NAME, "--store", filled, "--as-of", given,
                     "user_id=1"]) == 0
        assert capsys.readouterr().out.strip() == want
    assert main(["features", "get", NAME, "--store", filled, "--as-of", "yesterday",
                 "user_id=1"]) == 2
    assert "--as-of takes epoch seconds or ISO-8601" in capsys.readouterr().err
    assert main(["features", "get", NAME, "--store", filled, "user_id=11"]) == 1
    err = capsys.readouterr().err
    assert "error[E445]" in err and "did you mean 'user_id=1'" in err
    assert main(["features", "get", NAME, "--store", filled, "user_id=1"]) == 0
    assert "expired" in capsys.readouterr().out


# ---------------------------------------------------------------- faults


@pytest.fixture
def locked(filled):
    """The store, with another process holding its write lock."""
    path = filled[len("sqlite:///"):]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({path!r}, isolation_level=None)\n"
         "db.execute('PRAGMA journal_mode=WAL')\n"  # as beam_dsl's own writers do
         "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield filled
    holder.kill()
    holder.wait(timeout=10)


def test_a_locked_sqlite_store_is_a_coded_error_after_a_bounded_wait(locked, monkeypatch):
    monkeypatch.setattr(stores, "BUSY_TIMEOUT_S", 1.0)
    start = time.monotonic()
    found = _error(open_online, locked, FeatureSet(config_for(locked), ()))
    assert 0.9 <= time.monotonic() - start < 5
    assert found.code == "E444" and "locked by another process: waited 1 s" in found.message
    assert get_features(NAME, locked, {"user_id": "1"})["user_id"] == 1  # WAL: reads go on


def test_a_run_into_a_locked_store_exits_1_with_the_code(locked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stores, "BUSY_TIMEOUT_S", 1.0)
    payments(n=100, users=3, hours=1.0).to_csv(tmp_path / "payments.csv", index=False)
    (tmp_path / "spec.bdsl").write_text(SPEC.replace("TTL 1d", f"TTL 1d ONLINE '{locked}'"))
    (tmp_path / "pipeline.yaml").write_text(
        "specs: [spec.bdsl]\npipeline:\n  type: composite\n  transforms:\n"
        "    - {type: ReadFromCsv, name: payments, config: {path: payments.csv}}\n"
        f"    - {{type: {NAME}, input: payments}}\n")
    assert main(["run", str(tmp_path / "pipeline.yaml"), "-q"]) == 1
    assert "run failed: error[E444]" in capsys.readouterr().err


def test_a_read_only_sqlite_store_is_a_coded_error_for_writes(filled):
    path = filled[len("sqlite:///"):]
    if os.geteuid() == 0:  # root writes through file modes: make the file immutable instead
        if subprocess.run(["chattr", "+i", path], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        undo = ["chattr", "-i", path]
    else:
        os.chmod(path, 0o444)
        undo = ["chmod", "644", path]
    try:
        found = _error(open_online, filled, FeatureSet(config_for(filled), ()))
        assert found.code == "E444" and "is read-only" in found.message
        assert get_features(NAME, filled, {"user_id": "1"})["user_id"] == 1
    finally:
        subprocess.run(undo, check=True)


def test_a_refused_redis_is_a_coded_error():
    port = _free_port()
    uri = f"redis://127.0.0.1:{port}/0"
    found = _error(open_online, uri, FeatureSet(config_for(uri), ()))
    assert found.code == "E444" and f"cannot connect to Redis at 127.0.0.1:{port}" in \
        found.message
    assert _error(get_features, NAME, uri, {"user_id": "1"}).code == "E444"


def test_a_silent_redis_is_a_coded_error_after_the_timeout(monkeypatch):
    monkeypatch.setattr(stores, "REDIS_TIMEOUT_S", 0.5)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():  # takes connections and never answers
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    uri = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        for call, args in ((open_online, (uri, FeatureSet(config_for(uri), ()))),
                           (read_online, (uri, NAME))):
            start = time.monotonic()
            found = _error(call, *args)
            assert time.monotonic() - start < 3
            assert found.code == "E444" and "did not answer within 0.5 s" in found.message
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()



def test_a_stream_writes_the_store_a_batch_writes(tmp_path):
    """Streaming firings merge into the store row by row; the answers from the latest events
    on are the reference's, as after a batch run."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    frame = payments(n=200, users=4, hours=3.0, seed=6)
    times = frame["event_time"].map(seconds).to_numpy()
    stream = TestStream()
    for start in range(0, len(frame), 25):
        chunk = list(range(start, min(start + 25, len(frame))))
        stream = stream.advance_watermark_to(float(times[chunk[0]]))
        stream = stream.add_elements([TimestampedValue(r, float(times[i])) for r, i in
                                      zip(rows_of(frame.iloc[chunk]), chunk, strict=True)])
    stream = stream.advance_watermark_to_infinity()
    uri = f"sqlite:///{tmp_path}/stream.db"
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        out = p | stream.with_output_types(ROW_TYPE) | ComputeFeatures.from_config(
            config_for(uri))
        collect(out["online"], str(tmp_path), "online")
    assert len(collected(str(tmp_path), "online")) > 4  # written firing by firing
    failed = frame[FAILED(frame)]
    latest = failed.assign(t=failed["event_time"].map(seconds)).groupby("user_id")["t"].max()
    queries = [(user, t + offset) for user, t in latest.items()
               for offset in (0.0, 0.5, 300.0, 3599.0, 3600.0, 86400.0)]
    want = expected_as_of(frame, "user_id", "event_time", ITEMS, queries,
                          windows=[(3600, 300, "")], ttl_s=86400.0, where=FAILED)
    for (user, t), answer in zip(queries, want, strict=True):
        got = get_features(NAME, uri, {"user_id": str(user)}, as_of=t)
        check_answer(got, answer, ITEMS, f"user {user} at {t}")
