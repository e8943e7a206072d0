"""The reconciler: every job ends, whichever invocation dies when.

No single invocation is trusted to finish a job's bookkeeping: a folder can run out of its
budget with reports left unread, a writer's batch can go to the DLQ inside a dead folder's
lease, a ticket's record can be lost with no redelivery coming to void it. Something with
a full budget of its own comes back for them: `reconcile`, run on a schedule (the deployed
stack's EventBridge rule, `fanout serve`, the embedded runtime), visits every job of the
active index (one Query, however many jobs the table holds) and

* settles a RUNNING job (fold, void the holes whose writers are gone, complete);
* hands back the summary of a job that ended but whose summary was not published;
* moves a job that made no progress for `stall_after_s` to STALLED: a split that died
  after its retries, a message lost past the queue's retention. Its summary names what is
  missing (how many messages and rows, the first missing seqs). A STALLED job still
  completes if the missing messages come after all (a DLQ redrive), and publishes again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fanout.ledger import layout
from fanout.ledger.complete import ROWS_SET, claim_publish, completion_summary, settle
from fanout.ledger.folding import FoldLost, Totals, fold
from fanout.ledger.layout import (
    ACTIVE_PK,
    CANCELLED,
    CANCELLING,
    COMPLETE,
    FOLD_BUDGET_S,
    FOLD_SK,
    JOB_SK,
    RUNNING,
    SHARD_PREFIX,
    SPLITTING,
    STALLED,
    WRITER_TIMEOUT_S,
    Clock,
    _active_key,
    _canceled_on,
    _conditional_failed,
    _get,
    _key,
    _n,
    _outcome_values,
    _s,
    now_iso,
    plain,
    raw_job,
    status_of,
)
from fanout.ledger.reads import progress_at
from fanout.settings import DEFAULT_CONFIG

STALL_AFTER_S = float(DEFAULT_CONFIG.stall_after_s)  # no progress this long: STALLED
RESERVE_S = 5.0  # the reconciler starts no job's settle with less time left than this
MISSING_SHOWN = 20  # the first missing seqs a STALLED job's summary names
MISSING_SCAN_SHARDS = 256  # shards read at most to find them (about 1M seqs)


@dataclass(frozen=True)
class Reconciled:
    """A job the reconciler ended or found ended: its summary, for the caller to publish
    (then `mark_published`)."""

    job: str
    status: str
    summary: dict[str, Any]


def active_jobs(ddb: Any, ledger_table: str) -> Iterator[str]:
    """The ids of the jobs not yet ended and announced: one Query of the active index."""
    for page in ddb.get_paginator("query").paginate(
        TableName=ledger_table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": _s(ACTIVE_PK)}, ConsistentRead=True,
    ):
        for item in page.get("Items", []):
            yield str(item["sk"]["S"])


def reconcile(ddb: Any, ledger_table: str, *, owner: str, time_left: Callable[[], float],
              stall_after_s: float = STALL_AFTER_S, clock: Clock = time.time,
              sleep: Callable[[float], None] = time.sleep,
              writer_timeout_s: float = WRITER_TIMEOUT_S) -> list[Reconciled]:
    """Visit every active job while at least RESERVE_S is left (see the module docstring);
    the summaries to publish. `time_left` is the invocation's time left: a fold's lease
    lasts no longer."""
    ended, failures = [], []
    jobs = list(active_jobs(ddb, ledger_table))  # the active ones only: O(active jobs)
    random.shuffle(jobs)  # a run that runs out of time does not always leave the same ones
    for job in jobs:
        if time_left() < RESERVE_S:
            break
        try:
            done = reconcile_job(ddb, ledger_table, job, owner=owner, time_left=time_left,
                                 stall_after_s=stall_after_s, clock=clock, sleep=sleep,
                                 writer_timeout_s=writer_timeout_s)
        except (ClientError, BotoCoreError) as exc:  # throttled, say: the next job still gets its turn
            failures.append(f"{job}: {exc}")
            continue
        if done is not None:
            ended.append(done)
    if failures:
        raise ReconcileIncomplete(ended, failures)
    return ended


class ReconcileIncomplete(RuntimeError):
    """Some jobs could not be visited (an AWS error each); `ended` holds what the run ended
    all the same, for the caller to publish before it fails the run."""

    def __init__(self, ended: list[Reconciled], failures: list[str]) -> None:
        super().__init__(f"{len(failures)} job(s) not reconciled: {'; '.join(failures[:5])}")
        self.ended, self.failures = ended, failures


def reconcile_job(ddb: Any, ledger_table: str, job: str, *, owner: str,
                  time_left: Callable[[], float], stall_after_s: float = STALL_AFTER_S,
                  clock: Clock = time.time, sleep: Callable[[float], None] = time.sleep,
                  writer_timeout_s: float = WRITER_TIMEOUT_S) -> Reconciled | None:
    """One active job: settled, stalled, or its pending summary handed back."""
    item = raw_job(ddb, ledger_table, job)
    status = status_of(item)
    if not item or status not in (SPLITTING, RUNNING, COMPLETE, STALLED, CANCELLING, CANCELLED):
        # No job, or a FAILED one (the splitter publishes those).
        ddb.delete_item(TableName=ledger_table, Key=_active_key(job))
        return None
    if status == SPLITTING or (status == CANCELLING and "messages_total" not in item):
        lease_until = int(item.get("split_lease_until", {}).get("N", "0"))
        tally, folded = (_get(ddb, ledger_table, job, sk) for sk in (layout.TALLY_SK, FOLD_SK))
        if lease_until >= clock() or clock() - progress_at(item, tally, folded) <= stall_after_s:
            return None  # a splitter holds it, or one may still resume it (or its writers report)
        # What its writers reported is counted all the same (folded, not completed).
        try:
            fold(ddb, ledger_table, job, owner=owner, lease_s=time_left(),
                 budget_s=max(0.0, min(FOLD_BUDGET_S, time_left() / 3)), clock=clock,
                 sleep=sleep, writer_timeout_s=writer_timeout_s)
        except FoldLost:
            return None  # another folder has the log: the next visit stalls it
        if status == CANCELLING:
            return _stall(ddb, ledger_table, job, item, clock, time_left(),
                          "cancelled during the split, whose splitter stopped before it recorded "
                          "what it sent: rows read counts the rows its writers reported",
                          to=CANCELLED)
        return _stall(ddb, ledger_table, job, item, clock, time_left(),
                      "the split stopped and no splitter resumed it: upload the file again "
                      "under a new key (the same key and bytes are the same job)")
    left = time_left()
    settlement = settle(ddb, ledger_table, job, owner=owner, lease_s=left,
                        budget_s=max(0.0, min(FOLD_BUDGET_S, left / 3)), clock=clock,
                        sleep=sleep, writer_timeout_s=writer_timeout_s)
    if settlement is not None and settlement.summary is not None:
        return Reconciled(job, settlement.status, settlement.summary)
    item = raw_job(ddb, ledger_table, job)
    status = status_of(item)
    if status in (STALLED, CANCELLED) and claim_publish(ddb, ledger_table, job, time_left(), clock):
        return Reconciled(job, status, completion_summary(plain(raw_job(ddb, ledger_table, job))))
    tally, folded = (_get(ddb, ledger_table, job, sk) for sk in (layout.TALLY_SK, FOLD_SK))
    if status not in (RUNNING, CANCELLING):
        if "summary_published" in item:
            _leave_when_folded(ddb, ledger_table, job, item, tally, folded)
        return None
    if clock() - progress_at(item, tally, folded) <= stall_after_s:
        return None
    if status == CANCELLING:
        # Nothing more will be written: what never came back is named as missing.
        return _stall(ddb, ledger_table, job, item, clock, time_left(),
                      "cancelled; some messages never came back (the dead-letter queue holds "
                      "them, or they passed the queue's retention)", tally, folded, to=CANCELLED)
    return _stall(ddb, ledger_table, job, item, clock, time_left(),
                  "messages are missing: redrive the dead-letter queue "
                  "(dlq-replayer redrive), or upload the file again", tally, folded)


def _leave_when_folded(ddb: Any, ledger_table: str, job: str, item: Mapping[str, Any],
                       tally: Mapping[str, Any], folded: Mapping[str, Any]) -> None:
    """An ended, announced job leaves the active index once its fold has read every report
    (a report after completion puts it back, with its ticket: see `record_batch`), unless a
    report came in meanwhile (the condition)."""
    cursor = int(folded.get("cursor", {}).get("N", "0"))
    if cursor < int(tally.get("tickets", {}).get("N", "0")) or (
            status_of(item) in (COMPLETE, CANCELLED) and int(item.get("counted_through", {}).get("N", "0")) < cursor):
        return  # a report not folded, or not yet in the job's counts: the next visit
    try:
        ddb.delete_item(TableName=ledger_table, Key=_active_key(job),
                        ConditionExpression="attribute_not_exists(at_ticket) OR at_ticket <= :c",
                        ExpressionAttributeValues={":c": _n(cursor)})
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise


def _stall(ddb: Any, ledger_table: str, job: str, item: Mapping[str, Any], clock: Clock,
           lease_s: float, reason: str, tally: Mapping[str, Any] | None = None,
           folded: Mapping[str, Any] | None = None, *, to: str = STALLED) -> Reconciled | None:
    """Move the job to STALLED (or a CANCELLING one to CANCELLED) with what is missing; None
    if it moved on meanwhile."""
    folded = folded if folded is not None else _get(ddb, ledger_table, job, FOLD_SK)
    counted = Totals.of(folded)
    status = status_of(item)
    update = ("SET #st = :stalled, finished_at = :t, stall_reason = :why, last_progress_at = :p, "
              f"publish_until = :pu, {ROWS_SET}")
    if to == CANCELLED:
        # Ended as a completion ends a job: a report after it (a redrive the operator forced)
        # moves its counts from `counted_through` on; a split that never recorded its end
        # has read what its writers reported.
        update += ", counted_through = :c, rows_read = if_not_exists(rows_read, :sum)"
    values: dict[str, Any] = {
        ":stalled": _s(to), ":t": _s(now_iso(clock)), ":why": _s(reason), ":was": _s(status),
        ":pu": _n(int(clock() + lease_s)),
        ":p": _n(int(progress_at(item, tally or {}, folded))),
        **_outcome_values(counted.counts, "rows_"),
    }
    if "messages_total" in item:
        missing = int(item["messages_total"]["N"]) - counted.distinct
        update += ", missing_messages = :missing"
        values[":missing"] = _n(max(0, missing))
        if "parallel_ranges" not in item:  # a sequential split's seqs are 0, 1, 2, ...
            seqs = first_missing_seqs(ddb, ledger_table, job, int(item.get("rows_read", {})
                                                                   .get("N", "0")))
            if seqs:
                update += ", missing_seqs = :seqs"
                values[":seqs"] = {"L": [_n(seq) for seq in seqs]}
    if to == CANCELLED:
        values[":c"] = _n(int(folded.get("cursor", {}).get("N", "0")))
        values[":sum"] = _n(counted.counts.rows)
    condition = "#st = :was"
    if "messages_total" not in item:  # not one a splitter resumed since this visit read it
        condition += " AND (attribute_not_exists(split_lease_until) OR split_lease_until < :now)"
        values[":now"] = _n(int(clock()))
    try:
        # With the tally's mark, so that a report after the stall (a redrive) puts the job
        # back in the active index (`record_batch`), as a report after completion does.
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": ledger_table, "Key": _key(job, JOB_SK),
                        "UpdateExpression": update + " REMOVE summary_published, split_lease_until",
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": values}},
            {"Update": {"TableName": ledger_table, "Key": _key(job, layout.TALLY_SK),
                        "UpdateExpression": "SET completed_at = :t" if to == CANCELLED
                                            else "SET stalled_at = :t",
                        "ExpressionAttributeValues": {":t": values[":t"]}}},
        ])
    except ClientError as exc:
        if _canceled_on(exc, 0):
            return None  # it moved on (completed, resumed): the next visit sees it
        raise
    return Reconciled(job, to, completion_summary(plain(raw_job(ddb, ledger_table, job))))


def first_missing_seqs(ddb: Any, ledger_table: str, job: str, rows_read: int,
                       rows_per_message: int = 25) -> list[int]:
    """The first MISSING_SHOWN seqs of a sequential split that no counted message holds,
    from at most MISSING_SCAN_SHARDS shards (a seq split in parts counts as present when
    any part was counted)."""
    seqs = -(-rows_read // rows_per_message)
    per_shard = layout.SHARD_SEQS
    found: list[int] = []
    next_seq = 0
    params: dict[str, Any] = {
        "TableName": ledger_table, "ConsistentRead": True, "Limit": 32,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
        "ExpressionAttributeValues": {":pk": _s(job), ":p": _s(SHARD_PREFIX)},
        "ProjectionExpression": "sk, bits, parts",
    }
    scanned = 0
    while len(found) < MISSING_SHOWN and next_seq < seqs and scanned < MISSING_SCAN_SHARDS:
        page = ddb.query(**params)
        items = page.get("Items", [])
        for shard in items:
            scanned += 1
            index = int(shard["sk"]["S"][len(SHARD_PREFIX):])
            bits = bytes(shard.get("bits", {}).get("B", b""))
            parts = {int(p.split(".", 1)[0]) for p in shard.get("parts", {}).get("SS", [])}
            found += range(next_seq, min(seqs, index * per_shard))  # shards with no item
            next_seq = max(next_seq, index * per_shard)
            for seq in range(next_seq, min(seqs, (index + 1) * per_shard)):
                bit = seq % per_shard
                if not (bit >> 3 < len(bits) and bits[bit >> 3] & (1 << (bit & 7))) \
                        and seq not in parts:
                    found.append(seq)
                if len(found) >= MISSING_SHOWN:
                    break
            next_seq = max(next_seq, (index + 1) * per_shard)
            if len(found) >= MISSING_SHOWN:
                break
        if "LastEvaluatedKey" not in page:
            found += range(next_seq, min(seqs, next_seq + MISSING_SHOWN))
            break
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return found[:MISSING_SHOWN]
