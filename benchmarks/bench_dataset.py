"""DATASET benchmark: beam_dsl's BuildDataset vs pandas ``merge_asof``.

    python benchmarks/bench_dataset.py [--labels 1000000] [--events 1000000] [--entities 10000]

The job: 1,000,000 labelled rows (user, time, label) joined with the FEATURES
rows of 1,000,000 payments of 10,000 users over one day (SLIDING 1h EVERY 5m,
count + sum + last, TTL 2h: about 2.9 million rows), each labelled row
taking the features as of its time (docs/FEATURES.md, "As of T"). Both read
the same two Parquet files in one run, from reading to the last joined row:

* pandas: ``merge_asof`` by user (the latest row ending at or before T), then
  the rule's two vectorized checks (the row's window must end at T's window
  boundary, else the empty values; expired when T is at or after its
  ``expires_at``). The yardstick.
* beam_dsl: BuildDataset on the in-process FnApiRunner; both files are read
  columnar (Parquet row groups become Beam batches of pandas frames) and the
  joined rows leave as batches, counted by a batched DoFn.

The FEATURES rows are made beforehand by beam_dsl's plan (not timed). The two
results are compared (row count and a checksum of every feature and marker).
Prints the wall times and the ratio; ``--save`` appends the table, with the
date and machine, to benchmarks/results/dataset.md.
"""

import argparse
import os
import sys
import tempfile
import time

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.typehints.row_type import RowTypeConstraint
from bench_features import CountRows, TableFrames, counted, save

from beam_dsl.ir.dataset import DatasetConfig
from beam_dsl.ir.features import FeaturesConfig, Item, Window
from beam_dsl.transforms.features.dataset import BuildDataset
from beam_dsl.transforms.features.panes import FeaturePlan, panes_of, prepare, window_rows

SIZE_S, EVERY_S, TTL_S = 3600, 300, 7200
START = 1_700_000_000
EVENT_TYPE = RowTypeConstraint.from_fields(
    [("user_id", int), ("event_time", float), ("amount", float)])
FEATURES = FeaturesConfig(
    name="spend", entity=("user_id",), timestamp="event_time",
    windows=(Window("sliding", SIZE_S, EVERY_S),),
    select=(
        Item(func="count", args=(), alias="n"),
        Item(func="sum", args=({"col": "amount"},), alias="total"),
        Item(func="last", args=({"col": "amount"},), alias="last_amount"),
    ),
    ttl_s=TTL_S,
)
PLAN = FeaturePlan.build(FEATURES, dict(EVENT_TYPE._fields))
FEATURE_TYPE = RowTypeConstraint.from_fields(PLAN.output_fields())
LABEL_TYPE = RowTypeConstraint.from_fields(
    [("user_id", int), ("label_time", float), ("label", int)])
DATASET = DatasetConfig(name="training", entity=("user_id",), as_of="label_time",
                        features={"spend": FEATURES})


def make_inputs(work: str, labels: int, events: int, entities: int, hours: float,
                seed: int = 0) -> tuple[str, str, int]:
    """Writes labels.parquet and features.parquet (the FEATURES rows); returns their paths and
    the number of FEATURES rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, entities, events),
        "event_time": np.round(START + np.sort(rng.uniform(0, hours * 3600, events)), 3),
        "amount": np.round(rng.gamma(2.0, 20.0, events), 2),
    })
    found, _, _ = prepare(frame, PLAN)
    rows = window_rows(panes_of(found, PLAN), PLAN)
    features = os.path.join(work, "features.parquet")
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), features,
                   row_group_size=200_000)
    label_path = os.path.join(work, "labels.parquet")
    pq.write_table(pa.table({
        "user_id": rng.integers(0, entities, labels),
        "label_time": np.round(START + rng.uniform(0, (hours + 3) * 3600, labels), 3),
        "label": rng.integers(0, 2, labels),
    }), label_path, row_group_size=200_000)
    return label_path, features, len(rows)


def _checksum(frame: pd.DataFrame) -> float:
    """A number that changes when any feature or marker does (to check the two agree)."""
    return float(frame["n"].fillna(0).sum() + frame["total"].fillna(0).sum()
                 + frame["last_amount"].fillna(0).sum() + 1000 * frame["spend_expired"].sum())


# ---------------------------------------------------------------- pandas


def run_pandas(labels_path: str, features_path: str) -> tuple[int, float]:
    """merge_asof by user, then the as-of rule's boundary and expiry checks."""
    labels = pd.read_parquet(labels_path)
    features = pd.read_parquet(features_path)
    labels["t_ms"] = np.rint(labels["label_time"].to_numpy() * 1000).astype(np.int64)
    features["end_ms"] = np.rint(features["window_end"].to_numpy() * 1000).astype(np.int64)
    joined = pd.merge_asof(
        labels.sort_values("t_ms"), features.sort_values("end_ms"), left_on="t_ms",
        right_on="end_ms", by="user_id", direction="backward", allow_exact_matches=True)
    t = joined["t_ms"].to_numpy()
    boundary = t - t % (EVERY_S * 1000)
    found = joined["end_ms"].notna().to_numpy()
    expired = found & (t >= np.rint(joined["expires_at"].to_numpy() * 1000))
    current = found & (joined["end_ms"].to_numpy() == boundary) & ~expired
    out = pd.DataFrame({
        "n": np.where(current, joined["n"], np.where(expired, np.nan, 0)),
        "total": np.where(current, joined["total"], np.nan),
        "last_amount": np.where(current, joined["last_amount"], np.nan),
        "spend_expired": expired,
    })
    return len(out), _checksum(out)


# ---------------------------------------------------------------- beam_dsl


def run_beam_dsl(labels_path: str, features_path: str, work: str) -> tuple[int, float]:
    out = os.path.join(work, "beam_dsl.count")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        rows = (p | "ReadLabels" >> beam.io.ReadFromParquetBatched(labels_path)
                | "Labels" >> beam.ParDo(TableFrames(LABEL_TYPE)))
        features = (p | "ReadFeatures" >> beam.io.ReadFromParquetBatched(features_path)
                    | "Features" >> beam.ParDo(TableFrames(FEATURE_TYPE)))
        joined = {"rows": rows, "spend": features} | BuildDataset.from_config(DATASET)
        _ = joined["main"] | "Count" >> beam.ParDo(CountRows(out, _checksum))
    return counted(out)


# ---------------------------------------------------------------- main


def timed(function, *args) -> tuple[float, tuple[int, float]]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        labels, features, feature_rows = make_inputs(work, args.labels, args.events,
                                                     args.entities, args.hours)
        pandas_s, (pandas_rows, pandas_sum) = timed(run_pandas, labels, features)
        dsl_s, (dsl_rows, dsl_sum) = timed(run_beam_dsl, labels, features, work)
    if dsl_rows != pandas_rows or abs(dsl_sum - pandas_sum) > 1e-9 * abs(pandas_sum):
        print(f"results differ: beam_dsl {dsl_rows} rows (checksum {dsl_sum}), pandas "
              f"{pandas_rows} rows (checksum {pandas_sum})", file=sys.stderr)
        return 1
    table = "\n".join([
        f"labelled rows {args.labels:,}; FEATURES rows {feature_rows:,} (events "
        f"{args.events:,}, entities {args.entities:,}, over {args.hours:g} h; SLIDING 1h "
        f"EVERY 5m; count + sum + last; TTL 2h)",
        "",
        "| pipeline | wall (s) | vs pandas |",
        "| --- | ---: | ---: |",
        f"| pandas merge_asof (reference) | {pandas_s:.2f} | 1.0x |",
        f"| beam_dsl BuildDataset (FnApiRunner) | {dsl_s:.2f} | {dsl_s / pandas_s:.1f}x |",
    ])
    print(table)
    if args.save:
        save("dataset", table, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
