"""``beam_dsl schema``: the pipeline.yaml JSON Schema (every pipeline of the repo
validates against it) and the TextMate grammar of .bdsl (every keyword of the
lark grammar is highlighted as one)."""

from __future__ import annotations

import glob
import io
import json
import os
import re

import jsonschema
import pytest
import yaml
from conftest import REPO

from beam_dsl.cli import main

EDITORS = os.path.join(REPO, "beam_dsl", "editors", "bdsl.tmLanguage.json")
PIPELINES = sorted(
    glob.glob(os.path.join(REPO, "pipelines", "*", "*.yaml"))
    + glob.glob(os.path.join(REPO, "tests", "superset", "*.yaml"))
    + glob.glob(os.path.join(REPO, "beam_dsl", "tools", "templates", "init", "*.yaml"))
)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture(scope="module")
def schema() -> dict:
    code, out = run_cli("schema")
    assert code == 0
    return json.loads(out)


def test_schema_is_a_valid_json_schema(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["specs"]["oneOf"][1]["items"]["pattern"] == "\\.bdsl$"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_pipeline_of_the_repo_validates(schema, path):
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    if "pipeline" not in document:
        pytest.skip("not a pipeline file")
    jsonschema.Draft202012Validator(schema).validate(document)


def test_schema_rejects_what_lint_rejects(schema):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"pipeline": {"transforms": [{"config": {}}]}}, schema)  # no type
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"specs": ["a.yaml"], "pipeline": {"transforms": []}}, schema)


def _grammar_keywords() -> set[str]:
    with open(os.path.join(REPO, "beam_dsl", "dsl", "grammar.lark"), encoding="utf-8") as f:
        grammar = f.read()
    keywords = set(re.findall(r'"([A-Z]+)"i', grammar))
    frameworks = re.search(r"^FRAMEWORK\.\d+: /\(([A-Z|]+)\)", grammar, re.M).group(1)
    keywords |= set(frameworks.split("|"))
    constants = re.findall(r"^[A-Z]+\.\d+: /([a-z]+)\\b/i", grammar, re.M)
    keywords |= {word.upper() for word in constants}
    return keywords


def _patterns(node):
    if isinstance(node, dict):
        if "match" in node:
            yield node
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def _scope_of(text: str, grammar: dict) -> str | None:
    """The scope of the first pattern that matches all of ``text``."""
    for pattern in _patterns(grammar["repository"]):
        match = re.fullmatch(pattern["match"], text)
        if match:
            return pattern.get("name") or pattern["captures"]["1"]["name"]
    return None


def test_textmate_grammar_covers_every_keyword_of_the_grammar():
    code, out = run_cli("schema", "--textmate")
    assert code == 0
    grammar = json.loads(out)
    assert grammar["scopeName"] == "source.bdsl" and grammar["fileTypes"] == ["bdsl"]
    keywords = _grammar_keywords()
    assert {"TRAIN", "SKLEARN", "TRUE", "NULL", "LATENESS"} <= keywords
    for keyword in sorted(keywords):
        for spelling in (keyword, keyword.lower()):
            scope = _scope_of(spelling, grammar)
            assert scope and scope.split(".")[0] in ("keyword", "storage", "support", "constant")


@pytest.mark.parametrize(
    "text, scope",
    [
        ("-- a comment", "comment.line.double-dash.bdsl"),
        ("20%", "constant.numeric.quantity.bdsl"),
        ("5m", "constant.numeric.quantity.bdsl"),
        ("512MB", "constant.numeric.quantity.bdsl"),
        ("0.6", "constant.numeric.bdsl"),
        ('"native country"', "variable.other.quoted.bdsl"),
        (">=", "keyword.operator.comparison.bdsl"),
    ],
)
def test_textmate_grammar_scopes(text, scope):
    with open(EDITORS, encoding="utf-8") as f:
        assert _scope_of(text, json.load(f)) == scope


def test_statement_names_and_strings():
    with open(EDITORS, encoding="utf-8") as f:
        grammar = json.load(f)
    (statement,) = [p for p in _patterns(grammar) if "statement" in json.dumps(p.get("captures"))]
    match = re.match(statement["match"], "train income_by_education")
    assert match.group(2) == "income_by_education"
    string = grammar["repository"]["strings"]["patterns"][0]
    assert _begin_end("'it''s' -- x", string) == "'it''s'"


def _begin_end(text: str, rule: dict) -> str:
    """What a TextMate begin/end rule spans at the start of ``text``: after ``begin``,
    its inner patterns are tried at each position before ``end``."""
    pos = re.match(rule["begin"], text).end()
    while pos < len(text):
        inner = [re.compile(p["match"]).match(text, pos) for p in rule.get("patterns", [])]
        inner = [m for m in inner if m]
        if inner:
            pos = inner[0].end()
            continue
        end = re.compile(rule["end"]).match(text, pos)
        if end:
            return text[: end.end()]
        pos += 1
    return text
