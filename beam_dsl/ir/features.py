"""FEATURES' config (docs/IR.md, "FEATURES")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from beam_dsl.ir import Config, Expr, Node


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
