"""Spans, coded diagnostics and their rendering.

Every mistake in a spec or pipeline file becomes a :class:`Diagnostic` with a
stable code, rendered as ``file:line:col: error[E201]: message`` followed by
the source line and a caret. Code families:

* ``E0xx`` syntax (the lark parser) and whole-file limits (encoding, size, depth),
* ``E1xx`` schema (pipeline.yaml against the JSON Schemas),
* ``E2xx`` semantic (names, references, cycles, clauses, literals),
* ``E3xx`` compile (lowering a checked spec),
* ``E4xx`` run-time configuration (model files, devices, stores).
"""

from __future__ import annotations

import codecs
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_FILE_BYTES = 500_000
"""The largest spec or pipeline.yaml (and Jinja output) read (E006). lark's
pure-Python LALR parser and the tree it builds cost 20-40 us a token here, so
lint reads 150-300 KB of spec a second: this keeps it to a few seconds (a 5 MB
spec took two minutes)."""

# Where source lines break, as each parser counts lines: the spec parser sees
# \n, \r\n and \r (parser.py turns the last two into \n); PyYAML also
# breaks at NEL, LS and PS.
SPEC_BREAKS = re.compile(r"\r\n|\r|\n")
YAML_BREAKS = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


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
            raw = _printable(self.source_line)
            text = raw.expandtabs(4)
            # Columns count characters; the caret goes where they show once tabs expand.
            start = len(raw[: self.span.column - 1].expandtabs(4))
            end = (
                len(raw[: self.span.end_column - 1].expandtabs(4))
                if self.span.end_line == self.span.line
                else len(text)
            )
            if len(text) > _SHOWN:  # a long line: a window around the caret
                left = max(0, min(start - 40, len(text) - _SHOWN))
                right = left + _SHOWN
                text = (
                    ("..." if left else "")
                    + text[left:right]
                    + ("..." if right < len(text) else "")
                )
                shift = left - (3 if left else 0)
                start, end = start - shift, min(end - shift, len(text))
            lines.append("    " + text)
            lines.append("    " + " " * start + "^" * max(1, end - start))
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


_SHOWN = 160  # characters of a source line shown at most


def _printable(line: str) -> str:
    """``line`` with control characters shown as '?', one for one (the caret stays put)."""
    return "".join(c if c == "\t" or c.isprintable() else "?" for c in line)


@dataclass
class Source:
    """A named source text that diagnostics point into.

    ``breaks`` splits it into lines the way its parser counts them, so that a
    diagnostic's line number shows the right source line.
    """

    path: str
    text: str
    breaks: re.Pattern = field(default=SPEC_BREAKS, repr=False)
    _lines: list[str] = field(default_factory=list, repr=False)

    def line(self, number: int) -> str | None:
        if not self._lines:
            self._lines = self.breaks.split(self.text)
        if 1 <= number <= len(self._lines):
            return self._lines[number - 1]
        return None

    def diagnostic(
        self, code: str, message: str, span: Span | None, hint: str | None = None
    ) -> Diagnostic:
        line = self.line(span.line) if span else None
        return Diagnostic(code, message, self.path, span, hint, line)


def read_source(
    path: str, breaks: re.Pattern = SPEC_BREAKS
) -> tuple[Source | None, Diagnostic | None]:
    """A spec or pipeline file as text, or the diagnostic that says why not.

    UTF-8 only (a leading BOM is dropped); a file over MAX_FILE_BYTES is E006,
    one that is not UTF-8 is E005 with the offset of the first bad byte. I/O
    errors propagate as OSError.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES:,} bytes"
        hint = "split it into several files"
        return None, Diagnostic("E006", message, path, None, hint)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, Diagnostic("E005", "the file is UTF-16, not UTF-8", path, None, _RESAVE)
    try:
        return Source(path, data.decode("utf-8-sig"), breaks), None
    except UnicodeDecodeError as exc:
        return None, _not_utf8(path, data, exc.start)


_RESAVE = "save it as UTF-8"


def _not_utf8(path: str, data: bytes, offset: int) -> Diagnostic:
    """E005 at the line and column of the byte at ``offset`` that is not UTF-8."""
    starts = [m.end() for m in re.finditer(rb"\r\n|\r|\n", data[:offset])]
    line_start = starts[-1] if starts else len(codecs.BOM_UTF8) * data.startswith(codecs.BOM_UTF8)
    column = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    end = re.search(rb"[\r\n]", data[offset:])
    line_text = data[line_start : offset + end.start() if end else len(data)]
    message = f"not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset}"
    span = Span.point(len(starts) + 1, column)
    return Diagnostic("E005", message, path, span, _RESAVE, line_text.decode("utf-8", "replace"))


class DiagnosticError(Exception):
    """Raised to stop a phase; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    def __reduce__(self):  # pickled whole: a worker process raises it for the run's process
        return type(self), (self.diagnostics,)


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
