"""The expression sublanguage: parsing, precedence, lowering, and the evaluator."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from beam_dsl.dsl.lower import lower_expr
from beam_dsl.dsl.parser import parse
from beam_dsl.transforms.common.expr import ExprError, columns_of, evaluate, evaluate_scalar, mask


def where(text: str):
    spec, diagnostics = parse(
        f"TRAIN t WHERE {text} FEATURES a LABEL b USING x.Y SAVE TO 'm.skops';"
    )
    assert diagnostics == [], [d.render() for d in diagnostics]
    return lower_expr(spec.statements[0].clauses[0].expr)


def test_precedence_and_binds_tighter_than_or():
    assert where("a = 1 OR b = 2 AND c = 3") == {
        "op": "or",
        "args": [
            {"op": "=", "args": [{"col": "a"}, {"lit": 1}]},
            {
                "op": "and",
                "args": [
                    {"op": "=", "args": [{"col": "b"}, {"lit": 2}]},
                    {"op": "=", "args": [{"col": "c"}, {"lit": 3}]},
                ],
            },
        ],
    }


def test_arithmetic_precedence_and_unary_minus():
    assert where("a + b * 2 > -1") == {
        "op": ">",
        "args": [
            {"op": "+", "args": [{"col": "a"}, {"op": "*", "args": [{"col": "b"}, {"lit": 2}]}]},
            {"op": "neg", "args": [{"lit": 1}]},
        ],
    }


def test_keywords_are_case_insensitive_and_columns_may_be_keywords():
    expr = where('label not in (1, 2) and "odd name" is not null and rows between 1 and 5')
    assert columns_of(expr) == {"label", "odd name", "rows"}
    assert expr["args"][0]["args"][0] == {"op": "in", "args": [
        {"col": "label"}, {"lit": 1}, {"lit": 2}], "negated": True}


def test_comments_and_escaped_quotes():
    spec, diagnostics = parse(
        "/* block\n comment */ TRAIN t -- line comment\n"
        "WHERE name = 'O''Brien' FEATURES a LABEL b USING x.Y SAVE TO 'm.skops';"
    )
    assert diagnostics == []
    assert lower_expr(spec.statements[0].clauses[0].expr)["args"][1] == {"lit": "O'Brien"}


FRAME = pd.DataFrame(
    {
        "n": [1, 5, None, 10],
        "s": ["apple", "Banana", None, "cherry"],
        "m.confidence": [0.95, 0.5, 0.99, 0.1],
    }
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("n > 2", [False, True, False, True]),
        ("n != 5", [True, False, False, True]),  # null compares false
        ("NOT n > 2", [True, False, True, False]),
        ("n IS NULL", [False, False, True, False]),
        ("n IS NOT NULL AND n BETWEEN 1 AND 5", [True, True, False, False]),
        ("s LIKE '%an%'", [False, True, False, False]),
        ("s NOT LIKE 'a%'", [False, True, True, True]),
        ("lower(s) IN ('banana', 'cherry')", [False, True, False, True]),
        ("length(s) = 6", [False, True, False, True]),
        ("coalesce(n, 0) + 1 >= 2", [True, True, False, True]),
        ("m.confidence >= 0.9", [True, False, True, False]),
        ("n % 2 = 0 OR s = 'apple'", [True, False, False, True]),
    ],
)
def test_mask(text, expected):
    assert mask(where(text), FRAME).tolist() == expected


def test_arithmetic_values():
    values = evaluate(where("n * 2 - 1 > 0")["args"][0], FRAME).tolist()
    assert values[:2] == [1, 9] and math.isnan(values[2])


def test_scalar_evaluation_for_gates():
    assert evaluate_scalar(where("accuracy >= 0.6 AND rows > 10"), {"accuracy": 0.7, "rows": 11})
    assert not evaluate_scalar(where("accuracy >= 0.6"), {"accuracy": 0.5})


def test_unknown_column_is_an_expression_error():
    with pytest.raises(ExprError, match="unknown column 'nope'"):
        mask(where("nope = 1"), FRAME)
