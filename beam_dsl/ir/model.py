"""MODEL's config (docs/IR.md, "MODEL")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from beam_dsl.ir import Call, Config, Node, optional, runtime

E_MODEL_CONFIG = "E406"  # a MODEL config the checks did not see (Python, a hand-edited file)


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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = runtime("auto")

    @property
    def outputs(self) -> tuple[str, ...]:
        """The prediction fields: OUTPUT, or the MODEL's name."""
        return self.output or (self.name,)

    def validate(self) -> None:
        """The rules lint checks (checks/model.py), for configs built without it: E406."""
        from beam_dsl.vocabulary import DEVICES, family

        frameworks = family("frameworks")
        entry = frameworks.get(self.framework)
        if entry is None:
            raise self.error(E_MODEL_CONFIG, f"unknown framework '{self.framework}'",
                             f"frameworks: {', '.join(frameworks)}")
        if self.device not in DEVICES:
            raise self.error(E_MODEL_CONFIG, f"unknown device '{self.device}'",
                             f"devices: {', '.join(DEVICES)}")
        self._check_numbers()
        self._check_path()
        for clause, value in (("CLASS", self.model_class), ("CALL", self.call),
                              ("TRUST", self.trust), ("CLASSES", self.classes)):
            if value and clause not in entry.meta["clauses"]:
                takers = [n.upper() for n in frameworks if clause in frameworks[n].meta["clauses"]]
                raise self.error(E_MODEL_CONFIG, f"{clause} is only for {' or '.join(takers)} "
                                 f"models, not {self.framework.upper()}")
        if self.classes is not None:
            if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
                raise self.error(E_MODEL_CONFIG, "CLASSES needs two or more distinct labels")
            if len(self.outputs) != 1:
                raise self.error(E_MODEL_CONFIG, "CLASSES needs a single OUTPUT field")
        if self.fallback is not None:
            if not self.per:
                raise self.error(E_MODEL_CONFIG, "FALLBACK is only for PER models")
            self.fallback.validate()

    def _check_numbers(self) -> None:
        batch = self.batch
        if batch.min < 1 or batch.max < batch.min:
            raise self.error(E_MODEL_CONFIG, f"BATCH {batch.min} TO {batch.max}: sizes must be "
                             "at least 1, and max at least min")
        for what, seconds in (("BATCH WAIT", batch.wait_s), ("REFRESH EVERY", self.refresh_s)):
            if seconds is not None and seconds <= 0:
                raise self.error(E_MODEL_CONFIG, f"{what} must be a positive duration")

    def _check_path(self) -> None:
        custom = self.framework == "custom"
        if custom != (self.handler is not None) or custom == bool(self.path):
            raise self.error(E_MODEL_CONFIG, "a CUSTOM MODEL has a handler and no path; "
                             "any other framework has a path and no handler")
        keyed = "{key}" in (self.path or "")
        if self.per and not keyed:
            raise self.error(E_MODEL_CONFIG, "PER needs {key} in the model path",
                             "one model per key, e.g. 'models/{key}.skops'")
        if keyed and not self.per:
            raise self.error(E_MODEL_CONFIG, "the model path has {key} but there is no PER")
