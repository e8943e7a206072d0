"""An operator's cancel: the job item CANCELLING with who and when, the tally marked so the
writers learn of it from the ticket ADD they already make, and the job back in the active
index so the reconciler ends it (`cancel_job`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from fanout.ledger.layout import (
    CANCELLED,
    CANCELLING,
    JOB_SK,
    RUNNING,
    SPLITTING,
    STALLED,
    TALLY_SK,
    Clock,
    _active_key,
    _canceled_on,
    _key,
    _n_time,
    _s,
    now_iso,
    plain,
    raw_job,
    status_of,
)


@dataclass(frozen=True)
class CancelOutcome:
    """What `cancel_job` did: `cancelled` (this call moved the job to CANCELLING), or not,
    with the job as it is (`job` is None when there is no such job)."""

    cancelled: bool
    job: dict[str, Any] | None

    @property
    def status(self) -> str:
        return str((self.job or {}).get("status", ""))


def cancel_job(ddb: Any, ledger_table: str, job: str, *, by: str,
               clock: Clock = time.time) -> CancelOutcome:
    """Move a SPLITTING, RUNNING or STALLED job to CANCELLING, in one transaction with the
    tally's `cancelled_at` (what writers read) and its active item. A job in any other
    status (COMPLETE, FAILED, already CANCELLING or CANCELLED, none) is left as it is.

    Retried after a lost reply: the same ClientRequestToken, applied once; a later retry
    finds the job CANCELLING and says so (`cancelled` False, status CANCELLING)."""
    now = clock()
    stamp = now_iso(lambda: now)
    try:
        ddb.transact_write_items(TransactItems=[
            {"Update": {
                "TableName": ledger_table, "Key": _key(job, JOB_SK),
                # A STALLED job's summary was published: the cancel's is still to come.
                "UpdateExpression": "SET #st = :cancelling, cancelled_at = :t, cancelled_by = :by, "
                                    "cancelled_from = #st REMOVE summary_published",
                "ConditionExpression": "#st IN (:splitting, :running, :stalled)",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":cancelling": _s(CANCELLING), ":t": _s(stamp), ":by": _s(by[:200]),
                    ":splitting": _s(SPLITTING), ":running": _s(RUNNING), ":stalled": _s(STALLED)}}},
            {"Update": {"TableName": ledger_table, "Key": _key(job, TALLY_SK),
                        "UpdateExpression": "SET cancelled_at = :t",
                        "ExpressionAttributeValues": {":t": _s(stamp)}}},
            # A STALLED job may have left the index: the reconciler must come back for it.
            {"Put": {"TableName": ledger_table,
                     "Item": {**_active_key(job), "since": _n_time(now)}}},
        ])
    except ClientError as exc:
        if not _canceled_on(exc, 0):
            raise
        item = raw_job(ddb, ledger_table, job)
        return CancelOutcome(False, plain(item) if item else None)
    return CancelOutcome(True, plain(raw_job(ddb, ledger_table, job)))


def is_cancelled(item: Mapping[str, Any]) -> bool:
    """Whether a (raw) tally, as `record_batch` returns it, or job item says the job was
    cancelled: the writer's signal to drop the job's next messages."""
    return "cancelled_at" in item or status_of(item) in (CANCELLING, CANCELLED)
