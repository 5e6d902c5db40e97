"""FEATURES through whole `beam_dsl run` pipelines: the payments example (pipelines/payments),
every stock sink and downstream Beam YAML transform, in-process and on Dask, and 1M events into
WriteToParquet."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from features_support import (
    check_answer,
    check_rows,
    expected_as_of,
    expected_rows,
    expected_sliding,
    payments,
    seconds,
)

from beam_dsl.features_cli import get_features
from beam_dsl.runner import run_pipeline

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "pipelines", "payments")

FAILS_ITEMS = [
    ("count", None, None, None, "fails_1h"), ("sum", "amount", None, None, "failed_amount_1h"),
    ("avg", "amount", None, None, "avg_failed_amount_1h"),
    ("last", "event_time", None, None, "latest_payment_fail"),
    ("last", "event_time", None, lambda f: f["reason"] == "nsf", "latest_payment_fail_nsf"),
    ("last_k", "merchant", 3, None, "recent_merchants"),
    ("approx_count_distinct", "merchant", None, None, "merchants_1h"),
]
SPEND_ITEMS = [("sum", "amount", None, None, "spend"), ("count", None, None, None, "payments"),
               ("max", "amount", None, None, "largest")]


def _json_lines(pattern: str) -> list[dict]:
    out = []
    for path in glob.glob(pattern):
        with open(path) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


@pytest.mark.slow
def test_payments_example_runs_and_matches_the_reference(tmp_path):
    sys.path.insert(0, EXAMPLE)
    try:
        from generate import generate
    finally:
        sys.path.remove(EXAMPLE)
    for name in ("payments.bdsl", "pipeline.yaml"):
        shutil.copy(os.path.join(EXAMPLE, name), tmp_path)
    events = generate(rows=1000, users=12, hours=24.0, seed=3, bad_every=250)
    os.makedirs(tmp_path / "data" / "generated")
    events.to_csv(tmp_path / "data" / "generated" / "payments.csv", index=False)

    summary = run_pipeline(str(tmp_path / "pipeline.yaml"), progress=None)

    good = events[events["event_time"] != "not a time"]
    fails = _json_lines(f"{tmp_path}/out/user_payment_fails-*")
    check_rows(fails, expected_rows(good, "user_id", "event_time", FAILS_ITEMS,
                                    [(3600, 300, "")], ttl_s=86400.0,
                                    where=lambda f: f["status"] == "failed"),
               "user_id", FAILS_ITEMS)
    spend = _json_lines(f"{tmp_path}/out/user_spend-*")
    check_rows(spend, expected_rows(good, "user_id", "event_time", SPEND_ITEMS,
                                    [(3600, 3600, "_1h"), (86400, 3600, "_1d"),
                                     (604800, 3600, "_7d")], ttl_s=604800.0),
               "user_id", SPEND_ITEMS)
    errors = _json_lines(f"{tmp_path}/out/errors-*")
    assert len(errors) == (events["event_time"] == "not a time").sum() > 0
    assert summary.errors == 2 * len(errors)  # both feature sets reject the same rows

    offline = pq.read_table(tmp_path / "out" / "features" / "user_payment_fails").to_pandas()
    assert len(offline) == len(fails)
    failed = good[good["status"] == "failed"]
    latest = failed.assign(t=failed["event_time"].map(seconds)).groupby("user_id")["t"].max()
    queries = [(user, t + offset) for user, t in latest.items() for offset in (0.0, 600.0)]
    want = expected_as_of(good, "user_id", "event_time", FAILS_ITEMS, queries,
                          windows=[(3600, 300, "")], ttl_s=86400.0,
                          where=lambda f: f["status"] == "failed")
    store = f"sqlite:///{tmp_path}/out/features.db"
    for (user, t), answer in zip(queries, want, strict=True):
        got = get_features("user_payment_fails", store, {"user_id": str(user)}, as_of=t)
        check_answer(got, answer, FAILS_ITEMS, f"user {user} at {t}")
        assert got["expired"] is False


# ---------------------------------------------------------------- sinks

SINKS_SPEC = """
FEATURES f
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SLIDING 1h EVERY 5m
  SELECT count(*) AS n, sum(amount) AS total, last(merchant) AS last_merchant,
         last_k(amount, 2) AS recent
  TTL 1d;
"""
SINKS_ITEMS = [("count", None, None, None, "n"), ("sum", "amount", None, None, "total"),
               ("last", "merchant", None, None, "last_merchant"),
               ("last_k", "amount", 2, None, "recent")]
SINKS_PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: events, config: {path: events.csv}}
    - {type: f, input: events}
    - {type: WriteToParquet, name: parquet, input: f, config: {path: out/parquet/f}}
    - {type: WriteToCsv, name: csv, input: f, config: {path: out/csv/f}}
    - {type: WriteToJson, name: json, input: f, config: {path: out/json/f}}
    - type: Filter
      name: busy
      input: f
      config: {language: python, keep: "n >= 3"}
    - type: MapToFields
      name: mean
      input: busy
      config: {language: python, fields: {user_id: user_id, window_end: window_end,
                                          mean: "total / n"}}
    - {type: WriteToJson, name: write_mean, input: mean, config: {path: out/mean/m}}
    - type: Combine
      name: per_user
      input: f
      config: {group_by: [user_id], combine: {windows: {value: n, fn: count},
                                              events: {value: n, fn: sum}}}
    - {type: WriteToJson, name: write_per_user, input: per_user, config: {path: out/per_user/u}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["FnApiRunner", "DaskRunner"])
def test_features_rows_go_to_every_stock_sink_and_transform(runner, tmp_path):
    events = payments(n=400, users=6, hours=3.0, seed=4)
    events.to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "spec.bdsl").write_text(SINKS_SPEC)
    (tmp_path / "pipeline.yaml").write_text(SINKS_PIPELINE)
    run_pipeline(str(tmp_path / "pipeline.yaml"), runner=runner, progress=None)

    want = expected_rows(events, "user_id", "event_time", SINKS_ITEMS, [(3600, 300, "")],
                         ttl_s=86400.0)
    parquet = pq.read_table(tmp_path / "out" / "parquet").to_pandas()
    assert parquet.dtypes["n"] == np.int64 and parquet.dtypes["window_end"] == np.float64
    as_lists = parquet.assign(recent=parquet["recent"].map(list))
    check_rows(as_lists.to_dict("records"), want, "user_id", SINKS_ITEMS)
    check_rows(_json_lines(f"{tmp_path}/out/json/*"), want, "user_id", SINKS_ITEMS)
    csv = pd.concat(pd.read_csv(p) for p in glob.glob(f"{tmp_path}/out/csv/*"))
    csv = csv.assign(recent=csv["recent"].map(json.loads))
    check_rows(csv.to_dict("records"), want, "user_id", SINKS_ITEMS)

    means = {(r["user_id"], r["window_end"]): r["mean"]
             for r in _json_lines(f"{tmp_path}/out/mean/*")}
    assert means == pytest.approx({k: row["total"] / row["n"] for k, row in want.items()
                                   if row["n"] >= 3})
    per_user = {r["user_id"]: (r["windows"], r["events"])
                for r in _json_lines(f"{tmp_path}/out/per_user/*")}
    expected = pd.DataFrame([(user, row["n"]) for (user, _), row in want.items()],
                            columns=["user_id", "n"]).groupby("user_id")["n"]
    assert per_user == {u: (int(c), int(s)) for u, c, s in zip(
        expected.count().index, expected.count(), expected.sum(), strict=True)}


PARQUET_SPEC = """
FEATURES f
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SLIDING 1h EVERY 5m
  SELECT count(*) AS n, sum(amount) AS total, last(amount) AS last_amount;
"""
PARQUET_PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromParquet, name: events, config: {path: events.parquet}}
    - {type: f, input: events}
    - {type: WriteToParquet, input: f, config: {path: out/f}}
"""


@pytest.mark.slow
def test_a_million_events_into_write_to_parquet(tmp_path):
    rng = np.random.default_rng(0)
    n = 1_000_000
    events = pd.DataFrame({
        "user_id": rng.integers(0, 10_000, n),
        "event_time": np.round(1_700_000_000 + np.sort(rng.uniform(0, 86_400, n)), 3),
        "amount": np.round(rng.gamma(2.0, 20.0, n), 2),
    })
    pq.write_table(pa.Table.from_pandas(events), tmp_path / "events.parquet",
                   row_group_size=100_000)
    (tmp_path / "spec.bdsl").write_text(PARQUET_SPEC)
    (tmp_path / "pipeline.yaml").write_text(PARQUET_PIPELINE)
    summary = run_pipeline(str(tmp_path / "pipeline.yaml"), progress=None)

    got = pq.read_table(tmp_path / "out").to_pandas()
    want = expected_sliding(events, 3600, 300)
    assert len(got) == len(want) == summary.rows_out["f.main"] > 2_500_000
    key = ["user_id", "window_end"]
    got = got.sort_values(key, ignore_index=True)
    want = want.sort_values(key, ignore_index=True)
    for column in ["user_id", "window_start", "window_end", "n", "last_amount"]:
        assert (got[column].to_numpy() == want[column].to_numpy()).all(), column
    assert np.allclose(got["total"], want["total"], rtol=1e-12, atol=1e-9)
