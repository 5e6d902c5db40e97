"""The scalar functions of the expression sublanguage (the ``functions`` family).

Each function is registered once, with its arity and its output kind, beside
its implementation: a function of pandas Series (one per argument, literals
broadcast to a column) returning a Series. The checks read the same registry
through :func:`beam_dsl.vocabulary.family` (arity, "unknown function"),
:mod:`~beam_dsl.transforms.common.expr` calls the implementations, and
FEATURES types an expression's value by the kind. Adding a function is one
decorated definition here.

Output kinds: ``str``, ``int``, ``float``, or ``same`` (the first
argument's type).

Imports no Beam and no pandas at module import: ``lint`` reads this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from beam_dsl.vocabulary import Registry

if TYPE_CHECKING:
    import pandas as pd

REGISTRY = Registry("functions")

MANY = 99  # the most arguments a variadic function takes


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string")


@REGISTRY.register("lower", min_args=1, max_args=1, kind="str")
def lower(s: pd.Series) -> pd.Series:
    return _text(s).str.lower()


@REGISTRY.register("upper", min_args=1, max_args=1, kind="str")
def upper(s: pd.Series) -> pd.Series:
    return _text(s).str.upper()


@REGISTRY.register("trim", min_args=1, max_args=1, kind="str")
def trim(s: pd.Series) -> pd.Series:
    return _text(s).str.strip()


@REGISTRY.register("length", min_args=1, max_args=1, kind="int")
def length(s: pd.Series) -> pd.Series:
    return _text(s).str.len()


@REGISTRY.register("abs", min_args=1, max_args=1, kind="same")
def absolute(s: pd.Series) -> pd.Series:
    return s.abs()


@REGISTRY.register("floor", min_args=1, max_args=1, kind="float")
def floor(s: pd.Series) -> pd.Series:
    return np.floor(s)


@REGISTRY.register("ceil", min_args=1, max_args=1, kind="float")
def ceil(s: pd.Series) -> pd.Series:
    return np.ceil(s)


@REGISTRY.register("round", min_args=1, max_args=2, kind="same")
def round_to(s: pd.Series, digits: pd.Series | None = None) -> pd.Series:
    """``round(x)`` to an integral value, ``round(x, d)`` to ``d`` decimals (a literal)."""
    return s.round(0 if digits is None else int(digits.iloc[0]))


@REGISTRY.register("coalesce", min_args=1, max_args=MANY, kind="same")
def coalesce(*args: pd.Series) -> pd.Series:
    """The first non-null argument, per row."""
    out = args[0]
    for arg in args[1:]:
        out = out.where(out.notna(), arg)
    return out


@REGISTRY.register("concat", min_args=1, max_args=MANY, kind="str")
def concat(*args: pd.Series) -> pd.Series:
    """The arguments as text, joined; a null argument counts as empty text."""
    import pandas as pd

    return pd.concat([_text(s) for s in args], axis=1).fillna("").agg("".join, axis=1)


@REGISTRY.register("substr", min_args=2, max_args=3, kind="str")
def substr(s: pd.Series, start: pd.Series, count: pd.Series | None = None) -> pd.Series:
    """``count`` characters (all, without it) from the 1-based position ``start``."""
    import pandas as pd

    counts = count if count is not None else [None] * len(s)
    return pd.Series(
        [
            None if pd.isna(v) else str(v)[int(b) - 1 : None if n is None else int(b) - 1 + int(n)]
            for v, b, n in zip(s, start, counts, strict=True)
        ],
        index=s.index,
    )


@REGISTRY.register("greatest", min_args=1, max_args=MANY, kind="same")
def greatest(*args: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.concat(args, axis=1).max(axis=1)


@REGISTRY.register("least", min_args=1, max_args=MANY, kind="same")
def least(*args: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.concat(args, axis=1).min(axis=1)
