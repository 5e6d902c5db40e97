"""Quantities with units: durations, sizes and percentages."""

from __future__ import annotations

import math
import re

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)")


def duration_seconds(number: float, unit: str | None) -> float | None:
    """Seconds for ``number`` ``unit`` (``5m`` -> 300.0), or None if not a duration
    (or too long for a float)."""
    if unit is None or unit not in DURATION_UNITS:
        return None
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def size_bytes(number: float, unit: str | None) -> int | None:
    """Bytes for a size such as ``512MB``, or None if the unit is not a size (or the
    number is not finite)."""
    if unit is None or unit.upper() not in SIZE_UNITS:
        return None
    try:
        return int(number * SIZE_UNITS[unit.upper()])
    except (OverflowError, ValueError):  # inf or nan
        return None


def parse_size(text: str) -> int | None:
    """Bytes for a size string such as ``'8GB'``; None when it is not one."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return size_bytes(float(match.group(1)), match.group(2))


def percent_fraction(number: float, unit: str | None) -> float | None:
    """``20%`` -> 0.2, or None if not a percentage."""
    if unit != "%":
        return None
    return float(number) / 100.0


def duration_suffix(seconds: float) -> str:
    """The shortest exact suffix for a window length: 3600 -> '1h', 300 -> '5m'."""
    for unit in ("d", "h", "m", "s"):
        scale = DURATION_UNITS[unit]
        if seconds >= scale and seconds % scale == 0:
            return f"{int(seconds // scale)}{unit}"
    return f"{int(round(seconds * 1000))}ms"
