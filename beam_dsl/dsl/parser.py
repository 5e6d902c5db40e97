"""Text -> AST: the lark LALR parser and the transformer that builds ast nodes.

Syntax errors do not stop at the first one: after an error the parser skips
to the end of that statement (the next top-level ``;``) and parses the rest,
so one run reports a syntax error in every broken statement.
"""

from __future__ import annotations

import functools
from importlib import resources

import lark
from lark import Token, Transformer, v_args

from beam_dsl.diagnostics import Diagnostic, Source, Span
from beam_dsl.dsl import ast

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


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ast nodes from lark's tree, one method per grammar rule."""

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
        if tok.type == "INT":
            return ast.Literal(_span(meta), "int", int(tok), text=str(tok))
        return ast.Literal(_span(meta), "float", float(tok), text=str(tok))

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
        number = float(text[:i]) if "." in text[:i] else int(text[:i])
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
        return ast.HintsClause(_span(meta), "HINTS", tuple(c for c in children if c))

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
            _span(meta), "HOLDOUT", fraction, int(seed) if seed is not None else None
        )

    def metrics_clause(self, meta, children):
        return ast.MetricsClause(_span(meta), "METRICS", tuple(children))

    def min_rows_clause(self, meta, children):
        return ast.MinRowsClause(_span(meta), "MIN ROWS", int(children[0]))

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
        return ast.BatchClause(
            _span(meta), "BATCH", int(low), int(high) if high is not None else None, wait
        )

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

    def start(self, meta, children):
        return tuple(children)


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
        message = f"unexpected string {tok}" if tok.type == "STRING" else f"unexpected '{tok}'"
        hint = f"expected {_describe_expected(set(exc.expected))}"
        return source.diagnostic("E001", message, span, hint), tok.start_pos
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        span = Span.point(exc.line, exc.column)
        char = source.text[exc.pos_in_stream]
        if char == "'":
            return source.diagnostic("E004", "unterminated string", span), exc.pos_in_stream
        if source.text.startswith("/*", exc.pos_in_stream):
            return source.diagnostic("E004", "unterminated comment", span), exc.pos_in_stream
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


def _blank(text: str, upto: int) -> str:
    """``text`` with everything before ``upto`` turned to spaces (newlines kept),
    so that positions in the rest stay where they were."""
    head = "".join("\n" if c == "\n" else " " for c in text[:upto])
    return head + text[upto:]


def parse(text: str, path: str = "<spec>") -> tuple[ast.SpecFile, list[Diagnostic]]:
    """Parses a spec; returns the AST of every well-formed statement and the
    syntax diagnostics of the others."""
    source = Source(path, text)
    diagnostics: list[Diagnostic] = []
    statements: list[ast.Statement] = []
    start = 0
    while True:
        try:
            tree = _lark().parse(_blank(text, start))
        except lark.exceptions.LarkError as exc:
            diagnostic, offset = _syntax_diagnostic(source, exc)
            diagnostics.append(diagnostic)
            resume = _statement_end(text, max(offset, start))
            # Keep the statements that parsed before the broken one.
            good = _statements_before(text, start, offset)
            statements.extend(good)
            if resume >= len(text):
                break
            start = resume
            continue
        statements.extend(_ToAst().transform(tree))
        break
    return ast.SpecFile(path, tuple(statements)), diagnostics


def _statements_before(text: str, start: int, offset: int) -> list[ast.Statement]:
    """Parses the complete statements between ``start`` and the statement that
    holds the error at ``offset``."""
    end = start
    while True:
        nxt = _statement_end(text, end)
        if nxt > offset or nxt >= len(text):
            break
        end = nxt
    if end == start:
        return []
    try:
        tree = _lark().parse(_blank(text[:end], start))
    except lark.exceptions.LarkError:  # pragma: no cover - those statements parsed
        return []
    return list(_ToAst().transform(tree))
