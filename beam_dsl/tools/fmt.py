"""``beam_dsl fmt``: the one canonical layout of a ``.bdsl`` file, comments kept.

The layout is a function of the AST alone, plus two choices the author
makes and fmt keeps: where comments are, and whether a short statement is
written on one line.

* Keywords are upper case; ``true``, ``false`` and ``null`` lower case.
  Names, strings, numbers and quantities are written as they were (a quoted
  name stays quoted). ``<>`` becomes ``!=``; parentheses in expressions are
  only those precedence needs.
* A statement is its keyword and name, then one clause per line indented two
  spaces, ``;`` after the last clause, and one blank line before the next
  statement. A statement written on one line stays on one line if it fits in
  100 columns; adjacent one-line statements of the same shape (``MODEL``
  after ``MODEL``) stay adjacent, their clauses aligned in columns.
* A clause that does not fit in 100 columns breaks after commas, the next
  line aligned under its first item; ``SELECT`` then puts one item per line
  with the ``AS`` aligned. ``SWITCH`` puts each ``WHEN`` on its own line.
  The ``=`` of consecutive ``STEP`` clauses are aligned.
* Comments stay where they were: a comment on its own line before a
  statement or a clause stays before it; a comment at the end of a line stays
  at the end of that line; blank lines between comments and statements
  are kept (one at most).

fmt never changes meaning: it refuses a file with syntax errors, and the
tests check that the lowered IR of every formatted file is the same as the
original's.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import lark

from beam_dsl.diagnostics import DiagnosticError
from beam_dsl.dsl import ast
from beam_dsl.dsl.parser import parse

WIDTH = 100
INDENT = "  "

_NAME_PART = re.compile(r'"[^"\n]+"|[A-Za-z_][A-Za-z0-9_]*')

# Expression precedence, loosest first: what each construct needs of its operands.
_OR, _AND, _NOT, _PREDICATE, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)
_BINARY_LEVEL = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("=", "!=", "<", "<=", ">", ">="), _PREDICATE),
    **dict.fromkeys(("+", "-"), _SUM),
    **dict.fromkeys(("*", "/", "%"), _PRODUCT),
}


@dataclass(frozen=True)
class _Comment:
    text: str
    start: int  # offsets into the source
    end: int
    line: int
    end_line: int


@functools.cache
def _comment_parser() -> tuple[lark.Lark, list]:
    """The spec grammar with a lexer callback that keeps the comments it skips."""
    sink: list = []
    grammar = resources.files("beam_dsl.dsl").joinpath("grammar.lark").read_text()
    parser = lark.Lark(
        grammar,
        parser="lalr",
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": sink.append, "BLOCK_COMMENT": sink.append},
    )
    return parser, sink


def _comments(text: str) -> list[_Comment]:
    parser, sink = _comment_parser()
    sink.clear()
    parser.parse(text)
    found = [
        _Comment(str(t).rstrip(), t.start_pos, t.end_pos, t.line, t.end_line or t.line)
        for t in sink
    ]
    sink.clear()
    return sorted(found, key=lambda c: c.start)


def format_text(text: str, path: str = "<spec>") -> str:
    """The canonical layout of a spec; raises DiagnosticError where it has syntax errors."""
    spec, diagnostics = parse(text, path)
    if diagnostics:
        raise DiagnosticError(diagnostics)
    return _Printer(text, _comments(text)).file(spec.statements)


def spec_files(paths: Sequence[str]) -> list[str]:
    """The files to format: each path, with a directory meaning its ``.bdsl`` files."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(sorted(glob.glob(os.path.join(path, "**", "*.bdsl"), recursive=True)))
        else:
            out.append(path)
    return out


# ---------------------------------------------------------------- layout helpers


def _fill(head: str, items: list[str], tail: str, col: int | None) -> list[str]:
    """``head item, item, ... tail`` on one line, or broken after commas with the
    next lines aligned under the first item when it would pass WIDTH."""
    one = head + ", ".join(items) + tail
    if col is None or len(items) < 2 or col + len(one) <= WIDTH:
        return [one]
    hang = " " * len(head)
    lines, line = [], head + items[0]
    for item in items[1:]:
        if col + len(line) + 2 + len(item) < WIDTH:
            line += ", " + item
        else:
            lines.append(line + ",")
            line = hang + item
    lines.append(line + tail)
    return lines


@dataclass
class _Element:
    """The header (``KEYWORD name``) or one clause of a statement, with its comments."""

    node: Any
    start: int
    end: int
    end_line: int
    leading: list[_Comment] = field(default_factory=list)
    trailing: list[_Comment] = field(default_factory=list)


@dataclass
class _Block:
    """One top-level item of the output: a statement or a comment."""

    lines: list[str]
    first_line: int  # its lines in the source, for blank lines and adjacency
    last_line: int
    statement: bool = False
    one_line: bool = False
    cells: list[str] = field(default_factory=list)  # a one-line statement's parts
    suffix: str = ""  # ";" and any trailing comment of a one-line statement
    shape: tuple = ()


class _Printer:
    def __init__(self, text: str, comments: list[_Comment]):
        self.text = text
        self.comments = comments
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def offset(self, line: int, column: int) -> int:
        return self.line_starts[line - 1] + column - 1

    def source(self, node: Any) -> str:
        span = node.span
        return self.text[self.offset(span.line, span.column) : self.offset(
            span.end_line, span.end_column
        )]

    # -- the file

    def file(self, statements: tuple[ast.Statement, ...]) -> str:
        blocks = list(self._blocks(statements))
        self._align(blocks)
        out: list[str] = []
        for i, block in enumerate(blocks):
            if i and self._blank_between(blocks[i - 1], block):
                out.append("")
            out.extend(block.lines)
        return "\n".join(out) + "\n" if out else ""

    def _blocks(self, statements: tuple[ast.Statement, ...]) -> Iterator[_Block]:
        comments = list(self.comments)
        for stmt in statements:
            start = self.offset(stmt.span.line, stmt.span.column)
            end = self.offset(stmt.span.end_line, stmt.span.end_column)
            while comments and comments[0].end <= start:
                c = comments.pop(0)
                yield _Block(c.text.split("\n"), c.line, c.end_line)
            inner = []
            # Inside the statement, or at the end of its last line.
            while comments and (comments[0].start < end or comments[0].line == stmt.span.end_line):
                inner.append(comments.pop(0))
            yield self._statement(stmt, inner)
        for c in comments:
            yield _Block(c.text.split("\n"), c.line, c.end_line)

    @staticmethod
    def _blank_between(prev: _Block, block: _Block) -> bool:
        blank_in_source = block.first_line > prev.last_line + 1
        if prev.statement and block.statement:
            return not (prev.one_line and block.one_line) or blank_in_source
        if prev.statement:
            return True
        return blank_in_source

    def _align(self, blocks: list[_Block]) -> None:
        """Aligns the clauses of adjacent one-line statements of the same shape."""
        run: list[_Block] = []
        for block in [*blocks, None]:
            if (
                block is not None
                and run
                and block.one_line
                and block.shape == run[-1].shape
                and block.first_line == run[-1].last_line + 1
            ):
                run.append(block)
                continue
            if len(run) > 1:
                widths = [max(len(b.cells[i]) for b in run) for i in range(len(run[0].cells))]
                lines = [
                    " ".join([*map(str.ljust, b.cells[:-1], widths[:-1]), b.cells[-1]])
                    for b in run
                ]
                if all(len(line) <= WIDTH for line in lines):
                    for b, line in zip(run, lines, strict=True):
                        b.lines = [line + b.suffix]
            run = [block] if block is not None and block.one_line else []

    # -- statements

    def _elements(self, stmt: ast.Statement, inner: list[_Comment]) -> list[_Element]:
        header_end = stmt.name.span
        elements = [
            _Element(
                None,
                self.offset(stmt.span.line, stmt.span.column),
                self.offset(header_end.end_line, header_end.end_column),
                header_end.end_line,
            )
        ]
        for clause in stmt.clauses:
            s = clause.span
            elements.append(
                _Element(
                    clause, self.offset(s.line, s.column), self.offset(s.end_line, s.end_column),
                    s.end_line,
                )
            )
        for c in inner:
            self._attach(c, elements)
        return elements

    @staticmethod
    def _attach(comment: _Comment, elements: list[_Element]) -> None:
        for e in elements:
            if e.start < comment.start < e.end:  # inside a clause: before it
                e.leading.append(comment)
                return
        before = [e for e in elements if e.end <= comment.start]
        if before and before[-1].end_line == comment.line:
            before[-1].trailing.append(comment)
            return
        after = [e for e in elements if e.start >= comment.end]
        (after[0].leading if after else elements[-1].trailing).append(comment)

    def _statement(self, stmt: ast.Statement, inner: list[_Comment]) -> _Block:
        elements = self._elements(stmt, inner)
        header = f"{stmt.keyword} {self.name(stmt.name)}"
        last_line = max([stmt.span.end_line, *(c.end_line for c in inner)])
        trailing = elements[-1].trailing
        suffix = ";" + ("  " + " ".join(c.text for c in trailing) if trailing else "")
        cells = [header, *(self.clause(e.node, None)[0] for e in elements[1:])]
        one_line = (
            stmt.span.line == stmt.span.end_line
            and not any(e.leading for e in elements)
            and not any(e.trailing for e in elements[:-1])
            and len(" ".join(cells)) + 1 <= WIDTH
        )
        block = _Block([], stmt.span.line, last_line, statement=True, one_line=one_line)
        if one_line:
            block.lines = [" ".join(cells) + suffix]
            block.cells, block.suffix = cells, suffix
            block.shape = (stmt.keyword, *(type(e.node).__name__ for e in elements[1:]))
            return block
        steps = [e.node.name for e in elements[1:] if isinstance(e.node, ast.StepClause)]
        self.step_width = max((len(self.name(n)) for n in steps), default=0)
        for i, e in enumerate(elements):
            indent = "" if e.node is None else INDENT
            for c in e.leading:
                block.lines.append(indent + c.text)
            lines = [header] if e.node is None else self.clause(e.node, len(INDENT))
            lines = [indent + line for line in lines]
            if i == len(elements) - 1:
                lines[-1] += suffix
            elif e.trailing:
                lines[-1] += "  " + " ".join(c.text for c in e.trailing)
            block.lines.extend(lines)
        return block

    # -- names, values, expressions

    def name(self, node: Any) -> str:
        """A name or ``qualifier.name`` as written (quoted names stay quoted)."""
        return ".".join(_NAME_PART.findall(self.source(node)))

    def names(self, nodes: tuple) -> list[str]:
        return [self.name(n) for n in nodes]

    @staticmethod
    def literal(node: ast.Literal) -> str:
        if node.kind == "bool":
            return "true" if node.value else "false"
        if node.kind == "null":
            return "null"
        return node.text or str(node.value)

    def value(self, node: Any) -> str:
        if isinstance(node, ast.Literal):
            return self.literal(node)
        if isinstance(node, ast.TupleValue):
            items = [self.value(v) for v in node.items]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if isinstance(node, ast.ColumnRef):
            return self.name(node)
        if isinstance(node, ast.Call):
            return self.call(node, parens=True)[0]
        raise TypeError(f"not a value: {node!r}")  # pragma: no cover - the grammar has no other

    def arguments(self, call: ast.Call) -> list[str]:
        return [self.value(a) for a in call.args] + [
            f"{k.name} = {self.value(k.value)}" for k in call.kwargs
        ]

    def call(self, call: ast.Call, col: int | None = None, head: str = "", parens: bool = False):
        args = self.arguments(call)
        if not args and not parens:
            return [head + call.func]
        return _fill(f"{head}{call.func}(", args, ")", col)

    def expr(self, node: Any, level: int = _OR) -> str:
        text, own = self._expr(node)
        return f"({text})" if own < level else text

    def _expr(self, node: Any) -> tuple[str, int]:
        if isinstance(node, ast.Binary):
            own = _BINARY_LEVEL[node.op]
            left_level = _SUM if own == _PREDICATE else own
            right_level = _SUM if own == _PREDICATE else own + 1
            left, right = self.expr(node.left, left_level), self.expr(node.right, right_level)
            return f"{left} {node.op.upper()} {right}", own
        if isinstance(node, ast.Unary):
            if node.op == "not":
                return "NOT " + self.expr(node.operand, _NOT), _NOT
            operand = self.expr(node.operand, _UNARY)
            return "-" + (f"({operand})" if operand.startswith("-") else operand), _UNARY
        negated = " NOT" if getattr(node, "negated", False) else ""
        if isinstance(node, ast.InList):
            items = ", ".join(self.expr(i) for i in node.items)
            return f"{self.expr(node.operand, _SUM)}{negated} IN ({items})", _PREDICATE
        if isinstance(node, ast.Between):
            low, high = self.expr(node.low, _SUM), self.expr(node.high, _SUM)
            return f"{self.expr(node.operand, _SUM)}{negated} BETWEEN {low} AND {high}", _PREDICATE
        if isinstance(node, ast.Like):
            pattern = self.expr(node.pattern, _SUM)
            return f"{self.expr(node.operand, _SUM)}{negated} LIKE {pattern}", _PREDICATE
        if isinstance(node, ast.IsNull):
            return f"{self.expr(node.operand, _SUM)} IS{negated} NULL", _PREDICATE
        if isinstance(node, ast.FuncCall):
            return f"{node.func}({', '.join(self.expr(a) for a in node.args)})", _ATOM
        if isinstance(node, ast.ColumnRef):
            return self.name(node), _ATOM
        return self.literal(node), _ATOM

    # -- clauses: each returns its lines (one when col is None: no breaking)

    def clause(self, clause: ast.Clause, col: int | None) -> list[str]:
        return getattr(self, type(clause).__name__)(clause, col)

    def _list(self, keyword: str, items: list[str], col: int | None) -> list[str]:
        return _fill(keyword + " ", items, "", col)

    def _columns(self, clause: Any, col: int | None) -> list[str]:
        return self._list(clause.keyword, self.names(clause.columns), col)

    PerClause = InputClause = OutputClause = EntityClause = _columns

    def WhereClause(self, c: ast.WhereClause, col: int | None) -> list[str]:
        return ["WHERE " + self.expr(c.expr)]

    def GateClause(self, c: ast.GateClause, col: int | None) -> list[str]:
        return ["GATE " + self.expr(c.expr)]

    def FeaturesClause(self, c: ast.FeaturesClause, col: int | None) -> list[str]:
        if not c.star:
            return self._list("FEATURES", self.names(c.columns), col)
        if not c.except_:
            return ["FEATURES *"]
        return _fill("FEATURES * EXCEPT (", self.names(c.except_), ")", col)

    def LabelClause(self, c: ast.LabelClause, col: int | None) -> list[str]:
        return ["LABEL " + self.name(c.column)]

    def UsingClause(self, c: Any, col: int | None) -> list[str]:
        return self.call(c.call, col, head=c.keyword + " ")

    CustomClause = ClassClause = CallClause = UsingClause

    def EncodeClause(self, c: ast.EncodeClause, col: int | None) -> list[str]:
        encoders = [f"{self.name(e.name)}({', '.join(self.names(e.columns))})" for e in c.encoders]
        return self._list("ENCODE", encoders, col)

    def HoldoutClause(self, c: ast.HoldoutClause, col: int | None) -> list[str]:
        seed = f" SEED {c.seed}" if c.seed is not None else ""
        return [f"HOLDOUT {self.literal(c.fraction)}{seed}"]

    def MetricsClause(self, c: ast.MetricsClause, col: int | None) -> list[str]:
        return self._list("METRICS", self.names(c.metrics), col)

    def MinRowsClause(self, c: ast.MinRowsClause, col: int | None) -> list[str]:
        return [f"MIN ROWS {c.count}"]

    def SaveClause(self, c: ast.SaveClause, col: int | None) -> list[str]:
        return ["SAVE TO " + self.literal(c.path)]

    def HintsClause(self, c: ast.HintsClause, col: int | None) -> list[str]:
        hints = [f"{h.name} = {self.value(h.value)}" for h in c.hints]
        return _fill("HINTS (", hints, ")", col)

    def FrameworkClause(self, c: ast.FrameworkClause, col: int | None) -> list[str]:
        return [f"{c.framework.upper()} {self.literal(c.path)}"]

    def FallbackClause(self, c: ast.FallbackClause, col: int | None) -> list[str]:
        return ["FALLBACK " + self.name(c.model)]

    def BatchClause(self, c: ast.BatchClause, col: int | None) -> list[str]:
        text = f"BATCH {c.min_size}"
        if c.max_size is not None:
            text += f" TO {c.max_size}"
        if c.wait is not None:
            text += f" WAIT {self.literal(c.wait)}"
        return [text]

    def DeviceClause(self, c: ast.DeviceClause, col: int | None) -> list[str]:
        return ["DEVICE " + c.device.name.upper()]

    def SharedClause(self, c: ast.SharedClause, col: int | None) -> list[str]:
        return ["SHARED"]

    def RefreshClause(self, c: ast.RefreshClause, col: int | None) -> list[str]:
        return ["REFRESH EVERY " + self.literal(c.every)]

    def TrustClause(self, c: ast.TrustClause, col: int | None) -> list[str]:
        return self._list("TRUST", [self.literal(t) for t in c.types], col)

    def ClassesClause(self, c: ast.ClassesClause, col: int | None) -> list[str]:
        return _fill("CLASSES (", [self.literal(x) for x in c.labels], ")", col)

    def StepClause(self, c: ast.StepClause, col: int | None) -> list[str]:
        name = self.name(c.name)
        if col is not None:
            name = name.ljust(self.step_width)
        head = f"STEP {name} = {self.name(c.model)}("
        return _fill(head, ["*"] if c.star else self.names(c.args), ")", col)

    def CombineClause(self, c: ast.CombineClause, col: int | None) -> list[str]:
        alias = f" AS {self.name(c.alias)}" if c.alias is not None else ""
        if isinstance(c.value, ast.Call):
            lines = self.call(c.value, col, head="OUTPUT ", parens=True)
        else:
            lines = ["OUTPUT " + self.value(c.value)]
        lines[-1] += alias
        return lines

    def SplitClause(self, c: ast.SplitClause, col: int | None) -> list[str]:
        arms = [f"{self.name(a.model)} {self.literal(a.share)}" for a in c.arms]
        return _fill(f"SPLIT BY {', '.join(self.names(c.keys))} (", arms, ")", col)

    def ShadowClause(self, c: ast.ShadowClause, col: int | None) -> list[str]:
        return self._list("SHADOW", self.names(c.models), col)

    def CascadeClause(self, c: ast.CascadeClause, col: int | None) -> list[str]:
        arms = [
            self.name(a.model) + (f" WHEN {self.expr(a.when)}" if a.when is not None else "")
            for a in c.arms
        ]
        return _fill("CASCADE (", arms, ")", col)

    def SwitchClause(self, c: ast.SwitchClause, col: int | None) -> list[str]:
        parts = [f"WHEN {self.expr(case.when)} THEN {self.name(case.model)}" for case in c.cases]
        if c.default is not None:
            parts.append("ELSE " + self.name(c.default))
        if col is None:
            return [" ".join(["SWITCH", *parts])]
        return ["SWITCH", *(INDENT + p for p in parts)]

    def TimestampClause(self, c: ast.TimestampClause, col: int | None) -> list[str]:
        return ["TIMESTAMP " + self.name(c.column)]

    def WindowClause(self, c: ast.WindowClause, col: int | None) -> list[str]:
        text = f"WINDOW {c.kind.upper()} {self.literal(c.size)}"
        if c.every is not None:
            text += f" EVERY {self.literal(c.every)}"
        return [text]

    def WindowsClause(self, c: ast.WindowsClause, col: int | None) -> list[str]:
        return _fill("WINDOWS (", [self.literal(s) for s in c.sizes], ")", col)

    def SelectClause(self, c: ast.SelectClause, col: int | None) -> list[str]:
        items = []
        for item in c.items:
            agg = item.aggregate
            args = "*" if agg.star else ", ".join(self.expr(a) for a in agg.args)
            text = f"{self.name(agg.func)}({args})"
            if item.filter is not None:
                text += f" FILTER (WHERE {self.expr(item.filter)})"
            items.append((text, self.name(item.alias)))
        one = "SELECT " + ", ".join(f"{a} AS {alias}" for a, alias in items)
        if col is None or len(items) < 2 or col + len(one) <= WIDTH:
            return [one]
        width = max(len(a) for a, _ in items)
        lines = [f"{a.ljust(width)} AS {alias}," for a, alias in items]
        lines[-1] = lines[-1][:-1]
        return ["SELECT " + lines[0], *("       " + line for line in lines[1:])]

    def TtlClause(self, c: ast.TtlClause, col: int | None) -> list[str]:
        return ["TTL " + self.literal(c.duration)]

    def OnlineClause(self, c: ast.OnlineClause, col: int | None) -> list[str]:
        return ["ONLINE " + self.literal(c.uri)]

    def OfflineClause(self, c: ast.OfflineClause, col: int | None) -> list[str]:
        return ["OFFLINE " + self.literal(c.path)]

    def LatenessClause(self, c: ast.LatenessClause, col: int | None) -> list[str]:
        return ["ALLOWED LATENESS " + self.literal(c.duration)]

    def AsOfClause(self, c: ast.AsOfClause, col: int | None) -> list[str]:
        return ["AS OF " + self.name(c.column)]

    def JoinClause(self, c: ast.JoinClause, col: int | None) -> list[str]:
        return self._list("JOIN", self.names(c.features), col)
