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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# csv's default field limit is 128 KiB; DynamoDB items reach 400 KB and SQS messages 1 MiB,
# so allow far more and let the writer reject what is too large, with a reason.
MAX_FIELD_CHARS = 64 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))

QUOTE = 0x22
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

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(source line, fields) for each record; blank lines come out as `[]` like csv.reader.

        A record's line is 1 + the `\n` bytes before it, whatever the cut. csv.reader's
        own line_num also counts a bare `\r` as a line break, so it is used directly only
        when the region has none (the common case, and C speed); otherwise the newlines of
        the physical lines the reader has consumed are counted.
        """
        reader_input: Iterator[str] | io.StringIO
        text = self.text
        bare_cr = text.count("\r") != text.count("\r\n")
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
            raise CsvDecodeError(line, f"malformed CSV: {exc} (quotes must enclose whole fields, "
                                       "as RFC 4180 says; a quote inside an unquoted field, "
                                       "like 5'10\", is not allowed)") from None

    @property
    def line_count(self) -> int:
        return self.text.count("\n")


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
    return Region(offset, offset + len(data), line, text, delimiter)
