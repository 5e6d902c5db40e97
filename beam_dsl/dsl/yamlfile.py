"""pipeline.yaml loading: Jinja, YAML with source positions, JSON Schema validation.

Positions are kept beside the data (a map from JSON path to span) rather than
as magic keys inside it, so the data stays plain and every schema error can
still point at its line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
import jsonschema
import yaml

from beam_dsl.diagnostics import Diagnostic, Source, Span, did_you_mean

Path = tuple  # a JSON path: keys and list indices


@dataclass
class YamlDocument:
    source: Source
    data: Any
    spans: dict[Path, Span] = field(default_factory=dict)

    def span(self, path: Path) -> Span | None:
        """The span of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.spans:
                return self.spans[path]
            path = path[:-1]
        return self.spans.get((), None)


def _node_span(node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    if end.line != start.line:  # a block node: point at its first line only
        return Span(start.line + 1, start.column + 1, start.line + 1, start.column + 2)
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _construct(node: yaml.Node, path: Path, spans: dict[Path, Span]) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            spans[path + (key,)] = _node_span(key_node)
            out[key] = _construct(value_node, path + (key,), spans)
            # The value's own span is more useful for scalars (point at the value).
            if isinstance(value_node, yaml.ScalarNode):
                spans[path + (key,)] = _node_span(value_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            spans[path + (i,)] = _node_span(item)
            items.append(_construct(item, path + (i,), spans))
        return items
    return yaml.safe_load(yaml.serialize(node))


def render_jinja(source: Source, variables: dict[str, Any]) -> tuple[str, list[Diagnostic]]:
    """Applies Jinja variables (``--var k=v``) as Beam YAML's own templating does."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(source.text).render(**variables), []
    except jinja2.UndefinedError as exc:
        return source.text, [
            source.diagnostic(
                "E102", f"template variable: {exc.message}", None, "pass it with --var NAME=VALUE"
            )
        ]
    except jinja2.TemplateSyntaxError as exc:
        span = Span.point(exc.lineno, 1, len(source.line(exc.lineno) or " "))
        return source.text, [source.diagnostic("E102", f"template error: {exc.message}", span)]


def load_yaml(source: Source) -> tuple[YamlDocument | None, list[Diagnostic]]:
    try:
        node = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = Span.point(mark.line + 1, mark.column + 1) if mark else None
        return None, [source.diagnostic("E101", f"invalid YAML: {exc.problem}", span)]
    if node is None:
        return None, [source.diagnostic("E101", "the file is empty", None)]
    spans: dict[Path, Span] = {(): _node_span(node)}
    return YamlDocument(source, _construct(node, (), spans), spans), []


def load_schema(name: str) -> dict:
    return json.loads(resources.files("beam_dsl.schemas").joinpath(name).read_text())


def validate(doc: YamlDocument, schema: dict) -> list[Diagnostic]:
    """Every JSON Schema error, each at the line of the offending value."""
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.path))):
        # For oneOf/anyOf, report the most specific sub-error.
        best = jsonschema.exceptions.best_match([error])
        path = tuple(best.absolute_path)
        where = "/".join(str(p) for p in path) or "top level"
        message = best.message
        if best.validator == "additionalProperties":
            for key in _unexpected_keys(best):
                out.append(
                    doc.source.diagnostic(
                        "E103",
                        f"unknown key '{key}' at {where}",
                        doc.span(path + (key,)),
                        _allowed_keys_hint(best.schema, key),
                    )
                )
            continue
        out.append(doc.source.diagnostic("E103", f"{message} (at {where})", doc.span(path)))
    return out


def _unexpected_keys(error: jsonschema.ValidationError) -> list[str]:
    allowed = set(error.schema.get("properties", {}))
    return sorted(k for k in error.instance if k not in allowed)


def _allowed_keys_hint(schema: dict, key: str) -> str | None:
    return did_you_mean(key, schema.get("properties", {}))
