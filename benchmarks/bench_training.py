"""Per-key training: beam_dsl's TRAIN against three hand-written ways of doing the same.

    python benchmarks/bench_training.py [--rows 200000] [--keys 50] [--repeats 3] [--save]

The job: a CSV of ``--rows`` rows and ``--keys`` keys (4 numeric and 3
categorical features, a yes/no label); for every key, hold out 20% of its
rows, fit a scikit-learn Pipeline (one-hot encoding of the categorical
columns, the numeric ones passed through, a DecisionTreeClassifier with
max_depth 8), score accuracy on the held-out rows and pickle the model to a
file. Every variant runs that same Pipeline (built the way beam_dsl builds it,
so the fits cost the same) and runs as its own process, timed from start to
exit (interpreter start and imports included: that is what a user waits for):

1. **beam_dsl**: ``python -m beam_dsl run pipeline.yaml`` (Beam YAML:
   ReadFromCsv -> the TRAIN of bench.bdsl -> WriteToJson, in-process
   FnApiRunner). Row 1b runs the same transform from Python
   (``ReadFromCsv | TrainModels``), without Beam YAML and the CLI's row
   counting, to show what those cost.
2. **Beam, by hand**: the per-entity training talk's pipeline: ReadFromText,
   split each line, key it, GroupByKey, build a DataFrame per key, fit, pickle
   (FnApiRunner).
3. **pandas**: read_csv, groupby, a loop over the keys, on one core.
4. **joblib**: read_csv, groupby, ``Parallel(n_jobs=-1)`` over the keys (loky
   processes on every core).

Variants run ``--repeats`` times, interleaved; the table shows the median and
the fastest wall time, the ratio of medians to joblib's, and the median CPU
time (user + system, of the process and the processes it waited for: loky's
workers too). Each variant must
write ``--keys`` models; the mean held-out accuracy is shown as a sanity check
(the holdout rows differ between variants, so it agrees only roughly).
``--save`` writes the table to benchmarks/results/training.md (keeping the notes
under "Where the time goes" there).
"""

import argparse
import datetime
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work", "training")
RESULTS = os.path.join(HERE, "results", "training.md")
NOTES = "## Where the time goes"  # kept when --save rewrites the table
NUMERIC = ["x1", "x2", "x3", "x4"]
CATEGORICAL = ["c1", "c2", "c3"]
HOLDOUT, SEED = 0.2, 7

SPEC = """TRAIN per_key
  PER key
  FEATURES x1, x2, x3, x4, c1, c2, c3
  LABEL label
  USING sklearn.tree.DecisionTreeClassifier(max_depth = 8, random_state = 0)
  HOLDOUT 20% SEED 7
  METRICS accuracy
  SAVE TO 'models/beam_dsl/{key}.pkl';
"""

PIPELINE = """specs: [bench.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: data, config: {path: data.csv}}
    - {type: per_key, input: data}
    - {type: WriteToJson, input: per_key, config: {path: out/metrics}}
"""

VARIANTS = {
    "beam_dsl": "1. beam_dsl: `python -m beam_dsl run pipeline.yaml`",
    "beam_dsl_api": "1b. beam_dsl transform from Python (no Beam YAML)",
    "beam_by_hand": "2. Beam by hand (ReadFromText, split, GroupByKey)",
    "pandas": "3. pandas groupby loop, one core",
    "joblib": "4. joblib Parallel, all cores",
}


# ---------------------------------------------------------------- data


def write_data(rows: int, keys: int, path: str) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "key": rng.choice([f"k{i:03d}" for i in range(keys)], rows),
            "x1": rng.normal(size=rows).round(4),
            "x2": rng.normal(size=rows).round(4),
            "x3": rng.integers(0, 100, rows),
            "x4": rng.exponential(size=rows).round(4),
            "c1": rng.choice(list("abcdefgh"), rows),
            "c2": rng.choice(["red", "green", "blue", "cyan", "pink"], rows),
            "c3": rng.choice([f"z{i}" for i in range(12)], rows),
        }
    )
    signal = (frame.x1 + 0.5 * frame.x2 + frame.c1.isin(list("abc")) + 0.01 * frame.x3
              + rng.normal(size=rows) * 0.7)
    frame["label"] = np.where(signal > 1.0, "yes", "no")
    frame.to_csv(path, index=False)


# ---------------------------------------------------------------- the baselines' per-key work


def fit_and_save(key: str, frame, out_dir: str) -> float:
    """Holdout, the same Pipeline TRAIN fits, accuracy, pickle: one key of styles 2-4."""
    import pickle

    from sklearn.compose import ColumnTransformer
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    frame = frame.sample(frac=1.0, random_state=SEED)
    held = int(round(len(frame) * HOLDOUT))
    test, train = frame.iloc[:held], frame.iloc[held:]
    model = Pipeline([
        ("encode", ColumnTransformer(
            [("onehot", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
             ("passthrough", "passthrough", NUMERIC)],
            sparse_threshold=0.05,
        )),
        ("model", DecisionTreeClassifier(max_depth=8, random_state=0)),
    ])
    model.fit(train[NUMERIC + CATEGORICAL], train["label"])
    accuracy = accuracy_score(test["label"], model.predict(test[NUMERIC + CATEGORICAL]))
    with open(os.path.join(out_dir, f"{key}.pkl"), "wb") as f:
        pickle.dump(model, f)
    return float(accuracy)


def _typed(frame):
    frame[NUMERIC] = frame[NUMERIC].astype(float)
    return frame


def run_pandas(data: str, out_dir: str) -> list[float]:
    import pandas as pd

    frame = _typed(pd.read_csv(data))
    return [fit_and_save(key, group, out_dir) for key, group in frame.groupby("key")]


def run_joblib(data: str, out_dir: str) -> list[float]:
    import pandas as pd
    from joblib import Parallel, delayed

    frame = _typed(pd.read_csv(data))
    return Parallel(n_jobs=-1)(
        delayed(fit_and_save)(key, group, out_dir) for key, group in frame.groupby("key")
    )


def run_beam_by_hand(data: str, out_dir: str) -> list[float]:
    """The per-entity training talk's pipeline: a split per line, rows grouped per key."""
    import apache_beam as beam
    import pandas as pd
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    columns = ["key", *NUMERIC, *CATEGORICAL, "label"]

    def train(element):
        key, rows = element
        frame = _typed(pd.DataFrame(list(rows), columns=columns))
        yield fit_and_save(key, frame, out_dir)

    accuracies = os.path.join(out_dir, "accuracies.txt")
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        _ = (
            pipeline
            | beam.io.ReadFromText(data, skip_header_lines=1)
            | "Split" >> beam.Map(lambda line: line.split(","))
            | "Key" >> beam.Map(lambda fields: (fields[0], fields))
            | beam.GroupByKey()
            | "Train" >> beam.FlatMap(train)
            | beam.combiners.ToList()
            | beam.Map(lambda values: open(accuracies, "w").write(json.dumps(values)))
        )
    with open(accuracies) as f:
        return json.load(f)


def run_beam_dsl_api(data: str, out_dir: str) -> list[float]:
    """The TRAIN of bench.bdsl through TrainModels from Python: ReadFromCsv | TrainModels."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_dsl.dsl.lower import lower_spec
    from beam_dsl.dsl.parser import parse
    from beam_dsl.transforms.training.transform import TrainModels

    spec, _ = parse(SPEC.replace("models/beam_dsl", out_dir))
    (definition,) = lower_spec(spec)
    accuracies = os.path.join(out_dir, "accuracies.txt")
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        _ = (
            pipeline
            | beam.io.ReadFromCsv(data)
            | TrainModels.from_config(definition.config)
        )["main"] | beam.combiners.ToList() | beam.Map(
            lambda rows: open(accuracies, "w").write(json.dumps([r.accuracy for r in rows]))
        )
    with open(accuracies) as f:
        return json.load(f)


STYLES = {
    "beam_dsl_api": run_beam_dsl_api,
    "beam_by_hand": run_beam_by_hand,
    "pandas": run_pandas,
    "joblib": run_joblib,
}


def child(style: str, data: str, out_dir: str) -> None:
    """One variant, in this (fresh) process; prints what it did as JSON."""
    start = time.perf_counter()
    accuracies = STYLES[style](data, out_dir)
    print(json.dumps({"work_s": time.perf_counter() - start, "accuracies": accuracies}))


# ---------------------------------------------------------------- the parent


def run_variant(style: str, data: str) -> dict:
    """Runs one variant as a process; returns its wall time, models and accuracies."""
    out_dir = os.path.join(WORK, "models", style)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(os.path.join(WORK, "out"), ignore_errors=True)
    os.makedirs(out_dir)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if style == "beam_dsl":
        command = [sys.executable, "-m", "beam_dsl", "run", "--quiet",
                   os.path.join(WORK, "pipeline.yaml")]
    else:
        command = [sys.executable, __file__, "--child", style, "--data", data, "--out", out_dir]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{style} failed:\n{done.stdout}\n{done.stderr}")
    if style == "beam_dsl":
        metrics = []
        for path in glob.glob(os.path.join(WORK, "out", "metrics-*")):
            with open(path) as f:
                metrics += [json.loads(line) for line in f]
        accuracies = [m["accuracy"] for m in metrics]
    else:
        accuracies = json.loads(done.stdout.strip().splitlines()[-1])["accuracies"]
    models = len(glob.glob(os.path.join(out_dir, "*.pkl")))
    return {"wall": wall, "cpu": cpu, "models": models, "accuracy": statistics.mean(accuracies)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores available, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.out)
        return

    os.makedirs(WORK, exist_ok=True)
    data = os.path.join(WORK, "data.csv")
    write_data(args.rows, args.keys, data)
    with open(os.path.join(WORK, "bench.bdsl"), "w") as f:
        f.write(SPEC)
    with open(os.path.join(WORK, "pipeline.yaml"), "w") as f:
        f.write(PIPELINE)

    variants = args.variants.split(",")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            result = run_variant(variant, data)
            if result["models"] != args.keys:
                raise RuntimeError(f"{variant} wrote {result['models']} models, not {args.keys}")
            runs[variant].append(result)
            print(f"  run {repeat + 1} {variant}: {result['wall']:.2f}s", file=sys.stderr)
    load_after = os.getloadavg()

    medians = {v: statistics.median(r["wall"] for r in runs[v]) for v in variants}
    base = medians.get("joblib")
    lines = [
        f"Per-key training, {args.rows:,} rows x {args.keys} keys, DecisionTreeClassifier "
        f"per key; {args.repeats} runs each, interleaved",
        "",
        "| variant | median wall (s) | fastest (s) | vs joblib | CPU (s) | models "
        "| mean accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        ratio = f"{medians[v] / base:.2f}x" if base else "-"
        fastest = min(r["wall"] for r in runs[v])
        accuracy = statistics.mean(r["accuracy"] for r in runs[v])
        cpu = statistics.median(r["cpu"] for r in runs[v])
        lines.append(f"| {VARIANTS[v]} | {medians[v]:.2f} | {fastest:.2f} | {ratio} "
                     f"| {cpu:.2f} | {runs[v][0]['models']} | {accuracy:.4f} |")
    lines += [
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (the machine is shared).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.save:
        save(table, f"--rows {args.rows} --keys {args.keys} --repeats {args.repeats} --save")


def save(table: str, flags: str) -> None:
    """Writes the table to RESULTS, keeping the hand-written notes after NOTES there."""
    notes = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            text = f.read()
        if NOTES in text:
            notes = "\n" + text[text.index(NOTES):]
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(f"# Training benchmark\n\n`python benchmarks/bench_training.py {flags}`\n\n"
                f"{table}\n{notes}")


if __name__ == "__main__":
    main()
