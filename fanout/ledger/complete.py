"""Completion: the job's status flip to COMPLETE once every message is counted, exactly
once, and the counts moved after it by a replay or a late duplicate."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from fanout.ledger.folding import FoldLost, fold
from fanout.ledger.layout import (
    CANCELLED,
    CANCELLING,
    COMPLETE,
    FOLD_BUDGET_S,
    FOLD_LEASE_S,
    JOB_SK,
    OUTCOMES,
    RUNNING,
    STALLED,
    TALLY_SK,
    WRITER_TIMEOUT_S,
    Clock,
    _active_key,
    _canceled_on,
    _conditional_failed,
    _key,
    _n,
    _n_time,
    _outcome_values,
    _s,
    now_iso,
    outcomes_shown,
    plain,
    raw_job,
)


@dataclass(frozen=True)
class Settlement:
    """What settling found: the job's status and, for the caller that must publish it,
    the summary (the one that completed the job, or a later one while no summary is
    recorded as published)."""

    status: str
    summary: dict[str, Any] | None = None


COMPLETE_ATTEMPTS = 5


# The job item's counts: `rows_<outcome>` for every outcome, set from `_outcome_values`.
ROWS_SET = ", ".join(f"rows_{name} = :rows_{name}" for name in OUTCOMES)


def settle(ddb: Any, ledger_table: str, job: str, *, owner: str, lease_s: float = FOLD_LEASE_S,
           budget_s: float = FOLD_BUDGET_S, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep,
           writer_timeout_s: float = WRITER_TIMEOUT_S) -> Settlement | None:
    """Fold the job's new log records; complete the job when its count of distinct
    messages reaches messages_total, or move a completed job's counts after a replay or a
    late duplicate. None when another folder has the work, or the fold stopped at a
    ticket whose writer may still be alive (see `fold`).

    The completion is one transaction: the status flip RUNNING → COMPLETE, conditional on
    the tally holding no ticket the fold has not read, which marks the tally complete
    too. So it happens once, and its counts (the published summary's) include every
    report recorded before it; a report that came in meanwhile (a replay, say) makes this
    folder fold again and retry. A settle after completion sees the mark in the tally
    the fold reads, and goes straight to moving the counts."""
    for _ in range(COMPLETE_ATTEMPTS):
        try:
            state = fold(ddb, ledger_table, job, owner=owner, lease_s=lease_s, budget_s=budget_s,
                         clock=clock, sleep=sleep, writer_timeout_s=writer_timeout_s)
        except FoldLost:
            return None  # another folder has the work
        # (A job cancelled during its split, whose splitter never recorded its end, has no
        # messages_total: the reconciler ended it, and only its counts can move.)
        if state is None or (state.messages_total is None and not state.complete):
            return None
        values = {**_outcome_values(state.totals.counts, "rows_"), ":c": _n(state.cursor),
                  ":complete": _s(COMPLETE), ":cancelled": _s(CANCELLED)}
        if state.complete:
            break
        if state.messages_total is None or state.stalled is not None or \
                state.totals.distinct < state.messages_total:
            return None
        # A cancelled job ends CANCELLED, from CANCELLING only; any other COMPLETE, from
        # RUNNING or STALLED, only while the tally has no cancel: a cancel that commits
        # between this fold and this transaction fails it, and the next try (it folds
        # again) ends the job CANCELLED. So a cancel racing the last report ends the job in
        # exactly one of the two, with the counts of the same fold.
        ended, value, was = ((CANCELLED, ":cancelled", "#st = :cancelling") if state.cancelled
                             else (COMPLETE, ":complete", "#st IN (:running, :stalled)"))
        tickets = "tickets = :c" if state.cursor else "(attribute_not_exists(tickets) OR tickets = :c)"
        try:
            ddb.transact_write_items(TransactItems=[
                {"Update": {
                    "TableName": ledger_table, "Key": _key(job, TALLY_SK),
                    "UpdateExpression": "SET completed_at = :t",
                    "ConditionExpression": tickets + (" AND attribute_exists(cancelled_at)"
                                                      if state.cancelled
                                                      else " AND attribute_not_exists(cancelled_at)"),
                    "ExpressionAttributeValues": {":c": _n(state.cursor), ":t": _s(now_iso(clock))}}},
                {"Update": {
                    "TableName": ledger_table, "Key": _key(job, JOB_SK),
                    # A STALLED job completes too, when what it missed came after all; its
                    # stall summary was published, this one is published again.
                    "UpdateExpression": f"SET #st = {value}, finished_at = :t, "
                                        f"{ROWS_SET}, counted_through = :c, publish_until = :pu "
                                        "REMOVE summary_published",
                    "ConditionExpression": was,
                    "ExpressionAttributeNames": {"#st": "status"},
                    "ExpressionAttributeValues": {k: v for k, v in values.items()
                                                  if k not in (":complete", ":cancelled")} | {
                                                           ":t": _s(now_iso(clock)),
                                                           value: _s(ended),
                                                           **({":cancelling": _s(CANCELLING)}
                                                              if state.cancelled else
                                                              {":running": _s(RUNNING),
                                                               ":stalled": _s(STALLED)}),
                                                           ":pu": _n(int(clock() + lease_s))}}},
                # In the active index until its summary is published (`mark_published`), so
                # the reconciler publishes it if this invocation dies first.
                {"Put": {"TableName": ledger_table,
                         "Item": {**_active_key(job), "since": _n_time(clock())}}},
            ])
            return Settlement(ended, completion_summary(plain(raw_job(ddb, ledger_table, job))))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            if _canceled_on(exc, 1) and not _canceled_on(exc, 0):
                break  # not RUNNING: completed by another settle (or failed)
            # Reports (or a cancel) came in since this fold: fold them too, and try again.
    else:
        return None  # reports keep coming: their own settles complete the job
    # Completed (or cancelled) earlier: a replay or a late duplicate came in. A job the
    # reconciler cancelled with messages missing names what is still missing; one cancelled
    # during its split, whose end was never recorded, has read what its writers reported.
    update = f"SET {ROWS_SET}, counted_through = :c"
    if state.messages_total is None:
        update += ", rows_read = :sum"
        values[":sum"] = _n(state.totals.counts.rows)
    elif state.totals.distinct < state.messages_total:
        update += ", missing_messages = :missing"
        values[":missing"] = _n(state.messages_total - state.totals.distinct)
    else:
        update += " REMOVE missing_messages, missing_seqs"
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, JOB_SK),
            UpdateExpression=update,
            ConditionExpression="#st IN (:complete, :cancelled) AND counted_through < :c",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
    job_item = raw_job(ddb, ledger_table, job)
    status = job_item.get("status", {}).get("S", "")
    if status in (COMPLETE, STALLED, CANCELLED) and claim_publish(ddb, ledger_table, job, lease_s, clock):
        return Settlement(status, completion_summary(plain(raw_job(ddb, ledger_table, job))))
    return Settlement(status)


def claim_publish(ddb: Any, ledger_table: str, job: str, lease_s: float, clock: Clock) -> bool:
    """Whether this invocation publishes the ended job's summary: none is recorded as
    published and no other invocation holds the claim (the one that ended the job takes it
    in the same write). A claim lasts `lease_s`, the claimer's time left, so a claimer that
    died leaves it to the next settle or the reconciler: at least once, and once when
    nothing fails."""
    now = clock()
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, JOB_SK),
            UpdateExpression="SET publish_until = :pu",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(summary_published) "
                                "AND (attribute_not_exists(publish_until) OR publish_until < :now)",
            ExpressionAttributeValues={":pu": _n(int(now + lease_s)), ":now": _n(int(now))},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def release_publish(ddb: Any, ledger_table: str, job: str) -> None:
    """A publish failed: give the claim up, so the retry (or any settle) publishes at once."""
    ddb.update_item(TableName=ledger_table, Key=_key(job, JOB_SK),
                    UpdateExpression="REMOVE publish_until",
                    ConditionExpression="attribute_exists(pk)")


def mark_published(ddb: Any, ledger_table: str, job: str, *, status: str | None = None,
                   clock: Clock = time.time) -> None:
    """SNS has taken the job's summary (or there is no topic to take it): later reports
    need not publish it again, and the job leaves the active index, unless a report came
    after its completion (`record_batch` put it back with its ticket: the reconciler
    removes it once that report is folded). With `status` (the published summary's), only
    while the job still has it: a STALLED summary published after the job completed must
    not mark the COMPLETE one as published."""
    try:
        ddb.update_item(TableName=ledger_table, Key=_key(job, JOB_SK),
                        UpdateExpression="SET summary_published = :t",
                        **({"ConditionExpression": "#st = :status",
                            "ExpressionAttributeNames": {"#st": "status"}} if status else {}),
                        ExpressionAttributeValues={":t": _s(now_iso(clock)),
                                                   **({":status": _s(status)} if status else {})})
    except ClientError as exc:
        if _conditional_failed(exc):
            return  # the job moved on: its new summary is still to be published
        raise
    try:
        ddb.delete_item(TableName=ledger_table, Key=_active_key(job),
                        ConditionExpression="attribute_not_exists(at_ticket)")
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise


SUMMARY_NAMES = {"written": "TOTAL_NUMBER_OF_ITEMS_WRITTEN",
                 "rejected": "TOTAL_NUMBER_OF_ITEMS_IN_ERROR",
                 "superseded": "TOTAL_NUMBER_OF_ROWS_SUPERSEDED",
                 "deleted": "TOTAL_NUMBER_OF_ITEMS_DELETED",
                 "skipped_existing": "TOTAL_NUMBER_OF_ROWS_SKIPPED_EXISTING",
                 "cancelled": "TOTAL_NUMBER_OF_ROWS_CANCELLED"}


def completion_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """The summary published on completion, with the seed design's field names; a job of
    another write mode than put adds WRITE_MODE and its own outcomes (`outcomes_shown`)."""
    mode = job.get("mode")
    counts = {name: int(job.get(f"rows_{name}") or 0) for name in OUTCOMES}
    summary = {
        "JOB_ID": job.get("pk"),
        "STATUS": job.get("status"),
        "SOURCE": job.get("source"),
        **({"WRITE_MODE": mode} if mode else {}),
        "TOTAL_NUMBER_OF_ROWS_READ": job.get("rows_read"),
        # Of those, rows with fewer fields than the header, padded (information, not an outcome).
        **({"TOTAL_NUMBER_OF_ROWS_PADDED": job["rows_padded"]} if job.get("rows_padded") else {}),
        **{SUMMARY_NAMES[name]: job.get(f"rows_{name}") for name in outcomes_shown(mode, counts)
           if name != "cancelled" or job.get("status") != CANCELLED},
        "DESTINATION_TABLE_NAME": job.get("table"),
        "ERROR_DATA_LOCATION": job.get("error_location"),
    }
    if job.get("status") == CANCELLED:
        summary |= {SUMMARY_NAMES["cancelled"]: counts["cancelled"],
                    "CANCELLED_AT": job.get("cancelled_at"), "CANCELLED_BY": job.get("cancelled_by")}
    if job.get("status") in (STALLED, CANCELLED) and (
            "missing_messages" in job or "stall_reason" in job):
        # What is missing: the rows no outcome holds (so the summary still sums to rows
        # read), the messages, the first seqs, and why.
        summary["TOTAL_NUMBER_OF_ROWS_MISSING"] = max(
            0, int(job.get("rows_read") or 0) - sum(counts.values()))
        summary |= {"MISSING_MESSAGES": job.get("missing_messages"),
                    "MISSING_SEQS": job.get("missing_seqs", []),
                    "STALL_REASON": job.get("stall_reason"),
                    "LAST_PROGRESS_AT": now_iso(lambda: float(job.get("last_progress_at") or 0))}
    return summary
