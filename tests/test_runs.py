"""End to end: the census example through `beam_dsl run` in-process, through stock
Beam YAML on the compiled file, and on a local Dask cluster; all must agree."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from beam_dsl.cli import main
from beam_dsl.transforms.training.modelstore import load_model, read_manifest

CENSUS = os.path.join(REPO, "pipelines", "census")
ROWS = 2000


@pytest.fixture(scope="module")
def census_dir(tmp_path_factory) -> str:
    """A copy of pipelines/census with a small generated sample."""
    root = tmp_path_factory.mktemp("census")
    for name in ("income.bdsl", "pipeline.yaml"):
        shutil.copy(os.path.join(CENSUS, name), root / name)
    subprocess.run(
        [
            sys.executable,
            os.path.join(CENSUS, "generate.py"),
            "--rows",
            str(ROWS),
            "--out",
            str(root / "data" / "generated" / "census.csv"),
        ],
        check=True,
    )
    return str(root)


def _fresh_copy(census_dir: str, tmp_path) -> str:
    target = tmp_path / "run"
    shutil.copytree(census_dir, target)
    return str(target)


def _rounded(row: dict) -> dict:
    # Beam's WriteToJson (pandas) writes 10 significant digits, the Dask sink all.
    return {k: round(v, 8) if isinstance(v, float) else v for k, v in row.items()}


def _json_rows(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            rows.extend(_rounded(json.loads(line)) for line in f if line.strip())
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def _predictions(run_dir: str, entry: dict, template: str) -> list | None:
    """A promoted model's predictions on the sample: equal models predict alike.

    (skops files carry zip timestamps, so equal models need not be equal bytes.)"""
    if not entry["promoted"]:
        return None
    path = os.path.join(os.path.dirname(template), entry["file"])
    model = load_model(path)  # TRAIN's trees: types beam_dsl vouches for
    sample = pd.read_csv(os.path.join(run_dir, "data", "generated", "census.csv"), nrows=300)
    sample = sample[model.feature_names_in_].dropna()
    sample = sample[pd.to_numeric(sample["age"], errors="coerce").notna()].astype({"age": int})
    return model.predict(sample).tolist()


def _outcome(run_dir: str) -> dict:
    """What a run produced: metrics rows, skipped, errors, and the models."""
    template = os.path.join(run_dir, "models", "income", "{key}.skops")
    manifest = read_manifest(template)
    return {
        "metrics": _json_rows(os.path.join(run_dir, "out", "metrics*")),
        "skipped": _json_rows(os.path.join(run_dir, "out", "skipped*")),
        "errors": _json_rows(os.path.join(run_dir, "out", "errors*")),
        "models": {
            json.dumps(m["key"]): (m["metrics"], m["promoted"], _predictions(run_dir, m, template))
            for m in manifest["models"]
        },
    }


@pytest.fixture(scope="module")
def trained_dir(census_dir, tmp_path_factory) -> str:
    """The census example run in-process: models, manifest and outputs."""
    run_dir = _fresh_copy(census_dir, tmp_path_factory.mktemp("inproc"))
    out = io.StringIO()
    code = main(["run", os.path.join(run_dir, "pipeline.yaml"), "-q"], out=out)
    assert code == 0
    assert f"income_by_education: {ROWS} rows in" in out.getvalue()
    return run_dir


@pytest.fixture(scope="module")
def in_process(trained_dir) -> dict:
    return _outcome(trained_dir)


def test_every_row_is_accounted_for(in_process):
    trained_or_held_out = sum(r["rows"] for r in in_process["metrics"])
    skipped = sum(r["rows"] for r in in_process["skipped"])
    assert trained_or_held_out + skipped + len(in_process["errors"]) == ROWS
    assert in_process["errors"], "the generator breaks some rows on purpose"
    assert all(r["reason"] for r in in_process["errors"])


def test_stock_beam_yaml_runs_the_compiled_file_with_the_same_result(
    census_dir, in_process, tmp_path
):
    run_dir = _fresh_copy(census_dir, tmp_path)
    assert (
        main(
            [
                "compile",
                os.path.join(run_dir, "pipeline.yaml"),
                "-o",
                os.path.join(run_dir, "compiled.yaml"),
            ]
        )
        == 0
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "apache_beam.yaml.main",
            "--yaml_pipeline_file=compiled.yaml",
            "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner",
        ],
        cwd=run_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _outcome(run_dir) == in_process


def test_dask_runner_gives_the_same_metrics_and_models(census_dir, in_process, tmp_path):
    run_dir = _fresh_copy(census_dir, tmp_path)
    out = io.StringIO()
    code = main(
        ["run", os.path.join(run_dir, "pipeline.yaml"), "--runner", "DaskRunner", "-q"], out=out
    )
    assert code == 0
    assert _outcome(run_dir) == in_process


SERVE_SPEC = """
MODEL income_models
  SKLEARN 'models/income/{key}.skops'
  PER education
  OUTPUT predicted_income;
"""

SERVE_PIPELINE = """
specs: [serve.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: census, config: {path: data/generated/census.csv}}
    - {type: income_models, input: census}
    - {type: WriteToJson, name: w1, input: income_models, config: {path: out/predictions}}
    - {type: WriteToJson, name: w2, input: income_models.errors, config: {path: out/unserved}}
"""


def _serve(trained_dir: str, target: str, *runner: str) -> tuple[list, list]:
    shutil.copytree(trained_dir, target)
    with open(os.path.join(target, "serve.bdsl"), "w") as f:
        f.write(SERVE_SPEC)
    with open(os.path.join(target, "serve.yaml"), "w") as f:
        f.write(SERVE_PIPELINE)
    assert main(["run", os.path.join(target, "serve.yaml"), "-q", *runner], out=io.StringIO()) == 0
    served = [
        (r["fnlwgt"], r["education"], r["predicted_income"], r["model_key"])
        for r in _json_rows(os.path.join(target, "out", "predictions*"))
    ]
    reasons = sorted(r["reason"] for r in _json_rows(os.path.join(target, "out", "unserved*")))
    return sorted(served), reasons


def test_per_key_inference_is_the_same_on_dask(trained_dir, tmp_path):
    """MODEL ... PER over the models TRAIN wrote: keys without a promoted model
    (gated, skipped) have no model and no FALLBACK, so their rows go to errors."""
    served, reasons = _serve(trained_dir, str(tmp_path / "inproc"))
    assert len(served) + len(reasons) == ROWS
    assert served and reasons
    assert all(key == education for _, education, _, key in served)
    assert _serve(trained_dir, str(tmp_path / "dask"), "--runner", "DaskRunner") == (
        served, reasons
    )
