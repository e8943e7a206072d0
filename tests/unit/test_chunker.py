"""The chunker must give exactly the records csv.reader gives on the whole file, for any
range size, with quoted delimiters, quoted newlines, escaped quotes, CRLF and a BOM."""

from __future__ import annotations

import codecs
import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitter import chunker
from splitter.chunker import CsvDecodeError, iter_records, iter_regions, last_boundary


def slices(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def reference(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


fields = st.text(
    alphabet=st.sampled_from(list('ab ,"\n\r;é€😀x1')) | st.characters(codec="utf-8"),
    max_size=12,
)
rows = st.lists(st.lists(fields, min_size=1, max_size=5), min_size=0, max_size=12)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    table = draw(rows)
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=terminator, quoting=draw(
        st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))).writerows(table)
    text = buffer.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no newline at the end of the file
    data = text.encode()
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data


@settings(max_examples=300, deadline=None)
@given(data=csv_files(), size=st.integers(min_value=1, max_value=64))
def test_any_range_size_gives_the_same_records_as_csv_reader(data: bytes, size: int) -> None:
    got = [f for _, f in iter_records(slices(data, size))]
    assert got == reference(data)


@settings(max_examples=100, deadline=None)
@given(data=csv_files(), size=st.integers(min_value=1, max_value=64))
def test_regions_tile_the_object_exactly(data: bytes, size: int) -> None:
    regions = list(iter_regions(slices(data, size)))
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    for region in regions:
        assert region.start_offset == start
        assert data[region.start_offset:region.end_offset].decode() == region.text
        start = region.end_offset
    assert start == len(data) or not regions


def test_record_lines_are_source_lines_even_when_fields_hold_newlines() -> None:
    data = b'a,b\r\n"x\ny",1\n\n2,"3\r\n4"\nlast,5'
    lines = [(line, f) for line, f in iter_records(slices(data, 3))]
    assert lines == [(1, ["a", "b"]), (2, ["x\ny", "1"]), (4, []), (5, ["2", "3\r\n4"]),
                     (7, ["last", "5"])]


def test_last_boundary_ignores_newlines_inside_quotes() -> None:
    assert last_boundary(b'a,"b\nc"') == -1
    assert last_boundary(b'a\n"b\nc') == 2
    assert last_boundary(b'a,"b""\n"\nz') == 9


def test_invalid_utf8_names_the_line() -> None:
    data = b"a,b\n1,2\n3,\xff\xfe\n"
    with pytest.raises(CsvDecodeError) as error:
        list(iter_records(slices(data, 4)))
    assert error.value.line == 3
    assert "not valid utf-8" in str(error.value)


@settings(max_examples=150, deadline=None)
@given(data=csv_files(), size=st.integers(min_value=1, max_value=64),
       piece=st.integers(min_value=1, max_value=40))
def test_pieces_smaller_than_a_range_change_nothing(data: bytes, size: int, piece: int) -> None:
    saved = chunker.SUB_REGION_BYTES
    chunker.SUB_REGION_BYTES = piece
    try:
        got = [f for _, f in iter_records(slices(data, size))]
    finally:
        chunker.SUB_REGION_BYTES = saved
    assert got == reference(data)


def test_a_quote_left_open_stops_at_the_record_limit_with_its_line(monkeypatch) -> None:
    """A stray quote early in a big file must not carry (and re-scan) the rest of it."""
    monkeypatch.setattr(chunker, "MAX_RECORD_BYTES", 4096)
    data = b"a,b\n1,2\n3,\"open\n" + b"4,5\n" * 5000
    with pytest.raises(CsvDecodeError) as raised:
        list(iter_records(slices(data, 512)))
    assert raised.value.line == 3
    assert raised.value.reason.startswith("a record runs past 4,096 bytes without ending: a quote left open")


def grid(data: bytes, size: int, start: int = 0) -> list[bytes]:
    """The bytes from `start` in slices ending on multiples of `size` (as the splitter's
    aligned ranged reads cut them, so a resume cuts where a full read would)."""
    cuts = [start, *range((start // size + 1) * size, len(data), size), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b]


stray_files = st.lists(st.sampled_from([b"a", b",", b'"', b"'", b"\n", b"\r\n", b"5'10\"", b'""',
                                        b"\xc3\xa9", b" "]), max_size=60).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(data=csv_files() | stray_files, size=st.integers(1, 32), piece=st.integers(1, 40))
def test_a_resume_from_any_region_end_cuts_the_rest_alike(data: bytes, size: int, piece: int) -> None:
    """What checkpoints rely on: the regions after any region end are the same whether the
    chunker ran from the start or resumed there (quotes inside unquoted fields included)."""
    saved = chunker.SUB_REGION_BYTES
    chunker.SUB_REGION_BYTES = piece
    try:
        try:
            regions = list(iter_regions(grid(data, size)))
        except CsvDecodeError:
            return
        cuts = [(r.start_offset, r.end_offset, r.start_line, r.plain) for r in regions]
        for index, region in enumerate(regions):
            rest = iter_regions(grid(data, size, region.end_offset), start_offset=region.end_offset,
                                start_line=region.start_line + region.line_count)
            assert [(r.start_offset, r.end_offset, r.start_line, r.plain) for r in rest] == cuts[index + 1:]
    finally:
        chunker.SUB_REGION_BYTES = saved


@pytest.mark.parametrize("size", [1, 3, 64])
def test_a_record_left_open_across_pieces_is_resumed_inside_its_quotes(size: int) -> None:
    """5'10" makes the quote count wrong for the rest of the file; csv.reader cuts it, and
    a multi-line field crossing pieces is read on from inside its quotes."""
    data = b'h,x\n5\'10",a\n"multi\n' + b"line\n" * 20 + b'end",b\nlast,"q"\n'
    regions = list(iter_regions(slices(data, size)))
    assert [f for r in regions for _, f in r.records()] == reference(data)
    assert not all(r.plain for r in regions)  # csv.reader cut some of it
    lines, texts = zip(*[(n, t) for r in regions for n, t in zip(*r.data_records(), strict=True)],
                       strict=True)
    assert lines == (1, 2, 3, 25) and texts[2].startswith('"multi\nline') and texts[3] == 'last,"q"'
