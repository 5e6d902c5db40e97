"""What ``beam_dsl run`` settles from the compiled pipeline before it imports Beam.

Compiling a pipeline takes a tenth of a second; importing Beam takes most of
a second. So ``run`` compiles first (:func:`compile_for_run`) and, where a
TRAIN will fit keys in worker processes, starts their fork server
(:mod:`beam_dsl.transforms.common.workers`) at once: the server imports
pandas, scikit-learn, the estimator's module and the model format (1.5 s
of a core) on another core while this process imports Beam and builds the
pipeline, and TRAIN's fits go to workers from the first key. TRAIN learns
its estimator's task from scikit-learn's source
(:func:`beam_dsl.transforms.training.fit.task_from_source`), so this
process need not import scikit-learn at all.

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
from beam_dsl.ir.train import TrainConfig
from beam_dsl.transforms.common import workers
from beam_dsl.transforms.training import worker_modules
from beam_dsl.transforms.training.modelstore import SKOPS_SUFFIXES
from beam_dsl.vocabulary import family

IN_PROCESS = ("FnApiRunner", "InProcess", "in-process")  # runner names of the in-process runner


def compile_for_run(
    path: str, variables: dict[str, Any] | None, runner: str, beam_args: Sequence[str]
) -> Compilation:
    """Compiles ``path`` (DiagnosticError on mistakes) and starts the fork server of TRAIN's
    worker processes where the run will fit keys in them (:func:`start_train_workers`)."""
    compilation = compile_pipeline(path, variables)
    if not compilation.ok:
        raise DiagnosticError(compilation.diagnostics)
    start_train_workers(compilation, runner, beam_args)
    return compilation


def worker_options(workers: int | None) -> list[str]:
    """``run --workers N`` as Beam pipeline options (read by the transforms:
    :class:`beam_dsl.transforms.common.runner_compat.WorkerOptions`); none when not given."""
    return [] if workers is None else [f"--beam_dsl_workers={workers}"]


def start_train_workers(compilation: Compilation, runner: str, beam_args: Sequence[str]) -> None:
    """Starts the fork server of TRAIN's workers (preloading what every TRAIN the pipeline
    uses needs) where the run is in-process, in Beam's default mode, and has more than one
    worker process (``--beam_dsl_workers``, else one per core). The server runs in the
    pipeline's folder, as the run does. Beam checks the options themselves later."""
    configs = [d.config for name, d in compilation.defs.items()
               if name in compilation.types and isinstance(d.config, TrainConfig)]
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--beam_dsl_workers", default="")
    parser.add_argument("--direct_running_mode", default="in_memory")
    options, _ = parser.parse_known_args(list(beam_args))
    if not configs or runner not in IN_PROCESS or options.direct_running_mode != "in_memory":
        return  # nothing to fit, or TRAIN runs in other processes (Beam's, Dask's)
    count = options.beam_dsl_workers
    if (int(count) if count.isdigit() else workers.cores()) < 2:
        return
    modules = dict.fromkeys(m for config in configs for m in worker_modules(config))
    hide_torch = not may_need_torch(compilation) and "torch" not in sys.modules  # as the run
    with contextlib.chdir(compilation.pipeline_dir):
        workers.start_server(list(modules), hide_torch)


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


def uses_skops(compilation: Compilation) -> bool:
    """Whether this process will load or save a ``.skops`` file: a MODEL's path, a TRAIN's
    SAVE TO (not where TRAIN's workers run: they save the models). skops, when imported,
    lists the types it trusts by finding each scipy function in the first loaded module
    that holds it: imported before Beam's 1,600 modules, that search costs about 0.2 s
    less."""
    saved_by_workers = workers.server_started()
    return any(
        isinstance(v, str) and v.endswith(SKOPS_SUFFIXES)
        for d in compilation.defs.values()
        if not (saved_by_workers and isinstance(d.config, TrainConfig))
        for _, v in _leaves(d.config.to_json())
    )
