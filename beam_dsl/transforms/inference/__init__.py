"""MODEL: batched inference, predictors and the model frameworks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beam_dsl.transforms.inference.frameworks import REGISTRY
from beam_dsl.transforms.training.modelstore import format_modules

if TYPE_CHECKING:  # beam_dsl.ir.model imports this package
    from beam_dsl.ir.model import ModelConfig


def predicts_in_workers(config: ModelConfig) -> bool:
    """Whether MODEL may spread ``config``'s predictions over worker processes: one model
    on one core (its framework's ``one_core``), loaded by each worker; not PER (each
    worker would read the key set at its own time), not SHARED (one copy per machine)."""
    entry = REGISTRY.get(config.framework)
    return bool(entry and entry.meta.get("one_core")) and not config.per and not config.shared


def worker_modules(config: ModelConfig) -> tuple[str, ...]:
    """What loading ``config``'s model imports: the workers' fork server loads it once
    (:mod:`beam_dsl.transforms.common.workers`)."""
    return ("beam_dsl.transforms.inference.predictors",
            REGISTRY.get(config.framework).impl.__module__, *format_modules(config.path or ""))


def __getattr__(name: str) -> Any:
    # Lazy, so that the Beam-free modules of this package import without Beam.
    if name == "RunModel":
        from beam_dsl.transforms.inference.transform import RunModel

        return RunModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
