"""``beam_dsl test``: Beam YAML's tests: blocks, run on the compiled pipeline."""

from __future__ import annotations

import io

import pytest
import yaml

from beam_dsl.cli import main
from beam_dsl.transforms.training.modelstore import key_name

SPEC = """\
TRAIN by_city
  PER city
  FEATURES size
  LABEL big
  USING sklearn.tree.DecisionTreeClassifier(max_depth = 2, random_state = 0)
  HOLDOUT 25% SEED 1
  MIN ROWS 4
  SAVE TO 'models/{key}.skops';
"""

ROWS = """\
          - {city: a, size: 1, big: 'no'}
          - {city: a, size: 2, big: 'no'}
          - {city: a, size: 8, big: 'yes'}
          - {city: a, size: 9, big: 'yes'}
          - {city: b, size: 3, big: 'no'}
"""

PIPELINE = """\
specs: [s.bdsl]
pipeline:
  transforms:
    - type: ReadFromCsv
      name: rows
      config: {path: data.csv}
    - type: by_city
      input: rows
    - type: WriteToJson
      input: by_city
      config: {path: out/metrics}
tests:
  # A key with too few rows is skipped, with the reason.
  - name: skips small keys
    mock_outputs:
      - name: rows
        elements:
{rows}    expected_outputs:
      - name: by_city.skipped
        elements:
          - {city: b, rows: 1, reason: '1 rows, fewer than MIN ROWS 4'}
  - name: reports bad rows
    mock_outputs:
      - name: rows
        elements:
{rows}    expected_outputs:
      - name: by_city.errors
        elements:
          - {row: '{}', reason: nothing is wrong, transform: by_city}
""".replace("{rows}", ROWS)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture
def pipeline(tmp_path) -> str:
    (tmp_path / "s.bdsl").write_text(SPEC)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return str(tmp_path / "pipeline.yaml")


def test_each_test_is_named_and_a_failure_shows_the_rows_it_differs_by(pipeline):
    code, out = run_cli("test", pipeline)
    assert code == 1
    assert "PASS  skips small keys (line 14)" in out
    assert "FAIL  reports bad rows (line 27)" in out
    assert "expected_outputs by_city.errors" in out
    assert '- {"reason": "nothing is wrong", "row": "{}", "transform": "by_city"}' in out
    assert "+ " not in out  # the mocked rows are all good: nothing came out
    assert out.rstrip().endswith("2 tests: 1 passed, 1 failed")


def test_run_with_test_flag_runs_the_tests(pipeline):
    assert run_cli("run", pipeline, "--test") == run_cli("test", pipeline)


def test_fix_tests_writes_the_rows_the_pipeline_gave(pipeline):
    with open(pipeline) as f:
        text = f.read()
    text = text.replace("by_city.errors", "by_city")  # the bare name: TRAIN's main output
    with open(pipeline, "w") as f:
        f.write(text)
    code, _ = run_cli("test", pipeline, "--fix_tests")
    assert code == 1
    with open(pipeline) as f:
        fixed = f.read()
    assert "# A key with too few rows is skipped, with the reason." in fixed  # the rest is kept
    (expectation,) = yaml.safe_load(fixed)["tests"][1]["expected_outputs"]
    assert expectation["name"] == "by_city"
    (row,) = expectation["elements"]
    assert row["city"] == "a" and row["rows"] == 4 and row["train_rows"] == 3
    assert row["promoted"] is True and row["model_uri"] == "models/" + key_name(["a"]) + ".skops"
    code, out = run_cli("test", pipeline)
    assert code == 0, out
    assert out.rstrip().endswith("2 tests: 2 passed, 0 failed")


def test_a_pipeline_without_tests_is_a_diagnostic(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  transforms:\n    - {type: Create, config: {elements: [{a: 1}]}}\n"
    )
    code, _ = run_cli("test", str(tmp_path / "p.yaml"))
    assert code == 1
    assert "error[E116]: no tests: block to run" in capsys.readouterr().err


def test_tests_from_a_test_suite_file(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  type: chain\n  transforms:\n"
        "    - {type: Create, config: {elements: [{a: 1}, {a: 2}]}}\n"
        "    - {type: MapToFields, name: Double, config: {language: python, fields: {b: a * 2}}}\n"
    )
    (tmp_path / "suite.yaml").write_text(
        "tests:\n  - name: doubles\n    expected_outputs:\n"
        "      - {name: Double, elements: [{b: 2}, {b: 4}]}\n"
    )
    suite = str(tmp_path / "suite.yaml")
    code, out = run_cli("test", str(tmp_path / "p.yaml"), "--test_suite", suite)
    assert code == 0, out
    assert "PASS  doubles (line 2)" in out
