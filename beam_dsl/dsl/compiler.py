"""The compile pipeline: files in, diagnostics and Beam YAML out. No Beam imports.

``lint`` and ``compile`` both run :func:`compile_pipeline` (or
:func:`check_spec_files` for bare ``.bdsl`` files); only ``run`` goes on to
Beam. Every mistake in the files is a diagnostic: a pipeline.yaml of any shape,
or specs of any content, never raises here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.diagnostics import Diagnostic, Source, did_you_mean, read_source
from beam_dsl.dsl import ast, templates
from beam_dsl.dsl.checks import check_names, check_spec
from beam_dsl.dsl.codegen import generate, used_types
from beam_dsl.dsl.lower import CONFIG_CLASSES, TransformDef, lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.dsl.wiring import check_wiring, read_csv_inputs
from beam_dsl.dsl.yamlfile import YamlDocument, load_schema, load_yaml, validate
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
    spec_paths: list[str] = field(default_factory=list)  # the specs it read

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def _parse_specs(paths: list[str]) -> tuple[list[tuple[ast.SpecFile, Source]], list[Diagnostic]]:
    """Reads and parses spec files; I/O errors propagate as OSError (CLI arguments)."""
    parsed, diagnostics = [], []
    for path in paths:
        source, problem = read_source(path)
        if problem is not None:
            diagnostics.append(problem)
            continue
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
        yield child, child_path, children
        yield from _walk(child, child_path)
    for key in ("source", "sink"):
        if isinstance(node.get(key), dict):
            yield node[key], path + (key,), []
            yield from _walk(node[key], path + (key,))


def _input_columns(
    transform: dict, siblings: list, headers: dict[int, list[str]]
) -> list[str] | None:
    """The columns of a transform's input when it reads a local CSV file directly (for a
    DATASET, of its ``rows`` input)."""
    ref = transform.get("input")
    if isinstance(ref, dict):
        ref = ref.get("rows")
    for other in siblings if isinstance(ref, str) else ():
        if isinstance(other, dict) and other.get("name", other.get("type")) == ref:
            return headers.get(id(other))
    return None


def _provider_types(doc: dict) -> set[str]:
    types: set[str] = set()
    providers = doc.get("providers")
    for provider in providers if isinstance(providers, list) else ():
        if isinstance(provider, dict) and isinstance(provider.get("transforms"), dict):
            types |= set(provider["transforms"])
    return types


def _spec_entries(doc: YamlDocument, folder: str) -> tuple[list[str], list[Diagnostic]]:
    """The spec files ``specs:`` lists (a string is a one-item list) that exist.

    Only ``.bdsl`` entries are read (the schema reports the others), each once."""
    specs = doc.data.get("specs")
    entries = (
        [(specs, ("specs",))]
        if isinstance(specs, str)
        else [
            (spec, ("specs", i)) for i, spec in enumerate(specs if isinstance(specs, list) else ())
        ]
    )
    paths: list[str] = []
    out: list[Diagnostic] = []
    for spec, where in entries:
        if not isinstance(spec, str) or not spec.endswith(".bdsl"):
            continue
        path = os.path.join(folder, spec)
        if path in paths:
            continue
        if not os.path.isfile(path):
            reason = "is not a file" if os.path.exists(path) else "not found"
            out.append(
                doc.source.diagnostic("E104", f"spec file '{spec}' {reason}", doc.span(where))
            )
            continue
        paths.append(path)
    return paths, out


def _parse_listed_specs(
    doc: YamlDocument, paths: list[str]
) -> tuple[list[tuple[ast.SpecFile, Source]], list[Diagnostic]]:
    """Like :func:`_parse_specs`, but a spec that cannot be read is E104, not OSError."""
    parsed, out = [], []
    for path in paths:
        try:
            found, diagnostics = _parse_specs([path])
        except OSError as exc:
            message = f"spec file '{path}' cannot be read: {exc.strerror or exc}"
            out.append(doc.source.diagnostic("E104", message, None))
            continue
        parsed.extend(found)
        out.extend(diagnostics)
    return parsed, out


def _load(
    path: str, variables: dict[str, Any], folder: str
) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """pipeline.yaml read, rendered (sandboxed Jinja), parsed and schema-checked."""
    raw, problem = read_source(path)
    if problem is not None:
        return None, [problem]
    text, diagnostics = templates.render(raw, variables, folder)
    if diagnostics:
        return None, diagnostics
    doc, diagnostics = load_yaml(Source(path, text))
    if doc is None:
        return None, diagnostics
    diagnostics += validate(doc, load_schema("pipeline.schema.json"))
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("pipeline"), dict):
        return None, diagnostics
    return doc, diagnostics


def compile_pipeline(
    path: str, variables: dict[str, Any] | None = None, check_data: bool = True
) -> Compilation:
    """Lints and compiles a pipeline.yaml and its specs.

    ``check_data`` also reports local CSV inputs that are missing or unreadable
    (E112, E113): ``lint`` and ``run`` do; ``compile`` does not, as the compiled
    file may run where its relative paths resolve elsewhere.
    """
    pipeline_dir = os.path.dirname(os.path.abspath(path))
    doc, diagnostics = _load(path, variables or {}, pipeline_dir)
    if doc is None:
        return Compilation(diagnostics, pipeline_dir=pipeline_dir)

    spec_paths, missing = _spec_entries(doc, os.path.dirname(path))
    parsed, syntax = _parse_listed_specs(doc, spec_paths)
    diagnostics += missing + syntax
    statements = {s.name.name: s for spec, _ in parsed for s in spec.statements}

    transforms = [(t, p) for t, p, _ in _walk(doc.data["pipeline"], ("pipeline",))]
    headers, data = read_csv_inputs(doc, transforms, pipeline_dir, check_data)
    columns: dict[str, list[str]] = {}
    diagnostics += data + _check_transforms(doc, statements, headers, columns)
    diagnostics += check_wiring(doc, statements)
    defs, semantic = _check_and_lower(parsed, columns)
    diagnostics += semantic
    if diagnostics:
        return Compilation(diagnostics, None, defs, pipeline_dir, spec_paths=spec_paths)
    yaml_text = generate(doc.data, defs, os.path.basename(path))
    types = used_types(doc.data["pipeline"])
    return Compilation([], yaml_text, defs, pipeline_dir, types, spec_paths)


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


def _check_stock_config(
    doc: YamlDocument, transform: dict, path: tuple, schema: dict[str, list[str]]
) -> list[Diagnostic]:
    """A Beam YAML transform's config keys, against Beam's own constructor (the snapshot in
    beam_dsl/schemas/beam_yaml_transforms.json): unknown keys are E114, missing required
    ones E115, as Beam would refuse them when the pipeline is built."""
    config = transform.get("config")
    if config is not None and not isinstance(config, dict):
        return []  # the schema check reported it
    config = config or {}
    kind, out = transform["type"], []
    for key in config:
        if isinstance(key, str) and key not in schema["keys"]:
            out.append(doc.source.diagnostic(
                "E114", f"{kind} takes no config key '{key}'", doc.span(path + ("config", key)),
                did_you_mean(key, schema["keys"]) or f"its keys are {', '.join(schema['keys'])}",
            ))
    missing = [k for k in schema["required"] if k not in config]
    if missing:
        where = path + ("config",) if "config" in transform else path + ("type",)
        out.append(doc.source.diagnostic(
            "E115", f"{kind} needs config key{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"'{k}'" for k in missing), doc.span(where),
        ))
    return out


def _check_transforms(
    doc: YamlDocument,
    statements: dict[str, ast.Statement],
    headers: dict[int, list[str]],
    columns: dict[str, list[str]],
) -> list[Diagnostic]:
    """Transform types must be Beam YAML built-ins, provider transforms or declared names."""
    stock = load_schema("beam_yaml_transforms.json")["transforms"]
    provided = _provider_types(doc.data)
    known = set(stock) | set(statements) | provided | _STRUCTURAL
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
        if kind not in statements:
            if stock.get(kind) and kind not in provided:
                out.extend(_check_stock_config(doc, transform, path, stock[kind]))
            continue
        config_class = CONFIG_CLASSES[type(statements[kind]).__name__]
        out.extend(_check_options(doc, transform, path, config_class))
        found = _input_columns(transform, siblings, headers)
        if found is not None:
            columns.setdefault(kind, found)
    return out
