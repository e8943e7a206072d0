"""Split one CSV object as N byte ranges in parallel, each range owning exactly the
records that *start* inside it.

A range ``[a_i, a_{i+1})`` cannot simply begin at the next newline: quoted fields may
hold newlines. As in `splitter.chunker`, a newline byte is a record boundary iff the
number of quote bytes ``"`` before it is even (RFC 4180 escapes a quote as ``""``,
which adds two, so parity holds; exact for UTF-8 and single-byte encodings, where
``"`` and ``\\n`` never occur inside a multi-byte character). So the in-quote state at
``a_i`` is the parity of the quote bytes in ``[0, a_i)``, which is computed in two
cheap passes:

1. `scan_range` on every range, in parallel: one ``bytes.count`` per chunk for the
   quote parity and the newline count (no decoding, no parsing);
2. `start_states`: a prefix sum over those stats, giving each range the quote parity
   and the source line at its first byte, plus the byte just before it.

Then each range is split on its own by `iter_owned_records` (or `iter_owned_regions`):
it skips the tail of the record that began in an earlier range (bytes only, never
decoded, so a cut inside a multi-byte character is harmless: decoding always starts at
a record start), parses its records with `splitter.chunker.iter_regions` and
``csv.reader``, and reads past ``a_{i+1}`` only as far as needed to finish its last
record. Concatenating the ranges' records in order gives exactly the single-pass
records of the whole object.

Definitions used throughout:

* A *record start* is offset 0 (the first record; a UTF-8 BOM at offset 0 belongs to
  it and is skipped by the chunker) or the offset just after a boundary newline, if that
  offset is before the end of the object. Blank lines are records (``[]``), as in
  ``csv.reader``.
* The *source line* of a record is 1 + the number of ``\\n`` bytes before its start.

Typical use (the splitter does the I/O)::

    ranges = plan_ranges(size, parts, min_range_bytes)
    stats = [scan_range(iter_ranges(s3, info, range_bytes, a, b)) for a, b in ranges]  # parallel
    states = start_states(stats)
    for (a, b), state in zip(ranges, states):                                       # parallel
        for line, fields in iter_owned_records(iter_ranges(s3, info, range_bytes, a), state, b):
            ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from splitter.chunker import NEWLINE, QUOTE, Region, iter_regions

NEWLINE_BYTE = NEWLINE[0]


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
class RangeStats:
    """What the prefix sum needs from one range: cheap to compute, no parsing."""

    quote_parity: int  # number of quote bytes in the range, mod 2
    newlines: int  # number of \\n bytes in the range
    length: int  # bytes in the range
    last_byte: int | None  # the range's last byte (None if the range is empty)


def scan_range(chunks: Iterable[bytes]) -> RangeStats:
    """Stats of one range, given its bytes as consecutive slices (streaming: constant
    memory, two C-speed ``bytes.count`` calls per slice)."""
    parity = 0
    newlines = 0
    length = 0
    last: int | None = None
    for chunk in chunks:
        if not chunk:
            continue
        parity ^= chunk.count(QUOTE) & 1
        newlines += chunk.count(NEWLINE)
        length += len(chunk)
        last = chunk[-1]
    return RangeStats(parity, newlines, length, last)


# --------------------------------------------------------------------------- pass 2: prefix


@dataclass(frozen=True, slots=True)
class StartState:
    """The parser state at a range's first byte, derived from the ranges before it."""

    offset: int  # a_i: the range's first byte in the object
    quote_parity: int  # quote bytes in [0, a_i), mod 2: 1 means a_i is inside quotes
    newlines_before: int  # \\n bytes in [0, a_i)
    previous: int | None  # the byte at a_i - 1, None at offset 0

    @property
    def line(self) -> int:
        """Source line of the byte at a_i."""
        return 1 + self.newlines_before

    @property
    def at_record_start(self) -> bool:
        """Whether a record starts exactly at a_i (offset 0, or just after a newline
        outside quotes; a newline is not a quote, so the parity there is the same)."""
        return self.previous is None or (
            self.previous == NEWLINE_BYTE and self.quote_parity == 0
        )


def start_states(stats: Iterable[RangeStats]) -> list[StartState]:
    """For contiguous ranges starting at offset 0, in order: the state at each range's
    first byte (an exclusive prefix sum of parities, newline counts and lengths)."""
    states: list[StartState] = []
    offset = 0
    parity = 0
    newlines = 0
    previous: int | None = None
    for item in stats:
        states.append(StartState(offset, parity, newlines, previous))
        offset += item.length
        parity ^= item.quote_parity
        newlines += item.newlines
        if item.last_byte is not None:
            previous = item.last_byte
    return states


# --------------------------------------------------------------------------- pass 3: split


def owned_start(buffer: bytes, parity: int, previous: int | None) -> int | None:
    """Offset in `buffer` of the first record start at or after its first byte.

    `buffer` holds the object's bytes from some offset a on, `parity` is the quote
    parity at a, and `previous` the byte at a - 1 (None when a is 0). Returns 0 if a
    record starts at a itself, else the offset just past the first newline in `buffer`
    that is outside quotes (which may be ``len(buffer)``: the record starts right after
    it, or the object ends there), or None if `buffer` has no such newline yet.
    """
    if previous is None or (previous == NEWLINE_BYTE and parity == 0):
        return 0
    position, _ = _boundary(buffer, parity, 0)
    return None if position < 0 else position + 1


def iter_owned_regions(
    chunks: Iterable[bytes],
    start: StartState,
    end: int,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Iterator[Region]:
    """The records that start in ``[start.offset, end)``, as `Region`s of whole records
    with exact byte offsets and start lines (for checkpoints).

    `chunks` are the object's bytes as consecutive slices from ``start.offset`` on; they
    may run to the end of the object: they are pulled lazily, and none is pulled once
    the last owned record is complete (at most one slice past the first record boundary
    at or after `end`, or past ``end - 1`` if the range owns no record).
    """
    stream = iter(chunks)
    offset = start.offset  # object offset of the current chunk's first byte
    newlines = start.newlines_before
    first = b""  # the bytes from the first owned record start to the end of its chunk
    if start.at_record_start:
        record_start = start.offset
    else:
        parity = start.quote_parity
        for chunk in stream:
            if not chunk:
                continue
            position, parity = _boundary(chunk, parity, 0)
            if position >= 0:
                record_start = offset + position + 1
                newlines += chunk.count(NEWLINE, 0, position + 1)
                first = chunk[position + 1:]
                break
            if offset + len(chunk) >= end:
                return  # no boundary before end - 1: the range owns no record
            newlines += chunk.count(NEWLINE)
            offset += len(chunk)
        else:
            return  # the object ended inside the record that began before the range
    if record_start >= end:
        return

    def owned_bytes() -> Iterator[bytes]:
        if first:
            yield first
        yield from stream

    yield from iter_regions(
        _through_last_owned(owned_bytes(), record_start, end),
        encoding=encoding,
        delimiter=delimiter,
        start_offset=record_start,
        start_line=1 + newlines,
    )


def iter_owned_records(
    chunks: Iterable[bytes],
    start: StartState,
    end: int,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Iterator[tuple[int, list[str]]]:
    """(source line, fields) for exactly the records that start in
    ``[start.offset, end)`` (see `iter_owned_regions` for `chunks`)."""
    for region in iter_owned_regions(
        chunks, start, end, encoding=encoding, delimiter=delimiter
    ):
        yield from region_records(region)


def region_records(region: Region) -> Iterator[tuple[int, list[str]]]:
    """(source line, fields) for each record of `region` (see ``Region.records``: the line
    is 1 + the ``\\n`` bytes before the record, whatever the cuts)."""
    return region.records()


# --------------------------------------------------------------------------- internals


def _boundary(data: bytes, parity: int, begin: int) -> tuple[int, int]:
    """First newline at or after `begin` that is outside quotes, given the quote parity
    at `begin`: ``(its index, 0)``, or ``(-1, parity at the end of data)``."""
    position = begin
    while True:
        newline = data.find(NEWLINE, position)
        if newline < 0:
            return -1, parity ^ (data.count(QUOTE, position) & 1)
        parity ^= data.count(QUOTE, position, newline) & 1
        if not parity:
            return newline, 0
        position = newline + 1


def _through_last_owned(chunks: Iterable[bytes], offset: int, end: int) -> Iterator[bytes]:
    """Pass `chunks` (from the record start `offset`, quote parity 0) through up to and
    including the first boundary newline at or after ``end - 1``: the records before it
    are exactly those starting before `end`. Pulls no chunk after that one."""
    parity = 0
    limit = end - 1  # a boundary newline here or later ends the last owned record
    for chunk in chunks:
        if not chunk:
            continue
        stop = offset + len(chunk)
        if stop <= limit:
            parity ^= chunk.count(QUOTE) & 1
        else:
            begin = max(0, limit - offset)
            parity ^= chunk.count(QUOTE, 0, begin) & 1
            position, parity = _boundary(chunk, parity, begin)
            if position >= 0:
                yield chunk[:position + 1]
                return
        yield chunk
        offset = stop
