"""Incremental CSV parsing over a stream of byte ranges, cut exactly where csv.reader
(default dialect, strict) ends its records.

The parser never holds more than one range (plus the tail of a record that crosses into
the next range) in memory. It works on bytes so that it knows the exact byte offset of
every record boundary, which is what checkpoints and parallel ranges need. A stream is
cut into pieces of whole records of about SUB_REGION_BYTES, each starting at a record
boundary, in one of two ways:

* The fast path, for what RFC 4180 allows (quotes only around whole fields, a quote
  inside them doubled). There a newline is a record boundary iff the number of quote
  bytes before it is even, so a candidate cut is found with `bytes.count`/`rfind` at C
  speed; the piece before it is then proven to be RFC 4180 by one regular-expression
  match (`_rfc4180`, ~6x faster than csv.reader: it allocates no field). For such
  text csv.reader's records are exactly the ones the quote count gives.
* Anything else (a quote inside an unquoted field, like 5'10", or broken quoting) is
  cut by csv.reader itself, run over the piece's lines: its `line_num` after each record
  says where the record ended. csv.reader's state at the end of a line is one of two:
  inside a quoted field or not, so a record left open by a piece is resumed in the next
  one as "inside quotes" (a quote prefixed to the line, see `_reader_ends`), never
  re-scanned from its start.

So every piece the chunker yields has been read by the fast check or by csv.reader
(strict): a file the chunker goes through whole is one csv.reader accepts, and what
csv.reader (strict) rejects raises CsvDecodeError with the line of the record.

This is exact for UTF-8 and single-byte encodings, where the bytes `"`, `\\r` and `\\n`
never occur inside a multi-byte character.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

from fanout.contract import MAX_FIELD_CHARS  # noqa: F401 - importing it raises csv's field limit

QUOTE = 0x22
# The longest record the chunker carries across pieces before it gives up (see _Cutter).
MAX_RECORD_BYTES = 16 * 1024 * 1024
# Pieces are about this long: csv.reader reads from a StringIO that holds up to 4 bytes a
# character, so a whole 8 MiB range would cost ~32 MB.
SUB_REGION_BYTES = 1024 * 1024
INSIDE_WINDOW_BYTES = 16 * 1024  # the first window csv.reader reads to close an open record
QUOTE_CHAR = '"'
NEWLINE = b"\n"
UTF8_BOM = codecs.BOM_UTF8


class CsvDecodeError(ValueError):
    """Bytes that are not valid in the declared encoding, or CSV that csv.reader (strict)
    rejects; names the line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class BadBytes(CsvDecodeError):
    """Bytes not valid in the declared encoding (named at their own line, not the record's)."""

    def __init__(self, line: int, reason: str, offset: int) -> None:
        super().__init__(line, reason)
        self.offset = offset  # of the bad byte, in the object


def malformed(line: int, error: csv.Error | str) -> CsvDecodeError:
    """csv.reader's (strict) complaint about the record at `line`, with the fix."""
    message = str(error)
    if message == "unexpected end of data":
        fix = ("a quoted field is never closed: close it, or double a quote meant literally "
               'inside quotes ("")')
    elif "expected after" in message:
        fix = ('text follows a closing quote: quote the whole field and double each quote '
               'inside it ("say ""hi"" twice")')
    else:
        fix = "fix the quoting of this record"
    return CsvDecodeError(line, f"malformed CSV: {message} ({fix})")


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
    # Whether the quote count cuts its records (proven by the RFC 4180 check); otherwise
    # csv.reader cuts them.
    plain: bool = True

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
        reader = self._reader(reader_input)
        line = self.start_line
        try:
            for fields in reader:
                yield line, fields
                # The reader reads no line ahead of a record, so this is where the next starts.
                line = self.start_line + (consumed if bare_cr else reader.line_num)
        except csv.Error as exc:
            raise malformed(line, exc) from None

    def data_records(self) -> tuple[list[int], list[str]]:
        """(source lines, texts) of the region's non-blank records, each text as in the
        file without its final newline: what a version-2 message carries (see
        fanout.contract.CsvRowsEncoder). No field is parsed.

        In a plain region (RFC 4180 quoting, proven when the region was cut) a physical
        line with an odd number of quotes opens a record that the next such line closes,
        which is csv.reader's cut there; any other region is cut by csv.reader itself.
        """
        text = self.text
        if not self.plain or _has_bare_cr(text):
            return self._cut_records()  # a bare CR ends a record too: cut record by record
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the text ends with a newline
        start = self.start_line
        odd = self._odd_lines() if QUOTE_CHAR in text else []
        numbers: list[int] | None = None
        if odd:  # quoted fields hold newlines: join the lines from each opening to its close
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
        """`data_records` cut by csv.reader: csv.reader over the physical lines, each
        record's text joined from the lines it consumed (its line_num says how many)."""
        lines = io.StringIO(self.text, newline="").readlines()
        reader = self._reader(iter(lines))
        numbers: list[int] = []
        texts: list[str] = []
        line = self.start_line
        previous = 0
        try:
            for fields in reader:
                consumed = reader.line_num
                record = (lines[previous] if consumed == previous + 1
                          else "".join(lines[previous:consumed]))
                previous = consumed
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
        raise malformed(self.start_line, exc) from None

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


@lru_cache(maxsize=16)
def _rfc4180(delimiter: str) -> re.Pattern[str]:
    """Text that is whole records of RFC 4180 quoting, for csv.reader's default dialect:
    every quote belongs to a quoted field that starts a field (after the delimiter, a
    line break or the start) and ends one (before the delimiter, a line break or the end),
    with only doubled quotes inside. csv.reader reads such text with no error, and ends
    its records exactly at the newlines with an even number of quotes before them.
    Possessive quantifiers: the match is linear and never backtracks."""
    d = re.escape(delimiter)
    quoted = r'"[^"]*+(?:""[^"]*+)*+"'
    return re.compile(rf'[^"]*+(?:(?:(?<=[{d}\r\n])|\A){quoted}(?=[{d}\r\n]|\Z)[^"]*+)*+')


# Appended to a piece's lines: it opens a quoted field at a record boundary (and the
# reader then fails at the end of its input), and closes the field of a record left open.
_SENTINEL = ('"\n',)


def _reader_ends(text: str, delimiter: str, inside: bool) -> tuple[list[int], csv.Error | None]:
    """Where csv.reader (strict) ends each record of `text` (character offsets just past
    each one), and the error that stopped it, if any. `text` is whole lines from a record
    boundary, or from a line end inside a quoted field (`inside`: then only where that
    record ends); a record left open at its end is no error (the next piece may close it)
    and has no offset."""
    lines = io.StringIO(text, newline="").readlines()
    if inside and lines:
        lines[0] = QUOTE_CHAR + lines[0]  # the reader's state at a line end inside quotes
    reader = csv.reader(itertools.chain(lines, _SENTINEL), delimiter=delimiter, strict=True)
    numbers: list[int] = []
    error: csv.Error | None = None
    try:
        for _ in reader:
            numbers.append(reader.line_num)
            if inside:
                break
    except csv.Error as exc:
        if reader.line_num <= len(lines):
            error = exc  # a real one: the sentinel was not read yet
    if numbers and numbers[-1] > len(lines):
        numbers.pop()  # the sentinel closed a record left open: not a record of `text`
    ends = list(itertools.accumulate(map(len, lines)))
    shift = 1 if inside else 0
    return [ends[n - 1] - shift for n in numbers], error


def _window_end(buffer: bytes, start: int, end: int, size: int) -> int:
    """Where a window of about `size` bytes from `start` ends: after its last newline, or
    at `end` when less than `size` is left or one line is longer than the window."""
    if end - start <= size:
        return end
    window = buffer.rfind(NEWLINE, start, start + size) + 1
    return window if window > start else end


def last_boundary(buffer: bytes | bytearray, start: int = 0, stop: int | None = None) -> int:
    """Offset just past the last newline in buffer[start:stop] with an even number of
    quotes between `start` and it, or -1: the last record boundary there if the text from
    the record boundary `start` is RFC 4180. (Offsets are buffer offsets: no copy.)
    """
    stop = len(buffer) if stop is None else stop
    position = buffer.rfind(NEWLINE, start, stop)
    if position < 0:
        return -1
    quotes = buffer.count(QUOTE, start, position) & 1
    while quotes:
        previous = buffer.rfind(NEWLINE, start, position)
        if previous < 0:
            return -1
        quotes ^= buffer.count(QUOTE, previous, position) & 1
        position = previous
    return position + 1


def _decode(data: bytes, offset: int, line: int, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad_line = line + data.count(NEWLINE, 0, exc.start)
        raise BadBytes(
            bad_line, f"bytes are not valid {encoding}: {exc.reason} at byte {offset + exc.start}",
            offset + exc.start) from None


def too_long(line: int) -> CsvDecodeError:
    """The error for a record that runs on past MAX_RECORD_BYTES (at its first line)."""
    limit = (f"{MAX_RECORD_BYTES // 2**20} MiB" if MAX_RECORD_BYTES % 2**20 == 0
             else f"{MAX_RECORD_BYTES:,} bytes")
    return CsvDecodeError(line, f"a record runs past {limit} without ending: a quote left "
                                "open (close it, or double a quote meant literally inside "
                                'quotes: ""), or a record far too large to load (rows over '
                                "1 MiB cannot be: SQS's message limit)")


class Cutter:
    """Cuts a byte stream into regions of whole records, exactly where csv.reader (strict)
    ends them; fed a chunk at a time, it carries only the record still open.

    The stream starts at a record boundary (`offset`, source `line`), or, with `inside`,
    at a line end inside a quoted field of a record that began earlier: that record's tail
    is skipped (it yields no region) and `first` is where the first whole record starts.
    """

    def __init__(self, *, encoding: str = "utf-8", delimiter: str = ",", offset: int = 0,
                 line: int = 1, inside: bool = False) -> None:
        self.encoding, self.delimiter = encoding, delimiter
        self.offset = offset  # object offset of the carry's first byte: a record start
        self.line = line  # its source line
        self.first: int | None = None if inside else offset  # where the first record starts
        self.first_line = line
        self._skipping = inside
        self._carry = b""
        self._resume = 0  # carry bytes csv.reader has read: they end inside a quoted field

    @property
    def open(self) -> bool:
        """Whether a record is open (its start is `offset`): the stream so far ends in it."""
        return bool(self._carry) or self._skipping

    def feed(self, chunk: bytes, *, final: bool = False) -> Iterator[Region]:
        """The regions `chunk` completes; with `final`, the stream ends after it and must
        end with a whole record."""
        buffer = self._carry + chunk if self._carry else chunk
        start = 0
        end = len(buffer) if final else buffer.rfind(NEWLINE) + 1
        bad: BadBytes | None = None
        while start < end:
            try:
                stop, region = self._cut(buffer, start, end, final)
            except BadBytes as exc:
                # The first error in file order wins: cut the lines before the bad byte's
                # (csv.reader may reject one of them), then fail on it.
                good = buffer.rfind(NEWLINE, start, exc.offset - self.offset) + 1
                if good <= start:
                    raise
                bad, end, final = exc, good, False
                continue
            if stop < 0:
                break
            if region is not None:
                yield region
                self.line += region.line_count
            else:
                self.line += buffer.count(NEWLINE, start, stop)
            start = stop
        if bad is not None:
            raise bad
        self.offset += start
        self._carry = buffer[start:]
        if len(self._carry) > MAX_RECORD_BYTES:
            # Without this, a quote left open would carry the rest of the object: memory
            # growing with the file.
            raise too_long(self.line)

    def _cut(self, buffer: bytes, start: int, end: int, final: bool) -> tuple[int, Region | None]:
        """The next record boundary after `start` (at most `end`) and the region before
        it (None while skipping); -1 if the record at `start` runs past `end`."""
        if not (self._skipping or (start == 0 and self._resume)):
            window = _window_end(buffer, start, end, SUB_REGION_BYTES)
            if final and window == len(buffer) and not buffer.count(QUOTE, start, window) & 1:
                cut = window  # the last record, which may have no newline
            else:
                cut = last_boundary(buffer, start, window)
            if cut > start:
                text = self._decode(buffer, start, cut, self.line)
                if QUOTE_CHAR not in text or _rfc4180(self.delimiter).fullmatch(text):
                    return cut, self._region(buffer, start, cut, text, plain=True)
        return self._exact(buffer, start, end, final)

    def _exact(self, buffer: bytes, start: int, end: int, final: bool) -> tuple[int, Region | None]:
        """`_cut` by csv.reader, a piece at a time from `start` (or from where it stopped
        inside the open record's quoted field)."""
        scan = start + (self._resume if start == 0 else 0)
        inside = self._skipping or scan > start
        self._resume = 0
        # Inside quotes only the record's end is wanted, usually a few lines on: windows
        # grow from small, and the fast path takes over again after it.
        size = min(INSIDE_WINDOW_BYTES, SUB_REGION_BYTES) if inside else SUB_REGION_BYTES
        while True:
            window = _window_end(buffer, scan, end, size)
            text = self._decode(buffer, scan, window, self.line + buffer.count(NEWLINE, start, scan))
            ends, error = _reader_ends(text, self.delimiter, inside)
            if ends and self._skipping:  # the skipped record ends at the first end
                skipped = scan + self._bytes(text, ends[0], window - scan)
                self._skipping, self.first = False, self.offset + skipped
                self.first_line = self.line + buffer.count(NEWLINE, start, skipped)
                if error is None:
                    return skipped, None
            if error is not None:
                line = self.line + buffer.count(NEWLINE, start, scan)
                if ends:  # the failing record starts after the last whole one
                    line += text.count("\n", 0, ends[-1])
                elif inside:  # ... or is the open record, which starts at `start`
                    line = self.line
                raise malformed(line, error)
            if ends:
                cut = scan + self._bytes(text, ends[-1], window - scan)
                break
            if window >= end:
                if final:
                    raise malformed(self.line, "unexpected end of data")
                self._resume = window - start  # the carry will start at `start`
                return -1, None
            scan, inside = window, True
            size = min(2 * size, SUB_REGION_BYTES)
        return cut, self._region(buffer, start, cut, None, plain=False)

    def _bytes(self, text: str, chars: int, size: int) -> int:
        """The bytes of text[:chars] (`text` decoded from `size` bytes)."""
        return chars if len(text) == size else len(text[:chars].encode(self.encoding))

    def _decode(self, buffer: bytes, start: int, stop: int, line: int) -> str:
        return _decode(buffer[start:stop], self.offset + start, line, self.encoding)

    def _region(self, buffer: bytes, start: int, stop: int, text: str | None, *,
                plain: bool) -> Region:
        raw = buffer[start:stop]
        if text is None:
            text = raw.decode(self.encoding)  # already checked by _decode
        return Region(self.offset + start, self.offset + stop, self.line, text, self.delimiter,
                      raw, raw.count(NEWLINE), plain)


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
    skip, stream = strip_bom(chunks) if start_offset == 0 else (0, iter(chunks))
    cutter = Cutter(encoding=encoding, delimiter=delimiter, offset=start_offset + skip,
                    line=start_line)
    for chunk in stream:
        if chunk:
            yield from cutter.feed(chunk)
    yield from cutter.feed(b"", final=True)


def strip_bom(chunks: Iterable[bytes]) -> tuple[int, Iterator[bytes]]:
    """(bytes of a UTF-8 BOM at the stream's start, the stream after it)."""
    stream = iter(chunks)
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= len(UTF8_BOM) or not UTF8_BOM.startswith(head):
            break
    skip = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    return skip, itertools.chain((head[skip:],), stream)


def iter_records(chunks: Iterable[bytes], **options: object) -> Iterator[tuple[int, list[str]]]:
    """(source line, fields) for every record in the stream (see `iter_regions`)."""
    for region in iter_regions(chunks, **options):  # type: ignore[arg-type]
        yield from region.records()
