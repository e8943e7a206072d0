"""The deployed tier: infra/app.py deployed with the pinned cdk CLI into MiniStack on
127.0.0.1, once per test run, and driven as users drive it (the AWS CLI, `fanout ingest
--stack`, `dlq-replayer --stack`).

Two stacks share one MiniStack: `fanout-test` (the default template, with the parallel
split threshold lowered so a 1.5 MB file fans out, and read on one more bucket,
`-c source_buckets=fanout-test-lake`) and `fanout-variant` (`existing_table`,
`gzip`, `versioned`), which the writer-failure and destroy tests use up.

Nothing here is skipped: a missing tool is a failure (`make setup` installs them all).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fanout.settings import min_visibility_timeout_s
from fanout_cli.local import ministack

MAIN_STACK = "fanout-test"
VARIANT_STACK = "fanout-variant"
EXISTING_TABLE = "fanout-existing-items"
# A file of at least this many bytes is split in parallel ranges of about RANGE bytes
# (and at least one ranged read, READ, each).
PARALLEL_THRESHOLD = 600_000
PARALLEL_RANGE = 250_000
READ = 128 * 1024
# A bucket the main stack's splitter may read besides its own (`fanout ingest s3://...`).
SOURCE_BUCKET = "fanout-test-lake"
# The variant's waits: a writer timeout short enough to fail fast, and the shortest
# visibility timeout the ledger's timing rule allows with it (55 s).
VARIANT_WRITER_TIMEOUT_S = 12
VARIANT_VISIBILITY_TIMEOUT_S = min_visibility_timeout_s(VARIANT_WRITER_TIMEOUT_S)


@dataclass
class Local:
    emulator: ministack.MiniStack
    log: Path

    @property
    def endpoint_url(self) -> str:
        return self.emulator.endpoint_url

    def client(self, service: str) -> Any:
        return ministack.local_client(service, self.endpoint_url)

    def deploy(self, stack_name: str, **context: str) -> ministack.Deployment:
        return ministack.deploy(self.endpoint_url, stack_name=stack_name, log=self.log,
                                context=context)


@pytest.fixture(scope="session")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    folder = tmp_path_factory.mktemp("ministack")
    emulator = ministack.MiniStack(log_path=folder / "ministack.log")
    log = folder / "cdk.log"
    with emulator:
        ministack.bootstrap(emulator.endpoint_url, log=log)
        yield Local(emulator, log)


@pytest.fixture(scope="session")
def stack(local: Local) -> ministack.Deployment:
    return local.deploy(MAIN_STACK, parallel_threshold_bytes=str(PARALLEL_THRESHOLD),
                        parallel_range_bytes=str(PARALLEL_RANGE), range_bytes=str(READ),
                        source_buckets=SOURCE_BUCKET)


@pytest.fixture(scope="session")
def variant(local: Local) -> ministack.Deployment:
    create_table(local.client("dynamodb"), EXISTING_TABLE)
    # Short waits, so the writer-failure test sees maxReceiveCount (2) receives in ~2 minutes.
    return local.deploy(VARIANT_STACK, existing_table=EXISTING_TABLE, gzip="true",
                        versioned="true", writer_timeout_s=str(VARIANT_WRITER_TIMEOUT_S),
                        visibility_timeout_s=str(VARIANT_VISIBILITY_TIMEOUT_S), max_receive_count="2")


def create_table(dynamodb: Any, name: str) -> None:
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"},
                              {"AttributeName": "offer_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "account", "KeyType": "HASH"},
                   {"AttributeName": "offer_id", "KeyType": "RANGE"}])


@pytest.fixture(scope="session")
def summaries(local: Local, stack: ministack.Deployment) -> str:
    """A queue subscribed to the main stack's completion topic."""
    sqs, sns = local.client("sqs"), local.client("sns")
    url = sqs.create_queue(QueueName="fanout-test-summaries")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.outputs["TopicArn"], Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return str(url)


def published_summaries(sqs: Any, url: str) -> list[dict[str, Any]]:
    out = []
    for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", []):
        body = json.loads(message["Body"])
        out.append(json.loads(body["Message"]) if "Message" in body and "Type" in body else body)
    return out
