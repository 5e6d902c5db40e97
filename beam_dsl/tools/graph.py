"""``beam_dsl graph``: a pipeline's transforms and edges, spec internals included.

Each Beam YAML transform is a node; ``input:`` references (and the implicit
ones of a ``chain``) are edges, labelled with the output they read when it is
not the main one. A spec transform is a box of its own: its statement, the
outputs it has (TRAIN: main, skipped, errors; MODEL and FEATURES: main,
errors, and FEATURES' online / offline stores; ENSEMBLE: main, errors,
shadow) and, for an ENSEMBLE, its members: STEPs with the steps they read,
the OUTPUT combiner, SPLIT arms and their shares, CASCADE and SWITCH arms
with their conditions, SHADOW models. A consumer's edge starts at the output
it reads. Written as Mermaid (``flowchart``) or Graphviz DOT; like ``lint``
and ``compile`` it imports no Beam.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.compiler import Compilation, compile_pipeline
from beam_dsl.dsl.lower import TransformDef

# The outputs of each spec transform (their expand() in beam_dsl.transforms.*;
# tests/test_tools_graph.py checks these against the transforms themselves).
OUTPUTS = {
    "Train": ("main", "skipped", "errors"),
    "Model": ("main", "errors"),
    "Ensemble": ("main", "errors", "shadow"),
    "Features": ("main", "errors"),
    "Dataset": ("main", "errors"),
}
_INFIX = {"and", "or", "=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"}


@dataclass
class Node:
    id: str
    label: str
    shape: str = "box"  # box | port (an output) | member (inside a spec transform)


@dataclass
class Cluster:
    id: str
    label: str
    nodes: list[Node] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)


@dataclass
class Graph:
    root: Cluster
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # from, to, label


def expr_text(e: Any) -> str:
    """A lowered expression (beam_dsl.dsl.lower.lower_expr) as text, for labels."""
    if not isinstance(e, dict):
        return json.dumps(e)
    if "lit" in e:
        lit = e["lit"]
        return "'" + lit.replace("'", "''") + "'" if isinstance(lit, str) else json.dumps(lit)
    if "col" in e:
        return f"{e['of']}.{e['col']}" if e.get("of") else e["col"]
    op = e.get("op") or e.get("fn")
    args = [
        f"({text})" if isinstance(a, dict) and a.get("op") in ("and", "or") else text
        for a in e.get("args", [])
        for text in [expr_text(a)]
    ]
    negated = "NOT " if e.get("negated") else ""
    if op in _INFIX and len(args) == 2:
        return f"{args[0]} {op.upper()} {args[1]}"
    templates = {
        "not": "NOT {0}",
        "neg": "-{0}",
        "in": "{0} %sIN ({1})",
        "between": "{0} %sBETWEEN {1} AND {2}",
        "like": "{0} %sLIKE {1}",
        "is_null": "{0} IS %sNULL",
    }
    if op in templates:
        rest = ", ".join(args[1:])
        return (templates[op].replace("%s", negated)).format(args[0], rest, *args[2:])
    return f"{op}({', '.join(args)})"


class _Builder:
    def __init__(self, compilation: Compilation):
        self.defs = compilation.defs
        self.count = 0
        self.edges: list[tuple[str, str, str]] = []

    def new_id(self) -> str:
        self.count += 1
        return f"n{self.count}"

    # -- Beam YAML structure

    def composite(self, spec: dict, cluster: Cluster, inputs: dict[str, str]) -> dict[str, Any]:
        """Adds a composite's transforms; returns its scope: name -> (entry, outputs)."""
        transforms = list(spec.get("transforms") or [])
        if isinstance(spec.get("source"), dict):
            transforms.insert(0, spec["source"])
        if isinstance(spec.get("sink"), dict):
            transforms.append(spec["sink"])
        scope: dict[str, Any] = {}
        built = []
        types = [t.get("type") for t in transforms]
        for t in transforms:
            entry, outputs = self.transform(t, cluster)
            built.append((t, entry))
            scope[t.get("name", t.get("type"))] = outputs
            if "name" in t and types.count(t.get("type")) == 1:  # a unique type names it too
                scope.setdefault(t["type"], outputs)
        chain = spec.get("type") == "chain"
        previous = inputs.get("") if chain else None
        for t, entry in built:
            refs = t.get("input")
            if refs is None and chain and previous is not None:
                self.edges.append((previous, entry, ""))
            for tag, ref in _refs(refs):
                source, label = self.resolve(ref, scope, inputs)
                if source is not None:
                    self.edges.append((source, entry, tag or label))
            if chain:
                previous = scope[t.get("name", t.get("type"))].get("main")
        return scope

    def resolve(self, ref: str, scope: dict, inputs: dict[str, str]) -> tuple[str | None, str]:
        """The node a reference reads from, and the edge's label: the output's name
        where it has no node of its own (a tagged output of a Beam transform)."""
        name, _, tag = ref.partition(".")
        if name == "input" and name not in scope:
            return inputs.get(""), tag
        outputs = scope.get(name)
        if outputs is None:
            return None, ""
        if tag in outputs:
            return outputs[tag], ""
        return outputs["main"], "" if tag in ("", "main") else tag

    def transform(self, t: dict, cluster: Cluster) -> tuple[str, dict[str, str]]:
        """Adds one transform; returns its entry node and its outputs' nodes."""
        kind = t.get("type", "")
        name = t.get("name")
        if isinstance(t.get("transforms"), list):
            inner = Cluster(self.new_id(), f"{kind} {name or ''}".strip())
            cluster.clusters.append(inner)
            entry = self.new_id()
            inner.nodes.append(Node(entry, "input", "port"))
            scope = self.composite(t, inner, {"": entry})
            last = t["transforms"][-1]
            exit_ = self.new_id()
            inner.nodes.append(Node(exit_, "output", "port"))
            ref = t.get("output")
            if not isinstance(ref, str):  # Beam YAML: the last transform's output
                ref = last.get("name", last.get("type"))
            source, label = self.resolve(ref, scope, {"": entry})
            self.edges.append((source or entry, exit_, label))
            return entry, {"main": exit_}
        definition = self.defs.get(kind)
        if definition is None:
            node = Node(self.new_id(), f"{kind}\n{name}" if name and name != kind else kind)
            cluster.nodes.append(node)
            return node.id, {"main": node.id}
        return self.spec_transform(definition, name or kind, cluster)

    # -- spec transforms

    def spec_transform(
        self, definition: TransformDef, name: str, cluster: Cluster
    ) -> tuple[str, dict[str, str]]:
        config = definition.config.to_json()
        keyword = definition.config.KIND
        box = Cluster(self.new_id(), f"{keyword} {name}")
        cluster.clusters.append(box)
        entry = self.new_id()
        box.nodes.append(Node(entry, _summary(definition.kind, config)))
        names = list(OUTPUTS[definition.kind])
        names += [store for store in ("online", "offline") if config.get(store)]
        outputs = {}
        for output in names:
            outputs[output] = self.new_id()
            label = output if output not in ("online", "offline") else f"{output}: {config[output]}"
            box.nodes.append(Node(outputs[output], label, "port"))
        if definition.kind == "Ensemble":
            self.ensemble(config, box, entry, outputs)
        else:
            for output in names:
                self.edges.append((entry, outputs[output], ""))
        return entry, outputs

    def member(self, box: Cluster, label: str) -> str:
        node = Node(self.new_id(), label, "member")
        box.nodes.append(node)
        return node.id

    def ensemble(self, config: dict, box: Cluster, entry: str, outputs: dict[str, str]) -> None:
        main = outputs["main"]
        self.edges.append((entry, outputs["errors"], ""))
        steps: dict[str, str] = {}
        for step in config["steps"]:
            args = "*" if step["args"] is None else ", ".join(step["args"])
            steps[step["name"]] = self.member(box, f"STEP {step['name']} = {step['model']}({args})")
            reads = {a.split(".")[0] for a in step["args"] or []} & set(steps)
            for source in sorted(reads, key=list(steps).index):
                self.edges.append((steps[source], steps[step["name"]], ""))
            if not reads:
                self.edges.append((entry, steps[step["name"]], ""))
        output = config.get("output")
        if output:
            args = [a if isinstance(a, str) else json.dumps(a) for a in output["args"]]
            args += [f"{k} = {expr_text({'lit': v})}" for k, v in output["kwargs"].items()]
            label = f"OUTPUT {output['combiner']}({', '.join(args)})"
            combiner = self.member(box, label + (f" AS {output['as']}" if output.get("as") else ""))
            for arg in output["args"]:
                if isinstance(arg, str) and arg.split(".")[0] in steps:
                    self.edges.append((steps[arg.split(".")[0]], combiner, ""))
            self.edges.append((combiner, main, ""))
        elif steps:
            self.edges.append((list(steps.values())[-1], main, ""))
        if config.get("split"):
            keys = ", ".join(config["split"]["keys"])
            for arm in config["split"]["arms"]:
                node = self.member(box, arm["model"])
                self.edges.append((entry, node, f"{keys}: {arm['share']:.0%}"))
                self.edges.append((node, main, ""))
        if config.get("cascade"):
            previous, condition = entry, ""
            for arm in config["cascade"]:
                node = self.member(box, arm["model"])
                self.edges.append((previous, node, condition))
                when = arm.get("when")
                self.edges.append((node, main, f"when {expr_text(when)}" if when else ""))
                previous, condition = node, "otherwise"
        if config.get("switch"):
            for case in config["switch"]["cases"]:
                node = self.member(box, case["model"])
                self.edges.append((entry, node, f"when {expr_text(case['when'])}"))
                self.edges.append((node, main, ""))
            if config["switch"].get("default"):
                node = self.member(box, config["switch"]["default"])
                self.edges.append((entry, node, "else"))
                self.edges.append((node, main, ""))
        for model in config.get("shadow") or ():
            node = self.member(box, f"SHADOW {model}")
            self.edges.append((entry, node, ""))
            self.edges.append((node, outputs["shadow"], ""))


def _summary(kind: str, c: dict) -> str:
    """A spec transform's node label: its statement's main clauses."""
    if kind == "Train":
        per = f"PER {', '.join(c['per'])}\n" if c["per"] else ""
        return f"{per}USING {c['estimator']['callable'].rsplit('.', 1)[-1]}\nSAVE TO {c['save_to']}"
    if kind == "Model":
        where = c.get("path") or (c.get("handler") or {}).get("callable", "")
        return f"{c['framework'].upper()} {where}\nOUTPUT {', '.join(c['output'] or [c['name']])}"
    if kind == "Features":
        windows = ", ".join(
            f"{w['kind'].upper()} {_duration(w['size_s'])}"
            + (f" EVERY {_duration(w['every_s'])}" if w["kind"] == "sliding" else "")
            for w in c["windows"]
        )
        return f"ENTITY {', '.join(c['entity'])}\nWINDOW {windows}\n{len(c['select'])} features"
    if kind == "Dataset":
        joined = ", ".join(c["features"])
        return f"ENTITY {', '.join(c['entity'])}\nAS OF {c['as_of']}\nJOIN {joined}"
    return f"ENSEMBLE of {', '.join(sorted(c['models']))}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _refs(refs: Any) -> list[tuple[str, str]]:
    """(input tag, reference) for a Beam YAML ``input:``: a name, a list, or tags."""
    if isinstance(refs, str):
        return [("", refs)]
    if isinstance(refs, list):
        return [("", r) for r in refs if isinstance(r, str)]
    if isinstance(refs, dict):
        return [(tag, r) for tag, ref in refs.items() for _, r in _refs(ref)]
    return []


def build(path: str, variables: dict[str, Any] | None = None) -> Graph:
    """The graph of a pipeline.yaml; raises DiagnosticError where it does not compile."""
    compilation = compile_pipeline(path, variables, check_data=False)
    if not compilation.ok:
        raise DiagnosticError(compilation.diagnostics)
    pipeline = yaml.safe_load(compilation.yaml_text)["pipeline"]
    builder = _Builder(compilation)
    root = Cluster("pipeline", "pipeline")
    builder.composite(pipeline, root, {})
    return Graph(root, builder.edges)


# ---------------------------------------------------------------- renderers


def _mermaid_text(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'


_MERMAID_SHAPES = {"box": "[{}]", "port": "([{}])", "member": "[/{}/]"}


def _nodes(graph: Graph, node_line, open_lines, close_line: str) -> list[str]:
    """Every node, cluster by cluster (nested and indented), in one renderer's syntax."""
    lines: list[str] = []

    def cluster(c: Cluster, indent: str) -> None:
        lines.extend(indent + node_line(node) for node in c.nodes)
        for inner in c.clusters:
            lines.extend(indent + line for line in open_lines(inner))
            cluster(inner, indent + "  ")
            lines.append(indent + close_line)

    cluster(graph.root, "  ")
    return lines


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    lines += _nodes(
        graph,
        lambda n: n.id + _MERMAID_SHAPES[n.shape].format(_mermaid_text(n.label)),
        lambda c: [f"subgraph {c.id} [{_mermaid_text(c.label)}]"],
        "end",
    )
    for source, target, label in graph.edges:
        arrow = f" -->|{_mermaid_text(label)}| " if label else " --> "
        lines.append(f"  {source}{arrow}{target}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"box": "box", "port": "ellipse", "member": "parallelogram"}


def to_dot(graph: Graph) -> str:
    lines = ["digraph pipeline {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    lines += _nodes(
        graph,
        lambda n: f"{n.id} [label={_dot_text(n.label)}, shape={_DOT_SHAPES[n.shape]}];",
        lambda c: [f"subgraph cluster_{c.id} {{", f"  label={_dot_text(c.label)};"],
        "}",
    )
    for source, target, label in graph.edges:
        attrs = f" [label={_dot_text(label)}]" if label else ""
        lines.append(f"  {source} -> {target}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot}
