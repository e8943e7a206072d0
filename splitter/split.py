"""The splitter's logic: S3 object -> 25-row messages on the rows queue."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from fanout import ledger
from fanout.contract import RowsMessage, Source, job_id_for, split_to_fit
from fanout.keys import TemplateError
from fanout.runtime import Runtime, publish_summary
from fanout.settings import ROWS_PER_MESSAGE
from splitter.chunker import CsvDecodeError, iter_regions
from splitter.enqueue import Enqueuer
from splitter.range_reader import head, iter_ranges

log = logging.getLogger(__name__)


class InputError(ValueError):
    """Bad input: the job ends with this message (file, line, reason) in the ledger."""


@dataclass(frozen=True)
class SplitResult:
    job: str
    status: str  # "split", "skipped" or "failed"
    source: str
    rows_read: int = 0
    messages_sent: int = 0
    error: str = ""


def objects_in_event(event: dict[str, Any], runtime: Runtime) -> Iterator[tuple[str, str, str | None]]:
    """(bucket, key, version) for each ObjectCreated record, keys URL-decoded; the test
    event S3 sends when a notification is configured, and the pipeline's own outputs,
    are ignored."""
    if event.get("Event") == "s3:TestEvent":
        return
    own_prefixes = (runtime.settings.errors_prefix, runtime.settings.json_copy_prefix)
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        key = unquote_plus(s3["object"]["key"])
        if key.startswith(own_prefixes):
            log.info("ignoring the pipeline's own output %s", key)
            continue
        yield s3["bucket"]["name"], key, s3["object"].get("versionId")


def split_event(event: dict[str, Any], runtime: Runtime, owner: str | None = None,
                lease_s: float = ledger.SPLIT_LEASE_S) -> list[SplitResult]:
    """Split every object the event names."""
    return [
        split_object(runtime, bucket, key, version, owner=owner or str(uuid.uuid4()), lease_s=lease_s)
        for bucket, key, version in objects_in_event(event, runtime)
    ]


def split_object(
    runtime: Runtime, bucket: str, key: str, version: str | None = None, *, owner: str = "local",
    lease_s: float = ledger.SPLIT_LEASE_S,
) -> SplitResult:
    clients, settings = runtime.clients, runtime.settings
    info = head(clients.s3, bucket, key, version)
    job = job_id_for(info.source)
    claim = ledger.start_job(
        clients.dynamodb, settings.ledger_table_name, job,
        source_uri=info.source.uri, table=settings.table_name, owner=owner, lease_s=lease_s,
    )
    if claim == "skip":
        log.info("job %s is already split or being split; duplicate event ignored", job)
        return SplitResult(job, "skipped", info.source.uri)
    try:
        rows_read, messages, header = _enqueue_rows(runtime, info, job)
    except InputError as exc:
        error = f"{info.source.uri}: {exc}"
        ledger.fail_job(clients.dynamodb, settings.ledger_table_name, job, error=error)
        publish_summary(clients.sns, settings.topic_arn, {
            "JOB_ID": job, "STATUS": ledger.FAILED, "SOURCE": info.source.uri, "ERROR": error,
            "DESTINATION_TABLE_NAME": settings.table_name,
        })
        return SplitResult(job, "failed", info.source.uri, error=error)
    except BaseException:
        # Anything else is a fault of ours or of AWS: let Lambda retry, and let the retry in.
        ledger.release_split(clients.dynamodb, settings.ledger_table_name, job, owner)
        raise
    job_item = ledger.finish_split(
        clients.dynamodb, settings.ledger_table_name, job, rows_read=rows_read,
        messages_total=messages, header=header,
        error_location=f"s3://{bucket}/{settings.errors_prefix}{job}/",
    )
    if ledger.may_be_complete(job_item):
        summary = ledger.try_finalize(clients.dynamodb, settings.ledger_table_name, job_item)
        if summary:
            publish_summary(clients.sns, settings.topic_arn, summary)
    return SplitResult(job, "split", info.source.uri, rows_read, messages)


def _enqueue_rows(runtime: Runtime, info: Any, job: str) -> tuple[int, int, list[str]]:
    """Read, chunk and send. Returns (data rows, messages sent, header)."""
    settings, source = runtime.settings, info.source
    if info.size == 0:
        raise InputError("the file is empty (0 bytes): expected a header line")
    chunks = iter_ranges(runtime.clients.s3, info, settings.range_bytes)
    records = _records(chunks)
    header: list[str] | None = None
    for line, fields in records:
        if fields:
            header = fields
            header_line = line
            break
    if header is None:
        raise InputError("the file has no header line (only blank lines)")
    try:
        runtime.spec.bind(header)
    except TemplateError as exc:
        raise InputError(f"line {header_line}: {exc}") from exc

    enqueuer = Enqueuer(runtime.clients.sqs, settings.rows_queue_url)
    rows_read = 0
    messages = 0
    seq = 0
    lines: list[int] = []
    rows: list[list[str]] = []
    try:
        for line, fields in records:
            if not fields:
                continue  # a blank line is not a data row
            lines.append(line)
            rows.append(fields)
            rows_read += 1
            if len(rows) == ROWS_PER_MESSAGE:
                messages += _send(enqueuer, job, seq, source, header, lines, rows)
                seq += 1
                lines, rows = [], []
        if rows:
            messages += _send(enqueuer, job, seq, source, header, lines, rows)
    finally:
        enqueuer.close()
    if rows_read == 0:
        raise InputError(f"line {header_line}: the file has a header but no data rows")
    return rows_read, messages, header


def _records(chunks: Iterator[bytes]) -> Iterator[tuple[int, list[str]]]:
    try:
        for region in iter_regions(chunks):
            yield from region.records()
    except CsvDecodeError as exc:
        raise InputError(str(exc)) from exc


def _send(enqueuer: Enqueuer, job: str, seq: int, source: Source, header: list[str],
          lines: list[int], rows: list[list[str]]) -> int:
    parts = split_to_fit(RowsMessage(job, seq, source, header, lines, rows))
    for part in parts:
        enqueuer.send(part.encode())
    return len(parts)
