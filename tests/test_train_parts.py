"""TRAIN's parts, from Prepare to a key's fit (fit.prepare_chunk -> pack -> unpack): each
key's usable rows arrive whole and in order, with the holdout hashes of their own values,
however the input was cut into chunks.

A hypothesis property test draws frames (a key, text features of few and of many distinct
values, a number, a label; some values missing) and the places they are cut, and checks
the parts of every key against the rows themselves: the values, their types, and the
holdout split that :func:`~beam_dsl.transforms.training.fit.split_holdout` gives over the
key's rows taken in one piece.
"""

import pandas as pd
import pytest

from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.transforms.training import fit
from beam_dsl.transforms.training.transform import make_plan

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPEC = """TRAIN t PER k FEATURES colour, id, x LABEL y
  USING sklearn.tree.DecisionTreeClassifier() HOLDOUT 30% SEED 5
  SAVE TO 'models/{key}.pkl';"""
FIELDS = {"k": str, "colour": str, "id": str, "x": float, "y": str}


def _plan() -> fit.Plan:
    statements, diagnostics = parse(SPEC)
    assert not diagnostics, diagnostics
    (definition,) = lower_spec(statements)
    return make_plan(definition.config, FIELDS, "classification", "run", False)


PLAN = _plan()

row = st.fixed_dictionaries({
    "k": st.sampled_from(["a", "b", "ü"]),
    "colour": st.one_of(st.none(), st.sampled_from(["red", "blue", "a b", ""])),
    "x": st.floats(-5, 5, allow_nan=False, width=32),
    "y": st.sampled_from(["yes", "no"]),
})


@st.composite
def cut_frames(draw) -> tuple[pd.DataFrame, list[int]]:
    rows = draw(st.lists(row, min_size=1, max_size=60))
    frame = pd.DataFrame(rows, columns=["k", "colour", "x", "y"])
    frame.insert(2, "id", [f"id{i % draw(st.integers(1, 80))}" for i in range(len(frame))])
    cuts = sorted(draw(st.sets(st.integers(1, max(len(frame) - 1, 1)), max_size=4)))
    return frame, [c for c in cuts if c < len(frame)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut_frames())
def test_a_keys_parts_are_its_rows_with_their_own_hashes(drawn):
    frame, cuts = drawn
    parts: dict[tuple, list[bytes]] = {}
    bad = 0
    for start, end in zip([0, *cuts], [*cuts, len(frame)], strict=True):
        chunk = frame.iloc[start:end]
        prepared = fit.prepare_chunk(PLAN, chunk.reset_index(drop=True))
        bad += len(prepared.bad)
        for key, part in prepared.parts:
            parts.setdefault(key, []).append(part)
    usable = frame[frame.colour.notna()]
    assert bad == len(frame) - len(usable)  # a missing feature: the row goes to errors
    assert sorted(parts) == sorted((k,) for k in usable.k.unique())
    names = ["colour", "id", "x", "y"]
    for (key,), packed in parts.items():
        rows = usable[usable.k == key][names].reset_index(drop=True)
        hashes, columns = fit.unpack(PLAN, packed)
        assert list(columns) == names
        for name in names:
            assert columns[name].dtype == (float if name == "x" else object)
            assert columns[name].tolist() == rows[name].tolist()
        assert hashes.tolist() == fit.row_hashes(rows, PLAN.config.seed).tolist()
        train, held = fit.holdout_rows(hashes, PLAN.config.holdout)
        want_train, want_held = fit.split_holdout(rows, PLAN.config.holdout, PLAN.config.seed)
        assert train.tolist() == want_train.index.tolist()
        assert held.tolist() == want_held.index.tolist()
