"""Ranged reads of an S3 object: one GetObject with a `Range` header per slice, so the
object is never in memory whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fanout.contract import Source


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
    *, align: bool = False,
) -> Iterator[bytes]:
    """Yield the object's bytes [start, end) in slices of at most `range_bytes`; with
    `align`, slices end on multiples of `range_bytes` (so a resume cuts where a full
    read would).

    Each read is pinned to the ETag seen by `head` (IfMatch), so an object overwritten
    mid-read fails loudly instead of mixing two versions.
    """
    if range_bytes < 1:
        raise ValueError("range_bytes must be at least 1")
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
        body = s3.get_object(**params)["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        if not data:
            return
        yield data
        position += len(data)
