"""Where the replayer works: the DLQ and the rows queue of a deployed stack, in AWS or in
a local `fanout serve` (found from its CloudFormation outputs; the endpoint comes from
--endpoint-url or AWS_ENDPOINT_URL), or queues named explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from fanout.aws import client
from fanout.settings import ResourceNames
from fanout_cli.failures import is_loopback, use_local_credentials
from fanout_cli.local.stack import resolve_endpoint

# The CloudFormation outputs the stack declares (infra/).
OUTPUT_DLQ_URL = "DlqUrl"
OUTPUT_ROWS_QUEUE_URL = "RowsQueueUrl"
OUTPUT_BUCKET = "BucketName"
OUTPUT_TABLE = "TableName"
OUTPUT_LEDGER_TABLE = "LedgerTableName"


class TargetError(RuntimeError):
    """The queues could not be found (no stack, no queue, no output)."""


@dataclass(frozen=True)
class Target:
    sqs: Any
    dlq_url: str
    rows_queue_url: str
    bucket: str = ""
    table: str = ""
    endpoint_url: str | None = None
    # The jobs ledger (a DynamoDB client and its table): what `redrive` asks whether a job
    # was cancelled. None when the queues were named without a stack or an endpoint.
    ledger: Any = None
    ledger_table: str = ""
    # Long polling for each DLQ read: AWS's short polling samples a subset of servers and
    # can answer "empty" too early; a local emulator answers exactly, so 0 there.
    wait_s: int = 1


def discover(*, endpoint_url: str | None = None, stack: str | None = None,
             dlq_url: str | None = None, rows_queue_url: str | None = None,
             region: str = "us-east-1", names: ResourceNames | None = None,
             sqs: Any = None, cloudformation: Any = None) -> Target:
    """Resolve the queue URLs: explicit URLs win, then the stack's outputs, then the
    default queue names on the endpoint."""
    endpoint_url = resolve_endpoint(endpoint_url)
    use_local_credentials(endpoint_url)
    names = names or ResourceNames()
    sqs = sqs or client("sqs", endpoint_url=endpoint_url, region=region)
    bucket, table = "", ""
    if stack:
        cloudformation = cloudformation or client("cloudformation", endpoint_url=endpoint_url,
                                                  region=region)
        outputs = stack_outputs(cloudformation, stack)
        dlq_url = dlq_url or outputs.get(OUTPUT_DLQ_URL)
        rows_queue_url = rows_queue_url or outputs.get(OUTPUT_ROWS_QUEUE_URL)
        bucket, table = outputs.get(OUTPUT_BUCKET, ""), outputs.get(OUTPUT_TABLE, "")
        ledger_table = outputs.get(OUTPUT_LEDGER_TABLE, names.ledger_table)
        missing = [n for n, v in ((OUTPUT_DLQ_URL, dlq_url),
                                  (OUTPUT_ROWS_QUEUE_URL, rows_queue_url)) if not v]
        if missing:
            raise TargetError(f"stack {stack} has no output(s) {', '.join(missing)}")
    else:
        bucket, table = names.bucket, names.table
        ledger_table = names.ledger_table if endpoint_url or not (dlq_url and rows_queue_url) else ""
        dlq_url = dlq_url or queue_url(sqs, names.dlq)
        rows_queue_url = rows_queue_url or queue_url(sqs, names.rows_queue)
    assert dlq_url and rows_queue_url
    ddb = client("dynamodb", endpoint_url=endpoint_url, region=region) if ledger_table else None
    return Target(sqs, dlq_url, rows_queue_url, bucket, table, endpoint_url, ddb, ledger_table,
                  wait_s=0 if is_loopback(endpoint_url) else 1)


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:  # "Stack with id X does not exist"
        raise TargetError(f"cannot describe stack {stack}: {exc}") from exc
    if not stacks:
        raise TargetError(f"stack {stack} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def queue_url(sqs: Any, name: str) -> str:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as exc:  # not found; no credentials or no endpoint say so themselves
        raise TargetError(f"queue {name} not found: {exc}") from exc
