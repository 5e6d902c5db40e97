"""The compile pipeline: files in, diagnostics and Beam YAML out. No Beam imports.

``lint`` and ``compile`` both run :func:`compile_pipeline` (or
:func:`check_spec_files` for bare ``.bdsl`` files); only ``run`` goes on to
Beam.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.diagnostics import Diagnostic, Source, did_you_mean
from beam_dsl.dsl import ast
from beam_dsl.dsl.checks import check_names, check_spec
from beam_dsl.dsl.codegen import generate, used_types
from beam_dsl.dsl.lower import CONFIG_CLASSES, TransformDef, lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.dsl.yamlfile import YamlDocument, load_schema, load_yaml, render_jinja, validate
from beam_dsl.ir import Config

# Pipeline-level transform types that are not providers' transforms.
_STRUCTURAL = {"composite", "chain"}


@dataclass
class Compilation:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    yaml_text: str | None = None
    defs: dict[str, TransformDef] = field(default_factory=dict)
    pipeline_dir: str = "."
    types: set[str] = field(default_factory=set)  # every transform type the pipeline uses

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def read_text(path: str) -> str:
    """Reads a file; I/O problems propagate as OSError (the CLI maps them to exit 2)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def _parse_specs(paths: list[str]) -> tuple[list[tuple[ast.SpecFile, Source]], list[Diagnostic]]:
    parsed, diagnostics = [], []
    for path in paths:
        source = Source(path, read_text(path))
        spec, syntax = parse(source.text, path)
        diagnostics.extend(syntax)
        parsed.append((spec, source))
    return parsed, diagnostics


def _check_and_lower(
    parsed: list[tuple[ast.SpecFile, Source]],
    columns: dict[str, list[str]] | None = None,
) -> tuple[dict[str, TransformDef], list[Diagnostic]]:
    statements, diagnostics = check_names(parsed)
    for spec, source in parsed:
        diagnostics.extend(check_spec(spec, source, statements, columns))
    defs: dict[str, TransformDef] = {}
    if not diagnostics:
        for spec, _ in parsed:
            for definition in lower_spec(spec, statements):
                defs[definition.name] = definition
    return defs, diagnostics


def check_spec_files(paths: list[str]) -> Compilation:
    """Lints bare ``.bdsl`` files, checked together (names may cross files)."""
    parsed, diagnostics = _parse_specs(paths)
    defs, semantic = _check_and_lower(parsed)
    return Compilation(diagnostics + semantic, None, defs)


def _walk(node: dict, path: tuple):
    """Yields (transform, json path, sibling transforms) for every transform."""
    children = node.get("transforms")
    for i, child in enumerate(children if isinstance(children, list) else ()):
        if not isinstance(child, dict):
            continue  # the schema check reported it
        child_path = path + ("transforms", i)
        yield child, child_path, node["transforms"]
        yield from _walk(child, child_path)
    for key in ("source", "sink"):
        if isinstance(node.get(key), dict):
            yield node[key], path + (key,), []
            yield from _walk(node[key], path + (key,))


def _input_columns(transform: dict, siblings: list[dict], pipeline_dir: str) -> list[str] | None:
    """The columns of a transform's input when it reads a local CSV file directly."""
    ref = transform.get("input")
    if not isinstance(ref, str):
        return None
    for other in siblings:
        if other.get("name", other.get("type")) == ref and other.get("type") == "ReadFromCsv":
            path = (other.get("config") or {}).get("path")
            if not isinstance(path, str):
                return None
            matches = sorted(glob.glob(os.path.join(pipeline_dir, path)))
            if not matches:
                return None
            with open(matches[0], newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            return [h.strip() for h in header] if header else None
    return None


def _provider_types(doc: dict) -> set[str]:
    types: set[str] = set()
    for provider in doc.get("providers") or ():
        if isinstance(provider, dict) and isinstance(provider.get("transforms"), dict):
            types |= set(provider["transforms"])
    return types


def compile_pipeline(path: str, variables: dict[str, Any] | None = None) -> Compilation:
    """Lints and compiles a pipeline.yaml and its specs."""
    pipeline_dir = os.path.dirname(os.path.abspath(path))
    raw = Source(path, read_text(path))
    text, diagnostics = render_jinja(raw, variables or {})
    if diagnostics:
        return Compilation(diagnostics, pipeline_dir=pipeline_dir)
    source = Source(path, text)
    doc, diagnostics = load_yaml(source)
    if doc is None:
        return Compilation(diagnostics, pipeline_dir=pipeline_dir)
    diagnostics = validate(doc, load_schema("pipeline.schema.json"))
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("pipeline"), dict):
        return Compilation(diagnostics, pipeline_dir=pipeline_dir)

    spec_paths: list[str] = []
    for i, spec in enumerate(doc.data.get("specs") or ()):
        if not isinstance(spec, str):
            continue  # the schema check reported it
        spec_path = os.path.join(os.path.dirname(path), spec)
        if not os.path.exists(spec_path):
            diagnostics.append(
                source.diagnostic("E104", f"spec file '{spec}' not found", doc.span(("specs", i)))
            )
        else:
            spec_paths.append(spec_path)
    parsed, syntax = _parse_specs(spec_paths)
    diagnostics.extend(syntax)
    declared = {s.name.name: type(s).__name__ for spec, _ in parsed for s in spec.statements}

    columns: dict[str, list[str]] = {}
    diagnostics.extend(_check_transforms(doc, declared, pipeline_dir, columns))
    defs, semantic = _check_and_lower(parsed, columns)
    diagnostics.extend(semantic)
    if diagnostics:
        return Compilation(diagnostics, None, defs, pipeline_dir)
    yaml_text = generate(doc.data, defs, os.path.basename(path))
    return Compilation([], yaml_text, defs, pipeline_dir, used_types(doc.data["pipeline"]))


def _check_options(
    doc: YamlDocument, transform: dict, path: tuple, config_class: type[Config]
) -> list[Diagnostic]:
    """A spec transform's ``config:`` holds only run-time options of the right type."""
    config = transform.get("config")
    options = config_class.runtime_options()
    out = []
    for key, value in (config if isinstance(config, dict) else {}).items():
        if key not in options:
            message = f"'{transform['type']}' is declared in a spec and takes no config key '{key}'"
            hint = "change the spec instead; run-time options are " + (", ".join(options) or "none")
        else:
            message, hint = config_class.check_option(key, value), None
        if message:
            span = doc.span(path + ("config", key))
            out.append(doc.source.diagnostic("E106", message, span, hint))
    return out


def _check_transforms(
    doc: YamlDocument, declared: dict[str, str], pipeline_dir: str, columns: dict[str, list[str]]
) -> list[Diagnostic]:
    """Transform types must be Beam YAML built-ins, provider transforms or declared names."""
    builtins = set(load_schema("beam_yaml_transforms.json")["transforms"])
    known = builtins | set(declared) | _provider_types(doc.data) | _STRUCTURAL
    out = []
    for transform, path, siblings in _walk(doc.data["pipeline"], ("pipeline",)):
        kind = transform.get("type")
        if not isinstance(kind, str):
            continue  # the schema check reported it
        if kind not in known:
            out.append(
                doc.source.diagnostic(
                    "E105",
                    f"unknown transform type '{kind}'",
                    doc.span(path + ("type",)),
                    did_you_mean(kind, known - _STRUCTURAL)
                    or "declare it in a spec listed under specs:, or use a Beam YAML transform",
                )
            )
            continue
        if kind not in declared:
            continue
        out.extend(_check_options(doc, transform, path, CONFIG_CLASSES[declared[kind]]))
        found = _input_columns(transform, siblings, pipeline_dir)
        if found is not None:
            columns.setdefault(kind, found)
    return out
