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
records. That holds where each line is one record, so :meth:`CsvFile.parts`
raises :class:`Diverged` (perhaps after giving the first parts) for a file with
a quote character anywhere (a quoted field may hold a line break), the comment
character, a NUL byte, a line break other than ``\\n`` or ``\\r\\n``, a
separator pandas reads as a pattern, or an index taken from the first column
(a header one field short); and a part raises :class:`Diverged` where its frames
hold fewer records than it has lines (pandas skips blank lines and lines of
spaces and tabs), where they lack the sample's columns or a plain index, or
where the file changed since the scan. The reader then reads the file in one
process, as Beam does.

Nothing here imports Beam.
"""

from __future__ import annotations

import io
import math
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
class Part:
    """A byte range of a file, a whole number of frames of records, and what reading it
    needs: the header line and the file's size and modification time at the scan."""

    header: bytes
    start: int
    end: int
    stamp: tuple[int, int]


@dataclass(frozen=True)
class CsvFile:
    """A local CSV file, the pandas arguments Beam's ReadFromCsv passes (``sep`` for
    ``delimiter``, ``comment``) and its sample: the first rows' columns, dtypes and index
    as pandas read them, without the rows (read once, by :meth:`open`)."""

    path: str
    kwargs: dict[str, Any]
    sample: pd.DataFrame = field(compare=False, repr=False)

    @classmethod
    def open(cls, path: str, **kwargs: Any) -> CsvFile:
        """The file at ``path`` (made absolute) and its sample."""
        with open(path, "rb") as f, pd.read_csv(f, chunksize=SAMPLE_ROWS, **kwargs) as stream:
            sample = next(stream)[:0]
        return cls(os.path.abspath(path), kwargs, sample)

    @property
    def text_columns(self) -> list[str]:
        """The columns that are text in the sample (compared as Beam's ReadViaPandas does)."""
        return [c for c, t in self.sample.dtypes.items() if t == object]  # noqa: E721

    def proxy(self) -> pd.DataFrame:
        """No rows, the columns and dtypes of Beam's reader (its schema comes from them)."""
        return self.typed(self.sample.copy())

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

    def parts(self, lines: int, count: int) -> Iterator[Part]:
        """The file in about ``count`` byte ranges (at most :data:`PART_FRAMES` frames of
        ``lines`` records each, and no frame more once :data:`PART_BYTES` bytes are
        reached), each starting at a multiple of ``lines`` records, in
        order, each as soon as the scan has found its end; :class:`Diverged` (perhaps
        after some) where a line may not be one record, or the file has none."""
        if not _plain_sep(self.kwargs):
            raise Diverged("its separator is one pandas reads as a pattern")
        if not isinstance(self.sample.index, pd.RangeIndex):
            raise Diverged("its first column is an index")  # pandas decides per read
        declined = _DECLINED + ((self.kwargs["comment"].encode(),)
                                if self.kwargs.get("comment") else ())
        with open(self.path, "rb") as f:
            stamp = _stamp(f.fileno())
            header, bounds = _scan(f, lines, declined)
            first = next(bounds)  # where the first record starts (the end: none)
            group, per = [first], 0
            for bound in bounds:
                if not per:  # from the first frame's length, the file's frames
                    frames = (stamp[0] - first) / max(1, bound - first)
                    per = max(1, min(PART_FRAMES, math.ceil(frames / max(count, 1))))
                group.append(bound)
                if len(group) > per or group[-1] - group[0] >= PART_BYTES:
                    yield Part(header, group[0], group[-1], stamp)
                    group = group[-1:]
            if len(group) > 1:
                yield Part(header, group[0], group[-1], stamp)
            elif not per:
                raise Diverged("it has no records")


# A part holds at most this many frames (200,000 records at Beam's 10,000 a frame), and
# no more frames once it has this many bytes (wide rows: a worker holds a part's bytes and
# frames at once).
PART_FRAMES = 20
PART_BYTES = 1 << 26


def _plain_sep(kwargs: dict[str, Any]) -> bool:
    sep = kwargs.get("sep", ",")
    return isinstance(sep, str) and len(sep) == 1 and sep not in "\"\r\n"


def _stamp(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_size, stat.st_mtime_ns


def _scan(f: Any, lines: int, declined: tuple[bytes, ...]) -> tuple[bytes, Iterator[int]]:
    """The header line, and where each frame of ``lines`` records starts (the first
    record's offset first), then the file's end; :class:`Diverged` where a line may not
    be one record."""
    buffer = f.read(_BLOCK)
    newline = buffer.find(b"\n")
    if newline < 0 or not buffer[:newline].strip(b" \t\r\xef\xbb\xbf"):
        raise Diverged("it has no header line, or a blank one")
    _check(buffer, 0, newline + 1, declined)
    return buffer[: newline + 1], _bounds(f, buffer, newline + 1, lines, declined)


def _bounds(f: Any, buffer: bytes, at: int, lines: int, declined: tuple[bytes, ...]
            ) -> Iterator[int]:
    base, skip = 0, 0  # buffer's offset in the file; line breaks to pass to a frame's start
    while True:
        more = f.read(_BLOCK)
        # Whole lines only, but for the file's last line, which may have no line break.
        cut = max(at, buffer.rfind(b"\n", at) + 1) if more else len(buffer)
        _check(buffer, at, cut, declined)
        while at < cut:
            if skip == 0:
                yield base + at
                skip = lines
            at, passed = _after_breaks(buffer, at, skip, cut)
            skip -= passed
        if not more:
            yield base + len(buffer)
            return
        buffer, base, at = buffer[at:] + more, base + at, 0


def _check(data: bytes, lo: int, hi: int, declined: tuple[bytes, ...]) -> None:
    """:class:`Diverged` where ``data[lo:hi]`` holds a byte that may make a line other
    than one record (a carriage return not before a line break included)."""
    for byte in declined:
        if data.find(byte, lo, hi) >= 0:
            raise Diverged(f"it holds {byte.decode()!r}: a line may not be one record")
    if data.find(b"\r", lo, hi) >= 0 and data.count(b"\r", lo, hi) != data.count(
            b"\r\n", lo, hi):
        raise Diverged("it holds a carriage return that ends a line alone")


def _after_breaks(data: bytes, at: int, n: int, end: int) -> tuple[int, int]:
    """The offset just after the ``n``-th line break from ``at`` and ``n``; or ``end`` and
    the line breaks there are where ``data[at:end]`` has fewer. One count up to a guess
    from the next 64 KiB's line length, then line by line to it."""
    sample = data.count(b"\n", at, min(end, at + _PROBE)) or 1
    guess = min(end, at + n * min(end - at, _PROBE) // sample)
    found = data.count(b"\n", at, guess)
    while found < n:  # short of it: on, break by break
        after = data.find(b"\n", guess, end) + 1
        if not after:
            return end, found
        guess, found = after, found + 1
    guess = data.rfind(b"\n", at, guess) + 1  # just after the found-th
    while found > n:  # past it: back, break by break
        guess, found = data.rfind(b"\n", at, guess - 1) + 1, found - 1
    return guess, n


def read_part(csv: CsvFile, part: Part, lines: int) -> list[pd.DataFrame]:
    """The frames of ``part``, as Beam's reader gives them for its records;
    :class:`Diverged` where the file changed since the scan, or where they hold fewer
    records than the part has lines or lack the sample's columns or a plain index."""
    fd = os.open(csv.path, os.O_RDONLY)
    try:
        if _stamp(fd) != part.stamp:
            raise Diverged("it changed while it was read")
        body = os.pread(fd, part.end - part.start, part.start)
    finally:
        os.close(fd)
    columns = list(csv.sample.columns)
    frames = []
    for frame in pd.read_csv(io.BytesIO(part.header + body), chunksize=lines, **csv.kwargs):
        if list(frame.columns) != columns or not isinstance(frame.index, pd.RangeIndex):
            raise Diverged(f"bytes {part.start}-{part.end} do not read as the whole "
                           "file does")
        frames.append(csv.typed(frame))
    # A line pandas skipped (blank, or spaces and tabs only) is not a record: the frames
    # would start elsewhere than Beam's.
    records = body.count(b"\n") + (not body.endswith(b"\n"))
    if sum(map(len, frames)) != records:
        raise Diverged(f"bytes {part.start}-{part.end} hold lines that are not records "
                       "(blank, or spaces and tabs only)")
    return frames
