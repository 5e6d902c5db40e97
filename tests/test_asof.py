""""As of T" is one definition: DATASET == `features get --as-of T` (through the online store)
== an independent pandas reference (tests/features_support.py, straight from the events), on
SLIDING (aligned and offset), TUMBLING, SESSION and WINDOWS (...) specs, each with a TTL.

* A hypothesis property test draws events and (entity, T) pairs, T often on the edges (event
  times, window ends, expiry instants, a millisecond either side), and checks beam_dsl's rule
  (the plan's FEATURES rows, DATASET's join, the online store's kept rows) against the
  reference, without pipelines.
* A seeded test runs the real pipelines: FEATURES writing SQLite stores, DATASET over the
  FEATURES rows, DATASET reading the online stores, and `features get` through the CLI.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from features_support import (
    FIELDS,
    check_answer,
    collect,
    collected,
    expected_as_of,
    feature_rows,
    payments,
    rows_of,
    seconds,
)
from test_features import ROW_TYPE

from beam_dsl.cli import main
from beam_dsl.dsl.lower import lower_spec
from beam_dsl.dsl.parser import parse
from beam_dsl.features_cli import format_features, get_features
from beam_dsl.ir.dataset import DatasetConfig
from beam_dsl.transforms.common.rows import row_type
from beam_dsl.transforms.features.asof import AsOf
from beam_dsl.transforms.features.dataset import (
    BuildDataset,
    DatasetPlan,
    JoinedSet,
    join,
    prepare_features,
    prepare_rows,
)
from beam_dsl.transforms.features.keys import entity_key
from beam_dsl.transforms.features.transform import ComputeFeatures, entity_tails

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPECS = """
FEATURES slide
  ENTITY user_id
  TIMESTAMP event_time
  WHERE status = 'failed'
  WINDOW SLIDING 30m EVERY 10m
  SELECT count(*) AS slide_n, sum(amount) AS slide_total, last(merchant) AS slide_last,
         last_k(merchant, 2) AS slide_recent, min(amount) AS slide_low
  TTL 25m;

FEATURES odd
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SLIDING 25m EVERY 10m
  SELECT count(*) AS odd_n, max(amount) AS odd_top
  TTL 40m;

FEATURES tumble
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW TUMBLING 20m
  SELECT count(*) AS tumble_n, max(amount) AS tumble_top, first_k(merchant, 2) AS tumble_first
  TTL 45m;

FEATURES visits
  ENTITY user_id
  TIMESTAMP event_time
  WINDOW SESSION 5m
  SELECT count(*) AS visit_n, sum(amount) AS visit_total, first(merchant) AS visit_entry
  TTL 8m;

FEATURES spend
  ENTITY user_id
  TIMESTAMP event_time
  WINDOWS (10m, 40m)
  SELECT sum(amount) AS spend, count(*) AS payments
  TTL 30m;
"""

FAILED = lambda f: f["status"] == "failed"  # noqa: E731
REFERENCE = {
    "slide": dict(items=[("count", None, None, None, "slide_n"),
                         ("sum", "amount", None, None, "slide_total"),
                         ("last", "merchant", None, None, "slide_last"),
                         ("last_k", "merchant", 2, None, "slide_recent"),
                         ("min", "amount", None, None, "slide_low")],
                  windows=[(1800, 600, "")], ttl_s=1500.0, where=FAILED),
    "odd": dict(items=[("count", None, None, None, "odd_n"), ("max", "amount", None, None,
                                                              "odd_top")],
                windows=[(1500, 600, "")], ttl_s=2400.0),
    "tumble": dict(items=[("count", None, None, None, "tumble_n"),
                          ("max", "amount", None, None, "tumble_top"),
                          ("first_k", "merchant", 2, None, "tumble_first")],
                   windows=[(1200, 1200, "")], ttl_s=2700.0),
    "visits": dict(items=[("count", None, None, None, "visit_n"),
                          ("sum", "amount", None, None, "visit_total"),
                          ("first", "merchant", None, None, "visit_entry")],
                   gap_s=300.0, ttl_s=480.0),
    "spend": dict(items=[("sum", "amount", None, None, "spend"),
                         ("count", None, None, None, "payments")],
                  windows=[(600, 600, "_10m"), (2400, 600, "_40m")], ttl_s=1800.0),
}
START = 1_700_000_000
LABEL_TYPE = row_type([("qid", int), ("user_id", int), ("label_time", str)])


def configs() -> dict:
    spec, diagnostics = parse(SPECS)
    assert not diagnostics
    return {t.name: t.config for t in lower_spec(spec)}


def expected(name: str, events: pd.DataFrame, queries) -> list[dict]:
    return expected_as_of(events, "user_id", "event_time", REFERENCE[name]["items"], queries,
                          **{k: v for k, v in REFERENCE[name].items() if k != "items"})


def labels(queries) -> pd.DataFrame:
    """Labelled rows for (user, T) queries; times as epoch text or ISO-8601, alternately."""
    times = [f"{t:.3f}" if i % 2 else pd.Timestamp(round(t * 1000), unit="ms",
                                                    tz="UTC").isoformat()
             for i, (_, t) in enumerate(queries)]
    return pd.DataFrame({"qid": range(len(queries)), "user_id": [u for u, _ in queries],
                         "label_time": times})


def latest_events(events: pd.DataFrame, name: str) -> dict:
    where = REFERENCE[name].get("where")
    chosen = events if where is None else events[where(events)]
    return chosen.assign(t=chosen["event_time"].map(seconds)).groupby("user_id")["t"].max()


# ---------------------------------------------------------------- the rule, drawn


@st.composite
def cases(draw):
    """Events of three users over three hours, and queries for four users (one never seen)."""
    n = draw(st.integers(1, 40))
    events = pd.DataFrame({
        "user_id": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        "event_time": [f"{START + ms / 1000:.3f}" for ms in draw(st.lists(
            st.integers(0, 3 * 3_600_000), min_size=n, max_size=n))],
        "amount": draw(st.lists(st.integers(1, 50).map(float), min_size=n, max_size=n)),
        "status": draw(st.lists(st.sampled_from(["ok", "failed"]), min_size=n, max_size=n)),
        "reason": "none",
        "merchant": draw(st.lists(st.sampled_from(["m0", "m1", "m2"]), min_size=n,
                                  max_size=n)),
    })
    times = events["event_time"].map(float).tolist()
    edges = [0.0, 0.001, -0.001, 300.0, 480.0, 600.0, 1200.0, 1500.0, 1800.0, 2400.0, 2700.0]
    queries = []
    for _ in range(draw(st.integers(1, 25))):
        user = draw(st.integers(0, 3))
        if draw(st.booleans()):
            t = draw(st.sampled_from(times)) + draw(st.sampled_from(edges))
        else:  # anywhere, often on a boundary of the 10-minute grid
            t = START + draw(st.integers(-10, 240)) * 60 + draw(st.sampled_from([0.0, 0.001,
                                                                                  -0.001, 7.5]))
        queries.append((user, round(t, 3)))
    return events, queries


def _dataset_answers(config, rows: pd.DataFrame, queries) -> pd.DataFrame:
    """DATASET's join over FEATURES rows, without a pipeline."""
    joined = JoinedSet(AsOf.of(config), (), None)
    plan = DatasetPlan("d", ("user_id",), "label_time", dict(LABEL_TYPE._fields), (joined,), 1,
                       int_keys=True)
    prepared, errors = prepare_rows(labels(queries), plan)
    assert not errors
    return join(prepared, {config.name: prepare_features(rows, joined, True)}, plan)


def _plain(values: dict) -> dict:
    """Frame cells as the pipelines' rows have them: null as None, numpy numbers unwrapped."""
    return {c: None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
            else v.item() if isinstance(v, np.generic) else v for c, v in values.items()}


def _store_answers(config, rows: pd.DataFrame, queries):
    """The online store's answers: its kept rows, read back by the as-of rule."""
    rule = AsOf.of(config)
    kept = {e.key: e.rows for e in entity_tails(rows, rule)}
    keys = [entity_key({"user_id": u}) for u, _ in queries]
    t_ms = np.array([round(t * 1000) for _, t in queries], dtype=np.int64)
    return rule.from_stored(kept, keys, t_ms)


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_dataset_and_the_store_answer_as_the_reference(case):
    events, queries = case
    for name, config in configs().items():
        items = REFERENCE[name]["items"]
        want = expected(name, events, queries)
        rows = feature_rows(config, events, FIELDS)
        found = _dataset_answers(config, rows, queries).sort_values("qid")
        stored = _store_answers(config, rows, queries)
        latest = latest_events(events, name)
        for i, ((user, t), answer) in enumerate(zip(queries, want, strict=True)):
            where = f"{name} user {user} at {t}"
            row = _plain(found.iloc[i].to_dict())
            check_answer({**row, "expired": row[f"{name}_expired"]}, answer, items, where)
            if user in latest and t >= latest[user]:  # the store answers from the last event on
                assert stored.answerable[i], where
            if stored.answerable[i] and stored.known[i]:
                got = _plain({c: (v[i] if not isinstance(v, pd.Series) else v.iloc[i])
                              for c, v in stored.columns.items()})
                check_answer({**got, "expired": got[f"{name}_expired"]}, answer, items,
                             f"store: {where}")


# ---------------------------------------------------------------- the pipelines


def _queries(events: pd.DataFrame, rng: np.random.Generator) -> list[tuple[int, float]]:
    """Random (user, T) pairs over the data and after it, and pairs on edges."""
    times = events["event_time"].map(seconds).to_numpy()
    end = times.max()
    out = [(int(rng.integers(0, 10)), round(float(t), 3)) for t in
           rng.uniform(START - 1800, end + 7200, 250)]
    for t in rng.choice(times, 80):
        edge = rng.choice([0.0, 0.001, -0.001, 300.0, 480.0, 600.0, 1200.0, 1500.0, 1800.0])
        out.append((int(rng.integers(0, 8)), round(float(t + edge), 3)))
    out += [(int(rng.integers(0, 8)), float(START + 600 * k)) for k in range(0, 30)]
    return out


def test_dataset_features_get_and_the_reference_agree(tmp_path, capsys):
    events = payments(n=600, users=8, hours=4.0, seed=5)
    queries = _queries(events, np.random.default_rng(7))
    stores = {name: f"sqlite:///{tmp_path}/{name}.db" for name in REFERENCE}
    specs = {name: dataclasses.replace(c, online=stores[name], shards=3)
             for name, c in configs().items()}
    dataset = DatasetConfig(name="training", entity=("user_id",), as_of="label_time",
                            features=specs, shards=4)
    frame = labels(queries)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        source = p | "Events" >> beam.Create(rows_of(events)).with_output_types(ROW_TYPE)
        inputs = {"rows": p | "Labels" >> beam.Create(rows_of(frame)).with_output_types(
            LABEL_TYPE)}
        for name, config in specs.items():
            inputs[name] = (source | name >> ComputeFeatures.from_config(config))["main"]
        out = inputs | "Dataset" >> BuildDataset.from_config(dataset)
        collect(out["main"], str(tmp_path), "offline")
        collect(out["errors"], str(tmp_path), "errors")
    built = {r["qid"]: r for r in collected(str(tmp_path), "offline")}
    assert sorted(built) == list(range(len(queries))) and not collected(str(tmp_path), "errors")

    # DATASET over the same rows, reading each set from its online store instead, for the
    # times the store answers: from each entity's latest event on.
    latest = {name: latest_events(events, name) for name in REFERENCE}
    serving = [i for i, (user, t) in enumerate(queries)
               if all(user in latest[n] and t >= latest[n][user] for n in REFERENCE)]
    assert len(serving) > 20
    with beam.Pipeline(runner=FnApiRunner()) as p:
        rows = p | beam.Create(rows_of(frame.iloc[serving])).with_output_types(LABEL_TYPE)
        out = rows | BuildDataset.from_config(dataset)
        collect(out["main"], str(tmp_path), "online")
        collect(out["errors"], str(tmp_path), "online_errors")
    online = {r["qid"]: r for r in collected(str(tmp_path), "online")}
    assert sorted(online) == serving and not collected(str(tmp_path), "online_errors")

    checked = 0
    for name in REFERENCE:
        items = REFERENCE[name]["items"]
        want = expected(name, events, queries)
        assert any(a["expired"] for a in want) and any(not a["expired"] for a in want), name
        for i, ((user, t), answer) in enumerate(zip(queries, want, strict=True)):
            where = f"{name} user {user} at {t}"
            check_answer({**built[i], "expired": built[i][f"{name}_expired"]}, answer, items,
                         where)
            if i in online:
                check_answer({**online[i], "expired": online[i][f"{name}_expired"]}, answer,
                             items, f"online {where}")
            if user in latest[name] and t >= latest[name][user]:
                got = get_features(name, stores[name], {"user_id": str(user)}, as_of=t)
                check_answer(got, answer, items, f"features get: {where}")
                checked += 1
    assert checked > 100
    # The command line prints the same answer, given ISO-8601 or epoch seconds.
    user, t = next((u, t) for u, t in queries if u in latest["slide"]
                   and t >= latest["slide"][u])
    want_text = format_features(get_features("slide", stores["slide"], {"user_id": user},
                                             as_of=t))
    iso = pd.Timestamp(round(t * 1000), unit="ms", tz="UTC").isoformat()
    capsys.readouterr()
    for given_t in (f"{t:.3f}", iso):
        assert main(["features", "get", "slide", "--store", stores["slide"], "--as-of", given_t,
                     f"user_id={user}"]) == 0
        assert capsys.readouterr().out.strip() == want_text
