"""The writer's logic: one SQS batch of rows messages -> DynamoDB, rejects and the ledger."""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from fanout import ledger
from fanout.contract import KIND_REJECTED, Rejection, RowsMessage, as_replay, decode, rejected_messages
from fanout.keys import TemplateError
from fanout.mapping import RowMapper, RowRejected, Spec
from fanout.runtime import Runtime, settle_job
from writer.batch_write import Budget, write_items

log = logging.getLogger(__name__)


@dataclass
class ChunkResult:
    message: RowsMessage
    written: int = 0
    superseded: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> ledger.MessageCounts:
        return ledger.MessageCounts(self.written, len(self.rejections), self.superseded)


_MAPPERS: dict[tuple[int, tuple[str, ...]], tuple[Spec, RowMapper]] = {}


def _mapper(spec: Spec, header: tuple[str, ...]) -> RowMapper:
    """The spec bound to a header, cached: a job's messages all share one header."""
    cached = _MAPPERS.get((id(spec), header))
    if cached is None or cached[0] is not spec:
        if len(_MAPPERS) > 64:
            _MAPPERS.clear()
        cached = (spec, spec.bind(header))
        _MAPPERS[(id(spec), header)] = cached
    return cached[1]


def map_rows(message: RowsMessage, spec: Spec) -> tuple[list[dict[str, Any]], list[int],
                                                         list[Rejection], int]:
    """Rows -> items with distinct keys (the later row in file order wins).

    Returns (items, their source lines, rejections, superseded count).
    """
    try:
        mapper = _mapper(spec, tuple(message.header))
    except TemplateError as exc:
        return [], [], [Rejection(line, row, "bad_header", str(exc))
                        for line, row in zip(message.lines, message.rows, strict=True)], 0
    by_key: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
    rejections: list[Rejection] = []
    superseded = 0
    for line, row in zip(message.lines, message.rows, strict=True):
        try:
            item = mapper.to_item(row, line)
        except RowRejected as exc:
            rejections.append(Rejection(line, row, exc.reason, exc.detail))
            continue
        except Exception as exc:  # a mapping bug must cost one row, never the whole message
            log.exception("mapping line %s failed", line)
            rejections.append(Rejection(line, row, "mapping_error", f"{type(exc).__name__}: {exc}"))
            continue
        key = mapper.key_of(item)
        if key in by_key:
            superseded += 1
        by_key[key] = (line, item)
    lines = [line for line, _ in by_key.values()]
    items = [item for _, item in by_key.values()]
    return items, lines, rejections, superseded


def load_chunk(message: RowsMessage, runtime: Runtime, budget: Budget) -> ChunkResult:
    """Write one message's rows; rejects are reported, transient failures raise."""
    items, lines, rejections, superseded = map_rows(message, runtime.spec)
    # Rows the splitter could not carry (too large for a queue message) arrive as rejections.
    result = ChunkResult(message, superseded=superseded,
                         rejections=list(message.rejections) + rejections)
    outcome = write_items(runtime.clients.dynamodb, runtime.settings.table_name, items, budget)
    result.written = outcome.written
    invalid = {index for index, _ in outcome.invalid}
    for index, reason in outcome.invalid:
        row = message.rows[message.lines.index(lines[index])]
        result.rejections.append(Rejection(lines[index], row, "dynamodb_validation", reason))
    result.items = [item for i, item in enumerate(items) if i not in invalid]
    if runtime.settings.json_copy and result.items:
        write_json_copy(message, result.items, runtime)
    if result.rejections:
        result.rejections.sort(key=lambda r: r.line)
        report_rejections(message, result.rejections, runtime)
    return result


def write_json_copy(message: RowsMessage, items: list[dict[str, Any]], runtime: Runtime) -> None:
    """The old loader's JSON backup: the message's written items, one JSON line each, under
    json-copy/JOB/MESSAGE.jsonl (idempotent per message; the trigger ignores the prefix)."""
    settings = runtime.settings
    body = "".join(json.dumps({"Item": item}, ensure_ascii=False, default=_b64) + "\n"
                   for item in items)
    runtime.clients.s3.put_object(
        Bucket=settings.bucket,
        Key=f"{settings.json_copy_prefix}{message.job}/{message.message_id}.jsonl",
        Body=body.encode(), ContentType="application/x-ndjson",
    )


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def report_rejections(message: RowsMessage, rejections: list[Rejection], runtime: Runtime) -> None:
    """Rejected rows go to the DLQ (for the replayer) and to the error report in S3."""
    settings, clients = runtime.settings, runtime.clients
    if settings.dlq_url:
        for rejected in rejected_messages(message, rejections):
            clients.sqs.send_message(QueueUrl=settings.dlq_url, MessageBody=rejected.encode())
    if settings.bucket:
        body = "".join(
            json.dumps({"job": message.job, "source": message.source.uri, "header": message.header}
                       | r.as_dict(), ensure_ascii=False) + "\n"
            for r in rejections
        )
        clients.s3.put_object(
            Bucket=settings.bucket,
            Key=f"{settings.errors_prefix}{message.job}/{message.message_id}.jsonl",
            Body=body.encode(),
            ContentType="application/x-ndjson",
        )


def load_batch(event: dict[str, Any], context: Any, runtime: Runtime,
               on_result: Callable[[ChunkResult], None] | None = None) -> dict[str, Any]:
    """Process an SQS batch with partial failures, then record it in the ledger."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    budget = Budget(remaining_s=lambda: context.get_remaining_time_in_millis() / 1000)
    results: list[ChunkResult] = []

    def record_handler(record: Any) -> None:
        message = decode(record.body)
        if message.kind == KIND_REJECTED:
            message = as_replay(message)
        result = load_chunk(message, runtime, budget)
        results.append(result)

    with processor(records=event["Records"], handler=record_handler, lambda_context=context):
        processor.process()
    by_job: dict[str, dict[str, ledger.MessageCounts]] = defaultdict(dict)
    for result in results:
        by_job[result.message.job][result.message.message_id] = result.counts
    for job_item in ledger.record_batch(runtime.clients.dynamodb,
                                        runtime.settings.ledger_table_name,
                                        context.aws_request_id, by_job):
        settle_job(runtime, job_item, owner=context.aws_request_id, remaining_s=budget.remaining_s)
    if on_result:
        for result in results:
            on_result(result)
    return dict(processor.response())
