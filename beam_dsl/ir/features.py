"""FEATURES' config (docs/IR.md, "FEATURES")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from beam_dsl import vocabulary
from beam_dsl.diagnostics import did_you_mean
from beam_dsl.ir import Config, Expr, Node, runtime

E_COLUMN = "E440"  # the spec reads a column the input rows do not have
E_AGGREGATE = "E441"  # an aggregate's arguments cannot be used
E_STORE = "E442"  # a store URI or path beam_dsl cannot use
E_FEATURES = "E443"  # windows, durations, names or options the checks did not see

# The columns every output row has before the features (expires_at only with a TTL).
WINDOW_COLUMNS = ("window_start", "window_end")
EXPIRES_COLUMN = "expires_at"

DEFAULT_SHARDS = 16


@dataclass(frozen=True)
class Window(Node):
    """One window length: windows ``[end - size_s, end)`` every ``every_s`` seconds.

    ``suffix`` is appended to every feature name (``_1h`` for ``WINDOWS (...)``).
    For ``session``, ``size_s`` is the gap.
    """

    kind: Literal["sliding", "tumbling", "session"]
    size_s: float
    every_s: float
    suffix: str = ""


@dataclass(frozen=True, kw_only=True)
class Item(Node):
    """``func(args) FILTER (WHERE filter) AS alias``; ``args`` empty for ``count(*)``."""

    func: str
    args: tuple[Expr, ...]
    filter: Expr | None = None
    alias: str


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig(Config):
    """One FEATURES statement: what
    :class:`~beam_dsl.transforms.features.ComputeFeatures` builds."""

    KIND = "FEATURES"

    entity: tuple[str, ...]
    timestamp: str
    where: Expr | None = None
    windows: tuple[Window, ...]
    select: tuple[Item, ...]
    ttl_s: float | None = None
    allowed_lateness_s: float = 0.0
    online: str | None = None
    offline: str | None = None
    shards: int = runtime(DEFAULT_SHARDS)

    def validate(self) -> None:
        """The rules lint checks, for a config built from Python: E441 (aggregates), E442
        (stores), E443 (the rest)."""
        if not self.entity or len(set(self.entity)) != len(self.entity):
            raise self.error(E_FEATURES, f"ENTITY {list(self.entity)} must name distinct columns")
        self._check_windows()
        for item in self.select:
            self._check_item(item)
        self._check_names()
        for what, expr in self._expressions():
            for name, count in _calls(expr):
                self._check_call(what, name, count)
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise self.error(E_FEATURES, f"TTL must be positive, not {self.ttl_s:g}s")
        if self.allowed_lateness_s < 0:
            raise self.error(E_FEATURES, f"ALLOWED LATENESS must not be negative, not "
                             f"{self.allowed_lateness_s:g}s")
        if self.shards < 1:
            raise self.error(E_FEATURES, f"shards must be at least 1, not {self.shards}")
        problem = online_store_problem(self.online) if self.online is not None else None
        if problem:
            raise self.error(E_STORE, *problem)
        if self.offline is not None and not self.offline.strip():
            raise self.error(E_STORE, "OFFLINE names no directory")

    def _check_windows(self) -> None:
        if not self.windows:
            raise self.error(E_FEATURES, "FEATURES needs a window")
        for window in self.windows:
            for what, seconds in (("size", window.size_s), ("period", window.every_s)):
                if not whole_milliseconds(seconds):
                    raise self.error(E_FEATURES, f"window {what} {seconds:g}s is not a positive "
                                     "whole number of milliseconds")
            if window.every_s > window.size_s:
                raise self.error(E_FEATURES, f"window period {window.every_s:g}s is larger "
                                 f"than its size {window.size_s:g}s")
            if window.kind == "tumbling" and window.every_s != window.size_s:
                raise self.error(E_FEATURES, "a tumbling window's period is its size")
        if len(self.windows) > 1:
            if any(w.kind != "sliding" for w in self.windows):
                raise self.error(E_FEATURES, "several windows (WINDOWS) must all be sliding")
            if len({w.every_s for w in self.windows}) > 1:
                raise self.error(E_FEATURES, "several windows (WINDOWS) must share one period")
            if len({w.size_s for w in self.windows}) < len(self.windows):
                raise self.error(E_FEATURES, "a window length appears twice")

    def _check_item(self, item: Item) -> None:
        aggregates = vocabulary.family("aggregates")
        entry = aggregates.get(item.func)
        label = f"{item.func}() AS {item.alias}"
        if entry is None:
            raise self.error(E_AGGREGATE, f"unknown aggregate '{item.func}'",
                             did_you_mean(item.func, aggregates))
        if not entry.min_args <= len(item.args) <= entry.max_args:
            raise self.error(E_AGGREGATE, f"{label} takes {_arity(entry)} argument(s), "
                             f"not {len(item.args)}")
        for name, arg in zip(entry.params, item.args[1:], strict=False):
            rule = entry.meta["rules"][name]
            if not (isinstance(arg, Mapping) and arg.keys() == {"lit"}):
                raise self.error(E_AGGREGATE, f"{label}: {name} must be a literal, {rule.text}")
            if not rule.accepts(arg["lit"]):
                raise self.error(E_AGGREGATE, f"{label}: {name} must be {rule.text}, not "
                                 f"{arg['lit']!r}")

    def _check_names(self) -> None:
        taken = {c: "an ENTITY column" for c in self.entity}
        fixed = WINDOW_COLUMNS + ((EXPIRES_COLUMN,) if self.ttl_s is not None else ())
        taken.update({c: "a column of every row" for c in fixed})
        for name in self.feature_names():
            if name in taken:
                raise self.error(E_FEATURES, f"feature '{name}' has the name of {taken[name]}",
                                 "rename it with AS")
            taken[name] = "another feature"

    def feature_names(self) -> list[str]:
        """The feature columns, in output order: every item for each window length."""
        return [item.alias + window.suffix for window in self.windows for item in self.select]

    def _expressions(self) -> Iterator[tuple[str, Any]]:
        yield "WHERE", self.where
        for item in self.select:
            label = f"{item.func}() AS {item.alias}"
            yield label, item.args[0] if item.args else None
            yield f"{label} FILTER", item.filter

    def _check_call(self, what: str, name: str, count: int) -> None:
        functions = vocabulary.family("functions")
        entry = functions.get(name)
        if entry is None:
            raise self.error(E_FEATURES, f"unknown function '{name}' in {what}",
                             did_you_mean(name, functions))
        if not entry.min_args <= count <= entry.max_args:
            raise self.error(E_FEATURES, f"{name}() in {what} takes {_arity(entry)} "
                             f"argument(s), not {count}")


def _arity(entry: vocabulary.Entry) -> str:
    low, high = entry.min_args, entry.max_args
    return str(low) if low == high else f"{low} to {high}"


def _calls(expr: Any) -> Iterator[tuple[str, int]]:
    """The scalar function calls in a lowered expression: (name, argument count)."""
    if not isinstance(expr, Mapping):
        return
    if "fn" in expr:
        yield expr["fn"], len(expr.get("args", ()))
    for arg in expr.get("args", ()):
        yield from _calls(arg)


def whole_milliseconds(seconds: float) -> bool:
    """Whether a window duration is a positive whole number of milliseconds (the plan's unit)."""
    ms = seconds * 1000
    return ms >= 1 and abs(ms - round(ms)) < 1e-6


def online_store_problem(uri: str) -> tuple[str, str] | None:
    """Why ``uri`` names no online store beam_dsl can write (message, hint), or None."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        if not parsed.path.lstrip("/"):
            return (f"ONLINE '{uri}' names no database file",
                    "write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return None
    if parsed.scheme in ("redis", "rediss"):
        if not parsed.hostname:
            return f"ONLINE '{uri}' names no Redis host", "write redis://host:port/db"
        return None
    return (f"ONLINE store '{uri}' is neither sqlite:// nor redis://",
            "write sqlite:///features.db or redis://localhost:6379/0")
