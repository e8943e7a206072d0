"""Splitter Lambda entry point (handler string `splitter.handler.lambda_handler`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from fanout.runtime import Runtime, RuntimeSlot
from fanout.settings import SPLITTER_REQUIRED
from splitter import SERVICE
from splitter.split import split_event

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="fanout", service="splitter")
tracer = Tracer(service=SERVICE)
# Built at cold start; a missing or malformed setting fails it with a message naming it.
runtime = RuntimeSlot(lambda: Runtime.from_env(required=SPLITTER_REQUIRED))
runtime.build_in_lambda()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The split lease lasts as long as this invocation can (plus a margin).
    lease_s = context.get_remaining_time_in_millis() / 1000 + 5
    results = split_event(
        event, runtime.get(), owner=context.aws_request_id, lease_s=lease_s,
        remaining_s=lambda: context.get_remaining_time_in_millis() / 1000,
        function_arn=context.invoked_function_arn,
    )
    metrics.add_metric(name="ObjectsSplit", unit=MetricUnit.Count, value=len(results))
    for result in results:
        metrics.add_metric(name="RowsRead", unit=MetricUnit.Count, value=result.rows_read)
        metrics.add_metric(name="MessagesSent", unit=MetricUnit.Count, value=result.messages_sent)
        logger.info("split finished", extra=asdict(result))
    return {"jobs": [asdict(r) for r in results]}
