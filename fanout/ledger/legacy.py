"""Jobs of the previous ledger format (see the door's Upgrades): failed with their id and
the reason, never left RUNNING."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from fanout.ledger.layout import (
    FAILED,
    JOB_SK,
    RUNNING,
    SPLITTING,
    Clock,
    _conditional_failed,
    _key,
    _s,
    job_id,
    now_iso,
)

OLD_FORMAT_ERROR = (
    "job {job} was started by an earlier fanout version, whose jobs ledger counted "
    "differently; its rows were written but it cannot be counted exactly. Upload the file "
    "again under a new key (or with a new version) to load and count it."
)


def fail_old_format(ddb: Any, ledger_table: str, job: str, *, clock: Clock = time.time) -> bool:
    """Fail a job of the previous ledger format that is still in flight, with its id and
    the reason; True for the one caller whose update failed it."""
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, JOB_SK),
            UpdateExpression="SET #st = :failed, #err = :e, finished_at = :t, old_format = :true "
                             "REMOVE split_lease_until",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(ledger_format) "
                                "AND #st IN (:splitting, :running)",
            ExpressionAttributeNames={"#st": "status", "#err": "error"},
            ExpressionAttributeValues={":failed": _s(FAILED), ":e": _s(OLD_FORMAT_ERROR.format(job=job)),
                                       ":t": _s(now_iso(clock)), ":splitting": _s(SPLITTING),
                                       ":running": _s(RUNNING), ":true": {"BOOL": True}},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def is_old_format_job(item: Mapping[str, Any]) -> bool:
    """A job item (not a tally) written by the previous ledger format."""
    return "status" in item and "ledger_format" not in item


def old_format_summary(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """For a job of the previous format that `fail_old_format` failed and whose summary
    SNS has not taken yet: the summary to publish; else None."""
    if "old_format" not in item or "summary_published" in item:
        return None
    return {"JOB_ID": job_id(item), "STATUS": FAILED, "SOURCE": item.get("source", {}).get("S"),
            "ERROR": item.get("error", {}).get("S")}
