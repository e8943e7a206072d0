"""Alarms (to an SNS alarm topic) and a dashboard: rows per minute, queue depth,
concurrency and DynamoDB throttling."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from fanout_stack.config import StackConfig
from fanout_stack.functions import Functions
from fanout_stack.queues import Messaging
from fanout_stack.storage import Storage

METRICS_NAMESPACE = "fanout"
WRITER_METRICS = ("RowsWritten", "RowsRejected", "RowsSuperseded")
SPLITTER_METRICS = ("RowsRead", "MessagesSent")
ONE_MINUTE = Duration.minutes(1)
# The rows queue drains at the write budget by design, so a large file legitimately
# leaves messages waiting. An hour-old message means the writer is stuck or the budget
# is far too small for the load.
OLDEST_ROW_MESSAGE_ALARM_S = 3600


def custom_metric(name: str, service: str) -> cw.Metric:
    """A Powertools EMF metric (namespace fanout, dimension service) summed per minute."""
    return cw.Metric(namespace=METRICS_NAMESPACE, metric_name=name,
                     dimensions_map={"service": service}, statistic="Sum", period=ONE_MINUTE,
                     label=f"{name} / min")


def alarm_metric(name: str, service: str) -> cw.Metric:
    """A Powertools EMF metric summed per minute, as an alarm watches it (no label)."""
    return cw.Metric(namespace=METRICS_NAMESPACE, metric_name=name,
                     dimensions_map={"service": service}, statistic="Sum", period=ONE_MINUTE)


def table_metric(name: str, table_name: str, **dimensions: str) -> cw.Metric:
    return cw.Metric(namespace="AWS/DynamoDB", metric_name=name,
                     dimensions_map={"TableName": table_name, **dimensions},
                     statistic="Sum", period=ONE_MINUTE)


class Observability(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig,
                 storage: Storage, messaging: Messaging, functions: Functions) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(self, "AlarmTopic", display_name="fanout alarms",
                                     enforce_ssl=True)
        # CloudWatch publishes alarm actions as the service: the topic's policy (which
        # enforce_ssl creates, holding only a Deny) must allow it, or every alarm changes
        # state and notifies nobody. Only for this account's alarms in this region.
        stack = Stack.of(self)
        self.alarm_topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsOfThisAccount",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[self.alarm_topic.topic_arn],
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(
                    service="cloudwatch", resource="alarm", resource_name="*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME)},
            },
        ))
        if config.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        action = cw_actions.SnsAction(self.alarm_topic)
        table_name = storage.items_table.table_name

        def alarm(construct_id: str, metric: cw.IMetric, description: str, *,
                  threshold: float = 0, periods: int = 1, datapoints: int | None = None,
                  ) -> cw.Alarm:
            created = cw.Alarm(
                self, construct_id, metric=metric, alarm_description=description,
                threshold=threshold, evaluation_periods=periods,
                datapoints_to_alarm=datapoints or periods,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(action)
            created.add_ok_action(action)
            return created

        self.alarms = {
            "DlqNotEmpty": alarm(
                "DlqNotEmpty",
                messaging.dlq.metric_approximate_number_of_messages_visible(
                    period=ONE_MINUTE, statistic="Maximum"),
                "Messages in the fanout DLQ: poison messages or rejected rows. "
                "Inspect with `dlq-replayer --stack NAME inspect`."),
            "RowsQueueBacklogAge": alarm(
                "RowsQueueBacklogAge",
                messaging.rows_queue.metric_approximate_age_of_oldest_message(
                    period=ONE_MINUTE, statistic="Maximum"),
                f"The oldest rows message is over {OLDEST_ROW_MESSAGE_ALARM_S} s old: the "
                "writer is failing or its write budget is too small.",
                threshold=OLDEST_ROW_MESSAGE_ALARM_S, periods=5),
            "WriterErrors": alarm(
                "WriterErrors",
                functions.writer.metric_errors(period=ONE_MINUTE, statistic="Sum"),
                "Writer invocations failed as a whole (not single messages): check its logs.",
                periods=3, datapoints=2),
            "WriterBatchesFailed": alarm(
                "WriterBatchesFailed",
                alarm_metric("BatchesFailedWhole", "writer"),
                "Writer batches in which every message failed (throttling past the budget, the "
                "table or the ledger unreachable): not Lambda errors, since each message is "
                "reported on its own. Check the writer's logs.", periods=3, datapoints=2),
            "JobsStalled": alarm(
                "JobsStalled", alarm_metric("JobsStalled", "writer"),
                "The reconciler moved a job to STALLED: no progress for "
                f"{config.pipeline.stall_after_s} s (messages in the DLQ or lost, or a split that "
                "stopped). The writer's log names the job; `fanout status JOB --stack NAME` shows "
                "what is missing (stall_reason, missing_messages, missing_seqs). Redrive the DLQ "
                "with `dlq-replayer redrive --stack NAME`: the job then completes. A stopped split "
                "needs the file uploaded again under a new key."),
            "SplitterEventsDropped": alarm(
                "SplitterEventsDropped",
                messaging.splitter_failures.metric_approximate_number_of_messages_visible(
                    period=ONE_MINUTE, statistic="Maximum"),
                "An upload's splitter invocation failed three times: its event is in the "
                "splitter-failures queue and its job is not loading. Check the splitter's logs, "
                "then re-invoke the splitter with the event."),
            "SplitterErrors": alarm(
                "SplitterErrors",
                functions.splitter.metric_errors(period=ONE_MINUTE, statistic="Sum"),
                "Splitter invocations failed: an upload may not have been split."),
            "ItemsWriteThrottles": alarm(
                "ItemsWriteThrottles", table_metric("WriteThrottleEvents", table_name),
                "Sustained write throttling on the items table: lower -c write_budget or "
                "raise the table's throughput.", periods=5, datapoints=3),
            "ItemsThrottledRequests": alarm(
                "ItemsThrottledRequests",
                table_metric("ThrottledRequests", table_name, Operation="BatchWriteItem"),
                "BatchWriteItem calls throttled on the items table (whole calls, not items).",
                periods=5, datapoints=3),
        }

        # A fixed name (the stack's), output as DashboardName: the console lists it there.
        self.dashboard_name = stack.stack_name
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=self.dashboard_name,
                                      default_interval=Duration.hours(3))
        rows_queue, dlq = messaging.rows_queue, messaging.dlq
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Rows per minute (writer)", width=12,
                           left=[custom_metric(name, "writer") for name in WRITER_METRICS]),
            cw.GraphWidget(title="Rows read / messages sent per minute (splitter)", width=12,
                           left=[custom_metric(name, "splitter") for name in SPLITTER_METRICS]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth", width=12,
                left=[
                    rows_queue.metric_approximate_number_of_messages_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="rows visible"),
                    rows_queue.metric_approximate_number_of_messages_not_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="rows in flight"),
                    dlq.metric_approximate_number_of_messages_visible(
                        period=ONE_MINUTE, statistic="Maximum", label="DLQ"),
                ],
                right=[rows_queue.metric_approximate_age_of_oldest_message(
                    period=ONE_MINUTE, statistic="Maximum", label="oldest rows message (s)")]),
            cw.GraphWidget(
                title="Lambda concurrent executions", width=12,
                left=[
                    fn.metric("ConcurrentExecutions", period=ONE_MINUTE, statistic="Maximum",
                              label=label)
                    for fn, label in ((functions.writer, "writer"),
                                      (functions.splitter, "splitter"))
                ],
                left_annotations=[cw.HorizontalAnnotation(
                    value=config.writer_max_concurrency, label="writer MaximumConcurrency")]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Items table writes", width=12,
                left=[table_metric("ConsumedWriteCapacityUnits", table_name)],
                right=[table_metric("WriteThrottleEvents", table_name)],
                left_annotations=[cw.HorizontalAnnotation(
                    value=config.write_budget * 60, label="write budget (WCU per minute)")]),
            cw.GraphWidget(
                title="Lambda errors / throttles", width=12,
                left=[functions.writer.metric_errors(period=ONE_MINUTE, label="writer errors"),
                      functions.splitter.metric_errors(period=ONE_MINUTE,
                                                       label="splitter errors"),
                      functions.writer.metric_throttles(period=ONE_MINUTE,
                                                        label="writer throttles")]),
            cw.AlarmStatusWidget(title="Alarms", width=24, alarms=list(self.alarms.values())),
        )
