"""The typed IR: the one contract between the compiler and the transforms.

Each statement kind has one frozen dataclass (:class:`Config` subclass):
lowering builds it from the checked AST, codegen writes :meth:`Node.to_json`
into the compiled Beam YAML as the transform's ``config``, and the transform
is built from :meth:`Node.from_json` of that same mapping. Nothing else reads
the config as a dict. docs/IR.md describes every field.

This package imports no Beam, scikit-learn or torch: ``lint`` and ``compile``
use it.

Field types are plain JSON shapes: ``str``, ``int``, ``float``, ``bool``,
``Any``, ``tuple[X, ...]`` (a JSON list), ``dict[str, X]``, ``X | None``,
``Literal[...]`` and nested :class:`Node` dataclasses. ``from_json`` checks
every key and type and reports a mistake as E400 (a hand-edited compiled
file, or a transform built from Python with a wrong argument), then calls
:meth:`Config.validate` for the rules between fields, which also raise coded
errors. A field whose metadata has ``json`` is spelt so in JSON (``as``); a
``runtime`` field is a run-time option a pipeline.yaml may set on a use of
the transform; ``runtime`` and ``optional`` fields are written only when they
differ from their defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

from beam_dsl.diagnostics import DiagnosticError, config_error, did_you_mean

E_CONFIG = "E400"

Expr = dict[str, Any]
"""A lowered expression (see :func:`beam_dsl.dsl.lower.lower_expr`)."""

N = TypeVar("N", bound="Node")


def runtime(default: Any) -> Any:
    """A run-time option: set on a use in pipeline.yaml, not by the spec."""
    return dataclasses.field(default=default, metadata={"runtime": True})


def optional(default: Any = None, default_factory: Any = None) -> Any:
    """A field written only when it differs from its default (keeps compiled files short)."""
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"omit": True})
    return dataclasses.field(default=default, metadata={"omit": True})


def spelt(json_name: str, **kwargs: Any) -> Any:
    """A field whose JSON key differs from its Python name (``as``)."""
    return dataclasses.field(metadata={"json": json_name}, **kwargs)


class _Mismatch(Exception):
    def __init__(self, where: str, expected: str, value: Any = None, message: str = ""):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(message or f"'{where}' must be {expected}, not {shown}")


@dataclasses.dataclass(frozen=True)
class Node:
    """A frozen dataclass that reads and writes itself as JSON."""

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (f.metadata.get("runtime") or f.metadata.get("omit")) and value == _default(f):
                continue
            out[f.metadata.get("json", f.name)] = _to_json(value)
        return out

    @classmethod
    def from_json(cls: type[N], data: Any) -> N:
        """Builds and validates a config; E400 (or the config's own codes) on a mistake."""
        kind = getattr(cls, "KIND", cls.__name__)
        name = data.get("name", "?") if isinstance(data, Mapping) else "?"
        try:
            node = cls._read(data, "")
        except _Mismatch as e:
            raise config_error(kind, str(name), E_CONFIG, str(e)) from None
        if isinstance(node, Config):
            node.validate()
        return node

    @classmethod
    def _read(cls: type[N], data: Any, where: str) -> N:
        if not isinstance(data, Mapping):
            raise _Mismatch(where or cls.__name__, "a mapping", data)
        hints = typing.get_type_hints(cls)
        by_key = {f.metadata.get("json", f.name): f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in by_key]
        if unknown:
            key = str(unknown[0])
            hint = did_you_mean(key, by_key)
            message = f"unknown key '{where}{key}'" + (f"; {hint}" if hint else "")
            raise _Mismatch(where, "", message=message)
        values = {}
        for key, f in by_key.items():
            if key in data:
                values[f.name] = _read_value(data[key], hints[f.name], f"{where}{key}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Mismatch(where, "", message=f"missing key '{where}{key}'")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Config(Node):
    """A statement's config: what one spec transform is built from."""

    KIND: ClassVar[str] = ""  # the statement keyword: TRAIN, MODEL, ...

    name: str

    def validate(self) -> None:
        """Rules between fields that lint checks but a Python caller may break."""

    def error(self, code: str, message: str, hint: str | None = None) -> DiagnosticError:
        """A coded error about this statement (see :func:`~beam_dsl.diagnostics.config_error`)."""
        return config_error(self.KIND, self.name, code, message, hint)

    @classmethod
    def runtime_options(cls) -> tuple[str, ...]:
        """The keys a pipeline.yaml may set on a use of this statement's transform."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime"))

    @classmethod
    def check_option(cls, key: str, value: Any) -> str | None:
        """Why ``value`` does not fit the run-time option ``key``, or None if it does."""
        try:
            _read_value(value, typing.get_type_hints(cls)[key], key)
        except _Mismatch as e:
            return str(e)
        return None


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _to_json(value: Any) -> Any:
    if isinstance(value, Node):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


_SCALARS: dict[Any, tuple[str, tuple[type, ...]]] = {
    str: ("a string", (str,)),
    int: ("an integer", (int,)),
    float: ("a number", (int, float)),
    bool: ("true or false", (bool,)),
}


def _read_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        for option in options:
            try:
                return _read_value(value, option, where)
            except _Mismatch:
                continue
        raise _Mismatch(where, " or ".join(_describe(o) for o in typing.get_args(hint)), value)
    if origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise _Mismatch(where, _describe(hint), value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch(where, "a list", value)
        item = typing.get_args(hint)[0]
        return tuple(_read_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch(where, "a mapping", value)
        key_hint, value_hint = typing.get_args(hint)
        return {
            _read_value(k, key_hint, f"{where}.{k}"): _read_value(v, value_hint, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(hint, type) and issubclass(hint, Node):
        return hint._read(value, f"{where}.")
    if hint in _SCALARS:
        expected, types_ = _SCALARS[hint]
        if isinstance(value, types_) and (hint is bool or not isinstance(value, bool)):
            return float(value) if hint is float else value
        raise _Mismatch(where, expected, value)
    raise TypeError(f"IR field type {hint!r} is not a JSON shape")  # a bug in a Config


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint in _SCALARS:
        return _SCALARS[hint][0]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    if origin is dict or (isinstance(hint, type) and issubclass(hint, Node)):
        return "a mapping"
    return str(hint)


@dataclasses.dataclass(frozen=True)
class Call(Node):
    """``f(a, k = v)`` with literal arguments: a class to build and how."""

    callable: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
