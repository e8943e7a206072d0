"""The rows queue and its dead-letter queue, and the completion topic."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_stack.config import StackConfig


class Messaging(Construct):
    """Rows queue -> DLQ (after maxReceiveCount) and the SNS completion topic."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        pipeline = config.pipeline
        retention = Duration.days(pipeline.retention_days)
        # Standard queues (at-least-once): the writer is idempotent per (job, seq), so
        # FIFO ordering would cost throughput and buy nothing.
        self.dlq = sqs.Queue(
            self, "RowsDlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
        )
        self.rows_queue = sqs.Queue(
            self, "Rows",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
            # 6x the writer timeout (AWS's advice): a batch retried by the event source
            # mapping inside one invocation never reappears to a second writer.
            visibility_timeout=Duration.seconds(pipeline.visibility_timeout_s),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=pipeline.max_receive_count),
        )
        # S3 invokes the splitter asynchronously; an event that still fails after Lambda's
        # two retries lands here (the splitter's on-failure destination) instead of vanishing.
        self.splitter_failures = sqs.Queue(
            self, "SplitterFailures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
        )
        self.topic = sns.Topic(self, "Completion", display_name="fanout job summaries",
                               enforce_ssl=True)
