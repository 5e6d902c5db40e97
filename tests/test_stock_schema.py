"""The snapshot of Beam YAML's stock transforms that lint checks configs against."""

import glob
import io
import json
import os

from conftest import REPO

from beam_dsl.cli import main
from beam_dsl.schemas import stock


def test_the_snapshot_matches_the_installed_beam():
    """Upgrading Beam without `python -m beam_dsl.schemas.stock --write` fails here."""
    with open(stock.SNAPSHOT, encoding="utf-8") as f:
        assert json.load(f) == stock.generate()


def test_known_configs_have_their_keys_and_required_keys():
    with open(stock.SNAPSHOT, encoding="utf-8") as f:
        transforms = json.load(f)["transforms"]
    assert transforms["ReadFromCsv"] == {
        "keys": ["comment", "delimiter", "filename_column", "path"], "required": ["path"]}
    assert "fields" in transforms["MapToFields"]["required"]
    assert transforms["Sql"] is None  # a Java expansion service: known by name only


def test_the_example_pipelines_use_stock_configs_lint_accepts():
    for path in glob.glob(os.path.join(REPO, "pipelines", "*", "pipeline.yaml")):
        out = io.StringIO()
        main(["lint", path, "--format", "json"], out=out)
        codes = {d["code"] for d in json.loads(out.getvalue() or "[]")}
        assert not codes & {"E114", "E115"}, (path, out.getvalue())
