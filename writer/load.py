"""The writer's logic: one SQS batch of rows messages -> DynamoDB, rejects and the ledger."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from botocore.exceptions import BotoCoreError, ClientError

from fanout import ledger, sending
from fanout.aws import b64_default
from fanout.contract import (
    KIND_REJECTED,
    MODE_DELETE,
    MODE_INSERT,
    MODE_PUT,
    MODE_UPDATE,
    Rejection,
    RowsMessage,
    as_replay,
    decode,
    rejected_messages,
)
from fanout.keys import TemplateError
from fanout.mapping import RowMapper, RowRejected, Spec
from fanout.runtime import Runtime, settle_job
from fanout.settings import WRITER_REQUIRED
from fanout.telemetry import log_keys, message_keys, subsegment, with_log_keys
from writer import SERVICE
from writer.batch_write import (
    CALL_S,
    DELETE_REQUEST,
    Budget,
    InFlight,
    TransientWriteError,
    WriteOutcome,
    WriterDynamoDB,
    items_client,
    write_items,
)
from writer.rows import insert_request, update_request, write_rows
from writer.statements import write_statements

log = Logger(service=SERVICE)

MAX_VISIBILITY_S = 12 * 3600  # SQS's limit on a message's visibility timeout
MAX_CHANGE_VISIBILITY_BATCH = 10


@dataclass
class ChunkResult:
    message: RowsMessage
    written: int = 0  # items put, inserted or updated
    superseded: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # the items written
    deleted: int = 0
    skipped_existing: int = 0
    masks: tuple[int, ...] | None = None  # a replay's rows by outcome (see landed_masks)
    cancelled: int = 0  # rows dropped unwritten: their job was cancelled (see dropped)
    rejected_bodies: list[str] = field(default_factory=list)  # for the DLQ (send_rejected)

    @property
    def counts(self) -> ledger.MessageCounts:
        return ledger.MessageCounts(self.written, len(self.rejections), self.superseded,
                                    self.deleted, self.skipped_existing, self.cancelled,
                                    masks=self.masks)


def runtime_from_env() -> Runtime:
    """The Runtime at cold start, with the writer's own client for BatchWriteItem."""
    runtime = Runtime.from_env(required=WRITER_REQUIRED)
    settings = runtime.settings
    ddb = WriterDynamoDB(items_client(endpoint_url=settings.endpoint_url, region=settings.region),
                         runtime.clients.dynamodb, items_table=settings.table_name)
    return replace(runtime, clients=replace(runtime.clients, dynamodb=ddb))


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
    """Rows -> items with distinct keys (the later row in file order wins), as the
    message's write mode needs them: for a delete, the keys alone (no other column is
    read); for an update, an earlier row's attributes the later one does not set are
    kept in its item, so one UpdateItem does what the two rows in file order would.

    Returns (items, their source lines, rejections, superseded count).
    """
    places = message.row_indexes  # a rejection keeps its row's index
    indexes: list[int | None] = [None] * len(message.rows) if places is None else list(places)
    try:
        mapper = _mapper(spec, tuple(message.header))
    except TemplateError as exc:
        return [], [], [Rejection(line, row, "bad_header", str(exc), index) for line, row, index
                        in zip(message.lines, message.rows, indexes, strict=True)], 0
    by_key: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
    rejections: list[Rejection] = []
    superseded = 0
    convert = mapper.to_key if message.mode == MODE_DELETE else mapper.to_item
    merge = message.mode == MODE_UPDATE
    for line, row, index in zip(message.lines, message.rows, indexes, strict=True):
        try:
            item = convert(row, line)
        except RowRejected as exc:
            rejections.append(Rejection(line, row, exc.reason, exc.detail, index))
            continue
        except Exception as exc:  # a mapping bug must cost one row, never the whole message
            log.exception("mapping line %s failed", line)
            rejections.append(Rejection(line, row, "mapping_error", f"{type(exc).__name__}: {exc}",
                                        index))
            continue
        key = mapper.key_of(item)
        if key in by_key:
            superseded += 1
            if merge:
                item = by_key.pop(key)[1] | item
        by_key[key] = (line, item)
    lines = [line for line, _ in by_key.values()]
    items = [item for _, item in by_key.values()]
    return items, lines, rejections, superseded


@dataclass
class Prepared:
    """A message decoded and mapped, ready to write."""

    message: RowsMessage
    items: list[dict[str, Any]]
    lines: list[int]
    rejections: list[Rejection]
    superseded: int


def prepare(message: RowsMessage, spec: Spec) -> Prepared:
    """Map a message's rows to items (CPU only, no AWS call)."""
    return Prepared(message, *map_rows(message, spec))


def load_chunk(message: RowsMessage, runtime: Runtime, budget: Budget,
               in_flight: InFlight | None = None) -> ChunkResult:
    """Write one message's rows; rejects are reported, transient failures raise."""
    return write_chunk(prepare(message, runtime.spec), runtime, budget, in_flight)


def write_chunk(prepared: Prepared, runtime: Runtime, budget: Budget,
                in_flight: InFlight | None = None) -> ChunkResult:
    """Write a prepared message, then its JSON copy and its rejections."""
    message, items, lines = prepared.message, prepared.items, prepared.lines
    # Rows the splitter could not carry (too large for a queue message) arrive as rejections.
    result = ChunkResult(message, superseded=prepared.superseded,
                         rejections=list(message.rejections) + prepared.rejections)
    outcome = write_mode(message.mode, runtime, items, budget, in_flight)
    if message.mode == MODE_DELETE:
        result.deleted = outcome.written
    else:
        result.written = outcome.written
    result.skipped_existing = len(outcome.skipped)
    invalid = {index for index, _ in outcome.invalid}
    indexes = message.row_indexes
    for index, reason in outcome.invalid:
        position = message.lines.index(lines[index])
        result.rejections.append(Rejection(lines[index], message.rows[position], "dynamodb_validation",
                                           reason, None if indexes is None else indexes[position]))
    result.masks = landed_masks(prepared, outcome)
    unwritten = invalid | set(outcome.skipped)
    result.items = [] if message.mode == MODE_DELETE else [
        item for i, item in enumerate(items) if i not in unwritten]
    if runtime.settings.json_copy and result.items:
        write_json_copy(message, result.items, runtime)
    if result.rejections:
        result.rejections.sort(key=lambda r: r.line)
        result.rejected_bodies = report_rejections(message, result.rejections, runtime)
    return result


def landed_masks(prepared: Prepared, outcome: WriteOutcome) -> tuple[int, ...] | None:
    """For a replay whose rows carry their indexes: per outcome a row can land in (see
    ledger.row_masks), the bitmask of the indexes of its rows that ended there, so the
    ledger moves each row out of rejected once, however often it is sent back. None for
    any other message (and for rows whose lines are not distinct: the ledger then counts
    the replay by its id)."""
    message = prepared.message
    indexes = message.row_indexes
    if not message.replay or indexes is None or len(set(message.lines)) != len(message.lines):
        return None
    index_of = dict(zip(message.lines, indexes, strict=True))
    unwritten = {index for index, _ in outcome.invalid} | set(outcome.skipped)
    landed = [index_of[line] for i, line in enumerate(prepared.lines) if i not in unwritten]
    mapped = {*prepared.lines, *(r.line for r in prepared.rejections)}
    delete = message.mode == MODE_DELETE
    return ledger.row_masks(
        written=[] if delete else landed, deleted=landed if delete else [],
        superseded=[index_of[line] for line in message.lines if line not in mapped],
        skipped_existing=[index_of[prepared.lines[i]] for i in outcome.skipped])


def write_mode(mode: str, runtime: Runtime, items: list[dict[str, Any]], budget: Budget,
               in_flight: InFlight | None) -> WriteOutcome:
    """Write a message's items as its mode says: put and delete by BatchWriteItem (25 a
    call), insert and update by BatchExecuteStatement (25 a call, writer/statements.py)
    on a client that runs PartiQL statements, else by one PutItem or UpdateItem a row
    (writer/rows.py)."""
    ddb, table = runtime.clients.dynamodb, runtime.settings.table_name
    if mode == MODE_PUT:
        return write_items(ddb, table, items, budget, in_flight)
    if mode == MODE_DELETE:
        return write_items(ddb, table, items, budget, in_flight, request=DELETE_REQUEST)
    key_names = [name for name, _ in runtime.spec.key_schema()]
    if getattr(ddb, "runs_statements", False):  # the Lambda's client (moto cannot run them)
        return write_statements(ddb, table, items, key_names, mode, budget, in_flight)
    request = insert_request if mode == MODE_INSERT else update_request
    return write_rows(ddb, [request(table, item, key_names) for item in items], budget, in_flight)


Outcome = ChunkResult | Exception


def write_batch(records: list[dict[str, Any]], runtime: Runtime, budget: Budget) -> dict[str, Outcome]:
    """Every record of an SQS batch, by message id: its ChunkResult, or the exception that
    failed it. Records are decoded and mapped in order on this thread while a pool of
    `settings.writer_in_flight` threads writes the messages already mapped, on the one
    shared client; `InFlight` decides how many calls run at once."""
    outcomes: dict[str, Outcome] = {}
    in_flight = InFlight(runtime.settings.writer_in_flight)
    with ThreadPoolExecutor(max_workers=in_flight.most, thread_name_prefix="fanout-write") as pool:
        futures: dict[str, Future[ChunkResult]] = {}
        for record in records:
            try:
                message = decode(record["body"])
                if message.kind == KIND_REJECTED:
                    message = as_replay(message)
                if (cancelled := dropped(message, runtime)) is not None:
                    outcomes[record["messageId"]] = cancelled
                    continue
                with log_keys(log, **message_keys(message)):
                    prepared = prepare(message, runtime.spec)
            except Exception as exc:  # reported for this record alone, as the processor would
                outcomes[record["messageId"]] = exc
                continue
            write = with_log_keys(log, message_keys(message), write_chunk)  # on the pool thread
            futures[record["messageId"]] = pool.submit(write, prepared, runtime, budget, in_flight)
        for message_id, future in futures.items():
            try:
                outcomes[message_id] = future.result()
            except Exception as exc:
                outcomes[message_id] = exc
        send_rejected(outcomes, runtime, pool, budget)
    return outcomes


def send_rejected(outcomes: dict[str, Outcome], runtime: Runtime, pool: ThreadPoolExecutor,
                  budget: Budget) -> None:
    """The batch's rejected rows to the DLQ: every message's DLQ bodies together, 10 a
    SendMessageBatch (fanout.sending), the calls on the write pool at once, their retries
    inside the invocation's budget. A message
    any of whose bodies SQS would not take fails (its outcome becomes the error): SQS
    delivers it again, so no rejected row is counted that the DLQ does not hold."""
    url = runtime.settings.dlq_url
    owned = [(message_id, body) for message_id, outcome in outcomes.items()
             if isinstance(outcome, ChunkResult) for body in outcome.rejected_bodies]
    if not url or not owned:
        return
    owners = iter(message_id for message_id, _ in owned)
    sends: list[tuple[set[str], Future[None]]] = []
    for batch in sending.batches([body for _, body in owned]):
        sends.append(({next(owners) for _ in batch},
                      pool.submit(sending.send_batch, runtime.clients.sqs, url, batch,
                                  time_left=budget.left)))
    for message_ids, future in sends:
        error = future.exception()
        if error is not None:
            log.warning("rejected rows of %d message(s) not sent to the DLQ: %s",
                        len(message_ids), error)
            for message_id in message_ids:
                outcomes[message_id] = error  # type: ignore[assignment]


def throttle_visibility_s(receive_count: int, visibility_timeout_s: int) -> int:
    """How long a message that failed on throttling stays invisible: the queue's visibility
    timeout doubled per receive so far, times 1 to 1.5 (jitter), at most SQS's 12 hours."""
    doubled = visibility_timeout_s * 2 ** max(0, receive_count - 1)
    return int(min(MAX_VISIBILITY_S, doubled * random.uniform(1.0, 1.5)))


def hold_back(records: list[dict[str, Any]], outcomes: dict[str, Outcome], runtime: Runtime) -> int:
    """Messages that failed because DynamoDB throttled them past the budget wait longer
    before SQS delivers them again (ChangeMessageVisibility), so minutes of throttling use
    up a few of a message's maxReceiveCount receives instead of all of them: the backlog
    waits in the queue. Returns how many were held back; a failure here only means the
    message comes back after the queue's own visibility timeout."""
    url = runtime.settings.rows_queue_url
    held = [r for r in records if isinstance(outcomes.get(r["messageId"]), TransientWriteError)]
    if not url or not held:
        return 0
    entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"],
                "VisibilityTimeout": throttle_visibility_s(
                    int(r.get("attributes", {}).get("ApproximateReceiveCount", "1")),
                    runtime.settings.visibility_timeout_s)}
               for i, r in enumerate(held)]
    for start in range(0, len(entries), MAX_CHANGE_VISIBILITY_BATCH):
        try:
            runtime.clients.sqs.change_message_visibility_batch(
                QueueUrl=url, Entries=entries[start:start + MAX_CHANGE_VISIBILITY_BATCH])
        except (ClientError, BotoCoreError):
            log.warning("could not hold back %d throttled message(s)", len(entries), exc_info=True)
    return len(entries)


def write_json_copy(message: RowsMessage, items: list[dict[str, Any]], runtime: Runtime) -> None:
    """The old loader's JSON backup: the message's written items, one JSON line each, under
    json-copy/JOB/MESSAGE.jsonl (idempotent per message; the trigger ignores the prefix)."""
    settings = runtime.settings
    body = "".join(json.dumps({"Item": item}, ensure_ascii=False, default=b64_default) + "\n"
                   for item in items)
    runtime.clients.s3.put_object(
        Bucket=settings.bucket,
        Key=f"{settings.json_copy_prefix}{message.job}/{message.message_id}.jsonl",
        Body=body.encode(), ContentType="application/x-ndjson",
    )




def report_rejections(message: RowsMessage, rejections: list[Rejection], runtime: Runtime
                      ) -> list[str]:
    """Rejected rows go to the error report in S3 (for people), and come back as the DLQ
    bodies that carry them (for the replayer; send_rejected sends a batch's together)."""
    settings, clients = runtime.settings, runtime.clients
    if settings.bucket:
        body = "".join(  # for people: a row's index in its seq is the DLQ's business
            json.dumps({"job": message.job, "source": message.source.uri, "header": message.header}
                       | replace(r, index=None).as_dict(), ensure_ascii=False) + "\n"
            for r in rejections
        )
        clients.s3.put_object(
            Bucket=settings.bucket,
            Key=f"{settings.errors_prefix}{message.job}/{message.message_id}.jsonl",
            Body=body.encode(),
            ContentType="application/x-ndjson",
        )
    if not settings.dlq_url:
        return []
    return [rejected.encode() for rejected in rejected_messages(message, rejections)]


def load_batch(event: dict[str, Any], context: Any, runtime: Runtime,
               on_result: Callable[[ChunkResult], None] | None = None) -> dict[str, Any]:
    """Process an SQS batch with partial failures, then record it in the ledger."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    budget = Budget(remaining_s=lambda: context.get_remaining_time_in_millis() / 1000,
                    call_s=CALL_S)
    outcomes = write_batch(event["Records"], runtime, budget)
    results: list[ChunkResult] = []

    def record_handler(record: Any) -> None:
        outcome = outcomes[record.message_id]
        if isinstance(outcome, Exception):
            raise outcome
        results.append(outcome)

    with processor(records=event["Records"], handler=record_handler, lambda_context=context):
        processor.process()
    hold_back(event["Records"], outcomes, runtime)
    by_job: dict[str, dict[str, ledger.MessageCounts]] = defaultdict(dict)
    for result in results:
        by_job[result.message.job][result.message.message_id] = result.counts
    with subsegment("ledger record_batch", jobs=len(by_job)):
        recorded = ledger.record_batch(runtime.clients.dynamodb, runtime.settings.ledger_table_name,
                                       context.aws_request_id, by_job, clock=runtime.clock)
    learn_cancels(runtime, recorded)
    for job_item in recorded:
        settle_job(runtime, job_item, owner=context.aws_request_id, remaining_s=budget.remaining_s)
    if on_result:
        for result in results:
            on_result(result)
    return dict(processor.response())


def wholly_failed(event: dict[str, Any], response: dict[str, Any]) -> bool:
    """True when every message of the batch was reported failed (SQS retries them all)."""
    records = event.get("Records") or []
    return bool(records) and len(response.get("batchItemFailures") or []) == len(records)


KNOWN_CANCELS = 1024  # cancelled jobs a writer process remembers (the oldest are forgotten)


def dropped(message: RowsMessage, runtime: Runtime) -> ChunkResult | None:
    """A message of a job this process knows was cancelled, not written: all its rows
    counted `cancelled`. A replay is written all the same: the operator redrove it knowing
    (dlq-replayer refuses a cancelled job's rows unless told to)."""
    if message.replay or message.job not in runtime.cancelled_jobs:
        return None
    return ChunkResult(message, cancelled=len(message.rows) + len(message.rejections))


def learn_cancels(runtime: Runtime, recorded: list[dict[str, Any]]) -> None:
    """What the ledger report returned (each job's tally) says which jobs were cancelled: no
    read of its own, so a cancel costs nothing per message while no job is cancelled."""
    for item in recorded:
        if ledger.is_cancelled(item):
            runtime.cancelled_jobs[ledger.job_id(item)] = None
            while len(runtime.cancelled_jobs) > KNOWN_CANCELS:
                del runtime.cancelled_jobs[next(iter(runtime.cancelled_jobs))]
