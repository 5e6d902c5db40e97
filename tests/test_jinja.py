"""Jinja in pipeline.yaml runs sandboxed: no code, no files outside the folder, no hangs.

Each attack is a real template through the real CLI; the proof that it did not
run is a file it would have created.
"""

from __future__ import annotations

import io
import os
import time

import pytest
import yaml

from beam_dsl.cli import main
from beam_dsl.dsl import templates

SPEC = "TRAIN t FEATURES a LABEL b USING sklearn.dummy.DummyClassifier SAVE TO 'm.skops';\n"
BODY = (
    "specs: [s.bdsl]\n"
    "pipeline:\n"
    "  transforms:\n"
    "    - type: ReadFromCsv\n"
    "      name: src\n"
    "      config: {path: in.csv}\n"
    "    - type: t\n"
    "      input: src\n"
)


def _folder(tmp_path, pipeline: str, **files: str) -> str:
    (tmp_path / "s.bdsl").write_text(SPEC)
    (tmp_path / "in.csv").write_text("a,b\n1,0\n")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    return str(tmp_path / "pipeline.yaml")


def _cli(*argv: str, capsys) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue() + capsys.readouterr().err


def _touch(marker) -> str:
    return f'cycler.__init__.__globals__.os.system("touch {marker}")'


ESCAPES = [
    "{{ %s }}",
    "{{ joiner.__init__.__globals__['os'].system('touch {marker}') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
]


@pytest.mark.parametrize("command", ["lint", "compile", "run"])
def test_a_template_cannot_run_code(tmp_path, capsys, command):
    marker = tmp_path / "X"
    pipeline = _folder(tmp_path, f"# {{{{ {_touch(marker)} }}}}\n" + BODY)
    code, output = _cli(command, pipeline, capsys=capsys)
    assert code == 1, output
    assert "error[E102]" in output and "unsafe" in output
    assert not marker.exists()


@pytest.mark.parametrize("template", ESCAPES[1:])
def test_sandbox_refuses_private_attributes_and_mutation(tmp_path, capsys, template):
    marker = tmp_path / "X"
    pipeline = _folder(tmp_path, "# " + template.replace("{marker}", str(marker)) + "\n" + BODY)
    code, output = _cli("lint", pipeline, capsys=capsys)
    assert code == 1, output
    assert "pipeline.yaml:1:1: error[E102]: template error:" in output
    assert not marker.exists()


def test_var_values_are_data_and_stay_inert_in_the_compiled_file(tmp_path, capsys):
    """A --var value is inserted once; the compiled file holds it so that Beam
    YAML's own Jinja pass (python -m apache_beam.yaml.main) prints it, not runs it."""
    from apache_beam.yaml.yaml_transform import expand_jinja

    marker = tmp_path / "X"
    payload = "{{ " + _touch(marker) + " }} {% if 1 %}x{% endif %} {# c #} {{ 7 * 7 }}"
    pipeline = _folder(
        tmp_path,
        BODY + "    - type: WriteToJson\n      input: t\n      config: {path: '{{ out }}'}\n",
    )
    code, output = _cli("compile", pipeline, "--var", f"out={payload}", capsys=capsys)
    assert code == 0, output
    assert "{{" not in output and "{%" not in output and "{#" not in output
    compiled = yaml.safe_load(output)
    assert compiled["pipeline"]["transforms"][2]["config"]["path"] == payload  # not rendered

    rendered = expand_jinja(output, {})  # what Beam YAML's main does before parsing
    assert yaml.safe_load(rendered) == compiled
    assert not marker.exists()


def test_include_import_and_extends_read_the_pipeline_folder(tmp_path, capsys):
    base = "{% block head %}{% endblock %}\n" + BODY + "{% block sinks %}{% endblock %}"
    child = (
        "{% extends 'parts/base.yaml' %}\n"
        "{% import 'parts/macros.j2' as m %}\n"
        "{% block head %}# {{ m.greeting('lint') }}{% endblock %}\n"
        "{% block sinks %}{% include 'parts/sink.yaml' %}{% endblock %}\n"
    )
    pipeline = _folder(
        tmp_path,
        child,
        **{
            "parts/base.yaml": base,
            "parts/macros.j2": "{% macro greeting(who) %}hello {{ who }}{% endmacro %}",
            "parts/sink.yaml": "    - type: WriteToJson\n      input: t\n"
            "      config: {path: out}\n",
        },
    )
    code, output = _cli("compile", pipeline, capsys=capsys)
    assert code == 0, output
    sink = yaml.safe_load(output)["pipeline"]["transforms"][2]
    assert sink == {"type": "WriteToJson", "input": "t.main", "config": {"path": "out"}}


@pytest.mark.parametrize("target", ["../secret.yaml", "/etc/passwd", "link.yaml", "parts"])
def test_templates_cannot_leave_the_pipeline_folder(tmp_path, capsys, target):
    secret = tmp_path / "secret.yaml"
    secret.write_text("TOP SECRET\n")
    folder = tmp_path / "p"
    (folder / "parts").mkdir(parents=True)
    os.symlink(secret, folder / "link.yaml")
    pipeline = _folder(folder, "# {% include '" + target + "' %}\n" + BODY)
    code, output = _cli("lint", pipeline, capsys=capsys)
    assert code == 1, output
    assert f"error[E102]: template error: no template '{target}' in the pipeline's folder" in output
    assert "TOP SECRET" not in output and "root:" not in output


# Each would take minutes or gigabytes without the limits.
HANGS = {
    "nested loops": "{% for i in range(99999) %}{% for j in range(99999) %}"
    "{% endfor %}{% endfor %}",
    "loops over a string": "{% set s = 'x' * 99999 %}{% for a in s %}{% for b in s %}"
    "{% endfor %}{% endfor %}",
    "repetition": "{{ 'x' * 10**9 }}",
    "nested repetition": "{{ [[1] * 99999] * 99999 }}",
    "power": "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n ** 2 %}"
    "{% endfor %}",
    "padding": "{{ 'x'|center(10**9) }}",
    "padding method": "{{ 'x'.ljust(10**9) }}",
    "printf width": "{{ '%0999999999d' % 1 }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling blocks": "{% set s = 'x' %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 64,
    "doubling lists": "{% set s = 'x' %}" + "{% set s = [s, s] %}" * 64 + "{{ s|string }}",
    "exponential macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
    "{% endmacro %}{{ f(64) }}",
    "endless recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "slow filters": "{{ range(99999)|list" + "|sort(reverse=true)|sort" * 2000 + " }}",
    "output": "{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}",
    "lipsum": "{{ lipsum(10**6) }}",
}


@pytest.mark.parametrize("name", sorted(HANGS))
def test_limits_turn_a_hang_into_e102(tmp_path, capsys, name):
    pipeline = _folder(tmp_path, "# " + HANGS[name] + "\n" + BODY)
    start = time.monotonic()
    code, output = _cli("lint", pipeline, capsys=capsys)
    assert code == 1, output
    assert "error[E102]: template" in output, output
    assert time.monotonic() - start < templates.MAX_SECONDS + 3


def test_ordinary_templates_still_work(tmp_path, capsys):
    pipeline = _folder(
        tmp_path,
        "{% set sinks = ['a', 'b'] %}\n" + BODY + "{% for s in sinks %}"
        "    - type: WriteToJson\n      name: w_{{ s }}\n      input: t\n"
        "      config: {path: '{{ '%s/%s'|format(root, s) }}'}\n"
        "{% endfor %}",
    )
    code, output = _cli("compile", pipeline, "--var", "root=out", capsys=capsys)
    assert code == 0, output
    paths = [t["config"]["path"] for t in yaml.safe_load(output)["pipeline"]["transforms"][2:]]
    assert paths == ["out/a", "out/b"]


def test_jinja_variables_take_nested_json_as_stock_does(tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "pipeline:\n  type: composite\n  transforms:\n"
        "    - type: Create\n"
        "      config: {elements: [{n: '{{ cfg.n }}', who: '{{ cfg.who.name }}'}]}\n"
        "    - {type: LogForTesting, input: Create}\n"
    )
    out = io.StringIO()
    variables = '{"cfg": {"n": 3, "who": {"name": "ada"}}}'
    assert main(["compile", str(path), "--jinja_variables", variables], out=out) == 0
    elements = yaml.safe_load(out.getvalue())["pipeline"]["transforms"][0]["config"]["elements"]
    assert elements == [{"n": "3", "who": "ada"}]
    assert main(["compile", str(path), "--jinja_variables", "[1]"], out=io.StringIO()) == 2
    assert "JSON mapping" in capsys.readouterr().err
