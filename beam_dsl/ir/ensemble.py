"""ENSEMBLE's config (docs/IR.md, "ENSEMBLE") and the rules between its fields.

:meth:`EnsembleConfig.validate` applies the rules lint checks (E450) to a
config built from Python or read from a hand-edited file; lint states the
same rules with source positions (:mod:`beam_dsl.dsl.checks.ensemble`)
through the helpers here (:func:`unlike`, :func:`step_input_problem`,
:func:`topological_levels`) and the combiners' own
(:func:`beam_dsl.transforms.ensemble.combiners.problems`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.ir import Config, Expr, Node, runtime, spelt
from beam_dsl.ir.model import ModelConfig

E_ENSEMBLE = "E450"  # a config the checks did not see (built from Python, or hand-edited)

PLAIN_STEP = "step"  # Output.combiner of ``OUTPUT step_name`` (no combiner)


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

    @property
    def members(self) -> tuple[str, ...]:
        """The steps it reads (string arguments; literals such as top_k's k left out)."""
        return tuple(a for a in self.args if isinstance(a, str))

    @property
    def literals(self) -> tuple[Any, ...]:
        """Its literal positional arguments (top_k's k)."""
        return tuple(a for a in self.args if not isinstance(a, str))


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

    def forms(self) -> list[str]:
        """The forms this config takes (exactly one when valid)."""
        return [
            form
            for form, present in (
                ("STEP", self.steps),
                ("SPLIT", self.split is not None),
                ("CASCADE", self.cascade is not None),
                ("SWITCH", self.switch is not None),
            )
            if present
        ]

    def routed_models(self) -> list[str]:
        """The models that may answer a row of a SPLIT, CASCADE or SWITCH, once each, in order."""
        if self.split is not None:
            names = [a.model for a in self.split.arms]
        elif self.cascade is not None:
            names = [a.model for a in self.cascade]
        elif self.switch is not None:
            names = [c.model for c in self.switch.cases]
            names += [self.switch.default] if self.switch.default else []
        else:
            names = []
        return list(dict.fromkeys(names))

    def validate(self) -> None:
        """The rules lint checks, for a config built from Python or a hand-edited file."""
        problem = self._form_problem() or self._steps_problem() or self._routed_problem()
        if problem:
            raise self.error(E_ENSEMBLE, problem)

    # Each returns the first problem it finds, or None.

    def _form_problem(self) -> str | None:
        forms = self.forms()
        if len(forms) != 1:
            found = ", ".join(forms) or "none"
            return f"needs exactly one of STEP, SPLIT, CASCADE, SWITCH; it has {found}"
        used = [*(s.model for s in self.steps), *self.routed_models(), *self.shadow]
        missing = [m for m in dict.fromkeys(used) if m not in self.models]
        if missing:
            return f"uses MODEL {missing[0]}, which has no config in 'models'"
        if self.split is not None:
            total = sum(a.share for a in self.split.arms)
            if abs(total - 1.0) > 1e-6:
                return f"SPLIT shares add up to {total:.2%}, not 100%"
        return None

    def _steps_problem(self) -> str | None:
        if not self.steps:
            return "OUTPUT combines STEPs; this ENSEMBLE has none" if self.output else None
        if self.output is None:
            return "has STEPs but no OUTPUT"
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            return f"binds a step name twice: {', '.join(names)}"
        try:
            topological_levels(self.steps)
        except ValueError as e:
            return str(e)
        for step in self.steps:
            inputs = self.models[step.model].input
            problem = step_input_problem(step.name, step.model, step.args, inputs)
            if problem:
                return problem
        return self._output_problem(names)

    def _output_problem(self, steps: Sequence[str]) -> str | None:
        from beam_dsl.transforms.ensemble import combiners

        output = self.output
        if output.combiner == PLAIN_STEP:
            unknown = [m for m in output.members if m not in steps]
            return f"OUTPUT names unknown step '{unknown[0]}'" if unknown else None
        if output.combiner not in combiners.REGISTRY:
            known = ", ".join(combiners.REGISTRY)
            return f"unknown combiner '{output.combiner}'; combiners are {known}"
        unknown = [m for m in output.members if m not in steps]
        if unknown:
            return f"{output.combiner}() names unknown step '{unknown[0]}'"
        found = combiners.problems(output.combiner, output.members, output.literals, output.kwargs)
        if found:
            return found[0][1]
        if combiners.alike(output):
            model_of = {s.name: s.model for s in self.steps}
            return self._classes_problem([(m, model_of[m]) for m in output.members])
        return None

    def _routed_problem(self) -> str | None:
        """The models that answer rows of a SPLIT, CASCADE or SWITCH, and SHADOW models
        answering beside them, must answer alike."""
        routed = list(dict.fromkeys([*self.routed_models(), *self.shadow]))
        outputs = unlike((m, len(self.models[m].outputs)) for m in routed)
        if outputs:
            (a, n), (b, k) = outputs
            return (
                f"the models it routes between (and SHADOW) must have as many OUTPUT columns: "
                f"{a} has {n}, {b} has {k}"
            )
        return self._classes_problem([(m, m) for m in routed])

    def _classes_problem(self, members: Sequence[tuple[str, str]]) -> str | None:
        """``members``: (member, model) pairs that must answer the same labels."""
        classes = {member: self.models[model].classes for member, model in members}
        pair = unlike((member, label_set(labels)) for member, labels in classes.items())
        if pair is None:
            return None
        (a, _), (b, _) = pair
        return (
            f"members answer different labels: {a} has CLASSES {tuple(classes[a])}, "
            f"{b} has {tuple(classes[b])}"
        )


def label_set(classes: Sequence[Any] | None) -> frozenset | None:
    """CLASSES as a set (their order only maps class indices), or None if unknown."""
    return None if classes is None else frozenset(classes)


def unlike(members: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], tuple[str, Any]] | None:
    """The first member whose value differs from the first known one, with that one.

    ``members`` are (name, value) pairs; a None value is unknown and matches any.
    """
    first: tuple[str, Any] | None = None
    for name, value in members:
        if value is None:
            continue
        if first is None:
            first = (name, value)
        elif value != first[1]:
            return first, (name, value)
    return None


def step_input_problem(
    step: str, model: str, args: Sequence[str] | None, inputs: Sequence[str] | None
) -> str | None:
    """Why STEP ``step`` cannot feed ``model`` its arguments, or None.

    A MODEL with INPUT reads its arguments under the INPUT names, in order, so
    there must be as many; ``*`` passes the whole row and a MODEL without INPUT
    reads the arguments under their own names.
    """
    if args is None or not inputs or len(args) == len(inputs):
        return None
    return (
        f"STEP {step} passes {len(args)} field{'s' if len(args) != 1 else ''} to MODEL "
        f"{model}, whose INPUT has {len(inputs)}"
    )


def topological_levels(steps: Sequence[Step]) -> list[list[Step]]:
    """Steps grouped so that each depends only on steps of earlier groups.

    Within a group, steps keep their declaration order. Raises ValueError on a
    cycle (lint reports it with a position first).
    """
    names = {s.name for s in steps}
    deps = {s.name: {a.split(".", 1)[0] for a in s.args or ()} & names for s in steps}
    levels: list[list[Step]] = []
    placed: set[str] = set()
    while len(placed) < len(steps):
        ready = [s for s in steps if s.name not in placed and deps[s.name] <= placed]
        if not ready:
            cycle = sorted(names - placed)
            raise ValueError(f"steps depend on each other in a cycle: {', '.join(cycle)}")
        levels.append(ready)
        placed.update(s.name for s in ready)
    return levels
