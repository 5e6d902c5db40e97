"""Inference throughput: beam_dsl against hand-written Beam pipelines, on the CPU.

    python benchmarks/bench_inference.py [--rows 100000] [--repeats 5] [--save]

Two jobs over the same CSV file of ``--rows`` rows (8 numeric features):

* (a) one model: a scikit-learn pipeline (StandardScaler + LogisticRegression);
* (b) a two-model chain: a second classifier reads the features and the first
  model's answer.

Each job runs as

* **beam_dsl**: the spec's transform, built from the spec text through the
  compiler (MODEL -> RunModel for (a); a two-STEP ENSEMBLE -> RunEnsemble for
  (a) and (b));
* **RunInference, batch 1**: Beam's RunInference with
  ``SklearnModelHandlerNumpy(max_batch_size=1)`` (keyed by the input row), as
  in the Beam ML talk; one RunInference per model;
* **batched DoFn**: ``BatchElements`` of 1024 rows and a DoFn that predicts
  each batch with the loaded model(s): what one writes by hand to go fast.

Every variant reads the file with ``beam.io.ReadFromCsv``, emits one row per
input row (the input fields plus the prediction(s)) and ends in a count and a
checksum of the final predictions, which must agree across variants. All run
in Beam's in-process FnApiRunner, one after another, in one process. The fast
variants run ``--repeats`` times, interleaved, and the median counts; the
batch-size-1 variants run once (they take minutes). The table shows wall and
CPU seconds; the ratios use CPU seconds, which other work on a shared machine
disturbs far less than wall time. ``--save`` writes the table to
benchmarks/results/inference.md.

``--cli`` measures job (a) as a user runs it instead (default 120,000 rows):
each variant is a fresh process, timed from start to exit with every
process it starts (benchmarks/measure.py): ``python -m beam_dsl run`` on a
pipeline.yaml (ReadFromCsv -> MODEL -> WriteToJson; predictions in one
worker process per core), the same with ``--workers 1`` (predictions in the
run's process) and in Beam's multi-process mode (two SDK worker processes),
and a hand-written script with the batched
DoFn (ReadFromCsv -> BatchElements -> DoFn -> WriteToJson) loading the
joblib file, or the skops file as beam_dsl does. The variants run
interleaved; each must write every row with the same predictions.

``--cli --model forest`` does the same with a model whose predictions cost
(a random forest of 300 trees, about 60 us a row here; default 200,000
rows): ``beam_dsl run`` and ``--workers 1`` against the batched DoFn script.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import shutil
import statistics
import sys
import time
import typing
import warnings
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import measure
import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work", "inference")
RESULTS = os.path.join(HERE, "results", "inference.md")
FEATURES = [f"f{i}" for i in range(8)]
BATCH = 1024

NOTES = """
Where the time goes. The batched DoFn pays, per row, for Beam turning
ReadFromCsv's pandas chunks into rows, BatchElements, a Python list of
features and a ``beam.Row``. beam_dsl's ENSEMBLE takes the chunks as pandas
frames (a batched DoFn), predicts 1024-row slices with the predictor of
beam_dsl.transforms.inference.predictors, and builds output rows as Beam's NamedTuple for
the output schema, so its per-row work is one tuple per output row; that is
why it needs less CPU than the hand-written DoFn although its rows carry more
columns (each member's answer, confidence and model_id). MODEL (RunModel) runs
on the same frame machinery (it was Beam's RunInference over the same
predictor: rows, BatchElements, one frame per batch, 1.12x the batched DoFn's
CPU on 2026-11-28). RunInference with batch size 1 calls the scikit-learn pipeline once
per row (about 0.5 ms of input validation each), twice per row for the chain.
The machine is shared with other jobs (load average in the header), which
stretches wall time unevenly; CPU time of the single process is the steadier
measure, so the ratios use it.
"""

SPEC = """
MODEL first  SKLEARN '{work}/first.skops'  INPUT {features} OUTPUT a;
MODEL forest SKLEARN '{work}/forest.skops' TRUST 'sklearn.tree._tree.Tree'
  INPUT {features} OUTPUT a;
MODEL second SKLEARN '{work}/second.skops' INPUT {features}, a OUTPUT b;
-- The joblib files the hand-written script loads (pipeline.yaml allows pickles).
MODEL first_joblib  SKLEARN '{work}/first.joblib'  INPUT {features} OUTPUT a;
MODEL forest_joblib SKLEARN '{work}/forest.joblib' INPUT {features} OUTPUT a;

ENSEMBLE one_step
  STEP a = first(*)
  OUTPUT a AS prediction;

ENSEMBLE chain
  STEP a = first(*)
  STEP b = second({features}, a)
  OUTPUT b AS prediction;
"""


# ---------------------------------------------------------------- data and models


def prepare(rows: int) -> dict[str, Any]:
    """Writes the CSV, the models (skops for beam_dsl, joblib for Beam's handler) and the
    spec; returns the lowered configs by name."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from beam_dsl.dsl.compiler import check_spec_files
    from beam_dsl.transforms.training.modelstore import save_model

    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, len(FEATURES)))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame.insert(0, "id", np.arange(rows))
    frame.to_csv(os.path.join(WORK, "data.csv"), index=False)

    y1 = (x @ rng.normal(size=len(FEATURES)) + rng.normal(size=rows) > 0).astype(int)
    first = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y1)
    x2 = np.column_stack([x, first.predict(x)])
    y2 = (x2 @ rng.normal(size=x2.shape[1]) + rng.normal(size=rows) > 0).astype(int)
    second = make_pipeline(StandardScaler(), LogisticRegression()).fit(x2, y2)
    forest = RandomForestClassifier(n_estimators=300, max_depth=12, random_state=0)
    forest.fit(x[:20_000], y1[:20_000])
    for name, model in (("first", first), ("second", second), ("forest", forest)):
        save_model(model, os.path.join(WORK, f"{name}.skops"))
        joblib.dump(model, os.path.join(WORK, f"{name}.joblib"))

    spec_path = os.path.join(WORK, "bench.bdsl")
    with open(spec_path, "w") as f:
        f.write(SPEC.format(work=WORK, features=", ".join(FEATURES)))
    compilation = check_spec_files([spec_path])
    if not compilation.ok:
        raise SystemExit("\n".join(d.render() for d in compilation.diagnostics))
    return {name: d.config for name, d in compilation.defs.items()}


# ---------------------------------------------------------------- the variants


def _checksum(predictions):
    """Ends a pipeline: (rows, sum of predictions) written to a file."""
    import apache_beam as beam

    return (
        predictions
        | "Pairs" >> beam.Map(lambda p: (1, int(p)))
        | "Sum" >> beam.CombineGlobally(lambda pairs: tuple(map(sum, zip(*pairs, strict=True)))
                                        if pairs else (0, 0))
    )


def _run(build: Callable[[Any], Any]) -> tuple[float, float, tuple[int, int]]:
    """Builds and runs one pipeline: (wall seconds, CPU seconds, (rows, checksum)).

    CPU time is this process's (all its threads; the in-process runner runs the
    whole pipeline here). On a machine shared with other work it varies much
    less than wall time, so the ratios are taken on it.
    """
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    out = os.path.join(WORK, "result.txt")
    if os.path.exists(out):
        os.remove(out)
    start, start_cpu = time.perf_counter(), time.process_time()
    with beam.Pipeline(runner=FnApiRunner()) as p:
        rows = p | "Read" >> beam.io.ReadFromCsv(os.path.join(WORK, "data.csv"))
        _ = (
            _checksum(build(rows))
            | "Format" >> beam.Map(lambda t: f"{t[0]} {t[1]}")
            | "Write" >> beam.io.WriteToText(out, shard_name_template="")
        )
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    with open(out) as f:
        count, total = (int(v) for v in f.read().split())
    return wall, cpu, (count, total)


def beam_dsl_model(configs):
    from beam_dsl.transforms.inference.transform import RunModel

    return lambda rows: (rows | RunModel.from_config(configs["first"]))["main"] | beam.Map(
        lambda r: r.a
    )


def beam_dsl_ensemble(configs, name):
    from beam_dsl.transforms.ensemble.transform import RunEnsemble

    return lambda rows: (rows | RunEnsemble.from_config(configs[name]))["main"] | beam.Map(
        lambda r: r.prediction
    )


def run_inference_batch_1(chain: bool):
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.ml.inference.sklearn_inference import ModelFileType, SklearnModelHandlerNumpy

    def handler(name: str) -> KeyedModelHandler:
        return KeyedModelHandler(
            SklearnModelHandlerNumpy(
                model_uri=os.path.join(WORK, f"{name}.joblib"),
                model_file_type=ModelFileType.JOBLIB,
                max_batch_size=1,
            )
        )

    def add(keyed, field):
        row, result = keyed
        return beam.Row(**row._asdict(), **{field: int(result.inference)})

    def build(rows):
        first = (
            rows
            | "KeyFirst" >> beam.Map(lambda r: (r, np.array([getattr(r, f) for f in FEATURES])))
            | "First" >> RunInference(handler("first"))
            | "RowFirst" >> beam.Map(add, "a")
        )
        if not chain:
            return first | beam.Map(lambda r: r.a)
        return (
            first
            | "KeySecond" >> beam.Map(
                lambda r: (r, np.array([*(getattr(r, f) for f in FEATURES), r.a]))
            )
            | "Second" >> RunInference(handler("second"))
            | "RowSecond" >> beam.Map(add, "b")
            | beam.Map(lambda r: r.b)
        )

    return build


def batched_dofn(chain: bool):
    class PredictBatches(beam.DoFn):
        def setup(self):
            import joblib

            self.first = joblib.load(os.path.join(WORK, "first.joblib"))
            self.second = joblib.load(os.path.join(WORK, "second.joblib")) if chain else None

        def process(self, batch):
            x = np.array([[getattr(r, f) for f in FEATURES] for r in batch])
            a = self.first.predict(x)
            if self.second is None:
                for row, pa in zip(batch, a.tolist(), strict=True):
                    yield beam.Row(**row._asdict(), a=pa)
                return
            b = self.second.predict(np.column_stack([x, a]))
            for row, pa, pb in zip(batch, a.tolist(), b.tolist(), strict=True):
                yield beam.Row(**row._asdict(), a=pa, b=pb)

    field = "b" if chain else "a"
    return lambda rows: (
        rows
        | "Batch" >> beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
        | "Predict" >> beam.ParDo(PredictBatches())
        | beam.Map(lambda r: getattr(r, field))
    )


# ---------------------------------------------------------------- whole processes (--cli)

CLI_PIPELINE = """specs: [bench.bdsl]
pipeline:
  type: composite
  transforms:
    - {{type: ReadFromCsv, name: data, config: {{path: data.csv}}}}
    - {{type: {model}, input: data{options}}}
    - {{type: WriteToJson, input: {model}, config: {{path: out/beam_dsl/scored}}}}
"""

CLI_VARIANTS = {
    "beam_dsl": "beam_dsl: `python -m beam_dsl run pipeline.yaml`",
    "beam_dsl_beam_processes": "beam_dsl, Beam's multi-process mode (2 SDK worker processes)",
    "beam_dsl_one_worker": "beam_dsl, `run --workers 1`",
    "beam_dsl_joblib": "beam_dsl, the script's joblib model (`allow_pickle: true`)",
    "beam_dsl_joblib_one_worker": "beam_dsl, the script's joblib model, `run --workers 1`",
    "by_hand": "batched DoFn script, joblib model",
    "by_hand_skops": "batched DoFn script, skops model (as beam_dsl loads it)",
}
# What each --cli table's numbers come from (printed under it).
CLI_NOTES = {
    "first": """
Where the time goes. `beam_dsl run` predicts a scikit-learn MODEL in worker
processes, one per core (`--workers 1`: in its own process). The run starts
their fork server before importing Beam, so scikit-learn, skops and the
model load on the second core while the run's process imports Beam and
builds the pipeline: it never imports them. Per row, the run's process then
pays for a pickled frame to a worker and its answers back; for this cheap
model (a logistic regression) that is about what predicting costs, so the
gain is the start-up moved off the run's critical path. The price is CPU
and memory: the fork server and two workers each hold pandas, scikit-learn
and the model. The script loads a pickle (joblib), which beam_dsl loads
only with `allow_pickle`; loading the skops file the way beam_dsl does costs
the script 2.4 s (skops imports every scikit-learn estimator to list the
types it trusts). Like for like, with the script's joblib file
(`allow_pickle: true`) and in one process (`--workers 1`), beam_dsl needs
less CPU than the script: it takes ReadFromCsv's frames whole, where the
script turns them into rows, batches and a list per batch. With a model
this cheap and this quick to load, the workers cost more than they save;
they pay where loading is slow (skops: it happens on the second core while
Beam imports) or predicting is (the forest, below).
""",
    "forest": """
Where the time goes. A forest of 300 trees costs about 60 us a row to
predict here, so the run is mostly predictions, which the workers share.
Each worker loads the model once (0.6 s); the run's process checks the rows,
sends every slice of a 10,000-row frame out at once and builds the output
rows in order. A worker waits for the run's process between frames (while
it builds the rows of the frame's last slices and reads the next frame):
about 1.3 of its 6.4 s. Memory: every worker holds a copy of the model.
""",
}
# The variants of each model's --cli table.
CLI_TABLES = {
    "first": ["beam_dsl", "beam_dsl_one_worker", "beam_dsl_joblib", "beam_dsl_joblib_one_worker",
              "beam_dsl_beam_processes", "by_hand", "by_hand_skops"],
    "forest": ["beam_dsl", "beam_dsl_one_worker", "beam_dsl_joblib", "by_hand"],
}


# The hand-written pipeline's output rows: the input's fields and the prediction.
Scored = typing.NamedTuple("Scored", [("id", int), *[(f, float) for f in FEATURES], ("a", int)])


def by_hand(model: str, out: str) -> None:
    """The hand-written pipeline, in this process: ReadFromCsv -> BatchElements -> a DoFn
    predicting each batch -> WriteToJson."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    beam.coders.registry.register_coder(Scored, beam.coders.RowCoder)

    class Predict(beam.DoFn):
        def setup(self):
            if model.endswith(".skops"):
                import skops.io

                self.model = skops.io.load(model, trusted=skops.io.get_untrusted_types(
                    file=model))
            else:
                import joblib

                self.model = joblib.load(model)

        def process(self, batch):
            x = np.array([[getattr(r, f) for f in FEATURES] for r in batch])
            for row, a in zip(batch, self.model.predict(x).tolist(), strict=True):
                yield Scored(*row, a)

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | beam.io.ReadFromCsv(os.path.join(WORK, "data.csv"))
            | beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
            | beam.ParDo(Predict()).with_output_types(Scored)
            | beam.io.WriteToJson(out)
        )


def _scored(variant: str) -> tuple[int, int]:
    """(rows, sum of predictions) a variant wrote."""
    rows = total = 0
    for path in glob.glob(os.path.join(WORK, "out", variant, "scored*")):
        frame = pd.read_json(path, lines=True)
        rows, total = rows + len(frame), total + int(frame["a"].sum())
    return rows, total


def cli(rows: int, repeats: int, model: str = "first") -> str:
    """Job (a) as whole processes, with ``model``: the table."""
    prepare(rows)
    with open(os.path.join(WORK, "pipeline.yaml"), "w") as f:
        f.write(CLI_PIPELINE.format(model=model, options=""))
    with open(os.path.join(WORK, "pipeline_joblib.yaml"), "w") as f:
        f.write(CLI_PIPELINE.format(model=f"{model}_joblib",
                                    options=", config: {allow_pickle: true}"))
    run = ("-m", "beam_dsl", "run", "-q", "pipeline.yaml")
    run_joblib = (*run[:-1], "pipeline_joblib.yaml")
    commands = {
        "beam_dsl": measure.python(*run),
        "beam_dsl_beam_processes": measure.python(
            *run, "--direct_num_workers=2", "--direct_running_mode=multi_processing"),
        "beam_dsl_one_worker": measure.python(*run, "--workers", "1"),
        "beam_dsl_joblib": measure.python(*run_joblib),
        "beam_dsl_joblib_one_worker": measure.python(*run_joblib, "--workers", "1"),
        "by_hand": measure.python(__file__, "--by-hand", f"{model}.joblib"),
        "by_hand_skops": measure.python(__file__, "--by-hand", f"{model}.skops"),
    }
    commands = {v: commands[v] for v in CLI_TABLES[model]}
    load_before = measure.loads()
    runs: dict[str, list] = {v: [] for v in commands}
    checks = set()
    for _ in range(repeats):
        for variant, command in commands.items():
            shutil.rmtree(os.path.join(WORK, "out"), ignore_errors=True)
            done = measure.run(command, cwd=WORK)
            if done.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{done.stderr}")
            output = "beam_dsl" if variant.startswith("beam_dsl") else "by_hand"
            checks.add(_scored(output))
            runs[variant].append(done)
            print(f"{variant:24} wall {done.wall:6.2f}s cpu {done.cpu:6.2f}s "
                  f"{done.rss_mb:5.0f} MB (load {measure.loads()})", flush=True)
    if len(checks) != 1 or next(iter(checks))[0] != rows:
        raise SystemExit(f"the variants disagree: {checks}")
    wall = {v: statistics.median(r.wall for r in runs[v]) for v in commands}
    cpu = {v: statistics.median(r.cpu for r in runs[v]) for v in commands}
    what = "one model (job (a))" if model == "first" else "a random forest of 300 trees"
    lines = [
        f"{rows:,} rows, {what}; median of {repeats} runs, interleaved; "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}; {measure.machine()}; load average "
        f"(1/5/15 min) {load_before} before, {measure.loads()} after",
        "",
        "| variant | wall s | CPU s | peak memory (MB) | wall / DoFn (joblib) "
        "| CPU / DoFn (joblib) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in commands:
        memory = statistics.median(r.rss_mb for r in runs[v])
        lines.append(f"| {CLI_VARIANTS[v]} | {wall[v]:.2f} | {cpu[v]:.2f} | {memory:.0f} "
                     f"| {wall[v] / wall['by_hand']:.2f} | {cpu[v] / cpu['by_hand']:.2f} |")
    return "\n".join(lines) + "\n" + CLI_NOTES[model]


# ---------------------------------------------------------------- the table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="default: 100,000; 120,000 with --cli")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="whole processes (see above)")
    parser.add_argument("--model", choices=sorted(CLI_TABLES), default="first",
                        help="the model of --cli (see above)")
    parser.add_argument("--save", action="store_true", help=f"write {RESULTS}")
    parser.add_argument("--by-hand", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.by_hand:
        by_hand(os.path.join(WORK, args.by_hand), os.path.join(WORK, "out", "by_hand", "scored"))
        return
    if args.cli:
        forest = args.model == "forest"
        table = cli(args.rows or (200_000 if forest else 120_000), args.repeats, args.model)
        print(table)
        if args.save:
            save(FOREST_SECTION if forest else CLI_SECTION, table, argv)
        return
    args.rows = args.rows or 100_000
    # The models are fitted on arrays (as Beam's numpy handler feeds them); beam_dsl
    # feeds frames, which scikit-learn accepts with a warning.
    warnings.filterwarnings("ignore", message="X has feature names")

    configs = prepare(args.rows)
    jobs = {
        "(a) one model": {
            "beam_dsl MODEL": beam_dsl_model(configs),
            "beam_dsl ENSEMBLE": beam_dsl_ensemble(configs, "one_step"),
            "batched DoFn": batched_dofn(chain=False),
            "RunInference batch 1": run_inference_batch_1(chain=False),
        },
        "(b) two-model chain": {
            "beam_dsl ENSEMBLE": beam_dsl_ensemble(configs, "chain"),
            "batched DoFn": batched_dofn(chain=True),
            "RunInference batch 1": run_inference_batch_1(chain=True),
        },
    }
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    checks: dict[str, set] = {}
    for job, variants in jobs.items():
        fast = [v for v in variants if not v.startswith("RunInference")]
        order = [v for _ in range(args.repeats) for v in fast] + [
            v for v in variants if v.startswith("RunInference")
        ]
        for variant in order:
            wall, cpu, check = _run(variants[variant])
            times.setdefault((job, variant), []).append((wall, cpu))
            checks.setdefault(job, set()).add(check)
            print(f"{job:20} {variant:21} wall {wall:7.2f}s  cpu {cpu:7.2f}s  "
                  f"rows, checksum = {check}", flush=True)
        if len(checks[job]) != 1 or next(iter(checks[job]))[0] != args.rows:
            raise SystemExit(f"{job}: the variants disagree: {checks[job]}")

    lines = [
        "| job | variant | wall s | CPU s | rows/s (CPU) | batch 1 / this | this / batched DoFn |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for job, variants in jobs.items():
        wall = {v: statistics.median(w for w, _ in times[(job, v)]) for v in variants}
        cpu = {v: statistics.median(c for _, c in times[(job, v)]) for v in variants}
        for variant in variants:
            lines.append(
                f"| {job} | {variant} | {wall[variant]:.2f} | {cpu[variant]:.2f} | "
                f"{args.rows / cpu[variant]:,.0f} | "
                f"{cpu['RunInference batch 1'] / cpu[variant]:.1f}x | "
                f"{cpu[variant] / cpu['batched DoFn']:.2f} |"
            )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (
        f"{stamp}; {measure.machine()}, Beam {beam.__version__}; load average at the end {load}\n"
        f"{args.rows:,} rows; median of {args.repeats} runs (batch-1 variants: one run); "
        "ratios on CPU time\n"
        "Goals: beam_dsl >= 10x faster than RunInference batch 1, and within 1.1x of the "
        "batched DoFn.\n"
    )
    table = header + "\n" + "\n".join(lines) + "\n" + NOTES
    print()
    print(table)
    if args.save:
        save(IN_PROCESS_SECTION, table, argv)


IN_PROCESS_SECTION = "Transforms in one process"
CLI_SECTION = "Whole processes: `beam_dsl run` against a hand-written script (--cli)"
FOREST_SECTION = "Whole processes, a model whose predictions cost (--cli --model forest)"


def save(title: str, text: str, argv: list[str] | None) -> None:
    """Writes ``text`` under ``## <title>`` in RESULTS, keeping the other sections."""
    sections: dict[str, str] = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            for block in f.read().split("\n## ")[1:]:
                name, _, body = block.partition("\n")
                sections[name.strip()] = body.strip()
    command = " ".join(["python benchmarks/bench_inference.py", *(argv or sys.argv[1:])])
    sections[title] = f"```\n{command}\n```\n\n{text.strip()}"
    order = (IN_PROCESS_SECTION, CLI_SECTION, FOREST_SECTION)
    body = "\n\n".join(f"## {t}\n\n{sections[t]}" for t in order if t in sections)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(f"# Inference benchmark (benchmarks/bench_inference.py)\n\n{body}\n")


if __name__ == "__main__":
    main()
