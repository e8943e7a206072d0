"""Parallel ranges must give, concatenated in order, exactly what a single pass over the
whole object gives: csv.reader's (strict) records at their source lines, or the same
error at the same line, for any cut points and any read size: cuts inside quoted
fields, right after a newline, inside a CRLF pair, inside a multi-byte UTF-8 character
or the BOM, at 0 and at the end, with stray quotes (5'10") anywhere.

Micro-measurement (not asserted; 2 MB of 8-column CSV with quoted commas, doubled
quotes and a quoted newline in every row, read as 64 KiB slices, CPython 3.11 on the
shared dev machine, CPU time, best of 3)::

    scan_range(chunks, 0, len(data))        ~10 ms   (both start states: one cut, a few lines more)
    iter_regions(chunks)                     ~9 ms   (decode, RFC 4180 check, quote-count cuts)
    sum(1 for _ in iter_records(chunks))    ~29 ms   (... and csv.reader over every field)

Reproduce (wall clock) with ``python -m tests.unit.test_parallel``.
"""

from __future__ import annotations

import codecs
import csv
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitter import chunker
from splitter.chunker import CsvDecodeError, iter_records
from splitter.parallel import (
    Guess,
    Owned,
    RangeScan,
    compose,
    iter_owned_records,
    plan_ranges,
    scan_range,
)
from tests.unit.test_chunker import csv_files
from tests.unit.test_fuzz import csv_bytes, reference_lines, stray_bytes

BOM = codecs.BOM_UTF8
FUZZ = settings(max_examples=int(os.environ.get("FANOUT_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def slices(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


class Counting:
    """An iterator over slices that remembers how many bytes were pulled from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)
        self.pulled = 0

    def __iter__(self) -> Counting:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.pulled += len(chunk)
        return chunk


def single_pass(data: bytes, size: int, delimiter: str = ",") -> list[tuple[int, list[str]]] | str:
    try:
        return list(iter_records(slices(data, size), delimiter=delimiter))
    except CsvDecodeError as exc:
        return str(exc)


def split_in_ranges(data: bytes, cuts: list[int], size: int,
                    delimiter: str = ",") -> list[tuple[int, list[str]]] | str:
    """Plan from `cuts`, scan each range alone, compose, then split each range alone (the
    error text if the composition or a split raised). Also checks that a scan reads no
    further than its span (plus one slice) and a split exactly its owned bytes."""
    bounds = sorted({0, len(data), *cuts})
    ranges = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    scans = []
    for a, b in ranges:
        chunks = Counting(slices(data[max(a - 1, 0):], size))
        scans.append(scan_range(chunks, a, b, delimiter=delimiter))
        assert chunks.pulled < scans[-1].span_end - max(a - 1, 0) + size
    try:
        owned = compose(scans, len(data))
    except CsvDecodeError as exc:
        return str(exc)
    got: list[tuple[int, list[str]]] = []
    for part in owned:
        if part is not None:
            try:
                got += iter_owned_records(slices(data[part.start:part.end], size), part,
                                          delimiter=delimiter)
            except CsvDecodeError as exc:  # pragma: no cover - the scans check every record
                raise AssertionError(f"a range split failed after the scans passed: {exc}") from exc
    return got


@st.composite
def files_and_cuts(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> tuple[bytes, list[int]]:
    data = draw(files)
    n = len(data)
    interesting = {0, n}
    for index, byte in enumerate(data):
        if byte in b'"\n\r':
            interesting.update((index, index + 1))  # at and after quotes, newlines, CRs
        if 0x80 <= byte <= 0xBF:
            interesting.add(index)  # inside a multi-byte character (or the BOM)
    positions = st.sampled_from(sorted(interesting)) | st.integers(0, n)
    return data, draw(st.lists(positions, max_size=8))


@settings(max_examples=200, deadline=None)
@given(case=files_and_cuts(csv_files()), size=st.integers(1, 64))
def test_ranges_of_rfc4180_files_concatenate_to_csv_readers_records(
        case: tuple[bytes, list[int]], size: int) -> None:
    data, cuts = case
    assert split_in_ranges(data, cuts, size) == reference_lines(data, ",") == single_pass(data, size)


@FUZZ
@given(st.data())
def test_any_bytes_and_any_cuts_give_exactly_the_single_pass(data: st.DataObject) -> None:
    """Stray quotes, quotes never closed, text after a closing quote, invalid UTF-8, any
    delimiter, any cuts and read sizes, pieces smaller than a range: the ranges give
    csv.reader's (strict) records at their lines when it reads the file, and otherwise
    the single pass's error, at the same line."""
    files = (csv_bytes(stray_quotes=True).map(lambda f: f[0])
             | stray_bytes.map(bytes) | st.binary(max_size=80))
    raw, cuts = data.draw(files_and_cuts(files))
    size = data.draw(st.integers(1, 40))
    delimiter = data.draw(st.sampled_from([",", ";", "\t"]))
    piece = data.draw(st.sampled_from([chunker.SUB_REGION_BYTES, 7, 64]))
    saved = chunker.SUB_REGION_BYTES
    chunker.SUB_REGION_BYTES = piece
    try:
        got = split_in_ranges(raw, cuts, size, delimiter)
        single = single_pass(raw, size, delimiter)
    finally:
        chunker.SUB_REGION_BYTES = saved
    assert got == single
    try:
        expected = reference_lines(raw, delimiter)
    except (csv.Error, UnicodeDecodeError):
        assert isinstance(got, str) and got.startswith("line ")
        return
    assert got == expected


def test_the_stray_quote_file_of_issue_12_at_every_pair_of_cuts() -> None:
    data = b'name,height,note\nann,5\'10",tall\ncat,"multi\nline",y\n'
    expected = [(1, ["name", "height", "note"]), (2, ["ann", "5'10\"", "tall"]),
                (3, ["cat", "multi\nline", "y"])]
    assert reference_lines(data, ",") == expected
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            assert split_in_ranges(data, [first, second], 3) == expected


QUOTED = (
    b'id,text\r\n'
    b'1,"one\nnewline"\r\n'
    b'2,"two\r\n""quoted""\r\nlines"\r\n'
    b'\r\n'
    b'3,"caf\xc3\xa9 \xf0\x9f\x98\x80\n"\n'
    b'4,plain\n'
    b'"5\n",last'
)


@pytest.mark.parametrize("data", [QUOTED, BOM + QUOTED], ids=["plain", "bom"])
def test_every_pair_of_cuts_including_quoted_newlines_on_the_boundary(data: bytes) -> None:
    expected = reference_lines(data, ",")
    assert [f for _, f in expected] == [
        ["id", "text"], ["1", "one\nnewline"], ["2", 'two\r\n"quoted"\r\nlines'], [],
        ["3", "café 😀\n"], ["4", "plain"], ["5\n", "last"],
    ]
    n = len(data)
    for first in range(n + 1):
        for second in range(first, n + 1, 3):
            for size in (1, 7):
                assert split_in_ranges(data, [first, second], size) == expected


def test_a_boundary_exactly_at_a_quoted_newline() -> None:
    data = b'a,"x\ny"\nb,"p\nq"\nc,z'
    inside = data.index(b"\n")  # the quoted newline of the first record
    for cuts in ([inside], [inside + 1], [inside, inside + 1], [inside + 1, data.index(b"q")]):
        assert split_in_ranges(data, cuts, 2) == [
            (1, ["a", "x\ny"]), (3, ["b", "p\nq"]), (5, ["c", "z"])]


def test_a_scan_works_out_both_states_at_its_first_line() -> None:
    data = b'h\n"a\nb,"\nc\n'
    scan = scan_range([data[1:]], 2, len(data))  # the range starts at '"a'
    # From outside quotes its first line opens a quoted field that closes on "b,": a
    # record at 2; from inside, '"a' is text after a closing quote: an error.
    assert scan.outside == Guess(False, 2, 0)
    assert scan.inside.error is not None and "expected after" in scan.inside.error
    later = scan_range([data[4:]], 5, len(data))  # the range starts at the newline in "a\nb"
    assert later.inside == Guess(False, 9, 1)  # inside: b," closes the field; c starts at 9
    assert later.outside.first == 5 and later.outside.end_inside  # outside: b,"\nc\n stays open


def test_compose_takes_each_range_from_the_previous_ranges_end_state() -> None:
    first = RangeScan(0, 4, 1, Guess(True, 0, 0, open=2), Guess(True, error="never"))
    second = RangeScan(4, 9, 1, Guess(False, 4, 0, error="wrong guess"), Guess(False, 7, 1))
    assert compose([first, second], 9) == [Owned(0, 7, 1), Owned(7, 9, 3)]
    with pytest.raises(CsvDecodeError) as error:
        compose([first, RangeScan(4, 9, 1, Guess(False, 4, 0), Guess(True))], 9)
    assert error.value.line == 1 and "unexpected end of data" in error.value.reason


def test_a_record_open_across_ranges_past_the_limit_fails_at_its_line(monkeypatch) -> None:
    monkeypatch.setattr(chunker, "MAX_RECORD_BYTES", 64)
    monkeypatch.setattr("splitter.parallel.MAX_RECORD_BYTES", 64)
    data = b'a,b\n1,"open\n' + b"x\n" * 100 + b'"\n'
    got = split_in_ranges(data, list(range(8, len(data), 10)), 4)
    assert isinstance(got, str) and got.startswith("line 2: a record runs past 64 bytes")
    assert got == single_pass(data, 4)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 10_000), parts=st.integers(1, 40), minimum=st.integers(1, 3_000))
def test_planned_ranges_tile_the_object(size: int, parts: int, minimum: int) -> None:
    ranges = plan_ranges(size, parts, minimum)
    if size == 0:
        assert ranges == []
        return
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a < b for a, b in ranges)
    assert all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    assert 1 <= len(ranges) <= parts
    if len(ranges) > 1:
        assert min(b - a for a, b in ranges) >= minimum
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_a_range_owning_nothing_reads_only_its_own_lines() -> None:
    big = b'"' + b"x\n" * 1000 + b'"\nnext\n'
    chunks = Counting(slices(big[9:], 16))
    scan = scan_range(chunks, 10, 200)
    assert chunks.pulled <= 200 - 9 + 16
    assert scan.inside == Guess(True)  # inside quotes it never closes in its lines
    assert scan.outside == Guess(False, 11, 1)  # outside, each "x" line is a record


def test_invalid_bytes_in_a_later_range_name_the_source_line() -> None:
    data = b'a,b\n"1\n2",3\n4,\xff\n'
    assert split_in_ranges(data, [6], 3) == single_pass(data, 3)
    got = split_in_ranges(data, [6], 3)
    assert isinstance(got, str) and got.startswith("line 4: bytes are not valid utf-8")


def _measure() -> None:  # pragma: no cover - run by hand
    import random
    import time

    rng = random.Random(1)
    out = io.StringIO()
    writer = csv.writer(out)
    while out.tell() < 2_000_000:
        writer.writerow([rng.randint(0, 10**9), "name, with comma", 'say "hi"', "multi\nline",
                         "café", rng.random(), "x" * rng.randint(0, 40), "2024-01-01"])
    data = out.getvalue().encode()
    chunks = slices(data, 65536)
    for name, work in [("scan_range", lambda: scan_range(chunks, 0, len(data))),
                       ("iter_records", lambda: sum(1 for _ in iter_records(chunks)))]:
        best = min(_timed(work, time.perf_counter) for _ in range(5))
        print(f"{name:14} {best * 1000:8.2f} ms  ({len(data) / best / 1e6:8.1f} MB/s)")


def _timed(work: object, clock: object) -> float:
    start = clock()  # type: ignore[operator]
    work()  # type: ignore[operator]
    return clock() - start  # type: ignore[operator]


if __name__ == "__main__":  # pragma: no cover
    _measure()
