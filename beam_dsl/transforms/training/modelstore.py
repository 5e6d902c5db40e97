"""Model files on disk: safe per-key paths, atomic writes, manifests, safe loading.

Layout for ``SAVE TO 'models/income/{key}.skops'``::

    models/income/Bachelors.skops
    models/income/Some-college.skops
    models/income/_all.skops.manifest.json    # manifest_path(template)

The manifest records, per key, the model file (relative to the manifest),
its sha256, rows and metrics, and whether it was promoted (passed GATE).
Inference reads it at run time to learn the key set; models that failed the
gate are listed but never written where inference looks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

MANIFEST_VERSION = 1
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class ModelStoreError(ValueError):
    """A model file or manifest that cannot be used, with the reason."""


def safe_key(values: Sequence[Any]) -> str:
    """A file-name-safe, injective name for a key tuple.

    Letters, digits, ``_`` and ``-`` stay; every other byte (``/``, ``.``,
    spaces, ``+``) is %-encoded, so ``../x`` can never leave the directory.
    Several key columns are joined with ``+``.
    """

    def one(value: Any) -> str:
        text = "" if value is None else str(value)
        encoded = "".join(
            chr(b) if re.match(rb"[A-Za-z0-9_-]", bytes([b])) else f"%{b:02X}"
            for b in text.encode("utf-8")
        )
        return encoded or "%00"

    return "+".join(one(v) for v in values)


def resolve(template: str, key: Sequence[Any] | None) -> str:
    """The model path for ``key``; refuses a result outside the template's directory."""
    if "{key}" not in template:
        return template
    if key is None:
        raise ModelStoreError(f"path '{template}' needs a key")
    path = template.replace("{key}", safe_key(key))
    base = os.path.abspath(os.path.dirname(template.split("{key}")[0]) or ".")
    if os.path.commonpath([base, os.path.abspath(path)]) != base:  # pragma: no cover
        raise ModelStoreError(f"key {key!r} resolves outside '{base}'")
    return path


def manifest_path(template: str) -> str:
    return template.replace("{key}", "_all") + ".manifest.json"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: str, write) -> None:
    """Writes through ``write(tmp_path)`` then renames, so readers never see half a file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: Any, path: str) -> str:
    """Writes ``model`` atomically in the format the suffix names; returns its sha256."""
    if path.endswith(SKOPS_SUFFIXES):
        import skops.io

        _atomic_write(path, lambda tmp: skops.io.dump(model, tmp))
    elif path.endswith(PICKLE_SUFFIXES):
        import joblib

        _atomic_write(path, lambda tmp: joblib.dump(model, tmp))
    else:
        raise ModelStoreError(f"'{path}': unknown model format; use .skops (safe) or .pkl/.joblib")
    return file_sha256(path)


# The scikit-learn types beam_dsl vouches for: those that TRAIN's pipelines
# hold (the encoders, and the internals of tree, boosting and neighbour
# estimators) where skops does not trust them by default. They are data
# structures rebuilt from arrays, which run no code of the file's choosing
# (skops leaves Tree out of its defaults because a forged one can crash the
# process that predicts with it: a forged file is still a denial of service).
VOUCHED_TYPES = (
    "sklearn.pipeline.Pipeline",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
)


class UntrustedTypes(ModelStoreError):
    """A skops file holding types that are not trusted (``types``)."""

    def __init__(self, path: str, types: Sequence[str]):
        self.types = list(types)
        super().__init__(f"'{path}' holds types that are not trusted: {', '.join(self.types)}")


def load_model(path: str, allow_pickle: bool = False, trusted: Sequence[str] = ()) -> Any:
    """Loads a model file.

    skops files load trusting skops' default types, :data:`VOUCHED_TYPES` and
    ``trusted`` (a MODEL's TRUST), and nothing else: no file beside the model
    (a manifest) widens trust, so writing to the model folder never makes
    code run. Pickle and joblib files can run arbitrary code when loaded, so
    they need ``allow_pickle=True``.
    """
    if not os.path.exists(path):
        raise ModelStoreError(f"model file '{path}' does not exist")
    if path.endswith(SKOPS_SUFFIXES):
        import skops.io

        allowed = [*VOUCHED_TYPES, *trusted]
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in allowed]
        if untrusted:
            raise UntrustedTypes(path, untrusted)
        return skops.io.load(path, trusted=allowed)
    if path.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            raise ModelStoreError(
                f"'{path}' is a pickle file, which can run code when loaded; "
                "pass allow_pickle to load it, or save models as .skops"
            )
        import joblib

        return joblib.load(path)
    raise ModelStoreError(f"'{path}': unknown model format")


def write_manifest(template: str, manifest: dict[str, Any]) -> str:
    path = manifest_path(template)
    text = json.dumps({"version": MANIFEST_VERSION, **manifest}, indent=2, sort_keys=True)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text + "\n")

    _atomic_write(path, write)
    return path


def read_manifest(template: str) -> dict[str, Any] | None:
    """The manifest beside ``template``'s models, or None where TRAIN wrote none.

    Its shape: ``{"version": 1, "models": [{"key": [values], "file": name
    relative to the manifest, "sha256": ..., "rows": n, "metrics": {...},
    "promoted": bool}, ...]}``.
    """
    path = manifest_path(template)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def promoted_models(template: str) -> dict[str, str] | None:
    """The promoted models the manifest lists, path by :func:`safe_key` of the key; None
    where there is no manifest."""
    manifest = read_manifest(template)
    if manifest is None:
        return None
    directory = os.path.dirname(manifest_path(template))
    return {
        safe_key(entry["key"]): os.path.join(directory, entry["file"])
        for entry in manifest.get("models", [])
        if entry["promoted"]
    }
