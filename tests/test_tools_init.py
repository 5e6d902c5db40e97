"""``beam_dsl init``: a new project that runs, and whose tests pass, at once."""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import sys

from conftest import REPO

from beam_dsl.cli import main


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_init_makes_a_project_that_runs_and_passes_its_tests(tmp_path):
    project = str(tmp_path / "project")
    code, out = run_cli("init", project)
    assert code == 0
    assert sorted(os.listdir(project)) == [
        "README.md", "data", "homes.bdsl", "pipeline.schema.json", "pipeline.yaml"
    ]
    assert f"python -m beam_dsl run {project}/pipeline.yaml" in out
    spec, pipeline = os.path.join(project, "homes.bdsl"), os.path.join(project, "pipeline.yaml")
    assert run_cli("lint", spec, pipeline)[0] == 0
    assert run_cli("fmt", "--check", spec)[0] == 0

    result = subprocess.run(
        [sys.executable, "-m", "beam_dsl", "run", pipeline, "-q"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "price_band_by_region: 123 rows in" in result.stdout
    metrics = [json.loads(line) for p in glob.glob(f"{project}/out/metrics*") for line in open(p)]
    assert sorted(m["region"] for m in metrics) == ["north", "south", "west"]
    assert all(os.path.exists(os.path.join(project, m["model_uri"])) for m in metrics)
    skipped = [json.loads(line) for p in glob.glob(f"{project}/out/skipped*") for line in open(p)]
    assert [s["region"] for s in skipped] == ["east"]

    code, out = run_cli("test", pipeline)
    assert code == 0, out
    assert "1 test: 1 passed, 0 failed" in out


def test_init_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert run_cli("init", str(tmp_path))[0] == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["keep.txt"]
