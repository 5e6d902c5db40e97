"""The aggregates and scalar functions the checks accept are the ones the transforms implement.

Both families are registries (beam_dsl.vocabulary): the checks read their
names and arities, the transforms their implementations. For every member
and every argument count the checks accept, a spec must lint clean, lower to
a config that validates, and compute (the aggregate over a Beam-free plan,
the function in the evaluator) a value of the registered output kind; one
argument too many must be a lint error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from beam_dsl import vocabulary
from beam_dsl.diagnostics import Source
from beam_dsl.dsl.checks import check_spec
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.ir.features import FeaturesConfig
from beam_dsl.transforms.common.expr import evaluate
from beam_dsl.transforms.features.panes import (
    FeaturePlan,
    expr_type,
    panes_of,
    prepare,
    window_rows,
)

AGGREGATES = vocabulary.family("aggregates")
FUNCTIONS = vocabulary.family("functions")

FIELDS = {"user_id": int, "event_time": float, "amount": float, "merchant": str}
EVENTS = pd.DataFrame({
    "user_id": [1, 1, 1, 2],
    "event_time": [1_700_000_000.0, 1_700_000_010.0, 1_700_000_020.0, 1_700_000_030.0],
    "amount": [4.5, 2.0, 7.25, 1.0],
    "merchant": ["b", "a", "c", "a"],
})


def lint(text: str) -> tuple[list[str], list]:
    """The codes of the problems lint finds in ``text``, and (if none) the lowered configs."""
    spec, syntax = parse(text)
    assert not syntax, [d.render() for d in syntax]
    statements = {s.name.name: s for s in spec.statements}
    found = check_spec(spec, Source("<spec>", text), statements, {"f": FIELDS})
    configs = [] if found else [d.config for d in lower_spec(spec, statements)]
    return [d.code for d in found], configs


def accepted(rule) -> object:
    """A literal value the rule accepts (the registered rules take one of these)."""
    return next(v for v in (3, 0.5) if rule.accepts(v))


def features_spec(call: str) -> str:
    return (f"FEATURES f ENTITY user_id TIMESTAMP event_time WINDOW TUMBLING 1h "
            f"SELECT {call} AS x;")


def arities(entry) -> range:
    """The argument counts to try: all the checks accept, up to three more than the fewest."""
    return range(entry.min_args, min(entry.max_args, entry.min_args + 3) + 1)


def computed(call: str) -> list:
    """``call``'s feature for users 1 and 2 over EVENTS: linted, lowered, validated, planned."""
    codes, configs = lint(features_spec(call))
    assert codes == [], (call, codes)
    config = FeaturesConfig.from_json(configs[0].to_json())  # validates, as the transform does
    plan = FeaturePlan.build(config, FIELDS)
    events, rejected, _ = prepare(EVENTS, plan)
    assert len(rejected) == 0
    rows = window_rows(panes_of(events, plan), plan)
    return rows.sort_values("user_id")["x"].tolist()


@pytest.mark.parametrize("name", list(AGGREGATES))
def test_every_aggregate_the_checks_accept_is_computed_with_its_output_kind(name):
    entry = AGGREGATES[name]
    params = [str(accepted(entry.meta["rules"][p])) for p in entry.params]
    columns = {"amount": float} if entry.meta.get("numeric") else {"amount": float, "merchant": str}
    for column, arg_type in columns.items():
        for count in arities(entry):
            values = computed(f"{name}({', '.join([column, *params][:count])})")
            assert len(values) == 2 and all(v is not None for v in values), (name, count)
            wanted = {"int": int, "float": float, "same": arg_type, "number": float,
                      "list": list}[entry.kind]
            assert all(isinstance(v, wanted) for v in values), (name, count, values)
            if entry.kind == "list":
                assert all(isinstance(x, arg_type) for v in values for x in v)
    assert lint(features_spec(f"{name}(*)"))[0] == ([] if entry.min_args == 0 else ["E226"])
    too_many = ", ".join(["amount"] * (entry.max_args + 1))
    assert set(lint(features_spec(f"{name}({too_many})"))[0]) == {"E226"}


@pytest.mark.parametrize("param", ["k", "q"])
def test_a_parameter_its_rule_refuses_is_a_lint_error(param):
    names = [n for n in AGGREGATES if param in AGGREGATES[n].params]
    assert names
    for name in names:
        for bad in ("-1", "amount", "'text'", "2.5", "true", "null", "5m"):
            assert lint(features_spec(f"{name}(amount, {bad})"))[0] == ["E226"], (name, bad)
    if param == "q":  # judged as lowered: a percentage is its fraction
        assert lint(features_spec("approx_percentile(amount, 90%)"))[0] == []


FRAME = EVENTS.assign(amount=[1.5, -2.25, None, 10.0], merchant=["Apple ", "b", None, "Cherry"])


def function_call(name: str, count: int) -> tuple[str, type]:
    """A call of ``name`` with ``count`` arguments its implementation takes, and the type of
    its first argument."""
    if name in ("lower", "upper", "trim", "length", "concat", "substr"):
        first, column = str, "merchant"
    else:
        first, column = float, "amount"
    rest = {"substr": ["2", "3"], "round": ["1"]}.get(name, [column] * count)
    return f"{name}({', '.join([column, *rest][:count])})", first


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_every_function_the_checks_accept_is_evaluated_with_its_output_kind(name):
    entry = FUNCTIONS[name]
    for count in arities(entry):
        call, first = function_call(name, count)
        codes, configs = lint(f"FEATURES f ENTITY user_id TIMESTAMP event_time "
                              f"WHERE {call} IS NOT NULL WINDOW TUMBLING 1h "
                              f"SELECT count(*) AS x;")
        assert codes == [], (call, codes)
        expr = configs[0].where["args"][0]
        values = evaluate(expr, FRAME)
        assert len(values) == len(FRAME)
        wanted = first if entry.kind == "same" else {"str": str, "int": int, "float": float}[
            entry.kind]
        assert expr_type(expr, FIELDS) is wanted
        present = [v for v in values if not pd.isna(v)]
        assert present, call
        for value in present:
            if wanted is str:
                assert isinstance(value, str), (call, value)
            else:
                assert isinstance(value, int | float | np.number) and not isinstance(value, str)
                if wanted is int:
                    assert float(value) == math.floor(float(value)), (call, value)
    if entry.max_args < 10:
        too_many = ", ".join(["amount"] * (entry.max_args + 1))
        codes, _ = lint(f"FEATURES f ENTITY user_id TIMESTAMP event_time WHERE "
                        f"{name}({too_many}) = 1 WINDOW TUMBLING 1h SELECT count(*) AS x;")
        assert codes == ["E226"]


def test_a_name_in_no_registry_is_a_lint_error():
    assert lint(features_spec("median(amount)"))[0] == ["E207"]
    codes, _ = lint("FEATURES f ENTITY user_id TIMESTAMP event_time WHERE reverse(merchant) = 'a' "
                    "WINDOW TUMBLING 1h SELECT count(*) AS x;")
    assert codes == ["E225"]
