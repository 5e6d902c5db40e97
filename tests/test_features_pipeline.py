"""The payments example (pipelines/payments) end to end: generate, `beam_dsl run`, check outputs."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from features_support import check_rows, expected_rows

from beam_dsl.features_cli import get_features

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
    from beam_dsl.runner import run_pipeline

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
    latest = pd.DataFrame(fails).sort_values("window_end").groupby("user_id").last()
    store = f"sqlite:///{tmp_path}/out/features.db"
    for user, row in latest.iterrows():
        stored = get_features("user_payment_fails", store, {"user_id": str(user)},
                              now=row["window_end"])
        assert stored["window_end"] == row["window_end"]
        assert stored["recent_merchants"] == row["recent_merchants"]
        assert stored["expired"] is False
