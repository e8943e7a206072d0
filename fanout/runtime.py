"""What a handler runs with: settings, the mapping spec and the AWS clients, built once
per cold start (or handed in by the local runtime and the tests)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fanout.aws import Clients
from fanout.mapping import Spec, SpecError, load_spec
from fanout.settings import BASE_REQUIRED, Settings, SettingsError
from fanout.telemetry import subsegment


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    spec: Spec
    clients: Clients
    # How the splitter hands over to a fresh invocation: None means an asynchronous
    # Lambda invoke of itself; the local runtime passes its own trigger.
    continue_split: Callable[[dict[str, Any]], None] | None = None
    # The ledger's wall clock (ticket stamps, the age of a hole, leases); tests move it.
    clock: Callable[[], float] = time.time
    # How the ledger waits (a fold polling for a record that is on its way); tests pass theirs.
    sleep: Callable[[float], None] = time.sleep
    # The jobs this process learned were cancelled (a writer's ledger report returns the
    # tally, which says so): the writer drops their next messages (see writer.load).
    cancelled_jobs: dict[str, None] = field(default_factory=dict)

    @classmethod
    def from_env(cls, required: Sequence[str] = BASE_REQUIRED) -> Runtime:
        """At cold start: settings (every variable in `required` set, every value valid),
        the spec and the clients; a missing or malformed setting raises SettingsError."""
        settings = Settings.from_env(required=required)
        clients = Clients.create(endpoint_url=settings.endpoint_url, region=settings.region)
        return cls(settings, spec_from_settings(settings, clients.s3), clients)


def spec_from_settings(settings: Settings, s3: Any = None) -> Spec:
    """The spec from FANOUT_SPEC_JSON (inline, as the stack passes it), FANOUT_SPEC_S3 (an
    S3 object, for a spec too large for the environment), FANOUT_SPEC (a TOML path) or,
    failing all, the default spec from the key settings."""
    name = ("FANOUT_SPEC_JSON" if settings.spec_json else
            "FANOUT_SPEC_S3" if settings.spec_s3 else "FANOUT_SPEC")
    try:
        if settings.spec_json:
            return Spec.from_dict(json.loads(settings.spec_json))
        if settings.spec_s3:
            bucket, _, key = settings.spec_s3.removeprefix("s3://").partition("/")
            if not bucket or not key or s3 is None:
                raise SpecError(f"{settings.spec_s3!r} is not an s3://BUCKET/KEY to read")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return Spec.from_dict(json.loads(body))
        if settings.spec_path:
            return load_spec(settings.spec_path)
    except (ValueError, SpecError) as exc:  # json.JSONDecodeError is a ValueError
        raise SettingsError(f"{name}: {exc}") from None
    return Spec.default(settings.partition_key, settings.sort_key)


class RuntimeSlot:
    """A lazily built Runtime per handler module (`build`, Runtime.from_env by default);
    `use` swaps it (local runtime, tests)."""

    def __init__(self, build: Callable[[], Runtime] | None = None) -> None:
        self._runtime: Runtime | None = None
        self._build = build or Runtime.from_env
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = self._build()
        return self._runtime

    def build_in_lambda(self) -> None:
        """Inside Lambda, build now, in the init phase: a missing or malformed setting then
        fails the cold start, loudly, before any event is taken. (Tests and the embedded
        runtime import the handlers outside Lambda and hand in their own Runtime.)"""
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            self.get()

    def use(self, runtime: Runtime | None) -> None:
        self._runtime = runtime


def settle_job(runtime: Runtime, item: Mapping[str, Any], *, owner: str | None = None,
               remaining_s: Callable[[], float] | None = None) -> None:
    """After a job's tally moved (or the splitter finished it): fold its new log records
    when `ledger.should_settle` says so, complete it once every message is counted, move
    a completed job's counts after a replay or a late duplicate, and publish its summary
    until SNS has taken it: a publish that fails fails the invocation, and the retry
    publishes again (at least once; subscribers can deduplicate on JOB_ID).

    `remaining_s` is the invocation's time left: the fold's lease lasts no longer, so a
    folder that was killed never holds it past its own end."""
    from fanout import ledger

    ddb, table = runtime.clients.dynamodb, runtime.settings.ledger_table_name
    if not item:
        return
    job = ledger.job_id(item)
    if ledger.is_old_format_job(item) and ledger.fail_old_format(ddb, table, job,
                                                                 clock=runtime.clock):
        item = ledger.raw_job(ddb, table, job)  # a job item of the previous format: failed now
    if ledger.status_of(item) == ledger.FAILED:
        # A job of the previous ledger format, failed by this invocation or an earlier one.
        summary = ledger.old_format_summary(item)
        if summary:
            _publish(runtime, job, summary)
        return
    if not ledger.should_settle(item):
        return
    left = remaining_s() if remaining_s else ledger.FOLD_LEASE_S
    with subsegment("ledger settle", job=job):
        settlement = ledger.settle(ddb, table, job, owner=owner or str(uuid.uuid4()),
                                   lease_s=left,
                                   budget_s=max(0.0, min(ledger.FOLD_BUDGET_S, left / 3)),
                                   clock=runtime.clock, sleep=runtime.sleep,
                                   writer_timeout_s=runtime.settings.writer_timeout_s)
    if settlement and settlement.summary:
        _publish(runtime, job, settlement.summary)


def reconcile_jobs(runtime: Runtime, *, owner: str | None = None,
                   remaining_s: Callable[[], float] | None = None) -> list[Any]:
    """The reconciler's run (see fanout/ledger/reconciler.py): settle every active job,
    stall the ones without progress for `settings.stall_after_s`, and publish the summaries
    of the jobs that ended (at least once: a publish that fails fails this run, and the
    job stays in the active index for the next). Returns what ended, as `Reconciled`."""
    from fanout import ledger

    try:
        ended = ledger.reconcile(
            runtime.clients.dynamodb, runtime.settings.ledger_table_name,
            owner=owner or str(uuid.uuid4()), time_left=remaining_s or (lambda: ledger.FOLD_LEASE_S),
            stall_after_s=runtime.settings.stall_after_s, clock=runtime.clock, sleep=runtime.sleep,
            writer_timeout_s=runtime.settings.writer_timeout_s)
    except ledger.ReconcileIncomplete as incomplete:
        for done in incomplete.ended:  # what it ended is announced; then the run fails
            _publish(runtime, done.job, done.summary)
        raise
    for done in ended:
        _publish(runtime, done.job, done.summary)
    return ended


def _publish(runtime: Runtime, job: str, summary: dict[str, Any]) -> None:
    """Publish (when there is a topic) and record it: the job leaves the active index."""
    from fanout import ledger

    if runtime.settings.topic_arn and runtime.clients.sns is not None:
        try:
            publish_summary(runtime.clients.sns, runtime.settings.topic_arn, summary)
        except Exception:
            with contextlib.suppress(Exception):  # else the claim expires with this invocation
                ledger.release_publish(runtime.clients.dynamodb,
                                       runtime.settings.ledger_table_name, job)
            raise
    ledger.mark_published(runtime.clients.dynamodb, runtime.settings.ledger_table_name, job,
                          status=summary.get("STATUS"), clock=runtime.clock)


def publish_summary(sns: Any, topic_arn: str, summary: dict[str, Any]) -> None:
    """Publish a job's completion summary to SNS (when a topic is configured)."""
    if not topic_arn or sns is None:
        return
    sns.publish(
        TopicArn=topic_arn,
        Subject=f"fanout job {summary.get('STATUS', '')}: {summary.get('JOB_ID', '')}"[:100],
        Message=json.dumps(summary, default=str),
    )
