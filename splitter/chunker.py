"""Incremental CSV parsing over a stream of byte ranges.

The parser never holds more than one range (plus the tail of a record that crosses
into the next range) in memory. It works on bytes so that it knows the exact byte
offset of every record boundary, which is what checkpoints and parallel ranges need:

* A record ends at a newline byte that is outside quotes. In RFC 4180 CSV, whether an
  offset is inside quotes is the parity of the quote bytes before it (an escaped quote
  `""` adds two), so the last record boundary in a buffer is found with `bytes.count`
  and `bytes.rfind`, at C speed, without parsing.
* Everything before that boundary is decoded and handed to `csv.reader` in one go;
  the rest is carried into the next range. Region boundaries are exact byte offsets,
  which is what checkpoints resume from.

This is exact for UTF-8 and single-byte encodings, where the bytes `"` and `\\n` never
occur inside a multi-byte character.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from fanout.contract import MAX_FIELD_CHARS  # noqa: F401 - importing it raises csv's field limit

QUOTE = 0x22
# The longest record the chunker carries across pieces before it gives up (see iter_regions).
MAX_RECORD_BYTES = 16 * 1024 * 1024
QUOTE_CHAR = '"'
QUOTING_HINT = (" (quotes must enclose whole fields, as RFC 4180 says; a quote inside an "
                "unquoted field, like 5'10\", is not allowed)")
NEWLINE = b"\n"
UTF8_BOM = codecs.BOM_UTF8


class CsvDecodeError(ValueError):
    """Bytes that are not valid in the declared encoding; names the line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Region:
    """A run of whole records between two record boundaries of the object."""

    start_offset: int  # byte offset of the region's first byte in the object
    end_offset: int  # byte offset just past its last record
    start_line: int  # 1-based source line of its first record
    text: str
    delimiter: str = ","
    raw: bytes = b""  # the bytes `text` was decoded from (the parse stream's)
    newlines: int = -1  # "\n" in text, when known

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(source line, fields) for each record; blank lines come out as `[]` like csv.reader.

        A record's line is 1 + the `\n` bytes before it, whatever the cut. csv.reader's
        own line_num also counts a bare `\r` as a line break, so it is used directly only
        when the region has none (the common case, and C speed); otherwise the newlines of
        the physical lines the reader has consumed are counted.
        """
        reader_input: Iterator[str] | io.StringIO
        text = self.text
        bare_cr = _has_bare_cr(text)
        consumed = 0
        if bare_cr:
            def physical_lines() -> Iterator[str]:
                nonlocal consumed
                for piece in io.StringIO(text, newline=""):
                    consumed += piece.count("\n")
                    yield piece
            reader_input = physical_lines()
        else:
            reader_input = io.StringIO(text, newline="")
        # strict: a region that ends inside quotes raises instead of cutting a field short.
        # That happens only when quotes are not RFC 4180 (a quote inside an unquoted field,
        # like 5'10", upsets the quote parity that places region boundaries), and then the
        # job must fail loudly rather than load a truncated field.
        reader = csv.reader(reader_input, delimiter=self.delimiter, strict=True)
        line = self.start_line
        try:
            for fields in reader:
                yield line, fields
                # The reader reads no line ahead of a record, so this is where the next starts.
                line = self.start_line + (consumed if bare_cr else reader.line_num)
        except csv.Error as exc:
            raise CsvDecodeError(line, f"malformed CSV: {exc}{QUOTING_HINT}") from None

    def data_records(self) -> tuple[list[int], list[str]]:
        """(source lines, texts) of the region's non-blank records, each text as in the
        file without its final newline: what a version-2 message carries (see
        fanout.contract.CsvRowsEncoder). No field is parsed.

        Records are cut by the quote-parity rule that places region boundaries: a physical
        line with an odd number of quotes opens a record that the next such line closes.
        That is csv.reader's cut for RFC 4180 quoting, and `check` proves it for the
        region before the splitter sends anything (it runs over the whole object first).
        """
        text = self.text
        if _has_bare_cr(text):
            return self._cut_records()  # a bare CR ends a record too: cut record by record
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the text ends with a newline
        start = self.start_line
        odd = self._odd_lines() if QUOTE_CHAR in text else []
        numbers: list[int] | None = None
        if odd:  # quoted fields hold newlines: join the lines from each opening to its close
            if len(odd) & 1:
                raise CsvDecodeError(start + odd[-1], f"a quoted field is never closed{QUOTING_HINT}")
            records: list[str] = []
            numbers = []
            previous = 0
            for opens, closes in zip(odd[::2], odd[1::2], strict=True):
                records += lines[previous:opens]
                numbers += range(start + previous, start + opens)
                records.append("\n".join(lines[opens:closes + 1]))
                numbers.append(start + opens)
                previous = closes + 1
            records += lines[previous:]
            numbers += range(start + previous, start + len(lines))
            lines = records
        if "" in lines or "\r" in lines:  # blank lines are not records to send
            kept = [i for i, line in enumerate(lines) if line and line != "\r"]
            return ([numbers[i] for i in kept] if numbers else [start + i for i in kept],
                    [lines[i] for i in kept])
        return numbers or list(range(start, start + len(lines))), lines

    def _cut_records(self) -> tuple[list[int], list[str]]:
        """`data_records` for a region with a bare CR (which csv.reader also takes as a
        line end): csv.reader over the pieces, each record's text joined from the pieces
        it consumed."""
        consumed: list[str] = []

        def physical_lines() -> Iterator[str]:
            for piece in io.StringIO(self.text, newline=""):
                consumed.append(piece)
                yield piece

        numbers: list[int] = []
        texts: list[str] = []
        line = self.start_line
        try:
            for fields in self._reader(physical_lines()):
                record = "".join(consumed)
                consumed.clear()
                if fields:
                    numbers.append(line)
                    texts.append(record[:-1] if record.endswith("\n") else record)
                line += record.count("\n")
        except csv.Error as exc:
            self._fail(exc)
        return numbers, texts

    def _reader(self, lines: Iterator[str] | io.StringIO) -> Any:
        return csv.reader(lines, delimiter=self.delimiter, strict=True)

    def _fail(self, exc: csv.Error) -> NoReturn:
        deque(self.records(), maxlen=0)  # raises the error with its exact line
        raise CsvDecodeError(self.start_line, f"malformed CSV: {exc}{QUOTING_HINT}") from None

    def check(self) -> None:
        """Raise CsvDecodeError, with the line, unless csv.reader (strict) accepts the
        region and cuts its records exactly where `data_records` does.

        When the two disagree, the error names the first record where they do (a stray
        quote there), not the later place where csv.reader happened to fail.
        """
        text = self.text
        if QUOTE_CHAR not in text:
            return  # without quotes every line is a record and nothing can be rejected
        reader = self._reader(io.StringIO(text, newline=""))
        failure: csv.Error | None = None
        try:
            ends = [reader.line_num for _ in reader]
        except csv.Error:
            ends, reader = [], self._reader(io.StringIO(text, newline=""))
            try:
                for _ in reader:
                    ends.append(reader.line_num)
            except csv.Error as exc:
                failure = exc
        bare_cr = _has_bare_cr(text)
        odd: list[int] = []
        if not bare_cr:  # (with a bare CR, csv.reader itself cuts: see _cut_records)
            lines = self.line_count + (not text.endswith("\n"))
            odd = self._odd_lines()
            expected = _record_ends(odd, lines)
            if ends != expected:
                first = next((i for i, (a, b) in enumerate(zip(ends, expected, strict=False))
                              if a != b), min(len(ends), len(expected)))
                if first < len(ends) or failure is None:
                    line = self.start_line + ([0, *expected][first] if first <= len(expected) else 0)
                    raise CsvDecodeError(line, "unbalanced quotes: csv.reader and the quote count "
                                               f"disagree on where this record ends{QUOTING_HINT}")
        if failure is not None:
            deque(self.records(), maxlen=0)  # slower, but raises naming the line
            raise CsvDecodeError(self.start_line, f"malformed CSV: {failure}{QUOTING_HINT}")
        if len(odd) & 1:
            raise CsvDecodeError(self.start_line + odd[-1],
                                 f"a quoted field is never closed{QUOTING_HINT}")

    @property
    def line_count(self) -> int:
        """The newlines in the region (so the next region starts this many lines on)."""
        return self.newlines if self.newlines >= 0 else self.text.count("\n")

    def _odd_lines(self) -> list[int]:
        """Indexes of the physical lines holding an odd number of quotes, at C speed: keep
        only the quote and newline bytes, drop quote pairs, and what is left is one quote
        on each odd line (the same lines in the bytes as in the text: UTF-8 and Latin-1
        never use those bytes inside a character)."""
        marks = (self.raw or self.text.encode()).translate(None, _NOT_QUOTE_OR_NEWLINE)
        marks = marks.replace(b'""', b"")
        # The k-th quote left at `position` has `position - k` newlines before it.
        odd: list[int] = []
        position = marks.find(QUOTE)
        while position >= 0:
            odd.append(position - len(odd))
            position = marks.find(QUOTE, position + 1)
        return odd


_NOT_QUOTE_OR_NEWLINE = bytes(b for b in range(256) if b not in (QUOTE, NEWLINE[0]))


def _has_bare_cr(text: str) -> bool:
    """Whether a CR not followed by LF occurs (csv.reader ends a record there too)."""
    return "\r" in text and text.count("\r") != text.count("\r\n")


def _record_ends(odd: list[int], lines: int) -> list[int]:
    """For each record of a region of `lines` physical lines, the number of lines up to
    its end, by quote parity (what csv.reader's line_num says after each record): a line
    with an odd number of quotes opens a record that the next such line closes; a quote
    left open runs to the end."""
    ends: list[int] = []
    previous = 0
    pairs = zip(odd[::2], [*odd[1::2], lines - 1], strict=False)
    for opens, closes in pairs:
        ends += range(previous + 1, opens + 1)
        ends.append(closes + 1)
        previous = closes + 1
    ends += range(previous + 1, lines + 1)
    return ends


def last_boundary(buffer: bytes | bytearray) -> int:
    """Offset just past the last newline in `buffer` that lies outside quotes, or -1.

    `buffer` must start at a record boundary (quote parity 0 there).
    """
    position = buffer.rfind(NEWLINE)
    if position < 0:
        return -1
    quotes = buffer.count(QUOTE, 0, position) & 1
    while quotes:
        previous = buffer.rfind(NEWLINE, 0, position)
        if previous < 0:
            return -1
        quotes ^= buffer.count(QUOTE, previous, position) & 1
        position = previous
    return position + 1


def iter_regions(
    chunks: Iterable[bytes],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    start_offset: int = 0,
    start_line: int = 1,
) -> Iterator[Region]:
    """Yield the stream as regions of whole records, one per range read (or fewer).

    `chunks` are consecutive byte ranges starting at `start_offset`, which must be a
    record boundary; `start_line` is the source line there. A UTF-8 BOM at offset 0 is
    skipped. Only the tail of a record that crosses a range is carried over.
    """
    carry = b""
    offset = start_offset  # byte offset of carry[0]
    line = start_line
    at_start = start_offset == 0
    for chunk in chunks:
        if not chunk:
            continue
        buffer = carry + chunk if carry else chunk
        if at_start:
            if len(buffer) < len(UTF8_BOM) and UTF8_BOM.startswith(buffer):
                carry = buffer
                continue
            if buffer.startswith(UTF8_BOM):
                buffer = buffer[len(UTF8_BOM):]
                offset += len(UTF8_BOM)
            at_start = False
        boundary = last_boundary(buffer)
        if boundary < 0:
            carry = buffer
            if len(carry) > MAX_RECORD_BYTES:
                # Without this, a quote left open would carry (and re-scan) the rest of the
                # object: memory and time growing with the file.
                limit = (f"{MAX_RECORD_BYTES // 2**20} MiB" if MAX_RECORD_BYTES % 2**20 == 0
                         else f"{MAX_RECORD_BYTES:,} bytes")
                raise CsvDecodeError(line, f"a record runs past {limit} "
                                           "without ending: a quote left open, or a record far "
                                           "too large to load (rows over 1 MiB cannot be: "
                                           f"SQS's message limit){QUOTING_HINT}")
            continue
        # Parse in pieces of about SUB_REGION_BYTES: csv.reader reads from a StringIO that
        # holds up to 4 bytes a character, so a whole 8 MiB range would cost ~32 MB.
        start = 0
        for end in _piece_ends(buffer, boundary):
            region = _region(buffer[start:end], offset + start, line, encoding, delimiter)
            yield region
            line += region.line_count
            start = end
        offset += boundary
        carry = buffer[boundary:]
    if at_start and carry.startswith(UTF8_BOM):
        carry = carry[len(UTF8_BOM):]
        offset += len(UTF8_BOM)
    if carry:
        yield _region(carry, offset, line, encoding, delimiter)


SUB_REGION_BYTES = 1024 * 1024


def _piece_ends(buffer: bytes, boundary: int) -> Iterator[int]:
    """Record boundaries cutting buffer[:boundary] into pieces of about SUB_REGION_BYTES
    (a single record longer than that stays whole)."""
    start = 0
    while boundary - start > SUB_REGION_BYTES:
        cut = last_boundary(buffer[start:start + SUB_REGION_BYTES])
        if cut <= 0:
            break
        start += cut
        yield start
    yield boundary


def iter_records(chunks: Iterable[bytes], **options: object) -> Iterator[tuple[int, list[str]]]:
    """(source line, fields) for every record in the stream (see `iter_regions`)."""
    for region in iter_regions(chunks, **options):  # type: ignore[arg-type]
        yield from region.records()


def _region(data: bytes, offset: int, line: int, encoding: str, delimiter: str) -> Region:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad_line = line + data.count(NEWLINE, 0, exc.start)
        raise CsvDecodeError(
            bad_line, f"bytes are not valid {encoding}: {exc.reason} at byte {offset + exc.start}"
        ) from None
    return Region(offset, offset + len(data), line, text, delimiter, bytes(data),
                  data.count(NEWLINE))
