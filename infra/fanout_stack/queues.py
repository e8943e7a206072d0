"""The rows queue and its dead-letter queue, and the completion topic."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_stack.config import StackConfig

MAX_QUEUE_NAME = 80


class Messaging(Construct):
    """Rows queue -> DLQ (after maxReceiveCount) and the SNS completion topic."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        pipeline = config.pipeline
        retention = Duration.days(pipeline.retention_days)
        dlq_retention = Duration.days(pipeline.dlq_retention_days)
        if pipeline.dlq_retention_days <= pipeline.retention_days:
            raise ValueError(f"the DLQ's retention ({pipeline.dlq_retention_days} days) must be "
                             f"longer than the rows queue's ({pipeline.retention_days} days)")
        # The rows queue has a fixed name, so the DLQ's RedriveAllowPolicy can name it
        # (its ARN from the name: a reference to the queue would be a cycle, the queue's
        # RedrivePolicy already names the DLQ).
        stack = Stack.of(self)
        self.rows_queue_name = f"{stack.stack_name}-rows"
        if len(self.rows_queue_name) > MAX_QUEUE_NAME:
            raise ValueError(f"stack_name {stack.stack_name!r} is too long: the rows queue is "
                             f"named after it ({self.rows_queue_name!r}) and SQS allows "
                             f"{MAX_QUEUE_NAME} characters; use at most "
                             f"{MAX_QUEUE_NAME - len('-rows')}")
        rows_queue_arn = stack.format_arn(service="sqs", resource=self.rows_queue_name,
                                          arn_format=ArnFormat.NO_RESOURCE_NAME)
        # Standard queues (at-least-once): the writer is idempotent per (job, seq), so
        # FIFO ordering would cost throughput and buy nothing.
        self.dlq = sqs.Queue(
            self, "RowsDlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=dlq_retention,
            # Only the rows queue may use this queue as its dead-letter queue.
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.BY_QUEUE,
                source_queues=[sqs.Queue.from_queue_arn(self, "RowsByName", rows_queue_arn)]),
        )
        self.rows_queue = sqs.Queue(
            self, "Rows",
            queue_name=self.rows_queue_name,
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
            retention_period=dlq_retention,
        )
        self.topic = sns.Topic(self, "Completion", display_name="fanout job summaries",
                               enforce_ssl=True)
