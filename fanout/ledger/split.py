"""The job item while the file is split: the split's lease and checkpoint, its end
(`finish_split`), and a job that cannot be split (`fail_job`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from fanout.ledger.layout import (
    CANCELLING,
    FAILED,
    JOB_SK,
    JOBS_PK,
    LEDGER_FORMAT,
    PARTITION_KEY,
    RUNNING,
    SORT_KEY,
    SPLIT_LEASE_S,
    SPLITTING,
    STALLED,
    TALLY_SK,
    Clock,
    _active_key,
    _canceled_on,
    _jobs_sk,
    _key,
    _n,
    _n_time,
    _s,
    now_iso,
    plain,
    raw_job,
)
from fanout.ledger.legacy import fail_old_format


def start_job(
    ddb: Any, ledger_table: str, job: str, *, source_uri: str, table: str, owner: str,
    lease_s: float = SPLIT_LEASE_S, range_bytes: int = 0, mode: str = "put",
    clock: Clock = time.time,
) -> tuple[str, dict[str, Any] | None]:
    """Claim the job for splitting: ("new", None), ("resume", job item) when an earlier
    splitter left it (a crash, a retry, or a continuation it handed over), or
    ("skip", None) when another splitter holds it or it is past splitting.

    The lease lasts as long as the claiming invocation can live (`lease_s`), so a retry
    after a crash or a timeout finds it expired and resumes from the last checkpoint."""
    now = clock()
    started_at = now_iso(lambda: now)
    try:
        # One transaction (a retry after a lost reply is recognised by its token): the job
        # item, the tally's format, the job's place in the active index and in the jobs
        # index, all or none. A later start of the same job (a duplicate event, a retry
        # after the token expired) fails the job item's condition, so it writes no second
        # index entry: exactly one, with the job item's own `started_at`.
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": ledger_table, "Item": {
                "pk": _s(job), "sk": _s(JOB_SK), "status": _s(SPLITTING),
                "source": _s(source_uri), "table": _s(table), "started_at": _s(started_at),
                "split_owner": _s(owner), "split_lease_until": _n(int(now + lease_s) + 1),
                "range_bytes": _n(range_bytes), "ledger_format": _n(LEDGER_FORMAT),
                **({"mode": _s(mode)} if mode != "put" else {}),
            }, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": ledger_table, "Key": _key(job, TALLY_SK),
                        "UpdateExpression": "SET ledger_format = :f",
                        "ExpressionAttributeValues": {":f": _n(LEDGER_FORMAT)}}},
            {"Put": {"TableName": ledger_table,
                     "Item": {**_active_key(job), "since": _n_time(now)}}},
            {"Put": {"TableName": ledger_table,
                     "Item": {PARTITION_KEY: _s(JOBS_PK), SORT_KEY: _s(_jobs_sk(started_at, job)),
                              "job": _s(job), "source": _s(source_uri)}}},
        ])
        return "new", None
    except ClientError as exc:
        if not _canceled_on(exc, 0):
            raise
    try:
        item = ddb.update_item(
            TableName=ledger_table,
            Key={"pk": _s(job), "sk": _s(JOB_SK)},
            UpdateExpression="SET split_owner = :o, split_lease_until = :l ADD split_resumes :one",
            ConditionExpression="#st = :splitting AND (split_lease_until < :now OR split_owner = :o)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":o": _s(owner), ":l": _n(int(now + lease_s) + 1), ":one": _n(1),
                ":splitting": _s(SPLITTING), ":now": _n(int(now)),
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return "resume", plain(item)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    return "skip", None


@dataclass(frozen=True)
class SplitState:
    """What an earlier splitter left in the job item that `start_job` returns on "resume"."""

    parallel: bool = False  # planned as a parallel split: a retry plans it again
    range_bytes: int = 0  # the first try's range size (0: none recorded)
    checkpoint: str | None = None  # how far it came (the splitter's JSON)
    mode: str = "put"  # the write mode the job started with (a later spec's does not count)
    resumes: int = 0  # how often a splitter resumed the split (this one included)


def split_state(item: Mapping[str, Any] | None) -> SplitState:
    """The split state in a (plain) job item from `start_job`; an empty one for a new job."""
    item = item or {}
    return SplitState(parallel="parallel_ranges" in item,
                      range_bytes=int(item.get("range_bytes") or 0),
                      checkpoint=item.get("checkpoint"), mode=item.get("mode") or "put",
                      resumes=int(item.get("split_resumes") or 0))


class LeaseLost(RuntimeError):
    """Another splitter took the job over; this one must stop without writing more."""


def save_checkpoint(ddb: Any, ledger_table: str, job: str, owner: str, checkpoint: str, *,
                    release: bool = False, clock: Clock = time.time) -> None:
    """Record how far the split has come (a JSON string); with `release`, also hand the
    lease over to the continuation that will resume from it."""
    update = "SET #cp = :cp, checkpoint_at = :t"
    if release:
        update += ", split_lease_until = :zero"
    try:
        ddb.update_item(
            TableName=ledger_table,
            Key={"pk": _s(job), "sk": _s(JOB_SK)},
            UpdateExpression=update,
            ConditionExpression="split_owner = :o AND #st = :splitting",
            ExpressionAttributeNames={"#st": "status", "#cp": "checkpoint"},
            ExpressionAttributeValues={
                ":cp": _s(checkpoint), ":t": _s(now_iso(clock)), ":o": _s(owner),
                ":splitting": _s(SPLITTING), **({":zero": _n(0)} if release else {}),
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            found = exc.response.get("Item") or {}
            if found.get("status") == _s(CANCELLING) and found.get("split_owner") == _s(owner):
                raise SplitCancelled(f"job {job} was cancelled: the split stops here") from exc
            raise LeaseLost(f"job {job}: another splitter holds the lease") from exc
        raise


class SplitCancelled(RuntimeError):
    """The job was cancelled (`cancel.cancel_job`): the split sends nothing more, and records
    what it sent (`finish_split`, which keeps the job CANCELLING)."""


def release_split(ddb: Any, ledger_table: str, job: str, owner: str) -> None:
    """Give up the split lease after an unexpected error, so the retry can resume at once."""
    try:
        ddb.update_item(
            TableName=ledger_table,
            Key={"pk": _s(job), "sk": _s(JOB_SK)},
            UpdateExpression="SET split_lease_until = :zero",
            ConditionExpression="split_owner = :o AND #st = :splitting",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":zero": _n(0), ":o": _s(owner), ":splitting": _s(SPLITTING)},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def finish_split(
    ddb: Any, ledger_table: str, job: str, *, rows_read: int, messages_total: int,
    header: list[str], error_location: str, clock: Clock = time.time, rows_padded: int = 0,
) -> dict[str, Any]:
    """Record what the splitter sent; the job is RUNNING until every message is counted.
    A job started by the previous ledger format is failed instead (see Upgrades), and
    its FAILED item returned."""
    now = clock()
    try:
        # One transaction: the job item and the tally's copy of messages_total move
        # together (a tally without it would never let the job complete).
        ddb.transact_write_items(TransactItems=[
            {"Update": {
                "TableName": ledger_table, "Key": _key(job, JOB_SK),
                "UpdateExpression": (
                    "SET rows_read = :r, rows_padded = :p, messages_total = :m, #st = :running, "
                    "split_finished_at = :t, header = :h, error_location = :e "
                    "REMOVE split_lease_until, #cp"),
                # A split the reconciler stalled (it looked dead) that finishes after all
                # goes on as any other.
                "ConditionExpression": "(#st = :splitting OR (#st = :stalled AND "
                                       "attribute_not_exists(messages_total))) AND ledger_format = :f",
                "ExpressionAttributeNames": {"#st": "status", "#cp": "checkpoint"},
                "ExpressionAttributeValues": {
                    ":r": _n(rows_read), ":p": _n(rows_padded), ":m": _n(messages_total),
                    ":running": _s(RUNNING),
                    ":splitting": _s(SPLITTING), ":t": _s(now_iso(lambda: now)),
                    ":h": {"L": [_s(h) for h in header]}, ":e": _s(error_location),
                    ":f": _n(LEDGER_FORMAT), ":stalled": _s(STALLED)}}},
            {"Update": {
                "TableName": ledger_table, "Key": _key(job, TALLY_SK),
                "UpdateExpression": "SET messages_total = :total, rows_read = :r, split_done_at = :at "
                                    "REMOVE stalled_at",
                "ExpressionAttributeValues": {":total": _n(messages_total), ":r": _n(rows_read),
                                              ":at": _n_time(now)}}},
            {"Put": {"TableName": ledger_table,
                     "Item": {**_active_key(job), "since": _n_time(now)}}},
        ])
    except ClientError as exc:
        if not _canceled_on(exc, 0):
            raise
        if _finish_cancelled_split(ddb, ledger_table, job, rows_read=rows_read,
                                   rows_padded=rows_padded,
                                   messages_total=messages_total, header=header,
                                   error_location=error_location, now=now):
            return raw_job(ddb, ledger_table, job)
        if not fail_old_format(ddb, ledger_table, job, clock=clock):
            raise SplitFinished(f"job {job} is past splitting (finished by an earlier try or "
                                "a duplicate)") from exc
    return raw_job(ddb, ledger_table, job)


def _finish_cancelled_split(ddb: Any, ledger_table: str, job: str, *, rows_read: int,
                            rows_padded: int, messages_total: int, header: list[str],
                            error_location: str, now: float) -> bool:
    """A split cancelled before it recorded its end records what it sent, and the job stays
    CANCELLING (its writers drop the rest; completion makes it CANCELLED). False when the job
    is not CANCELLING without a total (a retry of this, whose first try committed, included)."""
    try:
        ddb.transact_write_items(TransactItems=[
            {"Update": {
                "TableName": ledger_table, "Key": _key(job, JOB_SK),
                "UpdateExpression": "SET rows_read = :r, rows_padded = :p, messages_total = :m, "
                                    "split_finished_at = :t, header = :h, error_location = :e "
                                    "REMOVE split_lease_until, #cp",
                "ConditionExpression": "#st = :cancelling AND attribute_not_exists(messages_total)",
                "ExpressionAttributeNames": {"#st": "status", "#cp": "checkpoint"},
                "ExpressionAttributeValues": {
                    ":r": _n(rows_read), ":p": _n(rows_padded), ":m": _n(messages_total),
                    ":t": _s(now_iso(lambda: now)), ":h": {"L": [_s(h) for h in header]},
                    ":e": _s(error_location), ":cancelling": _s(CANCELLING)}}},
            {"Update": {
                "TableName": ledger_table, "Key": _key(job, TALLY_SK),
                "UpdateExpression": "SET messages_total = :total, rows_read = :r, split_done_at = :at",
                "ExpressionAttributeValues": {":total": _n(messages_total), ":r": _n(rows_read),
                                              ":at": _n_time(now)}}},
        ])
    except ClientError as exc:
        if _canceled_on(exc, 0):
            return False
        raise
    return True


class SplitFinished(RuntimeError):
    """`finish_split` found the job past splitting: an earlier try or a duplicate finished it."""


def fail_job(ddb: Any, ledger_table: str, job: str, *, error: str,
             clock: Clock = time.time) -> None:
    """End a job that cannot be split (bad input): status FAILED with the reason, and out
    of the active index (the splitter publishes its summary)."""
    ddb.transact_write_items(TransactItems=[
        {"Update": {
            "TableName": ledger_table, "Key": _key(job, JOB_SK),
            "UpdateExpression": "SET #st = :failed, #err = :e, finished_at = :t "
                                "REMOVE split_lease_until",
            "ExpressionAttributeNames": {"#st": "status", "#err": "error"},
            "ExpressionAttributeValues": {":failed": _s(FAILED), ":e": _s(error),
                                          ":t": _s(now_iso(clock))}}},
        {"Delete": {"TableName": ledger_table, "Key": _active_key(job)}},
    ])
