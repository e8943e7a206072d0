"""Splitting one large file in parallel byte ranges (see `splitter/parallel.py` for the
algorithm and its proof by property test).

Three kinds of invocation, chained by the splitter's asynchronous self-invoke (locally:
its trigger), all idempotent so Lambda's retries and duplicate deliveries are harmless:

1. the planner (the S3 event's invocation): checks the header, cuts the object into N
   ranges, records the plan in the job item and starts N scans;
2. a scan: cuts its range's lines as csv.reader (strict) would, from both possible
   states at its first line (outside or inside a quoted field), which checks every byte
   and record in it; stores what it found and adds its index to the job's `scans_done`
   set. Whichever scan completes the set composes the results from offset 0: it fails
   the job with the first error in file order, with its line, or gives each range the
   exact bytes of the records it owns and starts N range splits. So a bad byte or
   broken quoting anywhere fails the job before any range has sent a message;
3. a range split: sends the records that START in its range, as 25-row messages whose
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

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from fanout import ledger
from fanout.runtime import Runtime, settle_job
from splitter.batch import Batcher
from splitter.chunker import CsvDecodeError, Region
from splitter.enqueue import Enqueuer
from splitter.errors import InputError
from splitter.parallel import Guess, Owned, RangeScan, compose, iter_owned_regions, plan_ranges, scan_range
from splitter.range_reader import ObjectInfo, iter_ranges
from splitter.source import source_format

SCAN_KEY = "fanout_scan"
CHECK_KEY = "fanout_check"  # a stage of fanout versions before scans cut as csv.reader does
# What a scan stores; a split planned by an earlier version (which scanned differently)
# fails with EARLIER_VERSION rather than composing results it cannot read.
SCAN_FORMAT = 2
EARLIER_VERSION = ("this split was started by an earlier fanout version, which cut records "
                   "differently, so it cannot be finished exactly; upload the file again under "
                   "a new key to load it")
RANGE_KEY = "fanout_range"
RANGE_SEQ_SPAN = 1_000_000_000  # messages one range may send; its seqs are index * span + n
MAX_RANGES = 200

def plan(runtime: Runtime, info: ObjectInfo, job: str, header: list[str], header_line: int,
         continue_split: Callable[[dict[str, Any]], None]) -> int:
    """Record the plan and start one scan per range; return the number of ranges."""
    settings = runtime.settings
    parts = min(MAX_RANGES, -(-info.size // settings.parallel_range_bytes))
    ranges = plan_ranges(info.size, parts, settings.range_bytes)
    ledger.record_plan(runtime.clients.dynamodb, settings.ledger_table_name, job,
                       ranges=len(ranges), header=header, header_line=header_line)
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
    """Scan one range; the scan that completes the set composes the results and starts
    the range splits, or fails the job with the first error in file order."""
    settings, spec = runtime.settings, runtime.spec

    def work(_job_item: dict[str, Any]) -> dict[str, Any]:
        start, end = task["start"], task["end"]
        chunks = iter_ranges(runtime.clients.s3, info, settings.range_bytes, max(start - 1, 0))
        scanned = scan_range(chunks, start, end, encoding=spec.encoding, delimiter=spec.delimiter)
        return {"task": task, "scan": {"format": SCAN_FORMAT, **asdict(scanned)}}

    def fan_out(_job_item: dict[str, Any]) -> None:
        results = ledger.step_results(runtime.clients.dynamodb,
                                      runtime.settings.ledger_table_name, task["job"], "scan")
        if any(r is None or r["scan"].pop("format", None) != SCAN_FORMAT for r in results):
            raise InputError(EARLIER_VERSION)
        scans = [r["scan"] for r in results if r is not None]
        tasks = [r["task"] for r in results if r is not None]
        assert [t["start"] for t in tasks] == [found["start"] for found in scans], "out of order"
        try:
            owned = compose([_range_scan(found) for found in scans], info.size)
        except CsvDecodeError as exc:
            raise InputError(str(exc)) from exc
        for range_task, part in zip(tasks, owned, strict=True):
            continue_split({RANGE_KEY: {**range_task, "owned": part and asdict(part)}})

    _run_step(runtime, "scan", task, work, fan_out)


def _range_scan(found: dict[str, Any]) -> RangeScan:
    return RangeScan(**{**found, "outside": Guess(**found["outside"]),
                        "inside": Guess(**found["inside"])})


def check(runtime: Runtime, info: ObjectInfo, task: dict[str, Any],
          continue_split: Callable[[dict[str, Any]], None]) -> None:
    """A check step, which only earlier versions plan: the split cannot be finished."""
    raise InputError(EARLIER_VERSION)


def _owned_regions(runtime: Runtime, info: ObjectInfo,
                   owned: dict[str, int] | None) -> Iterator[Region]:
    """The regions of the records one range owns (none if it owns none)."""
    if owned is None:
        return iter(())
    part = Owned(**owned)
    chunks = iter_ranges(runtime.clients.s3, info, runtime.settings.range_bytes, part.start,
                         part.end)
    return iter_owned_regions(chunks, part, encoding=runtime.spec.encoding,
                              delimiter=runtime.spec.delimiter)


def split_range(runtime: Runtime, info: ObjectInfo, task: dict[str, Any]) -> None:
    """Send the records that start in one range; the range that completes the set
    finishes the split."""
    settings, ddb, spec = runtime.settings, runtime.clients.dynamodb, runtime.spec
    job, index = task["job"], int(task["index"])

    def work(job_item: dict[str, Any]) -> dict[str, Any]:
        if "owned" not in task:
            raise InputError(EARLIER_VERSION)
        if ledger.status_of(job_item) == ledger.CANCELLING:
            return {"rows": 0, "messages": 0}  # cancelled before this range: it sends nothing
        enqueuer = Enqueuer(runtime.clients.sqs, settings.rows_queue_url)
        batcher = Batcher(enqueuer, job, info.source, ledger.plan_header(job_item)[0],
                          spec.delimiter, index * RANGE_SEQ_SPAN,
                          ledger.job_mode(job_item),  # the job's, not a later spec's
                          count_short=spec.short_rows == "pad")
        skip_header = index == 0
        try:
            for region in _owned_regions(runtime, info, task["owned"]):
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
        return {"rows": batcher.rows, "messages": batcher.messages, "padded": batcher.padded}

    def fan_out(job_item: dict[str, Any]) -> None:
        counted = ledger.step_results(ddb, settings.ledger_table_name, job, "range")
        if any(r is None for r in counted):
            raise InputError(EARLIER_VERSION)
        total_rows = sum(r["rows"] for r in counted if r is not None)
        total_messages = sum(r["messages"] for r in counted if r is not None)
        total_padded = sum(r.get("padded", 0) for r in counted if r is not None)
        header, header_line = ledger.plan_header(job_item)
        if total_rows == 0 and ledger.status_of(job_item) != ledger.CANCELLING:
            raise InputError(f"line {header_line}: the file has a header but no data rows")
        try:
            job_done = ledger.finish_split(
                ddb, settings.ledger_table_name, job, rows_read=total_rows,
                rows_padded=total_padded, messages_total=total_messages, header=header,
                error_location=f"s3://{settings.bucket or info.source.bucket}/"
                               f"{settings.errors_prefix}{job}/",
                clock=runtime.clock,
            )
        except ledger.SplitFinished:
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
    if ledger.status_of(job_item) == ledger.FAILED:
        return
    if index not in ledger.steps_done(job_item, kind):
        job_item = ledger.report_step(ddb, table, job, kind, index, work(job_item),
                                        clock=runtime.clock)
    if len(ledger.steps_done(job_item, kind)) < parts or ledger.stage_fanned(job_item, kind):
        return
    fan_out(job_item)
    ledger.mark_fanned(ddb, table, job, kind)
