"""A local stand-in for Lambda: invokes the real handlers the way AWS does.

`EventSourceMapping` polls an SQS queue like Lambda's SQS event source mapping:
real-shaped SQS events of up to `batch_size` records, several concurrent invocations,
successful records deleted, records named in `batchItemFailures` left to reappear after
the visibility timeout (and reach the DLQ after maxReceiveCount, which the queue's own
redrive policy does), and the whole batch failed when the handler raises or returns an
unknown itemIdentifier — all as AWS documents it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalContext:
    """The parts of LambdaContext the handlers and Powertools use."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    region: str = "us-east-1"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping delivers it."""
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class InvocationStats:
    invocations: int = 0
    records: int = 0
    failed_records: int = 0
    errors: int = 0
    last_error: str = ""
    dropped: int = 0  # events given up after max_attempts (async-invoke emulation)


class EventSourceMapping:
    """Poll `queue_url` with `concurrency` workers and invoke `handler` per batch."""

    def __init__(
        self, sqs: Any, queue_url: str, queue_arn: str, handler: Handler, *,
        function_name: str, timeout_s: float, batch_size: int = 10, concurrency: int = 4,
        region: str = "us-east-1", idle_sleep_s: float = 0.02,
        on_deleted: Callable[[int], None] | None = None,
        retry_delay_s: float | None = None, max_attempts: int | None = None,
    ) -> None:
        """`retry_delay_s`/`max_attempts` emulate an asynchronous invocation instead of an
        SQS mapping: a failed event is retried after the delay, and dropped (counted in
        `stats.dropped`) after `max_attempts` tries, as Lambda drops an async event after
        its retries. Left as None, failures wait out the queue's visibility timeout."""
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.function_name = function_name
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.region = region
        self.idle_sleep_s = idle_sleep_s
        self.on_deleted = on_deleted
        self.retry_delay_s = retry_delay_s
        self.max_attempts = max_attempts
        self.last_received = time.monotonic()
        self.stats = InvocationStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> EventSourceMapping:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._run, name=f"{self.function_name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.poll_once()
            except Exception:  # the driver must outlive any one failed poll
                log.exception("polling %s failed", self.queue_url)
                worked = False
            if not worked:
                self._stop.wait(self.idle_sleep_s)

    def poll_once(self) -> bool:
        """Receive one batch and invoke the handler; False when the queue had nothing."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return False
        self.last_received = time.monotonic()
        records = [sqs_record(m, self.queue_arn, self.region) for m in messages]
        failed = self.invoke(records)
        done = [r for r in records if r["messageId"] not in failed]
        if failed and self.retry_delay_s is not None:
            done += self._retry_or_drop([r for r in records if r["messageId"] in failed])
        for start in range(0, len(done), 10):
            chunk = done[start:start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                         for i, r in enumerate(chunk)],
            )
        if self.on_deleted and done:
            self.on_deleted(len(done))
        return True

    def _retry_or_drop(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Schedule the retry of failed events; return those out of attempts (to delete)."""
        dropped = []
        for record in records:
            attempts = int(record["attributes"].get("ApproximateReceiveCount", "1"))
            if self.max_attempts is not None and attempts >= self.max_attempts:
                dropped.append(record)
                continue
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"],
                VisibilityTimeout=int(self.retry_delay_s or 0))
        with self._lock:
            self.stats.dropped += len(dropped)
        return dropped

    def idle_for(self) -> float:
        """Seconds since any worker last received a message."""
        return time.monotonic() - self.last_received

    def invoke(self, records: list[dict[str, Any]]) -> set[str]:
        """Invoke the handler; return the message ids that failed (all, on an error)."""
        context = LocalContext(self.function_name, self.timeout_s, region=self.region)
        all_ids = {r["messageId"] for r in records}
        with self._lock:
            self.stats.invocations += 1
            self.stats.records += len(records)
        try:
            response = self.handler({"Records": records}, context)
        except Exception as exc:
            log.exception("%s raised; the whole batch will be retried", self.function_name)
            self._count_failure(len(records), error=True, message=f"{type(exc).__name__}: {exc}")
            return all_ids
        failures = (response or {}).get("batchItemFailures") or []
        failed = {f.get("itemIdentifier") for f in failures}
        if not failed <= all_ids:
            # AWS treats an unknown or empty itemIdentifier as a failure of the whole batch.
            log.error("%s reported unknown itemIdentifier(s); failing the batch", self.function_name)
            self._count_failure(len(records), error=True)
            return all_ids
        self._count_failure(len(failed))
        return {str(f) for f in failed}

    def _count_failure(self, count: int, *, error: bool = False, message: str = "") -> None:
        with self._lock:
            self.stats.failed_records += count
            self.stats.errors += int(error)
            if message:
                self.stats.last_error = message
