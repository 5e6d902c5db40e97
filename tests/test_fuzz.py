"""Fuzzing the front end: no input makes ``lint`` crash.

Mutations of real inputs (the LANGUAGE.md examples in
tests/golden/compile/language_md and pipeline.yaml files of the golden and
example pipelines): byte-level edits (flips, deletions, insertions of
interesting bytes), grammar-aware token edits of specs, and line / value edits
of YAML. Each mutant is linted in-process; the exit code must be 0, 1 or 2 and
nothing may print a traceback (exit 123 is the internal-error path).

Deterministic (``derandomize``, no example database): the same cases run every
time: 2,500 cases, about 30 s of CPU here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from beam_dsl.cli import main  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "golden")
LANGUAGE_MD = os.path.join(GOLDEN, "compile", "language_md")
with open(os.path.join(LANGUAGE_MD, "language.bdsl"), "rb") as _f:
    SPEC = _f.read()
with open(os.path.join(REPO, "beam_dsl", "dsl", "grammar.lark"), encoding="utf-8") as _f:
    KEYWORDS = sorted(set(re.findall(r'"([A-Z]+)"i', _f.read())))

# Folders whose pipeline.yaml is mutated (each copied once, with its specs and data).
PIPELINES = [
    LANGUAGE_MD,
    os.path.join(GOLDEN, "compile", "section5"),
    os.path.join(GOLDEN, "errors", "wiring"),
    os.path.join(REPO, "pipelines", "census"),
]
TEMPLATED = (
    "# {% for s in ['a', 'b'] %}{{ s }} {% endfor %}\n"
    "{% set out = 'out' %}\n"
    "specs: [income.bdsl]\n"
    "pipeline:\n"
    "  transforms:\n"
    "    - {type: ReadFromCsv, name: census, config: {path: '{{ 'data/census.csv' }}'}}\n"
    "    - {type: income_by_education, input: census}\n"
    "    - {type: WriteToJson, input: income_by_education, config: {path: '{{ out }}/m'}}\n"
)

INTERESTING = [
    b"\x00",
    b"\xff",
    b"\xe9",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    "\u2028".encode(),
    b"\r",
    b"\r\n",
    b"\t",
    b"/*",
    b"*/",
    b"'",
    b'"',
    b"--",
    b";",
    b"9" * 400,
    b"1.5e309",
    b"{{",
    b"}}",
    b"{%",
    b"{#",
    b"&a",
    b"*a",
    b"<<: ",
    b": ",
    b"- ",
    b"\n  ",
    b"[",
    b"{",
    b"!!python/object:os.system",
    b"? ",
    b"%",
    b"(",
    b")",
    b",",
    b"=",
    b"\\",
]
YAML_VALUES = [
    "1.5",
    "5",
    "[1, 2]",
    "{}",
    "~",
    "''",
    "*x",
    "&x [*x]",
    "!!python/object:os.system x",
    '"\\0"',
    "yes",
    "2024-13-45",
    "[[[[[[[[]]]]]]]]",
    "/etc/passwd",
    "x.bdsl",
    "in.csv",
    "income_by_education.mian",
    "census.main",
    "{{ nope }}",
    "'{{ 1/0 }}'",
    "gs://b/x.csv",
]
SPEC_TOKENS = [
    *KEYWORDS,
    "(",
    ")",
    ",",
    ";",
    "=",
    "*",
    ".",
    "-",
    "+",
    "/",
    "%",
    "<",
    ">=",
    "<>",
    "0",
    "-1",
    "9" * 25,
    "1.5e309",
    "0.5",
    "'.GB'",
    "'8XB'",
    "20%",
    "0%",
    "200%",
    "5m",
    "9" * 30 + "m",
    "1h",
    "512MB",
    "''",
    "'x'",
    "null",
    "true",
    '"q n"',
    "count(*)",
    "k = 1",
    "income",
    "churn_rf",
    "blip",
    "user_id",
    "/*",
    "'",
    "--",
    "\n",
    "\t",
]
_TOKEN = re.compile(
    r"'(?:[^']|'')*'|\"[^\"\n]*\"|--[^\n]*|/\*.*?\*/|\d+(?:\.\d+)?[A-Za-z%]*"
    r"|[A-Za-z_][A-Za-z0-9_]*|\s+|.",
    re.S,
)

SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def lint(path: str) -> None:
    """Lints ``path`` in-process; fails on a crash (exit 123, a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["lint", path], out=out)
    output = out.getvalue() + err.getvalue()
    assert code in (0, 1, 2), output
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[str]:
    """A private copy of each pipeline folder (the mutants are written into it)."""
    copies = []
    for i, source in enumerate(PIPELINES):
        target = tmp_path_factory.mktemp(f"pipeline{i}")
        shutil.copytree(source, target, dirs_exist_ok=True)
        copies.append(str(target))
    return copies


# ---------------------------------------------------------------- mutations


@st.composite
def byte_mutants(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "replace", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        size = draw(st.integers(1, 64))
        blob = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[at : at + size]
        elif op == "insert":
            data[at:at] = blob
        elif op == "replace":
            data[at : at + len(blob)] = blob
        else:
            data[at:at] = data[at : at + size]
    return bytes(data)


def _edit(draw, items: list, edits: dict) -> list:
    """1-4 edits of ``items``: delete, duplicate or swap items, or one of ``edits``
    (name -> function of the index)."""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(items) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", *edits]))
        if op == "delete" and len(items) > 1:
            del items[i]
        elif op == "duplicate":
            items.insert(i, items[i])
        elif op == "swap":
            j = draw(st.integers(0, len(items) - 1))
            items[i], items[j] = items[j], items[i]
        elif op in edits:
            edits[op](i)
    return items


@st.composite
def token_mutants(draw) -> str:
    tokens = _TOKEN.findall(SPEC.decode("utf-8"))

    def token() -> str:
        return " " + draw(st.sampled_from(SPEC_TOKENS)) + " "

    edits = {
        "replace": lambda i: tokens.__setitem__(i, token()),
        "insert": lambda i: tokens.insert(i, token()),
    }
    return "".join(_edit(draw, tokens, edits))


@st.composite
def line_mutants(draw, seeds: list[str]) -> str:
    lines = draw(st.sampled_from(seeds)).splitlines(keepends=True)

    def value(i: int) -> None:
        if ": " in lines[i]:
            lines[i] = f"{lines[i].split(': ', 1)[0]}: {draw(st.sampled_from(YAML_VALUES))}\n"

    def indent(i: int) -> None:
        lines[i] = " " * draw(st.sampled_from([0, 1, 2, 4, 6])) + lines[i].lstrip(" ")

    def insert(i: int) -> None:
        lines.insert(i, f"x{i}: {draw(st.sampled_from(YAML_VALUES))}\n")

    return "".join(_edit(draw, lines, {"value": value, "indent": indent, "insert": insert}))


def _pipeline_seeds() -> list[bytes]:
    seeds = []
    for folder in PIPELINES:
        with open(os.path.join(folder, "pipeline.yaml"), "rb") as f:
            seeds.append(f.read())
    return seeds


# ---------------------------------------------------------------- the properties


@settings(max_examples=700, **SETTINGS)
@given(byte_mutants([SPEC]))
def test_spec_byte_mutations_never_crash(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "mutant.bdsl"
    path.write_bytes(data)
    lint(str(path))


@settings(max_examples=800, **SETTINGS)
@given(token_mutants())
def test_spec_token_mutations_never_crash(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "mutant.bdsl"
    path.write_text(text, encoding="utf-8")
    lint(str(path))


@settings(max_examples=500, **SETTINGS)
@given(st.data())
def test_pipeline_byte_mutations_never_crash(folders, data):
    seeds = _pipeline_seeds()
    i = data.draw(st.integers(0, len(seeds) - 1))
    mutant = data.draw(byte_mutants([seeds[i]]))
    path = os.path.join(folders[i], "pipeline.yaml")
    with open(path, "wb") as f:
        f.write(mutant)
    lint(path)


@settings(max_examples=500, **SETTINGS)
@given(st.data())
def test_pipeline_line_mutations_never_crash(folders, data):
    seeds = [s.decode("utf-8") for s in _pipeline_seeds()] + [TEMPLATED]
    i = data.draw(st.integers(0, len(seeds) - 1))
    mutant = data.draw(line_mutants([seeds[i]]))
    path = os.path.join(
        folders[i if i < len(folders) else 1], "pipeline.yaml"
    )  # TEMPLATED: section5
    with open(path, "w", encoding="utf-8") as f:
        f.write(mutant)
    lint(path)
