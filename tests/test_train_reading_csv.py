"""A TRAIN that reads its CSV file itself (``beam_dsl run`` fuses a ReadFromCsv that only
the TRAIN reads into it: beam_dsl.run_start.fuse_csv_reads) does exactly what the two
transforms do.

* The rewrite: which pipelines are fused (a composite or a chain, one local file, the
  read feeding the TRAIN alone) and which are not (a second reader, a glob, a column
  of file names, windowing, other runners' options).
* End to end, in subprocesses with two worker processes: the census data with broken
  rows, 25,000 rows (three of Beam's frames), run fused and unfused (the read also
  feeding a MapToFields): the same metrics, errors, models (their sha256) and counts.
* A file with quoted fields is read whole (a quoted field may hold a line break): the
  same outputs again, and the run says why.
* A line pandas cannot parse in the third frame fails the run with the error it gives
  unfused, line number included, and names the ReadFromCsv (Beam's reader names no
  step).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from beam_dsl.run_start import TRAIN_READING_CSV, fuse_csv_reads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- the rewrite


def _read(name="data", **config):
    return {"type": "ReadFromCsv", "name": name, "config": {"path": "data.csv", **config}}


def _train(input_="data", **more):
    return {"type": "t", "input": input_, "config": {"name": "t"}, **more}


@pytest.fixture
def here(tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text("k,x\na,1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_read_that_only_a_train_reads_is_fused(here):
    pipeline = {"type": "composite", "transforms": [
        _read(delimiter=","), _train(), {"type": "WriteToJson", "input": "t"}]}
    assert fuse_csv_reads({"pipeline": pipeline}, {"t"}) == ["t"]
    fused, write = pipeline["transforms"]
    assert fused["type"] == TRAIN_READING_CSV and "input" not in fused
    assert fused["config"] == {"csv": {"path": "data.csv", "sep": ","}, "read": "data",
                               "train": {"name": "t"}}
    assert write == {"type": "WriteToJson", "input": "t"}


def test_a_chain_starting_with_the_read_and_the_train_is_fused(here):
    pipeline = {"type": "chain", "transforms": [
        {"type": "ReadFromCsv", "config": {"path": "data.csv"}},
        {"type": "t", "config": {"name": "t"}}, {"type": "WriteToJson"}]}
    assert fuse_csv_reads({"pipeline": pipeline}, {"t"}) == ["t"]
    assert [t["type"] for t in pipeline["transforms"]] == [TRAIN_READING_CSV, "WriteToJson"]


@pytest.mark.parametrize("transforms", [
    [_read(), _train(), {"type": "Flatten", "input": ["data"]}],  # read twice
    [_read(), _train(), {"type": "WriteToJson", "input": "data.x"}],
    [_read(), _train(), {"type": "WriteToJson", "input": "ReadFromCsv"}],  # by its type
    [_read(path="*.csv"), _train()],  # a glob
    [_read(path="missing.csv"), _train()],
    [_read(filename_column="f"), _train()],
    [_read(delimiter="::"), _train()],
    [_read(), _train(windowing={"type": "fixed", "size": 60})],
    [_read(), _train(input_=["data"])],
    [_read(), {"type": "other", "input": "data"}],  # not a TRAIN
])
def test_other_pipelines_are_left_as_they_are(here, transforms):
    pipeline = {"type": "composite", "transforms": transforms}
    before = json.dumps(pipeline, sort_keys=True)
    assert fuse_csv_reads({"pipeline": pipeline}, {"t"}) == []
    assert json.dumps(pipeline, sort_keys=True) == before


def test_a_readfromcsv_of_the_files_own_providers_is_left_as_it_is(here):
    pipeline = {"type": "composite", "transforms": [_read(), _train()]}
    providers = [{"type": "python", "config": {}, "transforms": {"ReadFromCsv": "my.Reader"}}]
    assert fuse_csv_reads({"pipeline": pipeline, "providers": providers}, {"t"}) == []
    assert pipeline["transforms"][0]["type"] == "ReadFromCsv"


def test_the_output_of_a_composite_counts_as_a_reader(here):
    pipeline = {"type": "composite", "transforms": [_read(), _train()],
                "output": {"rows": "data"}}
    assert fuse_csv_reads({"pipeline": pipeline}, {"t"}) == []


# ---------------------------------------------------------------- end to end

SPEC = """
TRAIN t
  PER education
  WHERE hours_per_week > 5
  FEATURES age, workclass, occupation, hours_per_week, marital_status
  LABEL income
  USING sklearn.tree.DecisionTreeClassifier(max_depth = 5, random_state = 0)
  HOLDOUT 20% SEED 3
  METRICS accuracy, f1
  MIN ROWS 40
  SAVE TO 'models/{key}.pkl';
"""
PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: data, config: {path: data.csv}}
    - {type: t, input: data}
    - {type: WriteToJson, input: t, config: {path: out/metrics}}
    - {type: WriteToJson, input: t.errors, config: {path: out/errors}}
"""
# A chain: the read first, the TRAIN second (and last: its outputs are several).
CHAIN = """
specs: [spec.bdsl]
pipeline:
  type: chain
  transforms:
    - {type: ReadFromCsv, config: {path: data.csv}}
    - {type: t}
"""
# The read feeds a second transform too: not fused. (Not a Flatten: Beam 2.77's Flatten of
# ReadFromCsv's batched output fails, "TypeError: an integer is required".)
UNFUSED = PIPELINE + ("    - {type: MapToFields, input: data,"
                      " config: {language: python, fields: {e: education}}}\n")


@pytest.fixture(scope="module")
def census(tmp_path_factory) -> bytes:
    spec = importlib.util.spec_from_file_location(
        "census_generate", os.path.join(REPO, "pipelines", "census", "generate.py"))
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    path = tmp_path_factory.mktemp("census") / "census.csv"
    generate.generate(25_000, seed=11, bad_every=97).to_csv(path, index=False)
    return path.read_bytes()


def _run(folder, data: bytes, pipeline: str) -> subprocess.CompletedProcess:
    folder.mkdir()
    (folder / "data.csv").write_bytes(data)
    (folder / "spec.bdsl").write_text(SPEC)
    (folder / "pipeline.yaml").write_text(textwrap.dedent(pipeline))
    return subprocess.run(
        [sys.executable, "-m", "beam_dsl", "run", "--workers", "2", "pipeline.yaml"],
        cwd=folder, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})


def _lines(folder, prefix: str) -> list[str]:
    out = []
    for name in sorted(os.listdir(folder / "out")):
        if name.startswith(prefix):
            out += (folder / "out" / name).read_text().splitlines()
    return sorted(out)


def _manifest(folder) -> dict:
    manifest = json.loads((folder / "models" / "manifest.json").read_text())
    return {m["file"]: m["sha256"] for m in manifest["models"]}


def _counts(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "rows in" in line or "models:" in line]


def test_a_fused_run_gives_what_the_two_transforms_give(tmp_path, census):
    fused = _run(tmp_path / "fused", census, PIPELINE)
    unfused = _run(tmp_path / "unfused", census, UNFUSED)
    assert fused.returncode == 0 and unfused.returncode == 0, fused.stderr + unfused.stderr
    for prefix in ("metrics", "errors"):
        assert _lines(tmp_path / "fused", prefix) == _lines(tmp_path / "unfused", prefix)
    assert len(_lines(tmp_path / "fused", "errors")) > 200  # the broken rows
    assert _manifest(tmp_path / "fused") == _manifest(tmp_path / "unfused")
    assert _counts(fused.stdout) == _counts(unfused.stdout)
    assert "t: 25000 rows in" in fused.stdout
    chain = _run(tmp_path / "chain", census, CHAIN)
    assert chain.returncode == 0, chain.stderr
    assert _manifest(tmp_path / "chain") == _manifest(tmp_path / "fused")


def test_a_quoted_file_is_read_whole_and_gives_what_the_two_transforms_give(tmp_path, census):
    """Every text field quoted: a quoted field may hold a line break, so the TRAIN reads
    the file in its own process, as Beam's reader does, and says why."""
    quoted = pd.read_csv(io.BytesIO(census)).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
    fused = _run(tmp_path / "fused", quoted.encode(), PIPELINE)
    unfused = _run(tmp_path / "unfused", quoted.encode(), UNFUSED)
    assert fused.returncode == 0 and unfused.returncode == 0, fused.stderr + unfused.stderr
    assert "reads" in fused.stderr and "not in parts: it holds '\"'" in fused.stderr
    for prefix in ("metrics", "errors"):
        assert _lines(tmp_path / "fused", prefix) == _lines(tmp_path / "unfused", prefix)
    assert _manifest(tmp_path / "fused") == _manifest(tmp_path / "unfused")
    assert _counts(fused.stdout) == _counts(unfused.stdout)


def test_a_line_that_does_not_parse_fails_as_it_does_unfused(tmp_path, census):
    lines = census.split(b"\n")
    lines[21_000] += b",surplus"
    broken = b"\n".join(lines)
    fused = _run(tmp_path / "fused", broken, PIPELINE)
    unfused = _run(tmp_path / "unfused", broken, UNFUSED)
    assert fused.returncode == unfused.returncode == 1
    error = ("error[E460]: the pipeline failed{}: ParserError: Error tokenizing data. "
             "C error: Expected 15 fields in line 21001, saw 16")
    assert "pipeline.yaml: " + error.format("") in unfused.stderr  # Beam names no step
    assert "pipeline.yaml:6:14: " + error.format(" in data") in fused.stderr
    assert not (tmp_path / "fused" / "models").exists()
