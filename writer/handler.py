"""Writer Lambda entry point (handler string `writer.handler.lambda_handler`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from fanout.contract import is_reconcile_event
from fanout.ledger import STALLED
from fanout.runtime import RuntimeSlot, reconcile_jobs
from writer import SERVICE
from writer.load import ChunkResult, load_batch, runtime_from_env, wholly_failed

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="fanout", service="writer")
tracer = Tracer(service=SERVICE)


runtime = RuntimeSlot(runtime_from_env)  # every setting the writer uses, validated
runtime.build_in_lambda()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_reconcile_event(event):
        return reconcile(context)
    results: list[ChunkResult] = []
    response = load_batch(event, context, runtime.get(), on_result=results.append)
    metrics.add_metric(name="RowsWritten", unit=MetricUnit.Count,
                       value=sum(r.written for r in results))
    metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count,
                       value=sum(len(r.rejections) for r in results))
    metrics.add_metric(name="RowsSuperseded", unit=MetricUnit.Count,
                       value=sum(r.superseded for r in results))
    for name, value in (("RowsDeleted", sum(r.deleted for r in results)),
                        ("RowsSkippedExisting", sum(r.skipped_existing for r in results)),
                        ("RowsCancelled", sum(r.cancelled for r in results))):
        if value:  # the delete and insert modes' own outcomes, and a cancel's (else as before)
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    # Every message failed: not a Lambda error (the processor reports them one by one), so
    # the WriterBatchesFailed alarm watches this metric instead of Errors.
    metrics.add_metric(name="BatchesFailedWhole", unit=MetricUnit.Count,
                       value=int(wholly_failed(event, response)))
    return response


def reconcile(context: LambdaContext) -> dict[str, Any]:
    """The reconciler's scheduled run (fanout/ledger/reconciler.py): every active job settled
    with this invocation's budget; the JobsStalled alarm watches the stalls."""
    ended = reconcile_jobs(runtime.get(), owner=context.aws_request_id,
                           remaining_s=lambda: context.get_remaining_time_in_millis() / 1000)
    stalled = [done.job for done in ended if done.status == STALLED]
    metrics.add_metric(name="JobsStalled", unit=MetricUnit.Count, value=len(stalled))
    if stalled:
        logger.error("jobs stalled: %s", ", ".join(stalled))
    return {"ended": {done.job: done.status for done in ended}}
