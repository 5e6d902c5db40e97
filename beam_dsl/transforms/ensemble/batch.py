"""One batch of an ENSEMBLE at work: the input rows, each member's answers, rejected rows.

A *member* is what answers under a name: a STEP binding, or a model of a
SPLIT, CASCADE, SWITCH or SHADOW (named after itself). Its result is the
predictor's frame (:class:`beam_dsl.transforms.inference.predictors.Predictor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import pandas as pd

from beam_dsl.diagnostics import config_error
from beam_dsl.ir.ensemble import unlike
from beam_dsl.ir.model import ModelConfig
from beam_dsl.transforms.ensemble.combiners import Member

E_UNLIKE = "E451"  # members answered different kinds of value, or labels that do not overlap

# The predictor's columns besides the model's OUTPUT ones.
PROVENANCE = ("confidence", "model_id", "model_key")

# pandas' inferred type of an answer column -> the kind of value members must share.
_KINDS = {
    "string": "text",
    "integer": "number",
    "floating": "number",
    "mixed-integer-float": "number",
    "decimal": "number",
    "boolean": "number",
}


def nulls_as_none(series: pd.Series) -> pd.Series:
    """Object columns with None (not NaN) where a value is missing."""
    if series.dtype != object:
        return series
    missing = series.isna()
    return series.where(~missing, None) if missing.any() else series


def answer_kind(values: pd.Series) -> str | None:
    """``text`` or ``number``; None for no answers, or answers of another shape (lists)."""
    return _KINDS.get(pd.api.types.infer_dtype(values, skipna=True))


class Batch:
    """One batch's state: the input frame, each member's results, rejected rows."""

    def __init__(
        self,
        name: str,
        frame: pd.DataFrame,
        predictors: Mapping[str, Any],
        models: Mapping[str, ModelConfig],
        scored: frozenset[str],
    ):
        self.name = name  # the ENSEMBLE's
        self.frame = frame
        self.predictors = predictors
        self.models = models
        self.scored = scored
        self.results: dict[str, pd.DataFrame] = {}
        self.model_of: dict[str, str] = {}
        self.errors = pd.Series(None, index=frame.index, dtype=object)
        self.rejected = 0

    def alive(self) -> pd.Index:
        """The rows no member rejected (the frame's own index while there are none, which
        keeps later index comparisons cheap)."""
        if not self.rejected:
            return self.frame.index
        return self.errors.index[self.errors.isna().to_numpy()]

    def reject(self, reasons: pd.Series, who: str) -> None:
        if len(reasons):
            fresh = reasons[self.errors.loc[reasons.index].isna()]
            self.errors.loc[fresh.index] = [f"{who}: {r}" for r in fresh]
            self.rejected += len(fresh)

    def rows(self, index: pd.Index) -> pd.DataFrame:
        """The input rows at ``index`` (a subset of the batch's, in its order)."""
        return self.frame if len(index) == len(self.frame) else self.frame.loc[index]

    def predict(self, member: str, model: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``model``'s result frame for ``frame`` (rows it rejects carry an ``error``)."""
        return self.predictors[model].predict(frame, scores=member in self.scored)

    def who(self, member: str) -> str:
        """The member as errors name it."""
        model = self.model_of[member]
        return f"MODEL {model}" if member == model else f"step '{member}' (MODEL {model})"

    def record(
        self, member: str, model: str, result: pd.DataFrame | None, reject: bool = True
    ) -> None:
        """Keeps a member's result; rows it rejected leave the batch unless ``reject`` is off."""
        self.model_of[member] = model
        if result is None:
            return
        self.results[member] = result
        if reject:
            self.reject(result["error"].dropna(), self.who(member))

    def column(self, member: str, field: str, rows: pd.Index) -> pd.Series:
        """A member's field on ``rows``: NaN/None where the member did not run."""
        result = self.results.get(member)
        if result is None or field not in result.columns:
            return pd.Series(None, index=rows, dtype=object)
        values = result[field]
        return values if values.index.equals(rows) else values.reindex(rows)

    def member(self, member: str, rows: pd.Index) -> Member:
        model = self.models[self.model_of[member]]
        return Member(
            name=member,
            value=self.column(member, model.outputs[0], rows),
            confidence=self.column(member, "confidence", rows).astype(float),
            proba=self.column(member, "proba", rows),
        )

    def qualified(self, rows: pd.Index) -> pd.DataFrame:
        """Input fields plus ``member.field`` columns, for WHEN expressions."""
        frame = self.rows(rows).copy()
        for member, result in self.results.items():
            for field in result.columns:
                frame[f"{member}.{field}"] = self.column(member, field, rows)
        return frame

    def output(
        self, rows: pd.Index, columns: Mapping[str, pd.Series], members: Sequence[tuple[str, str]]
    ) -> pd.DataFrame:
        """The input rows at ``rows``, then ``columns``, then each member's output and
        provenance columns (see docs/ENSEMBLES.md)."""
        out = {name: nulls_as_none(values.reindex(rows)) for name, values in columns.items()}
        for member, model in members:
            config = self.models[model]
            for field in [*config.outputs, *PROVENANCE]:
                values = self.column(member, field, rows)
                if field == "confidence":
                    out[f"{member}_{field}"] = values.astype(float)
                elif field != "model_key" or config.per:
                    out[f"{member}_{field}"] = nulls_as_none(values)
        return pd.concat([self.rows(rows), pd.DataFrame(out, index=rows)], axis=1)

    # ------------------------------------------------------------ answers alike

    def check_alike(self, members: Sequence[str]) -> None:
        """Raises E451 if ``members`` answered different kinds of value (numbers and
        text), or classes that do not overlap (where both members' classes are known:
        their MODEL's CLASSES, or the classes of their probabilities)."""
        answered = [m for m in members if m in self.results]
        answers = {m: self._answers(m) for m in answered}
        pair = unlike((m, answer_kind(values)) for m, values in answers.items())
        if pair:
            (a, kind_a), (b, kind_b) = pair
            raise config_error(
                "ENSEMBLE", self.name, E_UNLIKE,
                f"its members answer different kinds of value: {self.who(a)} answers "
                f"{kind_a} ({_examples(answers[a])}), {self.who(b)} answers {kind_b} "
                f"({_examples(answers[b])})",
                "a network that answers class indices can name its labels with CLASSES (...)",
            )
        known = [(m, classes) for m in answered if (classes := self._classes(m))]
        for (a, classes_a), (b, classes_b) in combinations(known, 2):
            if not set(classes_a) & set(classes_b):
                raise config_error(
                    "ENSEMBLE", self.name, E_UNLIKE,
                    f"its members answer labels that do not overlap: {self.who(a)} answers "
                    f"{_shown(classes_a)}, {self.who(b)} answers {_shown(classes_b)}",
                    "members of a vote, mean, SPLIT, CASCADE or SWITCH must answer the same labels",
                )

    def _answers(self, member: str) -> pd.Series:
        """The member's first OUTPUT on the rows it answered."""
        result = self.results[member]
        values = result[self.models[self.model_of[member]].outputs[0]]
        return values[result["error"].isna().to_numpy()]

    def _classes(self, member: str) -> tuple | None:
        """The member's classes: its MODEL's CLASSES, else those of its probabilities."""
        classes = self.models[self.model_of[member]].classes
        if classes is not None:
            return tuple(classes)
        proba = self.results[member].get("proba", ())
        first = next((p for p in proba if isinstance(p, Mapping)), None)
        return tuple(first) if first else None


def _examples(values: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in pd.unique(values.dropna().to_numpy())[:n].tolist())


def _shown(classes: Sequence[Any]) -> str:
    return "(" + ", ".join(repr(c) for c in classes) + ")"
