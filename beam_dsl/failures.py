"""Why a run failed, told to its user: the pipeline's mistake (exit 1) or a beam_dsl bug (123).

A run can fail in Beam, in pandas or in a user's own code (a ``MapToFields``
callable, a stock transform given a file it cannot read) for reasons of the
user's pipeline or data: those end with exit 1 and one coded line, E460,
naming the transform and, where it can be found, its line in the user's
pipeline.yaml. Only a failure raised inside beam_dsl's own transforms or
compiler is an internal error (exit 123, with the trace): by contract they
send bad rows to ``errors`` and report configuration mistakes as E4xx.
"""

from __future__ import annotations

import os
import re
import traceback
from typing import Any

from beam_dsl.diagnostics import Diagnostic, DiagnosticError, Span

E_RUN = "E460"

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_OWN_CODE = tuple(_PACKAGE + part + os.sep for part in ("transforms", "dsl", "ir", "tools"))
# Beam names the transform a failure happened in: `[while running 'name/...']` when a
# DoFn failed, `at "name" at line 12` when building the pipeline failed.
_LABEL = re.compile(r"\[while running '([^'/]+)|at \"([^\"]+)\"")


class DataFailure(Exception):
    """A failure of the pipeline's data that beam_dsl's code met doing a stock transform's
    work: a TRAIN reading the file of the ReadFromCsv it was fused with
    (:func:`beam_dsl.run_start.fuse_csv_reads`), where pandas cannot parse a line. Told as
    the stock transform's failure would be (E460 in ``transform``), not as a bug. Its
    arguments are the message (``Type: text`` of the original error) and the transform's
    name, so that Beam can rebuild it with its step added to the message."""

    @classmethod
    def of(cls, error: BaseException, transform: str) -> DataFailure:
        return cls(f"{type(error).__name__}: {error}", transform)


def _chain(exc: BaseException) -> list[BaseException]:
    seen, out = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def raised_by_beam_dsl(exc: BaseException) -> bool:
    """Whether the first failure of ``exc``'s chain came out of beam_dsl's own code: raised
    in beam_dsl, or by a library beam_dsl's transforms or compiler called (the CLI and the
    runner only call Beam on the user's pipeline)."""
    root = _chain(exc)[-1]
    files = [os.path.abspath(f) for f in _files(root)]
    return bool(files) and (
        files[-1].startswith(_PACKAGE) or any(f.startswith(_OWN_CODE) for f in files)
    )


def _files(exc: BaseException) -> list[str]:
    """The files of ``exc``'s traceback, innermost last. An exception raised in a worker
    process (TRAIN's fits, MODEL's predictions) reaches the run with the worker's
    traceback as text only: concurrent.futures chains it as a ``_RemoteTraceback``
    whose ``tb`` holds it."""
    if exc.__traceback__ is None and isinstance(getattr(exc, "tb", None), str):
        return _REMOTE_FILE.findall(exc.tb)
    return [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]


_REMOTE_FILE = re.compile(r'^\s*File "([^"]+)", line \d+', re.MULTILINE)


def run_failure(exc: BaseException, pipeline: str) -> DiagnosticError | None:
    """The coded error (E460) for a run that failed through the pipeline or its data, or
    None where beam_dsl itself failed (a bug: the caller shows the trace)."""
    chain = _chain(exc)
    data = [e for e in chain if isinstance(e, DataFailure)]
    if isinstance(exc, DiagnosticError) or not data and raised_by_beam_dsl(exc):
        return None
    if data:  # the first one raised, before Beam added its step to the message
        what, label = data[-1].args[0], data[-1].args[1]
    else:
        root = chain[-1]
        what = f"{type(root).__name__}: {str(root).strip()}"
        label = next((m.group(1) or m.group(2) for e in chain
                      for m in [_LABEL.search(str(e))] if m), None)
    name, _, text = what.partition(": ")
    first_line = (text.splitlines() or [""])[0][:300]
    message = f"the pipeline failed{f' in {label}' if label else ''}: {name}: {first_line}"
    span, line = _locate(pipeline, label)
    hint = "the failure is in the pipeline or its data, not in beam_dsl"
    return DiagnosticError([Diagnostic(E_RUN, message, pipeline, span, hint, line)])


def _locate(pipeline: str, label: str | None) -> tuple[Span | None, str | None]:
    """The span of the transform named (or typed) ``label`` in the user's pipeline.yaml."""
    if label is None:
        return None, None
    from beam_dsl.diagnostics import read_source
    from beam_dsl.dsl.yamlfile import load_yaml

    try:
        source, problems = read_source(pipeline)
        doc, problems = load_yaml(source) if source is not None else (None, problems)
    except Exception:  # a file Jinja must render first, say: no location then
        return None, None
    if doc is None:
        return None, None
    for path, transform in _transforms(doc.data.get("pipeline"), ("pipeline",)):
        if label in (transform.get("name"), transform.get("type")):
            span = doc.span(path + ("type",))
            return span, source.line(span.line) if span else None
    return None, None


def _transforms(node: Any, path: tuple):
    if not isinstance(node, dict):
        return
    for i, child in enumerate(node.get("transforms") or ()):
        if isinstance(child, dict):
            yield path + ("transforms", i), child
            yield from _transforms(child, path + ("transforms", i))
