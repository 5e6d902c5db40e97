"""ENSEMBLE ``OUTPUT`` combiners: the ``combiners`` family (:mod:`beam_dsl.vocabulary`).

Each combiner is one function registered here with its metadata, beside its
implementation; lint (:mod:`beam_dsl.dsl.checks.ensemble`), the config's
rules (:meth:`beam_dsl.ir.ensemble.EnsembleConfig.validate`) and the
transform all read this registry. Adding a combiner is one decorated function.

Metadata of an entry:

* ``min_args`` / ``max_args``: how many steps it combines (the positional
  arguments that name steps);
* ``params``: the keyword arguments it takes;
* ``kind``: its result: ``same`` (a value of the kind the members answer) or
  ``list`` (items, best first);
* ``meta``: ``usage`` (how to call it, for a wrong call); ``positional``
  (literal positional arguments after the steps, such as top_k's ``k``);
  ``rules`` (per argument, a function ``(value, members) -> problem or
  None``); ``scores`` (whether it reads its members' confidence and class
  probabilities: a bool, or a function of the keyword arguments);
  ``alike`` (its members must answer the same kind of value: the same labels,
  or numbers); ``extra`` (suffixes of the columns it adds, ``R_<suffix>``).

An implementation reads :class:`Member` answers (one per step it names,
aligned to the batch's index) and returns a :class:`Combined`: the combined
value, its confidence (NaN where the combiner has none), its extra columns
and, per row, the reason the row could not be combined (or None).
docs/ENSEMBLES.md describes each combiner and how ties break.

Imports no Beam and no pandas at module import: ``lint`` reads this module.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from beam_dsl.vocabulary import Registry

if TYPE_CHECKING:
    import pandas as pd

    from beam_dsl.ir.ensemble import Output

REGISTRY = Registry("combiners")

MANY = 99  # the most steps a combiner takes
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


# ---------------------------------------------------------------- argument rules


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _weights_rule(value: Any, members: int) -> str | None:
    """``weights``: one non-negative number per member, not all zero."""
    if not isinstance(value, (list, tuple)) or len(value) != members or not all(
        _is_number(w) for w in value
    ):
        return f"weights must be a tuple of {members} numbers, one per member"
    if min(value) < 0:
        return f"weights must not be negative: {', '.join(str(w) for w in value)}"
    if not any(value):
        return "weights are all zero; at least one member must count"
    return None


def _mode_rule(value: Any, members: int) -> str | None:
    return None if value in ("hard", "soft") else "mode is 'hard' or 'soft'"


def _count_rule(value: Any, members: int) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "k must be a positive integer"


def _rrf_constant_rule(value: Any, members: int) -> str | None:
    return None if _is_number(value) and value >= 0 else "k must be a number, at least 0"


def problems(
    name: str, members: Sequence[str], literals: Sequence[Any], kwargs: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    """Why ``name(members..., literals..., **kwargs)`` cannot combine, as (where, message)
    pairs: ``where`` is the keyword argument at fault, or None for the call itself.

    ``name`` must be registered.
    """
    entry = REGISTRY[name]
    rules = entry.meta.get("rules", {})
    positional = entry.meta.get("positional", ())
    found: list[tuple[str | None, str]] = []
    if (
        not entry.min_args <= len(members) <= entry.max_args
        or len(literals) != len(positional)
        or any(rules[p](v, len(members)) for p, v in zip(positional, literals, strict=True))
    ):
        found.append((None, f"{name} takes {entry.meta['usage']}"))
    for key, value in kwargs.items():
        if key not in entry.params:
            found.append((key, f"{name}() has no argument '{key}'"))
            continue
        why = rules[key](value, len(members))
        if why:
            found.append((key, why))
    return found


def _meta(output: Output, key: str, default: Any) -> Any:
    """A metadata item of the OUTPUT's combiner (``default`` for a plain step name)."""
    entry = REGISTRY.get(output.combiner)
    return default if entry is None else entry.meta.get(key, default)


def reads_scores(output: Output) -> bool:
    """Whether the OUTPUT weighs its members' confidence or class probabilities."""
    scores = _meta(output, "scores", False)
    return bool(scores(output.kwargs) if callable(scores) else scores)


def alike(output: Output) -> bool:
    """Whether the OUTPUT's members must answer the same kind of value."""
    return bool(_meta(output, "alike", False))


def extra_columns(output: Output) -> tuple[str, ...]:
    """Suffixes of the columns the OUTPUT adds beside ``R`` and ``R_confidence``."""
    return tuple(_meta(output, "extra", ()))


def combine(output: Output, members: Mapping[str, Member], index: pd.Index) -> Combined:
    """Applies the OUTPUT's combiner (or plain step) to the members' answers."""
    chosen = [members[m] for m in output.members]
    entry = REGISTRY.get(output.combiner)
    if entry is None:  # a plain step name: that step's answer
        (member,) = chosen
        return Combined(member.value, member.confidence, _no_errors(index))
    return entry.impl(chosen, output, index)


# ---------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so labels compare, hash and serialise plainly."""
    return value.item() if isinstance(value, np.generic) else value


def _weights(output: Output, members: Sequence[Member]) -> list[float]:
    weights = output.kwargs.get("weights")
    return [float(w) for w in weights] if weights else [1.0] * len(members)


def _no_errors(index: pd.Index) -> pd.Series:
    import pandas as pd

    return pd.Series(None, index=index, dtype=object)


def _result(
    index: pd.Index,
    values: list,
    confidence: list[float],
    errors: list[str | None],
    **extra: list,
) -> Combined:
    import pandas as pd

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


# ---------------------------------------------------------------- the combiners


@REGISTRY.register(
    "vote",
    min_args=1,
    max_args=MANY,
    params=("weights", "mode"),
    kind="same",
    meta={
        "usage": "one or more steps, weights = (...) and mode = 'hard' | 'soft'",
        "rules": {"weights": _weights_rule, "mode": _mode_rule},
        "scores": lambda kwargs: kwargs.get("mode", "hard") == "soft",
        "alike": True,
    },
)
def vote(members: Sequence[Member], output: Output, index: pd.Index) -> Combined:
    """Hard: each member's label counts its weight; soft: weighted mean probabilities.

    Ties go to the label named first (hard: by the earliest member that voted
    for it; soft: in the order classes first appear in the probabilities).
    """
    weights = _weights(output, members)
    if output.kwargs.get("mode", "hard") == "soft":
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


@REGISTRY.register(
    "mean",
    min_args=1,
    max_args=MANY,
    params=("weights",),
    kind="same",
    meta={
        "usage": "one or more steps and weights = (...)",
        "rules": {"weights": _weights_rule},
        "scores": True,
        "alike": True,
    },
)
def mean(members: Sequence[Member], output: Output, index: pd.Index) -> Combined:
    """The weighted mean of numeric answers; for classifiers, of class probabilities."""
    import pandas as pd

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


@REGISTRY.register(
    "max_confidence",
    min_args=1,
    max_args=MANY,
    kind="same",
    meta={"usage": "one or more steps", "scores": True, "extra": ("step",)},
)
def max_confidence(members: Sequence[Member], output: Output, index: pd.Index) -> Combined:
    """The answer of the member most sure of itself; a tie goes to the member named first."""
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


@REGISTRY.register(
    "top_k",
    min_args=2,
    max_args=2,
    kind="list",
    meta={
        "usage": "(items, scores, k) with a positive integer k",
        "positional": ("k",),
        "rules": {"k": _count_rule},
        "extra": ("scores",),
    },
)
def top_k(members: Sequence[Member], output: Output, index: pd.Index) -> Combined:
    """The ``k`` items with the highest scores (a list aligned with the items, or a dict
    item -> score); equal scores keep the items' order."""
    items, scores = members
    (k,) = output.literals
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


@REGISTRY.register(
    "rank_fusion",
    min_args=1,
    max_args=MANY,
    params=("k", "weights"),
    kind="list",
    meta={
        "usage": "one or more steps, k = (a number) and weights = (...)",
        "rules": {"k": _rrf_constant_rule, "weights": _weights_rule},
        "scores": True,
        "extra": ("scores",),
    },
)
def rank_fusion(members: Sequence[Member], output: Output, index: pd.Index) -> Combined:
    """Reciprocal rank fusion (Cormack et al. 2009): an item scores the sum over members
    of ``weight / (k + rank)``, ranks from 1. A member ranks a list answer in its order,
    a dict answer (item -> score) and a classifier's probabilities by descending score."""
    weights = _weights(output, members)
    k = float(output.kwargs.get("k", RRF_K))
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
