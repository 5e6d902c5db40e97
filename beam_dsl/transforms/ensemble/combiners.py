"""ENSEMBLE ``OUTPUT`` combiners over a batch of member answers.

Each combiner reads :class:`Member` answers (one per STEP, aligned to the
batch's index) and returns a :class:`Combined`: the combined value, its
confidence (NaN where the combiner has none), extra columns named by a suffix
(``scores`` for ``top_k`` and ``rank_fusion``, ``step`` for
``max_confidence``) and, per row, the reason the row could not be combined (or
None). docs/ENSEMBLES.md describes each combiner and how ties break.

The combiners:

* ``vote(a, b, ..., weights = (...), mode = 'hard'|'soft')``: hard counts each
  member's label with its weight; soft averages the members' class
  probabilities with their weights. Ties go to the label named first (hard: by
  the earliest member that voted for it; soft: in the order classes first
  appear in the members' probabilities).
* ``mean(a, b, ..., weights = (...))``: the weighted mean of numeric answers
  (regression); for classifiers, the weighted mean of class probabilities.
* ``max_confidence(a, b, ...)``: the answer of the member most sure of itself.
* ``top_k(items, scores, k)``: the ``k`` items with the highest scores
  (``scores`` is a list aligned with ``items``, or a dict item -> score).
* ``rank_fusion(a, b, ..., k = 60, weights = (...))``: reciprocal rank fusion
  (Cormack et al. 2009): an item's score is the sum over members of
  ``weight / (k + rank)`` with ranks from 1. A member ranks a list answer in
  its order, a dict answer (item -> score) and a classifier's probabilities
  by descending score.
* a plain step name: that step's answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

RRF_K = 60  # the constant of Cormack, Clarke and Buettcher (SIGIR 2009)


@dataclass(frozen=True)
class Member:
    """One step's answers over a batch, aligned to the batch's index."""

    name: str
    value: pd.Series  # the model's first OUTPUT column
    confidence: pd.Series  # highest class probability; NaN where not a classifier
    proba: pd.Series  # dict class -> probability, or None


@dataclass
class Combined:
    """A combiner's result over a batch."""

    value: pd.Series
    confidence: pd.Series
    errors: pd.Series  # reason the row could not be combined, or None
    extra: dict[str, pd.Series] = field(default_factory=dict)  # column suffix -> values


# Extra columns each combiner adds, named ``<AS>_<suffix>``.
EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {
    "max_confidence": ("step",),
    "top_k": ("scores",),
    "rank_fusion": ("scores",),
}


def members_of(output: Mapping[str, Any]) -> list[str]:
    """The step names a lowered OUTPUT reads (literal arguments, such as top_k's k, left out)."""
    return [a for a in output["args"] if isinstance(a, str)]


def reads_scores(output: Mapping[str, Any]) -> bool:
    """Whether the combiner weighs its members' confidence or class probabilities."""
    name = output["combiner"]
    if name == "vote":
        return (output.get("kwargs") or {}).get("mode", "hard") == "soft"
    return name in ("mean", "max_confidence", "rank_fusion")


def validate(output: Mapping[str, Any], steps: Sequence[str]) -> None:
    """Raises ValueError if the lowered OUTPUT cannot run over these steps."""
    name = output["combiner"]
    if name not in _COMBINERS:
        raise ValueError(f"unknown combiner '{name}'; combiners are {', '.join(_COMBINERS)}")
    members = members_of(output)
    unknown = [m for m in members if m not in steps]
    if unknown:
        raise ValueError(f"{name}() names unknown steps: {', '.join(unknown)}")
    if not members:
        raise ValueError(f"{name}() needs at least one step")
    kwargs = output.get("kwargs") or {}
    if name == "top_k" and (len(output["args"]) != 3 or len(members) != 2 or not _positive_int(
        output["args"][2]
    )):
        raise ValueError("top_k takes (items, scores, k) with a positive integer k")
    weights = kwargs.get("weights")
    if weights is not None and (
        len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0
    ):
        raise ValueError(
            f"{name}() weights must be {len(members)} non-negative numbers, not all zero"
        )
    if kwargs.get("mode", "hard") not in ("hard", "soft"):
        raise ValueError("vote() mode is 'hard' or 'soft'")


def combine(output: Mapping[str, Any], members: Mapping[str, Member], index: pd.Index) -> Combined:
    """Applies the lowered OUTPUT combiner to the members' answers."""
    chosen = [members[m] for m in members_of(output)]
    return _COMBINERS[output["combiner"]](chosen, output, index)


# ---------------------------------------------------------------- helpers


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so labels compare, hash and serialise plainly."""
    return value.item() if isinstance(value, np.generic) else value


def _weights(output: Mapping[str, Any], members: Sequence[Member]) -> list[float]:
    weights = (output.get("kwargs") or {}).get("weights")
    return [float(w) for w in weights] if weights else [1.0] * len(members)


def _no_errors(index: pd.Index) -> pd.Series:
    return pd.Series(None, index=index, dtype=object)


def _result(
    index: pd.Index,
    values: list,
    confidence: list[float],
    errors: list[str | None],
    **extra: list,
) -> Combined:
    return Combined(
        value=pd.Series(values, index=index, dtype=object),
        confidence=pd.Series(confidence, index=index, dtype=float),
        errors=pd.Series(errors, index=index, dtype=object),
        extra={k: pd.Series(v, index=index, dtype=object) for k, v in extra.items()},
    )


def _soft_average(
    members: Sequence[Member], weights: Sequence[float], index: pd.Index, what: str
) -> Combined:
    """Weighted mean of class probabilities; the label is the most probable class."""
    total_weight = sum(weights)
    labels: list = []
    confidence: list[float] = []
    errors: list[str | None] = []
    for row in zip(*(m.proba for m in members), strict=True):
        missing = [m.name for m, p in zip(members, row, strict=True) if not isinstance(p, Mapping)]
        if missing:
            labels.append(None)
            confidence.append(math.nan)
            errors.append(f"{what} needs class probabilities; step '{missing[0]}' gave none")
            continue
        sums: dict[Hashable, float] = {}
        for weight, proba in zip(weights, row, strict=True):
            for label, p in proba.items():
                label = _plain(label)
                sums[label] = sums.get(label, 0.0) + weight * float(p)
        best = max(sums, key=sums.__getitem__)  # first maximum in insertion order
        labels.append(best)
        confidence.append(sums[best] / total_weight)
        errors.append(None)
    return _result(index, labels, confidence, errors)


# ---------------------------------------------------------------- combiners


def _vote(members: Sequence[Member], output: Mapping[str, Any], index: pd.Index) -> Combined:
    weights = _weights(output, members)
    if (output.get("kwargs") or {}).get("mode", "hard") == "soft":
        return _soft_average(members, weights, index, "vote(mode = 'soft')")
    total_weight = sum(weights)
    labels: list = []
    confidence: list[float] = []
    errors: list[str | None] = []
    for row in zip(*(m.value for m in members), strict=True):
        tally: dict[Hashable, float] = {}
        for weight, label in zip(weights, row, strict=True):
            if label is not None and not (isinstance(label, float) and math.isnan(label)):
                label = _plain(label)
                tally[label] = tally.get(label, 0.0) + weight
        if not tally:
            labels.append(None)
            confidence.append(math.nan)
            errors.append("vote() got no labels")
            continue
        best = max(tally, key=tally.__getitem__)
        labels.append(best)
        confidence.append(tally[best] / total_weight)
        errors.append(None)
    return _result(index, labels, confidence, errors)


def _mean(members: Sequence[Member], output: Mapping[str, Any], index: pd.Index) -> Combined:
    weights = _weights(output, members)
    if not all(pd.api.types.is_numeric_dtype(m.value) for m in members):
        return _soft_average(members, weights, index, "mean() of classifiers")
    stacked = np.column_stack([m.value.to_numpy(dtype=float) for m in members])
    values = stacked @ np.asarray(weights, dtype=float) / sum(weights)
    bad = np.isnan(values)
    errors = ["mean() got a missing value" if b else None for b in bad]
    return Combined(
        value=pd.Series(values, index=index, dtype=float),
        confidence=pd.Series(math.nan, index=index, dtype=float),
        errors=pd.Series(errors, index=index, dtype=object),
    )


def _max_confidence(
    members: Sequence[Member], output: Mapping[str, Any], index: pd.Index
) -> Combined:
    stacked = np.column_stack([m.confidence.to_numpy(dtype=float) for m in members])
    known = ~np.isnan(stacked)
    # argmax takes the first maximum, so a tie goes to the member named first.
    best = np.argmax(np.where(known, stacked, -np.inf), axis=1)
    values: list = []
    confidence: list[float] = []
    steps: list[str | None] = []
    errors: list[str | None] = []
    for row, col in enumerate(best):
        if not known[row].any():
            values.append(None)
            confidence.append(math.nan)
            steps.append(None)
            errors.append("max_confidence() got no confidence from any step")
            continue
        member = members[col]
        values.append(_plain(member.value.iloc[row]))
        confidence.append(float(stacked[row, col]))
        steps.append(member.name)
        errors.append(None)
    return _result(index, values, confidence, errors, step=steps)


def _top_k(members: Sequence[Member], output: Mapping[str, Any], index: pd.Index) -> Combined:
    items, scores = members
    k = int(output["args"][2])
    values: list = []
    top_scores: list = []
    errors: list[str | None] = []
    for item_list, score_list in zip(items.value, scores.value, strict=True):
        item_list = list(item_list) if _is_sequence(item_list) else None
        if item_list is None:
            ranked, reason = None, f"top_k(): step '{items.name}' gave no list of items"
        elif isinstance(score_list, Mapping):
            ranked, reason = [(i, score_list.get(i, math.nan)) for i in item_list], None
        elif _is_sequence(score_list) and len(score_list) == len(item_list):
            ranked, reason = list(zip(item_list, score_list, strict=True)), None
        else:
            ranked, reason = None, (
                f"top_k(): step '{scores.name}' gave no score for each of "
                f"the {len(item_list)} items of step '{items.name}'"
            )
        if ranked is None:
            values.append(None)
            top_scores.append(None)
            errors.append(reason)
            continue
        # sorted() is stable: equal scores keep the items' order.
        best = sorted(ranked, key=lambda pair: -_score(pair[1]))[:k]
        values.append([_plain(i) for i, _ in best])
        top_scores.append([float(s) for _, s in best])
        errors.append(None)
    return _result(index, values, [math.nan] * len(index), errors, scores=top_scores)


def _rank_fusion(members: Sequence[Member], output: Mapping[str, Any], index: pd.Index) -> Combined:
    weights = _weights(output, members)
    k = float((output.get("kwargs") or {}).get("k", RRF_K))
    values: list = []
    fused_scores: list = []
    for row in zip(*(zip(m.value, m.proba, strict=True) for m in members), strict=True):
        fused: dict[Hashable, float] = {}
        for weight, (value, proba) in zip(weights, row, strict=True):
            for rank, item in enumerate(_ranking(value, proba), start=1):
                fused[item] = fused.get(item, 0.0) + weight / (k + rank)
        best = sorted(fused.items(), key=lambda pair: -pair[1])
        values.append([item for item, _ in best])
        fused_scores.append([score for _, score in best])
    return _result(
        index, values, [math.nan] * len(index), [None] * len(index), scores=fused_scores
    )


def _step(members: Sequence[Member], output: Mapping[str, Any], index: pd.Index) -> Combined:
    (member,) = members
    return Combined(value=member.value, confidence=member.confidence, errors=_no_errors(index))


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _score(value: Any) -> float:
    """A score for sorting: missing scores sort last."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(score) else score


def _ranking(value: Any, proba: Any) -> list:
    """A member's answer as items best first."""
    if _is_sequence(value):
        return [_plain(v) for v in value]
    scored = value if isinstance(value, Mapping) else proba
    if isinstance(scored, Mapping):
        return [_plain(i) for i, _ in sorted(scored.items(), key=lambda p: -_score(p[1]))]
    return [] if value is None else [_plain(value)]


_COMBINERS: dict[str, Callable[..., Combined]] = {
    "vote": _vote,
    "mean": _mean,
    "max_confidence": _max_confidence,
    "top_k": _top_k,
    "rank_fusion": _rank_fusion,
    "step": _step,
}
