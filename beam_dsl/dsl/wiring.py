"""The pipeline's graph and its local inputs, checked before anything runs.

What Beam YAML would only find once the pipeline is built or run:

* E109 an ``input:`` that names no transform of its composite (or several);
* E110 an output a spec transform does not have (``train.mian``);
* E111 a cycle of inputs;
* E112 a ``ReadFromCsv`` whose local ``path`` matches no file;
* E113 a CSV file that is empty or whose header is not UTF-8.

Names resolve as in Beam YAML: within one composite, a reference is the
composite's own input or a transform's ``name`` or ``type``, with an optional
``.output``. Chains (and composites with ``source`` / ``sink``) wire their
transforms implicitly and are not checked.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterator, Mapping
from typing import Any

from beam_dsl.diagnostics import MAX_FILE_BYTES, Diagnostic, did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.yamlfile import YamlDocument

_BASE_OUTPUTS = {
    "Train": ("skipped",),
    "Model": (),
    "Ensemble": ("shadow",),
    "Features": (),
    "Dataset": (),
}


def spec_outputs(stmt: ast.Statement) -> tuple[str, ...] | None:
    """The outputs of a spec transform (docs/LANGUAGE_REFERENCE.md, pipeline.yaml);
    None where they are not known here."""
    extra = _BASE_OUTPUTS.get(type(stmt).__name__)
    if extra is None:
        return None
    if isinstance(stmt, ast.Features):
        extra = tuple(
            tag
            for tag, clause in (("online", ast.OnlineClause), ("offline", ast.OfflineClause))
            if stmt.get(clause) is not None
        )
    return ("main", "errors", *extra)


def _label(transform: dict) -> str:
    name = transform.get("name", transform.get("type"))
    return name if isinstance(name, str) else "?"


def _refs(value: Any, path: tuple) -> Iterator[tuple[str, tuple]]:
    """Every transform reference in an ``input:`` or ``output:`` value, with its path."""
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield item, path + (i,)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _refs(item, path + (key,))


class _Scope:
    """One composite's transforms, by the names Beam YAML resolves."""

    def __init__(self, transforms: list, inputs: frozenset[str]):
        self.transforms = transforms
        self.inputs = inputs
        self.by_name: dict[str, list[int]] = {}
        for i, t in enumerate(transforms):
            if not isinstance(t, dict):
                continue
            for key in ("name", "type"):
                if isinstance(t.get(key), str) and i not in self.by_name.get(t[key], ()):
                    self.by_name.setdefault(t[key], []).append(i)


class _Wiring:
    def __init__(self, doc: YamlDocument, statements: Mapping[str, ast.Statement]):
        self.doc = doc
        self.statements = statements
        self.diagnostics: list[Diagnostic] = []

    def error(self, code: str, message: str, path: tuple, hint: str | None = None) -> None:
        self.diagnostics.append(
            self.doc.source.diagnostic(code, message, self.doc.span(path), hint)
        )

    def composite(self, node: dict, path: tuple, inputs: frozenset[str]) -> None:
        transforms = node.get("transforms")
        implicit = node.get("type") == "chain" or "source" in node or "sink" in node
        if not isinstance(transforms, list) or implicit:
            return
        scope = _Scope(transforms, inputs)
        edges: dict[int, list[tuple[int, tuple]]] = {}
        for i, t in enumerate(transforms):
            if not isinstance(t, dict):
                continue
            for ref, ref_path in _refs(t.get("input"), path + ("transforms", i, "input")):
                target = self.resolve(scope, ref, ref_path)
                if target is not None:
                    edges.setdefault(i, []).append((target, ref_path))
            if isinstance(t.get("transforms"), list):
                own = t.get("input")
                inner = frozenset(own if isinstance(own, dict) else ["input"]) if own else inputs
                self.composite(t, path + ("transforms", i), inner)
                inner_scope = _Scope(t["transforms"], inner)
                for ref, ref_path in _refs(t.get("output"), path + ("transforms", i, "output")):
                    self.resolve(inner_scope, ref, ref_path)
        self.cycles(scope, edges)

    def resolve(self, scope: _Scope, ref: str, path: tuple) -> int | None:
        """The index of the transform ``ref`` names (None: a scope input, or an error)."""
        if ref in scope.inputs:
            return None
        name, _, output = ref.rpartition(".") if "." in ref else (ref, "", "")
        found = scope.by_name.get(name, [])
        if not found:
            known = [n for n in scope.by_name if n != ref]
            hint = did_you_mean(name, known) or "an input names a transform of the same composite"
            self.error("E109", f"input '{ref}' names no transform", path, hint)
            return None
        if len(found) > 1:
            message = f"input '{name}' names {len(found)} transforms"
            self.error("E109", message, path, "give each a distinct `name:` and use that")
            return None
        kind = scope.transforms[found[0]].get("type")
        stmt = self.statements.get(kind) if isinstance(kind, str) else None
        outputs = spec_outputs(stmt) if output and stmt is not None else None
        if outputs is not None and output not in outputs:
            hint = did_you_mean(output, outputs) or f"its outputs are {', '.join(outputs)}"
            self.error("E110", f"'{name}' has no output '{output}'", path, hint)
        return found[0]

    def cycles(self, scope: _Scope, edges: dict[int, list[tuple[int, tuple]]]) -> None:
        """E111 once per cycle, at the input that closes it (iterative DFS)."""
        state: dict[int, int] = {}  # 1 on the stack, 2 done
        for root in sorted(edges):
            if root in state:
                continue
            stack = [(root, iter(edges.get(root, ())))]
            state[root] = 1
            while stack:
                node, children = stack[-1]
                step = next(children, None)
                if step is None:
                    state[node] = 2
                    stack.pop()
                    continue
                child, ref_path = step
                if state.get(child) == 1:
                    members = [n for n, _ in stack]
                    loop = members[members.index(child) :] + [child]
                    names = " -> ".join(_label(scope.transforms[n]) for n in loop)
                    self.error("E111", f"input cycle: {names}", ref_path)
                elif child not in state:
                    state[child] = 1
                    stack.append((child, iter(edges.get(child, ()))))


def check_wiring(doc: YamlDocument, statements: Mapping[str, ast.Statement]) -> list[Diagnostic]:
    """E109-E111 for the pipeline (a mapping with a ``pipeline`` mapping)."""
    wiring = _Wiring(doc, statements)
    wiring.composite(doc.data["pipeline"], ("pipeline",), frozenset())
    return wiring.diagnostics


# ---------------------------------------------------------------- local CSV inputs


def csv_header(path: str) -> tuple[list[str] | None, str | None]:
    """The column names of a CSV file, or why they cannot be read."""
    with open(path, "rb") as f:
        head = f.read(MAX_FILE_BYTES)
    line = head.splitlines()[0] if head.strip() else b""
    if not line.strip():
        return None, "is empty: ReadFromCsv needs a header line"
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return (
            None,
            f"has a header that is not UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start})",
        )
    header = next(csv.reader([text]), None)
    return [h.strip() for h in header] if header else None, None


def read_csv_inputs(
    doc: YamlDocument, transforms: list[tuple[dict, tuple]], folder: str, check: bool
) -> tuple[dict[int, list[str]], list[Diagnostic]]:
    """The header of each local ``ReadFromCsv`` file (by ``id()`` of its transform);
    with ``check``, E112 / E113 for those that cannot be read."""
    headers: dict[int, list[str]] = {}
    out: list[Diagnostic] = []
    for transform, path in transforms:
        config = transform.get("config")
        csv_path = config.get("path") if isinstance(config, dict) else None
        if transform.get("type") != "ReadFromCsv" or not isinstance(csv_path, str):
            continue
        if "://" in csv_path:
            continue  # a remote file system: not checked here
        span = doc.span(path + ("config", "path"))
        files = [m for m in sorted(glob.glob(os.path.join(folder, csv_path))) if os.path.isfile(m)]
        if not files:
            if check:
                hint = "paths are relative to the folder of the pipeline file"
                out.append(
                    doc.source.diagnostic("E112", f"no file matches '{csv_path}'", span, hint)
                )
            continue
        columns, problem = csv_header(files[0])
        if problem and check:
            shown = os.path.relpath(files[0], folder)
            out.append(doc.source.diagnostic("E113", f"'{shown}' {problem}", span))
        if columns:
            headers[id(transform)] = columns
    return headers, out
