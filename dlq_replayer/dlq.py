"""Reading the dead-letter queue without taking messages from anyone else.

Every message is received with a visibility timeout, so two replayers running at once
never act on the same message: a message one of them holds is invisible to the other.
Messages a run holds but does not act on are made visible again when it ends; messages
it acts on are deleted only after their replacement was accepted (see redrive.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dlq_replayer.spool import HeldMessages
from fanout.contract import KIND_REJECTED, KIND_ROWS, ContractError, RowsMessage, decode

# A rows message in the DLQ failed maxReceiveCount times (throttling past its budget,
# a crash): its rows were never counted. This is the reason the replayer shows for them.
REASON_RETRIES = "retries_exhausted"
DEFAULT_VISIBILITY_S = 120
# Messages one run holds in flight at most: below a standard queue's in-flight quota
# (~120,000), with room left for another reader.
MAX_HELD = 100_000


Ref = tuple[str, str, int]  # (job, message id, line): a row, across copies and exports


@dataclass(frozen=True)
class WaitingRow:
    """One CSV line waiting in the DLQ."""

    job: str
    message_id: str  # the contract's message id ("12", "12.1"), not the SQS one
    kind: str
    source: str
    header: tuple[str, ...]
    line: int
    row: tuple[str, ...]
    reason: str
    detail: str = ""
    index: int | None = None  # the row's index in its seq (see fanout.contract), when known

    @property
    def ref(self) -> Ref:
        """What identifies the row across DLQ copies, exports and fixes."""
        return (self.job, self.message_id, self.line)


@dataclass
class DlqMessage:
    sqs_id: str
    receipt: str
    body: str
    message: RowsMessage | None
    error: str = ""
    sent_ms: int | None = None  # SQS's SentTimestamp: when it entered the DLQ, epoch ms

    @property
    def rows(self) -> list[WaitingRow]:
        return rows_of(self.message) if self.message else []


def rows_of(message: RowsMessage) -> list[WaitingRow]:
    common = (message.job, message.message_id, message.kind, message.source.uri,
              tuple(message.header))
    if message.kind == KIND_REJECTED:
        return [WaitingRow(*common, r.line, tuple(r.row), r.reason, r.detail, r.index)
                for r in message.rejections]
    if message.kind == KIND_ROWS:
        detail = "the message failed maxReceiveCount times"
        places = message.row_indexes
        indexes: list[int | None] = [None] * len(message.rows) if places is None else list(places)
        return [WaitingRow(*common, line, tuple(row), REASON_RETRIES, detail, index)
                for line, row, index in zip(message.lines, message.rows, indexes, strict=True)] + [
            WaitingRow(*common, r.line, tuple(r.row), r.reason, r.detail, r.index)
            for r in message.rejections]
    return []


@dataclass
class DlqReader:
    """Receives the DLQ once through, holding each message for `visibility_s`.

    Nothing it keeps grows in memory with the DLQ: each batch is handed on and dropped,
    and the ids and receipts of the messages seen are spooled to disk (spool.HeldMessages).
    A message seen before in this run (it reappeared when its hold ran out, or after a
    release) is not handed on again, whatever the DLQ's size. At most `max_held` messages
    are held at once: SQS refuses to receive past its in-flight quota (about 120,000 for a
    standard queue), so past that the reader releases what it holds and reads on; the
    messages it released may come back, and are skipped as seen, but they take receives
    (see the README: the end of such a pass is SQS's sampling, not exact)."""

    sqs: Any
    dlq_url: str
    visibility_s: int = DEFAULT_VISIBILITY_S
    wait_s: int = 0
    empty_receives: int = 2
    max_held: int = MAX_HELD
    held: HeldMessages = field(default_factory=HeldMessages)
    released_early: int = 0
    stop_at_limit: bool = False  # at `max_held`, end the pass instead of releasing
    stopped: bool = False

    def batches(self) -> Iterator[list[DlqMessage]]:
        """Batches of up to 10 messages not seen before in this run, until the queue has
        nothing visible left."""
        empty = 0
        while empty < self.empty_receives:
            if self.held.holding + 10 > self.max_held:
                if self.stop_at_limit:
                    self.stopped = True
                    return
                self.released_early += self.release()
            response = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10,
                VisibilityTimeout=self.visibility_s, WaitTimeSeconds=self.wait_s,
                AttributeNames=["All"])
            fresh = [read(m) for m in response.get("Messages", [])
                     if self.held.add(m["MessageId"], m["ReceiptHandle"])]
            if not fresh:
                empty += 1
                continue
            empty = 0
            yield fresh

    def forget(self, message: DlqMessage) -> None:
        """The message was deleted: nothing to release."""
        self.held.drop(message.sqs_id)

    def release(self) -> int:
        """Make every message still held visible again; returns how many."""
        released = 0
        for page in self.held.pages(10):
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.dlq_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                             for i, (_, receipt) in enumerate(page)])
                released += len(response.get("Successful", []))
            except Exception:  # a stale receipt: the hold ran out, the message is visible
                continue
        return released


@dataclass(frozen=True)
class Filters:
    jobs: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()

    def match(self, row: WaitingRow) -> bool:
        return (not self.jobs or row.job in self.jobs) and (
            not self.reasons or row.reason in self.reasons)


def column_labels(header: tuple[str, ...] | list[str], width: int | None = None) -> list[str]:
    """Names for a row's fields: the header's, made unique, then `_extra_N` for fields past
    the header's end (a row with too many columns)."""
    labels: list[str] = []
    used: Counter[str] = Counter()
    for name in header:
        used[name] += 1
        labels.append(name if used[name] == 1 else f"{name}#{used[name]}")
    for n in range(len(header), width or 0):
        labels.append(f"_extra_{n - len(header) + 1}")
    return labels


def read(sqs_message: dict[str, Any]) -> DlqMessage:
    body = sqs_message["Body"]
    try:
        message: RowsMessage | None = decode(body)
        error = ""
    except ContractError as exc:
        message, error = None, str(exc)
    sent = sqs_message.get("Attributes", {}).get("SentTimestamp")
    return DlqMessage(sqs_message["MessageId"], sqs_message["ReceiptHandle"], body, message, error,
                      int(sent) if sent else None)


def in_flight(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) as SQS approximates them."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


