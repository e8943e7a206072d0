"""How a file is stored, read from its first bytes: compression, encoding, delimiter.

The splitter (on the object's first bytes) and `fanout ingest` (on the local file, before
anything starts) decide the same way, so what the summary prints is what the splitter used:

- gzip is recognised by its magic bytes (1f 8b), whatever the file is called;
- a byte order mark decides the encoding (UTF-8, UTF-16 LE or BE) unless the spec or a flag
  sets one; no BOM and nothing set means UTF-8;
- the delimiter, unless set, is the candidate (`,` tab `;` `|`) that splits the header line
  into the most fields; a space is a candidate too when the header is quoted fields
  separated by single spaces (R's `write.table`: `"name" "pop" "area"`); a header with none
  of them is one column, read with `,`.

What cannot be told from the bytes (Latin-1 that is also valid UTF-8; a one-column header
that was meant to have a delimiter) is for the user to set: `hint_*` say what to set.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zlib
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"
DELIMITER_CANDIDATES = (",", "\t", ";", "|")
DEFAULT_DELIMITER = ","
SPACE = " "  # a candidate only for a header of quoted fields (see _quoted_on_space)
_QUOTED_ON_SPACE = re.compile(r'"(?:[^"]|"")*"(?: "(?:[^"]|"")*")+')
# Enough of the (decompressed) start of a file to hold its header line: the splitter
# refuses headers over 64 KiB anyway.
SNIFF_BYTES = 64 * 1024
HEAD_BYTES = SNIFF_BYTES  # what a caller reads of the stored object (compressed or not)

BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))


class DialectError(ValueError):
    """The start of the file cannot be read as what it claims (or what was set) to be."""


class SettingConflict(DialectError):
    """What is set contradicts what the bytes say (a UTF-16 BOM, another encoding set)."""


@dataclass(frozen=True)
class Dialect:
    """What the splitter reads the file as, and how each part was decided."""

    gzip: bool
    encoding: str  # utf-8, utf-16 or latin-1 (as the spec names them)
    delimiter: str
    encoding_from: str  # "spec" (or flag), "bom" or "default"
    delimiter_from: str  # "spec" (or flag), "header" (sniffed) or "default"

    def describe(self) -> str:
        """`gzip, utf-16 (BOM), delimiter ';' (from the header)` for the summary."""
        shown = {"\t": "tab"}.get(self.delimiter, repr(self.delimiter))
        where = {"spec": "set", "header": "from the header", "default": "default"}
        encoding = self.encoding + (" (BOM)" if self.encoding_from == "bom" else "")
        return (("gzip, " if self.gzip else "") + encoding
                + f", delimiter {shown} ({where[self.delimiter_from]})")


def is_gzip(head: bytes) -> bool:
    return head.startswith(GZIP_MAGIC)


def gunzip_head(head: bytes, limit: int = SNIFF_BYTES) -> bytes:
    """At most `limit` decompressed bytes from the start of a gzip stream."""
    try:
        return zlib.decompressobj(wbits=31).decompress(head, limit)
    except zlib.error as exc:
        raise DialectError(f"starts like gzip (bytes 1f 8b) but is not valid gzip: {exc}") from None


def bom_encoding(text_head: bytes) -> str | None:
    for bom, encoding in BOMS:
        if text_head.startswith(bom):
            return encoding
    return None


def detect(head: bytes, *, encoding: str | None = None, delimiter: str | None = None) -> Dialect:
    """The dialect of a file whose stored bytes start with `head` (HEAD_BYTES of them, or
    the whole file if shorter); `encoding` and `delimiter` are what the spec or flags set."""
    gzip = is_gzip(head)
    text_head = gunzip_head(head) if gzip else head
    bom = bom_encoding(text_head)
    if encoding is None:
        encoding, encoding_from = bom or "utf-8", "bom" if bom else "default"
    else:
        encoding_from = "spec"
        if bom == "utf-16" and encoding != "utf-16":
            raise SettingConflict(f"the file starts with a UTF-16 byte order mark, but the encoding "
                               f"is set to {encoding}: set it to utf-16 (--encoding utf-16, or "
                               "[source] encoding in the spec), or leave it unset")
        if encoding == "utf-16" and bom != "utf-16":
            raise SettingConflict("the encoding is set to utf-16, but the file does not start with "
                                  "a UTF-16 byte order mark (UTF-16 is read only with one): leave "
                                  "it unset, or set utf-8 or latin-1 (--encoding, or [source] "
                                  "encoding in the spec)")
    if delimiter is not None:
        return Dialect(gzip, encoding, delimiter, encoding_from, "spec")
    sniffed = sniff_delimiter(header_text(text_head, encoding))
    return Dialect(gzip, encoding, sniffed or DEFAULT_DELIMITER, encoding_from,
                   "header" if sniffed else "default")


def header_of(head: bytes, found: Dialect, *, whole: bool) -> list[str] | None:
    """The header record, when the first bytes hold all of it and decode cleanly (None
    otherwise: the split itself then reports what is wrong, with its line). `whole` says
    `head` is the whole file."""
    text_head = gunzip_head(head) if found.gzip else head
    whole = whole and len(text_head) < SNIFF_BYTES
    codec = {"utf-16": "utf-16", "utf-8": "utf-8-sig"}.get(found.encoding, found.encoding)
    try:
        text = codecs.getincrementaldecoder(codec)(errors="strict").decode(text_head, final=whole)
    except UnicodeError:  # UnicodeDecodeError, or UTF-16 without its BOM
        return None
    records = csv.reader(io.StringIO(text, newline=""), delimiter=found.delimiter, strict=True)
    try:
        header = next((record for record in records if record), None)
        # Unless the text is the whole file, a record after it shows the header is complete.
        complete = whole or next(records, None) is not None
    except csv.Error:
        return None
    return header if complete else None


def header_text(text_head: bytes, encoding: str) -> str:
    """The start of the text, decoded leniently (the split checks every byte strictly)."""
    codec = "utf-16" if encoding == "utf-16" else ("utf-8-sig" if encoding == "utf-8" else encoding)
    return codecs.getincrementaldecoder(codec)(errors="replace").decode(text_head)


def sniff_delimiter(text: str) -> str | None:
    """The candidate that splits the first non-blank record into the most fields (ties go
    to the earlier candidate); None when no candidate splits it at all."""
    best, best_fields = None, 1
    for candidate in DELIMITER_CANDIDATES:
        fields = _first_record_width(text, candidate)
        if fields > best_fields:
            best, best_fields = candidate, fields
    if _quoted_on_space(text) and _first_record_width(text, SPACE) > best_fields:
        best = SPACE
    return best


def _quoted_on_space(text: str) -> bool:
    """The first non-blank line is quoted fields separated by single spaces."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    return _QUOTED_ON_SPACE.fullmatch(line) is not None


def suggest_delimiter(text: str, delimiter: str) -> str | None:
    """For a CSV error: another delimiter (a candidate or a space) with which the start of
    the text reads as CSV, the header in more than one field; None if there is none."""
    complete = text[: text.rfind("\n") + 1] or text  # whole lines only: the head is cut
    for candidate in (*DELIMITER_CANDIDATES, SPACE):
        if candidate == delimiter:
            continue
        reader = csv.reader(io.StringIO(complete, newline=""), delimiter=candidate, strict=True)
        try:
            records = [record for record in reader if record]
        except csv.Error:
            continue
        if records and len(records[0]) > 1:
            return candidate
    return None


def hint_delimiter(text: str, delimiter: str) -> str:
    """`; the file reads as CSV with the delimiter ' ': set it (...)`, or "" (none does)."""
    found = suggest_delimiter(text, delimiter)
    if found is None:
        return ""
    shown = {"\t": "tab"}.get(found, repr(found))
    flag = {"\t": "tab", " ": "' '"}.get(found, found)
    return (f"; the file reads as CSV with the delimiter {shown}: set it (--delimiter {flag}, "
            f"or [source] delimiter = {json.dumps(found)} in the spec)")


def _first_record_width(text: str, delimiter: str) -> int:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for record in reader:
            if record:
                return len(record)
    except csv.Error:  # the head cut a quoted field short, or it is not CSV in this dialect
        return 1
    return 1


def hint_one_column(header: list[str], delimiter: str) -> str:
    """For a header error: a header read as one column may be using another delimiter."""
    if len(header) != 1:
        return ""
    shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
    return (f"; the header was read as one column (delimiter {shown}): if the file uses another "
            "delimiter, set it (--delimiter, or [source] delimiter in the spec)")


HINT_LATIN1 = ("; if the file is Latin-1 (ISO-8859-1), set the encoding (--encoding latin-1, or "
               "[source] encoding = \"latin-1\" in the spec)")
