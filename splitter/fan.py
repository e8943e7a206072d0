"""Splitting one large file in parallel byte ranges (see `splitter/parallel.py` for the
algorithm and its proof by property test).

Three kinds of invocation, chained by the splitter's asynchronous self-invoke (locally:
its trigger), all idempotent so Lambda's retries and duplicate deliveries are harmless:

1. the planner (the S3 event's invocation): checks the header, cuts the object into N
   ranges, records the plan in the job item and starts N scans;
2. a scan: counts quote bytes and newlines in its range (C speed, no parsing) and checks
   that it decodes, stores the counts (and where a bad byte is), and adds its index to
   the job's `scans_done` set; whichever scan completes the set fails the job at the
   first bad byte in file order, with its line, or combines the counts into each range's
   start state and starts N checks;
3. a check: runs csv.reader (strict, C speed) over the records its range owns, where
   they hold a quote, stores what it found, and adds its index to `checks_done`;
   whichever check completes the set fails the job with the first error in file order,
   or starts N range splits. So a bad byte or a broken quote anywhere fails the job
   before any range has sent a message;
4. a range split: sends the records that START in its range, as 25-row messages whose
   sequence numbers live in the range's own namespace (`index * RANGE_SEQ_SPAN + n`),
   stores its counts, and adds its index to `ranges_done`; whichever completes that set
   sums the counts and finishes the split (a conditional update: once).

A step whose index has already reported (a duplicate delivery, a retry after it
reported, a re-plan) does not do its work again, and each stage fans out to the next
once: the job item is marked when it has (see `_run_step`). A step that crashed before
reporting is retried whole and produces the same messages, which the ledger
deduplicates, so no lease is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from botocore.exceptions import ClientError

from fanout import ledger
from fanout.runtime import Runtime, settle_job
from splitter.batch import Batcher
from splitter.chunker import CsvDecodeError, Region
from splitter.enqueue import Enqueuer
from splitter.parallel import RangeStats, StartState, iter_owned_regions, plan_ranges, scan_range
from splitter.range_reader import ObjectInfo, iter_ranges
from splitter.source import DecodeError, decodable, source_format

SCAN_KEY = "fanout_scan"
CHECK_KEY = "fanout_check"
RANGE_KEY = "fanout_range"
RANGE_SEQ_SPAN = 1_000_000_000  # messages one range may send; its seqs are index * span + n
MAX_RANGES = 200

def _s(value: str) -> dict[str, str]:
    return {"S": value}


def plan(runtime: Runtime, info: ObjectInfo, job: str, header: list[str], header_line: int,
         continue_split: Callable[[dict[str, Any]], None]) -> int:
    """Record the plan and start one scan per range; return the number of ranges."""
    settings = runtime.settings
    parts = min(MAX_RANGES, -(-info.size // settings.parallel_range_bytes))
    ranges = plan_ranges(info.size, parts, settings.range_bytes)
    runtime.clients.dynamodb.update_item(
        TableName=settings.ledger_table_name,
        Key={"pk": _s(job), "sk": _s(ledger.JOB_SK)},
        UpdateExpression="SET parallel_ranges = :n, #h = :h, header_line = :l",
        ExpressionAttributeNames={"#h": "header"},
        ExpressionAttributeValues={":n": {"N": str(len(ranges))},
                                   ":h": {"L": [_s(h) for h in header]},
                                   ":l": {"N": str(header_line)}},
    )
    for index, (start, end) in enumerate(ranges):
        # Each step reads the object as the planner decided (and passes it on in its task).
        continue_split({SCAN_KEY: {**_object(info, job), "index": index, "start": start,
                                   "end": end, "parts": len(ranges),
                                   "source_format": source_format(runtime)}})
    return len(ranges)


def _object(info: ObjectInfo, job: str) -> dict[str, Any]:
    return {"bucket": info.source.bucket, "key": info.source.key,
            "version": info.source.version, "job": job}


def scan(runtime: Runtime, info: ObjectInfo, task: dict[str, Any],
         continue_split: Callable[[dict[str, Any]], None]) -> None:
    """Count one range; the scan that completes the set starts the checks."""
    settings = runtime.settings

    def work(_job_item: dict[str, Any]) -> dict[str, Any]:
        # The scan also checks that the range decodes. A bad byte is reported, with the
        # newlines before it in the range; the scan completing the set turns that into a
        # line (the ranges before it counted theirs) and fails the job, first in file order.
        def chunks(end: int) -> Iterator[bytes]:
            return iter_ranges(runtime.clients.s3, info, settings.range_bytes, task["start"], end)

        result = {"task": _s(json.dumps(task))}
        try:
            stats = scan_range(decodable(chunks(task["end"]), runtime.spec.encoding,
                                         start_offset=task["start"], start_line=None,
                                         mid_range=task["start"] > 0,
                                         final=task["end"] >= info.size))
        except DecodeError as exc:
            stats = scan_range(chunks(task["end"]))
            before = scan_range(chunks(exc.offset)).newlines
            result["error"] = _s(json.dumps({"newlines": before, "offset": exc.offset,
                                             "encoding": exc.encoding, "reason": exc.reason}))
        return {**result, "stats": _s(json.dumps(asdict(stats)))}

    def fan_out(_job_item: dict[str, Any]) -> None:
        scans = _query(runtime, task["job"], "scan#")
        counted = [RangeStats(**json.loads(item["stats"]["S"])) for item in scans]
        newlines = 0
        for item, stats in zip(scans, counted, strict=True):
            if "error" in item:
                bad = json.loads(item["error"]["S"])
                raise DecodeError(newlines + bad["newlines"] + 1, bad["offset"], bad["encoding"],
                                  bad["reason"])
            newlines += stats.newlines
        tasks = [json.loads(item["task"]["S"]) for item in scans]
        for range_task, state in zip(tasks, _start_states(counted, tasks), strict=True):
            continue_split({CHECK_KEY: {**range_task, "state": asdict(state)}})

    _run_step(runtime, "scan", task, work, fan_out)


def check(runtime: Runtime, info: ObjectInfo, task: dict[str, Any],
          continue_split: Callable[[dict[str, Any]], None]) -> None:
    """Check the quoting of the records one range owns. The check completing the set
    fails the job with the first error in file order, if any range found one, and
    otherwise starts the range splits."""
    from splitter.split import InputError

    def work(_job_item: dict[str, Any]) -> dict[str, Any]:
        result = {"task": _s(json.dumps(task))}
        try:
            for region in _owned_regions(runtime, info, task):
                region.check()
        except CsvDecodeError as exc:
            # Reported, not raised: a later range can only fail because of what an earlier
            # one holds (a stray quote inverts the parity after it), so the earliest wins.
            result["error"] = _s(str(exc))
        return result

    def fan_out(_job_item: dict[str, Any]) -> None:
        checked = _query(runtime, task["job"], "check#")
        errors = [item["error"]["S"] for item in checked if "error" in item]
        if errors:
            raise InputError(errors[0])
        for item in checked:
            continue_split({RANGE_KEY: json.loads(item["task"]["S"])})

    _run_step(runtime, "check", task, work, fan_out)


def _owned_regions(runtime: Runtime, info: ObjectInfo, task: dict[str, Any]) -> Iterator[Region]:
    """The regions of the records that start in the task's range."""
    chunks = iter_ranges(runtime.clients.s3, info, runtime.settings.range_bytes, task["start"])
    return iter_owned_regions(chunks, StartState(**task["state"]), task["end"],
                              encoding=runtime.spec.encoding, delimiter=runtime.spec.delimiter)


def _start_states(stats: list[RangeStats], tasks: list[dict[str, Any]]) -> list[StartState]:
    from splitter.parallel import start_states

    states = start_states(stats)
    assert [s.offset for s in states] == [t["start"] for t in tasks], "ranges out of order"
    return states


def split_range(runtime: Runtime, info: ObjectInfo, task: dict[str, Any]) -> None:
    """Send the records that start in one range; the range that completes the set
    finishes the split."""
    from splitter.split import InputError

    settings, ddb, spec = runtime.settings, runtime.clients.dynamodb, runtime.spec
    job, index = task["job"], int(task["index"])

    def header_of(job_item: dict[str, Any]) -> list[str]:
        return [h.get("S") for h in job_item.get("header", {}).get("L", [])]

    def work(job_item: dict[str, Any]) -> dict[str, Any]:
        enqueuer = Enqueuer(runtime.clients.sqs, settings.rows_queue_url)
        batcher = Batcher(enqueuer, job, info.source, header_of(job_item), spec.delimiter,
                          index * RANGE_SEQ_SPAN)
        skip_header = index == 0
        try:
            for region in _owned_regions(runtime, info, task):
                lines, records = region.data_records()
                if skip_header and records:
                    skip_header = False
                    lines, records = lines[1:], records[1:]
                batcher.add(lines, records)
            batcher.flush()
        except CsvDecodeError as exc:
            raise InputError(str(exc)) from exc
        finally:
            enqueuer.close()
        return {"rows": {"N": str(batcher.rows)}, "messages": {"N": str(batcher.messages)}}

    def fan_out(job_item: dict[str, Any]) -> None:
        counted = _query(runtime, job, "range#")
        total_rows = sum(int(r["rows"]["N"]) for r in counted)
        total_messages = sum(int(r["messages"]["N"]) for r in counted)
        if total_rows == 0:
            line = job_item.get("header_line", {}).get("N", "1")
            raise InputError(f"line {line}: the file has a header but no data rows")
        try:
            job_done = ledger.finish_split(
                ddb, settings.ledger_table_name, job, rows_read=total_rows,
                messages_total=total_messages, header=header_of(job_item),
                error_location=f"s3://{info.source.bucket}/{settings.errors_prefix}{job}/",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # Finished already, by this step's earlier try or a duplicate, which may have
            # failed before it settled (a crash, an SNS publish that failed): settle now,
            # as the sequential split does for a duplicate event (both are idempotent).
            job_done = ledger.raw_job(ddb, settings.ledger_table_name, job)
        settle_job(runtime, job_done)

    _run_step(runtime, "range", task, work, fan_out)


Work = Callable[[dict[str, Any]], dict[str, Any]]


def _run_step(runtime: Runtime, kind: str, task: dict[str, Any], work: Work,
              fan_out: Callable[[dict[str, Any]], None]) -> None:
    """One step of a stage: do its `work` and report it, unless its index has reported
    already (a duplicate delivery or a re-plan: the work is not done twice); then, if the
    stage's set is complete, `fan_out` to the next stage, once.

    Every invocation that sees the set complete could fan out, and one duplicate
    would then multiply the next stage (N checks for each scan, N range splits for each
    check). So the job item is marked `<kind>s_fanned` after a fan-out, and invocations
    that see the mark stop. A crash between the fan-out and the mark makes the retry fan
    out again; the next stage's duplicates then stop at their own done-sets.
    """
    ddb, table = runtime.clients.dynamodb, runtime.settings.ledger_table_name
    job, index, parts = task["job"], int(task["index"]), int(task["parts"])
    job_item = ledger.raw_job(ddb, table, job)
    if job_item.get("status", {}).get("S") == ledger.FAILED:
        return
    done = job_item.get(f"{kind}s_done", {}).get("NS", [])
    if str(index) not in done:
        job_item = _report(runtime, job, kind, index, work(job_item))
        done = job_item[f"{kind}s_done"]["NS"]
    if len(done) < parts or f"{kind}s_fanned" in job_item:
        return
    fan_out(job_item)
    ddb.update_item(TableName=table, Key={"pk": _s(job), "sk": _s(ledger.JOB_SK)},
                    UpdateExpression=f"SET {kind}s_fanned = :t",
                    ExpressionAttributeValues={":t": {"BOOL": True}})


def _report(runtime: Runtime, job: str, kind: str, index: int,
            result: dict[str, Any]) -> dict[str, Any]:
    """Store one step's result and add its index to the job's `<kind>s_done` set (both
    idempotent); return the job item as it is now."""
    ddb, table = runtime.clients.dynamodb, runtime.settings.ledger_table_name
    ddb.put_item(TableName=table,
                 Item={"pk": _s(job), "sk": _s(f"{kind}#{index:05d}"), **result})
    attributes: dict[str, Any] = ddb.update_item(
        TableName=table,
        Key={"pk": _s(job), "sk": _s(ledger.JOB_SK)},
        UpdateExpression=f"ADD {kind}s_done :i",
        ExpressionAttributeValues={":i": {"NS": [str(index)]}},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    return attributes


def _query(runtime: Runtime, job: str, prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    paginator = runtime.clients.dynamodb.get_paginator("query")
    for page in paginator.paginate(
        TableName=runtime.settings.ledger_table_name,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": _s(job), ":p": _s(prefix)}, ConsistentRead=True,
    ):
        items.extend(page.get("Items", []))
    return sorted(items, key=lambda item: item["sk"]["S"])
