"""A FEATURES statement's windows in milliseconds: their lengths, the period of their ends,
and the panes they are computed from.

The plan (``panes.py``) computes rows by these windows and the "as of T" rule
(``asof.py``) answers by them. Imports no pandas and no Beam, so that reading
an online store (``features get``) starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from beam_dsl.ir.features import Window


@dataclass(frozen=True)
class WindowLength:
    """One window length: windows [end - size, end) for ends = offset (mod period)."""

    size_ms: int
    offset_ms: int
    suffix: str


@dataclass(frozen=True)
class WindowPlan:
    kind: str  # "sliding" (also tumbling: size = period) or "session"
    every_ms: int  # the period of window ends; the gap for sessions
    lengths: tuple[WindowLength, ...]
    pane_ms: int

    @classmethod
    def build(cls, windows: Sequence[Window]) -> WindowPlan:
        kind = "session" if windows[0].kind == "session" else "sliding"
        every = to_ms(windows[0].every_s)
        if kind == "session":
            return cls(kind, every, (WindowLength(every, 0, windows[0].suffix),), 1)
        lengths = tuple(
            # One window follows Beam (starts at multiples of the period); WINDOWS (...)
            # lengths all end on the period's grid, so one row carries all of them.
            WindowLength(to_ms(w.size_s), to_ms(w.size_s) % every if len(windows) == 1 else 0,
                         w.suffix)
            for w in windows
        )
        pane = reduce(math.gcd, [every, *(w.size_ms for w in lengths),
                                 *(w.offset_ms for w in lengths if w.offset_ms)])
        return cls(kind, every, lengths, pane)

    @property
    def longest(self) -> WindowLength:
        return max(self.lengths, key=lambda w: w.size_ms)

    def first_end_ms(self, t_ms: int) -> int:
        """The end of the earliest row an event at ``t_ms`` contributes to."""
        if self.kind == "session":
            return t_ms + self.every_ms
        offset = self.longest.offset_ms
        return t_ms + 1 + (offset - (t_ms + 1)) % self.every_ms


def to_ms(seconds: float) -> int:
    """A duration in seconds (a window, a TTL, a lateness) as whole milliseconds."""
    return int(round(seconds * 1000))
