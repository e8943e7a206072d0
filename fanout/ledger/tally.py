"""The tally and the log: a writer invocation takes a ticket from the job's tally and
writes its log record under it (`record_batch`); `should_settle` says when it folds."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fanout.ledger import layout
from fanout.ledger.layout import (
    CANCELLING,
    COMPLETE,
    EXPIRES_AT,
    HOLE_WAIT_S,
    LOG_EXPIRY_S,
    RUNNING,
    TALLY_SK,
    MessageCounts,
    _active_key,
    _conditional_failed,
    _encode_entries,
    _key,
    _log_sk,
    _n,
    _n_time,
    _own_commit,
    _s,
    raw_job,
)
from fanout.ledger.legacy import fail_old_format
from fanout.ledger.log import _void


class TicketVoided(RuntimeError):
    """The folder voided this invocation's log ticket (it waited too long for the record):
    the invocation must fail, so SQS delivers its messages again under a new ticket."""


def record_batch(
    ddb: Any, ledger_table: str, request_id: str, results: Mapping[str, Mapping[str, MessageCounts]],
    *, clock: Callable[[], float] = time.time,
) -> list[dict[str, Any]]:
    """Record the messages one writer invocation finished, per job: a ticket from the
    job's tally, then the log record under it. Returns each job's tally as it is now (see
    `fanout.runtime.settle_job` for what follows), or, for a job of the previous ledger
    format, its job item, failed.

    The ticket's ADD stamps the tally with this writer's clock (`ticket_at`) and returns
    the stamp it replaced, the previous ticket's; the record carries that (`prev_at`), so
    a folder that meets the previous ticket's hole knows when it was handed out (see
    `fanout.ledger.folding.HolePolicy`). A record put that fails with an AWS error voids its own ticket
    before the error fails the batch, so a writer that is alive never leaves a hole.

    Lost replies: a record put retried after it committed finds its own record and goes
    on; a ticket ADD applied twice (its reply lost, botocore retried it) leaves the first
    ticket without a record, and the ADD's token, found in the tally it replaced, tells
    this writer to void that ticket at once."""
    updated = []
    for job, messages in results.items():
        if not messages:
            continue
        asked = clock()
        # One token per call: botocore's retry of a call whose reply was lost sends the same
        # token, so the ADD that finds its own token in the tally knows the ticket before its
        # own was taken by its first, committed try: a phantom nobody will write.
        token = f"{request_id[:48]}:{uuid.uuid4().hex[:12]}"
        old = ddb.update_item(
            TableName=ledger_table, Key=_key(job, TALLY_SK),
            UpdateExpression="ADD tickets :one, messages_reported :n SET ticket_at = :now, "
                             "ticket_by = :by",
            ExpressionAttributeValues={":one": _n(1), ":n": _n(len(messages)), ":now": _n_time(asked),
                                       ":by": _s(token)},
            ReturnValues="ALL_OLD",
        ).get("Attributes", {})
        if "ledger_format" not in old:
            job_item = raw_job(ddb, ledger_table, job)
            if job_item and "ledger_format" not in job_item:
                fail_old_format(ddb, ledger_table, job, clock=clock)
                updated.append(raw_job(ddb, ledger_table, job))
                continue
        ticket = int(old.get("tickets", {}).get("N", "0")) + 1
        tally = {**old, **_key(job, TALLY_SK), "tickets": _n(ticket), "ticket_at": _n_time(asked),
                 "messages_reported": _n(int(old.get("messages_reported", {}).get("N", "0"))
                                         + len(messages))}
        item = {"pk": _s(job), "sk": _s(_log_sk(ticket)), "m": _s(_encode_entries(messages)),
                "r": _s(request_id[:64]), EXPIRES_AT: _n(int(asked + LOG_EXPIRY_S))}
        if "ticket_at" in old:
            item["prev_at"] = old["ticket_at"]
        try:
            ddb.put_item(TableName=ledger_table, Item=item,
                         ConditionExpression="attribute_not_exists(sk)",
                         ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if not _own_commit(exc, m=item["m"], r=item["r"]):
                if _conditional_failed(exc):
                    raise TicketVoided(f"job {job}: log ticket {ticket} was voided; "
                                       "the batch will be delivered again") from exc
                _void_own(ddb, ledger_table, job, ticket)
                raise
        except BotoCoreError:
            _void_own(ddb, ledger_table, job, ticket)
            raise
        if old.get("ticket_by") == _s(token):
            _void_own(ddb, ledger_table, job, ticket - 1)  # this call's phantom (see above)
        if "completed_at" in old or "stalled_at" in old:
            # A report after completion (a replay, a late duplicate) or after a stall (the
            # redrive of what it missed): the job is active
            # again until the reconciler sees this ticket folded, so no dead folder's lease
            # can leave it out of the job's counts for good.
            ddb.put_item(TableName=ledger_table,
                         Item={**_active_key(job), "at_ticket": _n(ticket), "since": _n_time(asked)})
        tally["reported_now"] = _n(len(messages))  # not stored: what this report added
        if clock() - asked >= HOLE_WAIT_S:
            # A folder may have met this ticket's hole, waited HOLE_WAIT_S and stopped
            # there: this invocation folds, so the job is not left waiting for a trigger.
            tally["late"] = {"BOOL": True}
        updated.append(tally)
    return updated


def _void_own(ddb: Any, ledger_table: str, job: str, ticket: int) -> None:
    """Best effort: a writer whose record put failed voids its ticket (the batch fails and
    SQS delivers it again), so no folder has to wait out a live writer's lifetime."""
    with contextlib.suppress(ClientError, BotoCoreError):  # else the folder voids it, later
        _void(ddb, ledger_table, job, ticket)


def should_settle(item: Mapping[str, Any]) -> bool:
    """Whether an invocation holding this item (a tally from `record_batch`, or a job
    item) should fold the job's log now: when its report (`reported_now` messages) took
    messages_reported across a multiple of layout.FOLD_MESSAGES, and on every report once as
    many messages were reported as the job has (duplicates make that a little early,
    which costs a short fold, never a whole-job read), and when its record came so late
    that a folder may have stopped at its ticket (`late`, see `record_batch`). A job
    item: when it is RUNNING, COMPLETE or CANCELLING (a split that stopped at a cancel)."""
    if "tickets" not in item:
        return item.get("status", {}).get("S") in (RUNNING, COMPLETE, CANCELLING)
    if "late" in item:
        return True
    reported = int(item["messages_reported"]["N"])
    reported_now = int(item.get("reported_now", {}).get("N", "0"))
    if (reported - reported_now) // layout.FOLD_MESSAGES != reported // layout.FOLD_MESSAGES:
        return True
    return "messages_total" in item and reported >= int(item["messages_total"]["N"])
