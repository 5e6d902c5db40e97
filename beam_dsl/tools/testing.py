"""``beam_dsl test``: runs a pipeline's ``tests:`` blocks, spec transforms included.

The tests are Beam YAML's (``apache_beam/yaml/yaml_testing.py``): each names
``mock_inputs`` / ``mock_outputs`` (rows that replace what a transform reads
or writes) and ``expected_outputs`` / ``expected_inputs`` (the rows a
transform must produce or receive); only the transforms those need run. The
pipeline is compiled first, and Beam runs the compiled pipeline in-process,
so tests can mock the input of a TRAIN or an ENSEMBLE and expect its output.
A spec transform's bare name means its ``main`` output, as in ``input:``;
``name.errors`` and ``name.skipped`` name the others.

Each test runs once; a failing expectation is reported with the rows it
lacks (``-``) and the rows it got that it did not expect (``+``).
``--fix_tests`` writes the rows each failing expectation got into the file
the tests came from (as ``python -m apache_beam.yaml.main --fix_tests``
does, keeping the rest of the file as it was).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

from beam_dsl.diagnostics import YAML_BREAKS, DiagnosticError, Source, read_source
from beam_dsl.dsl.compiler import Compilation, compile_pipeline
from beam_dsl.dsl.templates import render as render_jinja

_EXPECTATIONS = ("expected_outputs", "expected_inputs")
_NAMED = ("mock_outputs", *_EXPECTATIONS)


@dataclass
class TestResult:
    name: str
    line: int | None
    error: str | None = None  # the test could not run: why
    # (where, transform name) -> (expected rows, rows the pipeline gave) of failing expectations
    mismatches: dict[tuple[str, str], tuple[list, list]] = field(default_factory=dict)
    fixed: dict | None = None  # the test with the rows the pipeline gave

    @property
    def passed(self) -> bool:
        return self.error is None and not self.mismatches


def _row_text(row: Any) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _diff(expected: list, actual: list) -> list[str]:
    """``- row`` for each expected row missing, ``+ row`` for each unexpected one."""
    want = sorted(map(_row_text, expected))
    got = sorted(map(_row_text, actual))
    missing, extra = list(want), []
    for row in got:
        if row in missing:
            missing.remove(row)
        else:
            extra.append(row)
    return [f"- {r}" for r in missing] + [f"+ {r}" for r in extra]


def _main_outputs(test: dict, spec_names: set[str]) -> dict:
    """The test with bare names of spec transforms meaning their ``main`` output."""
    out = dict(test)
    for where in ("mock_outputs", "expected_outputs"):  # expected_inputs name a consumer
        if isinstance(test.get(where), list):
            out[where] = [
                dict(e, name=f"{e['name']}.main")
                if isinstance(e, dict) and e.get("name") in spec_names
                else e
                for e in test[where]
            ]
    return out


def _with_names_of(fixed: dict, original: dict) -> dict:
    """``fixed`` with each expectation named as ``original`` names it."""
    for where in _NAMED:
        for new, old in zip(fixed.get(where) or [], original.get(where) or [], strict=False):
            if isinstance(new, dict) and isinstance(old, dict) and "name" in old:
                new["name"] = old["name"]
    return fixed


def _spec_names(compilation: Compilation, pipeline: Any) -> set[str]:
    """Names under which spec transforms appear in the pipeline (``name:`` or type)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            if node.get("type") in compilation.defs:
                names.add(node.get("name", node["type"]))
            for key in ("transforms", "source", "sink"):
                visit(node.get(key))

    visit(pipeline)
    return names


def _run_one(
    spec: dict, test: dict, line: int | None, spec_names: set[str], options: Any
) -> TestResult:
    from apache_beam.yaml import yaml_testing, yaml_transform

    name = str(test.get("name", "unnamed")) if isinstance(test, dict) else "unnamed"
    result = TestResult(name, line)
    try:
        case = yaml_testing.YamlTestCase(spec, _main_outputs(test, spec_names), options, True)
        case.runTest()
    except DiagnosticError:
        raise
    except Exception as exc:  # the test is malformed, or the pipeline failed under it
        result.error = f"{type(exc).__name__}: {exc}".strip()
        return result
    test = yaml_transform.SafeLineLoader.strip_metadata(test)
    named = {where: {e["name"]: e for e in _main_outputs(test, spec_names).get(where, [])}
             for where in _EXPECTATIONS}
    for (where, expectation), actual in (case._fixes or {}).items():
        expected = named[where][expectation].get("elements", [])
        result.mismatches[(where, expectation)] = (list(expected), list(actual))
    result.fixed = _with_names_of(case.fixed_test(), test)
    return result


def run_tests(
    path: str,
    variables: dict[str, Any] | None = None,
    test_suite: str | None = None,
    beam_args: Sequence[str] = (),
) -> list[TestResult]:
    """Compiles ``path`` and runs its tests (or ``test_suite``'s) in-process."""
    compilation = compile_pipeline(path, variables, check_data=False)  # inputs are mocked
    if not compilation.ok:
        raise DiagnosticError(compilation.diagnostics)

    from apache_beam.yaml import yaml_transform

    from beam_dsl.runner import inline_dependencies, on_sys_path, working_directory
    from beam_dsl.transforms.common.runner_compat import RunOptions

    spec = yaml.load(compilation.yaml_text, Loader=yaml_transform.SafeLineLoader)
    holder = spec
    if test_suite:
        holder = yaml.load(_read(test_suite).text, Loader=yaml_transform.SafeLineLoader) or {}
    tests = holder.get("tests") or []
    if not isinstance(tests, list) or not tests:
        source = Source(test_suite or path, "")
        raise DiagnosticError(
            [
                source.diagnostic(
                    "E116",
                    "no tests: block to run" if not tests else "tests: must be a list of tests",
                    None,
                    "add tests: (Beam YAML's format: mock_outputs, expected_outputs)",
                )
            ]
        )
    options = RunOptions(
        list(beam_args),
        runner="apache_beam.runners.portability.fn_api_runner.FnApiRunner",
        pickle_library="cloudpickle",
        **yaml_transform.SafeLineLoader.strip_metadata(spec.get("options", {})),
    )
    spec_names = _spec_names(compilation, spec["pipeline"])
    lines = _test_lines(test_suite or path, variables if not test_suite else {})
    with working_directory(compilation.pipeline_dir):
        with on_sys_path(inline_dependencies(spec["pipeline"])):
            return [
                _run_one(spec, test, lines[i] if i < len(lines) else None, spec_names, options)
                for i, test in enumerate(tests)
            ]


def _read(path: str) -> Source:
    """A pipeline or test-suite file, or the diagnostic (E005, E006) that stops the tests."""
    source, problem = read_source(path, YAML_BREAKS)
    if source is None:
        raise DiagnosticError([problem])
    return source


def _test_lines(path: str, variables: dict[str, Any] | None) -> list[int]:
    """The line of each test in the file it is written in (the compiled file's differ)."""
    text, _ = render_jinja(_read(path), variables or {}, os.path.dirname(path) or ".")
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, value in node.value if isinstance(node, yaml.MappingNode) else ():
        if key.value == "tests" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def render(results: list[TestResult], out: TextIO) -> None:
    for result in results:
        where = f" (line {result.line})" if result.line else ""
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name}{where}", file=out)
        if result.error:
            print(f"    {result.error}", file=out)
        for (kind, name), (expected, actual) in result.mismatches.items():
            print(f"    {kind} {name}: -expected, not produced; +produced, not expected", file=out)
            for line in _diff(expected, actual):
                print(f"      {line}", file=out)
    failed = sum(not r.passed for r in results)
    print(
        f"{len(results)} test{'s' if len(results) != 1 else ''}: "
        f"{len(results) - failed} passed, {failed} failed",
        file=out,
    )


def fix_tests(path: str, results: list[TestResult], variables: dict[str, Any]) -> None:
    """Writes each test, with the rows its failing expectations got, back into ``path``
    (the pipeline file, or the ``--test_suite`` file the tests came from)."""
    from apache_beam.yaml import yaml_utils

    source = _read(path)
    rendered, _ = render_jinja(source, variables, os.path.dirname(path) or ".")
    if rendered != source.text:
        hint = "move the tests to a file of their own and pass it with --test_suite"
        raise DiagnosticError(
            [source.diagnostic("E116", "cannot fix tests in a Jinja template", None, hint)]
        )
    original = source.text
    updated = yaml.safe_load(original) or {}
    tests = updated.get("tests") or []
    for i, result in enumerate(results):
        if result.mismatches:
            tests[i] = result.fixed
    with open(path, "w", encoding="utf-8") as f:
        f.write(yaml_utils.patch_yaml(original, updated))

