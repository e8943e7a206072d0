"""`fanout ingest`: one CSV through the real pipeline on the embedded emulator."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from fanout import dialect, ledger
from fanout.aws import Clients, b64_default
from fanout.contract import KIND_ROWS, RECONCILE_EVENT, ContractError, Source, decode, job_id_for
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import LOCAL_CONFIG, PipelineConfig, ResourceNames
from fanout_cli.failures import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, logs_to_stderr  # noqa: F401 (public)
from fanout_cli.local.backpressure import BoundedQueueClient
from fanout_cli.local.emulator import Emulator
from fanout_cli.local.esm import EventSourceMapping, LocalContext
from fanout_cli.local.preflight import preflight
from fanout_cli.local.resources import LocalStack, create_resources
from fanout_cli.progress import ProgressDisplay, format_rate, read_as
from fanout_cli.target import describe as describe_target

ASYNC_INVOKE_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
# Lambda retries a failed asynchronous event after about a minute; locally after 2 s. Not
# the rows queue's visibility timeout: the splitter takes no log ticket, so the ledger's
# timing rule that holds that timeout up does not bind this retry.
ASYNC_RETRY_DELAY_S = 2
log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """The pipeline itself failed (not the data): `fanout ingest` exits 1."""




def quiet_powertools() -> None:
    """Locally, Powertools' metrics (EMF on stdout) and info logs would drown the summary.

    With metrics disabled Powertools never clears its (process-wide) metric set, and
    prints it anyway once a metric holds 100 values, so the local runtime also clears it
    after every invocation (`clear_metrics`).
    """
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "fanout-local")


def clear_metrics(handler_module: Any) -> Callable[[dict[str, Any], Any], Any]:
    """The module's lambda_handler, clearing Powertools' metric set after each call."""
    def invoke(event: dict[str, Any], context: Any) -> Any:
        try:
            return handler_module.lambda_handler(event, context)
        finally:
            handler_module.metrics.clear_metrics()
    return invoke


@dataclass
class IngestOptions:
    file: Path
    spec: Spec
    out_dir: Path
    range_bytes: int | None = None
    concurrency: int = 4
    emulator: str = "inprocess"
    config: PipelineConfig = LOCAL_CONFIG
    names: ResourceNames = field(default_factory=ResourceNames)
    # Tests put the strict AWS layer (and its faults) between the handlers and moto here.
    wrap_clients: Callable[[Clients], Clients] | None = None
    max_wait_s: float = 3600.0
    progress: TextIO | None = None  # None (as for --json): no progress display
    json_copy: bool = False
    clock: Callable[[], float] = time.time  # the ledger's wall clock (the chaos suite moves it)


@dataclass
class IngestResult:
    summary: dict[str, Any]
    out_dir: Path

    @property
    def exit_code(self) -> int:
        if self.summary["status"] == ledger.COMPLETE:
            return EXIT_OK if self.summary["rows_rejected"] == 0 else EXIT_REJECTED
        if self.summary["status"] == "INCOMPLETE":
            return EXIT_REJECTED
        return EXIT_FAILED


def ingest(options: IngestOptions) -> IngestResult:
    """Raises UsageError or InputFileError before anything starts, PipelineError after."""
    found = preflight(options.file, options.spec)
    quiet_powertools()
    from splitter import handler as splitter_handler
    from writer import handler as writer_handler
    logs_to_stderr(splitter_handler.logger, writer_handler.logger)

    started = time.monotonic()
    counter = RowCounter(text_bytes_estimate(options.file, found))
    with Emulator(options.emulator) as emulator:
        raw = emulator.clients()
        stack = create_resources(raw, options.spec, config=options.config, names=options.names,
                                 range_bytes=options.range_bytes,
                                 endpoint_url=emulator.endpoint_url, json_copy=options.json_copy)
        clients = options.wrap_clients(raw) if options.wrap_clients else raw
        runtime = Runtime(stack.settings, options.spec, clients, clock=options.clock)
        bounded_sqs = BoundedQueueClient(clients.sqs, stack.settings.rows_queue_url)
        events_url = stack.events_queue_url

        def continue_split(payload: dict[str, Any]) -> None:
            # The stack's splitter invokes itself asynchronously; locally that is its trigger.
            raw.sqs.send_message(QueueUrl=events_url, MessageBody=json.dumps(payload))

        splitter_sqs = counter.sending(bounded_sqs, stack.settings.rows_queue_url)
        splitter_handler.runtime.use(replace(runtime, clients=replace(clients, sqs=splitter_sqs),
                                             continue_split=continue_split))
        writer_handler.runtime.use(runtime)
        try:
            writers, splitters = start_functions(stack, clients,
                                                 clear_metrics(splitter_handler),
                                                 counter.writing(clear_metrics(writer_handler)),
                                                 concurrency=options.concurrency,
                                                 on_deleted=bounded_sqs.finished)
            reconciler = ReconcilerSchedule(clear_metrics(writer_handler),
                                            every_s=options.config.reconcile_every_s,
                                            timeout_s=options.config.writer_timeout_s)
            try:
                key = options.config.upload_prefix + options.file.name
                raw.s3.upload_file(str(options.file), stack.settings.bucket, key)
                job = job_for_object(raw.s3, stack.settings.bucket, key)
                wait_for_job(raw, stack, job, options, writers, splitters, counter, reconciler)
            finally:
                writers.stop()
                splitters.stop()
            summary = write_outputs(raw, stack, job, options, time.monotonic() - started,
                                    source_format=found.describe())
        finally:
            splitter_handler.runtime.use(None)
            writer_handler.runtime.use(None)
    return IngestResult(summary, options.out_dir)


def start_functions(stack: LocalStack, clients: Clients, splitter: Callable[..., Any],
                    writer: Callable[..., Any], *, concurrency: int,
                    on_deleted: Callable[[int], None] | None = None) -> tuple[EventSourceMapping, EventSourceMapping]:
    """Start the writer's event source mapping and the splitter's S3 trigger."""
    config, settings = stack.config, stack.settings
    writers = EventSourceMapping(
        clients.sqs, settings.rows_queue_url, stack.rows_queue_arn, writer,
        function_name="fanout-writer", timeout_s=config.writer_timeout_s,
        batch_size=config.batch_size, concurrency=concurrency, on_deleted=on_deleted,
    ).start()

    def s3_trigger(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # S3 invokes the splitter asynchronously with the notification as the event;
        # locally the notification arrives on a queue and is handed over the same way.
        for record in event["Records"]:
            splitter(json.loads(record["body"]), context)
        return {}

    events_arn = clients.sqs.get_queue_attributes(
        QueueUrl=stack.events_queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # S3 invokes the splitter asynchronously: Lambda retries a failed event twice, then
    # drops it (the stack sends it to an on-failure destination). The local trigger does
    # the same, retrying after ASYNC_RETRY_DELAY_S.
    splitters = EventSourceMapping(
        clients.sqs, stack.events_queue_url, events_arn, s3_trigger,
        function_name="fanout-splitter", timeout_s=config.splitter_timeout_s,
        batch_size=1, concurrency=1, retry_delay_s=ASYNC_RETRY_DELAY_S,
        max_attempts=ASYNC_INVOKE_ATTEMPTS,
    ).start()
    return writers, splitters


def job_for_object(s3: Any, bucket: str, key: str) -> str:
    head = s3.head_object(Bucket=bucket, Key=key)
    return job_id_for(Source(bucket, key, head["ETag"].strip('"'), head.get("VersionId")))


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"])


class ReconcilerSchedule:
    """The stack's EventBridge rule, in this process: the writer handler invoked with
    RECONCILE_EVENT every `every_s` (the pipeline's reconcile_every_s), as AWS invokes it.
    A local run also runs it once when the rows queue has drained, before it gives up on
    the job: it cannot wait a minute for the next tick to settle what no writer finished."""

    def __init__(self, writer: Callable[[dict[str, Any], Any], Any], *, every_s: float,
                 timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.writer, self.every_s, self.timeout_s, self.clock = writer, every_s, timeout_s, clock
        self.last = clock()

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def run(self) -> None:
        """One run; a run that fails is a failed invocation, as in AWS (the next one comes)."""
        self.last = self.clock()
        try:
            self.writer(dict(RECONCILE_EVENT), LocalContext("fanout-writer", self.timeout_s))
        except Exception:
            log.warning("the reconciler's run failed; the next one retries", exc_info=True)


def wait_for_job(clients: Clients, stack: LocalStack, job: str, options: IngestOptions,
                 writers: EventSourceMapping, splitters: EventSourceMapping,
                 counter: RowCounter | None = None,
                 reconciler: ReconcilerSchedule | None = None) -> None:
    """Until the job completes or fails, or everything left of it is in the DLQ (and the
    reconciler, run then, did not end it either)."""
    deadline = time.monotonic() + options.max_wait_s
    ledger_table = stack.settings.ledger_table_name
    progress = IngestProgress(options.progress, options.file.name, counter or RowCounter(None))
    drained_since: float | None = None
    while time.monotonic() < deadline:
        if reconciler is not None and reconciler.due():
            reconciler.run()
        item = ledger.get_job(clients.dynamodb, ledger_table, job)
        status = item.get("status") if item else None
        progress.show(item)
        if status in ledger.ENDED:
            break
        if splitters.stats.dropped:
            progress.done()
            raise PipelineError(f"the splitter failed {splitters.stats.errors} time(s) and gave up: "
                                f"{splitters.stats.last_error}")
        if (status == ledger.RUNNING and writers.idle_for() > 0.5
                and queue_depth(clients.sqs, stack.settings.rows_queue_url) == 0):
            # Nothing left to deliver: what is not reported is in the DLQ. Confirm twice,
            # since queue counters are approximate; meanwhile the reconciler settles what
            # a writer may have left unsettled (the job then completes after all).
            if drained_since is None and reconciler is not None:
                reconciler.run()
            drained_since = drained_since or time.monotonic()
            if time.monotonic() - drained_since > 1.0:
                break
        else:
            drained_since = None
        time.sleep(0.1)
    else:
        progress.done()
        raise PipelineError(f"job {job} did not finish within {options.max_wait_s:.0f} s")
    progress.done()


class RowCounter:
    """Rows the splitter has sent and the writer has finished, counted in this process from
    the messages themselves (the ledger's per-message counts are a query that grows with
    the job), with how far through the file's text the sends have come."""

    def __init__(self, text_bytes: int | None) -> None:
        self.text_bytes = text_bytes
        self.read = self.written = self.sent_chars = 0
        self._lock = threading.Lock()

    def sending(self, sqs: Any, rows_queue_url: str) -> Any:
        """`sqs`, counting what is sent to the rows queue."""
        return _CountingSqs(sqs, rows_queue_url, self)

    def writing(self, writer: Callable[[dict[str, Any], Any], Any]) -> Callable[..., Any]:
        """The writer handler, counting the rows of the messages it did not fail."""
        def invoke(event: dict[str, Any], context: Any) -> Any:
            response = writer(event, context)
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
            rows = sum(_rows_in(r["body"]) for r in event["Records"] if r["messageId"] not in failed)
            with self._lock:
                self.written += rows
            return response
        return invoke

    def sent(self, bodies: list[str]) -> None:
        rows = chars = 0
        for body in bodies:
            message = json.loads(body)
            rows += len(message.get("lines", ()))
            chars += len(message.get("csv", ""))
        with self._lock:
            self.read += rows
            self.sent_chars += chars

    def fraction(self, split_done: bool) -> float | None:
        """How much of the file is written: the share split times the share of it written."""
        if split_done:
            share_split = 1.0
        elif self.text_bytes:
            share_split = min(self.sent_chars / self.text_bytes, 0.99)
        else:
            return None
        return share_split * (self.written / self.read) if self.read else 0.0


class _CountingSqs:
    def __init__(self, sqs: Any, queue_url: str, counter: RowCounter) -> None:
        self._sqs, self._queue_url, self._counter = sqs, queue_url, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, **params: Any) -> Any:
        response = self._sqs.send_message_batch(**params)
        if params.get("QueueUrl") == self._queue_url:
            failed = {f["Id"] for f in response.get("Failed") or []}
            self._counter.sent([e["MessageBody"] for e in params.get("Entries", [])
                                if e["Id"] not in failed])
        return response


def _rows_in(body: str) -> int:
    try:
        return len(json.loads(body).get("lines", ()))
    except (ValueError, AttributeError):
        return 0


def text_bytes_estimate(path: Path, found: dialect.Dialect) -> int | None:
    """About how many characters of text the file holds, for the ETA: its size, gzip's
    recorded size (modulo 4 GiB, so only when that is plausible), half a UTF-16 file."""
    size = path.stat().st_size
    if found.gzip:
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            recorded = int.from_bytes(f.read(4), "little")
        size = recorded if recorded >= size else 0
    if found.encoding == "utf-16":
        size //= 2
    return size or None


class IngestProgress:
    """The job's progress through the one display (fanout_cli/progress.py): rows read and
    written, rows/s and an ETA from the file's size."""

    def __init__(self, stream: TextIO | None, name: str, counter: RowCounter) -> None:
        self.display = ProgressDisplay(stream, label=name)
        self.counter = counter

    def show(self, job: dict[str, Any] | None) -> None:
        split_done = bool(job and "messages_total" in job)
        counter = self.counter
        self.display.update(counter.written, fraction=counter.fraction(split_done),
                            read=counter.read, written=counter.written)

    def done(self) -> None:
        self.display.close()


def dlq_rows(sqs: Any, dlq_url: str) -> list[Any]:
    """Every message in the DLQ, read without consuming it (made visible again after)."""
    seen: dict[str, tuple[str, str]] = {}
    for _ in range(10_000):
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=60).get("Messages", [])
        if not messages:
            break
        for m in messages:
            seen[m["MessageId"]] = (m["Body"], m["ReceiptHandle"])
    out = []
    for body, receipt in seen.values():
        sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=receipt, VisibilityTimeout=0)
        try:
            out.append(decode(body))
        except ContractError:
            continue
    return out


def write_outputs(clients: Clients, stack: LocalStack, job: str, options: IngestOptions,
                  elapsed_s: float, *, source_format: str = "") -> dict[str, Any]:
    """summary.json, items.jsonl and rejected.jsonl in the output folder."""
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    settings = stack.settings
    item = ledger.get_job(clients.dynamodb, settings.ledger_table_name, job) or {}
    if item.get("status") == ledger.RUNNING:  # incomplete: fold what was reported, to count it
        ledger.fold(clients.dynamodb, settings.ledger_table_name, job, owner="ingest")
        item = ledger.get_job(clients.dynamodb, settings.ledger_table_name, job) or {}
    total = ledger.counts_of(item)

    rejected: list[dict[str, Any]] = []
    errors_prefix = f"{settings.errors_prefix}{job}/"
    paginator = clients.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=errors_prefix):
        for obj in page.get("Contents", []):
            body = clients.s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
            rejected.extend(json.loads(line) for line in body.decode().splitlines() if line)
    stranded_rows = 0
    for message in dlq_rows(clients.sqs, settings.dlq_url):
        if message.job != job or message.kind != KIND_ROWS or ledger.message_counted(
                clients.dynamodb, settings.ledger_table_name, job, message.message_id,
                message.indexes):
            continue
        for line, row in zip(message.lines, message.rows, strict=True):
            stranded_rows += 1
            rejected.append({"job": job, "source": message.source.uri, "line": line, "row": row,
                             "reason": "retries_exhausted",
                             "detail": "message failed maxReceiveCount times; it waits in the DLQ"})
    rejected.sort(key=lambda r: r.get("line", 0))

    items_written = 0
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        for dynamo_item in table_items(clients, settings.table_name, options.emulator):
            f.write(json.dumps({"Item": dynamo_item}, ensure_ascii=False, default=b64_default) + "\n")
            items_written += 1
    with open(out / "rejected.jsonl", "w", encoding="utf-8") as f:
        for r in rejected:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    status = item.get("status", "UNKNOWN")
    if status == ledger.RUNNING:
        status = "INCOMPLETE"
    summary = {
        "job_id": job,
        "source": item.get("source"),
        "table": settings.table_name,
        "source_format": source_format,  # how the file was read: gzip? encoding, delimiter
        # The header fields given a name (none, a repeated one): mapping.name_columns.
        "columns_named": options.spec.header_notes(item.get("header") or []),
        "status": status,
        "mode": options.spec.mode,
        "rows_read": item.get("rows_read", 0),
        "rows_padded": item.get("rows_padded", 0),  # of rows_read: short rows, padded
        **ledger.job_counts(replace(total, rejected=total.rejected + stranded_rows)),
        "rows_in_dlq_unreported": stranded_rows,
        "messages_sent": item.get("messages_total", 0),
        "split_invocations": item.get("split_resumes", 0) + 1,
        "parallel_ranges": item.get("parallel_ranges", 0),
        "items_in_table": items_written,
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": round(item.get("rows_read", 0) / elapsed_s, 2) if elapsed_s else None,
        "error": item.get("error"),
        "error_data_location": item.get("error_location"),
        "out_dir": str(out),
    }
    # What the deployed stack publishes to SNS on completion (the seed design's fields).
    summary["completion"] = ledger.completion_summary(
        item | {name: summary[name] for name in ledger.job_counts(total)} | {"status": status})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table_items(clients: Clients, table: str, emulator: str) -> Iterator[dict[str, Any]]:
    """Every item in the table, in DynamoDB JSON.

    On the in-process emulator the items are read from moto's table directly: moto's
    Scan serialises its response through a generic model walker at about 1,000 items/s,
    which would make the export slower than the load. Over a moto server, Scan it is.
    """
    if emulator == "inprocess":
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][clients.dynamodb.meta.region_name]
        for item in backend.get_table(table).all_items():
            yield item.to_json(root_attr_name="Item")["Item"]
        return
    for page in clients.dynamodb.get_paginator("scan").paginate(TableName=table):
        yield from page.get("Items", [])




def outcome_lines(counts: dict[str, Any], mode: str | None) -> list[str]:
    """`  written    N` and so on, for the outcomes a job of `mode` shows (a put job's
    three as ever; see `ledger.outcomes_shown`)."""
    values = {name: int(counts.get(f"rows_{name}") or 0) for name in ledger.OUTCOMES}
    return [f"  {name.replace('_', ' '):<10} {values[name]:,}"
            for name in ledger.outcomes_shown(mode, values)]


def print_summary(summary: dict[str, Any], stream: TextIO | None = None) -> None:
    lines = [
        f"job        {summary['job_id']}",
        f"source     {summary['source']}",
        f"table      {summary['table']}",
        *([f"read as    {read_as(summary['source_format'], summary.get('columns_named') or [])}"]
          if summary.get("source_format") else []),
        f"status     {summary['status']}",
        *([f"mode       {summary['mode']}"] if summary.get("mode", "put") != "put" else []),
        f"rows read  {summary['rows_read']:,}"
        + (f" ({summary['rows_padded']:,} padded: fewer fields than the header)"
           if summary.get("rows_padded") else ""),
        *outcome_lines(summary, summary.get("mode")),
        f"messages   {summary['messages_sent']:,}",
        *([f"target     {describe_target(summary['target'])}"] if summary.get("target") else []),
        f"elapsed    {summary['elapsed_s']:.2f} s "
        f"({format_rate(summary['rows_read'], summary['elapsed_s'], 'rows')})",
    ]
    if summary.get("error"):
        lines.append(f"error      {summary['error']}")
    if summary.get("out_dir"):
        lines.append(f"outputs    {summary['out_dir']}/(summary.json, items.jsonl, rejected.jsonl)")
    (stream or sys.stdout).write("\n".join(lines) + "\n")
