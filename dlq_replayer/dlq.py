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

from fanout.contract import KIND_REJECTED, KIND_ROWS, ContractError, RowsMessage, decode

# A rows message in the DLQ failed maxReceiveCount times (throttling past its budget,
# a crash): its rows were never counted. This is the reason the replayer shows for them.
REASON_RETRIES = "retries_exhausted"
DEFAULT_VISIBILITY_S = 120


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

    @property
    def rows(self) -> list[WaitingRow]:
        return rows_of(self.message) if self.message else []


def rows_of(message: RowsMessage) -> list[WaitingRow]:
    common = (message.job, message.message_id, message.kind, message.source.uri,
              tuple(message.header))
    if message.kind == KIND_REJECTED:
        return [WaitingRow(*common, r.line, tuple(r.row), r.reason, r.detail)
                for r in message.rejections]
    if message.kind == KIND_ROWS:
        detail = "the message failed maxReceiveCount times"
        return [WaitingRow(*common, line, tuple(row), REASON_RETRIES, detail)
                for line, row in zip(message.lines, message.rows, strict=True)] + [
            WaitingRow(*common, r.line, tuple(r.row), r.reason, r.detail)
            for r in message.rejections]
    return []


@dataclass
class DlqReader:
    """Receives the DLQ once through, holding each message for `visibility_s`."""

    sqs: Any
    dlq_url: str
    visibility_s: int = DEFAULT_VISIBILITY_S
    wait_s: int = 0
    empty_receives: int = 2
    held: dict[str, DlqMessage] = field(default_factory=dict)

    def batches(self) -> Iterator[list[DlqMessage]]:
        """Batches of up to 10 messages not seen before in this run, until the queue has
        nothing visible left."""
        empty = 0
        while empty < self.empty_receives:
            response = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10,
                VisibilityTimeout=self.visibility_s, WaitTimeSeconds=self.wait_s,
                AttributeNames=["All"])
            fresh = []
            for m in response.get("Messages", []):
                if m["MessageId"] in self.held:
                    # Seen before and reappeared (our hold ran out): keep the newest receipt.
                    self.held[m["MessageId"]].receipt = m["ReceiptHandle"]
                    continue
                message = read(m)
                self.held[message.sqs_id] = message
                fresh.append(message)
            if not fresh:
                empty += 1
                continue
            empty = 0
            yield fresh

    def forget(self, message: DlqMessage) -> None:
        """The message was deleted: nothing to release."""
        self.held.pop(message.sqs_id, None)

    def release(self) -> int:
        """Make every message still held visible again; returns how many."""
        released = 0
        held = list(self.held.values())
        for start in range(0, len(held), 10):
            chunk = held[start:start + 10]
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.dlq_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                             for i, m in enumerate(chunk)])
                released += len(response.get("Successful", []))
            except Exception:  # a stale receipt: the hold ran out, the message is visible
                continue
        self.held.clear()
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
    return DlqMessage(sqs_message["MessageId"], sqs_message["ReceiptHandle"], body, message, error)


def in_flight(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) as SQS approximates them."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def read_all(reader: DlqReader) -> list[DlqMessage]:
    """Every visible message (held until `reader.release()`)."""
    out: list[DlqMessage] = []
    for batch in reader.batches():
        out.extend(batch)
    return out

