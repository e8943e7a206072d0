"""Split one CSV object as N byte ranges in parallel, each range owning exactly the
records that *start* inside it, cut exactly where csv.reader (strict) ends them.

Records start at line starts (offset 0, or just after a ``\\n``) where csv.reader is not
inside a quoted field. At the end of a line its state is one of two: inside a quoted
field or not; nothing else carries from one line to the next. So a range's records
follow from one bit, the state at its first line start, and every range can work out
its part for *both* values before any range knows which is true:

1. `scan_range` on every range, in parallel: the range's *span* is its lines, from the
   first line start at or after its first byte to the first line start at or after the
   next range's first byte (so the spans tile the object). The span is cut by
   `splitter.chunker.Cutter` twice, once from outside quotes and once from inside a
   quoted field; each cut is a full check (every byte decoded, every record proven
   RFC 4180 or read by csv.reader) and says whether the span ends inside a quoted field,
   where its first and its last open record start, and its first error. The two cuts
   meet at the first record boundary they share, and from there on are one: the second
   cut stops there, so it costs a few lines, not a second pass, unless the bytes keep
   the two apart (stray quotes laid out to do so).
2. `compose`, run by whichever scan completes the set: from offset 0 (outside quotes),
   each range's real state picks one of its two results, whose end state is the next
   range's start state. That gives, with no guess, each range's owned bytes (from its
   first record start to the next range's), their source line, or the first error in
   file order (a record open past the chunker's limit and a quote never closed are
   found here, as they span ranges).
3. `iter_owned_regions` in each range, in parallel: the records of its owned bytes, cut
   by the same chunker as a sequential split. Concatenated in order they are exactly
   the records of a single pass over the whole object.

A UTF-8 BOM at offset 0 is skipped, as in the chunker. Exact for UTF-8 and single-byte
encodings, where ``"``, ``\\r`` and ``\\n`` never occur inside a multi-byte character, so
a range may begin inside a character: decoding always starts at a line start.

Typical use (the splitter does the I/O)::

    ranges = plan_ranges(size, parts, min_range_bytes)
    scans = [scan_range(iter_ranges(s3, info, rb, max(a - 1, 0)), a, b) for a, b in ranges]
    owned = compose(scans, size)                                   # raises CsvDecodeError
    for part in owned:                                                        # parallel
        if part:
            for region in iter_owned_regions(iter_ranges(s3, info, rb, part.start, part.end), part):
                ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from splitter.chunker import (
    MAX_RECORD_BYTES,
    NEWLINE,
    BadBytes,
    CsvDecodeError,
    Cutter,
    Region,
    iter_regions,
    malformed,
    strip_bom,
    too_long,
)

# --------------------------------------------------------------------------- planning


def plan_ranges(size: int, parts: int, min_range_bytes: int) -> list[tuple[int, int]]:
    """Cut ``[0, size)`` into at most `parts` contiguous, non-empty, near-equal ranges of
    at least `min_range_bytes` each (a single range if the object is smaller than that;
    none for an empty object)."""
    if size < 0:
        raise ValueError("size must be >= 0")
    if parts < 1:
        raise ValueError("parts must be at least 1")
    if min_range_bytes < 1:
        raise ValueError("min_range_bytes must be at least 1")
    if size == 0:
        return []
    count = max(1, min(parts, size // min_range_bytes))
    cuts = [size * k // count for k in range(count + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(count)]


# --------------------------------------------------------------------------- pass 1: scan


@dataclass(frozen=True, slots=True)
class Guess:
    """A range's span, cut from one assumed state at its first line start. Newline counts
    are from the range's first byte (so the line is 1 + the count + the lines before it).
    """

    end_inside: bool  # the span ends inside a quoted field
    first: int | None = None  # its first record start (None: the span has none)
    first_newlines: int = 0
    open: int | None = None  # the start of the record open at its end, if it starts in it
    open_newlines: int = 0
    error: str | None = None  # the first error: csv.reader's (strict), or a bad byte
    error_newlines: int = 0
    error_in_open: bool = False  # the error is in the record open at the span's start


@dataclass(frozen=True, slots=True)
class RangeScan:
    """One range's part, for both states at its first line start."""

    start: int  # the range's first byte
    span_end: int  # the first line start at or after the next range's first byte
    newlines: int  # \\n bytes in the range itself
    outside: Guess  # its first line starts outside quotes
    inside: Guess  # ... inside a quoted field


def scan_range(chunks: Iterable[bytes], start: int, end: int, *, encoding: str = "utf-8",
               delimiter: str = ",") -> RangeScan:
    """Scan the range ``[start, end)``: `chunks` are the object's bytes from
    ``max(start - 1, 0)`` on (the byte before the range says whether a line starts at
    it), pulled lazily and not past the span's end."""
    stream = iter(chunks)
    offset = max(start - 1, 0)  # object offset of the next chunk's first byte
    if start == 0:
        offset, stream = strip_bom(stream)
    newlines = 0
    span_start: int | None = 0 if start == 0 else None
    outside: _Run | None = _Run(encoding, delimiter, offset, 1, False) if start == 0 else None
    inside: _Run | None = _Run(encoding, delimiter, offset, 1, True) if start == 0 else None
    span_end: int | None = None
    for chunk in stream:
        if not chunk:
            continue
        low, offset = offset, offset + len(chunk)
        if start < offset and low < end:
            newlines += chunk.count(NEWLINE, max(start - low, 0), end - low)
        begin = 0
        if span_start is None:
            found = chunk.find(NEWLINE, max(start - 1 - low, 0))
            if found < 0:
                continue
            begin, span_start = found + 1, low + found + 1
            line = 1 + (span_start > start)  # that newline is in the range unless it is a - 1
            outside = _Run(encoding, delimiter, span_start, line, False)
            inside = _Run(encoding, delimiter, span_start, line, True)
        stop = None
        if offset > end - 1:
            found = chunk.find(NEWLINE, max(end - 1 - low, 0))
            if found >= 0:
                stop = max(found + 1, begin)
        assert outside is not None and inside is not None
        piece = chunk[begin:stop]
        outside.feed(piece)
        inside.feed(piece)
        if inside.meets(outside):
            inside = inside.joined(outside)
        if stop is not None:
            span_end = low + stop
            break
    final = span_end is None
    if final:
        span_end = offset
    if outside is None or inside is None:  # no line starts at or after `start`
        assert span_end is not None
        return RangeScan(start, span_end, newlines, Guess(False), Guess(True))
    assert span_end is not None
    outside.feed(b"", final=final)
    inside.feed(b"", final=final)
    return RangeScan(start, span_end, newlines, outside.guess(), inside.guess())


class _Run:
    """One Cutter over a span, from one assumed start state, and what it found."""

    def __init__(self, encoding: str, delimiter: str, offset: int, line: int,
                 inside: bool) -> None:
        self.cutter = Cutter(encoding=encoding, delimiter=delimiter, offset=offset, line=line,
                             inside=inside)
        self.error: CsvDecodeError | None = None
        self.error_in_open = False
        self.same: _Run | None = None  # the run this one joined: from there on they are one

    def feed(self, piece: bytes, *, final: bool = False) -> None:
        if self.error is not None or self.same is not None:
            return
        try:
            for _region in self.cutter.feed(piece, final=final):
                pass  # the scan only checks: the range split cuts the regions again
        except CsvDecodeError as exc:
            # A bad byte is named at its own line; csv.reader's errors at their record's.
            self.error = exc
            self.error_in_open = self.cutter.first is None and not isinstance(exc, BadBytes)

    def meets(self, other: _Run) -> bool:
        """Whether both runs are alive and at the same record boundary (so from there on
        they cut alike)."""
        return (self.same is None and self.error is None and other.error is None
                and self.cutter.first is not None and self.cutter.offset == other.cutter.offset)

    def joined(self, other: _Run) -> _Run:
        self.same = other
        return self

    def guess(self) -> Guess:
        cutter = self.cutter
        first, first_newlines = cutter.first, cutter.first_line - 1 if cutter.first is not None else 0
        ending = self.same or self
        if ending.error is not None:
            return Guess(True, first, first_newlines, error=ending.error.reason,
                         error_newlines=ending.error.line - 1,
                         error_in_open=ending is self and self.error_in_open)
        last = ending.cutter
        if last.open and last.first is not None:  # a record that starts in the span is open
            return Guess(True, first, first_newlines, last.offset, last.line - 1)
        return Guess(last.open, first, first_newlines)


# --------------------------------------------------------------------------- pass 2: compose


@dataclass(frozen=True, slots=True)
class Owned:
    """The bytes of the records one range owns: whole records, from a record start."""

    start: int
    end: int
    line: int  # the source line at `start`


def compose(scans: list[RangeScan], size: int) -> list[Owned | None]:
    """For contiguous range scans from offset 0, in order: each range's owned bytes (None
    if no record starts in it). Raises CsvDecodeError for the first error in file order."""
    inside = False
    newlines = 0  # \\n before the range
    opened = (0, 1)  # (offset, line) of the record open at the current span start
    starts: list[tuple[int, int] | None] = []
    for scan in scans:
        guess = scan.inside if inside else scan.outside
        if guess.error is not None:
            line = opened[1] if inside and guess.error_in_open else 1 + newlines + guess.error_newlines
            raise CsvDecodeError(line, guess.error)
        start = None
        if guess.first is not None and guess.first < scan.span_end:
            start = (guess.first, 1 + newlines + guess.first_newlines)
        if inside and guess.first is not None and guess.first - opened[0] > MAX_RECORD_BYTES:
            raise too_long(opened[1])  # the record open at the span start ends too late
        starts.append(start)
        if guess.end_inside:
            if guess.open is not None:
                opened = (guess.open, 1 + newlines + guess.open_newlines)
            if scan.span_end - opened[0] > MAX_RECORD_BYTES:
                raise too_long(opened[1])
        inside = guess.end_inside
        newlines += scan.newlines
    if inside:
        raise malformed(opened[1], "unexpected end of data")
    owned: list[Owned | None] = []
    following = size
    for start in reversed(starts):
        owned.append(None if start is None else Owned(start[0], following, start[1]))
        if start is not None:
            following = start[0]
    return owned[::-1]


# --------------------------------------------------------------------------- pass 3: split


def iter_owned_regions(chunks: Iterable[bytes], owned: Owned, *, encoding: str = "utf-8",
                       delimiter: str = ",") -> Iterator[Region]:
    """The records one range owns, as `Region`s of whole records with exact byte offsets
    and start lines; `chunks` are the bytes ``[owned.start, owned.end)``."""
    return iter_regions(chunks, encoding=encoding, delimiter=delimiter,
                        start_offset=owned.start, start_line=owned.line)


def iter_owned_records(chunks: Iterable[bytes], owned: Owned | None, *, encoding: str = "utf-8",
                       delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(source line, fields) for exactly the records one range owns."""
    if owned is None:
        return
    for region in iter_owned_regions(chunks, owned, encoding=encoding, delimiter=delimiter):
        yield from region.records()
