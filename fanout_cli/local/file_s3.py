"""S3 stand-ins that serve one object's ranged GETs from a local file or from bytes, so
the splitter's own read path (HeadObject, GetObject with Range) runs with no S3 at all:
`fanout check` reads a local file through them, and the benchmarks measure the splitter's
own code with them."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class _Body(io.BytesIO):
    """What GetObject's StreamingBody offers the range reader: read() and close()."""


class RangedS3:
    size: int
    etag: str

    def _read(self, start: int, length: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_object(self, **params: Any) -> dict[str, Any]:
        return {"ContentLength": self.size, "ETag": f'"{self.etag}"'}

    def get_object(self, **params: Any) -> dict[str, Any]:
        match = _RANGE.fullmatch(params.get("Range", ""))
        start, last = (int(match.group(1)), int(match.group(2))) if match else (0, self.size - 1)
        last = min(last, self.size - 1)
        return {"Body": _Body(self._read(start, last - start + 1))}


class MemoryS3(RangedS3):
    """One object held as bytes (no I/O at all)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.etag = hashlib.md5(data[:65536]).hexdigest()

    def _read(self, start: int, length: int) -> bytes:
        return self.data[start:start + length]


class FileS3(RangedS3):
    """One object backed by a file on disk: the process holds only what the splitter
    holds (moto would keep the whole object in this process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.etag = f"{self.size:x}"
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()

    def _read(self, start: int, length: int) -> bytes:
        self._file.seek(start)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()
