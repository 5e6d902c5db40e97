"""The fixed names of the language: the one list the checks and the transforms share."""

from __future__ import annotations

CLASSIFIER_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSOR_METRICS = ("r2", "mae", "rmse")
METRICS = CLASSIFIER_METRICS + REGRESSOR_METRICS

ENCODERS = ("onehot", "scale", "ordinal", "passthrough")

# Beam resource hints a HINTS clause may set (see apache_beam.transforms.resources).
HINTS = ("accelerator", "min_ram", "cpu_count")

COMBINERS = ("vote", "mean", "max_confidence", "top_k", "rank_fusion")

# name -> (min args, max args); the first argument is the column, if any.
AGGREGATES = {
    "count": (0, 1),
    "sum": (1, 1),
    "avg": (1, 1),
    "min": (1, 1),
    "max": (1, 1),
    "first": (1, 1),
    "last": (1, 1),
    "first_k": (2, 2),
    "last_k": (2, 2),
    "top_k": (2, 2),
    "count_distinct": (1, 1),
    "approx_count_distinct": (1, 1),
    "approx_percentile": (2, 2),
    "stddev": (1, 1),
    "variance": (1, 1),
}

# Scalar functions of the expression sublanguage: name -> (min args, max args).
FUNCTIONS = {
    "lower": (1, 1),
    "upper": (1, 1),
    "length": (1, 1),
    "abs": (1, 1),
    "coalesce": (1, 99),
    "round": (1, 2),
    "floor": (1, 1),
    "ceil": (1, 1),
    "trim": (1, 1),
    "concat": (1, 99),
    "substr": (2, 3),
    "greatest": (1, 99),
    "least": (1, 99),
}
