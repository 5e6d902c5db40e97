"""The per-key work of TRAIN, free of Beam: the estimator and its task, typing columns,
the holdout split, fitting, scoring, gating and saving one key's model.

:mod:`beam_dsl.transforms.training.transform` wires these into a Beam
pipeline; they are plain functions over pandas frames so that they can be
tested, profiled and run in worker processes on their own. Metrics and encoders
are their families' (:mod:`~beam_dsl.transforms.training.metrics`,
:mod:`~beam_dsl.transforms.training.encoders`). Semantics are described in
:mod:`beam_dsl.transforms.training.transform`.
"""

import hashlib
import importlib
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from beam_dsl.dsl import pyref
from beam_dsl.ir.train import ROW_COUNTS, TrainConfig
from beam_dsl.transforms.common import expr
from beam_dsl.transforms.common.csvfile import CsvFile, Part, read_part
from beam_dsl.transforms.training import encoders, metrics, modelstore

ESTIMATOR_PACKAGES = ("sklearn.", "xgboost.", "lightgbm.")
# The encoded matrix stays sparse only when it is mostly zeros: trees fit about
# 1.5x faster on dense input (measured on the training benchmark's data).
SPARSE_THRESHOLD = 0.05


def import_estimator(config: TrainConfig) -> type:
    """The estimator class USING names; E431 if it cannot be imported or cannot fit/predict."""
    dotted = config.estimator.callable
    module_name, _, attr = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError) as e:
        raise config.error("E431", f"cannot import estimator '{dotted}': {e}") from e
    if not (
        isinstance(cls, type)
        and callable(getattr(cls, "fit", None))
        and callable(getattr(cls, "predict", None))
    ):
        raise config.error(
            "E431",
            f"'{dotted}' is not an estimator class with fit and predict",
            hint=f"name a class under {', '.join(p[:-1] for p in ESTIMATOR_PACKAGES)}, "
            "or any importable class with fit and predict",
        )
    return cls


def build_estimator(config: TrainConfig) -> Any:
    """An instance of the USING call; E431."""
    cls = import_estimator(config)
    try:
        return cls(*config.estimator.args, **config.estimator.kwargs)
    except TypeError as e:
        raise config.error("E431", f"bad arguments for the estimator: {e}") from e


def task_from_source(config: TrainConfig) -> str | None:
    """The task of a scikit-learn estimator as its installed source shows it
    (:mod:`beam_dsl.dsl.pyref`), without importing scikit-learn (most of a second): where
    the source shows the class, a classifier or regressor, whose constructor takes USING's
    keywords. None where the source leaves any of that unsure: importing decides."""
    call = config.estimator
    if not call.callable.startswith("sklearn.") or call.args:
        return None
    info = pyref.resolve(call.callable)
    if not isinstance(info, pyref.ClassInfo) or info.task is None or info.params is None:
        return None
    return info.task if set(call.kwargs) <= info.params else None


def _imported_task(config: TrainConfig) -> str:
    """The estimator's task, from the class imported and built; E431/E432."""
    from sklearn.base import is_classifier, is_regressor

    estimator = build_estimator(config)
    if is_classifier(estimator):
        return "classification"
    if is_regressor(estimator):
        return "regression"
    raise config.error(
        "E432", f"'{config.estimator.callable}' is neither a classifier nor a regressor",
        hint="estimators should inherit sklearn's ClassifierMixin or RegressorMixin",
    )


def resolve_task(config: TrainConfig) -> tuple[str, bool]:
    """The estimator's task (``classification`` or ``regression``), checked against the
    metrics and GATE, and whether this process imported the estimator's class to learn it
    (not where :func:`task_from_source` knew it); E431/E432."""
    task = task_from_source(config)
    imported = task is None
    if imported:
        task = _imported_task(config)
    scored = config.metrics or metrics.defaults()  # without METRICS, GATE may read either
    gated = [n for n in sorted(expr.columns_of(config.gate)) if n in scored]
    for metric in [*config.metrics, *gated]:
        if metric not in metrics.names(task):
            raise config.error(
                "E432", f"metric '{metric}' does not apply to {task}",
                hint=f"{task} metrics: {', '.join(metrics.names(task))}",
            )
    return task, imported


# ---------------------------------------------------------------- the resolved plan


@dataclass(frozen=True)
class Plan:
    """A TRAIN config resolved against its input schema and task: what every stage needs."""

    config: TrainConfig
    task: str  # classification | regression
    columns: tuple[str, ...]  # the input's fields, in order
    per_types: tuple[type, ...]  # str, int, float or bool: the key's values and output fields
    features: tuple[str, ...]
    feature_kinds: Mapping[str, str]  # column -> 'number' | 'text': how values are read
    encoders: Mapping[str, str]  # column -> its encoder (the encoders family)
    label_type: type  # str, int, float or bool
    metrics: tuple[str, ...]  # METRICS, or the task's default
    run: str  # this run's id in the model store (its staging folder)
    # Whether the run's process imported the estimator's class (resolve_task): it then
    # builds the estimator and sends it with each key; else each fit builds it from USING.
    estimator_imported: bool = True

    def make_estimator(self) -> Any:
        return build_estimator(self.config)

    def make_pipeline(self, estimator: Any | None) -> Any:
        """The saved model: encoders for the raw feature columns, then a fresh copy of
        ``estimator`` (or a new estimator built from USING, where None)."""
        from sklearn.base import clone
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        steps = []
        for encoder in encoders.names():
            columns = [c for c in self.features if self.encoders[c] == encoder]
            if columns:
                steps.append((encoder, encoders.build(encoder), columns))
        encode = ColumnTransformer(steps, sparse_threshold=SPARSE_THRESHOLD)
        model = clone(estimator) if estimator is not None else build_estimator(self.config)
        return Pipeline([("encode", encode), ("model", model)])

    def manifest_header(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": c.name,
            "per": list(c.per),
            "features": list(self.features),
            "feature_types": {f: self.feature_kinds[f] for f in self.features},
            "label": c.label,
            "task": self.task,
            "estimator": c.estimator.callable,
            "metrics": list(self.metrics),
            "template": c.save_to,
        }


# ---------------------------------------------------------------- reading columns


def _parse(values: pd.Series, to: type) -> tuple[pd.Series, pd.Series, pd.Series | None]:
    """``values`` read as ``to``: (parsed values, missing mask, unparsable mask or None)."""
    missing = values.isna()
    if to is str:
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
            "string", "empty"
        ):
            return values, missing, None  # text already (a CSV's text column)
        text = values.astype(object)
        if not isinstance(values.dtype, pd.StringDtype):  # numbers in a text column
            text = text.where(missing, values.astype(str))
        return text, missing, None
    if pd.api.types.is_numeric_dtype(values.dtype):  # already numbers: nothing to parse
        numbers, bad = values.astype("float64"), None
    else:
        numbers = pd.to_numeric(values.astype(object), errors="coerce").astype("float64")
        bad = ~missing & numbers.isna()
    infinite = ~missing & np.isinf(numbers)  # inf and -inf: no estimator can use them
    if infinite.any():
        bad = infinite if bad is None else bad | infinite
    if to is float:
        return numbers, missing, bad
    fractional = ~missing & (numbers != np.floor(numbers))
    if to is int and fractional.any():
        bad = fractional if bad is None else bad | fractional
    usable = numbers.where(~missing if bad is None else ~(missing | bad), 0)
    return (usable.astype("int64") if to is int else usable != 0), missing, bad


def prepare_frame(plan: Plan, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Types the PER, label and feature columns of ``frame`` as the plan reads them.

    Returns the typed columns and, per row, why it cannot be used (None when
    it can). The first problem found is the reason: PER, then label, then
    features, each in order.
    """
    reasons = pd.Series(None, index=frame.index, dtype=object)
    typed: dict[str, pd.Series] = {}

    def check(column: str, what: str, to: type) -> None:
        nonlocal reasons
        parsed, missing, bad = _parse(frame[column], to)
        typed[column] = parsed
        has_missing, has_bad = missing.any(), bad is not None and bad.any()
        if not (has_missing or has_bad):  # most columns of most frames
            return
        free = reasons.isna()
        if has_missing:
            reasons = reasons.mask(free & missing, f"missing {what} '{column}'")
        if has_bad:
            shown = frame[column].astype(str).map(repr)
            why = np.where(np.isinf(pd.to_numeric(parsed, errors="coerce")),
                           f"not a finite number: {what} '{column}': ",
                           f"unparsable {what} '{column}': ")
            reasons = reasons.mask(free & bad, why + shown)

    for column, to in zip(plan.config.per, plan.per_types, strict=True):
        check(column, "PER column", to)
    check(plan.config.label, "label", plan.label_type)
    for column in plan.features:
        check(column, "feature", float if plan.feature_kinds[column] == "number" else str)
    return pd.DataFrame(typed, index=frame.index), reasons


@dataclass
class Prepared:
    """What Prepare makes of a chunk of input rows (:func:`prepare_chunk`)."""

    rows: int  # rows in
    filtered: int  # rows WHERE dropped
    bad: pd.DataFrame  # the input rows that cannot be used, as they came
    reasons: pd.Series  # why, one per bad row
    labels: set  # the classes among the usable rows' labels (none for a regressor)
    parts: list[tuple[tuple, bytes]]  # (key, its usable rows packed), one per key


def prepare_chunk(plan: Plan, frame: pd.DataFrame) -> Prepared:
    """WHERE, typing and the split by key of a chunk of input rows; free of Beam, so that
    a worker process can prepare one chunk while the run's process reads the next."""
    rows, filtered = len(frame), 0
    if plan.config.where is not None:
        keep = expr.mask(plan.config.where, frame)
        filtered = int((~keep).sum())
        frame = frame[keep]
    typed, reasons = prepare_frame(plan, frame)
    bad = reasons.notna()
    if bad.any():
        typed = typed[~bad]
    label = plan.config.label
    labels = set(typed[label].unique().tolist()) if plan.task == "classification" else set()
    return Prepared(rows, filtered, frame[bad], reasons[bad], labels, _parts(plan, typed))


def read_and_prepare(plan: Plan, csv: CsvFile, part: Part, lines: int) -> Prepared:
    """A part of a CSV file read as Beam's ReadFromCsv reads it
    (:func:`~beam_dsl.transforms.common.csvfile.read_part`), then prepared as one chunk;
    in a worker process, where TRAIN reads its input file itself."""
    frames = read_part(csv, part, lines)
    return prepare_chunk(plan, pd.concat(frames, ignore_index=True) if len(frames) > 1
                         else frames[0])


def _parts(plan: Plan, typed: pd.DataFrame) -> list[tuple[tuple, bytes]]:
    """The usable rows of a chunk (``typed``) split by key, each key's packed (:func:`pack`):
    their holdout hashes and their feature and label columns, in the plan's order."""
    columns = [_coded(typed[n]) for n in [*plan.features, plan.config.label]]
    hashes = row_hashes(pd.DataFrame({i: _values(c) for i, c in enumerate(columns)},
                                     copy=False), plan.config.seed)
    if not plan.config.per:
        return [((), pack(hashes, columns))]
    groups = typed.groupby([typed[c] for c in plan.config.per], sort=False).indices
    if not groups:
        return []
    # The rows key after key, so that each key's are a slice of every column.
    order = np.concatenate(list(groups.values()))
    hashes, columns = hashes[order], [_take(c, order) for c in columns]
    ends = np.cumsum([len(rows) for rows in groups.values()]).tolist()
    return [
        (tuple(_plain(k) for k in (key if len(plan.config.per) > 1 else (key,))),
         pack(hashes[start:end], [_take(c, slice(start, end)) for c in columns]))
        for key, start, end in zip(groups, [0, *ends], ends, strict=False)
    ]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# A column of a chunk: its values, or a text column's distinct values and each row's code.
Column = np.ndarray | tuple[np.ndarray, np.ndarray]


def _coded(values: pd.Series) -> Column:
    """A chunk's column as parts carry it: text as its distinct values and codes."""
    if values.dtype != object:
        return values.to_numpy()
    codes, distinct = pd.factorize(values.to_numpy())
    if len(codes) and codes.min() < 0:  # a missing value (none in usable rows): as it is
        return values.to_numpy()
    return distinct, codes.astype(np.min_scalar_type(max(len(distinct) - 1, 0)))


def _take(column: Column, rows: np.ndarray | slice) -> Column:
    if isinstance(column, tuple):
        return column[0], column[1][rows]
    return column[rows]


def _values(column: Column) -> Any:
    """A column's values (a text column's as a Categorical, which hashes as its values)."""
    if not isinstance(column, tuple):
        return column
    return pd.Categorical.from_codes(column[1], pd.Index(column[0], dtype=object))


def pack(hashes: np.ndarray, columns: Sequence[Column]) -> bytes:
    """Some of a key's rows as they travel from Prepare to the key's fit: their holdout
    hashes (:func:`row_hashes`) and their feature and label columns, pickled once, by the
    process that prepared them, so that the shuffle and the trip to a worker process move
    bytes; :func:`unpack` joins a key's parts. A key's rows come in a part per chunk, so
    parts are many and small: frames cost a fixed ~0.2 ms each to unpickle and join, numpy
    arrays ~15 us each to pickle, and strings a pickle operation each. So numbers and
    codes go as bytes, a text column's distinct values as a list (its values themselves
    where it has more distinct values than the part has rows: a column of ids, say)."""
    flat = []
    for column in columns:
        if isinstance(column, tuple) and len(column[0]) > len(column[1]):
            column = column[0][column[1]]
        if isinstance(column, tuple):
            flat.append((column[0].tolist(), column[1].dtype.str, column[1].tobytes()))
        elif column.dtype == object:
            flat.append((column.tolist(),))
        else:
            flat.append((column.dtype.str, column.tobytes()))
    return pickle.dumps((hashes.tobytes(), flat), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(plan: Plan, parts: Sequence[bytes]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A key's rows from its parts (:func:`pack`, this run's own bytes): their holdout
    hashes and their columns' values by name."""
    loaded = [pickle.loads(part) for part in parts]
    hashes = np.concatenate([np.frombuffer(h, np.uint64) for h, _ in loaded])
    columns = [np.concatenate([_array(c) for c in column])
               for column in zip(*(c for _, c in loaded), strict=True)]
    return hashes, dict(zip([*plan.features, plan.config.label], columns, strict=True))


def _array(flat: tuple) -> np.ndarray:
    """A part's column from what :func:`pack` made of it."""
    if len(flat) == 2:  # numbers
        return np.frombuffer(flat[1], flat[0])
    values = np.empty(len(flat[0]), dtype=object)
    values[:] = flat[0]
    return values if len(flat) == 1 else values[np.frombuffer(flat[2], flat[1])]


# ---------------------------------------------------------------- holdout, one key


def _seed_key(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()[:16]


def row_hashes(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded hash of each row's values (its columns in order), the holdout's order: the
    same for a row whatever rows are hashed with it, so Prepare hashes whole chunks."""
    return pd.util.hash_pandas_object(frame, index=False, hash_key=_seed_key(seed)).to_numpy()


def holdout_rows(hashes: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) positions: rows ordered by their hashes (:func:`row_hashes`; ties
    in arrival order), the first ``fraction`` held out. At least one row trains."""
    order = np.argsort(hashes, kind="stable")
    held = min(int(round(len(hashes) * fraction)), max(len(hashes) - 1, 0))
    return order[held:], order[:held]


def split_holdout(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): rows ordered by a seeded hash of their values, the first held out.

    The order depends only on the values of ``frame``'s columns and the seed,
    so the split is the same however rows arrived. At least one row trains.
    """
    train, held = holdout_rows(row_hashes(frame, seed), fraction)
    return frame.iloc[train], frame.iloc[held]


def fit_key(
    plan: Plan, estimator: Any | None, key: tuple, parts: Sequence[bytes],
    classes: Sequence[Any],
) -> dict[str, Any]:
    """Trains (a copy of ``estimator``, or one built from USING where None), scores and
    gates one key's model over its rows (``parts``, from :func:`pack`); returns its result:
    ``key``, ``rows`` and
    either ``skipped`` (the reason) or ``train_rows``, ``holdout_rows``, ``metrics``,
    ``promoted``, ``file``, ``sha256``, ``trusted_types`` and, for a promoted model,
    ``model`` (its file's bytes, in SAVE TO's format). Writes nothing, so that it can run
    in a worker process; :func:`save_key` writes the model."""
    c = plan.config
    hashes, columns = unpack(plan, parts)
    result: dict[str, Any] = {"key": key, "rows": len(hashes)}
    if len(hashes) < c.min_rows:
        return {**result, "skipped": f"{len(hashes)} rows, fewer than MIN ROWS {c.min_rows}"}
    train, held = holdout_rows(hashes, c.holdout)
    label = columns.pop(c.label)

    def rows(at: np.ndarray) -> tuple[pd.DataFrame, pd.Series]:
        return (pd.DataFrame({n: v[at] for n, v in columns.items()}, copy=False),
                pd.Series(label[at], name=c.label))

    model = plan.make_pipeline(estimator)
    try:
        model.fit(*rows(train))
        scores = metrics.score(plan.metrics, model, *rows(held), classes)
    except Exception as e:  # a key's data the estimator cannot fit: report, do not crash
        return {**result, "skipped": f"fit failed: {type(e).__name__}: {e}"}
    result.update(train_rows=len(train), holdout_rows=len(held), metrics=scores)
    result.update(promoted=_passes_gate(c, result), file=None, sha256=None, trusted_types=[])
    if result["promoted"]:
        result.update(_dump(plan, model))
    return result


def _passes_gate(config: TrainConfig, result: Mapping[str, Any]) -> bool:
    """Whether a key's model passes GATE (over its metrics and row counts)."""
    if config.gate is None:
        return True
    values = {**result["metrics"], **{n: result[n] for n in ROW_COUNTS}}
    return bool(expr.evaluate_scalar(config.gate, values))


def _dump(plan: Plan, model: Any) -> dict[str, Any]:
    """A promoted model's file bytes and the types skops does not trust by default in it
    (``model`` and ``trusted_types``), or ``skipped`` with the reason."""
    try:
        data = modelstore.dump_model(model, plan.config.save_to)
    except Exception as e:  # an estimator the format cannot hold
        return {"skipped": f"could not save the model: {type(e).__name__}: {e}"}
    trusted: list[str] = []
    if plan.config.save_to.endswith(modelstore.SKOPS_SUFFIXES):
        from beam_dsl.transforms.common.skops_io import io as skops_io

        trusted = sorted(skops_io.get_untrusted_types(data=data))
    return {"model": data, "trusted_types": trusted}


def save_key(plan: Plan, result: dict[str, Any]) -> dict[str, Any]:
    """Writes a promoted key's model (from :func:`fit_key`) into the run's staging folder:
    the result without ``model``, with ``file`` (relative to the version being built) and
    ``sha256`` (None where nothing was promoted), or ``skipped`` when it cannot be written."""
    data = result.pop("model", None)
    if data is None:  # skipped, or not promoted
        return result
    store = modelstore.ModelStore(plan.config.save_to)
    key = result["key"] if plan.config.per else None
    try:
        file, digest = store.write(data, plan.run, key)
    except (OSError, modelstore.ModelStoreError) as e:
        return {"key": result["key"], "rows": result["rows"],
                "skipped": f"could not save the model: {type(e).__name__}: {e}"}
    return {**result, "file": file, "sha256": digest}
