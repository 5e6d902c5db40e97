"""Text -> AST: the lark LALR parser and the transformer that builds ast nodes.

Syntax errors do not stop at the first one: after an error the parser drops
the broken statement, skips to its end (the next top-level ``;``) and goes on
from there in the same pass, so one run reports a syntax error in every broken
statement and the cost stays linear in the size of the file.

Limits (each a coded diagnostic, never a crash): a statement's syntax tree
nests at most :data:`MAX_DEPTH` levels (E007), integers stay below 2**63 and
other numbers are finite (E008), a keyword argument is given once (E009).
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources

import lark
from lark import Token, Transformer, v_args

from beam_dsl.diagnostics import Diagnostic, Source, Span
from beam_dsl.dsl import ast

MAX_DEPTH = 64  # levels of one statement's syntax tree (about 60 terms joined by OR)
_MAX_INT = 2**63
_NEWLINES = re.compile(r"\r\n?")  # lark counts lines by '\n' only

# Human names for terminals in "expected ..." messages.
_TERMINAL_NAMES = {
    "SEMICOLON": "';'",
    "COMMA": "','",
    "LPAR": "'('",
    "RPAR": "')'",
    "EQUAL": "'='",
    "STAR": "'*'",
    "DOT": "'.'",
    "MINUS": "'-'",
    "NAME": "a name",
    "QUOTED_NAME": "a quoted name",
    "STRING": "a string",
    "INT": "an integer",
    "FLOAT": "a number",
    "QUANTITY": "a number with a unit",
    "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/' or '%'",
    "FRAMEWORK": "SKLEARN, PYTORCH, HUGGINGFACE or ONNX",
    "$END": "end of file",
}


@functools.cache
def _lark() -> lark.Lark:
    grammar = resources.files("beam_dsl.dsl").joinpath("grammar.lark").read_text()
    return lark.Lark(
        grammar,
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,  # the LALR tables, in the temp dir, keyed by grammar and lark version
    )


def _span(meta_or_token) -> Span:
    return Span(
        meta_or_token.line,
        meta_or_token.column,
        meta_or_token.end_line,
        meta_or_token.end_column,
    )


def _unquote_string(text: str) -> str:
    return text[1:-1].replace("''", "'")


class _StatementError(Exception):
    """A statement that parsed but cannot be built (a number too large): it is dropped."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.span, self.hint = code, message, span, hint


def _number(text: str, span: Span) -> int | float:
    """An int or float literal's value; E008 when it does not fit 64 bits / a float."""
    if "." not in text and "e" not in text.lower():
        # len() first: int() refuses more than 4,300 digits with a ValueError.
        digits = text.lstrip("0") or "0"
        if len(digits) <= 19 and int(digits) < _MAX_INT:
            return int(digits)
    else:
        value = float(text)
        if math.isfinite(value):
            return value
    shown = text if len(text) <= 24 else text[:20] + "..."
    raise _StatementError(
        "E008",
        f"number {shown} is too large",
        span,
        "integers must be below 2**63 (9223372036854775808), other numbers below 1.8e308",
    )


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ast nodes from lark's tree, one method per grammar rule.

    Mistakes that keep the statement usable (a repeated keyword argument) go
    to ``diagnostics``; those that do not raise :class:`_StatementError`.
    """

    def __init__(self, source: Source, diagnostics: list[Diagnostic]):
        super().__init__()
        self.source = source
        self.diagnostics = diagnostics
        # lark's v_args builds a new wrapper (functools.update_wrapper) on every
        # method lookup, once per tree node: bind each rule method once instead.
        for name, method in vars(_ToAst).items():
            if hasattr(method, "visit_wrapper"):
                setattr(self, name, getattr(self, name))

    def _kwargs_once(self, kwargs: tuple[ast.Kwarg, ...]) -> None:
        first: dict[str, ast.Kwarg] = {}
        for kwarg in kwargs:
            if kwarg.name in first:
                where = first[kwarg.name].span
                self.diagnostics.append(
                    self.source.diagnostic(
                        "E009",
                        f"keyword argument '{kwarg.name}' is repeated",
                        kwarg.span,
                        f"the first one is at line {where.line}, column {where.column}",
                    )
                )
            first.setdefault(kwarg.name, kwarg)

    # -- names and literals
    def name(self, meta, children):
        (tok,) = children
        text = tok[1:-1] if tok.type == "QUOTED_NAME" else str(tok)
        return ast.Ident(_span(meta), text)

    def column(self, meta, children):
        return children[0]

    def column_list(self, meta, children):
        return tuple(children)

    def column_ref(self, meta, children):
        first, second = children
        if second is None:
            return ast.ColumnRef(_span(meta), first.name)
        return ast.ColumnRef(_span(meta), second.name, first.name)

    def dotted_name(self, meta, children):
        return (".".join(str(c) for c in children), _span(meta))

    def number(self, meta, children):
        (tok,) = children
        value = _number(str(tok), _span(meta))
        kind = "int" if isinstance(value, int) else "float"
        return ast.Literal(_span(meta), kind, value, text=str(tok))

    def negative(self, meta, children):
        (lit,) = children
        return ast.Literal(_span(meta), lit.kind, -lit.value, text="-" + lit.text)

    def string(self, meta, children):
        (tok,) = children
        return ast.Literal(_span(meta), "string", _unquote_string(tok), text=str(tok))

    def quantity(self, meta, children):
        (tok,) = children
        text = str(tok)
        i = 0
        while i < len(text) and (text[i].isdigit() or text[i] == "."):
            i += 1
        number = _number(text[:i], _span(meta))
        return ast.Literal(_span(meta), "quantity", number, unit=text[i:], text=text)

    def boolean(self, meta, children):
        (tok,) = children
        return ast.Literal(_span(meta), "bool", tok.type == "TRUE", text=str(tok))

    def null(self, meta, children):
        return ast.Literal(_span(meta), "null", None, text="null")

    def tuple(self, meta, children):
        return ast.TupleValue(_span(meta), tuple(children))

    def kwarg(self, meta, children):
        key, value = children
        return ast.Kwarg(_span(meta), str(key), value)

    def _call(self, meta, func, func_span, arguments):
        arguments = [a for a in arguments if a is not None]
        args = tuple(a for a in arguments if not isinstance(a, ast.Kwarg))
        kwargs = tuple(a for a in arguments if isinstance(a, ast.Kwarg))
        self._kwargs_once(kwargs)
        return ast.Call(_span(meta), func, args, kwargs, func_span)

    def call(self, meta, children):
        (func, func_span), *arguments = children
        return self._call(meta, func, func_span, arguments)

    def call_value(self, meta, children):
        func, *arguments = children
        return self._call(meta, str(func), _span(func), arguments)

    # -- expressions
    def or_(self, meta, children):
        return ast.Binary(_span(meta), "or", *children)

    def and_(self, meta, children):
        return ast.Binary(_span(meta), "and", *children)

    def not_(self, meta, children):
        return ast.Unary(_span(meta), "not", children[-1])

    def neg(self, meta, children):
        return ast.Unary(_span(meta), "neg", children[-1])

    def compare(self, meta, children):
        left, op, right = children
        op = "!=" if op == "<>" else str(op)
        return ast.Binary(_span(meta), op, left, right)

    def arith(self, meta, children):
        left, op, right = children
        return ast.Binary(_span(meta), str(op), left, right)

    def in_(self, meta, children):
        operand, negated, *items = children
        return ast.InList(_span(meta), operand, tuple(items), negated is not None)

    def between(self, meta, children):
        operand, negated, low, high = children
        return ast.Between(_span(meta), operand, low, high, negated is not None)

    def like(self, meta, children):
        operand, negated, pattern = children
        return ast.Like(_span(meta), operand, pattern, negated is not None)

    def is_null(self, meta, children):
        operand, negated = children
        return ast.IsNull(_span(meta), operand, negated is not None)

    def func_call(self, meta, children):
        func, *args = children
        return ast.FuncCall(_span(meta), str(func), tuple(a for a in args if a is not None))

    # -- clauses shared by several statements
    def per_clause(self, meta, children):
        return ast.PerClause(_span(meta), "PER", children[0])

    def where_clause(self, meta, children):
        return ast.WhereClause(_span(meta), "WHERE", children[0])

    def hints_clause(self, meta, children):
        hints = tuple(c for c in children if c)
        self._kwargs_once(hints)
        return ast.HintsClause(_span(meta), "HINTS", hints)

    # -- TRAIN
    def features_list(self, meta, children):
        return ast.FeaturesClause(_span(meta), "FEATURES", children[0])

    def features_star(self, meta, children):
        (excepted,) = children
        return ast.FeaturesClause(_span(meta), "FEATURES", (), True, excepted or ())

    def except_list(self, meta, children):
        return children[0]

    def label_clause(self, meta, children):
        return ast.LabelClause(_span(meta), "LABEL", children[0])

    def using_clause(self, meta, children):
        return ast.UsingClause(_span(meta), "USING", children[0])

    def encoder(self, meta, children):
        tok, columns = children
        return ast.Encoder(_span(meta), ast.Ident(_span(tok), str(tok)), columns)

    def encode_clause(self, meta, children):
        return ast.EncodeClause(_span(meta), "ENCODE", tuple(children))

    def holdout_clause(self, meta, children):
        fraction, seed = children
        return ast.HoldoutClause(
            _span(meta),
            "HOLDOUT",
            fraction,
            _number(seed, _span(seed)) if seed is not None else None,
        )

    def metrics_clause(self, meta, children):
        return ast.MetricsClause(_span(meta), "METRICS", tuple(children))

    def min_rows_clause(self, meta, children):
        (rows,) = children
        return ast.MinRowsClause(_span(meta), "MIN ROWS", _number(rows, _span(rows)))

    def gate_clause(self, meta, children):
        return ast.GateClause(_span(meta), "GATE", children[0])

    def save_clause(self, meta, children):
        return ast.SaveClause(_span(meta), "SAVE TO", children[0])

    def train_stmt(self, meta, children):
        name, *clauses = children
        return ast.Train(_span(meta), name, tuple(clauses))

    # -- MODEL
    def framework_clause(self, meta, children):
        tok, path = children
        framework = str(tok).lower()
        return ast.FrameworkClause(_span(meta), str(tok).upper(), framework, path)

    def custom_clause(self, meta, children):
        return ast.CustomClause(_span(meta), "CUSTOM", children[0])

    def class_clause(self, meta, children):
        return ast.ClassClause(_span(meta), "CLASS", children[0])

    def call_clause(self, meta, children):
        return ast.CallClause(_span(meta), "CALL", children[0])

    def fallback_clause(self, meta, children):
        return ast.FallbackClause(_span(meta), "FALLBACK", children[0])

    def input_clause(self, meta, children):
        return ast.InputClause(_span(meta), "INPUT", children[0])

    def output_clause(self, meta, children):
        return ast.OutputClause(_span(meta), "OUTPUT", children[0])

    def batch_clause(self, meta, children):
        low, high, wait = children
        high = _number(high, _span(high)) if high is not None else None
        return ast.BatchClause(_span(meta), "BATCH", _number(low, _span(low)), high, wait)

    def device_clause(self, meta, children):
        return ast.DeviceClause(_span(meta), "DEVICE", children[0])

    def shared_clause(self, meta, children):
        return ast.SharedClause(_span(meta), "SHARED")

    def refresh_clause(self, meta, children):
        return ast.RefreshClause(_span(meta), "REFRESH EVERY", children[0])

    def trust_clause(self, meta, children):
        return ast.TrustClause(_span(meta), "TRUST", tuple(children))

    def classes_clause(self, meta, children):
        return ast.ClassesClause(_span(meta), "CLASSES", tuple(children))

    def model_stmt(self, meta, children):
        name, *clauses = children
        return ast.Model(_span(meta), name, tuple(clauses))

    # -- ENSEMBLE
    def step_all(self, meta, children):
        return "*"

    def step_fields(self, meta, children):
        return tuple(c for c in children if c is not None)

    def step_clause(self, meta, children):
        name, model, args = children
        if args == "*":
            return ast.StepClause(_span(meta), "STEP", name, model, (), True)
        return ast.StepClause(_span(meta), "STEP", name, model, args)

    def combine_clause(self, meta, children):
        value, alias = children
        return ast.CombineClause(_span(meta), "OUTPUT", value, alias)

    def arm(self, meta, children):
        return ast.Arm(_span(meta), *children)

    def split_clause(self, meta, children):
        keys, *arms = children
        return ast.SplitClause(_span(meta), "SPLIT BY", keys, tuple(arms))

    def shadow_clause(self, meta, children):
        return ast.ShadowClause(_span(meta), "SHADOW", tuple(children))

    def cascade_arm(self, meta, children):
        return ast.CascadeArm(_span(meta), *children)

    def cascade_clause(self, meta, children):
        return ast.CascadeClause(_span(meta), "CASCADE", tuple(children))

    def switch_case(self, meta, children):
        return ast.SwitchCase(_span(meta), *children)

    def switch_clause(self, meta, children):
        *cases, default = children
        return ast.SwitchClause(_span(meta), "SWITCH", tuple(cases), default)

    def ensemble_stmt(self, meta, children):
        name, *clauses = children
        return ast.Ensemble(_span(meta), name, tuple(clauses))

    # -- FEATURES
    def entity_clause(self, meta, children):
        return ast.EntityClause(_span(meta), "ENTITY", children[0])

    def timestamp_clause(self, meta, children):
        return ast.TimestampClause(_span(meta), "TIMESTAMP", children[0])

    def sliding_window(self, meta, children):
        return ast.WindowClause(_span(meta), "WINDOW", "sliding", *children)

    def tumbling_window(self, meta, children):
        return ast.WindowClause(_span(meta), "WINDOW", "tumbling", children[0])

    def session_window(self, meta, children):
        return ast.WindowClause(_span(meta), "WINDOW", "session", children[0])

    def windows_clause(self, meta, children):
        return ast.WindowsClause(_span(meta), "WINDOWS", tuple(children))

    def aggregate_star(self, meta, children):
        (tok,) = children
        return ast.Aggregate(_span(meta), ast.Ident(_span(tok), str(tok)), (), True)

    def aggregate_args(self, meta, children):
        tok, *args = children
        args = tuple(a for a in args if a is not None)
        return ast.Aggregate(_span(meta), ast.Ident(_span(tok), str(tok)), args)

    def filter(self, meta, children):
        return children[0]

    def select_item(self, meta, children):
        aggregate, filter_, alias = children
        return ast.SelectItem(_span(meta), aggregate, alias, filter_)

    def select_clause(self, meta, children):
        return ast.SelectClause(_span(meta), "SELECT", tuple(children))

    def ttl_clause(self, meta, children):
        return ast.TtlClause(_span(meta), "TTL", children[0])

    def online_clause(self, meta, children):
        return ast.OnlineClause(_span(meta), "ONLINE", children[0])

    def offline_clause(self, meta, children):
        return ast.OfflineClause(_span(meta), "OFFLINE", children[0])

    def lateness_clause(self, meta, children):
        return ast.LatenessClause(_span(meta), "ALLOWED LATENESS", children[0])

    def features_stmt(self, meta, children):
        name, *clauses = children
        return ast.Features(_span(meta), name, tuple(clauses))

    # -- DATASET
    def as_of_clause(self, meta, children):
        return ast.AsOfClause(_span(meta), "AS OF", children[0])

    def join_clause(self, meta, children):
        return ast.JoinClause(_span(meta), "JOIN", tuple(children))

    def dataset_stmt(self, meta, children):
        name, *clauses = children
        return ast.Dataset(_span(meta), name, tuple(clauses))


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, t.strip("_").replace("__ANON", "")) for t in expected})
    keywords = [n for n in names if n.isupper()]
    others = [n for n in names if not n.isupper()]
    shown = others + keywords
    if len(shown) > 8:
        shown = shown[:8] + ["..."]
    return ", ".join(shown)


def _syntax_diagnostic(source: Source, exc: lark.exceptions.LarkError) -> tuple[Diagnostic, int]:
    """A diagnostic for a lark error, and the text offset where it happened."""
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        tok: Token = exc.token
        if tok.type == "$END":
            line = source.text.count("\n") + 1
            column = len(source.text.rsplit("\n", 1)[-1]) + 1
            span = Span.point(line, column)
            message = "unexpected end of file; a statement must end with ';'"
            return source.diagnostic("E003", message, span), len(source.text)
        span = Span(
            tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(tok)
        )
        if source.text.startswith("/*", tok.start_pos):  # a closed one is a comment
            return source.diagnostic("E004", "unterminated comment", span), tok.start_pos
        message = f"unexpected string {tok}" if tok.type == "STRING" else f"unexpected '{tok}'"
        hint = f"expected {_describe_expected(set(exc.expected))}"
        return source.diagnostic("E001", message, span, hint), tok.start_pos
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        span = Span.point(exc.line, exc.column)
        char = source.text[exc.pos_in_stream]
        if char == "'":
            return source.diagnostic("E004", "unterminated string", span), exc.pos_in_stream
        message = f"unexpected character {char!r}"
        return source.diagnostic("E002", message, span), exc.pos_in_stream
    raise exc  # pragma: no cover - lark raises only the two above from parse()


def _statement_end(text: str, offset: int) -> int:
    """The offset just after the first top-level ';' at or after ``offset``."""
    i = offset
    while i < len(text):
        ch = text[i]
        if ch == "'":
            close = text.find("'", i + 1)
            while close != -1 and text.startswith("''", close):
                close = text.find("'", close + 2)
            i = len(text) if close == -1 else close + 1
        elif ch == '"':
            close = text.find('"', i + 1)
            i = close + 1 if close != -1 and "\n" not in text[i:close] else i + 1
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline == -1 else newline
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = len(text) if close == -1 else close + 2
        elif ch == ";":
            return i + 1
        else:
            i += 1
    return len(text)


def _recover(source: Source, diagnostics: list[Diagnostic], exc: lark.UnexpectedInput) -> bool:
    """lark's ``on_error``: reports ``exc``, drops the broken statement and
    resumes after its ';' in the same parse (so recovery is linear)."""
    diagnostic, offset = _syntax_diagnostic(source, exc)
    diagnostics.append(diagnostic)
    parser = exc.interactive_parser
    state = parser.parser_state
    # Pop the broken statement's partial parse, back to a state that can take a
    # statement (one with a goto on the `statement` rule).
    while "statement" not in state.parse_conf.states[state.position]:
        state.state_stack.pop()
        state.value_stack.pop()
    counter = parser.lexer_thread.state.line_ctr
    resume = _statement_end(source.text, offset)
    if resume > counter.char_pos:
        counter.feed(source.text[counter.char_pos : resume])
    return True


def _too_deep(tree: lark.Tree) -> lark.Tree | None:
    """The clause of ``tree`` (a statement) that nests deeper than MAX_DEPTH, if
    any; iterative, as the transformer that would otherwise find it recurses."""
    stack = [(child, 2, child) for child in tree.children if isinstance(child, lark.Tree)]
    while stack:
        node, depth, clause = stack.pop()
        if depth > MAX_DEPTH:
            return clause
        stack.extend((c, depth + 1, clause) for c in node.children if isinstance(c, lark.Tree))
    return None


def _build(tree: lark.Tree, builder: _ToAst) -> ast.Statement | None:
    """One statement's AST, or None (and a diagnostic) when it cannot be built."""
    source, diagnostics = builder.source, builder.diagnostics
    deep = _too_deep(tree)
    if deep is not None:
        meta = tree.meta if deep.meta.empty else deep.meta
        message = f"this statement nests more than {MAX_DEPTH} levels deep"
        hint = "split the expression, or write a long chain of OR as IN (...)"
        diagnostics.append(source.diagnostic("E007", message, _span(meta), hint))
        return None
    try:
        return builder.transform(tree)
    except lark.exceptions.VisitError as exc:
        if not isinstance(exc.orig_exc, _StatementError):
            raise
        e = exc.orig_exc
        diagnostics.append(source.diagnostic(e.code, e.message, e.span, e.hint))
        return None


def parse(text: str, path: str = "<spec>") -> tuple[ast.SpecFile, list[Diagnostic]]:
    """Parses a spec; returns the AST of every well-formed statement and the
    diagnostics of the others."""
    source = Source(path, _NEWLINES.sub("\n", text))
    diagnostics: list[Diagnostic] = []
    tree = _lark().parse(source.text, on_error=functools.partial(_recover, source, diagnostics))
    builder = _ToAst(source, diagnostics)
    statements = [_build(child, builder) for child in tree.children]
    return ast.SpecFile(path, tuple(s for s in statements if s is not None)), diagnostics
