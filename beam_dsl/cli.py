"""The command line: ``python -m beam_dsl lint | compile | run | test | fmt | graph | init |
schema | report | features get | list`` (docs/TOOLS.md describes the tools).

Exit codes: 0 success; 1 diagnostics (a mistake in a spec or pipeline file,
or a failed run); 2 usage or I/O errors (a missing file, a bad flag);
123 an internal error (a bug in beam_dsl: please report it).

``lint``, ``compile``, ``fmt``, ``graph``, ``init`` and ``schema`` import no Beam,
scikit-learn, torch or transformers; ``features get`` and ``features list`` import
no Beam, and no pandas unless given ``--as-of``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, TextIO

from beam_dsl.diagnostics import Diagnostic, DiagnosticError
from beam_dsl.failures import run_failure

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 123


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors; keep that, say it plainly
        self.print_usage(sys.stderr)
        print(f"beam_dsl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_variables(parser: argparse.ArgumentParser) -> None:
    """The Jinja variables of a pipeline.yaml: ``--var NAME=VALUE`` (repeatable, strings) and
    stock Beam YAML's ``--jinja_variables JSON`` (a mapping; nested values too)."""
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a Jinja variable for pipeline.yaml (repeatable)")
    parser.add_argument("--jinja_variables", default=None, metavar="JSON",
                        help="Jinja variables as a JSON mapping, as stock Beam YAML takes them")


def _variables(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.jinja_variables is not None:
        try:
            out = json.loads(args.jinja_variables)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"--jinja_variables is not JSON: {e}") from None
        if not isinstance(out, dict):
            raise argparse.ArgumentTypeError("--jinja_variables takes a JSON mapping")
    for pair in args.var:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--var takes NAME=VALUE, not '{pair}'")
        out[key] = value
    return out


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not '{text}'")
    return int(text)


def _report(diagnostics: list[Diagnostic], fmt: str, out: TextIO) -> None:
    diagnostics = sorted(
        diagnostics,
        key=lambda d: (d.file, d.span.line if d.span else 0, d.span.column if d.span else 0),
    )
    if fmt == "json":
        json.dump([d.to_json() for d in diagnostics], out, indent=2)
        out.write("\n")
        return
    for d in diagnostics:
        print(d.render(), file=out)
    if diagnostics:
        n = len(diagnostics)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=out)


def cmd_lint(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.dsl.compiler import check_spec_files, compile_pipeline

    variables = _variables(args)
    diagnostics: list[Diagnostic] = []
    covered: set[str] = set()  # specs a pipeline listed: checked there, with its columns
    for path in (p for p in args.files if not p.endswith(".bdsl")):
        compilation = compile_pipeline(path, variables)
        diagnostics.extend(compilation.diagnostics)
        covered.update(os.path.realpath(p) for p in compilation.spec_paths)
    specs = [p for p in args.files if p.endswith(".bdsl") and os.path.realpath(p) not in covered]
    if specs:
        diagnostics.extend(check_spec_files(specs).diagnostics)
    _report(diagnostics, args.format, out)
    if not diagnostics and args.format == "text":
        print(f"{len(args.files)} file{'s' if len(args.files) != 1 else ''} ok", file=out)
    return EXIT_DIAGNOSTICS if diagnostics else EXIT_OK


def _pipeline_file(args: argparse.Namespace) -> str:
    """``args.pipeline``, refused (a usage error) when it is a spec."""
    if args.pipeline.endswith(".bdsl"):
        raise argparse.ArgumentTypeError(
            f"{args.command} takes a pipeline.yaml; got a spec ({args.pipeline}): "
            "list it under specs: in a pipeline.yaml, or check it with lint"
        )
    return args.pipeline


def cmd_compile(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.dsl.compiler import compile_pipeline

    compilation = compile_pipeline(_pipeline_file(args), _variables(args), check_data=False)
    if not compilation.ok:
        _report(compilation.diagnostics, args.format, sys.stderr)
        return EXIT_DIAGNOSTICS
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(compilation.yaml_text)
    else:
        out.write(compilation.yaml_text)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.tools.logs import run_logging

    pipeline = _pipeline_file(args)
    if args.test:  # stock Beam YAML's `main --test`
        return _cmd_test(args, out)
    with run_logging(args.verbose):  # before Beam is imported: it logs while importing
        from beam_dsl.run_start import compile_for_run, worker_options

        variables = _variables(args)
        beam_args = [*args.beam_args, *worker_options(args.workers)]
        # Before Beam's import: TRAIN's worker processes start importing meanwhile.
        compilation = compile_for_run(pipeline, variables, args.runner, beam_args)
        from beam_dsl.runner import run_pipeline

        summary = run_pipeline(
            pipeline,
            runner=args.runner,
            variables=variables,
            beam_args=beam_args,
            dask_address=args.dask_address,
            progress=None if args.quiet else sys.stderr,
            compilation=compilation,
        )
    print(summary.render(), file=out)
    if args.report:
        _write_report(args.report, args.pipeline, summary.trained, out)
    return EXIT_OK


def _cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.tools.logs import run_logging

    with run_logging(args.verbose):
        from beam_dsl.tools import testing

        variables = _variables(args)
        results = testing.run_tests(args.pipeline, variables, args.test_suite, args.beam_args)
        testing.render(results, out)
        if args.fix_tests:
            testing.fix_tests(args.test_suite or args.pipeline, results, variables)
    return EXIT_OK if all(r.passed for r in results) else EXIT_DIAGNOSTICS


def _cmd_fmt(args: argparse.Namespace, out: TextIO) -> int:
    import difflib

    from beam_dsl.diagnostics import read_source
    from beam_dsl.tools.fmt import format_text, spec_files

    changed = failed = 0
    for path in spec_files(args.paths):
        source, problem = (None, None) if path == "-" else read_source(path)
        if problem is not None:
            _report([problem], "text", sys.stderr)
            failed += 1
            continue
        text = sys.stdin.read() if path == "-" else source.text
        try:
            formatted = format_text(text, path)
        except DiagnosticError as exc:
            _report(exc.diagnostics, "text", sys.stderr)
            failed += 1
            continue
        if path == "-" and not (args.check or args.diff):
            out.write(formatted)
        elif formatted != text:
            changed += 1
            if args.diff:
                lines = text.splitlines(True), formatted.splitlines(True)
                out.writelines(difflib.unified_diff(*lines, path, path))
            if args.check or args.diff:
                print(f"would reformat {path}", file=sys.stderr)
            else:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(formatted)
                print(f"reformatted {path}", file=sys.stderr)
    return EXIT_DIAGNOSTICS if failed or (args.check and changed) else EXIT_OK


def _cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.tools.graph import RENDERERS, build

    text = RENDERERS[args.format](build(args.pipeline, _variables(args)))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        out.write(text)
    return EXIT_OK


def _cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.tools.scaffold import init

    for name in init(args.directory):
        print(f"  {args.directory.rstrip('/')}/{name}", file=out)
    pipeline = f"{args.directory.rstrip('/')}/pipeline.yaml"
    print(f"next: python -m beam_dsl run {pipeline}  (and: test, graph)", file=out)
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    from importlib import resources

    package, name = (
        ("beam_dsl", "editors/bdsl.tmLanguage.json")
        if args.textmate
        else ("beam_dsl.schemas", "pipeline.schema.json")
    )
    out.write(resources.files(package).joinpath(name).read_text(encoding="utf-8"))
    return EXIT_OK


def _write_report(path: str, pipeline: str, trained: list, out: TextIO) -> None:
    from beam_dsl.tools.report import html_page

    with open(path, "w", encoding="utf-8") as f:
        f.write(html_page(pipeline, trained))
    print(f"beam_dsl: wrote {path} ({len(trained)} TRAIN)", file=out)


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.dsl.compiler import compile_pipeline
    from beam_dsl.tools.report import trained_models

    compilation = compile_pipeline(args.pipeline, _variables(args), check_data=False)
    if not compilation.ok:
        raise DiagnosticError(compilation.diagnostics)
    _write_report(args.output, args.pipeline, trained_models(compilation), out)
    return EXIT_OK


def cmd_features_get(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.features_cli import format_features, get_features, time_ms

    key = {}
    for pair in args.key:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"entity keys are NAME=VALUE, not '{pair}'")
        key[name] = value
    if args.as_of is not None and time_ms(args.as_of) is None:
        raise argparse.ArgumentTypeError(
            f"--as-of takes epoch seconds or ISO-8601 (2024-03-01T12:00:00Z), not '{args.as_of}'"
        )
    print(format_features(get_features(args.spec_name, args.store, key, args.as_of)), file=out)
    return EXIT_OK


def cmd_features_list(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.features_cli import format_feature_sets, list_features

    print(format_feature_sets(list_features(args.store)), file=out)
    return EXIT_OK


_CONFIG_CODE = re.compile(r"(?:error\[)?(E4\d\d)\]?:?\s*([^\n]*)")


def _configuration_error(exc: BaseException) -> str | None:
    """``error[E4xx]: message`` when a run failed on an E4xx configuration error.

    Beam wraps exceptions raised inside DoFns in its own, so the code is looked
    for in the whole chain of messages."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = _CONFIG_CODE.search(str(exc))
        if match:
            return f"error[{match.group(1)}]: {match.group(2).strip()}"
        exc = exc.__cause__ or exc.__context__
    return None


def _add_tool_commands(sub) -> None:
    """test, fmt, graph, init, schema and report (docs/TOOLS.md)."""
    test = sub.add_parser(
        "test",
        help="run a pipeline's tests: blocks (Beam YAML's format)",
        epilog="Any other --flag is passed to Beam as a pipeline option.",
    )
    test.add_argument("pipeline")
    _add_variables(test)
    test.add_argument("-v", "--verbose", action="store_true", help="show Beam's own log lines")
    _test_arguments(test)
    test.set_defaults(func=_cmd_test)

    fmt = sub.add_parser("fmt", help="rewrite .bdsl specs in their canonical layout")
    fmt.add_argument("paths", nargs="+", help=".bdsl files, folders (their .bdsl files), or -")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if any would")
    fmt.add_argument("--diff", action="store_true", help="print the changes instead of writing")
    fmt.set_defaults(func=_cmd_fmt)

    graph = sub.add_parser("graph", help="draw a pipeline's transforms and spec internals")
    graph.add_argument("pipeline")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.add_argument("-o", "--output", help="output file (default: standard output)")
    _add_variables(graph)
    graph.set_defaults(func=_cmd_graph)

    init = sub.add_parser("init", help="start a project: a spec, a pipeline, sample data")
    init.add_argument("directory", help="a new or empty folder")
    init.set_defaults(func=_cmd_init)

    schema = sub.add_parser(
        "schema", help="print the JSON Schema of pipeline.yaml (for yaml-language-server)"
    )
    schema.add_argument(
        "--textmate", action="store_true", help="print the TextMate grammar of .bdsl instead"
    )
    schema.set_defaults(func=_cmd_schema)

    report = sub.add_parser("report", help="an HTML page of the per-key metrics TRAIN wrote")
    report.add_argument("pipeline")
    report.add_argument("-o", "--output", default="report.html", help="default: report.html")
    _add_variables(report)
    report.set_defaults(func=_cmd_report)


def _test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fix_tests", action="store_true", help="write the rows failing tests got into the file"
    )
    parser.add_argument("--test_suite", help="a file whose tests: to run instead of the pipeline's")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m beam_dsl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lint = sub.add_parser("lint", help="check .bdsl specs and pipeline.yaml files")
    lint.add_argument("files", nargs="+", help=".bdsl specs (checked together) or pipeline.yaml")
    lint.add_argument("--format", choices=("text", "json"), default="text")
    _add_variables(lint)
    lint.set_defaults(func=cmd_lint)

    comp = sub.add_parser("compile", help="write plain Beam YAML for a pipeline.yaml")
    comp.add_argument("pipeline")
    comp.add_argument("-o", "--output", help="output file (default: standard output)")
    comp.add_argument(
        "--format", choices=("text", "json"), default="text", help="format of diagnostics"
    )
    _add_variables(comp)
    comp.set_defaults(func=cmd_compile)

    run = sub.add_parser(
        "run",
        help="run a pipeline.yaml (in-process by default)",
        epilog="Any other --flag is passed to Beam as a pipeline option.",
    )
    run.add_argument("pipeline")
    run.add_argument(
        "--runner",
        default="FnApiRunner",
        help="FnApiRunner (in-process, default), DaskRunner, or any Beam runner",
    )
    run.add_argument(
        "--dask_address",
        default=None,
        help="Dask scheduler address for DaskRunner (default: a local cluster)",
    )
    _add_variables(run)
    run.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="processes for TRAIN's fits and MODEL's predictions (default: one per core; "
        "1: all in the run's own process)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    run.add_argument("-v", "--verbose", action="store_true", help="show Beam's own log lines")
    run.add_argument("--test", "--tests", action="store_true", help="run the tests: (as test)")
    run.add_argument("--report", metavar="FILE", help="write the per-key metrics page (as report)")
    _test_arguments(run)
    run.set_defaults(func=cmd_run)

    _add_tool_commands(sub)

    features = sub.add_parser("features", help="read features from an online store")
    fsub = features.add_subparsers(dest="features_command", required=True, parser_class=_Parser)
    get = fsub.add_parser("get", help="print one entity's features as of a time")
    get.add_argument("spec_name")
    get.add_argument("--store", required=True, help="sqlite:///path or redis://host:port/db")
    get.add_argument(
        "--as-of",
        default=None,
        metavar="T",
        help="epoch seconds or ISO-8601 (UTC without a zone); default: now",
    )
    get.add_argument("key", nargs="+", metavar="KEY=VALUE")
    get.set_defaults(func=cmd_features_get)
    listing = fsub.add_parser("list", help="list the feature sets of an online store")
    listing.add_argument("--store", required=True, help="sqlite:///path or redis://host:port/db")
    listing.set_defaults(func=cmd_features_list)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs the CLI; returns the exit code (never raises for user mistakes)."""
    out = out or sys.stdout
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = argparse.Namespace()
    try:
        if argv[:1] in (["run"], ["test"]):
            # Everything run does not know is a Beam pipeline option.
            args, beam_args = parser.parse_known_args(argv)
            args.beam_args = beam_args
        else:
            args = parser.parse_args(argv)
        return args.func(args, out)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    except argparse.ArgumentTypeError as exc:
        print(f"beam_dsl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            f"beam_dsl: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_USAGE
    except DiagnosticError as exc:
        _report(exc.diagnostics, getattr(args, "format", "text"), sys.stderr)
        return EXIT_DIAGNOSTICS
    except Exception as exc:  # a run-time configuration error, or a bug in beam_dsl
        config_error = _configuration_error(exc)
        if config_error:
            print(f"beam_dsl: run failed: {config_error}", file=sys.stderr)
            return EXIT_DIAGNOSTICS
        failure = run_failure(exc, args.pipeline) if hasattr(args, "pipeline") else None
        if failure is not None:  # the pipeline's or its data's, not beam_dsl's
            _report(failure.diagnostics, getattr(args, "format", "text"), sys.stderr)
            return EXIT_DIAGNOSTICS
        traceback.print_exc()
        print(
            "beam_dsl: internal error (exit 123); please report it with the trace above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
