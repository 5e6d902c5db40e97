"""Per-key training: beam_dsl's TRAIN against hand-written ways of doing the same.

    python benchmarks/bench_training.py [--case 200k|2m|cold] [--repeats 3] [--save]

The job: a CSV of ``rows`` rows and ``keys`` keys (4 numeric and 3
categorical features, a yes/no label); for every key, hold out 20% of its
rows, fit a scikit-learn Pipeline (one-hot encoding of the categorical
columns, the numeric ones passed through, a DecisionTreeClassifier with
max_depth 8), score accuracy on the held-out rows and save the model to a
file. Every variant runs that same Pipeline (built the way beam_dsl builds it,
so the fits cost the same) and runs as its own process, timed from start to
exit (interpreter start and imports included: that is what a user waits for):

1. **beam_dsl**: ``python -m beam_dsl run pipeline.yaml`` (Beam YAML:
   ReadFromCsv -> the TRAIN of bench.bdsl -> WriteToJson, in-process
   FnApiRunner; fits in worker processes where they pay, docs/RUNNERS.md).
   ``--workers 1`` fits in the run's own process, ``--workers 2`` in two
   workers whatever the size; "Beam's multi-process mode" is ``--workers 1``
   on two SDK worker processes of the FnApiRunner (``--direct_num_workers=2
   --direct_running_mode=multi_processing``), the other way to use several
   cores; ``.skops`` saves models in skops' safe
   format instead of pickle; 1b runs the same transform from Python
   (``ReadFromCsv | TrainModels``), without Beam YAML and the CLI.
2. **Beam, by hand**: the per-entity training talk's pipeline: ReadFromText,
   split each line, key it, GroupByKey, build a DataFrame per key, fit, pickle
   (FnApiRunner).
3. **pandas**: read_csv, groupby, a loop over the keys, on one core.
4. **joblib**: read_csv, groupby, ``Parallel(n_jobs=-1)`` over the keys (loky
   processes on every core).

Cases (``--case``): ``200k`` (200,000 rows x 50 keys, every variant),
``2m`` (2,000,000 rows x 500 keys: the beam_dsl runs and joblib; the
others take minutes) and ``cold`` (300 rows x 3 keys: the fixed cost of a
run; goal: beam_dsl at most 3 s on a quiet machine).

Variants run ``--repeats`` times, interleaved (ABAB...); the table shows the
median and the fastest wall time, the ratio of medians to joblib's, CPU
seconds and peak memory of the variant's whole process tree (the run, its
fork server and workers; loky's workers: benchmarks/measure.py). Each
variant must write ``keys`` models; the mean held-out accuracy is a sanity
check (the holdout rows differ between variants, so it agrees only
roughly). ``--save`` writes the case's table into
benchmarks/results/training.md (its other cases and the notes under "Where
the time goes" stay).
"""

import argparse
import datetime
import glob
import json
import os
import shutil
import statistics
import sys
import time

import measure

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work", "training")
RESULTS = os.path.join(HERE, "results", "training.md")
NOTES = "## Where the time goes"  # kept when --save rewrites a case
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
  SAVE TO 'models/{variant}/{{key}}.{suffix}';
"""

PIPELINE = """specs: [{variant}.bdsl]
pipeline:
  type: composite
  transforms:
    - {{type: ReadFromCsv, name: data, config: {{path: data.csv}}}}
    - {{type: per_key, input: data}}
    - {{type: WriteToJson, input: per_key, config: {{path: out/{variant}/metrics}}}}
"""

VARIANTS = {
    "beam_dsl": "1. beam_dsl: `python -m beam_dsl run pipeline.yaml`",
    "beam_dsl_one_worker": "1. beam_dsl, `run --workers 1`",
    "beam_dsl_two_workers": "1. beam_dsl, `run --workers 2`",
    "beam_dsl_beam_processes": "1. beam_dsl, `run --workers 1` in Beam's multi-process mode "
                               "(2 SDK worker processes)",
    "beam_dsl_skops": "1. beam_dsl, models saved as `.skops`",
    "beam_dsl_api": "1b. beam_dsl transform from Python (no Beam YAML)",
    "beam_by_hand": "2. Beam by hand (ReadFromText, split, GroupByKey)",
    "pandas": "3. pandas groupby loop, one core",
    "joblib": "4. joblib Parallel, all cores",
}
# The variants that are `beam_dsl run`, and their flags.
BEAM_DSL_RUNS = {
    "beam_dsl": [],
    "beam_dsl_one_worker": ["--workers", "1"],
    "beam_dsl_two_workers": ["--workers", "2"],
    "beam_dsl_beam_processes": ["--workers", "1", "--direct_num_workers=2",
                                "--direct_running_mode=multi_processing"],
    "beam_dsl_skops": [],
}
CASES = {
    "200k": {"rows": 200_000, "keys": 50, "title": "200,000 rows x 50 keys",
             "variants": ["beam_dsl", "beam_dsl_one_worker", "beam_dsl_two_workers",
                          "beam_dsl_beam_processes", "beam_dsl_api", "beam_by_hand", "pandas",
                          "joblib"]},
    "2m": {"rows": 2_000_000, "keys": 500, "title": "2,000,000 rows x 500 keys",
           "variants": ["beam_dsl", "beam_dsl_one_worker", "beam_dsl_beam_processes", "joblib"]},
    "cold": {"rows": 300, "keys": 3, "title": "cold start: 300 rows x 3 keys",
             "variants": ["beam_dsl", "beam_dsl_skops", "pandas", "joblib"]},
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

    spec, _ = parse(SPEC.format(variant="x", suffix="pkl").replace("models/x", out_dir))
    (definition,) = lower_spec(spec)
    accuracies = f"{out_dir}.accuracies.json"  # out_dir: the model store's pointer
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


def _beam_dsl_dir(variant: str) -> str:
    """The pipeline.yaml of a beam_dsl variant (its own spec, models and outputs)."""
    suffix = "skops" if variant == "beam_dsl_skops" else "pkl"
    with open(os.path.join(WORK, f"{variant}.bdsl"), "w") as f:
        f.write(SPEC.format(variant=variant, suffix=suffix))
    path = os.path.join(WORK, f"{variant}.yaml")
    with open(path, "w") as f:
        f.write(PIPELINE.format(variant=variant))
    return path


def run_variant(variant: str, data: str) -> dict:
    """Runs one variant as a process; returns its wall time, CPU, peak memory, models and
    accuracies."""
    out_dir = os.path.join(WORK, "models", variant)
    versions = os.path.join(WORK, "models", f".{variant}.versions")  # beam_dsl's model store
    for path in (versions, os.path.join(WORK, "out", variant)):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.islink(out_dir):  # beam_dsl's published version
        os.unlink(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    if variant in BEAM_DSL_RUNS:
        command = measure.python("-m", "beam_dsl", "run", "--quiet", *BEAM_DSL_RUNS[variant],
                                 _beam_dsl_dir(variant))
    else:
        if variant != "beam_dsl_api":  # that one publishes through the model store
            os.makedirs(out_dir)
        command = measure.python(__file__, "--child", variant, "--data", data, "--out", out_dir)
    done = measure.run(command, cwd=WORK)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stdout}\n{done.stderr}")
    if variant in BEAM_DSL_RUNS:
        metrics = []
        for path in glob.glob(os.path.join(WORK, "out", variant, "metrics-*")):
            with open(path) as f:
                metrics += [json.loads(line) for line in f]
        accuracies = [m["accuracy"] for m in metrics]
    else:
        accuracies = json.loads(done.stdout.strip().splitlines()[-1])["accuracies"]
    models = len(glob.glob(os.path.join(out_dir, "*.pkl")) + glob.glob(
        os.path.join(out_dir, "*.skops")))
    return {"wall": done.wall, "cpu": done.cpu, "rss_mb": done.rss_mb, "models": models,
            "accuracy": statistics.mean(accuracies)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="200k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", help="comma-separated (default: the case's)")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.out)
        return

    case = CASES[args.case]
    os.makedirs(WORK, exist_ok=True)
    data = os.path.join(WORK, "data.csv")
    write_data(case["rows"], case["keys"], data)
    variants = args.variants.split(",") if args.variants else case["variants"]
    load_before = measure.loads()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            result = run_variant(variant, data)
            if result["models"] != case["keys"]:
                raise RuntimeError(f"{variant} wrote {result['models']} models, not "
                                   f"{case['keys']}")
            runs[variant].append(result)
            print(f"  run {repeat + 1} {variant}: {result['wall']:.2f}s, {result['cpu']:.1f}s "
                  f"CPU, {result['rss_mb']:.0f} MB (load {measure.loads()})", file=sys.stderr)
    load_after = measure.loads()

    medians = {v: statistics.median(r["wall"] for r in runs[v]) for v in variants}
    memory = {v: statistics.median(r["rss_mb"] for r in runs[v]) for v in variants}
    base = "joblib" if "joblib" in variants else None
    lines = [
        f"Per-key training, {case['rows']:,} rows x {case['keys']} keys, "
        f"DecisionTreeClassifier per key; {args.repeats} runs each, interleaved",
        "",
        "| variant | median wall (s) | fastest (s) | vs joblib | CPU (s) | peak memory (MB) "
        "| vs joblib | models | mean accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        ratio = f"{medians[v] / medians[base]:.2f}x" if base else "-"
        memory_ratio = f"{memory[v] / memory[base]:.2f}x" if base else "-"
        fastest = min(r["wall"] for r in runs[v])
        accuracy = statistics.mean(r["accuracy"] for r in runs[v])
        cpu = statistics.median(r["cpu"] for r in runs[v])
        lines.append(f"| {VARIANTS[v]} | {medians[v]:.2f} | {fastest:.2f} | {ratio} "
                     f"| {cpu:.2f} | {memory[v]:.0f} | {memory_ratio} | {runs[v][0]['models']} "
                     f"| {accuracy:.4f} |")
    lines += [
        "",
        f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {measure.machine()}; load average "
        f"(1/5/15 min) {load_before} before, {load_after} after (the machine is shared).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.save:
        flags = f"--case {args.case} --repeats {args.repeats}"
        if args.variants:
            flags += f" --variants {args.variants}"
        save(case["title"], table, flags)


def save(title: str, table: str, flags: str) -> None:
    """Writes the table under ``## <title>`` in RESULTS, keeping its other sections."""
    text = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            text = f.read()
    head, _, notes = text.partition(NOTES)
    sections: dict[str, str] = {}
    for block in head.split("\n## ")[1:]:
        name, _, body = block.partition("\n")
        sections[name.strip()] = body.strip()
    sections[title] = f"`python benchmarks/bench_training.py {flags}`\n\n{table}"
    order = [c["title"] for c in CASES.values()]
    body = "\n\n".join(f"## {t}\n\n{sections[t]}" for t in order if t in sections)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(f"# Training benchmark\n\n{body}\n\n{NOTES}{notes}")


if __name__ == "__main__":
    main()
