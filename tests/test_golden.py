"""Golden tests: compile cases (specs + pipeline in, Beam YAML out) and error cases
(bad spec or pipeline in, rendered diagnostics out). `pytest --update-goldens` rewrites them."""

from __future__ import annotations

import io
import os

import pytest
from conftest import check_golden

from beam_dsl.cli import main

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
COMPILE = os.path.join(HERE, "compile")
ERRORS = os.path.join(HERE, "errors")


def _cases(root: str, suffix: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(root)
        if name.endswith(suffix) or os.path.isdir(os.path.join(root, name))
    )


def _run(argv: list[str], cwd: str, capsys) -> tuple[int, str]:
    before = os.getcwd()
    os.chdir(cwd)
    try:
        out = io.StringIO()
        code = main(argv, out=out)
    finally:
        os.chdir(before)
    return code, out.getvalue() + capsys.readouterr().err


@pytest.mark.parametrize("case", _cases(COMPILE, "/"))
def test_compile_golden(case, update_goldens, capsys):
    case_dir = os.path.join(COMPILE, case)
    code, output = _run(["compile", "pipeline.yaml"], case_dir, capsys)
    assert code == 0, output
    check_golden(os.path.join(case_dir, "expected.yaml"), output, update_goldens)


@pytest.mark.parametrize("case", _cases(ERRORS, ".bdsl"))
def test_error_golden(case, update_goldens, capsys):
    path = os.path.join(ERRORS, case)
    if os.path.isdir(path):
        code, output = _run(["lint", "pipeline.yaml"], path, capsys)
        golden = os.path.join(path, "expected.txt")
    else:
        code, output = _run(["lint", case], ERRORS, capsys)
        golden = os.path.join(ERRORS, case[: -len(".bdsl")] + ".txt")
    assert code == 1, output
    assert "Traceback" not in output
    check_golden(golden, output, update_goldens)
