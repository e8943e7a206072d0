"""Create on the emulator what the CDK stack declares, from the same settings code."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from fanout import ledger
from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import PipelineConfig, ResourceNames, Settings


@dataclass(frozen=True)
class LocalStack:
    settings: Settings
    config: PipelineConfig
    names: ResourceNames
    rows_queue_arn: str
    dlq_arn: str
    events_queue_url: str  # where the bucket's ObjectCreated notifications land locally


def rows_queue_attributes(config: PipelineConfig, dlq_arn: str) -> dict[str, str]:
    """The rows queue's attributes: the stack sets the same values."""
    return {
        "VisibilityTimeout": str(config.visibility_timeout_s),
        "MessageRetentionPeriod": str(config.retention_days * 86400),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.max_receive_count}
        ),
    }


def key_attribute_definitions(spec: Spec) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(AttributeDefinitions, KeySchema) for the items table, from the mapping spec."""
    definitions, schema = [], []
    for (name, type_), role in zip(spec.key_schema(), ("HASH", "RANGE"), strict=False):
        definitions.append({"AttributeName": name, "AttributeType": type_})
        schema.append({"AttributeName": name, "KeyType": role})
    return definitions, schema


def create_resources(
    clients: Clients, spec: Spec, *, config: PipelineConfig, names: ResourceNames,
    range_bytes: int | None = None, endpoint_url: str | None = None, region: str = "us-east-1",
    json_copy: bool = False,
) -> LocalStack:
    s3, sqs, ddb = clients.s3, clients.sqs, clients.dynamodb
    s3.create_bucket(Bucket=names.bucket)
    dlq_url = sqs.create_queue(
        QueueName=names.dlq,
        Attributes={"MessageRetentionPeriod": str(config.dlq_retention_days * 86400)},
    )["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    rows_url = sqs.create_queue(
        QueueName=names.rows_queue, Attributes=rows_queue_attributes(config, dlq_arn)
    )["QueueUrl"]
    # Local only: S3 notifications land here and the local trigger invokes the splitter.
    # An event stays invisible while its splitter may still run.
    events_url = sqs.create_queue(
        QueueName=f"{names.rows_queue}-s3-events",
        Attributes={"VisibilityTimeout": str(max(1, int(config.splitter_timeout_s)))},
    )["QueueUrl"]
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": _queue_arn(sqs, events_url),
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [
                {"Name": "prefix", "Value": config.upload_prefix},
            ]}},
        }]},
    )
    definitions, schema = key_attribute_definitions(spec)
    table_name = spec.table_name or names.table
    ddb.create_table(TableName=table_name, AttributeDefinitions=definitions, KeySchema=schema,
                     BillingMode="PAY_PER_REQUEST")
    ddb.create_table(
        TableName=names.ledger_table,
        AttributeDefinitions=[{"AttributeName": ledger.PARTITION_KEY, "AttributeType": "S"},
                              {"AttributeName": ledger.SORT_KEY, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": ledger.PARTITION_KEY, "KeyType": "HASH"},
                   {"AttributeName": ledger.SORT_KEY, "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    topic_arn = clients.sns.create_topic(Name=names.topic)["TopicArn"] if clients.sns else ""
    settings = Settings.for_pipeline(
        replace(config, range_bytes=range_bytes) if range_bytes else config, spec,
        table_name=table_name, ledger_table_name=names.ledger_table, rows_queue_url=rows_url,
        dlq_url=dlq_url, bucket=names.bucket, topic_arn=topic_arn, json_copy=json_copy,
        endpoint_url=endpoint_url, region=region,
    )
    return LocalStack(settings, config, names, _queue_arn(sqs, rows_url), dlq_arn, events_url)


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
