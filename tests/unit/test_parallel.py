"""Parallel ranges must give, concatenated in order, exactly the records (fields and
source lines) of a single pass over the whole object, for any cut points and any read
size: cuts inside quoted fields, right after a newline, inside a CRLF pair, inside a
multi-byte UTF-8 character or the BOM, at 0 and at the end.

Micro-measurement (not asserted; 2 MB of 8-column CSV with quoted commas, quotes and
newlines, read as 64 KiB slices, CPython 3.11 on the dev machine, best of 5)::

    scan_range(chunks)                         ~1.8 ms   (~1.1 GB/s: two bytes.count per slice)
    sum(1 for _ in iter_records(chunks))      ~31 ms     (~65 MB/s: decode + csv.reader)

so the parity/newline pre-pass is about 15-17x faster than parsing (and S3 reads, not
CPU, will dominate it: each range's scan can run in its own invocation).
Reproduce with ``python -m tests.unit.test_parallel``.
"""

from __future__ import annotations

import codecs
import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitter.chunker import CsvDecodeError, iter_records
from splitter.parallel import (
    RangeStats,
    StartState,
    iter_owned_records,
    iter_owned_regions,
    owned_start,
    plan_ranges,
    scan_range,
    start_states,
)
from tests.unit.test_chunker import csv_files

BOM = codecs.BOM_UTF8


def slices(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def record_starts(data: bytes) -> list[int]:
    """Record starts by definition, found byte by byte: offset 0, and just after every
    newline with an even number of quotes before it (unless that is the end)."""
    if not data or data == BOM:
        return []
    starts = [0]
    quotes = 0
    for index, byte in enumerate(data):
        if byte == 0x22:
            quotes += 1
        elif byte == 0x0A and quotes % 2 == 0 and index + 1 < len(data):
            starts.append(index + 1)
    return starts


def reference(data: bytes) -> list[tuple[int, int, list[str]]]:
    """(record start, source line, fields) by definition: each \\n-delimited record is
    parsed alone by csv.reader; a row's line is 1 + the \\n bytes before the physical
    line it starts on (a bare \\r outside quotes makes csv.reader end a row there, so
    one \\n-record may give two rows). Checked against csv.reader on the whole text."""
    starts = record_starts(data)
    got = []
    for start, stop in zip(starts, [*starts[1:], len(data)], strict=False):
        text = data[start:stop].decode("utf-8-sig")
        physical = io.StringIO(text, newline="").readlines()
        base = 1 + data.count(b"\n", 0, start)
        reader = csv.reader(io.StringIO(text, newline=""))
        before = 0
        for row in reader:
            got.append((start, base + sum(p.count("\n") for p in physical[:before]), row))
            before = reader.line_num
    whole = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [row for _, _, row in got] == whole
    return got


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


def split_in_ranges(
    data: bytes, cuts: list[int], size: int, scan_size: int | None = None
) -> list[tuple[int, list[str]]]:
    """Plan from `cuts`, scan each range, prefix-sum, then split each range alone; also
    checks that no range reads further than needed."""
    bounds = sorted({0, len(data), *cuts})
    ranges = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    stats = [scan_range(slices(data[a:b], scan_size or size)) for a, b in ranges]
    states = start_states(stats)
    starts = record_starts(data)
    expected = reference(data)
    got: list[tuple[int, list[str]]] = []
    for (a, b), state in zip(ranges, states, strict=True):
        assert state.offset == a
        assert state.quote_parity == data.count(b'"', 0, a) % 2
        assert state.line == 1 + data.count(b"\n", 0, a)
        assert state.at_record_start == (a == 0 or a in starts)
        chunks = Counting(slices(data[a:], size))
        owned = list(iter_owned_records(chunks, state, b))
        assert owned == [(line, row) for start, line, row in expected if a <= start < b]
        # Reads stop at the first record start at or after b (the end of the last owned
        # record), or at b if no record starts in between; whole slices only.
        needed = min([s for s in starts if s >= b] + [len(data)])
        assert chunks.pulled < max(needed, b) - a + size
        got.extend(owned)
    return got


@st.composite
def files_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(csv_files())
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
@given(case=files_and_cuts(), size=st.integers(1, 64), scan_size=st.integers(1, 64))
def test_ranges_concatenate_to_the_single_pass_records(
    case: tuple[bytes, list[int]], size: int, scan_size: int
) -> None:
    data, cuts = case
    got = split_in_ranges(data, cuts, size, scan_size)
    assert got == [(line, row) for _, line, row in reference(data)]
    single = list(iter_records([data]))
    assert [fields for _, fields in got] == [fields for _, fields in single]
    if data.count(b"\r") == data.count(b"\r\n"):
        # Region.records counts a bare \r in a quoted field as a line (csv line_num);
        # without one, the chunker's lines are the source lines too.
        assert got == single


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
    expected = [(line, row) for _, line, row in reference(data)]
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


def test_owned_start_needs_the_previous_byte() -> None:
    buffer = b'x\n"a\nb"\nc'
    assert owned_start(buffer, 0, None) == 0  # offset 0
    assert owned_start(buffer, 0, ord("\n")) == 0  # just after a boundary newline
    assert owned_start(buffer, 0, ord("z")) == 2  # mid-record: after the next newline
    # Inside quotes (after a quoted newline, or mid-field): the newline at 1 is quoted,
    # the quote at 2 closes the field, so the newline at 4 is the boundary.
    assert owned_start(buffer, 1, ord("\n")) == 5
    assert owned_start(buffer, 1, ord("z")) == 5
    assert owned_start(b'a\nb', 1, ord("z")) is None  # no boundary yet: read more
    assert owned_start(b"abc\n", 0, ord("z")) == 4  # starts right after the buffer


def test_start_states_are_an_exclusive_prefix_sum() -> None:
    stats = [RangeStats(1, 2, 10, ord('"')), RangeStats(0, 0, 5, ord("\n")), RangeStats(1, 3, 4, 0)]
    assert start_states(stats) == [
        StartState(0, 0, 0, None),
        StartState(10, 1, 2, ord('"')),
        StartState(15, 1, 2, ord("\n")),
    ]
    assert scan_range([b'a"\n', b"", b'""\n\n']) == RangeStats(1, 3, 7, ord("\n"))
    assert scan_range([]) == RangeStats(0, 0, 0, None)


def test_a_range_owning_nothing_reads_only_its_own_bytes() -> None:
    big = b'"' + b"x\n" * 1000 + b'"\nnext\n'
    state = StartState(10, 1, 4, ord("x"))  # big[9] is x, inside quotes
    chunks = Counting(slices(big[10:], 16))
    assert list(iter_owned_records(chunks, state, 200)) == []
    assert chunks.pulled <= 200 - 10 + 16


def test_regions_carry_exact_offsets_for_checkpoints() -> None:
    data = b'h\n"a\nb"\nc\nd\n'
    state = start_states([scan_range([data[:3]]), scan_range([data[3:]])])[1]
    regions = list(iter_owned_regions(slices(data[3:], 4), state, len(data)))
    assert regions[0].start_offset == 8  # the quoted record began in the first range
    assert b"".join(data[r.start_offset:r.end_offset] for r in regions) == b"c\nd\n"


def test_invalid_bytes_in_a_later_range_name_the_source_line() -> None:
    data = b'a,b\n"1\n2",3\n4,\xff\n'
    ranges = [(0, 6), (6, len(data))]
    states = start_states([scan_range([data[a:b]]) for a, b in ranges])
    assert list(iter_owned_records([data[0:]], states[0], 6)) == [(1, ["a", "b"]), (2, ["1\n2", "3"])]
    with pytest.raises(CsvDecodeError) as error:
        list(iter_owned_records(slices(data[6:], 3), states[1], len(data)))
    assert error.value.line == 4


def _measure() -> None:  # pragma: no cover - run by hand for the docstring's numbers
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
    for name, work in [("scan_range", lambda: scan_range(chunks)),
                       ("iter_records", lambda: sum(1 for _ in iter_records(chunks)))]:
        best = min(_timed(work, time.perf_counter) for _ in range(5))
        print(f"{name:14} {best * 1000:8.2f} ms  ({len(data) / best / 1e6:8.1f} MB/s)")


def _timed(work: object, clock: object) -> float:
    start = clock()  # type: ignore[operator]
    work()  # type: ignore[operator]
    return clock() - start  # type: ignore[operator]


if __name__ == "__main__":  # pragma: no cover
    _measure()
