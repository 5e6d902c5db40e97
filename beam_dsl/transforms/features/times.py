"""Event times: FEATURES' one rule for reading a time as epoch milliseconds.

FEATURES' TIMESTAMP, DATASET's AS OF and ``features get --as-of`` all read
times by :func:`event_ms`. Imports pandas, not Beam.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Epoch numbers below this are seconds, the rest milliseconds: 1e11 s is the
# year 5138, 1e11 ms is 1973-03-03.
SECONDS_LIMIT = 1e11


def event_ms(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Epoch milliseconds of event times, and a mask of the values that are not times.

    Numbers are epoch seconds, or milliseconds from 1e11 up; strings are
    numbers or ISO-8601 (without a zone: UTC); datetimes are taken as they are.
    Times are truncated to the millisecond.
    """
    n = len(values)
    ms = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.to_datetime(values, utc=True)
        ok = stamps.notna().to_numpy()
        ms[ok] = stamps[ok].dt.as_unit("ms").astype("int64").to_numpy()
        return ms, ~ok
    if pd.api.types.is_bool_dtype(values.dtype):
        return ms, np.ones(n, dtype=bool)
    boolean = np.zeros(n, dtype=bool)
    if values.dtype == object:
        boolean = values.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(bool)
        values = values.where(~boolean)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    finite = np.isfinite(numbers)
    seconds = finite & (np.abs(numbers) < SECONDS_LIMIT)
    ms[seconds] = np.floor(np.round(numbers[seconds] * 1000, 3)).astype(np.int64)
    millis = finite & ~seconds & (np.abs(numbers) < 1e17)
    ms[millis] = np.floor(numbers[millis]).astype(np.int64)
    ok = seconds | millis
    rest = ~ok & ~boolean & values.notna().to_numpy()
    if rest.any():
        candidates = values[rest]
        texts = candidates.map(lambda v: v if isinstance(v, str) else None)
        stamps = pd.to_datetime(texts, utc=True, errors="coerce", format="ISO8601")
        dates = candidates.map(lambda v: pd.Timestamp(v) if hasattr(v, "isoformat")
                               and not isinstance(v, str) else pd.NaT)
        stamps = stamps.fillna(pd.to_datetime(dates, utc=True))
        good = stamps.notna().to_numpy()
        positions = np.flatnonzero(rest)[good]
        ms[positions] = stamps[good].dt.as_unit("ms").astype("int64").to_numpy()
        ok[positions] = True
    return ms, ~ok
