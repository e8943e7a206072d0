"""The splitter's logic: S3 object -> 25-row messages on the rows queue."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from fanout import ledger
from fanout.contract import job_id_for, parse_csv_rows
from fanout.dialect import hint_one_column
from fanout.keys import TemplateError
from fanout.runtime import Runtime, publish_summary, settle_job
from fanout.telemetry import log_keys
from splitter import SERVICE, fan
from splitter.batch import Batcher, Sink
from splitter.chunker import CsvDecodeError, Region, iter_regions
from splitter.enqueue import Enqueuer
from splitter.errors import InputError
from splitter.range_reader import ObjectInfo, head
from splitter.source import (
    SourceError,
    is_gzip,
    open_source,
    parse_chunks,
    parse_encoding,
    with_delimiter_hint,
    with_hint,
    with_source_format,
)

log = Logger(service=SERVICE)


@dataclass(frozen=True)
class SplitResult:
    job: str
    status: str  # "split", "continued", "skipped" or "failed"
    source: str
    rows_read: int = 0
    messages_sent: int = 0
    error: str = ""


def objects_in_event(event: dict[str, Any], runtime: Runtime) -> Iterator[tuple[str, str, str | None]]:
    """(bucket, key, version) for each ObjectCreated record, keys URL-decoded; the test
    event S3 sends when a notification is configured, and the pipeline's own outputs (in
    its own bucket: another bucket's errors/ is data), are ignored."""
    if event.get("Event") == "s3:TestEvent":
        return
    own_prefixes = (runtime.settings.errors_prefix, runtime.settings.json_copy_prefix)
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        key = unquote_plus(s3["object"]["key"])
        own_bucket = s3["bucket"]["name"] == (runtime.settings.bucket or s3["bucket"]["name"])
        if own_bucket and key.startswith(own_prefixes):
            log.info("ignoring the pipeline's own output %s", key)
            continue
        yield s3["bucket"]["name"], key, s3["object"].get("versionId")


def split_event(event: dict[str, Any], runtime: Runtime, *, owner: str | None = None,
                lease_s: float = ledger.SPLIT_LEASE_S,
                remaining_s: Callable[[], float] | None = None,
                function_arn: str = "") -> list[SplitResult]:
    """Split every object the event names (S3 records, or a continuation), or run one
    step of a parallel split (a range scan or a range split, see splitter/fan.py)."""
    hand_over = runtime.continue_split or _self_invoke(runtime, function_arn)
    for kind in (fan.SCAN_KEY, fan.CHECK_KEY, fan.RANGE_KEY):
        if kind in event:
            return [_parallel_step(runtime, kind, event[kind], hand_over)]
    continuation = event.get(CONTINUE_KEY)
    objects = ([(continuation["bucket"], continuation["key"], continuation.get("version"))]
               if continuation else list(objects_in_event(event, runtime)))
    return [
        split_object(runtime, bucket, key, version, owner=owner or str(uuid.uuid4()),
                     lease_s=lease_s, remaining_s=remaining_s, continue_split=hand_over)
        for bucket, key, version in objects
    ]


CONTINUE_KEY = "fanout_continue"


def _parallel_step(runtime: Runtime, kind: str, task: dict[str, Any],
                   hand_over: Callable[[dict[str, Any]], None]) -> SplitResult:
    job = task["job"]
    with log_keys(log, job=job):
        return _run_parallel_step(runtime, kind, task, hand_over)


def _run_parallel_step(runtime: Runtime, kind: str, task: dict[str, Any],
                       hand_over: Callable[[dict[str, Any]], None]) -> SplitResult:
    info = head(runtime.clients.s3, task["bucket"], task["key"], task.get("version"))
    job = task["job"]
    try:
        if "source_format" in task:  # decided by the planner
            runtime = with_source_format(runtime, task["source_format"])
        else:
            runtime, info = open_source(runtime, info)
        if kind == fan.SCAN_KEY:
            fan.scan(runtime, info, task, hand_over)
        elif kind == fan.CHECK_KEY:
            fan.check(runtime, info, task, hand_over)
        else:
            fan.split_range(runtime, info, task)
    except (InputError, SourceError) as exc:
        return _fail(runtime, info, job, exc)
    return SplitResult(job, kind.removeprefix("fanout_"), info.source.uri)


def _self_invoke(runtime: Runtime, function_arn: str) -> Callable[[dict[str, Any]], None]:
    """Continue in a fresh invocation of this function (asynchronous, so Lambda retries it)."""
    def invoke(payload: dict[str, Any]) -> None:
        if not function_arn or runtime.clients.lambda_ is None:
            raise RuntimeError("cannot continue the split: no function to invoke")
        runtime.clients.lambda_.invoke(FunctionName=function_arn, InvocationType="Event",
                                       Payload=json.dumps(payload).encode())
    return invoke


# 3: records cut where csv.reader ends them (a quote inside an unquoted field loads).
CHECKPOINT_FORMAT = 3


@dataclass
class Checkpoint:
    """How far a split has come; saved in the ledger at deterministic offsets."""

    offset: int = 0  # parse offset of the next record
    line: int = 1  # its source line
    # The check before anything is sent (see _check_object): done, or how far it came.
    checked: bool = False
    check_offset: int = 0
    check_line: int = 1
    seq: int = 0  # the next message's sequence number
    rows_read: int = 0
    rows_padded: int = 0  # of rows_read, those with fewer fields than the header (padded)
    messages: int = 0
    header: list[str] | None = None
    header_line: int = 0
    # How records are cut (piece grid, message form): a resume must cut exactly as the
    # run that saved the checkpoint did, or a sequence number could name other rows.
    format: int = CHECKPOINT_FORMAT

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Checkpoint:
        data = json.loads(text)
        if data.get("format") != CHECKPOINT_FORMAT:
            raise InputError("this split was started by an earlier fanout version, which cut "
                             "records differently, so it cannot be resumed exactly; upload the "
                             "file again under a new key to load it")
        return cls(**data)


def split_object(
    runtime: Runtime, bucket: str, key: str, version: str | None = None, *, owner: str = "local",
    lease_s: float = ledger.SPLIT_LEASE_S, remaining_s: Callable[[], float] | None = None,
    continue_split: Callable[[dict[str, Any]], None] | None = None,
) -> SplitResult:
    info = head(runtime.clients.s3, bucket, key, version)
    job = job_id_for(info.source)
    with log_keys(log, job=job):  # every line the split logs carries the job id
        return _split_job(runtime, info, job, owner=owner, lease_s=lease_s,
                          remaining_s=remaining_s, continue_split=continue_split)


def _split_job(
    runtime: Runtime, info: ObjectInfo, job: str, *, owner: str, lease_s: float,
    remaining_s: Callable[[], float] | None,
    continue_split: Callable[[dict[str, Any]], None] | None,
) -> SplitResult:
    clients, settings = runtime.clients, runtime.settings
    bucket, key = info.source.bucket, info.source.key
    claim, item = ledger.start_job(
        clients.dynamodb, settings.ledger_table_name, job,
        source_uri=info.source.uri, table=settings.table_name, owner=owner, lease_s=lease_s,
        range_bytes=settings.range_bytes, mode=runtime.spec.mode, clock=runtime.clock,
    )
    if claim == "skip":
        log.info("the job is already split or being split; duplicate event ignored")
        # A splitter that died between finish_split and the finalizer would leave a fully
        # written job RUNNING with no message left to finish it: finish it here.
        settle_job(runtime, ledger.raw_job(clients.dynamodb, settings.ledger_table_name, job))
        return SplitResult(job, "skipped", info.source.uri)
    try:  # gzip, encoding and delimiter, from the object's first bytes
        runtime, info = open_source(runtime, info)
    except SourceError as exc:
        return _fail(runtime, info, job, exc)
    earlier = ledger.split_state(item)
    limit = max_split_resumes(info.size, gzip=is_gzip(info), checkpoint_bytes=max(
        settings.checkpoint_bytes, earlier.range_bytes or settings.range_bytes))
    if earlier.resumes > limit:
        at = json.loads(earlier.checkpoint) if earlier.checkpoint else {}
        return _fail(runtime, info, job, RuntimeError(
            f"line {at.get('line', 1)}: the split was resumed {earlier.resumes} times, more "
            f"than the {limit} a {info.size:,}-byte file can need, so it was stopped rather "
            f"than loop (it had checked the file to line {at.get('check_line', 1)} and sent "
            f"the rows before line {at.get('line', 1)}). "
            "Upload the file again under a new key to load it; if this happens again, the "
            "splitter's log for this job says why its invocations made no progress"))
    # A parallel job stays parallel: a retry of its planner (or a late duplicate event)
    # plans it again, which only re-sends idempotent scans; it never splits sequentially.
    if claim == "resume" and earlier.mode != runtime.spec.mode:
        # A job keeps the write mode it started with: a spec deployed since (a
        # continuation runs $LATEST) must not turn the rest of a put job into deletes.
        log.warning("the job keeps its mode %s; the spec now says %s",
                    earlier.mode, runtime.spec.mode)
        runtime = replace(runtime, spec=replace(runtime.spec, mode=earlier.mode))
    parallel_job = (claim == "new" and _parallel(runtime, info)) or earlier.parallel
    if parallel_job and continue_split is not None:
        try:
            header, header_line = _read_header(runtime, info)
            parts = fan.plan(runtime, info, job, header, header_line, continue_split)
        except (InputError, SourceError) as exc:
            return _fail(runtime, info, job, exc)
        return SplitResult(job, f"planned {parts} ranges", info.source.uri)
    # A resumed split keeps the first try's range size, so it cuts the same messages.
    range_bytes = earlier.range_bytes or settings.range_bytes
    try:
        checkpoint = Checkpoint.loads(earlier.checkpoint) if earlier.checkpoint else Checkpoint()
        enqueuer = Enqueuer(clients.sqs, settings.rows_queue_url)
        try:
            finished = cut_object(runtime, info, job, range_bytes, checkpoint, sink=enqueuer,
                                  progress=LedgerProgress(runtime, job, owner, remaining_s))
        finally:
            enqueuer.close()
    except (InputError, SourceError) as exc:
        return _fail(runtime, info, job, exc)
    except ledger.SplitCancelled:
        # Cancelled: nothing more is sent; what the checkpoint holds is what was sent (the
        # save comes after the sends drained), and finish_split records it.
        log.info("the job was cancelled: the split stops at line %s", checkpoint.line)
        finished = True
    except ledger.LeaseLost:
        return SplitResult(job, "skipped", info.source.uri)
    except BaseException:
        # Anything else is a fault of ours or of AWS: let Lambda retry, and let the retry in.
        ledger.release_split(clients.dynamodb, settings.ledger_table_name, job, owner)
        raise
    if not finished:
        if continue_split is None:
            raise RuntimeError("the split ran out of time and has no way to continue")
        continue_split({CONTINUE_KEY: {"bucket": bucket, "key": key, "version": info.source.version,
                                       "job": job}})
        return SplitResult(job, "continued", info.source.uri, checkpoint.rows_read,
                           checkpoint.messages)
    job_item = ledger.finish_split(
        clients.dynamodb, settings.ledger_table_name, job, rows_read=checkpoint.rows_read,
        rows_padded=checkpoint.rows_padded,
        messages_total=checkpoint.messages, header=checkpoint.header or [],
        # The writers report into the stack's bucket, whichever bucket the object is in.
        error_location=f"s3://{settings.bucket or bucket}/{settings.errors_prefix}{job}/",
        clock=runtime.clock,
    )
    settle_job(runtime, job_item)
    return SplitResult(job, "split", info.source.uri, checkpoint.rows_read, checkpoint.messages)


# The guard on the splitter's self-continuation (the stack sets RecursiveLoop: Allow, so
# Lambda no longer stops the chain): a job resumed more often than its file can need is
# FAILED, not continued. A split hands over only at a checkpoint (or before reaching the
# next one), and a hand-over that got past none is redone by the next invocation, so each
# hop is assumed to pass at least one checkpoint: the check pass and the split pass each
# cross size / checkpoint_bytes of them. Every hop is an asynchronous invoke that Lambda
# retries up to SPLITTER_ASYNC_RETRIES times, and a retried resume whose reply was lost
# counts twice: hence the multiplier. A parsed byte count is bounded by the object's size
# times PLAIN_MAX_RATIO (UTF-16 is parsed as UTF-8: at most 3 bytes for 2) or, gzip,
# DEFLATE_MAX_RATIO (a deflate stream inflates at most about 1032:1).
PLAIN_MAX_RATIO = 2
DEFLATE_MAX_RATIO = 1032
SPLITTER_ASYNC_RETRIES = 2  # infra/fanout_stack/functions.py: configure_async_invoke


def max_split_resumes(size: int, *, gzip: bool, checkpoint_bytes: int) -> int:
    """How often a split of an object of `size` bytes may be resumed before it is failed
    as a loop: O(size / checkpoint_bytes); 16 for a plain file up to 32 MiB, 2,568 for
    10 GiB of plain CSV with the default 64 MiB checkpoints."""
    parsed = size * (DEFLATE_MAX_RATIO if gzip else PLAIN_MAX_RATIO)
    hops = 2 * -(-parsed // max(1, checkpoint_bytes)) + 2  # both passes, the first run, slack
    return hops * (2 + SPLITTER_ASYNC_RETRIES)


def _fail(runtime: Runtime, info: Any, job: str, exc: Exception) -> SplitResult:
    """End the job for bad input: FAILED in the ledger, with file, line and reason."""
    settings, clients = runtime.settings, runtime.clients
    error = f"{info.source.uri}: {with_delimiter_hint(runtime, info, with_hint(str(exc)))}"
    ledger.fail_job(clients.dynamodb, settings.ledger_table_name, job, error=error,
                    clock=runtime.clock)
    publish_summary(clients.sns, settings.topic_arn, {
        "JOB_ID": job, "STATUS": ledger.FAILED, "SOURCE": info.source.uri, "ERROR": error,
        "DESTINATION_TABLE_NAME": settings.table_name,
    })
    return SplitResult(job, "failed", info.source.uri, error=error)


def _parallel(runtime: Runtime, info: Any) -> bool:
    """Large plain objects are split in parallel ranges; gzip and UTF-16 must stream."""
    return (info.size >= runtime.settings.parallel_threshold_bytes and not is_gzip(info)
            and runtime.spec.encoding != "utf-16")


def _regions(runtime: Runtime, info: Any, range_bytes: int, offset: int = 0,
             line: int = 1) -> Iterator[Region]:
    """The object's regions of whole records from parse offset `offset` (source `line`)."""
    spec = runtime.spec
    chunks = parse_chunks(runtime.clients.s3, info, range_bytes, encoding=spec.encoding,
                          start=offset)
    return iter_regions(chunks, encoding=parse_encoding(spec.encoding), delimiter=spec.delimiter,
                        start_offset=offset, start_line=line)


class Progress(Protocol):
    """Where a split keeps its checkpoints, and how it learns that time is short."""

    def save(self, cp: Checkpoint, *, final: bool = False) -> bool:
        """Save `cp`; True if the split must hand over now (never when `final`)."""

    def short_of_time(self) -> bool:
        """True if the next checkpoint is out of reach: hand over from the last saved one."""

    def release(self) -> None:
        """Let a continuation in (the work since the last checkpoint is redone)."""


@dataclass
class LedgerProgress:
    """The Lambda's progress: checkpoints in the ledger under the split's lease."""

    runtime: Runtime
    job: str
    owner: str
    remaining_s: Callable[[], float] | None = None

    def save(self, cp: Checkpoint, *, final: bool = False) -> bool:
        # With too little time left to reach the next checkpoint, the save also releases
        # the lease for the continuation, and the caller hands over.
        out_of_time = (not final and self.remaining_s is not None
                       and self.remaining_s() < self.runtime.settings.split_reserve_s)
        ledger.save_checkpoint(self.runtime.clients.dynamodb,
                               self.runtime.settings.ledger_table_name, self.job, self.owner,
                               cp.dumps(), release=out_of_time, clock=self.runtime.clock)
        return out_of_time

    def short_of_time(self) -> bool:
        return (self.remaining_s is not None
                and self.remaining_s() < self.runtime.settings.split_reserve_s / 2)

    def release(self) -> None:
        ledger.release_split(self.runtime.clients.dynamodb,
                             self.runtime.settings.ledger_table_name, self.job, self.owner)


class NoProgress:
    """A run with no time limit that keeps no checkpoints (`fanout check`, the bench)."""

    def save(self, cp: Checkpoint, *, final: bool = False) -> bool:
        return False

    def short_of_time(self) -> bool:
        return False

    def release(self) -> None:
        return None


def cut_object(runtime: Runtime, info: Any, job: str, range_bytes: int, cp: Checkpoint, *,
               sink: Sink, progress: Progress) -> bool:
    """Check the object, then cut its records into messages for `sink`, from `cp` on.

    True when the object is done; False after a hand-over (time ran short: `progress` has
    saved a checkpoint or released the lease). Sending waits for `sink.drain()` before
    each checkpoint; the caller closes the sink.
    """
    return (_check_object(runtime, info, range_bytes, cp, progress)
            and _enqueue_rows(runtime, info, job, range_bytes, cp, sink, progress))


def _read_header(runtime: Runtime, info: Any) -> tuple[list[str], int]:
    """The first non-blank record, checked against the spec."""
    try:
        for region in _regions(runtime, info, runtime.settings.range_bytes):
            for line, fields in region.records():
                if fields:
                    _check_header(runtime, fields, line)
                    return fields, line
    except CsvDecodeError as exc:
        raise InputError(str(exc)) from exc
    raise InputError("the file has no header line (only blank lines)")


def _check_object(runtime: Runtime, info: Any, range_bytes: int, cp: Checkpoint,
                  progress: Progress) -> bool:
    """Before the first message: check that the whole object decodes and that csv.reader
    (strict) reads it, so a bad byte or a broken quote anywhere fails the job with its line
    and nothing half-enqueued.

    Cutting the object into regions is the check (see splitter.chunker: every piece is
    decoded, then proven RFC 4180 or read by csv.reader), at C speed. Like the split
    itself it saves its progress at checkpoint offsets and hands over when time runs
    short, so a file too large to check in one invocation is checked in several. Returns
    True when the check is complete, False after a hand-over.
    """
    if cp.checked:
        return True
    checkpoint_bytes = max(runtime.settings.checkpoint_bytes, range_bytes)
    try:
        for region in _regions(runtime, info, range_bytes, cp.check_offset, cp.check_line):
            crossed = region.end_offset // checkpoint_bytes != cp.check_offset // checkpoint_bytes
            cp.check_offset, cp.check_line = region.end_offset, region.start_line + region.line_count
            # Save progress, so a crash or a hand-over resumes from here.
            if crossed and progress.save(cp):
                return False
    except CsvDecodeError as exc:
        raise InputError(str(exc)) from exc
    cp.checked = True
    # Saved, so that a retry after a crash in the split does not check the object again.
    progress.save(cp, final=True)
    return True


def _enqueue_rows(runtime: Runtime, info: Any, job: str, range_bytes: int, cp: Checkpoint,
                  sink: Sink, progress: Progress) -> bool:
    """Read, cut and send from the checkpoint `cp` on, updating it in place.

    Returns True when the object is done, False when time ran short and the split
    should continue in a fresh invocation (a checkpoint has been saved and the lease
    released). Checkpoints are saved only where the parse offset crosses a multiple of
    `checkpoint_bytes`, and the partial message is sent there, so every try cuts the
    same messages with the same sequence numbers.
    """
    settings, spec = runtime.settings, runtime.spec
    if info.size == 0:
        raise InputError("the file is empty (0 bytes): expected a header line")
    checkpoint_bytes = max(settings.checkpoint_bytes, range_bytes)
    batcher: Batcher | None = None
    if cp.header is not None:
        _check_header(runtime, cp.header, cp.header_line)
        batcher = Batcher(sink, job, info.source, cp.header, spec.delimiter, cp.seq, spec.mode,
                          count_short=spec.short_rows == "pad")

    def account(batcher: Batcher) -> None:
        batcher.flush()
        cp.seq, cp.rows_read, cp.messages = (batcher.seq, cp.rows_read + batcher.rows,
                                             cp.messages + batcher.messages)
        cp.rows_padded += batcher.padded
        batcher.rows = batcher.messages = batcher.padded = 0

    try:
        for region in _regions(runtime, info, range_bytes, cp.offset, cp.line):
            lines, records = region.data_records()
            if batcher is None and records:  # the first non-blank record is the header
                cp.header, cp.header_line = _header_of(runtime, records[0], lines[0])
                batcher = Batcher(sink, job, info.source, cp.header, spec.delimiter, cp.seq,
                                  spec.mode, count_short=spec.short_rows == "pad")
                lines, records = lines[1:], records[1:]
            if batcher is not None:
                batcher.add(lines, records)
            crossed = region.end_offset // checkpoint_bytes != cp.offset // checkpoint_bytes
            cp.offset, cp.line = region.end_offset, region.start_line + region.line_count
            if not crossed:
                if progress.short_of_time():
                    # The next checkpoint is out of reach: hand over from the last saved
                    # one (the work since is redone with the same messages, which dedupe).
                    progress.release()
                    return False
                continue
            # A checkpoint boundary: send the partial message, wait for SQS, save.
            if batcher is not None:
                account(batcher)
            sink.drain()
            if progress.save(cp):
                return False
    except CsvDecodeError as exc:
        raise InputError(str(exc)) from exc
    if batcher is not None:
        account(batcher)
    if cp.header is None:
        raise InputError("the file has no header line (only blank lines)")
    if cp.rows_read == 0:
        raise InputError(f"line {cp.header_line}: the file has a header but no data rows")
    return True


def _header_of(runtime: Runtime, record: str, line: int) -> tuple[list[str], int]:
    """The header from its record's CSV text, checked against the spec."""
    try:
        header = parse_csv_rows(record, runtime.spec.delimiter)[0]
    except csv.Error as exc:  # e.g. a field past csv's limit
        raise InputError(f"line {line}: the header cannot be read: {exc}") from None
    _check_header(runtime, header, line)
    return header, line


MAX_HEADER_BYTES = 64 * 1024


def _check_header(runtime: Runtime, header: list[str], line: int) -> None:
    size = len(json.dumps(header, ensure_ascii=False).encode())
    if size > MAX_HEADER_BYTES:
        raise InputError(f"line {line}: the header is {size:,} bytes; at most "
                         f"{MAX_HEADER_BYTES:,} (it travels in every message and in the job's "
                         "ledger item)")
    try:
        runtime.spec.bind(header)
    except TemplateError as exc:
        hint = hint_one_column(header, runtime.spec.delimiter)
        raise InputError(f"line {line}: {exc}{hint}") from exc
    named = runtime.spec.header_notes(header)  # the writer binds the same names
    if named:
        log.info("the header does not name every column once: named %s", ", ".join(named))
