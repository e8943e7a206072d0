"""Sending message bodies to an SQS queue: the one SendMessageBatch loop the splitter's
enqueue, the writer's rejected rows and the replayer's redrive share.

SendMessageBatch takes at most 10 entries and 1 MiB in all (the largest message SQS
takes since 2025; a queue's MaximumMessageSize can be lower, and a body over it is the
caller's to split). A 200 can still carry `Failed` entries: those SQS failed on its side
are sent again with the call's throttles, 5xx and lost connections, with backoff and full
jitter, at most MAX_SEND_ATTEMPTS times; an entry failed as the sender's fault (the body
itself is wrong) or any other error is raised at once. Nothing is reported sent that SQS
did not accept. A caller with a time budget (the writer) passes `time_left`: no wait
starts that would leave no time for the call after it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fanout.settings import MAX_SEND_BATCH, MAX_SQS_MESSAGE_BYTES
from fanout.telemetry import subsegment

MAX_SEND_ATTEMPTS = 8
BASE_DELAY_S = 0.05
MAX_DELAY_S = 2.0
CALL_S = 1.0  # what one more call may take, kept free after a wait (with `time_left`)
# A call SQS may take on a later try: throttled, or failed on its side.
RETRYABLE_CODES = frozenset({"ThrottlingException", "RequestThrottled", "ServiceUnavailable",
                             "InternalError", "InternalFailure", "KMS.ThrottlingException"})


class SendError(RuntimeError):
    """Bodies SQS did not accept; none of them may be counted sent."""


def batches(bodies: Sequence[str], max_bytes: int = MAX_SQS_MESSAGE_BYTES
            ) -> Iterator[list[str]]:
    """`bodies` in order, cut into SendMessageBatch calls: 10 at most, `max_bytes` in all."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == MAX_SEND_BATCH or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


def _retryable(error: Exception) -> bool:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_CODES or status >= 500
    return isinstance(error, BotoCoreError)  # a connection lost or timed out


def send_batch(sqs: Any, queue_url: str, bodies: Sequence[str], *,
               base_delay_s: float = BASE_DELAY_S,
               sleep: Callable[[float], None] = time.sleep,
               time_left: Callable[[], float] | None = None) -> None:
    """One SendMessageBatch of up to 10 bodies, sent until SQS accepted every one; raise
    SendError if it would not (or, with `time_left`, when the next wait would not leave
    time for a call after it)."""
    pending = {str(i): body for i, body in enumerate(bodies)}
    reasons = "no reason given"
    for attempt in range(MAX_SEND_ATTEMPTS):
        if attempt:
            delay = random.uniform(0, min(MAX_DELAY_S, base_delay_s * 2 ** attempt))
            if time_left is not None and delay + CALL_S >= time_left():
                raise SendError(f"SQS did not accept {len(pending)} message(s) for "
                                f"{queue_url} in the time left: {reasons}")
            sleep(delay)
        try:
            with subsegment("SendMessageBatch", messages=len(pending), attempt=attempt):
                response = sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": i, "MessageBody": body} for i, body in pending.items()])
        except (ClientError, BotoCoreError) as exc:
            if not _retryable(exc):
                raise
            reasons = str(exc)
            continue
        failed = response.get("Failed") or []
        accepted = {ok["Id"] for ok in response.get("Successful") or []}
        theirs = [f for f in failed if f.get("SenderFault")]
        if theirs:
            raise SendError(f"SQS did not accept a message for {queue_url}: "
                            f"{theirs[0].get('Code')}: {theirs[0].get('Message', '')}")
        # An entry neither accepted nor failed is not taken as sent: it goes again.
        pending = {i: body for i, body in pending.items() if i not in accepted}
        if not pending:
            return
        reasons = "; ".join(sorted({f"{f.get('Code')}: {f.get('Message', '')}" for f in failed}))
    raise SendError(f"SQS did not accept {len(pending)} message(s) for {queue_url} after "
                    f"{MAX_SEND_ATTEMPTS} attempts: {reasons or 'no reason given'}")


def send_all(sqs: Any, queue_url: str, bodies: Sequence[str], *,
             max_bytes: int = MAX_SQS_MESSAGE_BYTES, base_delay_s: float = BASE_DELAY_S,
             sleep: Callable[[float], None] = time.sleep,
             time_left: Callable[[], float] | None = None) -> None:
    """Send every body, 10 a call (`batches`), in order; raise SendError at the first
    batch SQS would not take (the ones before it were accepted)."""
    for batch in batches(bodies, max_bytes):
        send_batch(sqs, queue_url, batch, base_delay_s=base_delay_s, sleep=sleep,
                   time_left=time_left)
