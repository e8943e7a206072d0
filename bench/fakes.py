"""Stand-ins for AWS clients that cost (almost) nothing, so that a measurement is of the
pipeline's own code: an S3 client serving ranged GETs from bytes in memory or from a file
on disk, and an SQS client that accepts every message and keeps none."""

from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class _Body(io.BytesIO):
    """What GetObject's StreamingBody offers the range reader: read() and close()."""


class _RangedS3:
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


class MemoryS3(_RangedS3):
    """One object held as bytes (the CPU benchmark: no I/O at all)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.etag = hashlib.md5(data[:65536]).hexdigest()

    def _read(self, start: int, length: int) -> bytes:
        return self.data[start:start + length]


class FileS3(_RangedS3):
    """One object backed by a file on disk (the memory benchmark: the process holds only
    what the splitter holds; moto would keep the whole object in this process)."""

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


class NullSQS:
    """Accepts every SendMessageBatch and discards it (or keeps the bodies, with `keep`);
    counts what it was given."""

    def __init__(self, *, keep: bool = False) -> None:
        self.calls = 0
        self.messages = 0
        self.bytes = 0
        self.keep = keep
        self.bodies: list[str] = []

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        entries = params["Entries"]
        self.calls += 1
        self.messages += len(entries)
        self.bytes += sum(len(e["MessageBody"]) for e in entries)
        if self.keep:
            self.bodies.extend(e["MessageBody"] for e in entries)
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}


class LatencySQS(NullSQS):
    """NullSQS that takes `latency_s` per SendMessageBatch, like a real SQS round trip."""

    def __init__(self, latency_s: float = 0.015) -> None:
        super().__init__()
        self.latency_s = latency_s

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        time.sleep(self.latency_s)
        return super().send_message_batch(**params)


class NullLedger:
    """Accepts the splitter's checkpoint writes (UpdateItem) and keeps nothing."""

    def __init__(self) -> None:
        self.updates = 0

    def update_item(self, **params: Any) -> dict[str, Any]:
        self.updates += 1
        return {}
