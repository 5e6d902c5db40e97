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
    golden = os.path.join(os.path.dirname(__file__), "golden", "errors", "train.txt")
    with open(golden, encoding="utf-8") as f:
        assert len(items) == sum(": error[" in line for line in f)  # as the golden text
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


def test_features_get_and_list_import_no_heavy_libraries(tmp_path):
    from features_support import FIELDS, fill_store, payments

    from beam_dsl.dsl.lower import lower_spec
    from beam_dsl.dsl.parser import parse

    spec, _ = parse("FEATURES clicks ENTITY user_id TIMESTAMP event_time "
                    "WINDOW TUMBLING 1h SELECT count(*) AS n ONLINE 'sqlite:///store.db';")
    config = lower_spec(spec)[0].config
    fill_store(f"sqlite:///{tmp_path}/store.db", config, payments(n=50, users=2), FIELDS)
    script = (
        "import sys\n"
        "from beam_dsl.cli import main\n"
        "assert main(['features', 'get', 'clicks', '--store', 'sqlite:///store.db', "
        "'user_id=1']) == 0\n"
        "assert main(['features', 'list', '--store', 'sqlite:///store.db']) == 0\n"
        "heavy = ('apache_beam', 'pandas', 'pyarrow')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
        "assert main(['features', 'get', 'clicks', '--store', 'sqlite:///store.db', "
        "'--as-of', '2023-11-16T00:00:00Z', 'user_id=1']) == 0\n"  # reading a time: pandas
        "print('BEAM', 'apache_beam' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "n  " in result.stdout and "clicks  (ENTITY user_id" in result.stdout
    assert "HEAVY []" in result.stdout and "BEAM False" in result.stdout


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


SPEC = "TRAIN t FEATURES a LABEL b USING sklearn.dummy.DummyClassifier SAVE TO 'm.skops';\n"
PIPELINE = (
    "specs: [s.bdsl]\npipeline:\n  transforms:\n"
    "    - type: ReadFromCsv\n      name: src\n      config: {path: in.csv}\n"
    "    - type: t\n      input: src\n"
)


def test_lint_spec_and_pipeline_reports_each_problem_once(tmp_path, monkeypatch):
    """`lint spec.bdsl pipeline.yaml` (as the README shows): the spec is checked
    once, through the pipeline that lists it (which knows the CSV's columns)."""
    (tmp_path / "s.bdsl").write_text(SPEC.replace("LABEL b", "LABEL q USING x.Y HOLDOUT 2x"))
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "in.csv").write_text("a,b\n1,0\n")
    (tmp_path / "other.bdsl").write_text("MODEL m SKLEARN 'm.skops' OUTPUT y OUTPUT z;\n")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli("lint", "--format", "json", "s.bdsl", "pipeline.yaml", "other.bdsl")
    assert code == 1
    found = sorted((d["file"], d["line"], d["column"], d["code"]) for d in json.loads(out))
    assert found == [
        ("other.bdsl", 1, 36, "E206"),
        ("s.bdsl", 1, 26, "E201"),  # known only through the pipeline's CSV
        ("s.bdsl", 1, 34, "E231"),  # USING x.Y: no module x
        ("s.bdsl", 1, 46, "E213"),
        ("s.bdsl", 1, 49, "E206"),
    ]


@pytest.mark.parametrize("command", ["run", "compile"])
def test_run_and_compile_take_a_pipeline_not_a_spec(tmp_path, capsys, command):
    (tmp_path / "s.bdsl").write_text("TRAIN secret_statement_text FEATURES a;\n")
    code, out = run_cli(command, str(tmp_path / "s.bdsl"))
    err = capsys.readouterr().err
    assert code == 2
    assert f"{command} takes a pipeline.yaml; got a spec" in err
    assert "secret_statement_text" not in err + out


def test_files_over_the_size_limit_are_e006(tmp_path, capsys):
    from beam_dsl.diagnostics import MAX_FILE_BYTES

    statement = SPEC.replace("TRAIN t", "TRAIN t{}")
    count = MAX_FILE_BYTES // len(statement) + 1
    (tmp_path / "big.bdsl").write_text("".join(statement.format(i) for i in range(count)))
    (tmp_path / "pipeline.yaml").write_text("# " + "x" * MAX_FILE_BYTES + "\n" + PIPELINE)
    for name in ("big.bdsl", "pipeline.yaml"):
        code, out = run_cli("lint", str(tmp_path / name))
        assert code == 1
        assert f"{name}: error[E006]: the file is larger than {MAX_FILE_BYTES:,} bytes" in out


def test_syntax_error_recovery_is_one_pass(tmp_path, monkeypatch):
    """4,000 broken statements: one diagnostic each, from a single parse of the
    file (the old recovery re-parsed the rest of the file after every error)."""
    from beam_dsl.dsl import parser

    lark_parser = parser._lark()
    calls = []
    real_parse = lark_parser.parse
    monkeypatch.setattr(
        lark_parser, "parse", lambda *a, **k: calls.append(1) or real_parse(*a, **k)
    )
    good = "MODEL good{} SKLEARN 'm.skops' OUTPUT y;\n"
    broken = "TRAIN t{} FEATURES a LABEL b USING ;\n"
    text = "".join((broken if i % 2 else good).format(i) for i in range(8000))
    (tmp_path / "s.bdsl").write_text(text)
    code, out = run_cli("lint", "--format", "json", str(tmp_path / "s.bdsl"))
    assert code == 1
    items = json.loads(out)
    assert [d["line"] for d in items] == list(range(2, 8001, 2))
    assert {d["code"] for d in items} == {"E001"}
    assert calls == [1]


def test_lint_and_run_check_local_data_but_compile_does_not(tmp_path, capsys):
    (tmp_path / "s.bdsl").write_text(SPEC)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    code, out = run_cli("lint", str(tmp_path / "pipeline.yaml"))
    assert code == 1
    assert "error[E112]: no file matches 'in.csv'" in out
    code, out = run_cli("compile", str(tmp_path / "pipeline.yaml"))
    assert code == 0
    assert "path: in.csv" in out
