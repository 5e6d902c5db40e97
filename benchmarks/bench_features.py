"""FEATURES benchmark: beam_dsl vs a hand-written sliding-window Beam pipeline vs pandas.

    python benchmarks/bench_features.py [--events 1000000] [--entities 10000] [--hours 24]

The job: SLIDING 1h EVERY 5m, per user: count(*), sum(amount), last(amount),
over ``--events`` payments of ``--entities`` users spread over ``--hours``.
All three read the same Parquet file and produce every (user, window) row:

* pandas: each event copied to its 12 windows with numpy, one groupby
  (count, sum; last by sorting on event time). The yardstick.
* beam_dsl: ComputeFeatures on the in-process FnApiRunner; the file is read
  columnar (Parquet row groups become Beam batches of pandas frames) and the
  rows leave as batches, counted by a batched DoFn.
* hand-written Beam: the textbook pipeline, ``WindowInto(SlidingWindows)``
  then ``CombinePerKey``, on the same runner. It is too slow for the full
  data, so it runs on the events of a sample of users (each user's windows
  are independent, so time scales with the number of users) and its time is
  scaled up by ``entities / sample``.

Prints the wall times and ratios; ``--save`` appends the table, with the date
and machine, to benchmarks/results/features.md.
"""

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms import window
from apache_beam.typehints.row_type import RowTypeConstraint

from beam_dsl.ir.features import FeaturesConfig, Item, Window
from beam_dsl.transforms.features.transform import ComputeFeatures

SIZE_S, EVERY_S = 3600, 300
EVENT_TYPE = RowTypeConstraint.from_fields(
    [("user_id", int), ("event_time", float), ("amount", float)])
CONFIG = FeaturesConfig(
    name="bench", entity=("user_id",), timestamp="event_time",
    windows=(Window("sliding", SIZE_S, EVERY_S),),
    select=(
        Item(func="count", args=(), alias="n"),
        Item(func="sum", args=({"col": "amount"},), alias="total"),
        Item(func="last", args=({"col": "amount"},), alias="last_amount"),
    ),
)


def make_events(path: str, events: int, entities: int, hours: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    table = pa.table({
        "user_id": rng.integers(0, entities, events),
        "event_time": np.round(1_700_000_000 + np.sort(rng.uniform(0, hours * 3600, events)), 3),
        "amount": np.round(rng.gamma(2.0, 20.0, events), 2),
    })
    pq.write_table(table, path, row_group_size=100_000)


# ---------------------------------------------------------------- pandas


def run_pandas(path: str) -> tuple[int, float]:
    """Each event copied to its 12 windows, one groupby; ``last`` from time order."""
    frame = pd.read_parquet(path).sort_values("event_time", kind="stable")
    t = frame["event_time"].to_numpy()
    per = SIZE_S // EVERY_S
    first_end = (np.floor(t / EVERY_S).astype(np.int64) + 1) * EVERY_S
    rows = np.repeat(np.arange(len(frame)), per)
    ends = first_end[rows] + np.tile(np.arange(per) * EVERY_S, len(frame))
    copies = pd.DataFrame({"user_id": frame["user_id"].to_numpy()[rows], "window_end": ends,
                           "amount": frame["amount"].to_numpy()[rows]})
    grouped = copies.groupby(["user_id", "window_end"], sort=False)["amount"]
    out = pd.DataFrame({"n": grouped.size(), "total": grouped.sum(), "last_amount": grouped.last()})
    return len(out), _checksum(out)


def _checksum(frame: pd.DataFrame) -> float:
    """A number that changes when any value does (to check the pipelines agree)."""
    return float(frame["n"].sum() + frame["total"].sum() + frame["last_amount"].sum())


# ---------------------------------------------------------------- beam_dsl


class TableFrames(beam.DoFn):
    """Parquet row groups -> Beam batches (pandas frames) of a schema."""

    def __init__(self, row_type=EVENT_TYPE):
        self._type = row_type

    def infer_output_type(self, input_type):
        return self._type

    @beam.DoFn.yields_batches
    def process(self, table) -> Iterator[pd.DataFrame]:
        yield table.to_pandas()


class CountRows(beam.DoFn):
    """A batched sink: counts rows and sums ``checksum`` into a file (so the result leaves
    the pipeline)."""

    def __init__(self, out: str, checksum=_checksum):
        self._out, self._checksum = out, checksum

    def process_batch(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        with open(self._out, "a") as f:
            f.write(f"{len(batch)} {self._checksum(batch)!r}\n")
        return iter(())

    def infer_output_type(self, input_type):
        return input_type


def counted(path: str) -> tuple[int, float]:
    with open(path) as f:
        parts = [line.split() for line in f]
    return sum(int(p[0]) for p in parts), sum(float(p[1]) for p in parts if len(p) > 1)


def run_beam_dsl(path: str, work: str) -> tuple[int, float]:
    out = os.path.join(work, "beam_dsl.count")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        events = (p | beam.io.ReadFromParquetBatched(path)
                  | "Frames" >> beam.ParDo(TableFrames()))
        features = events | ComputeFeatures.from_config(CONFIG)
        _ = features["main"] | "Count" >> beam.ParDo(CountRows(out))
    return counted(out)


# ---------------------------------------------------------------- hand-written Beam


class CountSumLast(beam.CombineFn):
    def create_accumulator(self):
        return (0, 0.0, (-1.0, None))

    def add_input(self, acc, event):
        n, total, last = acc
        t, amount = event
        return (n + 1, total + amount, max(last, (t, amount)))

    def merge_accumulators(self, accs):
        accs = list(accs)
        return (sum(a[0] for a in accs), sum(a[1] for a in accs), max(a[2] for a in accs))

    def extract_output(self, acc):
        return {"n": acc[0], "total": acc[1], "last_amount": acc[2][1]}


def run_hand_written(path: str, work: str, users: int) -> tuple[int, float]:
    out = os.path.join(work, "hand.count")

    def count(_, out=out):
        with open(out, "a") as f:
            f.write("1\n")

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | beam.io.ReadFromParquet(path)
            | beam.Filter(lambda r: r["user_id"] < users)
            | beam.Map(lambda r: window.TimestampedValue(
                (r["user_id"], (r["event_time"], r["amount"])), r["event_time"]))
            | beam.WindowInto(window.SlidingWindows(SIZE_S, EVERY_S))
            | beam.CombinePerKey(CountSumLast())
            | beam.Map(count)
        )
    return counted(out)


# ---------------------------------------------------------------- main


def timed(function, *args) -> tuple[float, tuple[int, float]]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def save(name: str, table: str, argv: list[str] | None) -> None:
    """Appends ``table``, with the date, the machine and the command, to
    benchmarks/results/<name>.md."""
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{name}.md")
    os.makedirs(os.path.dirname(results), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    with open(results, "a") as f:
        f.write(f"\n## {stamp} ({machine})\n\n`python benchmarks/bench_{name}.py "
                f"{' '.join(argv or sys.argv[1:])}`\n\n{table}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--sample", type=int, default=50, help="users for the hand-written run")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "events.parquet")
        make_events(path, args.events, args.entities, args.hours)
        pandas_s, (pandas_rows, pandas_sum) = timed(run_pandas, path)
        dsl_s, (dsl_rows, dsl_sum) = timed(run_beam_dsl, path, work)
        hand_s, (hand_rows, _) = timed(run_hand_written, path, work, args.sample)
    if dsl_rows != pandas_rows or abs(dsl_sum - pandas_sum) > 1e-6 * abs(pandas_sum):
        print(f"results differ: beam_dsl {dsl_rows} rows (checksum {dsl_sum}), pandas "
              f"{pandas_rows} rows (checksum {pandas_sum})", file=sys.stderr)
        return 1
    scale = args.entities / args.sample
    hand_full = hand_s * scale
    table = "\n".join([
        f"events {args.events:,}, entities {args.entities:,}, over {args.hours:g} h; "
        f"SLIDING 1h EVERY 5m; count + sum + last; {pandas_rows:,} window rows",
        "",
        "| pipeline | wall (s) | vs pandas | beam_dsl speed-up |",
        "| --- | ---: | ---: | ---: |",
        f"| pandas (reference) | {pandas_s:.2f} | 1.0x | |",
        f"| beam_dsl ComputeFeatures (FnApiRunner) | {dsl_s:.2f} | {dsl_s / pandas_s:.1f}x | |",
        f"| hand-written WindowInto(SlidingWindows) + CombinePerKey, {args.sample} users "
        f"({hand_rows:,} rows) scaled x{scale:g} | {hand_full:.0f} ({hand_s:.1f} measured) | "
        f"{hand_full / pandas_s:.0f}x | {hand_full / dsl_s:.0f}x |",
    ])
    print(table)
    if args.save:
        save("features", table, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
