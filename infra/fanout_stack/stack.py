"""The fanout stack: storage, messaging, functions, the reconciler's schedule and
observability, plus the outputs that `fanout --stack NAME` and `dlq-replayer --stack NAME`
read."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from fanout_stack.config import StackConfig
from fanout_stack.functions import Functions
from fanout_stack.nag import suppress_findings
from fanout_stack.observability import Observability
from fanout_stack.queues import Messaging
from fanout_stack.reconciler import Reconciler
from fanout_stack.storage import Storage


class FanoutStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.storage = Storage(self, "Storage", config=config)
        self.messaging = Messaging(self, "Messaging", config=config)
        self.functions = Functions(self, "Functions", config=config, storage=self.storage,
                                   messaging=self.messaging)
        self.reconciler = Reconciler(self, "Reconciler", config=config, functions=self.functions)
        self.observability = Observability(self, "Observability", config=config,
                                           storage=self.storage, messaging=self.messaging,
                                           functions=self.functions)
        outputs = {
            "BucketName": self.storage.bucket.bucket_name,
            "UploadPrefix": config.pipeline.upload_prefix,
            "TableName": self.storage.items_table.table_name,
            "LedgerTableName": self.storage.ledger_table.table_name,
            "RowsQueueUrl": self.messaging.rows_queue.queue_url,
            "DlqUrl": self.messaging.dlq.queue_url,
            "TopicArn": self.messaging.topic.topic_arn,
            "AlarmTopicArn": self.observability.alarm_topic.topic_arn,
            "DashboardName": self.observability.dashboard_name,
            "SplitterFunctionName": self.functions.splitter.function_name,
            "WriterFunctionName": self.functions.writer.function_name,
            "WriterMaxConcurrency": str(config.writer_max_concurrency),
            "SplitterLogGroup": self.functions.splitter_logs.log_group_name,
            "WriterLogGroup": self.functions.writer_logs.log_group_name,
        }
        if config.source_buckets:  # what `fanout ingest s3://...` checks before it starts
            outputs["SourceBuckets"] = ",".join(config.source_buckets)
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        suppress_findings(self)
