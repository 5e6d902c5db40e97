"""What atomic, versioned publishing costs a TRAIN run (issue: "a model store you can trust").

Side by side in one process, for the models of the training benchmark's shape
(one pipeline of encoders + decision tree per key):

* fit: fitting every key's model (the work a TRAIN run does anyway);
* in place: how models were saved before the model store (each file written
  to a temporary name and renamed over the last run's, then a manifest);
* store: ``ModelStore`` (staging folder, each file fsynced, manifest, rename of
  the folder, one symlink swap, pruning old versions).

The cost is per model (an fsync of each file, then one rename and one symlink
swap); the script prints it and its share of fitting and saving alone, which
overstates its share of a whole run (reading, preparing, Beam). Usage::

    python benchmarks/bench_publish.py [--keys 50] [--rows 200000] [--repeats 3] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from beam_dsl.transforms.training import modelstore

HERE = os.path.dirname(os.path.abspath(__file__))


def _models(keys: int, rows: int) -> tuple[list, float]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "key": rng.integers(0, keys, rows), "age": rng.integers(18, 90, rows),
        "hours": rng.integers(1, 99, rows), "job": rng.choice(list("abcdefgh"), rows),
    })
    frame["y"] = np.where(frame.age + frame.hours + rng.normal(0, 20, rows) > 100, "hi", "lo")
    start, models = time.perf_counter(), []
    for key, part in frame.groupby("key"):
        encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["job"]),
                                    ("pass", "passthrough", ["age", "hours"])])
        model = Pipeline([("encode", encode), ("model", DecisionTreeClassifier(max_depth=8))])
        models.append(((int(key),), model.fit(part[["age", "hours", "job"]], part.y)))
    return models, time.perf_counter() - start


def in_place(models: list, root: str) -> None:
    """Before the store (3aac69c's modelstore.save_model): each file dumped to a temporary
    name beside it and renamed over the last run's, no fsync, then the manifest."""
    import skops.io

    folder = os.path.join(root, "in_place")
    os.makedirs(folder, exist_ok=True)
    entries = []
    for key, model in models:
        path = os.path.join(folder, f"{key[0]}.skops")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".skops")
        os.close(fd)
        skops.io.dump(model, tmp)
        os.replace(tmp, path)
        entries.append({"key": list(key), "sha256": modelstore.file_sha256(path)})
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"models": entries}, f)


def store(models: list, root: str, run: str) -> None:
    published = modelstore.ModelStore(os.path.join(root, "store", "m", "{key}.skops"))
    published.begin(run)
    entries = []
    for key, model in models:
        file, digest = published.save(model, run, key)
        entries.append({"key": list(key), "file": file, "sha256": digest, "promoted": True})
    published.publish(run, {"models": entries})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/publish.md")
    args = parser.parse_args()
    models, fit_s = _models(args.keys, args.rows)
    times: dict[str, list[float]] = {"in place": [], "store": []}
    with tempfile.TemporaryDirectory() as root:
        for i in range(args.repeats):  # interleaved, so load on the machine hits both alike
            for name, save in (("in place", lambda: in_place(models, root)),
                               ("store", lambda i=i: store(models, root, f"r{i}"))):
                start = time.perf_counter()
                save()
                times[name].append(time.perf_counter() - start)
    base, new = (statistics.median(times[n]) for n in ("in place", "store"))
    added = (new - base) / (fit_s + base)
    lines = [
        f"{args.keys} keys, {args.rows:,} rows; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()} ({os.cpu_count()} CPUs), load {os.getloadavg()[0]:.1f}",
        "",
        "| step | seconds (median) |",
        "| --- | ---: |",
        f"| fit every key's model | {fit_s:.3f} |",
        f"| save in place + manifest (before) | {base:.3f} |",
        f"| publish through ModelStore | {new:.3f} |",
        "",
        f"publishing adds {(new - base) / args.keys * 1000:+.1f} ms per model, "
        f"{added:+.1%} of fitting and saving alone",
        "",
        "The goal (< 5% of a TRAIN run) is judged against the whole run: "
        "benchmarks/results/training.md measures `beam_dsl run` of this shape.",
    ]
    print("\n".join(lines))
    if args.save:
        with open(os.path.join(HERE, "results", "publish.md"), "w") as f:
            f.write("# Publishing cost\n\nCommand: `python benchmarks/bench_publish.py --save`"
                    "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
