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
