"""beam_dsl: a spec language and compiler for machine learning in Apache Beam pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__version__ = "0.1.0"


def load_model(path: str, *, trust: Sequence[str] = (), allow_pickle: bool = False) -> Any:
    """Loads a model file that TRAIN saved (or that a MODEL serves), in Python.

    The trust rules are MODEL's, in one place
    (:func:`beam_dsl.transforms.training.modelstore.load_model`): a ``.skops``
    file loads when every type it holds is one skops trusts by default or one
    named in ``trust`` (MODEL's ``TRUST`` clause), and a ``.pkl`` / ``.joblib``
    file, which can run code when loaded, only with ``allow_pickle=True``.
    Anything else raises :class:`~beam_dsl.transforms.training.modelstore.ModelStoreError`
    with the reason (the untrusted types, by name)::

        import beam_dsl
        model = beam_dsl.load_model("models/north.skops", trust=["sklearn.tree._tree.Tree"])
        model.predict(frame[model.feature_names_in_])
    """
    from beam_dsl.transforms.training import modelstore

    return modelstore.load_model(path, allow_pickle=allow_pickle, trusted=list(trust))
