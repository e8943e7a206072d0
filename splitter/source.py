"""The object's bytes as the chunker parses them ("parse space"), from any offset.

How the object is stored is decided from its first bytes (`open_source`, the rules in
fanout/dialect.py): gzip by its magic bytes whatever the key, the encoding by a byte order
mark unless the spec sets one, the delimiter from the header line unless the spec sets one.

Plain UTF-8 and Latin-1 objects are parsed as stored: parse offsets are object offsets
and a resume reads from the checkpoint with ranged GETs. Gzip-compressed objects
and UTF-16 text are transformed on the fly — gunzipped, and UTF-16 transcoded to
UTF-8 so that quote and newline stay single bytes — and their parse offsets count the
transformed bytes: a resume streams the object again from its start and skips ahead
(CPU, not memory). Either way the stream is cut on a fixed grid from parse offset 0
(multiples of the range size and of READ_PIECE_BYTES), so a resumed split sees exactly
the regions, and so the messages, that an uninterrupted one would.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools import Logger

from fanout import dialect
from fanout.runtime import Runtime
from splitter import SERVICE
from splitter.range_reader import READ_PIECE_BYTES, ObjectInfo, iter_ranges

log = Logger(service=SERVICE)


class SourceError(ValueError):
    """The object cannot be read as declared (bad gzip, UTF-16 without a BOM, ...)."""


@dataclass(frozen=True)
class SourceObject(ObjectInfo):
    """An object whose storage has been read from its first bytes (`open_source`)."""

    gzip: bool = False


def open_source(runtime: Runtime, info: ObjectInfo) -> tuple[Runtime, SourceObject]:
    """The runtime with the object's encoding and delimiter decided, and the object with
    its compression: one ranged GET of its first bytes (every invocation that reads the
    object decides alike, since the bytes are pinned to the version or ETag)."""
    spec = runtime.spec
    head = b"".join(iter_ranges(runtime.clients.s3, info, dialect.HEAD_BYTES,
                                end=dialect.HEAD_BYTES))
    try:
        found = dialect.detect(head, encoding=spec.set_encoding(), delimiter=spec.set_delimiter())
    except dialect.DialectError as exc:
        raise SourceError(str(exc)) from None
    log.info("reading %s as %s", info.source.uri, found.describe())
    decided = {"encoding": found.encoding, "delimiter": found.delimiter}
    return (with_source_format(runtime, decided),
            SourceObject(info.source, info.size, gzip=found.gzip))


def source_format(runtime: Runtime) -> dict[str, str]:
    """The decided encoding and delimiter, for the tasks of a parallel split (never gzip)."""
    return {"encoding": runtime.spec.encoding, "delimiter": runtime.spec.delimiter}


def with_source_format(runtime: Runtime, decided: dict[str, str]) -> Runtime:
    """The runtime reading the object as `source_format` recorded it."""
    return replace(runtime, spec=replace(runtime.spec, encoding=decided["encoding"],
                                         delimiter=decided["delimiter"],
                                         source_set=frozenset({"encoding", "delimiter"})))


def is_gzip(info: ObjectInfo) -> bool:
    """Compressed, as its first bytes say (an object not opened by `open_source` is not)."""
    return isinstance(info, SourceObject) and info.gzip


def parse_encoding(encoding: str) -> str:
    """What the chunker decodes: transcoded UTF-16 arrives as UTF-8."""
    return "utf-8" if encoding == "utf-16" else encoding


def parse_chunks(s3: Any, info: ObjectInfo, range_bytes: int, *, encoding: str,
                 start: int = 0) -> Iterator[bytes]:
    """Bytes from parse offset `start` on, cut at multiples of `range_bytes`."""
    if not is_gzip(info) and encoding != "utf-16":
        return iter_ranges(s3, info, range_bytes, start=start, align=True)
    stream: Iterable[bytes] = iter_ranges(s3, info, range_bytes)
    if is_gzip(info):
        stream = gunzip(stream)
    if encoding == "utf-16":
        stream = utf16_to_utf8(stream)
    return regrid(stream, min(range_bytes, READ_PIECE_BYTES), start)


def gunzip(chunks: Iterable[bytes], piece_bytes: int = READ_PIECE_BYTES) -> Iterator[bytes]:
    """Decompress a gzip stream (several members allowed, as `cat a.gz b.gz` makes),
    never more than `piece_bytes` of output at a time: a highly compressed range must not
    inflate into memory whole."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        for chunk in chunks:
            while chunk:
                out = decompressor.decompress(chunk, piece_bytes)
                if out:
                    yield out
                if decompressor.eof:
                    chunk = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
                else:
                    chunk = decompressor.unconsumed_tail
        tail = decompressor.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise SourceError(f"not valid gzip: {exc}") from None


def utf16_to_utf8(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Transcode UTF-16 (byte order from its BOM) to UTF-8, incrementally."""
    decoder = codecs.getincrementaldecoder("utf-16")(errors="strict")
    first = True
    try:
        for chunk in chunks:
            if first and chunk:
                if len(chunk) >= 2 and chunk[:2] not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                    raise SourceError("UTF-16 text must start with a byte order mark (BOM)")
                first = False
            text = decoder.decode(chunk)
            if text:
                yield text.encode("utf-8")
        text = decoder.decode(b"", final=True)
        if text:
            yield text.encode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"bytes are not valid UTF-16: {exc.reason}") from None


def regrid(chunks: Iterable[bytes], size: int, start: int = 0) -> Iterator[bytes]:
    """Re-cut a stream that starts at offset 0 into blocks ending on multiples of `size`,
    dropping everything before `start`."""
    position = 0  # offset of buffer[0]
    buffer = bytearray()
    for chunk in chunks:
        if position + len(buffer) + len(chunk) <= start:
            position += len(chunk)  # wholly before the resume point: skip it
            continue
        buffer += chunk
        if position < start:
            del buffer[: start - position]
            position = start
        while buffer:
            boundary = (position // size + 1) * size
            if position + len(buffer) < boundary:
                break
            cut = boundary - position
            yield bytes(buffer[:cut])
            del buffer[:cut]
            position = boundary
    if buffer:
        yield bytes(buffer)


def with_hint(error: str) -> str:
    """A UTF-8 decode error also says how to load a Latin-1 file (it cannot be detected)."""
    return error + dialect.HINT_LATIN1 if "bytes are not valid utf-8" in error else error


def with_delimiter_hint(runtime: Runtime, info: ObjectInfo, error: str) -> str:
    """A CSV error also names a delimiter with which the file's start reads as CSV, if one
    does (one more ranged GET of the first bytes, on the failure path only)."""
    if "malformed CSV" not in error:
        return error
    head = b"".join(iter_ranges(runtime.clients.s3, info, dialect.HEAD_BYTES,
                                end=dialect.HEAD_BYTES))
    try:
        text_head = dialect.gunzip_head(head) if is_gzip(info) else head
    except dialect.DialectError:
        return error
    text = dialect.header_text(text_head, runtime.spec.encoding)
    return error + dialect.hint_delimiter(text, runtime.spec.delimiter)
