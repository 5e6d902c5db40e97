"""ENSEMBLE's config (docs/IR.md, "ENSEMBLE")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beam_dsl.ir import Config, Expr, Node, runtime, spelt
from beam_dsl.ir.model import ModelConfig


@dataclass(frozen=True)
class Step(Node):
    """``STEP name = model(args)``; ``args`` None for ``*`` (the whole row)."""

    name: str
    model: str
    args: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Output(Node):
    """``OUTPUT combiner(args, k = v) AS alias`` (``combiner`` is ``step`` for a plain step)."""

    combiner: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    alias: str = spelt("as", default="")


@dataclass(frozen=True)
class Arm(Node):
    """One arm of ``SPLIT BY``: a model and its share of keys (a fraction)."""

    model: str
    share: float


@dataclass(frozen=True)
class Split(Node):
    keys: tuple[str, ...]
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class CascadeArm(Node):
    """``model WHEN condition``; the last arm has no condition."""

    model: str
    when: Expr | None = None


@dataclass(frozen=True)
class Case(Node):
    when: Expr
    model: str


@dataclass(frozen=True)
class Switch(Node):
    cases: tuple[Case, ...]
    default: str | None = None


@dataclass(frozen=True)
class EnsembleConfig(Config):
    """One ENSEMBLE: what :class:`~beam_dsl.transforms.ensemble.RunEnsemble` builds."""

    KIND = "ENSEMBLE"

    models: dict[str, ModelConfig]
    steps: tuple[Step, ...] = ()
    output: Output | None = None
    split: Split | None = None
    shadow: tuple[str, ...] = ()
    cascade: tuple[CascadeArm, ...] | None = None
    switch: Switch | None = None
    allow_pickle: bool = runtime(False)
