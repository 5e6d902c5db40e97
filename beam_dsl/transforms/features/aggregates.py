"""The aggregate functions of FEATURES, as mergeable partial states over pandas frames.

Every aggregate keeps a *state* per group (an entity and a pane, later an
entity and a window) that can be built from events (:meth:`Aggregate.init`),
merged with the states of other groups (:meth:`Aggregate.merge`: panes from
different bundles, or the panes of one window) and turned into the feature's
value (:meth:`Aggregate.final`). Merging is exact for every aggregate but the
two sketches, whose merge is the sketch union.

States are columns of one *wide* frame (one row per group), except for the
aggregates that keep several rows per group (``first_k``, ``last_k``,
``top_k``, ``count_distinct``): they keep a *long* frame with the group's key
columns and one row per kept value.

All work is column-wise over a :class:`Groups` (integer group codes), so a
batch of events or of pane states costs a few numpy/pandas passes, not a
Python loop per row; only the two sketches loop over groups.

Orderings: ``first``/``last`` (and ``first_k``/``last_k``) order events by
event time, then by value, so ties at one instant are broken the same way on
every runner and in every bundle order.

This module declares the ``aggregates`` family: each aggregate class is
registered once, beside its implementation, with its arity, its literal
parameters (``k``, ``q``) and their :class:`Rule`, and its output kind. The
checks (``lint``) and :class:`~beam_dsl.ir.features.FeaturesConfig` read the
same registry, so adding an aggregate is one decorated class here. Output
kinds (:meth:`Aggregate.output_type`, :meth:`Aggregate.empty`):

* ``int``: an integer, 0 over an empty window (counts);
* ``float``: a float, null over an empty window;
* ``number``: an int for an int (or bool) argument, else a float; null when empty;
* ``same``: the argument's type; null when empty;
* ``list``: a list of the argument's values; ``[]`` when empty.

``meta``: ``numeric`` (the argument is read as a number: text is parsed and a
row whose value is not a number is an error) and ``rules`` (each parameter's
:class:`Rule`). Imports no Beam, and pandas only where it runs: ``lint``
reads this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import datasketches
import numpy as np

from beam_dsl.vocabulary import Registry

if TYPE_CHECKING:
    import pandas as pd

REGISTRY = Registry("aggregates")

HLL_LG_K = 12  # relative standard error 1.04 / sqrt(2**12) = 1.6%
KLL_K = 200  # normalized rank error 1.33% (99% confidence)

# The a-priori error bounds the documentation and tests state.
HLL_RELATIVE_ERROR = 1.04 / math.sqrt(2**HLL_LG_K)
KLL_RANK_ERROR = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)


class Groups:
    """Rows of a frame grouped by key columns: a code 0..n-1 per row, and each group's keys."""

    def __init__(self, frame: pd.DataFrame, by: Sequence[str]):
        by = list(by)
        if len(frame) == 0:
            self.codes = np.zeros(0, dtype=np.int64)
            self.n = 0
            self.keys = frame[by].reset_index(drop=True)
            return
        self.codes = frame.groupby(by, sort=False, dropna=False).ngroup().to_numpy(np.int64)
        self.n = int(self.codes.max()) + 1
        first = np.empty(self.n, dtype=np.int64)
        first[self.codes[::-1]] = np.arange(len(frame) - 1, -1, -1)
        self.keys = frame[by].iloc[first].reset_index(drop=True)

    @classmethod
    def of_codes(cls, codes: np.ndarray, keys: pd.DataFrame) -> Groups:
        """Groups already numbered: row i is in group ``codes[i]``, whose keys are ``keys`` row."""
        groups = cls.__new__(cls)
        groups.codes, groups.keys, groups.n = codes.astype(np.int64), keys, len(keys)
        return groups

    def count(self, mask: np.ndarray | None = None) -> np.ndarray:
        codes = self.codes if mask is None else self.codes[mask]
        return np.bincount(codes, minlength=self.n).astype(np.int64)

    def sum(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Sums per group (0 where a group has no rows); integers stay exact."""
        codes, values = (self.codes, values) if mask is None else (self.codes[mask], values[mask])
        if values.dtype.kind in "iub":
            out = np.zeros(self.n, dtype=np.int64)
            np.add.at(out, codes, values.astype(np.int64))
            return out
        return np.bincount(codes, weights=values.astype(np.float64), minlength=self.n)

    def reduce(self, values: Any, how: str, mask: np.ndarray | None = None) -> pd.Series:
        """``min`` / ``max`` per group over the rows in ``mask``; null where a group has none."""
        import pandas as pd

        array = np.asarray(values) if not isinstance(values, pd.Series) else values.to_numpy()
        codes = self.codes
        if mask is not None:
            array, codes = array[mask], codes[mask]
        if array.dtype.kind in "iuf":  # numbers: one numpy pass
            kind = array.dtype.kind
            if kind == "f":
                keep = ~np.isnan(array)
                array, codes = array[keep], codes[keep]
            wide = np.float64 if kind == "f" else np.int64
            info = np.finfo(wide) if kind == "f" else np.iinfo(wide)
            out = np.full(self.n, info.min if how == "max" else info.max, dtype=wide)
            (np.maximum if how == "max" else np.minimum).at(out, codes, array.astype(wide))
            seen = np.bincount(codes, minlength=self.n) > 0
            if seen.all():
                return pd.Series(out)
            return pd.Series(np.where(seen, out, np.nan))
        series = pd.Series(array)
        out = getattr(series.groupby(codes, sort=False), how)()
        return out.reindex(range(self.n)).reset_index(drop=True)

    def pick(self, t: np.ndarray, values: Any, mask: np.ndarray, last: bool) -> tuple:
        """Per group, the (time, value) that comes last (or first) in (time, value) order."""
        how = "max" if last else "min"
        best_t = self.reduce(t, how, mask).to_numpy(np.float64)
        at_best = mask & (t == best_t[self.codes])
        return best_t, self.reduce(values, how, at_best)


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Rule:
    """What a literal parameter (an argument after the column) must be."""

    text: str  # says it: "a positive integer"
    accepts: Callable[[Any], bool]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


POSITIVE_INT = Rule("a positive integer", lambda v: _number(v) and isinstance(v, int) and v > 0)
FRACTION = Rule("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)


# ---------------------------------------------------------------- aggregates


def empty_value(kind: str) -> Any:
    """An aggregate's value over a window with no matching event, by its output kind."""
    return 0 if kind == "int" else [] if kind == "list" else None


@dataclass
class Aggregate:
    """One SELECT item: ``func(args) [FILTER (WHERE filter)] AS alias``.

    ``arg_type`` is the Python type of the first argument (int, float, str,
    bool) or None for ``count(*)``. ``kind`` is the registered output kind.
    ``param`` is the second, literal argument (``k`` or ``q``) where the
    function has one. :func:`aggregate` builds one.
    """

    alias: str
    index: int
    arg_type: type | None
    kind: str
    param: Any = None

    long: ClassVar[bool] = False  # keeps a long frame of values rather than wide columns

    @property
    def prefix(self) -> str:
        return f"_a{self.index}"

    def output_type(self) -> Any:
        """The feature's schema type, by the output kind (see the module docstring)."""
        from beam_dsl.transforms.common.rows import optional  # Beam: not at module import

        if self.kind == "int":
            return int
        if self.kind == "list":
            return Sequence[self.arg_type]
        if self.kind == "number":
            return optional(int if self.arg_type in (int, bool) else float)
        return optional(float if self.kind == "float" else self.arg_type)

    def empty(self) -> Any:
        """The value over a window with no matching event."""
        return empty_value(self.kind)

    def init(self, groups: Groups, t: np.ndarray, v: np.ndarray, mask: np.ndarray) -> dict:
        raise NotImplementedError

    def merge(self, groups: Groups, states: pd.DataFrame) -> dict:
        raise NotImplementedError

    def final(self, states: pd.DataFrame) -> pd.Series:
        raise NotImplementedError

    def _col(self, name: str) -> str:
        return f"{self.prefix}_{name}"


@REGISTRY.register("count", min_args=0, max_args=1, kind="int")
class Count(Aggregate):
    def init(self, groups, t, v, mask):
        return {self._col("n"): groups.count(mask)}

    def merge(self, groups, states):
        return {self._col("n"): groups.sum(states[self._col("n")].to_numpy())}

    def final(self, states):
        return states[self._col("n")].astype(np.int64)


@REGISTRY.register("sum", min_args=1, max_args=1, kind="number", meta={"numeric": True})
class Sum(Aggregate):
    def init(self, groups, t, v, mask):
        return {self._col("s"): groups.sum(v, mask), self._col("n"): groups.count(mask)}

    def merge(self, groups, states):
        return {c: groups.sum(states[c].to_numpy()) for c in (self._col("s"), self._col("n"))}

    def final(self, states):
        s = states[self._col("s")]
        return s.where(states[self._col("n")] > 0)


@REGISTRY.register("avg", min_args=1, max_args=1, kind="float", meta={"numeric": True})
class Avg(Sum):
    def final(self, states):
        n = states[self._col("n")]
        return (states[self._col("s")] / n.where(n > 0)).astype(np.float64)


@REGISTRY.register("min", min_args=1, max_args=1, kind="same")
class Min(Aggregate):
    how = "min"

    def init(self, groups, t, v, mask):
        return {self._col("m"): groups.reduce(v, self.how, mask).to_numpy()}

    def merge(self, groups, states):
        column = states[self._col("m")]
        merged = groups.reduce(column.to_numpy(), self.how, column.notna().to_numpy())
        return {self._col("m"): merged.to_numpy()}

    def final(self, states):
        return states[self._col("m")]


@REGISTRY.register("max", min_args=1, max_args=1, kind="same")
class Max(Min):
    how = "max"


@REGISTRY.register("last", min_args=1, max_args=1, kind="same")
class Last(Aggregate):
    last = True

    def init(self, groups, t, v, mask):
        best_t, best_v = groups.pick(t, v, mask, self.last)
        return {self._col("t"): best_t, self._col("v"): best_v.to_numpy()}

    def merge(self, groups, states):
        t = states[self._col("t")].to_numpy(np.float64)
        return self.init(groups, t, states[self._col("v")].to_numpy(), ~np.isnan(t))

    def final(self, states):
        return states[self._col("v")]


@REGISTRY.register("first", min_args=1, max_args=1, kind="same")
class First(Last):
    last = False


@REGISTRY.register("variance", min_args=1, max_args=1, kind="float", meta={"numeric": True})
class Variance(Aggregate):
    """Sample variance (ddof = 1): count, mean and sum of squared deviations, merged exactly
    (Chan et al.) rather than through a sum of squares, which loses precision."""

    def init(self, groups, t, v, mask):
        n = groups.count(mask)
        values = np.where(mask, v.astype(np.float64), 0.0)
        mean = groups.sum(values) / np.maximum(n, 1)
        deviation = np.where(mask, values - mean[groups.codes], 0.0)
        return {self._col("n"): n, self._col("mean"): mean,
                self._col("m2"): groups.sum(deviation * deviation)}

    def merge(self, groups, states):
        n_i = states[self._col("n")].to_numpy(np.int64)
        mean_i = states[self._col("mean")].to_numpy(np.float64)
        n = groups.sum(n_i)
        mean = groups.sum(n_i * mean_i) / np.maximum(n, 1)
        spread = n_i * (mean_i - mean[groups.codes]) ** 2
        m2 = groups.sum(states[self._col("m2")].to_numpy(np.float64) + spread)
        return {self._col("n"): n, self._col("mean"): mean, self._col("m2"): m2}

    def final(self, states):
        n = states[self._col("n")]
        return (states[self._col("m2")] / (n - 1).where(n > 1)).astype(np.float64)


@REGISTRY.register("stddev", min_args=1, max_args=1, kind="float", meta={"numeric": True})
class Stddev(Variance):
    def final(self, states):
        return np.sqrt(super().final(states))


class _Sketch(Aggregate):
    """A DataSketches sketch per group, serialized (so states pickle and merge anywhere)."""

    def _new(self):
        raise NotImplementedError

    def _deserialize(self, data: bytes):
        raise NotImplementedError

    def _add_values(self, sketch, values: np.ndarray) -> None:
        raise NotImplementedError

    def _serialize(self, sketch) -> bytes:
        raise NotImplementedError

    def _union(self, blobs: Sequence[bytes]) -> bytes:
        raise NotImplementedError

    def init(self, groups, t, v, mask):
        out = np.full(groups.n, None, dtype=object)
        codes, values = groups.codes[mask], v[mask]
        if len(codes):
            order = np.argsort(codes, kind="stable")
            codes, values = codes[order], values[order]
            bounds = np.flatnonzero(np.diff(codes)) + 1
            for group, chunk in zip(codes[np.r_[0, bounds]], np.split(values, bounds),
                                    strict=True):
                sketch = self._new()
                self._add_values(sketch, chunk)
                out[group] = self._serialize(sketch)
        return {self._col("sk"): out}

    def merge(self, groups, states):
        blobs = states[self._col("sk")].to_numpy()
        members: list[list[bytes]] = [[] for _ in range(groups.n)]
        for code, blob in zip(groups.codes, blobs, strict=True):
            if blob is not None:
                members[code].append(blob)
        out = np.full(groups.n, None, dtype=object)
        for group, parts in enumerate(members):
            if parts:
                out[group] = parts[0] if len(parts) == 1 else self._union(parts)
        return {self._col("sk"): out}


@REGISTRY.register("approx_count_distinct", min_args=1, max_args=1, kind="int")
class ApproxCountDistinct(_Sketch):
    """HyperLogLog (lg_k = 12, HLL_8): relative standard error 1.6%."""

    def _new(self):
        return datasketches.hll_sketch(HLL_LG_K, datasketches.tgt_hll_type.HLL_8)

    def _add_values(self, sketch, values):
        for value in values:
            sketch.update(value.item() if isinstance(value, np.generic) else value)

    def _serialize(self, sketch):
        return sketch.serialize_compact()

    def _union(self, blobs):
        union = datasketches.hll_union(HLL_LG_K)
        for blob in blobs:
            union.update(datasketches.hll_sketch.deserialize(blob))
        return union.get_result(datasketches.tgt_hll_type.HLL_8).serialize_compact()

    def final(self, states):
        return states[self._col("sk")].map(
            lambda b: 0 if b is None else int(round(datasketches.hll_sketch.deserialize(b)
                                                    .get_estimate()))
        ).astype(np.int64)


@REGISTRY.register("approx_percentile", min_args=2, max_args=2, params=("q",), kind="float",
                   meta={"numeric": True, "rules": {"q": FRACTION}})
class ApproxPercentile(_Sketch):
    """A KLL sketch of doubles (k = 200): normalized rank error 1.33%."""

    def _new(self):
        return datasketches.kll_doubles_sketch(KLL_K)

    def _add_values(self, sketch, values):
        sketch.update(values.astype(np.float64))

    def _serialize(self, sketch):
        return sketch.serialize()

    def _union(self, blobs):
        sketch = datasketches.kll_doubles_sketch.deserialize(blobs[0])
        for blob in blobs[1:]:
            sketch.merge(datasketches.kll_doubles_sketch.deserialize(blob))
        return sketch.serialize()

    def final(self, states):
        q = float(self.param)
        return states[self._col("sk")].map(
            lambda b: None if b is None else
            datasketches.kll_doubles_sketch.deserialize(b).get_quantile(q)
        ).astype("float64")


class _Kept(Aggregate):
    """Keeps values in a long frame: ``key columns + _t (event ms) + _v``, a few rows per group."""

    long = True

    def init_long(self, keys: pd.DataFrame, t: np.ndarray, v: np.ndarray) -> pd.DataFrame:
        frame = keys.reset_index(drop=True).assign(_t=t, _v=v)
        return self.merge_long(frame, list(keys.columns))

    def merge_long(self, frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
        raise NotImplementedError

    def final_long(self, frame: pd.DataFrame, by: list[str]) -> pd.Series:
        """The feature per group of ``by`` (a Series indexed by the key tuples)."""
        raise NotImplementedError


class _KeptInOrder(_Kept):
    """``first_k`` / ``last_k``: the k earliest / latest values by (event time, value)."""

    latest: ClassVar[bool]

    def _sorted(self, frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
        return frame.sort_values([*by, "_t", "_v"], ascending=True, kind="stable")

    def merge_long(self, frame, by):
        ordered = self._sorted(frame, by).groupby(by, sort=False, dropna=False)
        kept = ordered.tail(self.param) if self.latest else ordered.head(self.param)
        return kept.reset_index(drop=True)

    def final_long(self, frame, by):
        ordered = self._sorted(frame, by)
        if self.latest:
            ordered = ordered.iloc[::-1]  # most recent first
        return ordered.groupby(by, sort=False, dropna=False)["_v"].agg(list)


@REGISTRY.register("first_k", min_args=2, max_args=2, params=("k",), kind="list",
                   meta={"rules": {"k": POSITIVE_INT}})
class FirstK(_KeptInOrder):
    latest = False


@REGISTRY.register("last_k", min_args=2, max_args=2, params=("k",), kind="list",
                   meta={"rules": {"k": POSITIVE_INT}})
class LastK(_KeptInOrder):
    latest = True


@REGISTRY.register("top_k", min_args=2, max_args=2, params=("k",), kind="list",
                   meta={"rules": {"k": POSITIVE_INT}})
class TopK(_Kept):
    """The k largest values, largest first (duplicates kept)."""

    def merge_long(self, frame, by):
        ordered = frame.sort_values([*by, "_v"], ascending=[True] * len(by) + [False],
                                    kind="stable")
        return ordered.groupby(by, sort=False, dropna=False).head(self.param) \
            .reset_index(drop=True)

    def final_long(self, frame, by):
        return self.merge_long(frame, by).groupby(by, sort=False, dropna=False)["_v"].agg(list)


@REGISTRY.register("count_distinct", min_args=1, max_args=1, kind="int")
class CountDistinct(_Kept):
    """Exact: keeps each distinct value once per group."""

    def merge_long(self, frame, by):
        return frame.drop_duplicates([*by, "_v"]).reset_index(drop=True)

    def final_long(self, frame, by):
        return self.merge_long(frame, by).groupby(by, sort=False, dropna=False)["_v"].size()


def aggregate(func: str, alias: str, index: int, arg_type: type | None, param: Any = None
              ) -> Aggregate:
    """The registered aggregate ``func`` for one SELECT item (its arguments checked by
    :meth:`~beam_dsl.ir.features.FeaturesConfig.validate`)."""
    entry = REGISTRY[func]
    if entry.meta.get("numeric") and arg_type not in (int, float, bool):
        arg_type = float  # text is parsed; a row whose value is not a number is an error
    return entry.impl(alias, index, arg_type, entry.kind, param)
