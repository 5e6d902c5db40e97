"""ENSEMBLE: several MODELs behind one transform (LANGUAGE.md section 3).

An ensemble takes one of four forms, each over batches of rows:

* ``STEP``s and an ``OUTPUT`` combiner: steps run in a topological order of
  their bindings (a step argument may name an earlier step); the steps of one
  level run side by side on a thread pool; a combiner from
  :mod:`beam_dsl.transforms.ensemble.combiners` merges their answers.
* ``SPLIT BY key (m1 p1%, m2 p2%, ...)``: each row goes to one arm, chosen by
  a stable hash of the ensemble's name and the key (sha256), so a key always
  meets the same arm.
* ``CASCADE (m1 WHEN cond, ..., mN)``: each model answers the rows whose WHEN
  holds over its answer (``m1.confidence``); the rest fall through; the last
  model answers what remains.
* ``SWITCH WHEN cond THEN m ... ELSE m``: the first case whose WHEN holds over
  the input row picks the model.

``SHADOW`` models score the rows the ensemble served; their answers go to the
``shadow`` output, never to ``main``. Output columns (docs/ENSEMBLES.md):

* ``main``: the input fields; the combined result ``<R>`` (the ``AS`` name, or
  for SPLIT / CASCADE / SWITCH the first arm's OUTPUT names) and
  ``<R>_confidence``; ``arm`` (the model that answered; routed forms only);
  combiner extras (``<R>_scores``, ``<R>_step``); and per member (a step
  binding, or a model for routed forms) ``<member>_<output>`` for each model
  OUTPUT, ``<member>_confidence``, ``<member>_model_id`` and, for PER models,
  ``<member>_model_key``. A member that did not run on a row leaves nulls.
* ``shadow``: the input fields, ``arm`` where routed, ``<R>``, and each shadow
  model's member columns plus ``<model>_error``.
* ``errors``: rows a member rejected or the combiner could not combine, as
  ``row`` (the input fields as JSON), ``reason`` and ``transform``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.schemas import named_fields_to_schema, named_tuple_from_schema

from beam_dsl.transforms.common.expr import columns_of, mask
from beam_dsl.transforms.common.rows import (
    ERROR_ROW_TYPE,
    FrameDoFn,
    conform_to_schema,
    error_rows,
    optional,
    row_type,
    schema_fields,
)
from beam_dsl.transforms.common.runner_compat import RowsToFrames, runs_batches, select
from beam_dsl.transforms.common.spec import SpecTransform
from beam_dsl.transforms.ensemble import combiners

# The predictor's columns besides the model's OUTPUT ones.
_PROVENANCE = ("confidence", "model_id", "model_key")
_ARM = "arm"
_FLOAT, _STR, _ANY = optional(float), optional(str), optional(Any)


@dataclass(frozen=True)
class Step:
    """``STEP name = model(args)``; ``args`` None means ``*`` (the whole input row)."""

    name: str
    model: str
    args: tuple[str, ...] | None


def topological_levels(steps: Sequence[Step]) -> list[list[Step]]:
    """Steps grouped so that each depends only on steps of earlier groups.

    Within a group, steps keep their declaration order. Raises ValueError on a
    cycle (the compiler's checks report it with a position first).
    """
    names = {s.name for s in steps}
    deps = {s.name: {a.split(".", 1)[0] for a in s.args or ()} & names for s in steps}
    levels: list[list[Step]] = []
    placed: set[str] = set()
    while len(placed) < len(steps):
        ready = [s for s in steps if s.name not in placed and deps[s.name] <= placed]
        if not ready:
            cycle = sorted(names - placed)
            raise ValueError(f"steps depend on each other in a cycle: {', '.join(cycle)}")
        levels.append(ready)
        placed.update(s.name for s in ready)
    return levels


def split_arm(ensemble: str, key: Sequence[Any], arms: Sequence[tuple[str, float]]) -> str:
    """The arm of ``key``: sha256 of the ensemble name and key, as a point in [0, 1).

    Salting with the ensemble name keeps two experiments on the same key
    independent. Values hash by their text, so 42 and '42' meet the same arm.
    """
    text = "\x1e".join([ensemble, *("\x00" if v is None else str(v) for v in key)])
    point = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for model, share in arms:
        cumulative += share
        if point < cumulative:
            return model
    return arms[-1][0]  # shares summing to 0.999... leave a sliver for the last arm


def _member_fields(member: str, config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A member's output and provenance columns, with their types."""
    fields = [(f"{member}_{o}", _ANY) for o in config["output"]]
    fields += [(f"{member}_confidence", _FLOAT), (f"{member}_model_id", _STR)]
    if config.get("per"):
        fields.append((f"{member}_model_key", _STR))
    return fields


def _nulls_as_none(series: pd.Series) -> pd.Series:
    """Object columns with None (not NaN) where a value is missing."""
    if series.dtype != object:
        return series
    missing = series.isna()
    return series.where(~missing, None) if missing.any() else series


class EnsemblePlan:
    """The run-time logic of one ENSEMBLE over pandas frames, without Beam.

    ``run(frame, predictors)`` returns the main frame (rows served), the
    errors (index -> reason) and the shadow frame.
    """

    def __init__(
        self,
        name: str,
        models: Mapping[str, Mapping[str, Any]],
        steps: Sequence[Mapping[str, Any]],
        output: Mapping[str, Any] | None,
        split: Mapping[str, Any] | None,
        shadow: Sequence[str],
        cascade: Sequence[Mapping[str, Any]] | None,
        switch: Mapping[str, Any] | None,
    ):
        self.name = name
        self.models = dict(models)
        self.steps = [Step(s["name"], s["model"], _args(s["args"])) for s in steps]
        self.output = dict(output) if output else None
        self.split = split
        self.shadow = list(shadow)
        self.cascade = list(cascade) if cascade else None
        self.switch = switch
        forms = [f for f, on in (("STEP", self.steps), ("SPLIT", split), ("CASCADE", cascade),
                                 ("SWITCH", switch)) if on]
        if len(forms) != 1:
            raise ValueError(
                f"ENSEMBLE {name} needs exactly one of STEP, SPLIT, CASCADE, SWITCH; "
                f"it has {', '.join(forms) or 'none'}"
            )
        self.form = forms[0]
        for model in self._routed_models() + [s.model for s in self.steps] + self.shadow:
            if model not in self.models:
                raise ValueError(f"ENSEMBLE {name} uses MODEL {model}, which has no config")
        if self.form == "STEP":
            self._check_steps()
            self.levels = topological_levels(self.steps)
            self.result = self.output["as"]
            self.result_outputs = [self.result]
        else:
            outputs = [self.models[m]["output"] for m in self._routed_models()]
            if any(len(o) != len(outputs[0]) for o in outputs):
                raise ValueError(
                    f"ENSEMBLE {name}: the models it routes between must have as many "
                    f"OUTPUT columns each; they have {outputs}"
                )
            self.result_outputs = list(outputs[0])
            self.result = self.result_outputs[0]
        if self.split is not None:
            total = sum(a["share"] for a in self.split["arms"])
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"ENSEMBLE {name}: SPLIT shares add up to {total:.2%}, not 100%")
        self.scored = self._scored_members()

    def _scored_members(self) -> frozenset[str]:
        """Members whose confidence and class probabilities something reads.

        Scores cost a second pass through a classifier (``predict_proba``), so
        they are computed only for the members of a combiner that weighs them,
        for steps whose ``.confidence`` / ``.proba`` another step reads, and
        for the models whose ``.confidence`` / ``.proba`` a CASCADE WHEN reads.
        """
        scored: set[str] = set()
        if self.output is not None and combiners.reads_scores(self.output):
            scored.update(combiners.members_of(self.output))
        qualified = {a for s in self.steps for a in s.args or () if "." in a}
        for arm in self.cascade or ():
            qualified |= columns_of(arm["when"]) if arm["when"] else set()
        for name in qualified:
            member, _, field = name.partition(".")
            if field in ("confidence", "proba"):
                scored.add(member)
        return frozenset(scored)

    def _check_steps(self) -> None:
        if self.output is None:
            raise ValueError(f"ENSEMBLE {self.name} has STEPs but no OUTPUT")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"ENSEMBLE {self.name} binds a step name twice: {names}")
        combiners.validate(self.output, names)
        for step in self.steps:
            inputs = self.models[step.model].get("input")
            if step.args is not None and inputs and len(inputs) != len(step.args):
                raise ValueError(
                    f"STEP {step.name} passes {len(step.args)} fields to MODEL {step.model}, "
                    f"whose INPUT has {len(inputs)}"
                )

    def _routed_models(self) -> list[str]:
        """The models that may answer a row in a SPLIT, CASCADE or SWITCH, once each."""
        if self.split is not None:
            names = [a["model"] for a in self.split["arms"]]
        elif self.cascade is not None:
            names = [a["model"] for a in self.cascade]
        elif self.switch is not None:
            names = [c["model"] for c in self.switch["cases"]]
            names += [self.switch["default"]] if self.switch["default"] else []
        else:
            names = []
        return list(dict.fromkeys(names))

    # ---------------------------------------------------------------- schema

    def members(self) -> list[tuple[str, str]]:
        """(member name, model name) for each member, in output column order."""
        if self.form == "STEP":
            return [(s.name, s.model) for s in self.steps]
        return [(m, m) for m in self._routed_models()]

    def model_names(self) -> list[str]:
        return list(dict.fromkeys([m for _, m in self.members()] + self.shadow))

    def result_types(self) -> list[tuple[str, Any]]:
        """The main output's columns after the input fields, with their types."""
        if self.form == "STEP":
            extras = combiners.EXTRA_COLUMNS.get(self.output["combiner"], ())
            out = [(self.result, _ANY)]
            out.append((f"{self.result}_confidence", _FLOAT))
            out += [(f"{self.result}_{e}", _ANY) for e in extras]
        else:
            out = [(o, _ANY) for o in self.result_outputs]
            out.append((f"{self.result}_confidence", _FLOAT))
            out.append((_ARM, str))
        for member, model in self.members():
            out += _member_fields(member, self.models[model])
        return out

    def shadow_types(self) -> list[tuple[str, Any]]:
        out = [(_ARM, str)] if self.form != "STEP" else []
        out.append((self.result, _ANY))
        for model in self.shadow:
            out += _member_fields(model, self.models[model])
            out.append((f"{model}_error", _STR))
        return out

    # ---------------------------------------------------------------- running

    def run(
        self,
        frame: pd.DataFrame,
        predictors: Mapping[str, Any],
        pool: ThreadPoolExecutor | None = None,
    ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame | None]:
        """One batch: (main frame, reasons of rejected rows by index, shadow frame or None)."""
        batch = _Batch(frame, predictors, self.models, self.scored)
        if self.form == "STEP":
            main = self._run_steps(batch, pool)
        elif self.form == "SPLIT":
            arms = [(a["model"], a["share"]) for a in self.split["arms"]]
            keys = frame[self.split["keys"]].itertuples(index=False, name=None)
            chosen = pd.Series([split_arm(self.name, k, arms) for k in keys], index=frame.index)
            main = self._run_routes(batch, chosen)
        elif self.form == "SWITCH":
            main = self._run_routes(batch, self._switch_routes(batch))
        else:
            main = self._run_cascade(batch)
        shadow = self._run_shadow(batch, main) if self.shadow else None
        return main, batch.errors.dropna(), shadow

    def _run_steps(self, batch: _Batch, pool: ThreadPoolExecutor | None) -> pd.DataFrame:
        for level in self.levels:
            alive = batch.alive()
            inputs = [(s, self._step_input(s, batch, alive)) for s in level]
            if pool is not None and len(level) > 1:
                results = list(pool.map(lambda si: batch.predict(si[0].name, si[0].model, si[1]),
                                        inputs))
            else:
                results = [batch.predict(s.name, s.model, x) for s, x in inputs]
            for (step, _), result in zip(inputs, results, strict=True):
                batch.record(step.name, step.model, result)
        alive = batch.alive()
        members = {s.name: batch.member(s.name, alive) for s in self.steps}
        combined = combiners.combine(self.output, members, alive)
        batch.reject(combined.errors.dropna(), f"OUTPUT {self.output['combiner']}()")
        served = batch.alive()
        columns = {
            self.result: combined.value,
            f"{self.result}_confidence": combined.confidence,
            **{f"{self.result}_{suffix}": v for suffix, v in combined.extra.items()},
        }
        return batch.output(served, columns, self.members())

    def _step_input(self, step: Step, batch: _Batch, rows: pd.Index) -> pd.DataFrame:
        """The frame a step's model reads: its fields named by the model's INPUT."""
        if step.args is None:
            return batch.rows(rows)
        names = self.models[step.model].get("input") or [a.split(".")[-1] for a in step.args]
        bindings = {s.name for s in self.steps}
        columns = {}
        for name, arg in zip(names, step.args, strict=True):
            binding, _, field = arg.partition(".")
            if binding in bindings:
                model = self.models[batch.model_of[binding]]
                values = batch.column(binding, field or model["output"][0], rows)
            else:
                values = batch.rows(rows)[arg]
            columns[name] = values.to_numpy()  # all aligned to ``rows`` already
        return pd.DataFrame(columns, index=rows)

    def _switch_routes(self, batch: _Batch) -> pd.Series:
        routes = pd.Series(None, index=batch.frame.index, dtype=object)
        for case in self.switch["cases"]:
            hit = mask(case["when"], batch.frame) & routes.isna()
            routes[hit] = case["model"]
        if self.switch["default"]:
            routes = routes.fillna(self.switch["default"])
        else:
            batch.reject(
                pd.Series("no SWITCH case matched and there is no ELSE",
                          index=routes.index[routes.isna()]),
                "SWITCH",
            )
        return routes

    def _run_routes(self, batch: _Batch, routes: pd.Series) -> pd.DataFrame:
        for model in self._routed_models():
            rows = routes.index[(routes == model).to_numpy()].intersection(batch.alive())
            if len(rows):
                batch.record(model, model, batch.predict(model, model, batch.rows(rows)))
        return self._answer(batch, routes)

    def _run_cascade(self, batch: _Batch) -> pd.DataFrame:
        remaining = batch.alive()
        routes = pd.Series(None, index=batch.frame.index, dtype=object)
        for i, arm in enumerate(self.cascade):
            if not len(remaining):
                break
            model = arm["model"]
            batch.record(model, model, batch.predict(model, model, batch.rows(remaining)))
            remaining = remaining.intersection(batch.alive())
            if i == len(self.cascade) - 1:
                answered = remaining
            else:
                context = batch.qualified(remaining)
                answered = remaining[mask(arm["when"], context).to_numpy()]
            routes.loc[answered] = model
            remaining = remaining.difference(answered)
        return self._answer(batch, routes)

    def _answer(self, batch: _Batch, routes: pd.Series) -> pd.DataFrame:
        """The served rows with the answering model's result under the result names."""
        served = batch.alive()
        chosen = routes.reindex(served)
        names = [*self.result_outputs, f"{self.result}_confidence"]
        pieces: dict[str, list[pd.Series]] = {name: [] for name in names}
        for model in self._routed_models():
            rows = served[(chosen == model).to_numpy()]
            fields = [*self.models[model]["output"], "confidence"]
            for name, field in zip(names, fields, strict=True):
                pieces[name].append(batch.column(model, field, rows))
        columns = {
            name: pd.concat(parts).reindex(served) if parts else pd.Series(index=served)
            for name, parts in pieces.items()
        }
        columns[_ARM] = chosen
        return batch.output(served, columns, self.members())

    def _run_shadow(self, batch: _Batch, main: pd.DataFrame) -> pd.DataFrame:
        rows = main.index
        columns = {_ARM: main[_ARM]} if self.form != "STEP" else {}
        columns[self.result] = main[self.result]
        for model in self.shadow:
            result = batch.predict(model, model, batch.rows(rows)) if len(rows) else None
            batch.record(model, model, result, reject=False)
        shadow = batch.output(rows, columns, [(m, m) for m in self.shadow])
        for model in self.shadow:
            shadow[f"{model}_error"] = _nulls_as_none(batch.column(model, "error", rows))
        return shadow


def _args(args: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if args is None else tuple(args)


class _Batch:
    """One batch's state: the input frame, each member's results, rejected rows."""

    def __init__(
        self,
        frame: pd.DataFrame,
        predictors: Mapping[str, Any],
        models: Mapping[str, Mapping[str, Any]],
        scored: frozenset[str],
    ):
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

    def record(
        self, member: str, model: str, result: pd.DataFrame | None, reject: bool = True
    ) -> None:
        """Keeps a member's result; rows it rejected leave the batch unless ``reject`` is off."""
        self.model_of[member] = model
        if result is None:
            return
        self.results[member] = result
        if reject:
            who = f"MODEL {model}" if member == model else f"step '{member}' (MODEL {model})"
            self.reject(result["error"].dropna(), who)

    def column(self, member: str, field: str, rows: pd.Index) -> pd.Series:
        """A member's field on ``rows``: NaN/None where the member did not run."""
        result = self.results.get(member)
        if result is None or field not in result.columns:
            return pd.Series(None, index=rows, dtype=object)
        values = result[field]
        return values if values.index.equals(rows) else values.reindex(rows)

    def member(self, member: str, rows: pd.Index) -> combiners.Member:
        model = self.models[self.model_of[member]]
        return combiners.Member(
            name=member,
            value=self.column(member, model["output"][0], rows),
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
        provenance columns (see the module docstring)."""
        out = {name: _nulls_as_none(values.reindex(rows)) for name, values in columns.items()}
        for member, model in members:
            config = self.models[model]
            for field in [*config["output"], *_PROVENANCE]:
                values = self.column(member, field, rows)
                if field == "confidence":
                    out[f"{member}_{field}"] = values.astype(float)
                elif field != "model_key" or config.get("per"):
                    out[f"{member}_{field}"] = _nulls_as_none(values)
        return pd.concat([self.rows(rows), pd.DataFrame(out, index=rows)], axis=1)


# ---------------------------------------------------------------- Beam


RowMaker = Callable[[Sequence[Any]], Any]


def row_maker(fields: Sequence[tuple[str, Any]]) -> RowMaker:
    """Builds rows of this schema from value tuples.

    Beam's own NamedTuple for the schema (what its RowCoder decodes to, and
    picklable) is several times faster to build than ``beam.Row(**fields)``;
    field names that are not Python identifiers need ``beam.Row``.
    """
    try:
        return named_tuple_from_schema(named_fields_to_schema(list(fields)))._make
    except ValueError:
        names = [n for n, _ in fields]
        return lambda values: beam.Row(**dict(zip(names, values, strict=True)))


def _rows(frame: pd.DataFrame, columns: Sequence[str], make: RowMaker) -> Iterator[Any]:
    return map(make, zip(*(frame[c].tolist() for c in columns), strict=True))


class _Ensemble:
    """An :class:`EnsemblePlan` at work on frames of rows, with its models loaded.

    Yields ``(tag, row)`` pairs; the DoFns below turn them into Beam outputs.
    """

    def __init__(
        self, plan: EnsemblePlan, fields: Mapping[str, Any], max_rows: int, allow_pickle: bool
    ):
        self.plan = plan
        self.fields = dict(fields)
        self.max_rows = max_rows
        self.allow_pickle = allow_pickle
        self.main_fields = [*fields.items(), *plan.result_types()]
        self.shadow_fields = [*fields.items(), *plan.shadow_types()]

    def setup(self) -> None:
        from beam_dsl.transforms.inference.predictors import build_predictor

        self.predictors = {
            m: build_predictor(self.plan.models[m], allow_pickle=self.allow_pickle)
            for m in self.plan.model_names()
        }
        self.make_main = row_maker(self.main_fields)
        self.make_shadow = row_maker(self.shadow_fields)
        widest = max((len(level) for level in getattr(self.plan, "levels", [])), default=1)
        self.pool = ThreadPoolExecutor(widest) if widest > 1 else None

    def teardown(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown()

    def outputs(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        # Frames from a reader can be larger than the models' BATCH maximum.
        for start in range(0, len(frame), self.max_rows):
            chunk = frame.iloc[start : start + self.max_rows].reset_index(drop=True)
            typed, unfit = conform_to_schema(chunk, self.fields)
            unfit = unfit.dropna()
            main, rejected, shadow = self.plan.run(
                typed.drop(index=unfit.index), self.predictors, self.pool
            )
            for row in _rows(main, [n for n, _ in self.main_fields], self.make_main):
                yield "main", row
            errors = pd.concat([unfit, rejected])
            for row in error_rows(chunk.loc[errors.index], errors, self.plan.name):
                yield "errors", row
            if shadow is not None:
                for row in _rows(shadow, [n for n, _ in self.shadow_fields], self.make_shadow):
                    yield "shadow", row


class _EnsembleFn(FrameDoFn):
    """Runner with batched DoFns: Beam's frames (or buffered rows) in, tagged outputs out."""

    def __init__(self, ensemble: _Ensemble):
        super().__init__(list(ensemble.fields), ensemble.max_rows)
        self.ensemble = ensemble

    def setup(self) -> None:
        self.ensemble.setup()

    def teardown(self) -> None:
        self.ensemble.teardown()

    def process_frame(self, frame: pd.DataFrame, window: BoundedWindow) -> Iterator[Any]:
        for tag, row in self.ensemble.outputs(frame):
            yield row if tag == "main" else beam.pvalue.TaggedOutput(tag, row)


class _EnsembleFramesFn(beam.DoFn):
    """Other runners (see :func:`runs_batches`): frames as elements, ``(tag, row)`` out."""

    def __init__(self, ensemble: _Ensemble):
        self.ensemble = ensemble

    def setup(self) -> None:
        self.ensemble.setup()

    def teardown(self) -> None:
        self.ensemble.teardown()

    def process(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        yield from self.ensemble.outputs(frame)


class RunEnsemble(SpecTransform):
    """Runs an ENSEMBLE of MODELs: steps with a combiner, or a SPLIT, CASCADE or SWITCH.

    The arguments are what ``beam_dsl.dsl.lower.lower_Ensemble`` emits for one
    ENSEMBLE statement; docs/ENSEMBLES.md describes the output columns.

    Args:
        name: The ENSEMBLE's name (salts the SPLIT hash; names errors).
        models: Each MODEL the ensemble uses, by name, as lowered MODEL configs.
        steps: ``{"name", "model", "args"}`` per STEP (``args`` null for ``*``).
        output: The OUTPUT combiner: ``{"combiner", "args", "kwargs", "as"}``.
        split: ``{"keys": [...], "arms": [{"model", "share"}]}`` for SPLIT BY.
        shadow: Models scored on the served rows, written to the ``shadow`` output.
        cascade: ``[{"model", "when"}]`` for CASCADE, in order.
        switch: ``{"cases": [{"when", "model"}], "default"}`` for SWITCH.
        allow_pickle: Let members load pickle/joblib model files (they can run code).
    """

    def __init__(
        self,
        name: str,
        models: dict[str, Any],
        steps: list[dict[str, Any]] | None = None,
        output: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
        shadow: list[str] | None = None,
        cascade: list[dict[str, Any]] | None = None,
        switch: dict[str, Any] | None = None,
        allow_pickle: bool = False,
    ):
        beam.PTransform.__init__(self, label=name)  # until built from EnsembleConfig
        self.plan = EnsemblePlan(
            name, models, steps or [], output, split, shadow or [], cascade, switch
        )
        self.allow_pickle = allow_pickle

    def expand(self, pcoll: beam.PCollection) -> dict[str, beam.PCollection]:
        fields = schema_fields(pcoll.element_type)
        if fields is None:
            raise ValueError(
                f"ENSEMBLE {self.plan.name} needs rows with a schema (beam.Row); got "
                f"{pcoll.element_type}"
            )
        clash = {c for c, _ in self.plan.result_types() + self.plan.shadow_types()} & set(fields)
        if clash:
            raise ValueError(
                f"ENSEMBLE {self.plan.name} would overwrite input fields {sorted(clash)}; "
                "rename them or the ENSEMBLE's outputs"
            )
        # One frame feeds every member, so it is as large as the smallest BATCH maximum.
        max_rows = min(self.plan.models[m]["batch"]["max"] for m in self.plan.model_names())
        ensemble = _Ensemble(self.plan, fields, max_rows, self.allow_pickle)
        if runs_batches(pcoll.pipeline):
            outputs = pcoll | "Ensemble" >> beam.ParDo(_EnsembleFn(ensemble)).with_outputs(
                "errors", "shadow", main="main"
            )
            main, errors, shadow = outputs.main, outputs.errors, outputs.shadow
        else:
            tagged = (
                pcoll
                | "Frames" >> RowsToFrames(list(fields), max_rows)
                | "Ensemble" >> beam.ParDo(_EnsembleFramesFn(ensemble))
            )
            main, errors, shadow = (
                select(tagged, tag, f"Select {tag}") for tag in ("main", "errors", "shadow")
            )
        main.element_type = row_type(ensemble.main_fields)
        errors.element_type = ERROR_ROW_TYPE
        shadow.element_type = row_type(ensemble.shadow_fields)
        return {"main": main, "errors": errors, "shadow": shadow}
