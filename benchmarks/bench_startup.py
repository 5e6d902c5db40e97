"""Start-up: what each command costs before it does any real work.

    python benchmarks/bench_startup.py [--repeats 5] [--save]

Each variant is a fresh process, timed from start to exit with every process
it starts (benchmarks/measure.py), over tiny inputs, so the time is the
fixed cost: the interpreter, imports, building the pipeline, starting the
runner. Variants run interleaved (ABAB...), median of ``--repeats``:

* ``python -c pass`` and ``import apache_beam``: the floors;
* ``lint`` of a spec (imports no Beam, scikit-learn or torch);
* ``run`` of a MODEL (a scikit-learn model saved as .skops) over 300 rows;
* ``features get``: one entity from a SQLite online store (that a FEATURES
  run wrote once, before timing).

TRAIN's fixed cost is ``bench_training.py --case cold`` (300 rows; goal:
at most 3 s). ``--save`` writes the table to benchmarks/results/startup.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import measure
import numpy as np
import pandas as pd

WORK = os.path.join(measure.HERE, ".work", "startup")
RESULTS = os.path.join(measure.HERE, "results", "startup.md")
NOTES = "## Notes"  # by hand, below the table: --save keeps them
ROWS = 300

SPEC = """
MODEL scorer SKLEARN 'model.skops' INPUT x1, x2 OUTPUT predicted;

FEATURES clicks
  ENTITY user
  TIMESTAMP ts
  WINDOW TUMBLING 1h
  SELECT count(*) AS n, sum(x1) AS total
  ONLINE 'sqlite:///store.db';
"""

MODEL_PIPELINE = """specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - {type: scorer, input: rows}
    - {type: WriteToJson, input: scorer, config: {path: out/scored}}
"""

FEATURES_PIPELINE = """specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - {type: clicks, input: rows}
    - {type: WriteToJson, input: clicks, config: {path: out/clicks}}
"""

VARIANTS = {
    "python": ("`python -c pass`", ["-c", "pass"]),
    "beam": ("`python -c 'import apache_beam'`", ["-c", "import apache_beam"]),
    "lint": ("`beam_dsl lint spec.bdsl`", ["-m", "beam_dsl", "lint", "spec.bdsl"]),
    "model": (f"`beam_dsl run`: MODEL over {ROWS} rows",
              ["-m", "beam_dsl", "run", "-q", "model.yaml"]),
    "features_get": ("`beam_dsl features get`: one SQLite lookup",
                     ["-m", "beam_dsl", "features", "get", "clicks",
                      "--store", "sqlite:///store.db", "user=u1"]),
}


def prepare() -> None:
    """The spec, pipelines, rows, model and online store the variants use."""
    from sklearn.linear_model import LogisticRegression

    from beam_dsl.transforms.training.modelstore import save_model

    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user": rng.choice(["u1", "u2", "u3"], ROWS),
        "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 7200, ROWS), "s"),
        "x1": rng.normal(size=ROWS).round(4),
        "x2": rng.normal(size=ROWS).round(4),
    })
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(os.path.join(WORK, "rows.csv"), index=False)
    model = LogisticRegression().fit(frame[["x1", "x2"]], frame["x1"] > frame["x2"])
    save_model(model, os.path.join(WORK, "model.skops"))
    for name, text in (("spec.bdsl", SPEC), ("model.yaml", MODEL_PIPELINE),
                       ("features.yaml", FEATURES_PIPELINE)):
        with open(os.path.join(WORK, name), "w") as f:
            f.write(text)
    done = measure.run(measure.python("-m", "beam_dsl", "run", "-q", "features.yaml"), WORK)
    if done.returncode != 0:
        raise SystemExit(f"the FEATURES run failed:\n{done.stderr}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    prepare()
    load_before = measure.loads()
    runs: dict[str, list[measure.Run]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant, (_, command) in VARIANTS.items():
            done = measure.run(measure.python(*command), WORK)
            if done.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{done.stdout}\n{done.stderr}")
            runs[variant].append(done)
            print(f"  {variant}: {done.wall:.2f}s", file=sys.stderr)
    lines = [
        f"Median of {args.repeats} runs each, interleaved; "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}; {measure.machine()}; load average "
        f"(1/5/15 min) {load_before} before, {measure.loads()} after (the machine is shared)",
        "",
        "| command | median wall (s) | fastest (s) | CPU (s) | peak memory (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, (title, _) in VARIANTS.items():
        done = runs[variant]
        lines.append(
            f"| {title} | {statistics.median(r.wall for r in done):.2f} "
            f"| {min(r.wall for r in done):.2f} | {statistics.median(r.cpu for r in done):.2f} "
            f"| {statistics.median(r.rss_mb for r in done):.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.save:
        notes = ""  # kept when --save rewrites the table
        if os.path.exists(RESULTS):
            with open(RESULTS) as f:
                text = f.read()
            notes = text[text.index(NOTES):] if NOTES in text else ""
        with open(RESULTS, "w") as f:
            f.write("# Start-up benchmark (benchmarks/bench_startup.py)\n\n"
                    f"`python benchmarks/bench_startup.py --repeats {args.repeats} --save`\n\n"
                    f"{table}\n" + (f"\n{notes}" if notes else ""))


if __name__ == "__main__":
    main()
