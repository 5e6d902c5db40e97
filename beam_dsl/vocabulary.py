"""The language's names: fixed lists, and the extensible families.

A family (scalar functions, aggregates, combiners, metrics, encoders, model
frameworks) is declared in one Beam-free module beside its implementation:
each member registers itself with its metadata, as sqlglot's function
classes do, so adding one is one decorated definition in one file. The front
end reads the same registries (:func:`family`) without importing Beam,
scikit-learn or torch; those modules import heavy libraries only inside the
functions that run. tests/test_vocabulary.py checks that every name the
checks accept is one the transforms implement.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEVICES = ("gpu", "cpu", "auto")

# Beam resource hints a HINTS clause may set (see apache_beam.transforms.resources).
HINTS = ("accelerator", "min_ram", "cpu_count")

# family -> the module that declares its members (and holds REGISTRY).
FAMILIES = {
    "functions": "beam_dsl.transforms.common.functions",
    "aggregates": "beam_dsl.transforms.features.aggregates",
    "combiners": "beam_dsl.transforms.ensemble.combiners",
    "metrics": "beam_dsl.transforms.training.metrics",
    "encoders": "beam_dsl.transforms.training.encoders",
    "frameworks": "beam_dsl.transforms.inference.frameworks",
}


@dataclass(frozen=True)
class Entry:
    """One member of a family.

    Args:
        name: the name in the language (lower case).
        min_args, max_args: how many positional arguments it takes.
        params: what the arguments after the first mean, by name (``k``, ``q``).
        kind: the family's main distinction: a metric's task
            (``classification`` / ``regression``), an aggregate's or combiner's
            output (``int``, ``float``, ``same``, ``list``, ...), a framework's
            runtime (``torch`` or ``python``).
        meta: anything else the family needs.
        impl: the implementation (a class or function).
    """

    name: str
    min_args: int = 0
    max_args: int = 0
    params: tuple[str, ...] = ()
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    impl: Any = field(default=None, compare=False, repr=False)


class Registry:
    """The members of one family, by name."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **metadata: Any) -> Callable[[Any], Any]:
        """A decorator: registers the decorated class or function under ``name``."""

        def add(impl: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.family}: '{name}' is registered twice")
            self._entries[name] = Entry(name=name, impl=impl, **metadata)
            return impl

        return add

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def names(self, kind: str | None = None) -> tuple[str, ...]:
        """Every name, or those of one ``kind``, in registration order."""
        return tuple(n for n, e in self._entries.items() if kind is None or e.kind == kind)


def family(name: str) -> Registry:
    """The registry of one family (imports its Beam-free module)."""
    return importlib.import_module(FAMILIES[name]).REGISTRY
