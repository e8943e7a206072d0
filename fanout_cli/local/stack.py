"""A deployed stack, local or in AWS, found by name: `fanout ingest FILE --stack NAME` and
`fanout status JOB --stack NAME --follow`.

The stack's CloudFormation outputs name its bucket, upload prefix, tables and queues. A
file is uploaded under the upload prefix (S3 then starts the splitter, as for any
upload) and the job is followed in the jobs ledger with one GetItem a poll, however
large the job: the live figures come from the job item's counters, the exact ones from
the item once the job is complete.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from fanout import ledger
from fanout.aws import client
from fanout.contract import Source, job_id_for
from fanout.settings import ROWS_PER_MESSAGE
from fanout_cli.failures import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, describe, use_local_credentials
from fanout_cli.progress import ProgressDisplay, format_duration

EXIT_INTERRUPTED = 130
# A RUNNING job whose rows queue has been empty this long has nothing left to deliver:
# what is not reported waits in the DLQ (retries exhausted).
DRAINED_AFTER_S = 15.0
# A running job that has not moved for this long says so on its progress line.
IDLE_SHOWN_AFTER_S = 30.0
# What a STALLED job's item says is missing (fanout/ledger/reconciler.py).
STALL_FIELDS = ("stall_reason", "missing_messages", "missing_seqs")


class StackError(RuntimeError):
    """The stack or its job cannot be found or reached; one line for the user."""


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """`--endpoint-url`, else AWS_ENDPOINT_URL (boto3 reads it too), else AWS itself."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


@dataclass(frozen=True)
class DeployedStack:
    name: str
    outputs: dict[str, str]
    s3: Any
    dynamodb: Any
    sqs: Any
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @property
    def bucket(self) -> str:
        return self.outputs["BucketName"]

    @property
    def upload_prefix(self) -> str:
        return self.outputs.get("UploadPrefix", "uploads/")

    @property
    def ledger_table(self) -> str:
        return self.outputs["LedgerTableName"]


def find_stack(name: str, endpoint_url: str | None = None, *,
               region: str | None = None) -> DeployedStack:
    """The stack's outputs and clients for its endpoint."""
    endpoint_url = resolve_endpoint(endpoint_url)
    use_local_credentials(endpoint_url)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or "us-east-1"

    def make(service: str) -> Any:
        return client(service, endpoint_url=endpoint_url, region=region)

    where = f"at {endpoint_url}" if endpoint_url else f"in AWS ({region})"
    try:
        stacks = make("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise StackError(f"no stack {name!r} {where}: check --stack (the `fanout serve` "
                             "banner names it) and the endpoint (--endpoint-url, else "
                             "AWS_ENDPOINT_URL, else AWS)") from exc
        raise StackError(f"cannot describe stack {name!r} {where}: "
                         f"{describe(exc) or exc}") from exc
    except Exception as exc:  # no credentials, nothing at the endpoint
        raise StackError(f"cannot describe stack {name!r} {where}: "
                         f"{describe(exc) or exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs") or [])}
    missing = [key for key in ("BucketName", "LedgerTableName", "RowsQueueUrl") if key not in outputs]
    if missing:
        raise StackError(f"stack {name!r} has no output(s) {', '.join(missing)}: is it a fanout stack?")
    return DeployedStack(name, outputs, make("s3"), make("dynamodb"), make("sqs"), endpoint_url,
                         region)


def upload(stack: DeployedStack, file: Path, *, key: str | None = None) -> tuple[str, str]:
    """Upload under the stack's upload prefix; the object's key and its job id."""
    key = key or stack.upload_prefix + file.name
    stack.s3.upload_file(str(file), stack.bucket, key)
    return key, job_for_key(stack, key)


def job_for_key(stack: DeployedStack, key: str) -> str:
    """The job id the splitter gives this object (its key, ETag and version)."""
    head = stack.s3.head_object(Bucket=stack.bucket, Key=key)
    return job_id_for(Source(stack.bucket, key, head["ETag"].strip('"'), head.get("VersionId")))


def rows_queue_depth(stack: DeployedStack) -> int:
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.outputs["RowsQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def settled_rows(item: dict[str, Any]) -> int:
    """Rows the writers have reported so far (an upper bound while messages are redelivered,
    exact once the job is complete)."""
    if item.get("status") == ledger.COMPLETE:
        return sum(int(item.get(f"rows_{name}", 0)) for name in ledger.OUTCOMES)
    estimate = int(item.get("messages_reported", 0)) * ROWS_PER_MESSAGE
    return min(estimate, int(item["rows_read"])) if "rows_read" in item else estimate


def seconds_since_progress(item: Mapping[str, Any], now: float | None = None) -> float | None:
    """How long ago the job last moved (a split checkpoint, a writer's report, the fold),
    from the ledger's `last_progress_at` (epoch seconds). None when the ledger does not say."""
    value = item.get("last_progress_at")
    if not isinstance(value, int | float):
        return None
    return max(0.0, round((time.time() if now is None else now) - value, 1))


def idle_note(item: Mapping[str, Any], *, after_s: float = IDLE_SHOWN_AFTER_S) -> str | None:
    """`no progress for 1:05` once a running job has not moved for `after_s`."""
    idle = seconds_since_progress(item) if item.get("status") in (ledger.SPLITTING, ledger.RUNNING) else None
    return f"no progress for {format_duration(idle)}" if idle is not None and idle >= after_s else None


def stall_text(item: Mapping[str, Any]) -> str:
    """What a STALLED job is missing and what to do, in one line."""
    missing = item.get("missing_messages")
    seqs = item.get("missing_seqs") or []
    parts = [f"{missing:,} message(s) missing" if missing is not None else "the split did not finish"]
    if seqs:
        parts.append("first seqs " + ", ".join(str(seq) for seq in seqs))
    return f"{'; '.join(parts)}: {item.get('stall_reason') or 'no progress'}"


def follow(stack: DeployedStack, job: str, *, display: ProgressDisplay,
           timeout_s: float = 24 * 3600, poll_s: float = 1.0,
           clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the job until it ends (COMPLETE, FAILED, or STALLED by the reconciler), or its
    rows queue is drained with messages unreported (then its status is INCOMPLETE).
    Returns the job item."""
    deadline = clock() + timeout_s
    drained_since: float | None = None
    item: dict[str, Any] | None = None
    while clock() < deadline:
        item = ledger.get_job(stack.dynamodb, stack.ledger_table, job)
        status = item.get("status") if item else None
        if item:
            settled = settled_rows(item)
            display.update(settled, total=item.get("rows_read"), read=int(item.get("rows_read", 0)),
                           settled=settled, force=status in ledger.ENDED, note=idle_note(item))
        if item and status in ledger.ENDED:
            return item
        if item and status == ledger.RUNNING and rows_queue_depth(stack) == 0:
            drained_since = drained_since if drained_since is not None else clock()
            if clock() - drained_since >= DRAINED_AFTER_S:
                return item | {"status": "INCOMPLETE"}
        else:
            drained_since = None
        time.sleep(poll_s)
    raise StackError(f"job {job} did not finish within {timeout_s:.0f} s; its last state: "
                     f"{(item or {}).get('status', 'not started')}")


def job_elapsed_s(item: dict[str, Any]) -> float | None:
    """From the upload's split start to the job's end, as the ledger recorded them."""
    try:
        return (datetime.fromisoformat(item["finished_at"])
                - datetime.fromisoformat(item["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def summary(stack: DeployedStack, item: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    """The fields a local `fanout ingest` prints, for a job on a deployed stack.
    `elapsed_s` (what this command waited) stands in until the ledger has both times."""
    elapsed_s = job_elapsed_s(item) or elapsed_s
    rows_read = int(item.get("rows_read", 0))
    complete = item.get("status") in (ledger.COMPLETE, ledger.CANCELLED)  # counts on the item
    reported = ({} if complete else
                ledger.totals(ledger.read_message_counts(stack.dynamodb, stack.ledger_table,
                                                         str(item["pk"]))).__dict__)
    counts = {name: int(item.get(f"rows_{name}", reported.get(name, 0)))
              for name in ledger.OUTCOMES}
    unreported = rows_read - sum(counts.values()) if item.get("status") == "INCOMPLETE" else 0
    stalled: dict[str, Any] = {name: item[name] for name in STALL_FIELDS if name in item}
    return {
        "job_id": item["pk"], "stack": stack.name, "source": item.get("source"),
        "table": item.get("table") or stack.outputs.get("TableName"),
        "status": item.get("status"), "mode": item.get("mode", "put"), "rows_read": rows_read,
        "rows_padded": int(item.get("rows_padded", 0)),
        **{f"rows_{name}": count + (unreported if name == "rejected" else 0)
           for name, count in counts.items()},
        "rows_in_dlq_unreported": unreported,
        "messages_sent": int(item.get("messages_total", 0)),
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": round(rows_read / elapsed_s, 1) if elapsed_s > 0 else None,
        "error": item.get("error"), "error_data_location": item.get("error_location"),
        **stalled,
        "target": {"runtime": "stack", "stack": stack.name, "endpoint_url": stack.endpoint_url,
                   "region": stack.region},
    }


def exit_code(result: dict[str, Any]) -> int:
    """0 every row landed; 3 rows rejected, or left in the DLQ (INCOMPLETE, or STALLED with
    messages missing); 1 the job failed, was cancelled, or STALLED in its split."""
    if result["status"] == ledger.COMPLETE:
        return EXIT_OK if result["rows_rejected"] == 0 else EXIT_REJECTED
    if result["status"] == ledger.STALLED:
        return EXIT_REJECTED if "missing_messages" in result else EXIT_FAILED
    return EXIT_REJECTED if result["status"] == "INCOMPLETE" else EXIT_FAILED


def print_result(result: dict[str, Any], stream: TextIO) -> None:
    from fanout_cli.local.ingest import print_summary

    print_summary(result, stream)
    if result["status"] == ledger.FAILED:
        stream.write(f"the job failed: {result['source']}: {result['error']}\n")
    elif result["status"] == ledger.STALLED:
        stream.write(f"the job stalled: {stall_text(result)}\n")
    elif result["status"] == ledger.CANCELLED:
        stream.write(f"the job was cancelled: {result['rows_cancelled']:,} row(s) not written "
                     f"(`fanout status {result['job_id']} --stack {result['stack']}` says who and when)\n")
    elif result["rows_rejected"]:
        stream.write(f"rejected rows: {result['error_data_location']} and "
                     f"`dlq-replayer inspect --stack {result['stack']}`\n")


def follow_and_report(stack: DeployedStack, job: str, *, started: float, as_json: bool,
                      stdout: TextIO | None = None, stderr: TextIO | None = None,
                      label: str = "loading", already_loaded: bool = False) -> int:
    """Follow the job with a progress display, then print its summary; Ctrl-C stops the
    following (not the job) and says how to resume it."""
    import json

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    display = ProgressDisplay(stderr, label=label, quiet=as_json, from_first_update=True)
    try:
        item = follow(stack, job, display=display)
    except (BotoCoreError, ClientError) as exc:
        display.close()
        raise StackError(f"cannot read job {job} from {stack.ledger_table}: {exc}") from exc
    except KeyboardInterrupt:
        display.close()
        stderr.write(f"\nstopped following; the job goes on. Resume with:\n"
                     f"  fanout status {job} --stack {stack.name} --follow\n")
        return EXIT_INTERRUPTED
    display.close()
    result = summary(stack, item, time.monotonic() - started)
    if already_loaded:
        result["already_loaded"] = True
    if as_json:
        stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        print_result(result, stdout)
    return exit_code(result)


def existing_job(stack: DeployedStack, key: str) -> str | None:
    """The job id of the object at `key` now, if there is one (None: no object)."""
    try:
        return job_for_key(stack, key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def ingest_to_stack(file: Path, stack_name: str, *, endpoint_url: str | None = None,
                    region: str | None = None, as_json: bool = False, announce: str = "",
                    stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`fanout ingest FILE --stack NAME`: upload, follow, summarise. The same content
    uploaded again under the same key (no versioning) has the same job id, which the
    splitter does not start twice: that is said, and the job that loaded it is shown."""
    started = time.monotonic()
    stderr = stderr or sys.stderr
    stack = find_stack(stack_name, endpoint_url, region=region)
    if announce and not as_json:
        stderr.write(announce + "\n")
    key = stack.upload_prefix + file.name
    try:
        before = existing_job(stack, key)
        key, job = upload(stack, file, key=key)
    except (BotoCoreError, ClientError) as exc:
        raise StackError(f"cannot upload {file} to s3://{stack.bucket}/{stack.upload_prefix}: "
                         f"{describe(exc) or exc}") from exc
    loaded = job == before and ledger.get_job(stack.dynamodb, stack.ledger_table, job) is not None
    if not as_json:
        stderr.write(f"uploaded {file} to s3://{stack.bucket}/{key}: "
                     + (f"already loaded as job {job} (the same content; no new job started): "
                        "that job:\n" if loaded else f"job {job}\n"))
    return follow_and_report(stack, job, started=started, as_json=as_json, stdout=stdout,
                             stderr=stderr, already_loaded=loaded)
