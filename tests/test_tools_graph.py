"""``beam_dsl graph``: goldens in Mermaid and DOT, and the outputs it draws for each
spec transform are the outputs the transforms really have."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, check_golden

from beam_dsl.cli import main
from beam_dsl.dsl.lower import TRANSFORM_CLASSES
from beam_dsl.tools.graph import OUTPUTS, build, expr_text

GOLDEN = os.path.join(REPO, "tests", "golden")
CASES = {
    "language_md": os.path.join(GOLDEN, "compile", "language_md", "pipeline.yaml"),
    "nested": os.path.join(GOLDEN, "graph", "nested.yaml"),
    "partition_flatten": os.path.join(REPO, "tests", "superset", "partition_flatten.yaml"),
}


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("mermaid", "mmd"), ("dot", "dot")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_graph_goldens(case, fmt, suffix, update_goldens):
    code, out = run_cli("graph", CASES[case], "--format", fmt)
    assert code == 0
    check_golden(os.path.join(GOLDEN, "graph", f"{case}.{suffix}"), out, update_goldens)


def test_ensemble_internals_and_outputs_are_drawn():
    graph = build(CASES["language_md"])
    labels = {}

    def collect(cluster):
        for node in cluster.nodes:
            labels[node.id] = node.label
        for inner in cluster.clusters:
            labels[inner.id] = inner.label
            collect(inner)

    collect(graph.root)
    edges = {(labels[a], labels[b], label) for a, b, label in graph.edges}
    assert ("STEP captions = blip(image)", "STEP scores = clip(image, captions)", "") in edges
    combiner = "OUTPUT top_k(captions, scores, 3) AS best_captions"
    assert ("STEP scores = clip(image, captions)", combiner, "") in edges
    assert ("churn_lr", "churn_rf", "otherwise") in edges
    assert ("churn_lr", "main", "when churn_lr.confidence >= 0.9") in edges
    assert ("SHADOW churn_lr", "shadow", "") in edges
    assert ("shadow", "WriteToJson\nwrite_shadow", "") in edges
    assert ("main", "DATASET fraud_training", "") not in edges  # edges end at nodes
    assert "online: sqlite:///features.db" in labels.values()


def test_expressions_read_back():
    expr = {
        "op": "and",
        "args": [
            {"op": "in", "args": [{"col": "c"}, {"lit": "a'b"}, {"lit": 2}], "negated": True},
            {"op": "or", "args": [{"op": "is_null", "args": [{"col": "x", "of": "m"}]},
                                  {"fn": "lower", "args": [{"col": "y"}]}]},
        ],
    }
    assert expr_text(expr) == "c NOT IN ('a''b', 2) AND (m.x IS NULL OR lower(y))"


def test_graph_outputs_are_the_transforms_outputs(tmp_path):
    """Expands (without running) one transform of each kind and compares its outputs."""
    (tmp_path / "s.bdsl").write_text(
        "TRAIN t PER city FEATURES size LABEL big USING sklearn.tree.DecisionTreeClassifier"
        " SAVE TO 'm/{key}.skops';\n"
        "MODEL m SKLEARN 'm/{key}.skops' PER city OUTPUT p;\n"
        "ENSEMBLE e STEP a = m(*) STEP b = m(*) OUTPUT vote(a, b) AS p;\n"
        "FEATURES f ENTITY city TIMESTAMP ts WINDOW TUMBLING 1h SELECT count(*) AS n"
        " ONLINE 'sqlite:///f.db' OFFLINE 'out/f';\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        "specs: [s.bdsl]\npipeline:\n  transforms:\n"
        "    - type: Create\n      name: rows\n"
        "      config: {elements: [{city: a, size: 1, big: x, ts: 1}]}\n"
        + "".join(f"    - {{type: {n}, input: rows}}\n" for n in "tmef")
    )
    script = (
        "import json, sys, apache_beam as beam\n"
        "from apache_beam.pipeline import PipelineVisitor\n"
        "from apache_beam.yaml import yaml_transform\n"
        "from beam_dsl.dsl.compiler import compile_pipeline\n"
        "from beam_dsl.transforms.common.spec import SpecTransform\n"
        "p = beam.Pipeline()\n"
        "yaml_transform.expand_pipeline(p, compile_pipeline('pipeline.yaml').yaml_text)\n"
        "found = {}\n"
        "class V(PipelineVisitor):\n"
        "    def enter_composite_transform(self, node):\n"
        "        if isinstance(node.transform, SpecTransform):\n"
        "            found[type(node.transform).__name__] = sorted(map(str, node.outputs))\n"
        "p.visit(V())\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    stores = {"Features": ["online", "offline"]}
    for kind in ("Train", "Model", "Ensemble", "Features"):
        class_name = TRANSFORM_CLASSES[kind].rsplit(".", 1)[-1]
        assert found[class_name] == sorted([*OUTPUTS[kind], *stores.get(kind, [])]), kind
