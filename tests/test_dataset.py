"""DATASET (BuildDataset): whole `beam_dsl run` pipelines in-process and on Dask, from FEATURES in
the same pipeline and from their OFFLINE Parquet, errors, online stores that cannot answer,
and the mistakes lint, the config and the build report."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pandas as pd
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
)

from beam_dsl.cli import main
from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.features_cli import get_features
from beam_dsl.ir.dataset import DatasetConfig
from beam_dsl.runner import run_pipeline
from beam_dsl.transforms.common.rows import row_type
from beam_dsl.transforms.features.dataset import BuildDataset

SPEC = """
FEATURES fails
  ENTITY user_id
  TIMESTAMP event_time
  WHERE status = 'failed'
  WINDOW SLIDING 1h EVERY 10m
  SELECT count(*) AS fails_1h, last_k(merchant, 2) AS fail_merchants
  TTL 2h
  OFFLINE 'out/features/fails';

FEATURES spend
  ENTITY user_id
  TIMESTAMP event_time
  WINDOWS (30m, 2h)
  SELECT sum(amount) AS spend, max(amount) AS largest
  TTL 3h;

DATASET training
  ENTITY user_id
  AS OF label_time
  JOIN fails, spend;
"""
ITEMS = {
    "fails": dict(items=[("count", None, None, None, "fails_1h"),
                         ("last_k", "merchant", 2, None, "fail_merchants")],
                  windows=[(3600, 600, "")], ttl_s=7200.0,
                  where=lambda f: f["status"] == "failed"),
    "spend": dict(items=[("sum", "amount", None, None, "spend"),
                         ("max", "amount", None, None, "largest")],
                  windows=[(1800, 1800, "_30m"), (7200, 1800, "_2h")], ttl_s=10800.0),
}
PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: payments, config: {path: payments.csv}}
    - {type: ReadFromCsv, name: labels, config: {path: labels.csv}}
    - {type: fails, input: payments}
    - {type: spend, input: payments}
    - type: training
      input: {rows: labels, fails: FAILS, spend: spend}
      config: {shards: 5}
    - {type: WriteToJson, name: write_rows, input: training, config: {path: out/OUT/rows}}
    - {type: WriteToJson, name: write_errors, input: training.errors,
       config: {path: out/OUT/errors}}
"""
OFFLINE = "    - {type: ReadFromParquet, name: offline, config: {path: out/features/fails/*}}\n"
START = 1_700_000_000


def _labels(n: int, seed: int) -> pd.DataFrame:
    """Labelled rows over and after the events' four hours; times as ISO-8601 or epoch text;
    after the first 100 (Beam's schema sample), rows whose time or entity cannot be read."""
    rng = np.random.default_rng(seed)
    t = np.round(START - 1800 + rng.uniform(0, 8 * 3600, n), 3)
    times = [f"{x:.3f}" if i % 2 else pd.Timestamp(round(x * 1000), unit="ms",
                                                   tz="UTC").isoformat()
             for i, x in enumerate(t)]
    frame = pd.DataFrame({"row_id": range(n), "user_id": rng.integers(0, 9, n).astype(object),
                          "label_time": times, "label": rng.integers(0, 2, n)})
    frame.loc[[120, 150], "label_time"] = ["soon", ""]
    frame.loc[[130], "user_id"] = None
    return frame


def _json(pattern: str) -> list[dict]:
    out = []
    for path in glob.glob(pattern):
        with open(path) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


def _check(rows: list[dict], events: pd.DataFrame, frame: pd.DataFrame) -> None:
    good = frame.drop(index=[120, 130, 150])
    assert sorted(r["row_id"] for r in rows) == good["row_id"].tolist()
    by_id = {r["row_id"]: r for r in rows}
    queries = [(int(u), pd.Timestamp(t).timestamp() if not t.replace(".", "").isdigit()
                else float(t)) for u, t in zip(good["user_id"], good["label_time"], strict=True)]
    for name, reference in ITEMS.items():
        want = expected_as_of(events, "user_id", "event_time", reference["items"], queries,
                              windows=reference["windows"], ttl_s=reference["ttl_s"],
                              where=reference.get("where"))
        assert any(a["expired"] for a in want) and any(not a["expired"] for a in want), name
        for row_id, query, answer in zip(good["row_id"], queries, want, strict=True):
            row = by_id[row_id]
            check_answer({**row, "expired": row[f"{name}_expired"]}, answer, reference["items"],
                         f"{name} {query}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dataset")
    payments(n=500, users=8, hours=4.0, seed=9).to_csv(directory / "payments.csv", index=False)
    _labels(300, seed=3).to_csv(directory / "labels.csv", index=False)
    (directory / "spec.bdsl").write_text(SPEC)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["FnApiRunner", "DaskRunner"])
def test_dataset_pipeline_joins_each_row_once_as_of_its_time(workdir, runner):
    out = f"in_pipeline_{runner}"
    path = workdir / f"{out}.yaml"
    path.write_text(PIPELINE.replace("FAILS", "fails").replace("OUT", out))
    run_pipeline(str(path), runner=runner, progress=None)
    events = pd.read_csv(workdir / "payments.csv")
    frame = pd.read_csv(workdir / "labels.csv", keep_default_na=False, dtype={"label_time": str})
    _check(_json(f"{workdir}/out/{out}/rows*"), events, frame)
    errors = sorted(_json(f"{workdir}/out/{out}/errors*"), key=lambda e: json.loads(
        e["row"])["row_id"])
    assert [json.loads(e["row"])["row_id"] for e in errors] == [120, 130, 150]
    assert errors[0]["reason"] == "AS OF label_time: 'soon' is not an epoch time or ISO-8601 " \
        "string" and errors[0]["transform"] == "training"
    assert "user_id" in errors[1]["reason"]
    assert "is not an epoch time" in errors[2]["reason"]


@pytest.mark.slow
def test_dataset_over_the_offline_parquet_equals_the_one_in_the_pipeline(workdir):
    first = workdir / "first.yaml"
    first.write_text(PIPELINE.replace("FAILS", "fails").replace("OUT", "first"))
    run_pipeline(str(first), progress=None)
    assert glob.glob(f"{workdir}/out/features/fails/part-*.parquet")
    second = workdir / "offline.yaml"
    text = PIPELINE.replace("FAILS", "offline").replace("OUT", "offline")
    second.write_text(text.replace("    - {type: fails, input: payments}\n", OFFLINE))
    run_pipeline(str(second), progress=None)
    key = lambda r: r["row_id"]  # noqa: E731
    assert sorted(_json(f"{workdir}/out/offline/rows*"), key=key) == sorted(
        _json(f"{workdir}/out/first/rows*"), key=key)


# ---------------------------------------------------------------- online stores


LABEL_TYPE = row_type([("user_id", int), ("label_time", float)])


def test_rows_an_online_store_cannot_answer_go_to_errors(tmp_path):
    spec, _ = parse(SPEC)
    fails = lower_spec(spec)[0].config
    uri = f"sqlite:///{tmp_path}/store.db"
    fails = dataclasses.replace(fails, online=uri, offline=None)
    events = payments(n=300, users=4, hours=4.0, seed=2)
    fill_store(uri, fails, events, FIELDS)
    config = DatasetConfig(name="serving", entity=("user_id",), as_of="label_time",
                           features={"fails": fails})
    late, early = START + 5 * 3600.0, float(START)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        rows = p | beam.Create([beam.Row(user_id=1, label_time=late),
                                beam.Row(user_id=1, label_time=early),
                                beam.Row(user_id=42, label_time=late)]
                               ).with_output_types(LABEL_TYPE)
        out = rows | BuildDataset.from_config(config)
        collect(out["main"], str(tmp_path), "main")
        collect(out["errors"], str(tmp_path), "errors")
    main_rows = sorted(collected(str(tmp_path), "main"), key=lambda r: r["user_id"])
    want = expected_as_of(events, "user_id", "event_time", ITEMS["fails"]["items"],
                          [(1, late)], windows=[(3600, 600, "")], ttl_s=7200.0,
                          where=ITEMS["fails"]["where"])[0]
    check_answer({**main_rows[0], "expired": main_rows[0]["fails_expired"]}, want,
                 ITEMS["fails"]["items"], "user 1")
    # An entity the store never saw has no events: the empty values.
    assert main_rows[1] == {"user_id": 42, "label_time": late, "fails_1h": 0,
                            "fail_merchants": [], "fails_expired": False}
    [error] = collected(str(tmp_path), "errors")
    assert "fails: the online store keeps this entity's rows from" in error["reason"]
    assert json.loads(error["row"]) == {"user_id": 1, "label_time": early}


# ---------------------------------------------------------------- mistakes


def _config() -> DatasetConfig:
    spec, _ = parse(SPEC)
    return lower_spec(spec)[2].config


def _build_error(inputs: dict) -> str:
    with pytest.raises(DiagnosticError) as caught:
        with beam.Pipeline() as p:
            pcolls = {name: p | name >> beam.Create([]).with_output_types(kind)
                      for name, kind in inputs.items()}
            _ = pcolls | BuildDataset.from_config(_config())
    found = caught.value.diagnostics[0]
    assert found.code == "E446" and found.file == "DATASET training"
    return found.render()


FAILS_ROWS = row_type([("user_id", int), ("window_start", float), ("window_end", float),
                       ("expires_at", float), ("fails_1h", int), ("fail_merchants", str)])
ROWS = row_type([("user_id", int), ("label_time", str), ("label", int)])


@pytest.mark.parametrize("inputs, message", [
    ({"labels": ROWS}, "DATASET needs an input 'rows'"),
    ({"rows": ROWS, "fail": FAILS_ROWS}, "did you mean 'fails'?"),
    ({"rows": row_type([("user_id", int), ("label_tme", str)])},
     "input 'rows' has no column 'label_time'"),
    ({"rows": ROWS, "fails": row_type([("user_id", int), ("window_end", float)])},
     "input 'fails' has no column 'fails_1h'"),
    ({"rows": ROWS, "fails": FAILS_ROWS}, "FEATURES spend has no input 'spend' and no ONLINE"),
    ({"rows": row_type([("user_id", int), ("label_time", str), ("spend_2h", int)]),
      "fails": FAILS_ROWS}, "column 'spend_2h' of spend clashes"),
])
def test_inputs_that_do_not_fit_are_coded_errors(inputs, message):
    if "spend_2h" in message:  # spend must have an input for its clash to be found
        inputs["spend"] = row_type([("user_id", int), ("window_end", float),
                                    ("expires_at", float), ("spend_30m", float),
                                    ("largest_30m", float), ("spend_2h", float),
                                    ("largest_2h", float)])
    assert message in _build_error(inputs)


def test_a_streaming_dataset_reads_online_stores_only():
    from apache_beam.testing.test_stream import TestStream

    with pytest.raises(DiagnosticError, match="a streaming DATASET reads its feature sets"):
        with beam.Pipeline() as p:
            rows = p | TestStream().with_output_types(ROWS)
            config = _config()
            config = dataclasses.replace(config, features={"fails": config.features["fails"]})
            fails = p | "fails" >> beam.Create([]).with_output_types(FAILS_ROWS)
            _ = {"rows": rows, "fails": fails} | BuildDataset.from_config(config)


@pytest.mark.parametrize("change, message", [
    (lambda c: dataclasses.replace(c, entity=("user_id", "shop")), "keyed by 1"),
    (lambda c: dataclasses.replace(c, features={}), "joins no FEATURES"),
    (lambda c: dataclasses.replace(c, shards=0), "shards must be at least 1"),
    (lambda c: dataclasses.replace(c, as_of="spend_30m"), "clashes with the AS OF column"),
    (lambda c: dataclasses.replace(c, features={
        **c.features, "fails": dataclasses.replace(c.features["fails"], select=tuple(
            dataclasses.replace(i, alias="spend_30m") for i in c.features["fails"].select[:1]))}),
     "column 'spend_30m' of spend clashes with a column of fails"),
])
def test_configs_built_from_python_are_validated(change, message):
    config = change(_config())
    with pytest.raises(DiagnosticError) as caught:
        BuildDataset(**config.to_json())
    found = caught.value.diagnostics[0]
    assert found.code == "E446" and message in found.message, found.render()


def test_lint_finds_clashing_columns_and_dataset_outputs(tmp_path, capsys):
    (tmp_path / "spec.bdsl").write_text(SPEC)
    pd.DataFrame({"user_id": [1], "label_time": ["1700000000"], "fails_1h": [0],
                  "fails_expired": [False]}).to_csv(tmp_path / "labels.csv", index=False)
    payments(n=10).to_csv(tmp_path / "payments.csv", index=False)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.replace("FAILS", "fails").replace(
        "OUT", "x").replace("training.errors", "training.eror"))
    assert main(["lint", str(tmp_path / "pipeline.yaml")]) == 1
    out = capsys.readouterr().out
    for column in ("fails_1h", "fails_expired"):
        assert f"error[E227]: feature '{column}' of fails clashes with a column of the " \
            "labelled rows" in out
    assert "error[E110]" in out and "training.eror" in out


# ---------------------------------------------------------------- the fraud example

FRAUD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines",
                     "fraud")
FAILS_ITEMS = [("count", None, None, None, "fails_1h"),
               ("sum", "amount", None, None, "failed_amount_1h")]


@pytest.mark.slow
def test_fraud_example_trains_on_point_in_time_rows_and_serves_from_the_store(tmp_path):
    spec = importlib.util.spec_from_file_location("fraud_generate",
                                                  os.path.join(FRAUD, "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    payments_frame, labels, requests = module.generate(rows=4000, users=40, hours=24.0,
                                                       labels=1000, seed=3)
    data = tmp_path / "data" / "generated"
    data.mkdir(parents=True)
    for name, frame in (("payments", payments_frame), ("labels", labels),
                        ("requests", requests)):
        frame.to_csv(data / f"{name}.csv", index=False)
    for name in ("fraud.bdsl", "train.yaml", "serve.yaml"):
        shutil.copy(os.path.join(FRAUD, name), tmp_path)

    trained = run_pipeline(str(tmp_path / "train.yaml"), progress=None)
    assert trained.errors == 0
    [metrics] = _json(f"{tmp_path}/out/metrics*")
    assert metrics["promoted"] and metrics["rows"] == len(labels)
    assert metrics["accuracy"] > (1 - labels["is_fraud"].mean())  # beats "never fraud"
    training = _json(f"{tmp_path}/out/training*")
    assert len(training) == len(labels)
    queries = [(r["user_id"], pd.Timestamp(r["label_time"]).timestamp()) for r in training]
    want = expected_as_of(payments_frame, "user_id", "event_time", FAILS_ITEMS, queries,
                          windows=[(3600, 300, "")], ttl_s=86400.0,
                          where=lambda f: f["status"] == "failed")
    for row, answer in zip(training, want, strict=True):
        check_answer({**row, "expired": row["user_payment_fails_expired"]}, answer,
                     FAILS_ITEMS, f"training {row['user_id']} {row['label_time']}")

    served = run_pipeline(str(tmp_path / "serve.yaml"), progress=None)
    assert served.errors == 0
    scores = sorted(_json(f"{tmp_path}/out/scores*"), key=lambda r: r["request_id"])
    assert [r["request_id"] for r in scores] == requests["request_id"].tolist()
    assert {r["predicted_fraud"] for r in scores} <= {0, 1}
    store = f"sqlite:///{tmp_path}/out/features.db"
    queries = [(r["user_id"], pd.Timestamp(r["request_time"]).timestamp()) for r in scores]
    want = expected_as_of(payments_frame, "user_id", "event_time", FAILS_ITEMS, queries,
                          windows=[(3600, 300, "")], ttl_s=86400.0,
                          where=lambda f: f["status"] == "failed")
    failing = set(payments_frame.loc[payments_frame["status"] == "failed", "user_id"])
    for row, answer, (user, t) in zip(scores, want, queries, strict=True):
        check_answer({**row, "expired": row["user_payment_fails_expired"]}, answer,
                     FAILS_ITEMS, f"serving {user}")
        if user in failing:  # the store knows users with a failed payment
            got = get_features("user_payment_fails", store, {"user_id": user}, as_of=t)
            assert got["fails_1h"] == row["fails_1h"]
    assert any(r["fails_1h"] for r in scores)
