"""An independent, brute-force reference for FEATURES: one window at a time, plain pandas/numpy.

It shares no code with beam_dsl's plan: for each entity it lists the window
ends that hold an event, cuts the window's events out, and computes each
aggregate directly. Tests compare beam_dsl's rows with these.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from beam_dsl.transforms.features.aggregates import HLL_RELATIVE_ERROR, KLL_RANK_ERROR


def seconds(value) -> float:
    """Event time in seconds as the spec's rule says (numbers from 1e11 up are milliseconds),
    truncated to the millisecond."""
    try:
        number = float(value)
        t = number / 1000.0 if abs(number) >= 1e11 else number
    except ValueError:
        stamp = pd.Timestamp(value)
        t = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()
    return math.floor(round(t * 1000, 3)) / 1000


def _aggregate(func: str, values: np.ndarray, times: np.ndarray, param):
    """One aggregate over one window's values (object array) and event times, in plain Python."""
    if func == "count":
        return len(values)
    present = [i for i, v in enumerate(values) if not pd.isna(v)]
    values, times = [values[i] for i in present], [times[i] for i in present]
    if func in ("count_distinct", "approx_count_distinct"):
        return len(set(values))
    if func in ("first_k", "last_k", "top_k"):
        if func == "top_k":
            return sorted(values, reverse=True)[:param]
        ordered = sorted(zip(times, values, strict=True))
        if func == "first_k":
            return [v for _, v in ordered[:param]]
        return [v for _, v in reversed(ordered[-param:])]
    if not values:
        return None
    if func == "sum":
        return math.fsum(values)
    if func == "avg":
        return math.fsum(values) / len(values)
    if func in ("min", "max"):
        return min(values) if func == "min" else max(values)
    if func in ("first", "last"):
        ordered = sorted(zip(times, values, strict=True))
        return ordered[0][1] if func == "first" else ordered[-1][1]
    if func in ("variance", "stddev"):
        if len(values) < 2:
            return None
        var = float(np.var(np.array(values, dtype=float), ddof=1))
        return var if func == "variance" else math.sqrt(var)
    if func == "approx_percentile":
        return np.array(values, dtype=float)  # checked by rank, see check_rows
    raise AssertionError(func)


def _columns(rows: pd.DataFrame, items) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item, the entity's argument values and FILTER flags, as arrays."""
    out = []
    for _, column, _, keep, _ in items:
        values = rows[column].to_numpy(dtype=object) if column else rows["_t"].to_numpy(object)
        flags = np.ones(len(rows), bool) if keep is None else keep(rows).to_numpy(bool)
        out.append((values, flags))
    return out


def expected_rows(events: pd.DataFrame, entity: str, time_column: str, items, windows,
                  ttl_s: float | None = None, where=None) -> dict:
    """{(entity, window_end): {feature: value}} for sliding/tumbling windows.

    ``items``: (func, column or None, param, filter predicate or None, alias);
    ``windows``: (size_s, every_s, suffix); several lengths end on the grid of
    ``every_s``, one length follows Beam (starts at multiples of every_s).
    """
    frame = events if where is None else events[where(events)]
    frame = frame.assign(_t=frame[time_column].map(seconds))
    every = windows[0][1]
    longest = max(w[0] for w in windows)
    offset = longest % every if len(windows) == 1 else 0.0
    out = {}
    for key, rows in frame.groupby(entity):
        rows = rows.sort_values("_t", kind="stable")
        times = rows["_t"].to_numpy()
        columns = _columns(rows, items)
        ends = set()
        for t in times:
            first = math.floor((t - offset) / every) * every + offset + every
            e = first
            while e <= t + longest + 1e-9:
                ends.add(round(e, 3))
                e += every
        for end in sorted(ends):
            row = {"window_start": end - longest}
            for size, _, suffix in windows:
                low, high = np.searchsorted(times, [end - size, end], side="left")
                if size == longest:
                    if high == low:
                        row = None
                        break
                    if ttl_s is not None:
                        row["expires_at"] = times[high - 1] + ttl_s
                for (func, _, param, _, alias), (values, flags) in zip(items, columns,
                                                                       strict=True):
                    chosen = np.flatnonzero(flags[low:high]) + low
                    row[alias + suffix] = _aggregate(func, values[chosen], times[chosen], param)
            if row is not None:
                out[(key, end)] = row
    return out


def expected_sessions(events: pd.DataFrame, entity: str, time_column: str, items, gap_s: float,
                      where=None) -> dict:
    """{(entity, window_end): {feature: value}} for session windows."""
    frame = events if where is None else events[where(events)]
    frame = frame.assign(_t=frame[time_column].map(seconds))
    out = {}
    for key, rows in frame.groupby(entity):
        rows = rows.sort_values("_t", kind="stable")
        times = rows["_t"].tolist()
        columns = _columns(rows, items)
        start = 0
        for i in range(1, len(times) + 1):
            if i == len(times) or times[i] - times[i - 1] >= gap_s:
                end = times[i - 1] + gap_s
                row = {"window_start": times[start]}
                for (func, _, param, _, alias), (values, flags) in zip(items, columns,
                                                                       strict=True):
                    chosen = np.flatnonzero(flags[start:i]) + start
                    row[alias] = _aggregate(func, values[chosen], np.asarray(times)[chosen],
                                            param)
                out[(key, round(end, 3))] = row
                start = i
    return out


def check_value(func: str | None, param, have, value, where: str) -> None:
    """One feature value against the reference's: exact, floats to 1e-9, sketches within their
    error bounds."""
    if func == "approx_count_distinct":
        assert abs(have - value) <= max(1.0, 3 * HLL_RELATIVE_ERROR * value), where
    elif func == "approx_percentile":
        if value is None or len(value) == 0:
            assert have is None, where
            return
        below = np.mean(value < have)
        at_most = np.mean(value <= have)
        assert below - KLL_RANK_ERROR <= param <= at_most + KLL_RANK_ERROR, where
    elif value is None:
        assert have is None, where
    elif isinstance(value, float):
        assert have is not None and math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-9), where
    else:
        assert have == value, where


def _func_of(name: str, items) -> tuple[str | None, object]:
    funcs = {alias: (func, param) for func, _, param, _, alias in items}
    return funcs.get(name.rsplit("_", 1)[0] if name not in funcs else name, (None, None))


def check_rows(actual: list[dict], expected: dict, entity: str, items) -> None:
    """Every expected row is there once, with equal values; approximate ones within bounds."""
    got = {}
    for row in actual:
        key = (row[entity], round(row["window_end"], 3))
        assert key not in got, f"duplicate row {key}"
        got[key] = row
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    for key, want in expected.items():
        row = got[key]
        for name, value in want.items():
            func, param = _func_of(name, items)
            check_value(func, param, row[name], value, f"{key} {name}: {row[name]!r} != {value!r}")


# ---------------------------------------------------------------- as of T


def _ms(t: float) -> int:
    return int(round(t * 1000))


def expected_as_of(events: pd.DataFrame, entity: str, time_column: str, items, queries,
                   windows=None, gap_s: float | None = None, ttl_s: float | None = None,
                   where=None) -> list[dict]:
    """Each query's answer "as of T" (LANGUAGE.md section 7, docs/FEATURES.md), straight from
    the events: ``queries`` are (entity, T in epoch seconds); ``windows`` as for
    :func:`expected_rows`, or ``gap_s`` for sessions. An answer is {feature: value,
    "expired": bool}: the window ending at the latest window end at or before T (for
    sessions, the latest session ended by T), over the entity's events in it; events at or
    after that end are not seen; expired when T is at or after the latest seen event plus
    the TTL (all features null)."""
    frame = events if where is None else events[where(events)]
    frame = frame.assign(_t=frame[time_column].map(seconds))
    per_entity = {key: rows.sort_values("_t", kind="stable") for key, rows in
                  frame.groupby(entity)}
    out = []
    for key, t in queries:
        rows = per_entity.get(key, frame.iloc[:0])
        ms = np.array([_ms(x) for x in rows["_t"]], dtype=np.int64)
        columns = _columns(rows, items)
        t_ms = _ms(t)
        answer = {}
        if gap_s is not None:
            gap = _ms(gap_s)
            cuts = [0] + [i for i in range(1, len(ms)) if ms[i] - ms[i - 1] >= gap] + [len(ms)]
            spans = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False)
                     if b > a and ms[b - 1] + gap <= t_ms]
            low, high = spans[-1] if spans else (0, 0)
            lengths = [("", low, high)]
            seen = ms[low:high]
        else:
            every = _ms(windows[0][1])
            longest = max(_ms(w[0]) for w in windows)
            offset = longest % every if len(windows) == 1 else 0
            end = t_ms - (t_ms - offset) % every
            lengths = []
            for size, _, suffix in windows:
                low, high = np.searchsorted(ms, [end - _ms(size), end], side="left")
                lengths.append((suffix, low, high))
            seen = ms[ms < end]
        expired = ttl_s is not None and len(seen) > 0 and t_ms >= seen.max() + _ms(ttl_s)
        for suffix, low, high in lengths:
            for (func, _, param, _, alias), (values, flags) in zip(items, columns, strict=True):
                chosen = np.flatnonzero(flags[low:high]) + low
                answer[alias + suffix] = None if expired else _aggregate(
                    func, values[chosen], rows["_t"].to_numpy()[chosen], param)
        answer["expired"] = bool(expired)
        out.append(answer)
    return out


def check_answer(have: dict, want: dict, items, where: str) -> None:
    """A DATASET row or a ``features get`` answer against :func:`expected_as_of`'s."""
    for name, value in want.items():
        func, param = _func_of(name, items)
        check_value(func, param, have[name], value, f"{where} {name}: {have[name]!r} != "
                    f"{value!r}")


# ---------------------------------------------------------------- data and pipelines

FIELDS = [("user_id", int), ("event_time", str), ("amount", float), ("status", str),
          ("reason", str), ("merchant", str)]


def payments(n: int = 600, users: int = 8, hours: float = 4.0, seed: int = 0) -> pd.DataFrame:
    """Payment events with event times as epoch seconds, epoch milliseconds and ISO-8601 text."""
    rng = np.random.default_rng(seed)
    start = 1_700_000_000  # 2023-11-14T22:13:20Z
    t = start + np.sort(rng.uniform(0, hours * 3600, n))
    t[::7] = np.floor(t[::7])  # some events share a second: ties for first/last
    forms = []
    for i, value in enumerate(t):
        if i % 3 == 0:
            forms.append(f"{value:.3f}")  # seconds, as text
        elif i % 3 == 1:
            forms.append(str(int(value * 1000)))  # milliseconds, as text
        else:
            forms.append(pd.Timestamp(value, unit="s", tz="UTC").isoformat())
    status = rng.choice(["ok", "failed"], n, p=[0.4, 0.6])
    return pd.DataFrame({
        "user_id": rng.integers(0, users, n),
        "event_time": forms,
        "amount": np.round(rng.gamma(2.0, 20.0, n), 2),
        "status": status,
        "reason": np.where(status == "failed", rng.choice(["nsf", "fraud", "limit"], n), "none"),
        "merchant": rng.choice([f"m{i}" for i in range(12)], n),
    })


def rows_of(frame: pd.DataFrame) -> list:
    import apache_beam as beam

    from beam_dsl.transforms.common.rows import json_records

    return [beam.Row(**r) for r in json_records(frame)]


def collect(pcoll, directory: str, tag: str) -> None:
    """Writes a PCollection's rows as JSON lines under ``directory`` (any runner, any process)."""
    import apache_beam as beam

    def write(row, directory=directory, tag=tag):
        import json
        import os

        from beam_dsl.transforms.common.rows import to_python

        record = row._asdict() if hasattr(row, "_asdict") else dict(row)
        record = {k: ([to_python(x) for x in v] if isinstance(v, list) else to_python(v))
                  for k, v in record.items()}
        with open(os.path.join(directory, f"{tag}-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    _ = pcoll | f"Collect {tag}" >> beam.Map(write)


def collected(directory: str, tag: str) -> list[dict]:
    import glob
    import json

    out = []
    for path in sorted(glob.glob(f"{directory}/{tag}-*.jsonl")):
        with open(path) as f:
            out += [json.loads(line) for line in f]
    return out


def feature_rows(config, frame: pd.DataFrame, fields) -> pd.DataFrame:
    """A FEATURES config's output rows over ``frame`` by beam_dsl's plan, without a pipeline
    (the pipelines' rows are checked against the reference elsewhere)."""
    from beam_dsl.transforms.features.panes import FeaturePlan, panes_of, prepare, window_rows

    plan = FeaturePlan.build(config, dict(fields))
    events, _, _ = prepare(frame, plan)
    return window_rows(panes_of(events, plan), plan)


def fill_store(uri: str, config, frame: pd.DataFrame, fields) -> pd.DataFrame:
    """Writes what ComputeFeatures' online writer writes for ``frame`` to the store at ``uri``;
    returns the FEATURES rows."""
    from beam_dsl.transforms.features.asof import AsOf
    from beam_dsl.transforms.features.panes import FeaturePlan
    from beam_dsl.transforms.features.stores import FeatureSet, open_online, type_name
    from beam_dsl.transforms.features.transform import entity_tails

    rows = feature_rows(config, frame, fields)
    plan = FeaturePlan.build(config, dict(fields))
    definition = FeatureSet(config, tuple((n, type_name(t)) for n, t in plan.output_fields()))
    rule = AsOf.of(config)
    store = open_online(uri, definition)
    try:
        store.write(entity_tails(rows, rule), rule.longest_ms)
    finally:
        store.close()
    return rows


def expected_sliding(events: pd.DataFrame, size_s: int, every_s: int) -> pd.DataFrame:
    """count(*), sum(amount) and last(amount) per (user_id, window_end) for SLIDING size EVERY
    every (size a multiple of every) over events with float ``event_time`` seconds: each event
    copied to its size / every windows with numpy, one groupby. For data too large for
    :func:`expected_rows`."""
    frame = events.sort_values(["event_time", "amount"], kind="stable")
    t = frame["event_time"].to_numpy()
    per = size_s // every_s
    first_end = (np.floor(t / every_s).astype(np.int64) + 1) * every_s
    rows = np.repeat(np.arange(len(frame)), per)
    copies = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy()[rows],
        "window_end": (first_end[rows] + np.tile(np.arange(per) * every_s, len(frame))
                       ).astype(np.float64),
        "amount": frame["amount"].to_numpy()[rows],
    })
    grouped = copies.groupby(["user_id", "window_end"], sort=True)["amount"]
    out = grouped.agg(n="count", total="sum", last_amount="last").reset_index()
    return out.assign(window_start=out["window_end"] - size_s)
