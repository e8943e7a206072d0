"""The jobs ledger: one record per job, exact counts under duplicate delivery.

Layout (one DynamoDB table, `pk`/`sk` strings):

* the job item, `pk=JOB, sk="job"`: status, source, table, rows_read, messages_total
  (both set by the splitter when it has sent everything), a `messages_reported`
  counter (an upper bound: duplicates count twice), started/finished and, once
  complete, the exact counts;
* one batch record per writer invocation, `pk=JOB, sk="b#<request id>"`, holding
  `message_id:written:rejected:superseded` for each message that invocation finished.

Bookkeeping costs two small writes per writer invocation (a PutItem under 1 KB and
an UpdateItem of the job item), not per message: with 10 messages of 25 rows an
invocation, that is 2 write units per 250 data writes (0.8%).

Exactness: a message's counts are a pure function of its content, so duplicates of
it carry identical counts. When `messages_reported` reaches `messages_total`, the
finalizer reads the batch records, keeps one entry per message id, and completes the
job only when every message id is present. The status flip is conditional, so
completion is detected — and the summary published — exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from fanout.contract import REPLAY_MARK

JOB_SK = "job"
BATCH_PREFIX = "b#"

SPLITTING = "SPLITTING"
RUNNING = "RUNNING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"

SPLIT_LEASE_S = 960  # a little over the splitter's 15-minute maximum timeout


@dataclass(frozen=True)
class MessageCounts:
    written: int = 0
    rejected: int = 0
    superseded: int = 0

    @property
    def rows(self) -> int:
        return self.written + self.rejected + self.superseded


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def start_job(
    ddb: Any, ledger_table: str, job: str, *, source_uri: str, table: str, owner: str,
    lease_s: float = SPLIT_LEASE_S, range_bytes: int = 0,
) -> tuple[str, dict[str, Any] | None]:
    """Claim the job for splitting: ("new", None), ("resume", job item) when an earlier
    splitter left it (a crash, a retry, or a continuation it handed over), or
    ("skip", None) when another splitter holds it or it is past splitting.

    The lease lasts as long as the claiming invocation can live (`lease_s`), so a retry
    after a crash or a timeout finds it expired and resumes from the last checkpoint."""
    now = time.time()
    try:
        ddb.put_item(
            TableName=ledger_table,
            Item={
                "pk": _s(job), "sk": _s(JOB_SK), "status": _s(SPLITTING),
                "source": _s(source_uri), "table": _s(table), "started_at": _s(now_iso()),
                "split_owner": _s(owner), "split_lease_until": _n(int(now + lease_s) + 1),
                "messages_reported": _n(0), "range_bytes": _n(range_bytes),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        return "new", None
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
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


class LeaseLost(RuntimeError):
    """Another splitter took the job over; this one must stop without writing more."""


def save_checkpoint(ddb: Any, ledger_table: str, job: str, owner: str, checkpoint: str, *,
                    release: bool = False) -> None:
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
                ":cp": _s(checkpoint), ":t": _s(now_iso()), ":o": _s(owner),
                ":splitting": _s(SPLITTING), **({":zero": _n(0)} if release else {}),
            },
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise LeaseLost(f"job {job}: another splitter holds the lease") from exc
        raise


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
    header: list[str], error_location: str,
) -> dict[str, Any]:
    """Record what the splitter sent; the job is RUNNING until every message is reported."""
    response = ddb.update_item(
        TableName=ledger_table,
        Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression=(
            "SET rows_read = :r, messages_total = :m, #st = :running, split_finished_at = :t, "
            "header = :h, error_location = :e REMOVE split_lease_until, #cp"
        ),
        ConditionExpression="#st = :splitting",
        ExpressionAttributeNames={"#st": "status", "#cp": "checkpoint"},
        ExpressionAttributeValues={
            ":r": _n(rows_read), ":m": _n(messages_total), ":running": _s(RUNNING),
            ":splitting": _s(SPLITTING), ":t": _s(now_iso()),
            ":h": {"L": [_s(h) for h in header]}, ":e": _s(error_location),
        },
        ReturnValues="ALL_NEW",
    )
    return response["Attributes"]


def fail_job(ddb: Any, ledger_table: str, job: str, *, error: str) -> None:
    """End a job that cannot be split (bad input): status FAILED with the reason."""
    ddb.update_item(
        TableName=ledger_table,
        Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression="SET #st = :failed, #err = :e, finished_at = :t REMOVE split_lease_until",
        ExpressionAttributeNames={"#st": "status", "#err": "error"},
        ExpressionAttributeValues={":failed": _s(FAILED), ":e": _s(error), ":t": _s(now_iso())},
    )


def record_batch(
    ddb: Any, ledger_table: str, request_id: str, results: Mapping[str, Mapping[str, MessageCounts]]
) -> list[dict[str, Any]]:
    """Record the messages one writer invocation finished, per job. Returns the updated job
    items (see `fanout.runtime.settle_job` for what follows)."""
    updated = []
    for job, messages in results.items():
        if not messages:
            continue
        encoded = ",".join(
            f"{mid}:{c.written}:{c.rejected}:{c.superseded}" for mid, c in messages.items()
        )
        ddb.put_item(
            TableName=ledger_table,
            Item={"pk": _s(job), "sk": _s(BATCH_PREFIX + request_id), "m": _s(encoded)},
        )
        attributes = ddb.update_item(
            TableName=ledger_table,
            Key={"pk": _s(job), "sk": _s(JOB_SK)},
            UpdateExpression="ADD messages_reported :n",
            ExpressionAttributeValues={":n": _n(len(messages))},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        updated.append(attributes)
    return updated


def mark_published(ddb: Any, ledger_table: str, job: str) -> None:
    """SNS has taken the job's summary: later reports need not publish it again."""
    ddb.update_item(
        TableName=ledger_table,
        Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression="SET summary_published = :t",
        ExpressionAttributeValues={":t": _s(now_iso())},
    )


def may_be_complete(job_item: Mapping[str, Any]) -> bool:
    if job_item.get("status", {}).get("S") != RUNNING or "messages_total" not in job_item:
        return False
    return int(job_item["messages_reported"]["N"]) >= int(job_item["messages_total"]["N"])


def read_message_counts(ddb: Any, ledger_table: str, job: str) -> dict[str, MessageCounts]:
    """Every message id reported for the job, once each (duplicates carry equal counts)."""
    counts: dict[str, MessageCounts] = {}
    paginator = ddb.get_paginator("query")
    for page in paginator.paginate(
        TableName=ledger_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :b)",
        ExpressionAttributeValues={":pk": _s(job), ":b": _s(BATCH_PREFIX)},
        ConsistentRead=True,
    ):
        for item in page.get("Items", []):
            for entry in item["m"]["S"].split(","):
                mid, written, rejected, superseded = entry.rsplit(":", 3)
                counts[mid] = MessageCounts(int(written), int(rejected), int(superseded))
    return counts


def is_replay(message_id: str) -> bool:
    return REPLAY_MARK in message_id


def totals(counts: Mapping[str, MessageCounts] | Iterable[MessageCounts]) -> MessageCounts:
    """Job totals from per-message counts.

    A replayed message (id "SEQ~REPLAY") carries rows that were already counted as
    rejected: the rows it writes or supersedes move out of rejected; the rows it rejects
    again stay there.
    """
    if not isinstance(counts, Mapping):  # bare counts: all original messages
        counts = {str(i): c for i, c in enumerate(counts)}
    written = rejected = superseded = 0
    for message_id, c in counts.items():
        written += c.written
        superseded += c.superseded
        rejected += -(c.written + c.superseded) if is_replay(message_id) else c.rejected
    return MessageCounts(written, rejected, superseded)


def originals_reported(counts: Mapping[str, MessageCounts]) -> int:
    return sum(1 for message_id in counts if not is_replay(message_id))


GUARD_ATTEMPTS = 10


def raw_job(ddb: Any, ledger_table: str, job: str) -> dict[str, Any]:
    """The job item as DynamoDB returns it (typed), or {} when there is none."""
    return ddb.get_item(TableName=ledger_table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
                        ConsistentRead=True).get("Item") or {}


def _settle(ddb: Any, ledger_table: str, job: str, *, complete: bool
            ) -> tuple[dict[str, Any], MessageCounts, str] | None:
    """Write the job's totals from the batch records: completing a RUNNING job whose every
    message is reported (`complete`), or recounting a COMPLETE one after late reports.

    The write is conditional on `messages_reported` being what it was before the records
    were read, so a batch recorded meanwhile (a replay, say) is never left out: the totals
    are read again instead. Returns (job item, totals, time) to the one caller that wrote.
    """
    expected = RUNNING if complete else COMPLETE
    for _ in range(GUARD_ATTEMPTS):
        current = raw_job(ddb, ledger_table, job)
        if current.get("status", {}).get("S") != expected or "messages_total" not in current:
            return None
        seen = current["messages_reported"]["N"]
        counts = read_message_counts(ddb, ledger_table, job)
        if complete and originals_reported(counts) < int(current["messages_total"]["N"]):
            return None
        total, now = totals(counts), now_iso()
        update = "SET rows_written = :w, rows_rejected = :r, rows_superseded = :s"
        values = {":w": _n(total.written), ":r": _n(total.rejected), ":s": _n(total.superseded),
                  ":expected": _s(expected), ":seen": {"N": seen}}
        if complete:
            update += ", #st = :complete, finished_at = :t"
            values |= {":complete": _s(COMPLETE), ":t": _s(now)}
        try:
            ddb.update_item(
                TableName=ledger_table,
                Key={"pk": _s(job), "sk": _s(JOB_SK)},
                UpdateExpression=update,
                ConditionExpression="#st = :expected AND messages_reported = :seen",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                continue  # settled by another, or a batch came in: look again
            raise
        return current, total, now
    return None


def try_finalize(ddb: Any, ledger_table: str, job_item: Mapping[str, Any]) -> dict[str, Any] | None:
    """Complete the job if every message is reported. Returns the summary only to the one
    caller whose conditional update completed it; None otherwise."""
    settled = _settle(ddb, ledger_table, job_item["pk"]["S"], complete=True)
    if settled is None:
        return None
    current, total, finished = settled
    return completion_summary(plain(current) | {
        "status": COMPLETE, "rows_written": total.written, "rows_rejected": total.rejected,
        "rows_superseded": total.superseded, "finished_at": finished,
    })


def refresh_totals(ddb: Any, ledger_table: str, job: str) -> MessageCounts | None:
    """Recount a completed job after replayed rows (or late duplicates) were reported."""
    settled = _settle(ddb, ledger_table, job, complete=False)
    return settled[1] if settled else None


def completion_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """The summary published on completion, with the seed design's field names."""
    return {
        "JOB_ID": job.get("pk"),
        "STATUS": job.get("status"),
        "SOURCE": job.get("source"),
        "TOTAL_NUMBER_OF_ROWS_READ": job.get("rows_read"),
        "TOTAL_NUMBER_OF_ITEMS_WRITTEN": job.get("rows_written"),
        "TOTAL_NUMBER_OF_ITEMS_IN_ERROR": job.get("rows_rejected"),
        "TOTAL_NUMBER_OF_ROWS_SUPERSEDED": job.get("rows_superseded"),
        "DESTINATION_TABLE_NAME": job.get("table"),
        "ERROR_DATA_LOCATION": job.get("error_location"),
    }


def get_job(ddb: Any, ledger_table: str, job: str) -> dict[str, Any] | None:
    item = ddb.get_item(
        TableName=ledger_table, Key={"pk": _s(job), "sk": _s(JOB_SK)}, ConsistentRead=True
    ).get("Item")
    return plain(item) if item else None


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger item with DynamoDB types removed (numbers as int)."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        (type_, v), = value.items()
        if type_ == "N":
            out[name] = int(v)
        elif type_ == "L":
            out[name] = [x.get("S") for x in v]
        else:
            out[name] = v
    return out
