"""The four forms of an ENSEMBLE (LANGUAGE.md section 3), one class each.

A form says which members answer which rows of a :class:`Batch` and what the
answer's columns are; :func:`form_of` picks a config's form once.

* :class:`Steps`: ``STEP``s in a topological order of their bindings (the
  steps of one level side by side on a thread pool) and an ``OUTPUT``
  combiner (:mod:`beam_dsl.transforms.ensemble.combiners`).
* :class:`SplitForm`: ``SPLIT BY key (m1 p1%, ...)``: each row goes to one arm,
  chosen by :func:`split_arm`.
* :class:`CascadeForm`: ``CASCADE (m1 WHEN cond, ..., mN)``: each model answers
  the rows whose WHEN holds over its answer; the rest fall through.
* :class:`SwitchForm`: ``SWITCH WHEN cond THEN m ... ELSE m``: the first case
  whose WHEN holds over the input row picks the model.

The routed forms (SPLIT, CASCADE, SWITCH) share :class:`Routed`: the answer
is the answering model's, confidence included, and ``arm`` names it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from beam_dsl.ir.ensemble import EnsembleConfig, Step, topological_levels
from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.common.expr import mask
from beam_dsl.transforms.common.rows import optional
from beam_dsl.transforms.ensemble import combiners
from beam_dsl.transforms.ensemble.batch import Batch

ARM = "arm"
FLOAT, STR, ANY = optional(float), optional(str), optional(Any)

Columns = dict[str, pd.Series]


def split_arm(ensemble: str, key: Sequence[Any], arms: Sequence[tuple[str, float]]) -> str:
    """The arm of ``key``: sha256 of the ensemble name and key, as a point in [0, 1).

    Salting with the ensemble name keeps two experiments on the same key
    independent. Values hash by their text, so 42 and '42' meet the same arm.
    """
    text = "\x1e".join([ensemble, *("\x00" if v is None else str(v) for v in key)])
    point = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for model, share in arms:
        cumulative += share
        if point < cumulative:
            return model
    return arms[-1][0]  # shares summing to 0.999... leave a sliver for the last arm


def member_fields(member: str, config: ModelConfig) -> list[tuple[str, Any]]:
    """A member's output and provenance columns, with their types."""
    fields = [(f"{member}_{o}", ANY) for o in config.outputs]
    fields += [(f"{member}_confidence", FLOAT), (f"{member}_model_id", STR)]
    if config.per:
        fields.append((f"{member}_model_key", STR))
    return fields


class Form(ABC):
    """What a form tells the plan: its members, result columns and how it answers."""

    result: str  # ``R``: the name of the (first) result column

    def __init__(self, config: EnsembleConfig):
        self.config = config

    @abstractmethod
    def members(self) -> list[tuple[str, str]]:
        """(member, model) for each member, in output column order."""

    @abstractmethod
    def result_types(self) -> list[tuple[str, Any]]:
        """The result columns of ``main`` (after the input fields, before the members')."""

    @abstractmethod
    def shadow_types(self) -> list[tuple[str, Any]]:
        """The result columns ``shadow`` repeats from ``main``."""

    @abstractmethod
    def scored(self) -> frozenset[str]:
        """Members whose confidence and class probabilities something reads.

        Scores cost a classifier a second pass (``predict_proba``), so only
        these members compute them.
        """

    @abstractmethod
    def answer(self, batch: Batch, pool: ThreadPoolExecutor | None) -> Columns:
        """Runs the members over the batch; the result columns (by name) over the rows
        still alive (rows a member or the combiner rejected have left the batch)."""

    @abstractmethod
    def alike(self) -> list[str]:
        """The members that must answer the same kind of value (LANGUAGE.md section 7)."""

    def threads(self) -> int:
        """How many members this form can run at once."""
        return 1


class Steps(Form):
    """``STEP``s and an ``OUTPUT`` combiner."""

    def __init__(self, config: EnsembleConfig):
        super().__init__(config)
        self.steps = config.steps
        self.output = config.output
        self.levels = topological_levels(self.steps)
        self.bindings = frozenset(s.name for s in self.steps)
        self.result = self.output.alias

    def members(self) -> list[tuple[str, str]]:
        return [(s.name, s.model) for s in self.steps]

    def result_types(self) -> list[tuple[str, Any]]:
        extras = combiners.extra_columns(self.output)
        return [
            (self.result, ANY),
            (f"{self.result}_confidence", FLOAT),
            *((f"{self.result}_{e}", ANY) for e in extras),
        ]

    def shadow_types(self) -> list[tuple[str, Any]]:
        return [(self.result, ANY)]

    def scored(self) -> frozenset[str]:
        """The members of a combiner that weighs scores, and the steps whose
        ``.confidence`` / ``.proba`` another step reads."""
        scored = set(self.output.members) if combiners.reads_scores(self.output) else set()
        for arg in (a for s in self.steps for a in s.args or ()):
            member, _, field = arg.partition(".")
            if field in ("confidence", "proba"):
                scored.add(member)
        return frozenset(scored)

    def alike(self) -> list[str]:
        return list(self.output.members) if combiners.alike(self.output) else []

    def threads(self) -> int:
        return max(len({s.model for s in level}) for level in self.levels)

    def answer(self, batch: Batch, pool: ThreadPoolExecutor | None) -> Columns:
        for level in self.levels:
            self._run_level(batch, level, pool)
        alive = batch.alive()
        members = {s.name: batch.member(s.name, alive) for s in self.steps}
        combined = combiners.combine(self.output, members, alive)
        batch.reject(combined.errors.dropna(), f"OUTPUT {self.output.combiner}()")
        return {
            self.result: combined.value,
            f"{self.result}_confidence": combined.confidence,
            **{f"{self.result}_{suffix}": v for suffix, v in combined.extra.items()},
        }

    def _run_level(self, batch: Batch, level: Sequence[Step], pool: ThreadPoolExecutor | None):
        """Runs one level's steps; steps of one MODEL run one after another on one thread.

        A predictor is never called from two threads at once: predictors keep
        state (a PER model's key set and loaded models, a CUSTOM handler's)
        that is not safe to share across threads.
        """
        alive = batch.alive()
        by_model: dict[str, list[tuple[Step, pd.DataFrame]]] = {}
        for step in level:
            by_model.setdefault(step.model, []).append((step, self._step_input(step, batch, alive)))

        def run(group: list[tuple[Step, pd.DataFrame]]) -> list[pd.DataFrame]:
            return [batch.predict(step.name, step.model, frame) for step, frame in group]

        groups = list(by_model.values())
        if pool is not None and len(groups) > 1:
            answers = list(pool.map(run, groups))
        else:
            answers = [run(group) for group in groups]
        results = {
            step.name: result
            for group, results in zip(groups, answers, strict=True)
            for (step, _), result in zip(group, results, strict=True)
        }
        for step in level:  # in declaration order: the first step to reject a row names it
            batch.record(step.name, step.model, results[step.name])

    def _step_input(self, step: Step, batch: Batch, rows: pd.Index) -> pd.DataFrame:
        """The frame a step's model reads: its fields named by the model's INPUT."""
        if step.args is None:
            return batch.rows(rows)
        names = self.config.models[step.model].input or [a.split(".")[-1] for a in step.args]
        columns = {}
        for name, arg in zip(names, step.args, strict=True):
            binding, _, field = arg.partition(".")
            if binding in self.bindings:
                model = self.config.models[batch.model_of[binding]]
                values = batch.column(binding, field or model.outputs[0], rows)
            else:
                values = batch.rows(rows)[arg]
            columns[name] = values.to_numpy()  # all aligned to ``rows`` already
        return pd.DataFrame(columns, index=rows)


class Routed(Form):
    """A form where one model answers each row: SPLIT, CASCADE, SWITCH.

    The answer is the answering model's OUTPUT columns under the first arm's
    OUTPUT names, its confidence as ``R_confidence``, and ``arm``.
    """

    def __init__(self, config: EnsembleConfig):
        super().__init__(config)
        self.routed = config.routed_models()
        self.outputs = list(config.models[self.routed[0]].outputs)
        self.result = self.outputs[0]

    def members(self) -> list[tuple[str, str]]:
        return [(m, m) for m in self.routed]

    def result_types(self) -> list[tuple[str, Any]]:
        return [*((o, ANY) for o in self.outputs), (f"{self.result}_confidence", FLOAT), (ARM, str)]

    def shadow_types(self) -> list[tuple[str, Any]]:
        return [(ARM, str), (self.result, ANY)]

    def scored(self) -> frozenset[str]:
        """Every routed model: the answer carries the answering model's confidence."""
        return frozenset(self.routed)

    def alike(self) -> list[str]:
        return list(self.routed)

    def answer(self, batch: Batch, pool: ThreadPoolExecutor | None) -> Columns:
        routes = self.route(batch)
        served = batch.alive()
        chosen = routes.reindex(served)
        names = [*self.outputs, f"{self.result}_confidence"]
        pieces: dict[str, list[pd.Series]] = {name: [] for name in names}
        for model in self.routed:
            rows = served[(chosen == model).to_numpy()]
            fields = [*self.config.models[model].outputs, "confidence"]
            for name, field in zip(names, fields, strict=True):
                pieces[name].append(batch.column(model, field, rows))
        columns = {
            name: pd.concat(parts).reindex(served) if parts else pd.Series(index=served)
            for name, parts in pieces.items()
        }
        columns[ARM] = chosen
        return columns

    @abstractmethod
    def route(self, batch: Batch) -> pd.Series:
        """Runs the models; the model that answers each row (None where none does)."""

    @staticmethod
    def predict_routes(batch: Batch, routes: pd.Series, models: Sequence[str]) -> None:
        """Each model predicts the rows routed to it."""
        for model in models:
            rows = routes.index[(routes == model).to_numpy()].intersection(batch.alive())
            if len(rows):
                batch.record(model, model, batch.predict(model, model, batch.rows(rows)))


class SplitForm(Routed):
    """``SPLIT BY key (m1 p1%, m2 p2%, ...)``."""

    def route(self, batch: Batch) -> pd.Series:
        split = self.config.split
        arms = [(a.model, a.share) for a in split.arms]
        keys = batch.frame[list(split.keys)].itertuples(index=False, name=None)
        routes = pd.Series(
            [split_arm(self.config.name, k, arms) for k in keys], index=batch.frame.index
        )
        self.predict_routes(batch, routes, self.routed)
        return routes


class SwitchForm(Routed):
    """``SWITCH WHEN cond THEN m ... [ELSE m]``; a row no case matches without ELSE is an error."""

    def route(self, batch: Batch) -> pd.Series:
        switch = self.config.switch
        routes = pd.Series(None, index=batch.frame.index, dtype=object)
        for case in switch.cases:
            hit = mask(case.when, batch.frame) & routes.isna()
            routes[hit] = case.model
        if switch.default:
            routes = routes.fillna(switch.default)
        else:
            batch.reject(
                pd.Series("no SWITCH case matched and there is no ELSE",
                          index=routes.index[routes.isna()]),
                "SWITCH",
            )
        self.predict_routes(batch, routes, self.routed)
        return routes


class CascadeForm(Routed):
    """``CASCADE (m1 WHEN cond, ..., mN)``: WHEN reads input fields and ``model.field``."""

    def route(self, batch: Batch) -> pd.Series:
        cascade = self.config.cascade
        remaining = batch.alive()
        routes = pd.Series(None, index=batch.frame.index, dtype=object)
        for i, arm in enumerate(cascade):
            if not len(remaining):
                break
            model = arm.model
            batch.record(model, model, batch.predict(model, model, batch.rows(remaining)))
            remaining = remaining.intersection(batch.alive())
            if i == len(cascade) - 1:
                answered = remaining
            else:
                answered = remaining[mask(arm.when, batch.qualified(remaining)).to_numpy()]
            routes.loc[answered] = model
            remaining = remaining.difference(answered)
        return routes


FORMS: dict[str, type[Form]] = {
    "STEP": Steps,
    "SPLIT": SplitForm,
    "CASCADE": CascadeForm,
    "SWITCH": SwitchForm,
}


def form_of(config: EnsembleConfig) -> Form:
    """The form of a validated config (which has exactly one)."""
    (name,) = config.forms()
    return FORMS[name](config)
