"""A local CSV file read into exactly the frames Beam YAML's ReadFromCsv gives, in parts
that worker processes can read on their own.

Beam's ReadFromCsv (``apache_beam.io.ReadFromCsv``, through the DataFrame API)
reads a file in one process with ``pd.read_csv(file, chunksize=LINES,
**kwargs)``: each frame of ``LINES`` records is typed by pandas on its own (a
column of numbers with one word in it is text in that frame only), and the
columns that are text in the first 100 rows, from which the schema comes, are
made pandas strings in every frame. :meth:`CsvFile.frames` reads the same way,
in this process. :meth:`CsvFile.parts` cuts the file into byte ranges that each
start at a multiple of ``LINES`` records, so that a part read after the header
line (:func:`read_part`) gives exactly the frames Beam's reader gives for those
records. That holds where each line is one record, so the scan declines (None:
read the file in one process) a file with a quote character anywhere (a quoted
field may hold a line break), the comment character, a NUL byte, a line break
other than ``\\n`` or ``\\r\\n``, a separator pandas reads as a pattern, or an
index taken from the first column (a header one field short); and a part raises
:class:`Diverged` where its frames hold fewer records than it has lines (pandas
skips blank lines and lines of spaces and tabs), where they lack the sample's
columns or a plain index, or where the file changed since the scan. The reader
then reads the file in one process, as Beam does.

Nothing here imports Beam.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# Beam's ReadFromCsv takes its schema from the first rows of the file.
SAMPLE_ROWS = 100
_BLOCK = 1 << 27  # bytes read at a time by the scan
_PROBE = 1 << 16
# Bytes that, anywhere in a file, mean a line may not be one record (see the module doc).
_DECLINED = (b'"', b"\x00")


class Diverged(Exception):
    """A part that would not read as Beam's reader reads it (the file is read whole)."""


@dataclass(frozen=True)
class Parts:
    """Byte ranges of a file, each a whole number of frames of records, and what reading
    one needs: the header line and the file's size and modification time at the scan."""

    header: bytes
    ranges: tuple[tuple[int, int], ...]
    stamp: tuple[int, int]


@dataclass(frozen=True)
class CsvFile:
    """A local CSV file and the pandas arguments Beam's ReadFromCsv passes (``sep`` for
    ``delimiter``, ``comment``), with the columns that are text in its first rows."""

    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    text_columns: tuple[str, ...] = ()

    @classmethod
    def open(cls, path: str, **kwargs: Any) -> CsvFile:
        """The file at ``path`` (made absolute), its text columns read from its sample."""
        csv = cls(os.path.abspath(path), kwargs)
        # Compared as Beam's ReadViaPandas compares.
        text = tuple(c for c, t in csv._first_rows().dtypes.items() if t == object)  # noqa: E721
        return cls(csv.path, kwargs, text)

    def _first_rows(self) -> pd.DataFrame:
        with open(self.path, "rb") as f, pd.read_csv(
                f, chunksize=SAMPLE_ROWS, **self.kwargs) as stream:
            return next(stream)

    def proxy(self) -> pd.DataFrame:
        """No rows, the columns and dtypes of Beam's reader (its schema comes from them)."""
        return self.typed(self._first_rows()[:0])

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the sample's text columns made pandas strings, as Beam's reader
        makes them in every frame (``objects_as_strings``)."""
        for column in self.text_columns:
            frame[column] = frame[column].astype(pd.StringDtype())
        return frame

    def frames(self, lines: int) -> Iterator[pd.DataFrame]:
        """The whole file, frame by frame, read in this process as Beam's reader reads it."""
        with open(self.path, "rb") as f:
            for frame in pd.read_csv(f, chunksize=lines, **self.kwargs):
                yield self.typed(frame)

    def parts(self, lines: int, count: int) -> Parts | None:
        """About ``count`` byte ranges (fewer for a small file, more for a big one: at most
        :data:`PART_FRAMES` frames of ``lines`` records each), each starting at a multiple
        of ``lines`` records; None where a line may not be one record."""
        if not _plain_sep(self.kwargs):
            return None  # a separator pandas reads as a pattern, in Python
        if not isinstance(self.proxy().index, pd.RangeIndex):
            return None  # the first column is the index: pandas decides per read
        with open(self.path, "rb") as f:
            stamp = _stamp(f.fileno())
            scan = _scan(f, self.kwargs.get("comment"), lines)
        if scan is None:
            return None
        header, starts, end = scan  # where each frame of `lines` records starts
        if not starts:
            return None  # no records: nothing to read in parts
        per = max(1, min(PART_FRAMES, -(-len(starts) // max(count, 1))))
        bounds = [*starts[::per], end]
        return Parts(header, tuple(zip(bounds, bounds[1:], strict=False)), stamp)


# A part holds at most this many frames (200,000 records at Beam's 10,000 a frame).
PART_FRAMES = 20


def _plain_sep(kwargs: dict[str, Any]) -> bool:
    sep = kwargs.get("sep", ",")
    return isinstance(sep, str) and len(sep) == 1 and sep not in "\"\r\n"


def _stamp(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_size, stat.st_mtime_ns


def _scan(f: Any, comment: str | None, lines: int) -> tuple[bytes, list[int], int] | None:
    """The header line, the offset where every ``lines``-th record starts (the first
    record's included) and the file's size; None where a line may not be one record."""
    declined = (*_DECLINED, comment.encode()) if comment else _DECLINED
    data = f.read(_BLOCK)
    newline = data.find(b"\n")
    if newline < 0 or not data[:newline].strip(b" \t\r\xef\xbb\xbf") or _declined(
            data[: newline + 1], declined):
        return None  # no record, a blank first line (pandas skips it), or a quote...
    header, pending, base = data[: newline + 1], data[newline + 1:], newline + 1
    starts: list[int] = []
    skip = 0  # line breaks to pass before the next frame starts
    while True:
        more = f.read(_BLOCK)
        # Whole lines only, but for the last line of the file, which may have no break.
        cut = pending.rfind(b"\n") + 1 if more else len(pending)
        lines_seen = pending[:cut]
        if _declined(lines_seen, declined):
            return None
        skip = _frame_starts(lines_seen, base, skip, lines, starts)
        base += cut
        if not more:
            return header, starts, base
        pending = pending[cut:] + more


def _declined(data: bytes, declined: tuple[bytes, ...]) -> bool:
    """Whether ``data`` holds a byte that may make a line other than one record (a
    carriage return not before a line break included)."""
    return any(d in data for d in declined) or (
        b"\r" in data and data.count(b"\r") != data.count(b"\r\n"))


def _frame_starts(data: bytes, base: int, skip: int, lines: int, starts: list[int]) -> int:
    """Appends ``base`` + the offset in ``data`` (whole lines) where each frame of
    ``lines`` records starts, ``skip`` line breaks passed first; returns the line breaks
    left to pass before the next frame starts."""
    at, left = 0, data.count(b"\n")  # left: line breaks in data[at:]
    while at < len(data):
        if skip == 0:
            starts.append(base + at)
            skip = lines
        if left < skip:
            return skip - left
        at, left, skip = _after_breaks(data, at, skip), left - skip, 0
    return skip


def _after_breaks(data: bytes, at: int, n: int) -> int:
    """The offset just after the ``n``-th line break from ``at`` (``data`` has that many):
    one count up to a guess from the next 64 KiB's line length, then line by line to it."""
    sample = data.count(b"\n", at, at + _PROBE) or 1
    guess = min(len(data), at + n * min(len(data) - at, _PROBE) // sample)
    found = data.count(b"\n", at, guess)
    if found < n:  # short of it: on, break by break
        while found < n:
            guess, found = data.find(b"\n", guess) + 1, found + 1
        return guess
    guess = data.rfind(b"\n", at, guess) + 1  # just after the found-th
    while found > n:  # past it: back, break by break
        guess, found = data.rfind(b"\n", at, guess - 1) + 1, found - 1
    return guess


def read_part(csv: CsvFile, parts: Parts, index: int, lines: int) -> list[pd.DataFrame]:
    """The frames of part ``index``, as Beam's reader gives them for its records;
    :class:`Diverged` where the file changed since the scan or a frame does not have the
    sample's columns and a plain index."""
    start, end = parts.ranges[index]
    fd = os.open(csv.path, os.O_RDONLY)
    try:
        if _stamp(fd) != parts.stamp:
            raise Diverged(f"{csv.path} changed while it was read")
        body = os.pread(fd, end - start, start)
    finally:
        os.close(fd)
    columns = list(csv.proxy().columns)
    frames = []
    for frame in pd.read_csv(io.BytesIO(parts.header + body), chunksize=lines, **csv.kwargs):
        if list(frame.columns) != columns or not isinstance(frame.index, pd.RangeIndex):
            raise Diverged(f"part {index} of {csv.path} does not read as the whole file")
        frames.append(csv.typed(frame))
    # A line pandas skipped (blank, or spaces and tabs only) is not a record: the frames
    # would start elsewhere than Beam's.
    records = body.count(b"\n") + (not body.endswith(b"\n"))
    if sum(map(len, frames)) != records:
        raise Diverged(f"part {index} of {csv.path} has lines that are not records")
    return frames
