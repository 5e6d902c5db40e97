"""TRAIN's ENCODE: the ``encoders`` family (:mod:`beam_dsl.vocabulary`).

Each encoder is one function registered here that builds its scikit-learn
transformer (or ``"passthrough"``); ``kind`` says how TRAIN reads the columns
it encodes: ``number`` (always parsed as numbers) or ``any`` (as the input
schema types them). The saved model's ColumnTransformer has one step per
encoder in use, in registration order. Adding an encoder is one decorated
function below: lint, the IR's checks and the saved Pipeline read this
registry.

Beam-free and scikit-learn-free at import time (lint reads the registry).
"""

from __future__ import annotations

from typing import Any

from beam_dsl.vocabulary import Registry

REGISTRY = Registry("encoders")


def names() -> tuple[str, ...]:
    """Every encoder, in the order the saved ColumnTransformer applies them."""
    return REGISTRY.names()


def default(kind: str) -> str:
    """The encoder of a feature ENCODE does not name: text is one-hot encoded, numbers
    pass through."""
    return "onehot" if kind == "text" else "passthrough"


def reads_numbers(encoder: str) -> bool:
    """Whether the columns ``encoder`` encodes are read as numbers whatever their type."""
    return REGISTRY[encoder].kind == "number"


def build(encoder: str) -> Any:
    """A fresh, unfitted transformer for ``encoder``."""
    return REGISTRY[encoder].impl()


@REGISTRY.register("onehot", kind="any")
def onehot() -> Any:
    """One column per category; categories unseen in training encode as all zeros."""
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(handle_unknown="ignore")


@REGISTRY.register("ordinal", kind="any")
def ordinal() -> Any:
    """One integer per category; categories unseen in training encode as -1."""
    from sklearn.preprocessing import OrdinalEncoder

    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)


@REGISTRY.register("scale", kind="number")
def scale() -> Any:
    """Zero mean and unit variance (the training rows')."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


@REGISTRY.register("passthrough", kind="any")
def passthrough() -> Any:
    """The column as it is."""
    return "passthrough"
