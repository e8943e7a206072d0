"""Sending message bodies to the rows queue: SendMessageBatch calls of 10 entries and at
most 1 MiB (fanout.sending, the loop the writer's rejected rows and the replayer share),
overlapped on a bounded thread pool."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fanout import sending
from fanout.settings import MAX_SEND_BATCH, MAX_SQS_MESSAGE_BYTES


class EnqueueError(RuntimeError):
    """Messages SQS would not accept after every retry."""


def send_batch(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    """Send up to 10 bodies in one SendMessageBatch, resending `Failed` entries with backoff."""
    try:
        sending.send_batch(sqs, queue_url, bodies)
    except sending.SendError as exc:
        raise EnqueueError(str(exc)) from exc


class Enqueuer:
    """Buffers bodies into SendMessageBatch calls and runs up to `workers` calls at once.

    `send` blocks when `workers * 2` calls are already waiting, so memory stays bounded.
    `close` waits for every call and raises the first error.
    """

    def __init__(self, sqs: Any, queue_url: str, *, workers: int = 8) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.sent = 0
        self._buffer: list[str] = []
        self._buffer_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enqueue")
        self._slots = threading.BoundedSemaphore(workers * 2)
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def send(self, body: str, size: int | None = None) -> None:
        """Queue one body (`size`: its UTF-8 length, if the caller knows it)."""
        size = len(body.encode()) if size is None else size
        if size > MAX_SQS_MESSAGE_BYTES:
            raise EnqueueError(f"message of {size:,} bytes exceeds SQS's {MAX_SQS_MESSAGE_BYTES:,}")
        if self._buffer and (
            len(self._buffer) == MAX_SEND_BATCH or self._buffer_bytes + size > MAX_SQS_MESSAGE_BYTES
        ):
            self._flush()
        self._buffer.append(body)
        self._buffer_bytes += size

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._error:
            raise EnqueueError(str(self._error)) from self._error
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self._slots.acquire()
        future = self._pool.submit(send_batch, self.sqs, self.queue_url, batch)
        count = len(batch)
        future.add_done_callback(lambda f: self._done(f, count))
        # Finished futures are kept until drain() has read their outcome; a failed one
        # stops the next flush at once.
        for done in [f for f in self._futures if f.done()]:
            if done.exception() is not None:
                self._error = self._error or done.exception()
            else:
                self._futures.remove(done)
        self._futures.append(future)

    def _done(self, future: Future[None], count: int) -> None:
        self._slots.release()
        error = future.exception()
        with self._lock:
            if error is not None:
                self._error = self._error or error
            else:
                self.sent += count

    def drain(self) -> int:
        """Flush and wait until SQS has accepted everything sent so far (before a checkpoint).

        Errors are read from the futures themselves: a future counts as done before its
        done-callback has run, so `_error` alone could still be unset here."""
        self._flush()
        futures, self._futures = self._futures, []
        for future in futures:
            error = future.exception()
            if error is not None:
                self._error = self._error or error
        if self._error:
            raise EnqueueError(f"sending to the rows queue failed: {self._error}") from self._error
        return self.sent

    def close(self) -> int:
        """Drain, then stop the pool; return how many bodies SQS accepted."""
        try:
            return self.drain()
        finally:
            self._pool.shutdown(wait=True)
