"""`fanout ingest s3://BUCKET/PREFIX --stack NAME`: load objects already in S3, none copied.

The objects under the prefix are listed (ListObjectsV2, a page of up to 1,000 at a time).
Each is either skipped with a reason (not a CSV, a folder marker, empty, archived, the
stack's own output) or given the job id the splitter will give it (`job_id_for`: bucket,
key, and the version or ETag, so a new version is a new job). The ledger is asked about a
page's jobs at once (BatchGetItem); a job it already has is not started again, whatever
its status, so a re-run starts nothing new. Every other object is handed to the stack's
splitter as S3 would hand it: an asynchronous invocation with an ObjectCreated record.

Then every job this run started (or found still running) is followed with one progress
display. Following never costs a read per job per poll: each poll reads at most
`MAX_READS_PER_POLL` BatchGetItem calls (50 jobs each, job item and tally), rotating
through the jobs not yet finished, so the request rate is bounded however many jobs there
are, and a finished job is never read again. Per object this keeps its key, job id, size
and counts (about 400 bytes: 39 MB for 100,000 objects), for the summary's line per object.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote_plus

from botocore.exceptions import BotoCoreError, ClientError

from fanout import ledger
from fanout.aws import client
from fanout.contract import Source, job_id_for
from fanout.settings import DEFAULT_CONFIG
from fanout_cli.failures import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, describe
from fanout_cli.local.stack import (
    DRAINED_AFTER_S,
    EXIT_INTERRUPTED,
    DeployedStack,
    StackError,
    exit_code,
    find_stack,
    rows_queue_depth,
    settled_rows,
    summary,
)
from fanout_cli.progress import ProgressDisplay, format_duration

CSV_SUFFIXES = (".csv", ".csv.gz")
# GetObject fails on these until the object is restored (GLACIER_IR reads as usual).
ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# The stack's own outputs in its bucket (not context options: fixed for every stack).
OWN_OUTPUTS = (DEFAULT_CONFIG.errors_prefix, DEFAULT_CONFIG.json_copy_prefix)
# The stack output listing the buckets `-c source_buckets=...` granted the splitter.
SOURCE_BUCKETS_OUTPUT = "SourceBuckets"
LIST_PAGE_KEYS = 1000  # ListObjectsV2's maximum: one page is decided (and held) at a time
JOBS_PER_READ = ledger.MAX_BATCH_GET // 2  # a job item and its tally each
MAX_READS_PER_POLL = 4  # BatchGetItem calls per poll: up to 200 jobs a second
POLL_S = 1.0
# A started job with no ledger item after this long never reached the splitter's start
# (the invocation failed: its log group and the stack's splitter-failures queue say why).
START_TIMEOUT_S = 600.0
FOLLOW_TIMEOUT_S = 24 * 3600.0
IN_FLIGHT = 8  # HeadObject and Invoke calls at once
SEVERITY = {EXIT_OK: 0, EXIT_REJECTED: 1, EXIT_FAILED: 2}  # the worst job decides the exit


class PrefixError(StackError):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def is_s3_uri(text: str) -> bool:
    return text.startswith("s3://")


def parse_s3_uri(text: str) -> S3Prefix:
    """`s3://BUCKET/PREFIX` (the prefix may be empty: the whole bucket)."""
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if not is_s3_uri(text) or not bucket:
        raise PrefixError(f"{text!r} is not s3://BUCKET/PREFIX", EXIT_USAGE)
    return S3Prefix(bucket, prefix)


def source_buckets(stack: DeployedStack) -> list[str]:
    """The other buckets the stack's splitter may read (`-c source_buckets=...`)."""
    return [name for name in stack.outputs.get(SOURCE_BUCKETS_OUTPUT, "").split(",") if name]


def readable_part(stack: DeployedStack, target: S3Prefix) -> str:
    """The key prefix under which the splitter may read the target's objects ('' for all),
    or a PrefixError naming the bucket and the deploy option that grants it, raised before
    anything is listed or started."""
    if target.bucket in source_buckets(stack):
        return ""
    # The option names every bucket granted: keep those the stack has.
    grant = f"-c source_buckets={','.join([*source_buckets(stack), target.bucket])}"
    if target.bucket != stack.bucket:
        raise PrefixError(
            f"stack {stack.name!r} may not read bucket {target.bucket!r}: its splitter reads "
            f"s3://{stack.bucket}/{stack.upload_prefix}"
            + "".join(f", s3://{b}/" for b in source_buckets(stack))
            + f" only. Deploy it with {grant}, then run this again", EXIT_USAGE)
    upload = stack.upload_prefix
    if target.prefix.startswith(upload):
        return ""
    if upload.startswith(target.prefix):
        return upload  # the rest of the bucket is listed, and skipped with the reason
    raise PrefixError(
        f"stack {stack.name!r} may read only s3://{stack.bucket}/{upload} in its own bucket, "
        f"not {target.uri}: deploy it with {grant} to load the rest of it", EXIT_USAGE)


def skip_reason(obj: dict[str, Any], target: S3Prefix, stack: DeployedStack,
                readable: str) -> str | None:
    """Why a listed object is not loaded, or None."""
    key = obj["Key"]
    if key.endswith("/"):
        return "a folder marker (the key ends with /)"
    if target.bucket == stack.bucket and key.startswith(OWN_OUTPUTS):
        return f"the stack's own output ({key.split('/', 1)[0]}/)"
    if not key.lower().endswith(CSV_SUFFIXES):
        return "not .csv or .csv.gz"
    if int(obj.get("Size", 0)) == 0:
        return "empty (0 bytes)"
    if obj.get("StorageClass") in ARCHIVED_CLASSES:
        return f"archived in {obj['StorageClass']}: restore it first"
    if readable and not key.startswith(readable):
        return (f"outside s3://{target.bucket}/{readable}, all the splitter may read in this "
                f"bucket (-c source_buckets={target.bucket} grants the rest)")
    return None


def _partition(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else (
        "aws-us-gov" if region.startswith("us-gov-") else "aws")


def object_created_event(bucket: str, key: str, *, size: int, etag: str,
                         version: str | None, region: str) -> dict[str, Any]:
    """The event S3 sends the splitter for a new object (the key URL-encoded, as S3 does)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag,
                           "sequencer": f"{time.time_ns():016X}"}
    if version:
        obj["versionId"] = version
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region,
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "fanout-ingest"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "fanout-ingest-prefix",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "fanout-ingest"},
                          "arn": f"arn:{_partition(region)}:s3:::{bucket}"},
               "object": obj},
    }]}


STARTED, ALREADY_LOADED, ALREADY_STARTED, SKIPPED = (
    "started", "already_loaded", "already_started", "skipped")
NOT_STARTED, INCOMPLETE = "NOT_STARTED", "INCOMPLETE"


@dataclass(slots=True)
class ObjectLoad:
    """One listed object: what was decided, and (once its job is finished) its counts."""

    key: str
    size: int
    action: str = STARTED
    job: str = ""
    reason: str = ""
    status: str = ""
    error: str | None = None
    # The job's counts (summary()'s rows_* fields): values here, names shared by every object.
    count_names: tuple[str, ...] = ()
    count_values: tuple[int, ...] = ()
    code: int = EXIT_OK
    live: str = ""  # the ledger status last seen while it runs
    read: int = 0  # live: rows read and settled so far
    settled: int = 0
    since: float = 0.0  # when it was started or found

    @property
    def finished(self) -> bool:
        return self.action == SKIPPED or bool(self.status)

    def finish(self, result: dict[str, Any]) -> None:
        self.status = str(result["status"])
        self.error = result.get("error")
        counts = {k: int(v) for k, v in result.items()
                  if k.startswith("rows_") and isinstance(v, int)}
        self.count_names = _COUNT_NAMES.setdefault(tuple(counts), tuple(counts))
        self.count_values = tuple(counts.values())
        self.code = exit_code(result)
        self.read = counts.get("rows_read", self.read)
        self.settled = self.read

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size": self.size, "action": self.action}
        if self.action == SKIPPED:
            return out | {"status": "SKIPPED", "reason": self.reason}
        return out | {"job": self.job, "status": self.status, "error": self.error} | self.counts

    @property
    def counts(self) -> dict[str, int]:
        return dict(zip(self.count_names, self.count_values, strict=True))


_COUNT_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


class PrefixIngest:
    """Lists the prefix, starts what is not loaded, follows it, and summarises."""

    def __init__(self, stack: DeployedStack, target: S3Prefix, *, lambda_client: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S,
                 start_timeout_s: float = START_TIMEOUT_S,
                 follow_timeout_s: float = FOLLOW_TIMEOUT_S) -> None:
        self.stack, self.target = stack, target
        self.splitter = stack.outputs.get("SplitterFunctionName")
        if not self.splitter:
            raise PrefixError(f"stack {stack.name!r} has no SplitterFunctionName output: "
                              "deploy it with this version of fanout")
        self.readable = readable_part(stack, target)
        self.region = stack.s3.meta.region_name
        self.lambda_ = lambda_client or client("lambda", endpoint_url=stack.endpoint_url,
                                               region=self.region)
        self.clock, self.sleep, self.poll_s = clock, sleep, poll_s
        self.start_timeout_s, self.follow_timeout_s = start_timeout_s, follow_timeout_s
        self.objects: list[ObjectLoad] = []
        self.started_at = clock()

    # ------------------------------------------------------------------ listing and starting

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        paginator = self.stack.s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.target.bucket, Prefix=self.target.prefix,
                                           PaginationConfig={"PageSize": LIST_PAGE_KEYS}):
                yield page.get("Contents", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise PrefixError(f"no bucket {self.target.bucket!r}") from None
            raise PrefixError(f"cannot list {self.target.uri}: {describe(exc)}") from exc

    def versioned(self) -> bool:
        """True unless the bucket never had versioning (then a listing's ETag is the
        object's identity); when we may not ask, HeadObject decides per object."""
        try:
            status = self.stack.s3.get_bucket_versioning(Bucket=self.target.bucket).get("Status")
        except ClientError:
            return True
        return status in ("Enabled", "Suspended")

    def start(self, on_page: Callable[[], None] | None = None) -> None:
        """Decide every listed object; start the jobs the ledger does not have."""
        versioned = self.versioned()
        with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="ingest-prefix") as pool:
            for page in self.pages():
                self._start_page(page, versioned, pool)
                if on_page:
                    on_page()

    def _start_page(self, page: list[dict[str, Any]], versioned: bool,
                    pool: ThreadPoolExecutor) -> None:
        candidates: list[tuple[ObjectLoad, dict[str, Any]]] = []
        for obj in page:
            load = ObjectLoad(obj["Key"], int(obj.get("Size", 0)))
            self.objects.append(load)
            reason = skip_reason(obj, self.target, self.stack, self.readable)
            if reason:
                load.action, load.reason = SKIPPED, reason
            else:
                candidates.append((load, obj))
        identified = [x for x in pool.map(
            lambda c: self._identify(c[0], c[1], versioned), candidates) if x is not None]
        known = ledger.jobs_by_id(self.stack.dynamodb, self.stack.ledger_table,
                                  [load.job for load, _ in identified])
        to_start = []
        for load, event in identified:
            load.since = self.clock()
            item = known.get(load.job)
            if item is None:
                to_start.append((load, event))
            elif item.get("status") in ledger.ENDED:
                load.action = ALREADY_LOADED
                load.finish(summary(self.stack, item, 0.0))
            else:
                load.action = ALREADY_STARTED
        for _ in pool.map(lambda s: self._invoke(*s), to_start):
            pass

    def _identify(self, load: ObjectLoad, obj: dict[str, Any],
                  versioned: bool) -> tuple[ObjectLoad, dict[str, Any]] | None:
        """The job id the splitter will give the object, and the event that starts it."""
        etag, version, size = str(obj.get("ETag", "")).strip('"'), None, load.size
        if versioned:
            try:
                head = self.stack.s3.head_object(Bucket=self.target.bucket, Key=load.key)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") in ("404", "NoSuchKey", "NotFound"):
                    load.action, load.reason = SKIPPED, "deleted since it was listed"
                    return None
                if error.get("Code") in ("403", "AccessDenied", "400", "BadRequest"):
                    # This object alone (another account's, SSE-C): skip it, load the rest
                    load.action, load.reason = SKIPPED, (
                        f"HeadObject refused it ({error.get('Code')}: "
                        f"{error.get('Message') or 'no message'})")
                    return None
                raise
            etag, version = head["ETag"].strip('"'), head.get("VersionId")
            if version == "null":
                # Stored before versioning was enabled: its S3 event had no version id, so
                # the splitter named its job by the ETag; so do we (and send none).
                version = None
            size = int(head.get("ContentLength", size))
        load.job = job_id_for(Source(self.target.bucket, load.key, etag, version))
        return load, object_created_event(self.target.bucket, load.key, size=size, etag=etag,
                                          version=version, region=self.region)

    def _invoke(self, load: ObjectLoad, event: dict[str, Any]) -> None:
        try:
            response = self.lambda_.invoke(FunctionName=self.splitter, InvocationType="Event",
                                           Payload=json.dumps(event).encode())
        except (BotoCoreError, ClientError) as exc:
            raise PrefixError(
                f"cannot start the splitter {self.splitter} for {load.key}: {describe(exc)} "
                "(the caller needs lambda:InvokeFunction on it; jobs started before this go "
                "on, and running this again starts none of them twice)") from exc
        if response.get("StatusCode") != 202:
            raise PrefixError(f"the splitter {self.splitter} did not accept the event for "
                              f"{load.key} (status {response.get('StatusCode')})")

    # ------------------------------------------------------------------ following

    def followed(self) -> list[ObjectLoad]:
        return [o for o in self.objects if o.action in (STARTED, ALREADY_STARTED)]

    def follow(self, display: ProgressDisplay) -> None:
        """Poll the unfinished jobs, a bounded number a poll, until none is left."""
        pending = {o.job: o for o in self.followed() if not o.finished}
        if not pending:
            return
        order = list(pending)
        cursor, drained_since = 0, None
        deadline = self.clock() + self.follow_timeout_s
        self._show(display, force=True)
        while pending:
            now = self.clock()
            if now >= deadline:
                for load in pending.values():
                    load.status, load.code = load.status or "TIMED_OUT", EXIT_FAILED
                    load.error = f"not finished within {self.follow_timeout_s:.0f} s"
                return
            order = [job for job in order if job in pending]
            cursor %= len(order)
            batch = (order[cursor:] + order[:cursor])[:MAX_READS_PER_POLL * JOBS_PER_READ]
            cursor += len(batch)
            if any(o.live == ledger.RUNNING for o in pending.values()) or drained_since:
                if rows_queue_depth(self.stack) == 0:
                    drained_since = drained_since if drained_since is not None else now
                else:
                    drained_since = None
            items = ledger.jobs_by_id(self.stack.dynamodb, self.stack.ledger_table, batch,
                                      progress=True)
            for job in batch:
                self._update(pending, job, items.get(job), now, drained_since)
            self._show(display, force=not pending)
            if pending:
                self.sleep(self.poll_s)

    def _update(self, pending: dict[str, ObjectLoad], job: str, item: dict[str, Any] | None,
                now: float, drained_since: float | None) -> None:
        load = pending[job]
        if item is None:
            if now - load.since >= self.start_timeout_s:
                load.status, load.code = NOT_STARTED, EXIT_FAILED
                load.error = (f"the splitter has not started it after {self.start_timeout_s:.0f} s "
                              f"(see its log group {self.stack.outputs.get('SplitterLogGroup', '')})")
                del pending[job]
            return
        status = item.get("status")
        if status == ledger.RUNNING and drained_since is not None \
                and now - drained_since >= DRAINED_AFTER_S:
            item = item | {"status": INCOMPLETE}
        if item.get("status") in (*ledger.ENDED, INCOMPLETE):
            load.finish(summary(self.stack, item, now - self.started_at))
            del pending[job]
            return
        load.live = str(status or "")
        load.read, load.settled = int(item.get("rows_read", 0)), settled_rows(item)

    def _show(self, display: ProgressDisplay, *, force: bool = False) -> None:
        loads = self.followed()
        done = sum(1 for o in loads if o.status)
        total_bytes = sum(o.size for o in loads) or 1
        fraction = sum(o.size * (1.0 if o.status else (o.settled / o.read if o.read else 0.0))
                       for o in loads) / total_bytes
        display.label = f"{self.target.uri} ({done}/{len(loads)} jobs)"
        settled = sum(o.settled for o in loads)
        display.update(settled, fraction=fraction, force=force,
                       read=sum(o.read for o in loads), settled=settled)

    # ------------------------------------------------------------------ the summary

    def exit_code(self) -> int:
        codes = [o.code for o in self.objects if o.action != SKIPPED]
        if not codes:
            return EXIT_FAILED
        return max(codes, key=lambda c: SEVERITY.get(c, 2))

    def result(self) -> dict[str, Any]:
        jobs = [o for o in self.objects if o.action != SKIPPED]
        totals: dict[str, int] = {}
        for load in jobs:
            for name, value in load.counts.items():
                totals[name] = totals.get(name, 0) + value
        elapsed = self.clock() - self.started_at
        this_run = sum(o.counts.get("rows_read", 0) for o in self.followed())
        count = {a: sum(1 for o in self.objects if o.action == a)
                 for a in (STARTED, ALREADY_LOADED, ALREADY_STARTED, SKIPPED)}
        return {
            "source": self.target.uri, "stack": self.stack.name,
            "objects": [o.as_dict() for o in self.objects],
            "total": {"objects": len(self.objects), "jobs": len(jobs), **count, **totals,
                      "elapsed_s": round(elapsed, 3),
                      "rows_per_s": round(this_run / elapsed, 1) if this_run and elapsed > 0 else None},
            "exit_code": self.exit_code(),
        }


def format_counts(counts: dict[str, int]) -> str:
    """`read 90, written 88, rejected 2, superseded 0` (other outcomes when not zero)."""
    shown = [(name, value) for name, value in counts.items()
             if value or name in ("rows_read", "rows_written", "rows_rejected", "rows_superseded")]
    return ", ".join(f"{name.removeprefix('rows_').replace('_', ' ')} {value:,}"
                     for name, value in shown)


def print_prefix_summary(result: dict[str, Any], stream: TextIO) -> None:
    total = result["total"]
    objects = result["objects"]
    stream.write(f"source     {result['source']}\nstack      {result['stack']}\n"
                 f"objects    {total['objects']:,}: {total[STARTED]:,} started now, "
                 f"{total[ALREADY_STARTED]:,} already started, {total[ALREADY_LOADED]:,} "
                 f"already loaded, {total[SKIPPED]:,} skipped\n")
    width = min(60, max((len(o["key"]) for o in objects), default=0))
    job_width = max((len(o.get("job", "")) for o in objects), default=0)
    for o in objects:
        if o["action"] == SKIPPED:
            stream.write(f"  {o['key']:<{width}}  {'':<{job_width}}  skipped: {o['reason']}\n")
            continue
        prefix = {ALREADY_LOADED: "already loaded: ", ALREADY_STARTED: "already started, now "
                  }.get(o["action"], "")
        counts = {k: v for k, v in o.items() if k.startswith("rows_")}
        detail = f"  {o['error']}" if o.get("error") else f"  {format_counts(counts)}"
        stream.write(f"  {o['key']:<{width}}  {o['job']:<{job_width}}  {prefix}{o['status']}"
                     f"{detail}\n")
    counts = {k: v for k, v in total.items() if k.startswith("rows_") and k != "rows_per_s"}
    rate = f" ({total['rows_per_s']:,.0f} rows/s)" if total["rows_per_s"] else ""
    stream.write(f"total      {total['jobs']:,} job(s): {format_counts(counts) or 'no rows'} · "
                 f"{format_duration(total['elapsed_s'])}{rate}\n")


def ingest_prefix(uri: str, stack_name: str, *, endpoint_url: str | None = None,
                  as_json: bool = False, stdout: TextIO = sys.stdout,
                  stderr: TextIO = sys.stderr, announce: str = "", **options: Any) -> int:
    """`fanout ingest s3://BUCKET/PREFIX --stack NAME`: start, follow, summarise.
    `announce` (the target's line) is said once the stack is found and may read the bucket."""
    target = parse_s3_uri(uri)
    stack = find_stack(stack_name, endpoint_url)
    run = PrefixIngest(stack, target, **options)  # refuses an ungranted bucket here
    if announce and not as_json:
        stderr.write(announce + "\n")
    listing = ProgressDisplay(stderr, label=f"{target.uri}: listing", unit="objects",
                              quiet=as_json)
    display = ProgressDisplay(stderr, label=target.uri, quiet=as_json)
    try:
        step = f"cannot start the jobs under {target.uri}"
        run.start(on_page=lambda: listing.update(
            len(run.objects), listed=len(run.objects),
            started=sum(1 for o in run.objects if o.action == STARTED)))
        listing.close()
        if not as_json:
            started = sum(1 for o in run.objects if o.action == STARTED)
            stderr.write(f"{target.uri}: {len(run.objects):,} object(s) listed, {started:,} "
                         f"job(s) started\n")
        step = f"cannot follow the jobs in {stack.ledger_table}"
        run.follow(display)
    except KeyboardInterrupt:
        listing.close()
        display.close()
        unfinished = [o.job for o in run.followed() if not o.status]
        stderr.write(f"\nstopped following; the {len(unfinished):,} unfinished job(s) go on. "
                     f"Follow them all again (nothing is started twice):\n"
                     f"  fanout ingest {target.uri} --stack {stack.name}\n"
                     + "".join(f"or one: fanout status {job} --stack {stack.name} --follow\n"
                               for job in unfinished[:3]))
        return EXIT_INTERRUPTED
    except (BotoCoreError, ClientError) as exc:
        listing.close()
        display.close()
        raise PrefixError(f"{step}: {describe(exc)}") from exc
    display.close()
    result = run.result()
    if as_json:
        stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        print_prefix_summary(result, stdout)
    if not any(o.action != SKIPPED for o in run.objects):
        stderr.write(f"fanout ingest: error: nothing to load under {target.uri}: "
                     + (f"{len(run.objects):,} object(s), none a CSV the stack can read (the "
                        "reasons are above)\n" if run.objects else "no objects\n"))
    return int(result["exit_code"])
