"""Keep the local rows queue short.

moto's SendMessage, ReceiveMessage and GetQueueAttributes each walk the whole queue,
so a queue that grows to thousands of messages makes the emulator crawl. In AWS the
splitter may run far ahead of the writers; locally its SQS client waits while more than
`max_depth` messages are outstanding. Outstanding = sent - finished, counted here
(asking moto for the depth would itself walk the queue); messages that leave through
the DLQ are not reported as finished, so after `resync_s` of waiting the true depth is
read once and the count corrected.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class BoundedQueueClient:
    """An SQS client proxy whose sends to `queue_url` wait while the queue is full."""

    def __init__(self, sqs: Any, queue_url: str, *, max_depth: int = 30,
                 resync_s: float = 1.0) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._max_depth = max_depth
        self._resync_s = resync_s
        self._outstanding = 0
        self._changed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def finished(self, count: int) -> None:
        """The consumer deleted `count` messages."""
        with self._changed:
            self._outstanding = max(0, self._outstanding - count)
            self._changed.notify_all()

    def send_message_batch(self, **params: Any) -> Any:
        if params.get("QueueUrl") != self._queue_url:
            return self._sqs.send_message_batch(**params)
        with self._changed:
            waited_since = time.monotonic()
            while self._outstanding >= self._max_depth:
                self._changed.wait(timeout=0.1)
                if time.monotonic() - waited_since > self._resync_s:
                    self._outstanding = self._true_depth()
                    waited_since = time.monotonic()
            self._outstanding += len(params.get("Entries", []))
        response = self._sqs.send_message_batch(**params)
        failed = len(response.get("Failed") or [])
        if failed:
            self.finished(failed)
        return response

    def _true_depth(self) -> int:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"])
