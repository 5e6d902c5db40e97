"""Reading a CSV file in parts (beam_dsl.transforms.common.csvfile) gives exactly the
frames Beam's ReadFromCsv gives, or declines.

* Against Beam itself: files of more than one 10,000-record frame, with a word in a
  numeric column, missing values, unicode and CRLF line breaks, read by Beam's
  ReadFromCsv in a pipeline and by :class:`CsvFile` (whole and in parts): the same
  frames, dtypes included, and the same schema.
* Against pandas' chunked reader (what Beam's reader runs), fuzzed: files drawn by
  hypothesis, frames of a few records so that every boundary is exercised, and
  broken bytes among the lines. Each file either reads in parts into exactly the
  frames read whole, or declines (``parts`` None, or a part raises Diverged), never
  anything else.
"""

from __future__ import annotations

import os

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.dataframe.io import _DEFAULT_LINES_CHUNKSIZE
from apache_beam.dataframe.schemas import element_typehint_from_dataframe_proxy
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_dsl.transforms.common.csvfile import CsvFile, Diverged, read_part
from beam_dsl.transforms.common.rows import FrameDoFn, schema_fields

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _in_parts(csv: CsvFile, lines: int, count: int) -> list[pd.DataFrame] | None:
    """Every part's frames in order; None where the file declines to be read in parts or
    a part raises (TRAIN then reads the file whole, as Beam does)."""
    try:
        return [f for part in list(csv.parts(lines, count)) for f in read_part(csv, part, lines)]
    except Exception:
        return None


def _same_frames(actual: list[pd.DataFrame], expected: list[pd.DataFrame]) -> None:
    assert [len(f) for f in actual] == [len(f) for f in expected]
    for a, e in zip(actual, expected, strict=True):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), e.reset_index(drop=True))


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- against Beam's reader


def _census_like(rows: int, crlf: bool) -> bytes:
    lines = ["age,city,score,note"]
    for i in range(rows):
        age = "unknown" if i == 13_000 else ("" if i % 997 == 0 else str(20 + i % 50))
        score = "" if i % 1_001 == 0 else f"{(i % 89) / 7:.6g}"
        note = "" if i % 7 == 0 else ("zürich" if i % 5 == 0 else f"n{i % 11}")
        lines.append(f"{age},c{i % 9},{score},{note}")
    end = "\r\n" if crlf else "\n"
    return (end.join(lines) + end).encode()


_SEEN: list[pd.DataFrame] = []  # the in-process runner runs DoFns in this process


class _Frames(FrameDoFn):
    """Keeps every frame Beam's reader hands a batched DoFn."""

    def process_frame(self, frame, window):
        _SEEN.append(frame)
        yield from ()


def _beam_frames(path: str) -> tuple[list[pd.DataFrame], dict]:
    _SEEN.clear()
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        rows = pipeline | beam.io.ReadFromCsv(path)
        fields = schema_fields(rows.element_type)
        _ = rows | beam.ParDo(_Frames(list(fields)))
    return sorted(_SEEN, key=lambda f: f.index[0]), fields


@pytest.mark.parametrize("crlf", [False, True])
def test_the_frames_and_schema_are_beams(tmp_path, crlf):
    path = _write(tmp_path / "data.csv", _census_like(25_003, crlf))
    expected, fields = _beam_frames(path)
    assert len(expected) == 3 and expected[1]["age"].dtype == object  # the word's frame
    csv = CsvFile.open(path)
    assert schema_fields(element_typehint_from_dataframe_proxy(csv.proxy())) == fields
    _same_frames(list(csv.frames(_DEFAULT_LINES_CHUNKSIZE)), expected)
    for count in (1, 2, 5):
        _same_frames(_in_parts(csv, _DEFAULT_LINES_CHUNKSIZE, count), expected)


# ---------------------------------------------------------------- against pandas, fuzzed

CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["", "x", "yes", "NA", "nan", "1e5", "-0", "true", "Zoë", " a", "b "]),
)
# Bytes that break a line being one record, or the parser.
BROKEN = st.sampled_from(["", "", "", "\n", " \n", "\t\n", '"', '"a\nb"', "\r", "\x00",
                          ",,,,,", "#c", "\xff"])


@st.composite
def csv_files(draw) -> tuple[bytes, int]:
    columns = draw(st.integers(1, 4))
    header = ",".join(f"c{i}" for i in range(columns))
    rows = draw(st.lists(st.lists(CELLS, min_size=columns, max_size=columns), max_size=60))
    lines = [",".join(r) for r in rows]
    for _ in range(draw(st.integers(0, 2))):  # a broken line here and there
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(BROKEN))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = header + end + end.join(lines) + draw(st.sampled_from([end, ""]))
    return text.encode("utf-8", "surrogateescape"), draw(st.integers(1, 5))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csv_files(), st.integers(1, 4), st.sampled_from([{}, {"comment": "#"}]))
def test_parts_read_as_the_whole_file_or_decline(tmp_path, drawn, count, kwargs):
    data, lines = drawn
    path = _write(tmp_path / "fuzz.csv", data)
    try:
        whole = list(CsvFile.open(path, **kwargs).frames(lines))
    except Exception:  # the file does not parse: no part may parse either
        whole = None
    in_parts = _in_parts(CsvFile.open(path, **kwargs), lines, count) if whole else None
    if in_parts is not None:
        _same_frames(in_parts, whole)
    elif whole is None:  # nor may every part of it
        try:
            csv = CsvFile.open(path, **kwargs)
        except Exception:
            return
        assert _in_parts(csv, lines, count) is None


# ---------------------------------------------------------------- what declines


@pytest.mark.parametrize("data, kwargs", [
    (b'a,b\n1,"x"\n2,y\n', {}),  # a quote: a field may hold a line break
    (b"a,b\n1,x\r2,y\n", {}),  # a lone carriage return breaks a line for pandas
    (b"a,b\n1,x\n2,\x00\n", {}),
    (b"a,b\n1,x\n#2,y\n", {"comment": "#"}),
    (b"\na,b\n1,x\n", {}),  # a blank first line
    (b"a,b\n", {}),  # no records
    (b"a,b\n1,2,3\n4,5,6\n", {}),  # one field short: the first column is the index
])
def test_files_whose_lines_may_not_be_records_are_read_whole(tmp_path, data, kwargs):
    with pytest.raises(Diverged):
        list(CsvFile.open(_write(tmp_path / "d.csv", data), **kwargs).parts(1, 2))


@pytest.mark.parametrize("line", [b"", b"   ", b"\t"])
def test_a_part_with_a_line_pandas_skips_diverges(tmp_path, line):
    path = _write(tmp_path / "d.csv", b"a,b\n1,x\n" + line + b"\n2,y\n3,z\n")
    csv = CsvFile.open(path)
    (part,) = csv.parts(4, 1)
    with pytest.raises(Diverged, match="not records"):
        read_part(csv, part, 4)


def test_a_file_changed_since_the_scan_diverges(tmp_path):
    path = _write(tmp_path / "d.csv", b"a,b\n1,x\n2,y\n")
    csv = CsvFile.open(path)
    parts = list(csv.parts(1, 2))
    with open(path, "ab") as f:
        f.write(b"3,z\n")
    os.utime(path, ns=(0, 0))
    with pytest.raises(Diverged, match="changed"):
        read_part(csv, parts[0], 1)


def test_parts_start_at_frames_and_cover_the_file(tmp_path):
    data = b"h\n" + b"".join(b"%d\n" % i for i in range(23))
    csv = CsvFile.open(_write(tmp_path / "d.csv", data))
    parts = list(csv.parts(5, 2))  # 5 frames of 5 records (the last of 3), in 2 parts
    assert {p.header for p in parts} == {b"h\n"}
    assert [data[p.start:p.end].count(b"\n") for p in parts] == [15, 8]
    assert parts[0].start == 2 and parts[-1].end == len(data)


def test_a_part_takes_no_frame_more_once_it_has_part_bytes(tmp_path, monkeypatch):
    from beam_dsl.transforms.common import csvfile

    data = b"h\n" + b"".join(b"%d\n" % i for i in range(23))
    csv = CsvFile.open(_write(tmp_path / "d.csv", data))
    # Frames of 5 records: 10, 10, 15, 15 and 9 bytes; a part stops at 12 bytes or more.
    monkeypatch.setattr(csvfile, "PART_BYTES", 12)
    parts = list(csv.parts(5, 1))
    assert [data[p.start:p.end].count(b"\n") for p in parts] == [10, 5, 5, 3]
    _same_frames([f for p in parts for f in read_part(csv, p, 5)], list(csv.frames(5)))
