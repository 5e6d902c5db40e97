"""MODEL's config (docs/IR.md, "MODEL")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beam_dsl.ir import Call, Config, Node, optional, runtime


@dataclass(frozen=True)
class Batch(Node):
    """``BATCH min TO max [WAIT d]``."""

    min: int = 1
    max: int = 1024
    wait_s: float | None = None


@dataclass(frozen=True)
class ModelConfig(Config):
    """One MODEL statement: what :class:`~beam_dsl.transforms.inference.RunModel` builds."""

    KIND = "MODEL"

    framework: str
    path: str | None = None
    handler: Call | None = None
    model_class: Call | None = None
    call: Call | None = None
    per: tuple[str, ...] = ()
    fallback: ModelConfig | None = None
    input: tuple[str, ...] | None = None
    output: tuple[str, ...] = ()
    batch: Batch = field(default_factory=Batch)
    device: str = "cpu"
    shared: bool = False
    refresh_s: float | None = None
    trust: tuple[str, ...] = optional(())
    classes: tuple[Any, ...] | None = optional(None)
    vouched: tuple[str, ...] = optional(())
    allow_pickle: bool = runtime(False)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The prediction fields: OUTPUT, or the MODEL's name."""
        return self.output or (self.name,)
