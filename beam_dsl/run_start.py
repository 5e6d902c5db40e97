"""What ``beam_dsl run`` settles from the compiled pipeline before it imports Beam.

Compiling a pipeline takes a tenth of a second; importing Beam takes most of
a second. So ``run`` compiles first (:func:`compile_for_run`) and, where a
TRAIN will fit keys in worker processes or a MODEL predict in them, starts
their fork server (:mod:`beam_dsl.transforms.common.workers`) at once: the
server imports pandas, scikit-learn, the estimator's module and the model
format (1.5 s of a core) on another core while this process imports Beam
and builds the pipeline, and TRAIN's fits and MODEL's predictions go to
workers from the first. TRAIN learns its estimator's task from
scikit-learn's source
(:func:`beam_dsl.transforms.training.fit.task_from_source`) and MODEL leaves
loading the model to the workers, so this process need not import
scikit-learn at all.

Nothing here imports Beam, pandas or scikit-learn.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl.compiler import Compilation, compile_pipeline
from beam_dsl.dsl.yamlfile import load_schema
from beam_dsl.ir.model import ModelConfig
from beam_dsl.ir.train import TrainConfig
from beam_dsl.transforms import inference
from beam_dsl.transforms.common import workers
from beam_dsl.transforms.training import worker_modules
from beam_dsl.transforms.training.modelstore import SKOPS_SUFFIXES
from beam_dsl.vocabulary import family

IN_PROCESS = ("FnApiRunner", "InProcess", "in-process")  # runner names of the in-process runner


def compile_for_run(
    path: str, variables: dict[str, Any] | None, runner: str, beam_args: Sequence[str]
) -> Compilation:
    """Compiles ``path`` (DiagnosticError on mistakes) and starts the fork server of the
    worker processes where the run will use them (:func:`start_workers`)."""
    compilation = compile_pipeline(path, variables)
    if not compilation.ok:
        raise DiagnosticError(compilation.diagnostics)
    start_workers(compilation, runner, beam_args)
    return compilation


def worker_options(workers: int | None) -> list[str]:
    """``run --workers N`` as Beam pipeline options (read by the transforms:
    :class:`beam_dsl.transforms.common.runner_compat.WorkerOptions`); none when not given."""
    return [] if workers is None else [f"--beam_dsl_workers={workers}"]


def start_workers(compilation: Compilation, runner: str, beam_args: Sequence[str]) -> None:
    """Starts the fork server of the worker processes (preloading what they will need)
    where the run is in-process, in Beam's default mode, has more than one worker
    process (``--beam_dsl_workers``, else one per core) and gives them work from the
    start (:func:`_in_workers`). The server runs in the pipeline's folder, as the run
    does. Beam checks the options later."""
    if runner not in IN_PROCESS:
        return  # the work runs in other processes (Dask's, a cluster's)
    configs = _in_workers(compilation, beam_args)
    modules = dict.fromkeys(
        m for c in configs
        for m in (worker_modules(c) if isinstance(c, TrainConfig) else inference.worker_modules(c)))
    if not modules:
        return
    hide_torch = not may_need_torch(compilation) and "torch" not in sys.modules  # as the run
    with contextlib.chdir(compilation.pipeline_dir):
        workers.start_server(list(modules), hide_torch)


def _in_workers(compilation: Compilation, beam_args: Sequence[str]) -> list[Any]:
    """The configs of the pipeline's transforms whose work worker processes do from the
    start, where the run (in Beam's default in-process mode) has more than one: every
    TRAIN, and every MODEL that predicts in workers."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--beam_dsl_workers", default="")
    parser.add_argument("--direct_running_mode", default="in_memory")
    options, _ = parser.parse_known_args(list(beam_args))
    count = options.beam_dsl_workers
    if options.direct_running_mode != "in_memory" or (
            int(count) if count.isdigit() else workers.cores()) < 2:
        return []
    configs = [d.config for name, d in compilation.defs.items() if name in compilation.types]
    return [c for c in configs if isinstance(c, TrainConfig) or (
        isinstance(c, ModelConfig) and inference.predicts_in_workers(c))]


def _leaves(value: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    """Every value of a lowered config that is neither a dict nor a list (ensembles nest
    models), with the key of the dict that holds it (None inside a list)."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield key, value


def _frameworks(config: Any) -> set[str]:
    """Every model framework named anywhere in a lowered config."""
    return {v for k, v in _leaves(config) if k == "framework" and isinstance(v, str)}


def may_need_torch(compilation: Compilation) -> bool:
    """Whether building the pipeline may import torch: a torch-based MODEL, or a
    transform that is neither beam_dsl's nor a Beam YAML built-in (a user's
    provider, PyTransform), which could import anything."""
    builtins = set(load_schema("beam_yaml_transforms.json")["transforms"]) - {"PyTransform"}
    known = builtins | set(compilation.defs) | {"composite", "chain"}
    if compilation.types - known:
        return True
    # Frameworks whose beam_dsl code (or a user's handler) may import torch.
    torch_frameworks = set(family("frameworks").names(kind="torch"))
    return any(
        _frameworks(d.config.to_json()) & torch_frameworks for d in compilation.defs.values()
    )


def uses_skops(compilation: Compilation, beam_args: Sequence[str] = ()) -> bool:
    """Whether this process will load or save a ``.skops`` file: the path of a MODEL the
    pipeline uses (an ENSEMBLE's config holds its models'), a TRAIN's SAVE TO (not
    where worker processes do the work: they save and load the models).
    skops, when imported, lists the types it trusts by finding each scipy function in
    the first loaded module that holds it: imported before Beam's 1,600 modules, that
    search costs about 0.2 s less."""
    in_workers = _in_workers(compilation, beam_args) if workers.server_started() else []
    return any(
        isinstance(v, str) and v.endswith(SKOPS_SUFFIXES)
        for name, d in compilation.defs.items()
        if name in compilation.types and not any(d.config is c for c in in_workers)
        for _, v in _leaves(d.config.to_json())
    )


# The type ``fuse_csv_reads`` gives a TRAIN that reads its CSV file itself (the runner
# provides it: TrainModels.reading_csv).
TRAIN_READING_CSV = "beam_dsl_TrainReadingCsv"
_CSV_OPTIONS = {"path": "path", "delimiter": "sep", "comment": "comment"}  # as Beam maps them
_GLOB = set("*?[")


def fuse_csv_reads(spec: Any, trains: set[str]) -> list[str]:
    """Where a ReadFromCsv of one local file feeds a TRAIN (a use of a type in ``trains``)
    and nothing else, the TRAIN reads the file itself: the two become one transform of
    type :data:`TRAIN_READING_CSV`, which gives the TRAIN the rows ReadFromCsv would,
    read part by part in its worker processes
    (:meth:`~beam_dsl.transforms.training.transform.TrainModels.reading_csv`). For the
    in-process runner. ``spec`` is the compiled file as Beam YAML loaded it; its
    ``pipeline:`` (a composite, or a chain whose first transform is the read and second
    the TRAIN) is changed in place. Nothing is fused where the file's ``providers:``
    give a ReadFromCsv of their own. Returns the fused TRAINs' names."""
    pipeline = spec.get("pipeline") if isinstance(spec, dict) else None
    if not isinstance(pipeline, dict) or not isinstance(pipeline.get("transforms"), list):
        return []
    if any(isinstance(p, dict) and "ReadFromCsv" in (p.get("transforms") or ())
           for p in spec.get("providers") or ()):
        return []
    transforms = pipeline["transforms"]
    kind = pipeline.get("type", "composite")
    if kind == "chain" and len(transforms) > 1 and not _keys(pipeline) & {
            "source", "extra_transforms"}:
        pairs = [(0, 1)]
    elif kind == "composite":
        by_name = {t.get("name"): i for i, t in enumerate(transforms) if isinstance(t, dict)}
        pairs = [(by_name[t["input"]], i) for i, t in enumerate(transforms)
                 if isinstance(t, dict) and isinstance(t.get("input"), str)
                 and t["input"] in by_name]
    else:
        return []
    fused, reads = [], set()
    for read_at, train_at in pairs:
        read, train = transforms[read_at], transforms[train_at]
        csv = _local_csv(read)
        if csv is None or not _plain_use(train, trains):
            continue
        # Nothing but the TRAIN reads it (Beam YAML finds an input by name or by type).
        name = read.get("name")
        if _references(pipeline, read["type"]) or name is not None and _references(
                pipeline, name) != (kind == "composite"):
            continue
        transforms[train_at] = {  # it starts the pipeline: no input
            **{k: v for k, v in train.items() if k != "input"},
            "type": TRAIN_READING_CSV,
            "config": {"csv": csv, "read": name or read["type"], "train": train["config"]},
        }
        fused.append(train.get("name", train["type"]))
        reads.add(read_at)
    transforms[:] = [t for i, t in enumerate(transforms) if i not in reads]
    return fused


def _keys(node: dict) -> set[str]:
    """A transform's keys, without those Beam YAML's loader adds (``__line__``, ...)."""
    return {k for k in node if not k.startswith("__")}


def _plain_use(train: Any, trains: set[str]) -> bool:
    """A use of a TRAIN with its config and input only (no windowing, no hints)."""
    return (isinstance(train, dict) and train.get("type") in trains
            and isinstance(train.get("config"), dict)
            and not _keys(train) - {"type", "name", "input", "config"})


def _local_csv(read: Any) -> dict[str, Any] | None:
    """A ReadFromCsv's file and pandas arguments (``path``, ``sep``, ``comment``) where it
    reads one local file with options TRAIN's reading follows; else None."""
    if not (isinstance(read, dict) and read.get("type") == "ReadFromCsv"
            and not _keys(read) - {"type", "name", "config"}):
        return None
    config = read.get("config")
    if not isinstance(config, dict) or _keys(config) - set(_CSV_OPTIONS):
        return None
    path = config.get("path")
    if not isinstance(path, str) or _GLOB & set(path) or "://" in path or not os.path.isfile(
            path):
        return None
    options = {_CSV_OPTIONS[k]: v for k, v in config.items() if k in _CSV_OPTIONS}
    if any(not (isinstance(v, str) and len(v) == 1) for k, v in options.items() if k != "path"):
        return None
    return options


def _references(node: Any, target: str) -> int:
    """How many references in a pipeline or transform ``node`` (the ``input`` and
    ``output`` of it and of the transforms under it; not configs) are to ``target`` or
    one of its outputs (``target.x``)."""
    if isinstance(node, list):
        return sum(_references(v, target) for v in node)
    if not isinstance(node, dict):
        return 0
    found = sum(_names(node.get(key), target) for key in ("input", "output"))
    return found + sum(_references(node.get(key), target)
                       for key in ("transforms", "extra_transforms", "source", "sink"))


def _names(value: Any, name: str) -> int:
    if isinstance(value, dict):
        return sum(_names(v, name) for k, v in value.items() if not str(k).startswith("__"))
    if isinstance(value, list):
        return sum(_names(v, name) for v in value)
    return int(isinstance(value, str) and (value == name or value.startswith(name + ".")))
