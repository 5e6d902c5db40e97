"""The CLI in-process: exit codes, formats, and the no-heavy-imports promise."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from beam_dsl.cli import main

GOLDEN = os.path.join(REPO, "tests", "golden")
LANGUAGE_MD = os.path.join(os.path.dirname(REPO), "shared", "design", "LANGUAGE.md")


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_lint_clean_spec_exits_0():
    code, out = run_cli("lint", os.path.join(GOLDEN, "compile", "language_md", "language.bdsl"))
    assert code == 0
    assert "1 file ok" in out


def test_lint_json_format_lists_every_diagnostic(capsys):
    code, out = run_cli("lint", "--format", "json", os.path.join(GOLDEN, "errors", "train.bdsl"))
    assert code == 1
    items = json.loads(out)
    assert len(items) == 29  # as tests/golden/errors/train.txt
    first = items[0]
    assert set(first) == {
        "code",
        "severity",
        "message",
        "file",
        "line",
        "column",
        "end_line",
        "end_column",
        "hint",
    }
    assert {i["code"] for i in items} >= {"E201", "E202", "E205", "E208", "E213", "E214"}


def test_missing_file_is_a_usage_error(capsys):
    code, _ = run_cli("lint", "no/such/file.bdsl")
    assert code == 2
    assert "No such file" in capsys.readouterr().err


def test_bad_flag_is_a_usage_error(capsys):
    code, _ = run_cli("compile")
    assert code == 2


def test_bad_var_is_a_usage_error(capsys):
    pipeline = os.path.join(GOLDEN, "compile", "section5", "pipeline.yaml")
    code, _ = run_cli("compile", "--var", "novalue", pipeline)
    assert code == 2


def test_compile_writes_output_file(tmp_path):
    pipeline = os.path.join(GOLDEN, "compile", "section5", "pipeline.yaml")
    target = tmp_path / "out.yaml"
    code, out = run_cli("compile", pipeline, "-o", str(target))
    assert code == 0 and out == ""
    text = target.read_text()
    assert "income_by_education: beam_dsl.transforms.training.TrainModels" in text
    assert "input: income_by_education.main" in text
    # Deterministic: compiling twice gives the same bytes.
    run_cli("compile", pipeline, "-o", str(tmp_path / "again.yaml"))
    assert (tmp_path / "again.yaml").read_text() == text


def test_jinja_variables(tmp_path):
    (tmp_path / "s.bdsl").write_text(
        "TRAIN t FEATURES a LABEL b USING sklearn.dummy.DummyClassifier SAVE TO 'm.skops';\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        "specs: [s.bdsl]\npipeline:\n  transforms:\n"
        "    - type: ReadFromCsv\n      name: src\n      config: {path: '{{ data }}'}\n"
        "    - type: t\n      input: src\n"
    )
    code, out = run_cli("compile", str(tmp_path / "pipeline.yaml"), "--var", "data=in.csv")
    assert code == 0
    assert "path: in.csv" in out
    code, _ = run_cli("compile", str(tmp_path / "pipeline.yaml"))
    assert code == 1  # undefined variable is a diagnostic, not a crash


def test_lint_and_compile_import_no_heavy_libraries():
    pipeline = os.path.join(GOLDEN, "compile", "language_md", "pipeline.yaml")
    script = (
        "import sys\n"
        "from beam_dsl.cli import main\n"
        f"assert main(['lint', {pipeline!r}]) == 0\n"
        f"assert main(['compile', {pipeline!r}, '-o', '/dev/null']) == 0\n"
        "heavy = ('apache_beam', 'sklearn', 'torch', 'transformers')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(pipeline),
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


@pytest.mark.skipif(
    not os.path.exists(LANGUAGE_MD), reason="shared/design/LANGUAGE.md not beside the repo"
)
def test_language_md_examples_are_the_golden_spec():
    """The bdsl blocks of LANGUAGE.md, in order, are exactly tests/golden/compile/language_md."""
    with open(LANGUAGE_MD, encoding="utf-8") as f:
        blocks = re.findall(r"```bdsl\n(.*?)```", f.read(), re.S)
    with open(
        os.path.join(GOLDEN, "compile", "language_md", "language.bdsl"), encoding="utf-8"
    ) as f:
        golden = f.read()
    assert golden.split("\n", 1)[1] == "\n".join(blocks)
