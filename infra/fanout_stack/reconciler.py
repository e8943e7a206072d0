"""The reconciler's schedule: an EventBridge rule that invokes the writer with
`fanout.contract.RECONCILE_EVENT` every `reconcile_every_s`, so every active job is
settled, stalled or announced by something with a full budget of its own
(fanout/ledger/reconciler.py), whichever invocation died."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from fanout.contract import RECONCILE_EVENT
from fanout_stack.config import StackConfig
from fanout_stack.functions import Functions

# How long an undelivered run may wait at most (both EventBridge's and Lambda's limit lie
# above the shortest interval, 60 s; Lambda's maximum is 6 hours).
MAX_EVENT_AGE_S = 6 * 3600


class Reconciler(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig,
                 functions: Functions) -> None:
        super().__init__(scope, construct_id)
        every = Duration.seconds(config.pipeline.reconcile_every_s)
        max_age = Duration.seconds(min(config.pipeline.reconcile_every_s, MAX_EVENT_AGE_S))
        self.rule = events.Rule(
            self, "Schedule", schedule=events.Schedule.rate(every),
            description="fanout: the writer settles, stalls and announces every active job")
        # EventBridge invokes the writer asynchronously. A run that fails is not retried:
        # the next one comes within the interval and does the same work (an older event
        # would only overlap it).
        self.rule.add_target(targets.LambdaFunction(
            functions.writer, event=events.RuleTargetInput.from_object(RECONCILE_EVENT),
            retry_attempts=0, max_event_age=max_age))
        functions.writer.configure_async_invoke(retry_attempts=0, max_event_age=max_age)
