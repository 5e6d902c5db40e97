"""Spans, coded diagnostics and their rendering.

Every mistake in a spec or pipeline file becomes a :class:`Diagnostic` with a
stable code, rendered as ``file:line:col: error[E201]: message`` followed by
the source line and a caret. Code families:

* ``E0xx`` syntax (the lark parser),
* ``E1xx`` schema (pipeline.yaml against the JSON Schemas),
* ``E2xx`` semantic (names, references, cycles, clauses, literals),
* ``E3xx`` compile (lowering a checked spec),
* ``E4xx`` run-time configuration (model files, devices, stores).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range in one source text (end is exclusive)."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, line: int, column: int, width: int = 1) -> Span:
        return cls(line, column, line, column + width)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a file."""

    code: str
    message: str
    file: str
    span: Span | None
    hint: str | None = None
    source_line: str | None = None
    severity: str = "error"

    def render(self) -> str:
        """Renders the diagnostic for a terminal: location, source line, caret, hint."""
        if self.span is None:
            head = f"{self.file}: {self.severity}[{self.code}]: {self.message}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        head = (
            f"{self.file}:{self.span.line}:{self.span.column}: "
            f"{self.severity}[{self.code}]: {self.message}"
        )
        lines = [head]
        if self.source_line is not None:
            text = self.source_line.rstrip("\n").expandtabs(4)
            lines.append("    " + text)
            width = (
                self.span.end_column - self.span.column
                if self.span.end_line == self.span.line
                else len(text) - self.span.column + 1
            )
            lines.append("    " + " " * (self.span.column - 1) + "^" * max(1, width))
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        span = self.span
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "end_line": span.end_line if span else None,
            "end_column": span.end_column if span else None,
            "hint": self.hint,
        }


@dataclass
class Source:
    """A named source text that diagnostics point into."""

    path: str
    text: str
    _lines: list[str] = field(default_factory=list, repr=False)

    def line(self, number: int) -> str | None:
        if not self._lines:
            self._lines = self.text.splitlines() or [""]
        if 1 <= number <= len(self._lines):
            return self._lines[number - 1]
        return None

    def diagnostic(
        self, code: str, message: str, span: Span | None, hint: str | None = None
    ) -> Diagnostic:
        line = self.line(span.line) if span else None
        return Diagnostic(code, message, self.path, span, hint, line)


class DiagnosticError(Exception):
    """Raised to stop a phase; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


def config_error(
    kind: str, name: str, code: str, message: str, hint: str | None = None
) -> DiagnosticError:
    """The one way a transform reports a mistake it finds at run time.

    There is no source position at run time, so the diagnostic names the
    statement instead (``TRAIN income_by_education: error[E431]: ...``).
    """
    return DiagnosticError([Diagnostic(code, message, f"{kind} {name}", None, hint)])


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
