"""Helpers for handler tests: S3 events, SQS events, a Lambda context."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_plus

from fanout.contract import decode
from fanout_cli.local.esm import LocalContext, sqs_record


def s3_event(bucket: str, key: str, *, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": 1}},
    }]}


def context(timeout_s: float = 60) -> LocalContext:
    return LocalContext("test-function", timeout_s)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receive (and delete) every message in the queue."""
    out = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            return out
        out.extend(messages)
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def rows_messages(sqs: Any, queue_url: str) -> list[Any]:
    return sorted((decode(m["Body"]) for m in drain(sqs, queue_url)),
                  key=lambda m: (m.seq, m.part))


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {"Records": [sqs_record(m, queue_arn, "us-east-1") for m in messages]}


def body_json(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])
