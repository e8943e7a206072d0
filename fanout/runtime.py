"""What a handler runs with: settings, the mapping spec and the AWS clients, built once
per cold start (or handed in by the local runtime and the tests)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fanout.aws import Clients
from fanout.mapping import Spec, load_spec
from fanout.settings import Settings


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

    @classmethod
    def from_env(cls) -> Runtime:
        settings = Settings.from_env()
        return cls(settings, spec_from_settings(settings), Clients.create(
            endpoint_url=settings.endpoint_url, region=settings.region))


def spec_from_settings(settings: Settings) -> Spec:
    """The spec named by FANOUT_SPEC (a TOML path), FANOUT_SPEC_JSON (inline, as the
    stack passes it) or, failing both, the default spec from the key settings."""
    inline = os.environ.get("FANOUT_SPEC_JSON")
    if inline:
        return Spec.from_dict(json.loads(inline))
    if settings.spec_path:
        return load_spec(settings.spec_path)
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
    job = item["pk"]["S"]
    if "status" in item and "ledger_format" not in item and ledger.fail_old_format(ddb, table, job):
        item = ledger.raw_job(ddb, table, job)  # a job item of the previous format: failed now
    if item.get("status", {}).get("S") == ledger.FAILED:
        # A job of the previous ledger format, failed by this invocation or an earlier one.
        if "old_format" in item and "summary_published" not in item:
            _publish(runtime, job, {"JOB_ID": job, "STATUS": ledger.FAILED,
                                    "SOURCE": item.get("source", {}).get("S"),
                                    "ERROR": item.get("error", {}).get("S")})
        return
    if not ledger.should_settle(item):
        return
    left = remaining_s() if remaining_s else ledger.FOLD_LEASE_S
    settlement = ledger.settle(ddb, table, job, owner=owner or str(uuid.uuid4()), lease_s=left,
                               budget_s=max(0.0, min(ledger.FOLD_BUDGET_S, left / 3)),
                               clock=runtime.clock,
                               writer_timeout_s=runtime.settings.writer_timeout_s)
    if settlement and settlement.summary:
        _publish(runtime, job, settlement.summary)


def _publish(runtime: Runtime, job: str, summary: dict[str, Any]) -> None:
    from fanout import ledger

    if runtime.settings.topic_arn and runtime.clients.sns is not None:
        publish_summary(runtime.clients.sns, runtime.settings.topic_arn, summary)
        ledger.mark_published(runtime.clients.dynamodb, runtime.settings.ledger_table_name, job)


def publish_summary(sns: Any, topic_arn: str, summary: dict[str, Any]) -> None:
    """Publish a job's completion summary to SNS (when a topic is configured)."""
    if not topic_arn or sns is None:
        return
    sns.publish(
        TopicArn=topic_arn,
        Subject=f"fanout job {summary.get('STATUS', '')}: {summary.get('JOB_ID', '')}"[:100],
        Message=json.dumps(summary, default=str),
    )
