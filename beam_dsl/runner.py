"""``beam_dsl run``: compile a pipeline.yaml, build it with Beam YAML, run it, summarise.

The default runner is Beam's in-process FnApiRunner, chosen explicitly (Beam's
default tries to download the Prism binary first). ``DaskRunner`` runs on a
Dask distributed cluster: ``--dask_address`` names one, otherwise a local
cluster is started for the run. Any other name goes to Beam as ``--runner``.

Paths inside pipeline.yaml and its specs are relative to the pipeline file:
the run happens with that directory as the working directory.

As under ``python -m apache_beam.yaml.main``, the pipeline's ``options:`` are
merged into the pipeline options, ``pipeline: resource_hints:`` apply to the
whole pipeline, and transforms with Python ``dependencies:`` run: where every
dependency is already installed here (or is a local directory or pure-Python
wheel) and the run is in-process, they run in this process, offline; otherwise
Beam builds a virtual environment with them as stock Beam YAML does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TextIO

import yaml

from beam_dsl.dsl.compiler import Compilation
from beam_dsl.ir.train import TrainConfig
from beam_dsl.run_start import (
    IN_PROCESS,
    TRAIN_READING_CSV,
    compile_for_run,
    fuse_csv_reads,
    may_need_torch,
    uses_skops,
)
from beam_dsl.transforms.common.torch_guard import NoTorch

COUNTER_NAMESPACE = "beam_dsl"


@dataclass
class RunSummary:
    """What a run did: rows into and out of each beam_dsl transform, errors, time, and
    the per-key metrics of the TRAIN statements it ran."""

    wall_s: float
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)  # "transform.output" -> rows
    counters: dict[str, int] = field(default_factory=dict)  # the transforms' own counters
    counted: bool = True  # False where the runner reports no metrics (Dask)
    trains: dict[str, str] = field(default_factory=dict)  # TRAIN transforms: name -> statement
    trained: list = field(default_factory=list)  # beam_dsl.tools.report.TrainedModels

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.rows_out.items() if k.endswith(".errors"))

    def _models_line(self, name: str, statement: str) -> str:
        """TRAIN's models: trained, promoted, rejected by GATE, keys skipped."""
        promoted = self.counters.get(f"{statement}.promoted", 0)
        rejected = self.counters.get(f"{statement}.rejected", 0)
        skipped = self.rows_out.get(f"{name}.skipped", 0)
        return (
            f"    models: {promoted + rejected} trained, {promoted} promoted, "
            f"{rejected} rejected by GATE, {skipped} key{'s' if skipped != 1 else ''} skipped"
        )

    def render(self) -> str:
        from beam_dsl.tools.report import text_table

        lines = [f"beam_dsl: finished in {self.wall_s:.1f}s"]
        if not self.counted:
            lines.append("  (this runner reports no row counts)")
        else:
            for name, rows in sorted(self.rows_in.items()):
                outs = ", ".join(
                    f"{k.rsplit('.', 1)[1]} {v}"
                    for k, v in sorted(self.rows_out.items())
                    if k.rsplit(".", 1)[0] == name
                )
                lines.append(f"  {name}: {rows} rows in -> {outs or 'no outputs'}")
                if name in self.trains:
                    lines.append(self._models_line(name, self.trains[name]))
            lines.append(f"  errors: {self.errors}")
        for trained in self.trained:
            lines.extend(["", text_table(trained)])
        return "\n".join(lines)


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _progress(out: TextIO | None, every_s: float = 5.0) -> Iterator[None]:
    """Prints a line every few seconds while the pipeline runs."""
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not done.wait(every_s):
            print(f"beam_dsl: running... {time.monotonic() - start:.0f}s", file=out, flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    if out is not None:
        thread.start()
    try:
        yield
    finally:
        done.set()


Counted = list[tuple[str, str, Any]]  # (transform, "in" or output tag, PCollection)


def _spec_transforms(pipeline: Any) -> tuple[Counted, dict[str, str]]:
    """The input and every output of each beam_dsl transform, whose rows the summary
    counts, and the TRAIN transforms: their name in the pipeline -> their statement's."""
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.pvalue import PCollection

    from beam_dsl.transforms.common.spec import SpecTransform
    from beam_dsl.transforms.training.transform import TrainModels

    found: Counted = []
    trains: dict[str, str] = {}

    class Visitor(PipelineVisitor):
        """Finds the outermost beam_dsl transforms (not those nested in another)."""

        inside = 0

        def enter_composite_transform(self, node):
            transform = node.transform
            if isinstance(transform, SpecTransform):
                if not self.inside:
                    # Its name in the pipeline (see name_spec_transforms).
                    name = node.full_label
                    if isinstance(transform, TrainModels):
                        trains[name] = transform.name
                    for pcoll in node.main_inputs.values():
                        found.append((name, "in", pcoll))
                    for tag, pcoll in node.outputs.items():
                        found.append((name, str(tag) if tag is not None else "main", pcoll))
                self.inside += 1
                node.beam_dsl_counted = True

        def leave_composite_transform(self, node):
            if getattr(node, "beam_dsl_counted", False):
                self.inside -= 1

    pipeline.visit(Visitor())
    return [f for f in found if isinstance(f[2], PCollection)], trains


def _element_counts(result: Any) -> dict[str, int] | None:
    """Rows per PCollection id, from the runner's own element counts: Beam's in-process
    FnApiRunner reports one for every PCollection (a pandas batch counts its rows);
    None for other runners."""
    from apache_beam.metrics import monitoring_infos
    from apache_beam.runners.portability.fn_api_runner.fn_runner import RunnerResult

    if not isinstance(result, RunnerResult):
        return None
    counts: dict[str, int] = {}
    for info in result.monitoring_infos():
        if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
            pcoll = info.labels[monitoring_infos.PCOLLECTION_LABEL]
            # A PCollection that crosses stages is reported by both: the same count.
            counts[pcoll] = max(counts.get(pcoll, 0), monitoring_infos.extract_counter_value(info))
    return counts


def name_spec_transforms(node: Any, declared: set[str]) -> None:
    """Names each use of a spec transform that has no ``name:`` after its statement, so
    that Beam labels it (and the summary shows it) so, not by its class
    (``ComputeFeatures@122``). References by type keep working: Beam YAML finds a
    transform by its name or its type."""
    if isinstance(node, list):
        for child in node:
            name_spec_transforms(child, declared)
    elif isinstance(node, dict):
        if node.get("type") in declared and "name" not in node:
            node["name"] = node["type"]
        for key in ("transforms", "source", "sink"):
            name_spec_transforms(node.get(key), declared)


def _summary(
    result: Any, wall_s: float, pipeline: Any, counted: Counted, trains: dict[str, str]
) -> RunSummary:
    """The summary of a finished run: rows into and out of each beam_dsl transform (from
    the runner's element counts of their PCollections), and the transforms' counters."""
    summary = RunSummary(wall_s)
    counts = _element_counts(result)
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # some runners report no metrics
        counters = None
    if counts is None or counters is None:
        summary.counted = False
        return summary
    for name, tag, pcoll in counted:
        rows = counts.get(pipeline.component_id_map.get_or_assign(pcoll), 0)
        if not rows:
            continue
        if tag == "in":
            summary.rows_in[name] = summary.rows_in.get(name, 0) + rows
        else:
            summary.rows_out[f"{name}.{tag}"] = summary.rows_out.get(f"{name}.{tag}", 0) + rows
    for counter in counters:
        if counter.key.metric.namespace == COUNTER_NAMESPACE:
            name = counter.key.metric.name
            value = counter.committed if counter.committed is not None else counter.attempted
            summary.counters[name] = summary.counters.get(name, 0) + value
    for name, statement in trains.items():  # one that reads its file has no input to count
        summary.rows_in.setdefault(name, summary.counters.get(f"{statement}.rows_in", 0))
    return summary


@contextlib.contextmanager
def _torch_hidden(hide: bool) -> Iterator[None]:
    """Makes ``import torch`` fail while a pipeline that needs no torch is built and run
    (:mod:`beam_dsl.transforms.common.torch_guard` says why)."""
    if not hide or "torch" in sys.modules:
        yield
        return
    sys.meta_path.insert(0, NoTorch)
    try:
        yield
    finally:
        sys.meta_path.remove(NoTorch)


def _make_runner(name: str, dask_address: str | None, stack: contextlib.ExitStack):
    """A Beam runner object (or name) and extra pipeline args for it."""
    if name in IN_PROCESS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner(), []
    if name == "DaskRunner":
        if dask_address is None:
            from distributed import LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=min(2, os.cpu_count() or 1),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            dask_address = cluster.scheduler_address
        from beam_dsl.transforms.common.dask_io import AllSinksDaskRunner

        return AllSinksDaskRunner(), [f"--dask_client_address={dask_address}"]
    return name, []


def _runner_providers(runner: str) -> Any:
    """Transforms a runner needs: in process, TRAINs that read their CSV file
    (:func:`_train_reading_csv`); on Dask, overrides (beam_dsl.transforms.common.dask_io)."""
    from apache_beam.yaml.yaml_provider import InlineProvider

    if runner in IN_PROCESS:
        return InlineProvider({TRAIN_READING_CSV: _train_reading_csv},
                              no_input_transforms=[TRAIN_READING_CSV])
    if runner != "DaskRunner":
        return {}

    from beam_dsl.transforms.common import dask_io

    return InlineProvider(
        {
            "ReadFromCsv": dask_io.ReadFromCsv,
            "WriteToJson": dask_io.WriteToJson,
            "WriteToCsv": dask_io.WriteToCsv,
            "WriteToParquet": dask_io.WriteToParquet,
        }
    )


def _train_types(compilation: Compilation) -> set[str]:
    return {name for name, d in compilation.defs.items() if isinstance(d.config, TrainConfig)}


def _train_reading_csv(csv: dict, read: str, train: dict) -> Any:
    """A TRAIN that reads its CSV file itself (:func:`beam_dsl.run_start.fuse_csv_reads`)."""
    from beam_dsl.transforms.training.transform import TrainModels

    return TrainModels.reading_csv(csv, read, train)


def _available_here(dependency: str) -> str | None:
    """How this process has a Python dependency: "" where an installed distribution
    satisfies it, a ``sys.path`` entry for a local directory (its ``src/`` where it
    has one) or pure-Python wheel, None where it does not (Beam installs it)."""
    path = os.path.abspath(dependency)
    if os.path.isdir(path):
        src = os.path.join(path, "src")
        return src if os.path.isdir(src) else path
    if os.path.isfile(path) and path.endswith("-none-any.whl"):
        return path
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(dependency)
        version = metadata.version(requirement.name)
    except (InvalidRequirement, metadata.PackageNotFoundError):
        return None
    if requirement.url is None and requirement.specifier.contains(version, prereleases=True):
        return ""
    return None


def inline_dependencies(node: Any) -> list[str]:
    """Drops the Python ``dependencies:`` of transforms whose every dependency this
    process has (see :func:`_available_here`); returns the ``sys.path`` entries
    they need. Beam would otherwise build a virtual environment (from the package
    index) and an expansion service for each of them."""
    if isinstance(node, list):
        return [p for child in node for p in inline_dependencies(child)]
    if not isinstance(node, dict):
        return []
    paths = []
    config = node.get("config")
    deps = config.get("dependencies") if isinstance(config, dict) else None
    if isinstance(deps, list) and str(config.get("language", "python")).lower() == "python":
        found = [_available_here(str(d)) for d in deps]
        if None not in found:
            del config["dependencies"]
            paths.extend(p for p in found if p)
    for key in ("transforms", "source", "sink"):
        paths.extend(inline_dependencies(node.get(key)))
    return paths


@contextlib.contextmanager
def on_sys_path(paths: list[str]) -> Iterator[None]:
    added = [p for p in dict.fromkeys(paths) if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            sys.path.remove(path)


def _beam_yaml_context(options: Any, stack: contextlib.ExitStack) -> None:
    """What stock Beam YAML's pipeline context holds for the run: the Java services,
    and the expansion services of transforms with ``dependencies:`` kept alive until
    the run ends (their loopback workers run those transforms)."""
    from apache_beam.options.pipeline_options import CrossLanguageOptions
    from apache_beam.utils import subprocess_server

    services = options.view_as(CrossLanguageOptions).beam_services
    stack.enter_context(subprocess_server.JavaJarServer.beam_services(services))
    stack.enter_context(subprocess_server.SubprocessServer.cache_subprocesses())


def _pipeline_hints(pipeline: Any, spec: dict) -> None:
    """``pipeline: resource_hints:`` apply to every transform, as under stock Beam YAML."""
    from apache_beam.transforms import resources
    from apache_beam.yaml.yaml_transform import SafeLineLoader

    hints = spec["pipeline"].get("resource_hints") if isinstance(spec["pipeline"], dict) else None
    if hints:
        parsed = resources.parse_resource_hints(SafeLineLoader.strip_metadata(hints))
        pipeline._current_transform().resource_hints.update(parsed)


def run_pipeline(
    path: str,
    runner: str = "FnApiRunner",
    variables: dict[str, Any] | None = None,
    beam_args: Sequence[str] = (),
    dask_address: str | None = None,
    progress: TextIO | None = sys.stderr,
    compilation: Compilation | None = None,
) -> RunSummary:
    """Compiles and runs ``path``; raises DiagnosticError on spec or pipeline mistakes.
    ``compilation``: ``path`` compiled by :func:`beam_dsl.run_start.compile_for_run`
    already (the CLI compiles before it imports Beam)."""
    if compilation is None:
        compilation = compile_for_run(path, variables, runner, beam_args)

    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_torch_hidden(not may_need_torch(compilation)))
        if uses_skops(compilation, beam_args):
            import beam_dsl.transforms.common.skops_io  # noqa: F401 - before Beam: see uses_skops
        from apache_beam import Pipeline
        from apache_beam.options.pipeline_options import DirectOptions
        from apache_beam.yaml import yaml_transform

        from beam_dsl.transforms.common.runner_compat import RunOptions

        spec = yaml.load(compilation.yaml_text, Loader=yaml_transform.SafeLineLoader)
        stack.enter_context(working_directory(compilation.pipeline_dir))
        runner_obj, extra_args = _make_runner(runner, dask_address, stack)
        pipeline_options = yaml_transform.SafeLineLoader.strip_metadata(spec.get("options", {}))
        options = RunOptions([*beam_args, *extra_args], **pipeline_options)
        if runner in IN_PROCESS:
            stack.enter_context(on_sys_path(inline_dependencies(spec["pipeline"])))
        _beam_yaml_context(options, stack)
        pipeline = Pipeline(runner=runner_obj, options=options)
        _pipeline_hints(pipeline, spec)
        name_spec_transforms(spec["pipeline"], set(compilation.defs))
        if runner in IN_PROCESS and options.view_as(DirectOptions).direct_running_mode == (
                "in_memory"):
            fuse_csv_reads(spec, _train_types(compilation))
        yaml_transform.expand_pipeline(pipeline, spec, providers=_runner_providers(runner))
        counted, trains = _spec_transforms(pipeline)
        with _progress(progress):
            result = pipeline.run()
            try:
                result.wait_until_finish()
            finally:
                client = getattr(result, "client", None)  # DaskRunner leaves its client open
                if client is not None:
                    client.close()
    from beam_dsl.tools.report import trained_models

    summary = _summary(result, time.monotonic() - start, pipeline, counted, trains)
    summary.trains = trains
    summary.trained = trained_models(compilation)
    return summary
