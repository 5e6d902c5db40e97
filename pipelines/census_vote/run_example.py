"""The census vote example end to end: data, training, serving, accuracy.

    python pipelines/census_vote/run_example.py [--train-rows 3000] [--serve-rows 2000]

1. Writes a training sample and a serving sample (with a ``person_id`` for the
   A/B split) with pipelines/census/generate.py, under data/generated/.
2. Runs train.yaml: four TRAIN statements write models/*.skops.
3. Runs pipeline.yaml: the soft vote and the A/B test with its shadow model.
4. Prints each model's and each ensemble's accuracy (report.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from report import accuracy_table, read_output  # noqa: E402


def _generator():
    path = os.path.join(HERE, "..", "census", "generate.py")
    spec = importlib.util.spec_from_file_location("census_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_data(train_rows: int, serve_rows: int) -> None:
    generate = _generator().generate
    data = os.path.join(HERE, "data", "generated")
    os.makedirs(data, exist_ok=True)
    generate(train_rows, seed=1).to_csv(os.path.join(data, "train.csv"), index=False)
    serve = generate(serve_rows, seed=2)
    serve.insert(0, "person_id", range(len(serve)))
    serve.to_csv(os.path.join(data, "serve.csv"), index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--serve-rows", type=int, default=2000)
    args = parser.parse_args(argv)

    from beam_dsl.runner import run_pipeline

    write_data(args.train_rows, args.serve_rows)
    for pipeline in ("train.yaml", "pipeline.yaml"):
        print(run_pipeline(os.path.join(HERE, pipeline), progress=None).render())
    out_dir = os.path.join(HERE, "out")
    print(accuracy_table(out_dir).to_string(index=False))
    print(f"rows sent to errors: {len(read_output(out_dir, 'errors'))}")


if __name__ == "__main__":
    main()
