"""Ranged reads of an S3 object: one GetObject with a `Range` header per range, its body
streamed in pieces of at most READ_PIECE_BYTES, so neither the object nor a whole range
is ever in memory at once.

Every piece ends on a multiple of READ_PIECE_BYTES or of the range size, counted from the
object's first byte, so a read resumed from any offset cuts the rest of the object exactly
where an uninterrupted read would (the splitter's checkpoints depend on that)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fanout.contract import Source
from fanout.telemetry import subsegment

# Large ranges keep the GET count (and its cost) low; small pieces keep memory flat.
READ_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    source: Source
    size: int


def head(s3: Any, bucket: str, key: str, version: str | None = None) -> ObjectInfo:
    """Size, ETag and version of the object (the version pins every later range read)."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version
    response = s3.head_object(**params)
    return ObjectInfo(
        Source(bucket, key, response.get("ETag", "").strip('"'), response.get("VersionId") or version),
        int(response["ContentLength"]),
    )


def iter_ranges(
    s3: Any, info: ObjectInfo, range_bytes: int, start: int = 0, end: int | None = None,
    *, align: bool = False, piece_bytes: int = READ_PIECE_BYTES,
) -> Iterator[bytes]:
    """Yield the object's bytes [start, end), one GetObject per `range_bytes`, in pieces
    ending on multiples of `piece_bytes`; with `align`, ranges end on multiples of
    `range_bytes` (so a resume cuts where a full read would).

    Each read is pinned to the version or to the ETag seen by `head` (IfMatch), so an
    object overwritten mid-read fails loudly instead of mixing two versions.
    """
    if range_bytes < 1 or piece_bytes < 1:
        raise ValueError("range_bytes and piece_bytes must be at least 1")
    stop = info.size if end is None else min(end, info.size)
    position = start
    while position < stop:
        limit = (position // range_bytes + 1) * range_bytes if align else position + range_bytes
        last = min(limit, stop) - 1
        params: dict[str, Any] = {
            "Bucket": info.source.bucket,
            "Key": info.source.key,
            "Range": f"bytes={position}-{last}",
        }
        if info.source.version:
            params["VersionId"] = info.source.version
        elif info.source.etag:
            params["IfMatch"] = f'"{info.source.etag}"'
        with subsegment("GetObject range", bytes=last + 1 - position):
            body = s3.get_object(**params)["Body"]
        try:
            while position <= last:
                want = min((position // piece_bytes + 1) * piece_bytes, last + 1) - position
                data = _read_fully(body, want)
                if len(data) < want:
                    # botocore raises IncompleteReadError for a body cut short; this is the
                    # guard if it ever does not: never end the stream quietly mid-range.
                    raise OSError(f"s3://{info.source.bucket}/{info.source.key}: the body of "
                                  f"range {params['Range']} ended after {position + len(data)} "
                                  "bytes")
                yield data
                position += len(data)
        finally:
            body.close()


def _read_fully(body: Any, size: int) -> bytes:
    """`size` bytes from a streaming body, or fewer only at its end (a socket read may
    return less than asked; the pieces must still end where the grid says)."""
    data: bytes = body.read(size)
    while 0 < len(data) < size:
        more = body.read(size - len(data))
        if not more:
            break
        data += more
    return data
