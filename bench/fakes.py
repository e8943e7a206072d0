"""Stand-ins for AWS clients that cost (almost) nothing, so that a measurement is of the
pipeline's own code: an SQS client that accepts every message and keeps none, and a real
DynamoDB client whose network round trip is a sleep and a canned answer. (The S3 ones
are in fanout_cli.local.file_s3, which `fanout check` reads files through.)"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config


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


class _CannedBody:
    """What botocore reads an HTTP response body through."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


class CannedDynamoDB:
    """A real boto3 DynamoDB client (its validation, serialization, signing and response
    parsing all run) whose HTTP round trip is replaced: each BatchWriteItem takes
    `latency_s` (a sleep, as a thread waiting on a socket does) and returns every item
    processed, or, for a `unprocessed_rate` share of calls, half its items in
    UnprocessedItems. Decisions come from one seeded random source."""

    def __init__(self, config: Config | None = None, *, latency_s: float = 0.0,
                 unprocessed_rate: float = 0.0, seed: int = 0,
                 customize: Callable[[Any], None] | None = None) -> None:
        self.client = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1",
        ).client("dynamodb", config=config)
        if customize:
            customize(self.client)
        self.latency_s = latency_s
        self.unprocessed_rate = unprocessed_rate
        self.calls = 0
        self.unprocessed_calls = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.client.meta.events.register("before-send.dynamodb.BatchWriteItem", self._send)

    def batch_write_item(self, **params: Any) -> Any:
        return self.client.batch_write_item(**params)

    def _send(self, request: Any, **_: Any) -> AWSResponse:
        with self._lock:
            self.calls += 1
            unprocessed = self._random.random() < self.unprocessed_rate
            self.unprocessed_calls += unprocessed
        if self.latency_s:
            time.sleep(self.latency_s)
        body = b'{"UnprocessedItems":{}}'
        if unprocessed:
            ((table, requests),) = json.loads(request.body)["RequestItems"].items()
            body = json.dumps({"UnprocessedItems": {table: requests[: len(requests) // 2]}}).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "bench"}, _CannedBody(body))
