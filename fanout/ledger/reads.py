"""Reading the ledger: a job as the CLI shows it, many jobs at once, and the whole-log
reads that only tests and diagnostics of small jobs use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from fanout.contract import REPLAY_MARK
from fanout.ledger import layout
from fanout.ledger.folding import Shard, Totals
from fanout.ledger.layout import (
    CANCELLED,
    CANCELLING,
    COMPLETE,
    ENDED,
    FOLD_SK,
    JOB_SK,
    JOBS_PK,
    LOG_PREFIX,
    RUNNING,
    SPLITTING,
    TALLY_SK,
    MessageCounts,
    _batch_get,
    _get,
    _key,
    _moved,
    _s,
    _shard_sk,
    counts_of,
    job_counts,
    parse_entries,
    plain,
    raw_job,
    shard_of,
)
from fanout.ledger.legacy import OLD_FORMAT_ERROR


def read_message_counts(ddb: Any, ledger_table: str, job: str) -> dict[str, MessageCounts]:
    """Every message id in the job's log, once each (a replay whose rows carry indexes,
    seen more than once, with each row where it first landed), as far as DynamoDB's TTL
    has kept it (records expire LOG_EXPIRY_S after they were written). Reads the whole log,
    so it is for tests and diagnostics of small jobs: nothing in the pipeline calls it."""
    counts: dict[str, MessageCounts] = {}
    paginator = ddb.get_paginator("query")
    for page in paginator.paginate(
        TableName=ledger_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :b)",
        ExpressionAttributeValues={":pk": _s(job), ":b": _s(LOG_PREFIX)},
        ConsistentRead=True,
    ):
        for item in page.get("Items", []):
            if "m" in item:
                for message_id, c in parse_entries(item["m"]["S"]):
                    counts[message_id] = _merged(counts.get(message_id), c)
    return counts


def _merged(seen: MessageCounts | None, c: MessageCounts) -> MessageCounts:
    """One replay's entries as one: its rows where they first landed (a row rejected
    again and redriven unchanged has the same replay id); any other entry, the last."""
    if seen is None or seen.masks is None or c.masks is None:
        return c
    before = 0
    for mask in seen.masks:
        before |= mask
    masks = tuple(old | (new & ~before) for old, new in zip(seen.masks, c.masks, strict=True))
    moved = _moved(masks)
    return replace(moved, rejected=c.rows + moved.rejected, masks=masks)


def message_counted(ddb: Any, ledger_table: str, job: str, message_id: str,
                    indexes: list[int] | None = None) -> bool:
    """Whether the fold has counted this message: one shard read. A replay whose rows
    carry their `indexes` is counted once all those rows have landed."""
    item = _get(ddb, ledger_table, job, _shard_sk(shard_of(message_id)))
    if not item:
        return False
    shard = Shard.from_item(shard_of(message_id), item)
    if REPLAY_MARK in message_id and indexes is not None:
        landed = shard.landed_rows(int(message_id.split(REPLAY_MARK, 1)[0].split(".", 1)[0]))
        return all(landed >> i & 1 for i in indexes)
    if REPLAY_MARK in message_id:
        return message_id in shard.replays
    if "." in message_id:
        return message_id in shard.parts
    bit = int(message_id.split(REPLAY_MARK, 1)[0]) % layout.SHARD_SEQS
    return bool(shard.bits[bit >> 3] & (1 << (bit & 7)))


def totals(counts: Mapping[str, MessageCounts] | Iterable[MessageCounts]) -> MessageCounts:
    """Job totals from per-message counts, by the rule the shards apply (for tests and
    diagnostics): a replayed message's rows that landed move out of rejected, once each."""
    if not isinstance(counts, Mapping):  # bare counts: all original messages
        counts = {str(i): c for i, c in enumerate(counts)}
    shards: dict[int, Shard] = {}
    for ticket, (message_id, c) in enumerate(counts.items(), 1):
        index = shard_of(message_id)
        shards.setdefault(index, Shard(index)).apply(ticket, message_id, c)
    sums = Totals()
    for shard in shards.values():
        sums.add(shard.totals)
    return sums.counts


def get_job(ddb: Any, ledger_table: str, job: str) -> dict[str, Any] | None:
    """The job item, plain, with the tally's `messages_reported` and the fold's
    `messages_counted`; before completion, the counts folded so far (three small reads,
    whatever the job's size)."""
    item = raw_job(ddb, ledger_table, job)
    if not item:
        return None
    out = plain(item)
    tally, folded = _get(ddb, ledger_table, job, TALLY_SK), _get(ddb, ledger_table, job, FOLD_SK)
    out["messages_reported"] = int(tally.get("messages_reported", {}).get("N", "0"))
    running = Totals.of(folded)
    out["messages_counted"] = running.distinct
    if out.get("status") in (SPLITTING, RUNNING, CANCELLING):
        out["last_progress_at"] = round(progress_at(item, tally, folded), 3)
    if "ledger_format" not in item and out.get("status") in (SPLITTING, RUNNING):
        out["error"] = OLD_FORMAT_ERROR.format(job=job)  # what its next report will do
    if out.get("status") not in (COMPLETE, CANCELLED) and folded:
        out |= job_counts(running.counts)
    elif "rows_written" in out:  # a job completed before write modes has no rows_deleted
        out |= {name: v for name, v in job_counts(counts_of(out)).items() if name not in out}
    return out


def progress_at(job_item: Mapping[str, Any], tally: Mapping[str, Any] | None = None,
                folded: Mapping[str, Any] | None = None) -> float:
    """When the job last moved (seconds since the epoch): its start, a split checkpoint, the
    split's end, a writer's report (`ticket_at`), the fold's cursor (`folded_at`)."""
    stamps = [datetime.fromisoformat(job_item[name]["S"]).timestamp()
              for name in ("started_at", "checkpoint_at", "split_finished_at") if name in job_item]
    stamps += [float(item[name]["N"]) for item, name in ((tally or {}, "ticket_at"),
                                                         (tally or {}, "split_done_at"),
                                                         (folded or {}, "folded_at"))
               if name in item]
    return max(stamps, default=0.0)


def jobs_by_id(ddb: Any, ledger_table: str, jobs: Iterable[str], *,
               progress: bool = False) -> dict[str, dict[str, Any]]:
    """The job items of `jobs` that exist, plain, by job id (eventually consistent). With
    `progress`, each also carries its tally's `messages_reported`, as get_job's does (then
    50 jobs a call). Unprocessed keys are asked again, with backoff."""
    wanted = list(dict.fromkeys(jobs))
    sks = (JOB_SK, TALLY_SK) if progress else (JOB_SK,)
    keys = [_key(job, sk) for job in wanted for sk in sks]
    found: dict[str, dict[str, Any]] = {}
    reported: dict[str, int] = {}
    for item in _batch_get(ddb, ledger_table, keys, consistent=False):
        job = item["pk"]["S"]
        if item["sk"]["S"] == JOB_SK:
            found[job] = plain(item)
        else:
            reported[job] = int(item.get("messages_reported", {}).get("N", "0"))
    if progress:
        for job, item in found.items():
            item["messages_reported"] = reported.get(job, 0)
    return found


@dataclass(frozen=True)
class JobsPage:
    """One page of `list_jobs`: the jobs, newest first (plain job items; a job not ended
    carries the counts folded so far), and the token of the next page (None: no more)."""

    jobs: list[dict[str, Any]]
    next_token: str | None


def list_jobs(ddb: Any, ledger_table: str, *, limit: int = 20, after: str | None = None,
              since: str | None = None, source_prefix: str | None = None,
              statuses: Iterable[str] = ()) -> JobsPage:
    """The newest `limit` jobs of the jobs index (started at or after `since`, an ISO time;
    their source starting with `source_prefix`; in one of `statuses`), after the page token
    `after`. Reads the index items it lists (a Query, newest first) and their job items
    (BatchGetItem), plus the fold item of each job not ended: O(jobs listed), never a scan.
    A status filter reads the jobs it skips too. Jobs started before the index have no
    entry in it."""
    wanted = set(statuses)
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {
        "TableName": ledger_table, "ScanIndexForward": False,
        "KeyConditionExpression": "pk = :pk" + (" AND sk >= :since" if since else ""),
        "ExpressionAttributeValues": {":pk": _s(JOBS_PK), **({":since": _s(since)} if since else {})},
    }
    if source_prefix:
        params["FilterExpression"] = "begins_with(#src, :src)"
        params["ExpressionAttributeNames"] = {"#src": "source"}
        params["ExpressionAttributeValues"][":src"] = _s(source_prefix)
    if after:
        params["ExclusiveStartKey"] = {"pk": _s(JOBS_PK), "sk": _s(after)}
    last: str | None = None
    more = True
    while len(found) < limit and more:
        page = ddb.query(**params, Limit=limit - len(found))
        entries = page.get("Items", [])
        jobs = _jobs_with_progress(ddb, ledger_table, [e["job"]["S"] for e in entries])
        for entry in entries:
            last = entry["sk"]["S"]
            job = jobs.get(entry["job"]["S"])
            if job is not None and (not wanted or job.get("status") in wanted):
                found.append(job)
        more = "LastEvaluatedKey" in page
        if more:
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            last = page["LastEvaluatedKey"]["sk"]["S"]
    return JobsPage(found, last if more else None)


def _jobs_with_progress(ddb: Any, ledger_table: str, jobs: list[str]) -> dict[str, dict[str, Any]]:
    """The job items of `jobs`, plain; each one not ended with the counts folded so far
    (its fold item: a second BatchGetItem for those only)."""
    found = {item["pk"]["S"]: plain(item) for item in _batch_get(
        ddb, ledger_table, [_key(job, JOB_SK) for job in jobs], consistent=False)}
    going = [job for job, item in found.items() if item.get("status") not in ENDED]
    for folded in _batch_get(ddb, ledger_table, [_key(job, FOLD_SK) for job in going],
                             consistent=False):
        running = Totals.of(folded)
        found[folded["pk"]["S"]] |= job_counts(running.counts) | {"messages_counted": running.distinct}
    return found
