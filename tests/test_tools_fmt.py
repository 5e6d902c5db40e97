"""``beam_dsl fmt``: canonical, idempotent, comment-preserving, never changes meaning.

tests/golden/fmt/identity.bdsl holds every statement and clause already in
canonical form and must come back unchanged (as sqlglot's identity.sql);
tests/golden/fmt/cases/<case>.bdsl are inputs whose formatted text is the
golden <case>.expected.bdsl. Every .bdsl of the repository must format
idempotently, to the same lowered IR (or the same diagnostics, for the
golden files of mistakes), and with every comment kept.
"""

from __future__ import annotations

import glob
import io
import os
import re

import pytest
from conftest import REPO, check_golden

from beam_dsl.cli import main
from beam_dsl.diagnostics import DiagnosticError, read_source
from beam_dsl.dsl.compiler import check_spec_files
from beam_dsl.dsl.parser import parse
from beam_dsl.tools.fmt import format_text

FMT = os.path.join(REPO, "tests", "golden", "fmt")
CASES = sorted(
    p for p in glob.glob(os.path.join(FMT, "cases", "*.bdsl")) if not p.endswith(".expected.bdsl")
)
LANGUAGE_MD = os.path.join(os.path.dirname(REPO), "shared", "design", "LANGUAGE.md")


def _repo_specs() -> list[str]:
    paths = glob.glob(os.path.join(REPO, "**", "*.bdsl"), recursive=True)
    return sorted(os.path.relpath(p, REPO) for p in paths if "/.venv/" not in p
                  and os.path.isfile(p))


def _meaning(text: str, tmp_path) -> object:
    """The lowered IR of a spec, or its diagnostics where it has mistakes."""
    path = tmp_path / "spec.bdsl"
    path.write_text(text)
    compilation = check_spec_files([str(path)])
    if compilation.diagnostics:
        return [(d.code, d.message) for d in compilation.diagnostics]
    return [
        (d.name, d.kind, d.class_path, d.config.to_json(), d.resource_hints)
        for d in compilation.defs.values()
    ]


def _comments(text: str) -> list[str]:
    return re.findall(r"--[^\n]*|/\*.*?\*/", text, re.S)


def _check_format(text: str, tmp_path) -> str:
    formatted = format_text(text)
    assert format_text(formatted) == formatted, "fmt is not idempotent"
    assert _meaning(formatted, tmp_path) == _meaning(text, tmp_path), "fmt changed the meaning"
    assert [c.strip() for c in _comments(formatted)] == [c.strip() for c in _comments(text)]
    return formatted


def test_identity_file_is_already_canonical(tmp_path):
    with open(os.path.join(FMT, "identity.bdsl"), encoding="utf-8") as f:
        text = f.read()
    assert not check_spec_files([os.path.join(FMT, "identity.bdsl")]).diagnostics
    assert _check_format(text, tmp_path) == text


def test_identity_file_uses_every_keyword_of_the_grammar():
    with open(os.path.join(REPO, "beam_dsl", "dsl", "grammar.lark"), encoding="utf-8") as f:
        grammar = f.read()
    keywords = set(re.findall(r'"([A-Z]+)"i', grammar)) | {"SKLEARN", "PYTORCH", "ONNX"}
    with open(os.path.join(FMT, "identity.bdsl"), encoding="utf-8") as f:
        words = set(re.findall(r"\b[A-Z]+\b", f.read()))
    assert keywords - words == set()


@pytest.mark.parametrize("case", CASES, ids=lambda p: os.path.basename(p))
def test_cases_format_to_their_golden(case, tmp_path, update_goldens):
    with open(case, encoding="utf-8") as f:
        formatted = _check_format(f.read(), tmp_path)
    check_golden(case.replace(".bdsl", ".expected.bdsl"), formatted, update_goldens)


@pytest.mark.parametrize("path", _repo_specs())
def test_every_spec_of_the_repo_formats_idempotently_to_the_same_meaning(path, tmp_path):
    source, unreadable = read_source(os.path.join(REPO, path))
    if unreadable is not None:  # not UTF-8, say: the CLI reports it (E005) and formats nothing
        assert main(["fmt", "--check", os.path.join(REPO, path)]) == 1
        return
    text = source.text
    if parse(text, path)[1]:
        with pytest.raises(DiagnosticError):  # fmt refuses a file with syntax errors
            format_text(text, path)
        return
    _check_format(text, tmp_path)


@pytest.mark.skipif(not os.path.exists(LANGUAGE_MD), reason="LANGUAGE.md not beside the repo")
def test_language_md_examples_format_idempotently(tmp_path):
    with open(LANGUAGE_MD, encoding="utf-8") as f:
        blocks = re.findall(r"```bdsl\n(.*?)```", f.read(), re.S)
    for block in blocks:
        _check_format(block, tmp_path)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


UGLY = "model m sklearn 'm.skops'\n   output p;\n"
CANONICAL = "MODEL m\n  SKLEARN 'm.skops'\n  OUTPUT p;\n"


def test_check_exits_1_and_changes_nothing(tmp_path, capsys):
    spec = tmp_path / "m.bdsl"
    spec.write_text(UGLY)
    assert run_cli("fmt", "--check", str(tmp_path)) == (1, "")
    assert spec.read_text() == UGLY
    assert f"would reformat {spec}" in capsys.readouterr().err
    spec.write_text(CANONICAL)
    assert run_cli("fmt", "--check", str(spec)) == (0, "")


def test_diff_prints_the_change(tmp_path):
    spec = tmp_path / "m.bdsl"
    spec.write_text(UGLY)
    code, out = run_cli("fmt", "--diff", str(spec))
    assert code == 0 and spec.read_text() == UGLY
    assert "-model m sklearn 'm.skops'\n" in out and "+  SKLEARN 'm.skops'\n" in out


def test_fmt_rewrites_files_in_place(tmp_path, capsys):
    spec = tmp_path / "m.bdsl"
    spec.write_text(UGLY)
    assert run_cli("fmt", str(spec)) == (0, "")
    assert spec.read_text() == CANONICAL
    assert f"reformatted {spec}" in capsys.readouterr().err


def test_a_syntax_error_is_reported_not_formatted(tmp_path, capsys):
    spec = tmp_path / "m.bdsl"
    spec.write_text("MODEL m SKLEARN;\n")
    assert run_cli("fmt", str(spec)) == (1, "")
    assert "error[E001]" in capsys.readouterr().err
    assert spec.read_text() == "MODEL m SKLEARN;\n"


def test_standard_input_to_standard_output(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(UGLY))
    assert run_cli("fmt", "-") == (0, CANONICAL)
