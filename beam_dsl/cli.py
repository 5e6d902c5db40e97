"""The command line: ``python -m beam_dsl lint | compile | run | features get``.

Exit codes: 0 success; 1 diagnostics (a mistake in a spec or pipeline file,
or a failed run); 2 usage or I/O errors (a missing file, a bad flag);
123 an internal error (a bug in beam_dsl: please report it).

``lint`` and ``compile`` import no Beam, scikit-learn, torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from beam_dsl.diagnostics import Diagnostic, DiagnosticError
from beam_dsl.failures import run_failure

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 123


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors; keep that, say it plainly
        self.print_usage(sys.stderr)
        print(f"beam_dsl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
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

    variables = _variables(args.var)
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

    compilation = compile_pipeline(_pipeline_file(args), _variables(args.var), check_data=False)
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
    pipeline = _pipeline_file(args)
    from beam_dsl.runner import run_pipeline, worker_options

    summary = run_pipeline(
        pipeline,
        runner=args.runner,
        variables=_variables(args.var),
        beam_args=[*args.beam_args, *worker_options(args.workers)],
        dask_address=args.dask_address,
        progress=None if args.quiet else sys.stderr,
    )
    print(summary.render(), file=out)
    return EXIT_OK


def cmd_features_get(args: argparse.Namespace, out: TextIO) -> int:
    from beam_dsl.features_cli import format_features, get_features

    key = {}
    for pair in args.key:
        name, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"entity keys are NAME=VALUE, not '{pair}'")
        key[name] = value
    features = get_features(args.spec_name, args.store, key)
    if features is None:
        print(f"no features for {args.spec_name} {key}", file=sys.stderr)
        return EXIT_DIAGNOSTICS
    print(format_features(features), file=out)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m beam_dsl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lint = sub.add_parser("lint", help="check .bdsl specs and pipeline.yaml files")
    lint.add_argument("files", nargs="+", help=".bdsl specs (checked together) or pipeline.yaml")
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Jinja variable for pipeline.yaml (repeatable)",
    )
    lint.set_defaults(func=cmd_lint)

    comp = sub.add_parser("compile", help="write plain Beam YAML for a pipeline.yaml")
    comp.add_argument("pipeline")
    comp.add_argument("-o", "--output", help="output file (default: standard output)")
    comp.add_argument(
        "--format", choices=("text", "json"), default="text", help="format of diagnostics"
    )
    comp.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
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
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="processes for TRAIN's fits (default: one per core, for TRAINs with enough rows)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=cmd_run)

    features = sub.add_parser("features", help="read features from an online store")
    fsub = features.add_subparsers(dest="features_command", required=True, parser_class=_Parser)
    get = fsub.add_parser("get", help="print the current features of one entity")
    get.add_argument("spec_name")
    get.add_argument("--store", required=True, help="sqlite:///path or redis://host:port/db")
    get.add_argument("key", nargs="+", metavar="KEY=VALUE")
    get.set_defaults(func=cmd_features_get)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs the CLI; returns the exit code (never raises for user mistakes)."""
    out = out or sys.stdout
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = argparse.Namespace()
    try:
        if argv[:1] == ["run"]:
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
