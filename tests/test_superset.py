"""beam_dsl runs plain Beam YAML as stock Beam YAML does (tests/superset).

Each pipeline in tests/superset (modelled on Apache Beam's own YAML examples,
with local inputs) runs under stock ``apache_beam.yaml.main`` and under
``beam_dsl run``; what LogForTesting logs and the files written must be the
same, record for record, and beam_dsl must print nothing else (none of Beam's
own log lines). Each driver runs its pipelines one after another in one
process, so that Beam is imported twice rather than twice per pipeline.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from beam_dsl.cli import main

SUPERSET = os.path.join(REPO, "tests", "superset")
PIPELINES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SUPERSET, "*.yaml")))
# Stock Beam YAML installs dependencies: from the package index into a new virtual
# environment (minutes, and not offline): those pipelines are checked against
# the rows stock Beam gave once, below.
NEEDS_INDEX = {"dependencies.yaml"}
MARK = "=== pipeline "

_STOCK = """
import logging, os, sys
from apache_beam.yaml import main
logging.getLogger().setLevel(logging.INFO)  # as apache_beam.yaml.main does when run
for name in sys.argv[1:]:
    print("{mark}" + name, file=sys.stderr, flush=True)
    main.run(["--yaml_pipeline_file=" + name,
              "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"])
"""

_BEAM_DSL = """
import sys
from beam_dsl.cli import main
for name in sys.argv[1:]:
    print("{mark}" + name, file=sys.stderr, flush=True)
    assert main(["run", name, "-q"]) == 0, name
"""

_LOGGED = re.compile(r"^(INFO|ERROR|DEBUG|WARNING):root:([^{\[\"]*)(.*)$")


def _sections(stderr: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in stderr.splitlines():
        if line.startswith(MARK):
            current = out.setdefault(line[len(MARK) :], [])
        elif current is not None:
            current.append(line)
    return out


def _logged_rows(lines: list[str]) -> collections.Counter:
    """What LogForTesting logged: (level, prefix, element) for each line."""
    rows = collections.Counter()
    for line in lines:
        match = _LOGGED.match(line)
        if not match:
            continue
        try:
            element = json.loads(match.group(3))
        except json.JSONDecodeError:
            continue  # Beam's own root-logger lines ("Computing dataframe stage ...")
        rows[(match.group(1), match.group(2), json.dumps(element, sort_keys=True))] += 1
    return rows


def _written(run_dir: str, name: str) -> list[str]:
    """Every line of every file the pipeline wrote under out/<name>, sorted."""
    lines = []
    for path in glob.glob(os.path.join(run_dir, "out", name.removesuffix(".yaml"), "*")):
        with open(path, encoding="utf-8") as f:
            lines.extend(f.read().splitlines())
    return sorted(lines)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Both drivers, side by side: each side's stderr per pipeline, and its folder."""
    dirs = {side: str(tmp_path_factory.mktemp(side) / "superset") for side in ("stock", "dsl")}
    for target in dirs.values():
        shutil.copytree(SUPERSET, target)
    env = dict(os.environ, PYTHONPATH=REPO)
    stock = [p for p in PIPELINES if p not in NEEDS_INDEX]
    procs = {
        side: subprocess.Popen(
            [sys.executable, "-c", script.format(mark=MARK), *names],
            cwd=dirs[side],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for side, script, names in (("stock", _STOCK, stock), ("dsl", _BEAM_DSL, PIPELINES))
    }
    out = {}
    for side, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{side}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
        out[side] = (_sections(stderr), dirs[side])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", [p for p in PIPELINES if p not in NEEDS_INDEX])
def test_same_output_as_stock_beam_yaml(runs, name):
    stock_lines, stock_dir = runs["stock"][0][name], runs["stock"][1]
    dsl_lines, dsl_dir = runs["dsl"][0][name], runs["dsl"][1]
    assert _logged_rows(dsl_lines) == _logged_rows(stock_lines)
    assert _written(dsl_dir, name) == _written(stock_dir, name)
    assert _logged_rows(stock_lines) or _written(stock_dir, name), "the pipeline shows nothing"


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINES)
def test_beam_dsl_shows_logged_rows_and_nothing_of_beams_own(runs, name):
    lines = runs["dsl"][0][name]
    assert len(lines) == sum(_logged_rows(lines).values()), "\n".join(lines)


@pytest.mark.slow
def test_python_dependencies_run_in_process_offline(runs):
    """A local package directory and an installed distribution, without a new
    virtual environment (the rows stock Beam YAML gives, after installing both)."""
    rows = _logged_rows(runs["dsl"][0]["dependencies.yaml"])
    expected = [
        {"tool_name": "MapReduce", "year": "MMIV", "month": "December"},
        {"tool_name": "Flume", "year": "MMX", "month": "June"},
        {"tool_name": "Apache Beam", "year": "MMXVI", "month": "June"},
    ]
    assert rows == collections.Counter(
        ("INFO", "", json.dumps(row, sort_keys=True)) for row in expected
    )


@pytest.mark.parametrize("name", PIPELINES)
def test_beam_yaml_examples_lint_clean(name, capsys):
    assert main(["lint", os.path.join(SUPERSET, name)]) == 0, capsys.readouterr().out
