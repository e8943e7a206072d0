"""Helpers for the dlq_replayer tests: DLQ messages as the writer and SQS leave them."""

from __future__ import annotations

import io
from typing import Any

from dlq_replayer.cli import main
from dlq_replayer.target import Target
from fanout.contract import KIND_REJECTED, REPLAY_MARK, Rejection, RowsMessage, Source, decode

HEADER = ["account", "offer_id", "risk"]
SOURCE = Source("fanout-uploads", "uploads/data.csv", "etag1")


def rejected(job: str, seq: int, rejections: list[tuple[int, list[str], str]]) -> str:
    return RowsMessage(job, seq, SOURCE, HEADER, [], [], kind=KIND_REJECTED, rejections=[
        Rejection(line, row, reason, f"{reason} on line {line}")
        for line, row, reason in rejections]).encode()


def rows(job: str, seq: int, lines: list[int]) -> str:
    return RowsMessage(job, seq, SOURCE, HEADER, lines,
                       [[f"a{line}", str(line), "low"] for line in lines]).encode()


def put(sqs: Any, url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)


def peek(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue, made visible again afterwards."""
    seen: dict[str, dict[str, Any]] = {}
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                    VisibilityTimeout=30).get("Messages", [])
        if not batch:
            break
        for m in batch:
            seen[m["MessageId"]] = m
    for m in seen.values():
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                      VisibilityTimeout=0)
    return list(seen.values())


def bodies(sqs: Any, url: str) -> list[RowsMessage]:
    return [decode(m["Body"]) for m in peek(sqs, url)]


def refs_in(sqs: Any, url: str) -> set[tuple[str, str, int]]:
    """(job, original message id, line) of every row in the queue, replays included."""
    out = set()
    for message in bodies(sqs, url):
        base = message.message_id.split(REPLAY_MARK)[0]
        lines = message.lines + [r.line for r in message.rejections]
        out.update((message.job, base, line) for line in lines)
    return out


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def replayer(target: Target, *argv: str, stdin: io.StringIO | None = None,
             **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=stdin or io.StringIO(),
                target=target, **kwargs)
    return code, out.getvalue(), err.getvalue()


_SQS: list[Any] = []


def fresh_queues() -> Target:
    """A rows queue and its DLQ as the stack makes them, on moto (a mock must be active).

    One SQS client serves every test: building a boto3 client costs more than a test."""
    import json

    import boto3

    if not _SQS:
        _SQS.append(boto3.client("sqs", region_name="us-east-1"))
    sqs = _SQS[0]
    dlq_url = sqs.create_queue(QueueName="fanout-rows-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rows_url = sqs.create_queue(QueueName="fanout-rows", Attributes={
        "VisibilityTimeout": "2",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
    })["QueueUrl"]
    return Target(sqs, dlq_url, rows_url, wait_s=0)
