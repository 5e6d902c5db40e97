"""pipeline.yaml loading: YAML with source positions, JSON Schema validation.

Positions are kept beside the data (a map from JSON path to span) rather than
as magic keys inside it, so the data stays plain and every schema error can
still point at its line.

The data is built from PyYAML's node graph by :class:`_Builder`, which
reports what ``yaml.safe_load`` would accept silently or crash on: duplicate
keys (E107), keys that are not strings (E103), nesting deeper than
:data:`MAX_DEPTH` (E007), aliases that expand past a budget or contain
themselves (E108), and tags or scalars it cannot build (E101).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema
import yaml

from beam_dsl.diagnostics import YAML_BREAKS, Diagnostic, Source, Span, did_you_mean

Path = tuple  # a JSON path: keys and list indices

MAX_DEPTH = 64  # nesting of mappings and lists
_MERGE = "tag:yaml.org,2002:merge"


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


class _Stop(Exception):
    """Stops building: the document cannot be read further."""

    def __init__(self, code: str, message: str, at: yaml.Node | Span, hint: str | None = None):
        super().__init__(message)
        span = at if isinstance(at, Span) else _node_span(at)
        self.code, self.message, self.span, self.hint = code, message, span, hint


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, composing at most MAX_DEPTH levels (its composer recurses)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Plain data and spans from a composed node graph (see the module docstring)."""

    def __init__(self, source: Source, budget: int):
        self.source = source
        self.limit = self.budget = budget  # values left to build: aliases may repeat a node
        self.spans: dict[Path, Span] = {}
        self.diagnostics: list[Diagnostic] = []
        self.building: set[int] = set()  # the nodes being built (an alias to one is a cycle)
        self.scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path, depth: int = 1) -> Any:
        self.budget -= 1
        if self.budget < 0:
            # At the top-level key whose value blew up: the node at hand is deep inside.
            top = self.spans.get(path[:1], _node_span(node))
            where = "/".join(map(str, path)) or "top level"
            message = f"YAML aliases expand to more than {self.limit:,} values (at {where})"
            hint = "write the values out, or nest fewer aliases"
            raise _Stop("E108", message, top, hint)
        if depth > MAX_DEPTH:
            raise _Stop("E007", f"the YAML nests more than {MAX_DEPTH} levels deep", node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self.building:
            raise _Stop("E108", "a YAML alias refers to a value that contains it", node)
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path, depth)
            return self._mapping(node, path, depth)
        finally:
            self.building.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.scalars.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            raise _Stop("E101", f"invalid YAML: {exc.problem}", node) from None
        except (ValueError, TypeError, OverflowError) as exc:  # a bad date, !!int x, ...
            raise _Stop("E101", f"invalid YAML value {node.value[:40]!r}: {exc}", node) from None

    def _sequence(self, node: yaml.SequenceNode, path: Path, depth: int) -> list:
        items = []
        for i, item in enumerate(node.value):
            self.spans[path + (i,)] = _node_span(item)
            items.append(self.build(item, path + (i,), depth + 1))
        return items

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:  # <<: *base (keys of its own win over merged ones)
                for base in self._merge_sources(value_node):
                    for key, value in self.build(base, path, depth + 1).items():
                        merged.setdefault(key, value)
                continue
            key = self._key(key_node)
            if key is None:
                continue
            if key in first:
                line = first[key].start_mark.line + 1
                self.error(
                    "E107", f"duplicate key '{key}'", key_node, f"the first one is on line {line}"
                )
                continue
            first[key] = key_node
            self.spans[path + (key,)] = _node_span(key_node)
            out[key] = self.build(value_node, path + (key,), depth + 1)
            if isinstance(value_node, yaml.ScalarNode):  # point at a scalar value itself
                self.spans[path + (key,)] = _node_span(value_node)
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merge_sources(self, node: yaml.Node) -> list[yaml.MappingNode]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for base in sources:
            if not isinstance(base, yaml.MappingNode):
                raise _Stop("E101", "invalid YAML: a merge key (<<) takes mappings", base)
        return sources

    def _key(self, node: yaml.Node) -> str | None:
        key = self._scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            shown = repr(key) if isinstance(node, yaml.ScalarNode) else "a collection"
            hint = f"quote it: '{node.value}'" if isinstance(node, yaml.ScalarNode) else None
            self.error("E103", f"a mapping key must be a string, not {shown}", node, hint)
            return None
        return key

    def error(self, code: str, message: str, node: yaml.Node, hint: str | None = None) -> None:
        self.diagnostics.append(self.source.diagnostic(code, message, _node_span(node), hint))


def _reader_error(source: Source, exc: yaml.reader.ReaderError) -> Diagnostic:
    """E101 at a character PyYAML refuses (a NUL, a control character)."""
    before = source.text[: exc.position]
    lines = YAML_BREAKS.split(before)
    span = Span.point(len(lines), len(lines[-1]) + 1)
    message = f"invalid YAML: character U+{exc.character:04X} is not allowed"
    return source.diagnostic(
        "E101", message, span, "remove it, or write it as an escape in a double-quoted string"
    )


def load_yaml(source: Source) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """The document and the diagnostics of everything that kept parts of it out."""
    source = Source(source.path, source.text, YAML_BREAKS)
    try:
        node = yaml.compose(source.text, Loader=_Loader)
    except _TooDeep as exc:
        span = Span.point(exc.problem_mark.line + 1, exc.problem_mark.column + 1)
        message = f"the YAML nests more than {MAX_DEPTH} levels deep"
        return None, [source.diagnostic("E007", message, span)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = Span.point(mark.line + 1, mark.column + 1) if mark else None
        return None, [source.diagnostic("E101", f"invalid YAML: {exc.problem}", span)]
    except yaml.reader.ReaderError as exc:
        return None, [_reader_error(source, exc)]
    if node is None:
        return None, [source.diagnostic("E101", "the file is empty", None)]
    # Without aliases a document has fewer values than characters.
    builder = _Builder(source, len(source.text) + 10_000)
    builder.spans[()] = _node_span(node)
    try:
        data = builder.build(node, ())
    except _Stop as stop:
        return None, [
            *builder.diagnostics,
            source.diagnostic(stop.code, stop.message, stop.span, stop.hint),
        ]
    return YamlDocument(source, data, builder.spans), builder.diagnostics


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
        message = _message(best)
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


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:56] + "..." + shown[-1]


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, with the offending value cut short and, for a value
    that fits no branch of a oneOf, the types it may have."""
    if error.validator == "oneOf":
        types = [sub["type"] for sub in error.validator_value if isinstance(sub.get("type"), str)]
        if len(types) == len(error.validator_value):
            return f"{_shown(error.instance)} is not of type {' or '.join(map(repr, types))}"
    shown = repr(error.instance)
    if error.message.startswith(shown):
        return _shown(error.instance) + error.message[len(shown) :]
    return error.message


def _unexpected_keys(error: jsonschema.ValidationError) -> list[str]:
    allowed = set(error.schema.get("properties", {}))
    return sorted(k for k in error.instance if k not in allowed)


def _allowed_keys_hint(schema: dict, key: str) -> str | None:
    return did_you_mean(key, schema.get("properties", {}))
