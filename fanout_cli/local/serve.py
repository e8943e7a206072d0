"""`fanout serve`: the real stack (`infra/app.py`) deployed into MiniStack on 127.0.0.1,
running until Ctrl-C or SIGTERM.

MiniStack starts on a free loopback port, `cdk bootstrap` and `cdk deploy` run against it
(fanout_cli/local/ministack.py), and the terminal then shows a banner with the stack's
outputs and what to export, followed by what the pipeline does: uploads seen, jobs
split, rows/s while they load, and each job's outcome, whether its writers or the
reconciler ended it (the stack's EventBridge rule, which MiniStack fires every minute,
runs it in the writer: COMPLETE, or STALLED with what is missing). MiniStack's own output
goes to a log file, not the terminal. Stopping ends MiniStack and its Lambda workers.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import (
    DeployedStack,
    StackError,
    find_stack,
    ingest_to_stack,
    job_elapsed_s,
    job_for_key,
    settled_rows,
    stall_text,
)
from fanout_cli.progress import format_duration, format_rate
from fanout_cli.target import Target

ACTIVITY_POLL_S = 1.0
PROGRESS_EVERY_S = 5.0


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: unwind, stopping MiniStack on the way out."""


def banner(deployment: ministack.Deployment, emulator_log: Path, cdk_log: Path) -> str:
    """What an operator needs: endpoint, names, what to export and commands to paste.
    The AWS CLI lines pass --endpoint-url: the pinned CLI (v1) does not read
    AWS_ENDPOINT_URL for every service (`aws sqs` goes to AWS without it)."""
    o, endpoint, name = deployment.outputs, deployment.endpoint_url, deployment.stack_name
    upload = f"s3://{o['BucketName']}/{o.get('UploadPrefix', 'uploads/')}"
    exports = " ".join(f"{k}={v}" for k, v in ministack.client_env(endpoint).items())
    target = Target(name, endpoint, ministack.REGION, "--endpoint-url")
    aws = 'aws --endpoint-url "$AWS_ENDPOINT_URL"'
    return "\n".join([
        f"fanout serve: stack {name!r} (infra/app.py, deployed with the cdk CLI) is running "
        f"in MiniStack {ministack.MINISTACK_VERSION} at {endpoint}",
        *(f"  {key:<22}{value}" for key, value in sorted(o.items())),
        "",
        f"in another terminal ({target.line()}):",
        f"  export {exports}",
        f"  {aws} s3 cp data.csv {upload}",
        f"  fanout ingest data.csv --stack {name} --endpoint-url {endpoint}",
        f"  fanout status JOB --stack {name} --endpoint-url {endpoint}",
        f"  dlq-replayer inspect --stack {name} --endpoint-url {endpoint}",
        f"  {aws} logs filter-log-events --log-group-name {o.get('WriterLogGroup', '')}",
        "",
        f"MiniStack's log: {emulator_log}   cdk's log: {cdk_log}",
        "Ctrl-C stops MiniStack and its Lambda workers (all state is in memory and goes with it).",
        "",
    ]) + "\n"


@dataclass
class Watched:
    key: str
    status: str | None = None
    last_progress: float = 0.0


def upload_suffixes(stack: DeployedStack) -> tuple[str, ...]:
    """The suffixes whose uploads start the splitter: the bucket's notification filters."""
    config = stack.s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    suffixes = []
    for notification in config.get("LambdaFunctionConfigurations", []):
        rules = notification.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        suffixes += [rule["Value"] for rule in rules if rule.get("Name", "").lower() == "suffix"]
    return tuple(dict.fromkeys(suffixes)) or (".csv",)


def why_no_job(key: str, suffixes: tuple[str, ...]) -> str | None:
    """Why an upload under the prefix starts no job (None: it starts one). S3's suffix
    filter is case-sensitive, and .csv.gz is a name only a gzip stack listens for."""
    if key.endswith(suffixes):
        return None
    name = key.rsplit("/", 1)[-1]
    if name.lower().endswith(".csv.gz") and ".csv.gz" not in suffixes:
        return (f"no job: {name} ends in .csv.gz, which only a stack deployed with -c gzip=true "
                "takes (or name it .csv: gzip is told by its first bytes)")
    matched = next((suffix for suffix in suffixes if name.lower().endswith(suffix.lower())), None)
    if matched is not None:
        return (f"no job: the upload filter is case-sensitive ({', '.join(suffixes)}): "
                f"name it {name[:-len(matched)]}{matched}")
    return f"no job: only names ending in {' or '.join(suffixes)} start one"


class Activity:
    """Prints what the pipeline does: one ListObjectsV2 of the upload prefix and one
    GetItem per unfinished job a poll. An upload that starts no job says why."""

    def __init__(self, stack: DeployedStack, stream: TextIO,
                 clock: Callable[[], float] = time.monotonic,
                 suffixes: tuple[str, ...] | None = None) -> None:
        self.stack, self.stream, self.clock = stack, stream, clock
        self.suffixes = suffixes  # read from the bucket at the first poll
        self.seen: dict[str, tuple[Any, str | None]] = {}  # key: (LastModified, job)
        self.jobs: dict[str, Watched] = {}

    def say(self, text: str) -> None:
        self.stream.write(f"{time.strftime('%H:%M:%S')}  {text}\n")
        self.stream.flush()

    def poll(self) -> None:
        if self.suffixes is None:
            self.suffixes = upload_suffixes(self.stack)
        pages = self.stack.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.stack.bucket, Prefix=self.stack.upload_prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                self.upload_seen(obj)
        for job, watched in list(self.jobs.items()):
            item = ledger.get_job(self.stack.dynamodb, self.stack.ledger_table, job)
            if item is not None:
                self.report(job, watched, item)

    def upload_seen(self, obj: Mapping[str, Any]) -> None:
        """Say what an object new under the prefix (or uploaded again) does."""
        key = obj["Key"]
        previous = self.seen.get(key)
        if previous is not None and previous[0] == obj["LastModified"]:
            return
        where = f"upload  s3://{self.stack.bucket}/{key} ({obj['Size']:,} bytes)"
        reason = why_no_job(key, self.suffixes or (".csv",))
        if reason is not None:
            self.seen[key] = (obj["LastModified"], None)
            self.say(f"{where}: {reason}")
            return
        job = job_for_key(self.stack, key)
        self.seen[key] = (obj["LastModified"], job)
        if previous is not None and previous[1] == job:
            self.say(f"{where}: the same content again: already loaded as job {job}; "
                     "no new job started")
            return
        self.jobs[job] = Watched(key)
        self.say(f"{where}: job {job}")

    def report(self, job: str, watched: Watched, item: Mapping[str, Any]) -> None:
        status = item.get("status")
        if status != watched.status:
            watched.status = status
            if status == ledger.SPLITTING:
                self.say(f"job {job}: splitting")
            elif status == ledger.RUNNING:
                self.say(f"job {job}: split into {item.get('messages_total', 0):,} messages "
                         f"({item.get('rows_read', 0):,} rows); the writers are loading")
            elif status == ledger.COMPLETE:
                self.say(f"job {job}: COMPLETE: {outcome(item)}")
            elif status == ledger.FAILED:
                self.say(f"job {job}: FAILED: {item.get('error')}")
            elif status == ledger.STALLED:
                # The reconciler's verdict; the job is still watched, since it completes
                # if its missing messages come after all (a DLQ redrive).
                self.say(f"job {job}: STALLED: {stall_text(item)}")
            elif status == ledger.CANCELLING:
                self.say(f"job {job}: CANCELLING (by {item.get('cancelled_by')} at "
                         f"{item.get('cancelled_at')}): the writers drop its remaining messages")
            elif status == ledger.CANCELLED:
                self.say(f"job {job}: CANCELLED by {item.get('cancelled_by')}: {outcome(item)}")
        if status in (ledger.COMPLETE, ledger.FAILED, ledger.CANCELLED):
            del self.jobs[job]
            return
        now = self.clock()
        if now - watched.last_progress >= PROGRESS_EVERY_S and status in (ledger.RUNNING,
                                                                         ledger.CANCELLING):
            watched.last_progress = now
            self.say(f"job {job}: {settled_rows(dict(item)):,} of {item.get('rows_read', 0):,} "
                     "rows settled so far")


def outcome(item: Mapping[str, Any]) -> str:
    elapsed = job_elapsed_s(dict(item)) or 0.0
    rows = int(item.get("rows_read", 0))
    counts = {name: int(item.get(f"rows_{name}", 0)) for name in ledger.OUTCOMES}
    outcomes = ", ".join(f"{counts[name]:,} {name.replace('_', ' ')}"
                         for name in ledger.outcomes_shown(item.get("mode"), counts))
    return (f"{rows:,} rows read, {outcomes} in {format_duration(elapsed)} "
            f"({format_rate(rows, elapsed, 'rows')})")


def serve_forever(*, port: int = 0, stack_name: str = "fanout",
                  context: Mapping[str, str] | None = None, stream: TextIO = sys.stdout,
                  ingest: Path | None = None) -> int:
    """Start, deploy, show activity until SIGINT or SIGTERM; always stop MiniStack.
    With `ingest`, load that file through the stack instead (`make demo`), then stop and
    return its exit code."""
    def on_signal(signum: int, _frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    emulator = ministack.MiniStack(port=port)
    cdk_log = emulator.log_path.with_suffix(".cdk.log")
    try:
        stream.write(f"fanout serve: starting MiniStack on {emulator.endpoint_url}, then "
                     "cdk bootstrap and cdk deploy (about 30 s)\n")
        stream.flush()
        with ministack.local_stack(emulator=emulator, stack_name=stack_name, log=cdk_log,
                                   context=context) as (_, deployment):
            if ingest is not None:
                return ingest_to_stack(ingest, stack_name, endpoint_url=deployment.endpoint_url,
                                       region=ministack.REGION)
            stream.write(banner(deployment, emulator.log_path, cdk_log))
            stream.flush()
            activity = Activity(find_stack(stack_name, deployment.endpoint_url), stream)
            while True:
                try:
                    activity.poll()
                except Stopped:
                    raise
                except Exception as exc:  # the emulator busy or a stray object: say, go on
                    activity.say(f"(could not read the pipeline's state: {exc})")
                time.sleep(ACTIVITY_POLL_S)
    except Stopped:
        stream.write("fanout serve: stopping MiniStack and its Lambda workers\n")
        stream.flush()
        return 0
    except (ministack.MiniStackError, StackError) as exc:
        sys.stderr.write(f"fanout serve: error: {' '.join(str(exc).split())}\n")
        return 1
    finally:
        for sig in previous:  # a second Ctrl-C must not interrupt the cleanup
            signal.signal(sig, signal.SIG_IGN)
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
