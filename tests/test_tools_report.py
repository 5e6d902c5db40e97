"""What a run prints (names, TRAIN's counts, the per-key metrics table, Beam quiet
unless -v) and the HTML report of per-key metrics."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO

from beam_dsl.cli import main
from beam_dsl.transforms.training.modelstore import key_name

TEMPLATE = os.path.join(REPO, "beam_dsl", "tools", "templates", "init")


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, str, str]:
    """The init project with a GATE that rejects one region, run with --report."""
    root = tmp_path_factory.mktemp("report") / "project"
    shutil.copytree(TEMPLATE, root)
    spec = root / "homes.bdsl"
    spec.write_text(spec.read_text().replace("GATE accuracy >= 0.5", "GATE accuracy >= 0.8"))
    page = str(root / "report.html")
    code, out = run_cli("run", str(root / "pipeline.yaml"), "-q", "--report", page)
    assert code == 0, out
    return str(root), out, page


def _metrics(root: str) -> dict[str, dict]:
    rows = [json.loads(line) for p in glob.glob(f"{root}/out/metrics*") for line in open(p)]
    return {r["region"]: r for r in rows}


def test_summary_names_the_transform_and_counts_models(trained):
    _, out, _ = trained
    assert "  price_band_by_region: 123 rows in -> errors 1, main 3, skipped 1" in out
    assert "    models: 3 trained, 2 promoted, 1 rejected by GATE, 1 key skipped" in out


def test_run_ends_with_the_per_key_metrics_table(trained):
    root, out, _ = trained
    table = out.split("price_band_by_region: models/{key}.skops\n", 1)[1].splitlines()
    assert table[0].split() == ["region", "rows", "train", "holdout", "accuracy", "f1", "promoted"]
    metrics = _metrics(root)
    for line in table[1:4]:
        region, rows, train, holdout, accuracy, f1, promoted = line.split()
        row = metrics[region]
        assert (int(rows), int(train), int(holdout)) == (
            row["rows"], row["train_rows"], row["holdout_rows"]
        )
        assert float(accuracy) == pytest.approx(row["accuracy"], abs=5e-5)
        assert float(f1) == pytest.approx(row["f1"], abs=5e-5)
        assert promoted == ("yes" if row["promoted"] else "no")
    assert table[4] == "  skipped east: 2 rows, fewer than MIN ROWS 20"


def test_report_page_charts_every_metric_per_key(trained):
    root, out, page = trained
    assert f"beam_dsl: wrote {page} (1 TRAIN)" in out
    text = open(page, encoding="utf-8").read()
    assert "<script" not in text and "src=" not in text and "href=" not in text  # no network
    svgs = re.findall(r"<svg .*?</svg>", text, re.S)
    assert len(svgs) == 2  # accuracy, f1
    metrics = _metrics(root)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    for svg, metric in zip(svgs, ("accuracy", "f1"), strict=True):
        tree = ET.fromstring(svg)
        bars = tree.findall("svg:rect", ns)
        labels = [t.text for t in tree.findall("svg:text", ns)][0::2]
        assert labels == ["north", "south", "west"]
        widths = [float(b.get("width")) for b in bars]
        expected = [metrics[k][metric] for k in labels]
        assert widths == pytest.approx([v * widths[0] / expected[0] for v in expected], abs=0.1)
        colors = [b.get("fill") for b in bars]
        assert colors.count("#c0504d") == 1  # the rejected model's bar
    assert "3 models, 2 promoted, 1 rejected by GATE, 1 key skipped" in text
    assert "east: 2 rows, fewer than MIN ROWS 20" in text


def test_report_command_reads_the_last_run(trained, tmp_path):
    root, _, page = trained
    again = str(tmp_path / "again.html")
    assert run_cli("report", os.path.join(root, "pipeline.yaml"), "-o", again)[0] == 0
    assert open(again).read() == open(page).read()


def test_report_before_any_run_says_so(tmp_path):
    shutil.copytree(TEMPLATE, tmp_path / "fresh")
    page = tmp_path / "page.html"
    assert run_cli("report", str(tmp_path / "fresh" / "pipeline.yaml"), "-o", str(page))[0] == 0
    assert "the pipeline has not trained yet" in page.read_text()


FEATURES = """\
FEATURES per_user ENTITY user TIMESTAMP ts WINDOW TUMBLING 1h SELECT count(*) AS n;
FEATURES per_user_daily ENTITY user TIMESTAMP ts WINDOW TUMBLING 1d SELECT sum(amount) AS total;
"""


def test_spec_transforms_are_named_by_their_statement_and_beam_is_quiet(tmp_path, capsys):
    (tmp_path / "f.bdsl").write_text(FEATURES)
    (tmp_path / "pipeline.yaml").write_text(
        "specs: [f.bdsl]\npipeline:\n  transforms:\n"
        "    - type: Create\n      name: events\n      config:\n        elements:\n"
        "          - {user: a, ts: 10, amount: 1.5}\n          - {user: a, ts: 20, amount: 2.0}\n"
        "    - {type: per_user, input: events}\n    - {type: per_user_daily, input: events}\n"
        "    - {type: LogForTesting, input: per_user}\n"
    )
    code, out = run_cli("run", str(tmp_path / "pipeline.yaml"), "-q")
    assert code == 0
    assert "  per_user: 2 rows in -> main 1\n" in out
    assert "  per_user_daily: 2 rows in -> main 1\n" in out
    assert "ComputeFeatures" not in out
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'INFO:root:{"user": "a", "window_start": 0.0, "window_end": 3600.0, "n": 2}'
    ]

    code, out = run_cli("run", str(tmp_path / "pipeline.yaml"), "-q", "-v")
    assert code == 0
    assert "INFO:apache_beam.yaml.yaml_transform:Expanding" in capsys.readouterr().err


def test_load_model_with_the_trust_rules_of_model(trained, tmp_path):
    import joblib
    import pandas as pd

    import beam_dsl
    from beam_dsl.transforms.training.modelstore import ModelStoreError

    root, _, _ = trained
    path = os.path.join(root, "models", key_name(["north"]) + ".skops")
    with pytest.raises(ModelStoreError, match="not trusted: sklearn.tree._tree.Tree"):
        beam_dsl.load_model(path)
    model = beam_dsl.load_model(path, trust=["sklearn.tree._tree.Tree"])
    homes = pd.read_csv(os.path.join(root, "data", "homes.csv"))
    homes["sqft"] = pd.to_numeric(homes["sqft"], errors="coerce")  # one row reads 'n/a'
    north = homes[(homes["region"] == "north") & homes["sqft"].notna()].astype({"sqft": int})
    predicted = model.predict(north[list(model.feature_names_in_)])
    assert (predicted == north["price_band"]).mean() >= 0.9  # its holdout accuracy was 1.0

    pickled = str(tmp_path / "model.joblib")
    joblib.dump(model, pickled)
    with pytest.raises(ModelStoreError, match="allow_pickle"):
        beam_dsl.load_model(pickled)
    unpickled = beam_dsl.load_model(pickled, allow_pickle=True)
    assert (unpickled.predict(north[:3]) == predicted[:3]).all()
