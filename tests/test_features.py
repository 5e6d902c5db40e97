"""FEATURES: the plan's rules, and whole Beam pipelines against a brute-force pandas reference.

The same specs run on the in-process FnApiRunner (batched DoFns), on Beam's
DaskRunner against a local Dask cluster (rows shuffled, no batches), and as a
stream (TestStream on the BundleBasedDirectRunner); all must give the rows
that tests/features_support.py computes one window at a time.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import typing

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.typehints.row_type import RowTypeConstraint
from features_support import (
    check_rows,
    collect,
    collected,
    expected_rows,
    expected_sessions,
    payments,
    rows_of,
)

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.ir.features import FeaturesConfig, Item, Window
from beam_dsl.transforms.features.panes import FeaturePlan, prepare
from beam_dsl.transforms.features.times import event_ms
from beam_dsl.transforms.features.transform import ComputeFeatures
from beam_dsl.transforms.features.windows import WindowPlan

SPECS = """
FEATURES fails
  ENTITY user_id
  TIMESTAMP event_time
  WHERE status = 'failed'
  WINDOW SLIDING 1h EVERY 5m
  SELECT count(*) AS n, sum(amount) AS total, avg(amount) AS mean, min(amount) AS low,
         max(merchant) AS top_merchant, first(merchant) AS first_merchant,
         last(merchant) AS last_merchant,
         last(event_time) FILTER (WHERE reason = 'nsf') AS last_nsf,
         first_k(amount, 2) AS first_amounts, last_k(merchant, 3) AS recent,
         top_k(amount, 2) AS biggest, count_distinct(merchant) AS merchants,
         approx_count_distinct(merchant) AS approx_merchants,
         approx_percentile(amount, 0.5) AS median, stddev(amount) AS sd,
         variance(amount) FILTER (WHERE amount > 30) AS var_big
  TTL 1d
  ALLOWED LATENESS 5m;

FEATURES spend
  ENTITY user_id
  TIMESTAMP event_time
  WINDOWS (30m, 2h)
  SELECT sum(amount) AS spend, count(*) AS payments, max(amount) AS largest,
         last_k(merchant, 2) AS shops
  ALLOWED LATENESS 5m;

FEATURES hourly
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW TUMBLING 1h
  SELECT count(*) AS n, last_k(status, 2) AS statuses, approx_percentile(amount, 0.9) AS p90;

FEATURES odd
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SLIDING 50m EVERY 20m
  SELECT count(*) AS n, sum(amount) FILTER (WHERE merchant IN ('m1', 'm2')) AS m12;

FEATURES visits
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SESSION 10m
  SELECT count(*) AS n, sum(amount) AS total, first(merchant) AS entry,
         last(merchant) AS exit_merchant
  ALLOWED LATENESS 5m;
"""

FAILED = lambda f: f["status"] == "failed"  # noqa: E731
NSF = lambda f: f["reason"] == "nsf"  # noqa: E731

REFERENCE = {
    "fails": dict(
        items=[
            ("count", None, None, None, "n"), ("sum", "amount", None, None, "total"),
            ("avg", "amount", None, None, "mean"), ("min", "amount", None, None, "low"),
            ("max", "merchant", None, None, "top_merchant"),
            ("first", "merchant", None, None, "first_merchant"),
            ("last", "merchant", None, None, "last_merchant"),
            ("last", "event_time", None, NSF, "last_nsf"),
            ("first_k", "amount", 2, None, "first_amounts"),
            ("last_k", "merchant", 3, None, "recent"), ("top_k", "amount", 2, None, "biggest"),
            ("count_distinct", "merchant", None, None, "merchants"),
            ("approx_count_distinct", "merchant", None, None, "approx_merchants"),
            ("approx_percentile", "amount", 0.5, None, "median"),
            ("stddev", "amount", None, None, "sd"),
            ("variance", "amount", None, lambda f: f["amount"] > 30, "var_big"),
        ],
        windows=[(3600, 300, "")], ttl_s=86400.0, where=FAILED,
    ),
    "spend": dict(
        items=[("sum", "amount", None, None, "spend"), ("count", None, None, None, "payments"),
               ("max", "amount", None, None, "largest"), ("last_k", "merchant", 2, None, "shops")],
        windows=[(1800, 1800, "_30m"), (7200, 1800, "_2h")],
    ),
    "hourly": dict(
        items=[("count", None, None, None, "n"), ("last_k", "status", 2, None, "statuses"),
               ("approx_percentile", "amount", 0.9, None, "p90")],
        windows=[(3600, 3600, "")],
    ),
    "odd": dict(
        items=[("count", None, None, None, "n"),
               ("sum", "amount", None, lambda f: f["merchant"].isin(["m1", "m2"]), "m12")],
        windows=[(3000, 1200, "")],
    ),
}
SESSION_ITEMS = [("count", None, None, None, "n"), ("sum", "amount", None, None, "total"),
                 ("first", "merchant", None, None, "entry"),
                 ("last", "merchant", None, None, "exit_merchant")]

ROW_TYPE = RowTypeConstraint.from_fields([
    ("user_id", typing.Optional[int]),  # noqa: UP045 - Beam schemas read typing.Optional
    ("event_time", typing.Optional[str]),  # noqa: UP045
    ("amount", typing.Optional[float]),  # noqa: UP045
    ("status", str), ("reason", str), ("merchant", str),
])


def configs() -> dict[str, FeaturesConfig]:
    spec, diagnostics = parse(SPECS)
    assert not diagnostics
    return {t.name: t.config for t in lower_spec(spec)}


def events() -> pd.DataFrame:
    return payments(n=600, users=8, hours=4.0)


def bad_rows() -> pd.DataFrame:
    """Rows no FEATURES can use: a time that is no time, a missing time, a missing entity."""
    return pd.DataFrame({
        "user_id": [1, 2, None], "event_time": ["yesterday", None, "1700000000"],
        "amount": [1.0, 2.0, 3.0], "status": ["failed", "failed", "failed"],
        "reason": ["nsf"] * 3, "merchant": ["m1"] * 3,
    }).astype({"user_id": "Int64"})


def expected(name: str, frame: pd.DataFrame) -> dict:
    if name == "visits":
        return expected_sessions(frame, "user_id", "event_time", SESSION_ITEMS, 600.0)
    return expected_rows(frame, "user_id", "event_time", **REFERENCE[name])


def items_of(name: str):
    return SESSION_ITEMS if name == "visits" else REFERENCE[name]["items"]


def build(pipeline, rows, directory: str, **overrides) -> None:
    source = pipeline | "Events" >> beam.Create(rows).with_output_types(ROW_TYPE)
    for name, config in configs().items():
        out = source | name >> ComputeFeatures.from_config(
            dataclasses.replace(config, **overrides))
        collect(out["main"], directory, name)
        collect(out["errors"], directory, f"{name}.errors")


def same_rows(got: list[dict], want: list[dict]) -> None:
    """Equal rows; floats may differ in the last bits (sums in another order)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for name, value in a.items():
            if isinstance(value, float) and isinstance(b[name], float):
                assert math.isclose(value, b[name], rel_tol=1e-12), (name, a, b)
            else:
                assert value == b[name], (name, a, b)


def check_all(directory: str, frame: pd.DataFrame) -> dict[str, list[dict]]:
    found = {}
    for name in configs():
        rows = collected(directory, name)
        check_rows(rows, expected(name, frame), "user_id", items_of(name))
        found[name] = rows
    return found


# ---------------------------------------------------------------- rules


def test_event_times_are_seconds_milliseconds_or_iso_text():
    values = pd.Series([
        1_700_000_000, 1_700_000_000.5, 1_700_000_000_250, "1700000000", "1700000000250",
        "2023-11-14T22:13:20Z", "2023-11-14 22:13:20", "2023-11-14T23:13:20+01:00",
        datetime.datetime(2023, 11, 14, 22, 13, 20), True, "yesterday", None, float("nan"),
    ], dtype=object)
    ms, bad = event_ms(values)
    base = 1_700_000_000_000
    assert ms[:9].tolist() == [base, base + 500, base + 250, base, base + 250, base, base, base,
                               base]
    assert bad.tolist() == [False] * 9 + [True] * 4


def test_windows_plan_panes_on_the_gcd_and_follows_beam_alignment():
    one = WindowPlan.build([Window("sliding", 3600, 300)])
    assert (one.pane_ms, one.lengths[0].offset_ms) == (300_000, 0)
    odd = WindowPlan.build([Window("sliding", 3000, 1200)])
    # Beam: windows start at multiples of 20m, so they end at 10m past a multiple of 20m.
    assert (odd.pane_ms, odd.lengths[0].offset_ms) == (600_000, 600_000)
    assert odd.first_end_ms(0) == 600_000 and odd.first_end_ms(600_000) == 1_800_000
    lowered = configs()["spend"].windows
    several = WindowPlan.build(lowered)
    assert several.pane_ms == 1_800_000 and [w.offset_ms for w in several.lengths] == [0, 0]


def test_spec_mistakes_against_the_input_are_coded_errors():
    config = configs()["fails"]
    fields = dict(ROW_TYPE._fields)
    with pytest.raises(DiagnosticError) as caught:
        FeaturePlan.build(dataclasses.replace(config, timestamp="event_tme"), fields)
    assert caught.value.diagnostics[0].code == "E440"
    assert "did you mean 'event_time'" in caught.value.diagnostics[0].hint
    with pytest.raises(DiagnosticError, match=r"FEATURES fails: error\[E440\]"):
        _ = (beam.Pipeline() | beam.Create([]).with_output_types(ROW_TYPE)
             | ComputeFeatures.from_config(dataclasses.replace(config, timestamp="event_tme")))


def _built(config: FeaturesConfig, **changes) -> DiagnosticError:
    """The error building ComputeFeatures from ``config`` with ``changes`` raises."""
    with pytest.raises(DiagnosticError) as caught:
        ComputeFeatures(**{**config.to_json(), **changes})
    assert len(caught.value.diagnostics) == 1
    return caught.value.diagnostics[0]


def _select(func: str, *args, alias: str = "x") -> list[dict]:
    return [Item(func=func, args=args, alias=alias).to_json()]


@pytest.mark.parametrize("changes, code, message", [
    (dict(select=_select("top_k", {"col": "amount"}, {"lit": 0})), "E441",
     "top_k() AS x: k must be a positive integer, not 0"),
    (dict(select=_select("first_k", {"col": "amount"}, {"lit": 2.0})), "E441",
     "k must be a positive integer, not 2.0"),
    (dict(select=_select("last_k", {"col": "amount"}, {"col": "k"})), "E441",
     "k must be a literal, a positive integer"),
    (dict(select=_select("approx_percentile", {"col": "amount"}, {"lit": 1.5})), "E441",
     "q must be a number in [0, 1], not 1.5"),
    (dict(select=_select("approx_percentile", {"col": "amount"})), "E441",
     "takes 2 argument(s), not 1"),
    (dict(select=_select("cnt", {"col": "amount"})), "E441", "unknown aggregate 'cnt'"),
    (dict(select=_select("sum", {"fn": "lowr", "args": [{"col": "status"}]})), "E443",
     "unknown function 'lowr' in sum() AS x"),
    (dict(where={"fn": "substr", "args": [{"col": "status"}]}), "E443",
     "substr() in WHERE takes 2 to 3 argument(s), not 1"),
    (dict(select=_select("count", alias="n") + _select("sum", {"col": "amount"}, alias="n")),
     "E443", "feature 'n' has the name of another feature"),
    (dict(select=_select("last", {"col": "amount"}, alias="window_end")), "E443",
     "feature 'window_end' has the name of a column of every row"),
    (dict(select=_select("last", {"col": "amount"}, alias="user_id")), "E443",
     "feature 'user_id' has the name of an ENTITY column"),
    (dict(windows=[Window("sliding", 300, 3600).to_json()]), "E443",
     "window period 3600s is larger than its size 300s"),
    (dict(windows=[Window("sliding", 0.0004, 0.0004).to_json()]), "E443",
     "not a positive whole number of milliseconds"),
    (dict(windows=[Window("tumbling", 3600, 300).to_json()]), "E443",
     "a tumbling window's period is its size"),
    (dict(windows=[Window("sliding", 60, 60, "_1m").to_json(),
                   Window("session", 600, 600, "_10m").to_json()]), "E443", "must all be sliding"),
    (dict(windows=[]), "E443", "FEATURES needs a window"),
    (dict(entity=["user_id", "user_id"]), "E443", "must name distinct columns"),
    (dict(ttl_s=-1.0), "E443", "TTL must be positive"),
    (dict(allowed_lateness_s=-5.0), "E443", "ALLOWED LATENESS must not be negative"),
    (dict(shards=0), "E443", "shards must be at least 1"),
    (dict(online="mysql://db/features"), "E442", "is neither sqlite:// nor redis://"),
    (dict(online="sqlite://"), "E442", "names no database file"),
    (dict(online="redis:///0"), "E442", "names no Redis host"),
    (dict(offline=""), "E442", "OFFLINE names no directory"),
    (dict(windows=[{"kind": "sliding", "size_s": "1h", "every_s": 300}]), "E400",
     "'windows[0].size_s' must be a number"),
])
def test_configs_built_from_python_are_validated_with_codes(changes, code, message):
    found = _built(configs()["fails"], **changes)
    assert found.code == code and message in found.message, found.render()
    assert found.file == "FEATURES fails"


def test_unusable_values_become_errors_row_by_row():
    config = dataclasses.replace(configs()["fails"], select=(
        Item(func="sum", args=({"col": "amount"},), alias="total"),))
    plan = FeaturePlan.build(config, {**dict(ROW_TYPE._fields), "amount": str})
    frame = pd.DataFrame({
        "user_id": [1, 1, 2, 3], "event_time": ["1700000000", "1700000001", "soon", "1700000002"],
        "amount": ["10.5", "ten", "1", "2"], "status": ["failed", "failed", "failed", "ok"],
        "reason": ["nsf"] * 4, "merchant": ["m1"] * 4,
    })
    found, rejected, reasons = prepare(frame, plan)
    assert len(found.ms) == 1  # row 3 fails WHERE: neither an event nor an error
    assert rejected["event_time"].tolist() == ["1700000001", "soon"]
    assert "'ten' is not a number" in reasons[0] and "TIMESTAMP event_time" in reasons[1]


# ---------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> str:
    """Every spec over the events (and a few bad rows) on the in-process FnApiRunner."""
    directory = str(tmp_path_factory.mktemp("in_process"))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        build(p, rows_of(pd.concat([events(), bad_rows()], ignore_index=True)), directory,
              shards=3)
    return directory


def test_batch_rows_match_the_reference_in_process(in_process):
    found = check_all(in_process, events())
    assert len(found["fails"]) > 100 and len(found["visits"]) > 20
    errors = collected(in_process, "fails.errors")
    reasons = sorted(e["reason"] for e in errors)
    assert len(reasons) == 3 and {e["transform"] for e in errors} == {"fails"}
    assert reasons[0].startswith("ENTITY user_id is null")
    assert "'yesterday' is not an epoch time" in reasons[1]
    assert "None is not an epoch time" in reasons[2]
    any_row = found["fails"][0]
    assert any_row["window_end"] - any_row["window_start"] == 3600.0
    assert any_row["expires_at"] > any_row["window_end"]


def test_dask_runner_gives_the_same_rows(in_process, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from distributed import LocalCluster

    from beam_dsl.transforms.common.dask_io import AllSinksDaskRunner

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        options = PipelineOptions([f"--dask_client_address={cluster.scheduler_address}"])
        p = beam.Pipeline(runner=AllSinksDaskRunner(), options=options)
        build(p, rows_of(pd.concat([events(), bad_rows()], ignore_index=True)), str(tmp_path))
        result = p.run()
        result.wait_until_finish()
        result.client.close()
    for name in configs():
        for tag in (name, f"{name}.errors"):
            key = lambda r: (r.get("user_id"), r.get("window_end"), r.get("row"))  # noqa: E731
            same_rows(sorted(collected(str(tmp_path), tag), key=key),
                      sorted(collected(in_process, tag), key=key))


def test_streaming_gives_the_batch_rows_and_drops_late_events(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue
    from features_support import seconds

    frame = payments(n=150, users=4, hours=1.5, seed=2)
    times = frame["event_time"].map(seconds).to_numpy()
    rng = np.random.default_rng(1)
    stream = TestStream()
    for start in range(0, len(frame), 20):
        chunk = list(range(start, min(start + 20, len(frame))))
        # The watermark runs up to 2 minutes ahead of the chunk's earliest event: some of
        # its events arrive behind the watermark, within the 5 minutes of allowed lateness.
        stream = stream.advance_watermark_to(float(times[chunk[0]]) + 120)
        rng.shuffle(chunk)
        rows = rows_of(frame.iloc[chunk])
        stream = stream.add_elements(
            [TimestampedValue(r, float(times[i])) for r, i in zip(rows, chunk, strict=True)])
    late = frame.iloc[[0]].assign(status="failed")  # an hour behind: its windows are out
    stream = stream.add_elements([TimestampedValue(rows_of(late)[0], float(times[0]))])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    streamed, batch = tmp_path / "stream", tmp_path / "batch"
    streamed.mkdir()
    batch.mkdir()
    names = ["fails", "spend", "visits"]
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        source = p | stream.with_output_types(ROW_TYPE)
        for name in names:
            out = source | name >> ComputeFeatures.from_config(configs()[name])
            collect(out["main"], str(streamed), name)
            collect(out["errors"], str(streamed), f"{name}.errors")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        source = p | beam.Create(rows_of(frame)).with_output_types(ROW_TYPE)
        for name in names:
            out = source | name >> ComputeFeatures.from_config(configs()[name])
            collect(out["main"], str(batch), name)
    for name in names:
        key = lambda r: (r["user_id"], r["window_end"])  # noqa: E731
        got = sorted(collected(str(streamed), name), key=key)
        same_rows(got, sorted(collected(str(batch), name), key=key))
        assert len(got) >= 4
        errors = collected(str(streamed), f"{name}.errors")
        assert [e["reason"].split(":")[0] for e in errors] == ["late event"], name
