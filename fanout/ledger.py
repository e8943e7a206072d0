"""The jobs ledger: exact counts under duplicate delivery, with work per invocation that
does not grow with the job.

Layout (one DynamoDB table, `pk`/`sk` strings, `pk` = the job id). This module is the
one owner of it:

* the job item, `sk="job"`: status, source, table, `ledger_format`, rows_read and
  messages_total (set by the splitter when it has sent everything), the split's lease and
  checkpoint, started/finished, `mode` (the write mode, absent for put) and, once
  complete, the exact counts (`rows_<outcome>` for each of OUTCOMES: `rows_written`,
  `rows_rejected`, `rows_superseded`, `rows_deleted`, `rows_skipped_existing`; and
  `counted_through`, the log position they include). A parallel split (splitter/fan.py) adds
  to it `parallel_ranges` (how many), `scans_done` / `ranges_done` (number sets of the
  steps that reported) and `scans_fanned` / `ranges_fanned` (the stage started its next,
  once); its steps' results sit beside it, one item per step: `scan#<index, 5 digits>`
  (where the range's records start, for both start states) and `range#<index>` (what
  the range sent). Only the functions under "Parallel split steps" below touch them;
* the tally, `sk="tally"`: the writers' hot counter, kept apart from the job item so its
  update costs 1 write unit however large the job item grows (a 64 KiB header, the
  parallel split's done-sets): `tickets` (log records handed out), `ticket_at` (the
  clock of the writer that took the last one, when it asked), `messages_reported` (an
  upper bound: duplicates count twice), a copy of messages_total and the format, and
  `completed_at` once the job is complete;
* the log, `sk="log#<ticket, 12 digits>"`: one record per writer invocation and job,
  `m` = `message_id:written:rejected:superseded,...` for each message it finished (with
  `:deleted:skipped_existing` after them when either is not 0: a put's entry is as
  before, and an entry without them reads as 0 for both), and
  `prev_at`, the `ticket_at` its ticket's ADD replaced (when the previous ticket was
  asked for). The writer takes its ticket from the tally (ADD, so tickets are dense: 1,
  2, 3, ...) and then writes the record under it, conditionally (`attribute_not_exists`).
  A ticket whose record has not come (a hole) stops the fold there; it is voided with a
  tombstone, `void`, written under the same condition, only once no writer can still
  write it: its writer has outlived the writer function's timeout plus HOLE_MARGIN_S,
  judged from `prev_at` of the records after it (see `HolePolicy`). A writer whose
  record put fails voids its own ticket before its batch fails. So a live writer is
  never voided; one that outlived its own lifetime would find its ticket taken, fail
  its batch, and SQS would deliver it again under a new ticket;
* the shards, `sk="shard#<seq // SHARD_SEQS, 12 digits>"`: what the log says about
  sequence numbers [k*4096, (k+1)*4096), folded: `bits` (a 512-byte bitmap, one bit per
  seq whose message is counted), `parts` (the ids "seq.part" of messages that were split
  to fit the queue), `replays` (the ids of replayed messages counted), their `distinct`
  original messages, a count per outcome (OUTCOMES: `written`, `rejected`, `superseded`,
  `deleted`, `skipped_existing`; replays included), and `applied`
  (the last ticket folded into it). Both the sequential split's seqs (row index // 25)
  and a parallel split's (range index * 1e9 + n) map to shards this way: a shard is a
  seq range, whatever namespace it is in;
* the fold, `sk="fold"`: the log position folded (`cursor`), the job's running
  `distinct` and a count per outcome (the sums over its shards), and the
  folder's lease (`lease_owner`, `lease_until`, `dirty`).

Counting (see `fold`): the folder holds the fold's lease and reads the log from the
cursor in steps of about FOLD_MESSAGES entries; each entry is set in its shard's bitmap
and counted only if its bit was clear, so a duplicate changes nothing. A step reads and
writes only the shards its entries touch, and the job's totals move by the shards'
deltas: no step reads the whole job. A shard skips the entries of tickets it has
already applied, so a step that died half way is redone exactly; the next folder finds
the lease `dirty` and sums the shards again (≈1,000 small items at 4M messages).

Holes: a fold that meets one polls for its record for HOLE_WAIT_S (a writer between
its two writes, usually), then stops at it, keeping its cursor before it, and returns:
nothing blocks on a slow writer. The writer of a record that came HOLE_WAIT_S or more
after its ticket folds itself (a folder may have stopped at it), and a folder that
stopped looks at the hole once more after releasing its lease, so a record that came
while the lease was held is not left behind. A hole whose writer died is voided by the
first settle after its writer's lifetime; at the end of a job that is the settle of the
dead writer's own batch, which SQS delivers again after the visibility timeout (always
longer than the writer timeout plus the margin), and whose record's `prev_at` dates the
hole just before it (the stack sets the visibility timeout to 6x the writer timeout).

Completion is attempted only when `distinct` (which duplicates do not inflate) reaches
messages_total: one transaction, the status flip RUNNING → COMPLETE conditional on the
tally's `tickets` being the fold's cursor (the same update sets the tally's
`completed_at`), so it is detected, and its summary returned for publishing, exactly
once, and that summary counts every report recorded before it. After COMPLETE, a
replay or a late duplicate is one more log record, folded into its own shard, and the
job item's counts are moved by its delta (`counted_through` keeps an older folder from
writing over a newer count); the fold reads `completed_at` in the tally, so such a
settle does not try the completion again.

Cost: a writer invocation writes 2 items, as the previous format did: the tally ADD
(1 write unit) and its log record (about 18 bytes a message: 1 unit up to ~55 messages).
With 10 messages of 25 rows that is 2 write units per 250 data writes (0.8%); at the
stack's batch size of 100 messages, 3 per 2,500 (0.12%). A writer folds when its report
takes messages_reported across a multiple of FOLD_MESSAGES, and on every report once
messages_reported has reached messages_total; a fold adds its lease, its cursor and one
write per shard touched. `python -m bench` measures all of it (see the README's scale
section). The fold's lease lasts as long as the folding invocation can live, so one that
was killed (a timeout) never holds it past its own end; another folder takes it over only
HOLE_MARGIN_S after that (a shard write the killed folder had in flight, or a clock behind
the next folder's, must not land after the next folder has summed the shards).

Upgrades: jobs started by the previous format (batch records `b#<request id>` and a
`messages_reported` on the job item, no `ledger_format`) cannot be counted by this one:
a writer or a splitter that meets one fails it, with its id and the reason, instead of
leaving it RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fanout.contract import REPLAY_MARK

# The table's key schema (both strings); infra and the local runtime create it from these.
PARTITION_KEY, SORT_KEY = "pk", "sk"
JOB_SK = "job"
TALLY_SK = "tally"
FOLD_SK = "fold"
LOG_PREFIX = "log#"
SHARD_PREFIX = "shard#"
LEDGER_FORMAT = 2

SHARD_SEQS = 4096  # sequence numbers per shard: a 512-byte bitmap
FOLD_MESSAGES = 20_000  # a fold step reads about this many log entries; a writer whose
#                         report crosses a multiple of it folds (besides the end of the job)
LOG_PAGE = 100  # log records per Query page
FOLD_BUDGET_S = 10.0  # wall time one invocation spends folding at most
HOLE_WAIT_S = 0.2  # how long a folder waits for a missing record before it stops there
HOLE_POLL_S = 0.05
# A hole (a ticket with no record) is voided only when no writer can still fill it: once
# the writer that took it has outlived the writer function's timeout, plus this margin for
# clock differences between hosts and a request still in flight when the writer died.
from fanout.settings import HOLE_MARGIN_S as HOLE_MARGIN_S  # noqa: E402, I001 (settings check the timing rule)
WRITER_TIMEOUT_S = 60.0  # PipelineConfig.writer_timeout_s, when the caller cannot say
FOLD_LEASE_S = 60.0  # when the caller cannot say how long it lives

SPLITTING = "SPLITTING"
RUNNING = "RUNNING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"

SPLIT_LEASE_S = 960  # a little over the splitter's 15-minute maximum timeout


# Where a row can end, one name each: in MessageCounts, log entries (in this order), the
# shards and the fold (as named), and the job item (`rows_<name>`). `written` is an item
# put, inserted or updated; `deleted` a key deleted (absent or not, as DynamoDB counts
# it); `skipped_existing` an insert whose key the table already held.
OUTCOMES = ("written", "rejected", "superseded", "deleted", "skipped_existing")
MODE_OUTCOMES = {"delete": ("deleted",), "insert": ("skipped_existing",)}  # beyond put's


@dataclass(frozen=True)
class MessageCounts:
    written: int = 0
    rejected: int = 0
    superseded: int = 0
    deleted: int = 0
    skipped_existing: int = 0

    @property
    def rows(self) -> int:
        return self.rejected + self.landed

    @property
    def landed(self) -> int:
        """The rows that did not end rejected (what a replay moves out of rejected)."""
        return self.written + self.superseded + self.deleted + self.skipped_existing

    def values(self) -> tuple[int, ...]:
        """The counts in OUTCOMES order."""
        return (self.written, self.rejected, self.superseded, self.deleted, self.skipped_existing)


def outcomes_shown(mode: str | None, counts: Mapping[str, int]) -> list[str]:
    """The outcomes a job's summary shows: put's three always, a write mode's own (even at
    0) for a job of that mode, any other only when not 0. A put job's summary is as it was
    before write modes."""
    own = MODE_OUTCOMES.get(mode or "put", ())
    return [name for name in OUTCOMES
            if name in OUTCOMES[:3] or name in own or counts.get(name, 0)]


Clock = Callable[[], float]  # seconds since the epoch: time.time, or a test's clock


def now_iso(clock: Clock = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds")


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _key(job: str, sk: str) -> dict[str, dict[str, str]]:
    return {PARTITION_KEY: _s(job), SORT_KEY: _s(sk)}


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")


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
    try:
        ddb.put_item(
            TableName=ledger_table,
            Item={
                "pk": _s(job), "sk": _s(JOB_SK), "status": _s(SPLITTING),
                "source": _s(source_uri), "table": _s(table), "started_at": _s(now_iso(lambda: now)),
                "split_owner": _s(owner), "split_lease_until": _n(int(now + lease_s) + 1),
                "range_bytes": _n(range_bytes), "ledger_format": _n(LEDGER_FORMAT),
                **({"mode": _s(mode)} if mode != "put" else {}),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, TALLY_SK),
            UpdateExpression="SET ledger_format = :f",
            ExpressionAttributeValues={":f": _n(LEDGER_FORMAT)},
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


@dataclass(frozen=True)
class SplitState:
    """What an earlier splitter left in the job item that `start_job` returns on "resume"."""

    parallel: bool = False  # planned as a parallel split: a retry plans it again
    range_bytes: int = 0  # the first try's range size (0: none recorded)
    checkpoint: str | None = None  # how far it came (the splitter's JSON)
    mode: str = "put"  # the write mode the job started with (a later spec's does not count)


def split_state(item: Mapping[str, Any] | None) -> SplitState:
    """The split state in a (plain) job item from `start_job`; an empty one for a new job."""
    item = item or {}
    return SplitState(parallel="parallel_ranges" in item,
                      range_bytes=int(item.get("range_bytes") or 0),
                      checkpoint=item.get("checkpoint"), mode=item.get("mode") or "put")


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
    header: list[str], error_location: str, clock: Clock = time.time,
) -> dict[str, Any]:
    """Record what the splitter sent; the job is RUNNING until every message is counted.
    A job started by the previous ledger format is failed instead (see Upgrades), and
    its FAILED item returned."""
    try:
        response = ddb.update_item(
            TableName=ledger_table,
            Key=_key(job, JOB_SK),
            UpdateExpression=(
                "SET rows_read = :r, messages_total = :m, #st = :running, split_finished_at = :t, "
                "header = :h, error_location = :e REMOVE split_lease_until, #cp"
            ),
            ConditionExpression="#st = :splitting AND ledger_format = :f",
            ExpressionAttributeNames={"#st": "status", "#cp": "checkpoint"},
            ExpressionAttributeValues={
                ":r": _n(rows_read), ":m": _n(messages_total), ":running": _s(RUNNING),
                ":splitting": _s(SPLITTING), ":t": _s(now_iso(clock)),
                ":h": {"L": [_s(h) for h in header]}, ":e": _s(error_location),
                ":f": _n(LEDGER_FORMAT),
            },
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if not _conditional_failed(exc) or not fail_old_format(ddb, ledger_table, job,
                                                               clock=clock):
            raise
        return raw_job(ddb, ledger_table, job)
    ddb.update_item(
        TableName=ledger_table, Key=_key(job, TALLY_SK),
        UpdateExpression="SET messages_total = :total, rows_read = :r",
        ExpressionAttributeValues={":total": _n(messages_total), ":r": _n(rows_read)},
    )
    finished: dict[str, Any] = response["Attributes"]
    return finished


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


def job_id(item: Mapping[str, Any]) -> str:
    """The job a ledger item (job item, tally, ...) belongs to."""
    return str(item["pk"]["S"])


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


def fail_job(ddb: Any, ledger_table: str, job: str, *, error: str,
             clock: Clock = time.time) -> None:
    """End a job that cannot be split (bad input): status FAILED with the reason."""
    ddb.update_item(
        TableName=ledger_table,
        Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression="SET #st = :failed, #err = :e, finished_at = :t REMOVE split_lease_until",
        ExpressionAttributeNames={"#st": "status", "#err": "error"},
        ExpressionAttributeValues={":failed": _s(FAILED), ":e": _s(error), ":t": _s(now_iso(clock))},
    )


class TicketVoided(RuntimeError):
    """The folder voided this invocation's log ticket (it waited too long for the record):
    the invocation must fail, so SQS delivers its messages again under a new ticket."""


def _encode_entries(messages: Mapping[str, MessageCounts]) -> str:
    return ",".join(":".join(map(str, (mid, *(c.values() if c.deleted or c.skipped_existing
                                               else c.values()[:3]))))
                    for mid, c in messages.items())


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
    `_hole_voidable`). A record put that fails with an AWS error voids its own ticket
    before the error fails the batch, so a writer that is alive never leaves a hole."""
    updated = []
    for job, messages in results.items():
        if not messages:
            continue
        asked = clock()
        old = ddb.update_item(
            TableName=ledger_table, Key=_key(job, TALLY_SK),
            UpdateExpression="ADD tickets :one, messages_reported :n SET ticket_at = :now",
            ExpressionAttributeValues={":one": _n(1), ":n": _n(len(messages)), ":now": _n_time(asked)},
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
                "r": _s(request_id[:64])}
        if "ticket_at" in old:
            item["prev_at"] = old["ticket_at"]
        try:
            ddb.put_item(TableName=ledger_table, Item=item,
                         ConditionExpression="attribute_not_exists(sk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                raise TicketVoided(f"job {job}: log ticket {ticket} was voided; "
                                   "the batch will be delivered again") from exc
            _void_own(ddb, ledger_table, job, ticket)
            raise
        except BotoCoreError:
            _void_own(ddb, ledger_table, job, ticket)
            raise
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


def _n_time(seconds: float) -> dict[str, str]:
    return {"N": f"{seconds:.3f}"}


def _log_sk(ticket: int) -> str:
    return f"{LOG_PREFIX}{ticket:012d}"


def _shard_sk(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard:012d}"


def should_settle(item: Mapping[str, Any]) -> bool:
    """Whether an invocation holding this item (a tally from `record_batch`, or a job
    item) should fold the job's log now: when its report (`reported_now` messages) took
    messages_reported across a multiple of FOLD_MESSAGES, and on every report once as
    many messages were reported as the job has (duplicates make that a little early,
    which costs a short fold, never a whole-job read), and when its record came so late
    that a folder may have stopped at its ticket (`late`, see `record_batch`). A job
    item: when it is RUNNING or COMPLETE."""
    if "tickets" not in item:
        return item.get("status", {}).get("S") in (RUNNING, COMPLETE)
    if "late" in item:
        return True
    reported = int(item["messages_reported"]["N"])
    reported_now = int(item.get("reported_now", {}).get("N", "0"))
    if (reported - reported_now) // FOLD_MESSAGES != reported // FOLD_MESSAGES:
        return True
    return "messages_total" in item and reported >= int(item["messages_total"]["N"])


# ------------------------------------------------------------------ the fold

@dataclass
class Totals:
    """What a set of log entries adds up to: distinct original messages and row counts."""

    distinct: int = 0
    counts: MessageCounts = MessageCounts()

    def add(self, other: Totals, sign: int = 1) -> None:
        self.distinct += sign * other.distinct
        self.counts = MessageCounts(*(a + sign * b for a, b in zip(self.counts.values(),
                                                                    other.counts.values(),
                                                                    strict=True)))

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Totals:
        """From a shard or the fold item (an outcome it does not hold is 0)."""
        def number(name: str) -> int:
            return int(item.get(name, {}).get("N", "0"))
        return cls(number("distinct"), MessageCounts(*(number(name) for name in OUTCOMES)))

    def attributes(self) -> dict[str, dict[str, str]]:
        return {"distinct": _n(self.distinct),
                **{name: _n(v) for name, v in zip(OUTCOMES, self.counts.values(), strict=True)}}


@dataclass
class Shard:
    """One shard's summary (see the layout above), as a fold step changes it."""

    index: int
    bits: bytearray = field(default_factory=lambda: bytearray(SHARD_SEQS // 8))
    parts: set[str] = field(default_factory=set)
    replays: set[str] = field(default_factory=set)
    totals: Totals = field(default_factory=Totals)
    applied: int = 0
    read_applied: int | None = None  # `applied` as read, None when the item did not exist

    @classmethod
    def from_item(cls, index: int, item: Mapping[str, Any]) -> Shard:
        applied = int(item["applied"]["N"])
        return cls(index, bytearray(item["bits"]["B"]), set(item.get("parts", {}).get("SS", [])),
                   set(item.get("replays", {}).get("SS", [])), Totals.of(item), applied, applied)

    def apply(self, ticket: int, message_id: str, counts: MessageCounts) -> None:
        """Count one log entry, once: a message already counted here changes nothing."""
        if ticket <= self.read_applied_or_zero:
            return  # folded by an earlier step that died before it moved the cursor
        if REPLAY_MARK in message_id:
            # Replayed rows were counted as rejected: the rows it writes, deletes, skips or
            # supersedes move out of rejected; the rows it rejects again stay there.
            if message_id in self.replays:
                return
            self.replays.add(message_id)
            counts, distinct = replace(counts, rejected=-counts.landed), 0
        elif "." in message_id:  # a part of a message split to fit the queue
            if message_id in self.parts:
                return
            self.parts.add(message_id)
            distinct = 1
        else:
            bit = int(message_id) % SHARD_SEQS
            byte, mask = bit >> 3, 1 << (bit & 7)
            if self.bits[byte] & mask:
                return
            self.bits[byte] |= mask
            distinct = 1
        self.totals.add(Totals(distinct, counts))
        self.applied = max(self.applied, ticket)

    @property
    def read_applied_or_zero(self) -> int:
        return self.read_applied or 0

    def item(self, job: str) -> dict[str, Any]:
        item: dict[str, Any] = {"pk": _s(job), "sk": _s(_shard_sk(self.index)),
                                "bits": {"B": bytes(self.bits)}, "applied": _n(self.applied),
                                **self.totals.attributes()}
        if self.parts:
            item["parts"] = {"SS": sorted(self.parts)}
        if self.replays:
            item["replays"] = {"SS": sorted(self.replays)}
        return item


def shard_of(message_id: str) -> int:
    return int(message_id.split(REPLAY_MARK, 1)[0].split(".", 1)[0]) // SHARD_SEQS


def parse_entries(encoded: str) -> Iterator[tuple[str, MessageCounts]]:
    for entry in encoded.split(","):
        mid, *numbers = entry.split(":")  # message ids hold no ":" (see fanout.contract)
        yield mid, MessageCounts(*map(int, numbers))


@dataclass
class FoldState:
    """The fold as one folder left it."""

    cursor: int
    totals: Totals
    tickets: int
    messages_total: int | None
    stalled: int | None = None  # a young hole the fold stopped at (see HolePolicy)
    complete: bool = False  # the tally says the job completed


class FoldLost(RuntimeError):
    """Another folder changed a shard or took the lease: this fold stops; nothing is lost
    (shards skip what they applied, and the next folder sums them again: a lease is taken
    over only HOLE_MARGIN_S after it ran out, so no write of this folder lands after that)."""


def fold(ddb: Any, ledger_table: str, job: str, *, owner: str, lease_s: float = FOLD_LEASE_S,
         budget_s: float = FOLD_BUDGET_S, clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep,
         writer_timeout_s: float = WRITER_TIMEOUT_S) -> FoldState | None:
    """Fold the job's log into its shards from the cursor on, in steps of about
    FOLD_MESSAGES entries, for at most `budget_s`. Returns the state reached, or None when
    another folder holds the lease (it carries the work on: a folder looks at the tally
    again after releasing, so no report is left behind).

    A ticket with no record whose writer may still be alive (`HolePolicy`) stops the fold
    there, after HOLE_WAIT_S at most: the state's `stalled`. It is not waited out: the
    writer folds itself when its record came that late, and once the writer cannot be
    alive, any later settle voids the ticket.

    `lease_s` must not outlast the caller: a writer passes the time its invocation has
    left, so a lease held by a folder that was killed expires when the folder is gone."""
    holes = HolePolicy(writer_timeout_s, clock, sleep)
    started = clock()
    state = None
    while True:
        old = _acquire(ddb, ledger_table, job, owner, started + lease_s, clock())
        if old is None:
            return state
        try:
            state = _fold_steps(ddb, ledger_table, job, owner, old, started, budget_s, holes)
        except BaseException:
            # Released `dirty`, so the next folder sums the shards (the normal path released
            # the lease in its last update).
            _release(ddb, ledger_table, job, owner)
            raise
        if state.stalled is not None:
            # Its record may have come while this folder held the lease (its writer found
            # the lease taken): look once more, now that the lease is free.
            if not _get(ddb, ledger_table, job, _log_sk(state.stalled)):
                return state
            continue
        # Reports that came while this folder held the lease found it taken and left their
        # records to it: look at the tally again.
        tally = _get(ddb, ledger_table, job, TALLY_SK)
        state.tickets = int(tally.get("tickets", {}).get("N", "0"))
        if "messages_total" in tally:
            state.messages_total = int(tally["messages_total"]["N"])
        state.complete = "completed_at" in tally
        if state.cursor >= state.tickets or clock() - started >= budget_s:
            return state


def _acquire(ddb: Any, ledger_table: str, job: str, owner: str, until: float,
             now: float) -> dict[str, Any] | None:
    try:
        previous: dict[str, Any] = ddb.update_item(
            TableName=ledger_table, Key=_key(job, FOLD_SK),
            UpdateExpression="SET lease_owner = :o, lease_until = :u, dirty = :true",
            # A lease its folder did not release (Lambda ended the folder) is taken over
            # only HOLE_MARGIN_S after it ran out, as a hole is voided: a write the folder
            # had in flight, or a clock behind this one, cannot land after the next folder
            # summed the shards.
            ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :expired",
            ExpressionAttributeValues={":o": _s(owner), ":u": _n(int(until)), ":true": {"BOOL": True},
                                       ":expired": _n(int(now - HOLE_MARGIN_S))},
            ReturnValues="ALL_OLD",
        ).get("Attributes", {})
        return previous
    except ClientError as exc:
        if _conditional_failed(exc):
            return None
        raise


def _release(ddb: Any, ledger_table: str, job: str, owner: str) -> None:
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, FOLD_SK),
            UpdateExpression="REMOVE lease_owner, lease_until",
            ConditionExpression="lease_owner = :o",
            ExpressionAttributeValues={":o": _s(owner)},
        )
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise


def _get(ddb: Any, ledger_table: str, job: str, sk: str) -> dict[str, Any]:
    return ddb.get_item(TableName=ledger_table, Key=_key(job, sk),
                        ConsistentRead=True).get("Item") or {}


def _fold_steps(ddb: Any, ledger_table: str, job: str, owner: str, old: Mapping[str, Any],
                started: float, budget_s: float, holes: HolePolicy) -> FoldState:
    cursor = int(old.get("cursor", {}).get("N", "0"))
    # A folder that died mid-step left shards the running totals do not show: sum them.
    totals = sum_shards(ddb, ledger_table, job) if old.get("dirty", {}).get("BOOL") else Totals.of(old)
    tally = _get(ddb, ledger_table, job, TALLY_SK)
    tickets = int(tally.get("tickets", {}).get("N", "0"))
    total = int(tally["messages_total"]["N"]) if "messages_total" in tally else None
    stalled = None
    while True:
        if tickets > cursor:
            high, added, stalled = _fold_step(ddb, ledger_table, job, cursor, tickets, holes)
            totals.add(added)
            cursor = high
        more = stalled is None and holes.clock() - started < budget_s and cursor < tickets
        _save_fold(ddb, ledger_table, job, owner, cursor, totals, clean=not more)
        if not more:
            return FoldState(cursor, totals, tickets, total, stalled, "completed_at" in tally)


def _save_fold(ddb: Any, ledger_table: str, job: str, owner: str, cursor: int, totals: Totals,
               *, clean: bool) -> None:
    update = "SET #cursor = :c, #d = :distinct, " + ", ".join(f"{name} = :{name}"
                                                              for name in OUTCOMES)
    values: dict[str, Any] = {":c": _n(cursor), ":o": _s(owner), ":distinct": _n(totals.distinct),
                              **_outcome_values(totals.counts, "")}
    if clean:  # done: the lease goes with it
        update += ", dirty = :false REMOVE lease_owner, lease_until"
        values[":false"] = {"BOOL": False}
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, FOLD_SK), UpdateExpression=update,
            ConditionExpression="lease_owner = :o",
            ExpressionAttributeNames={"#cursor": "cursor", "#d": "distinct"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            raise FoldLost(f"job {job}: the fold's lease passed to another folder") from exc
        raise


def _read_log(ddb: Any, ledger_table: str, job: str, low: int, high: int
              ) -> tuple[dict[int, dict[str, Any]], int]:
    """Log records from ticket `low` on, up to `high`, until about FOLD_MESSAGES entries
    are read: (records by ticket, the last ticket the read covers)."""
    records: dict[int, dict[str, Any]] = {}
    entries = 0
    params: dict[str, Any] = {
        "TableName": ledger_table, "Limit": LOG_PAGE, "ConsistentRead": True,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {":pk": _s(job), ":low": _s(_log_sk(low)),
                                      ":high": _s(_log_sk(high))},
    }
    while True:
        page = ddb.query(**params)
        for item in page.get("Items", []):
            records[int(item["sk"]["S"][len(LOG_PREFIX):])] = item
            entries += item.get("m", {}).get("S", "").count(",") + 1
        if "LastEvaluatedKey" not in page:
            return records, high
        if entries >= FOLD_MESSAGES:
            return records, max(records)
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _fold_step(ddb: Any, ledger_table: str, job: str, cursor: int, tickets: int,
               holes: HolePolicy) -> tuple[int, Totals, int | None]:
    """Fold the tickets after `cursor` (about FOLD_MESSAGES entries' worth, up to
    `tickets`) into their shards: (the last ticket folded, what they added, the ticket of
    a young hole the step stopped at, or None)."""
    records, high = _read_log(ddb, ledger_table, job, cursor + 1, tickets)
    missing = [t for t in range(cursor + 1, high + 1) if t not in records]
    waited = 0.0
    while missing and waited < HOLE_WAIT_S:
        # Most holes are a writer between its ticket and its record: a few polls see it.
        holes.sleep(HOLE_POLL_S)
        waited += HOLE_POLL_S
        for ticket in missing:
            came = _get(ddb, ledger_table, job, _log_sk(ticket))
            if came:
                records[ticket] = came
        missing = [t for t in missing if t not in records]
    stalled = None
    for ticket in missing:
        if not holes.voidable(ticket, records):
            # Its writer may be alive: fold up to it, and leave it to a later settle (the
            # writer's own, which folds when its record came late, or any later one).
            stalled, high = ticket, ticket - 1
            break
        late = _void(ddb, ledger_table, job, ticket)
        if late is not None:
            records[ticket] = late
    by_shard: dict[int, list[tuple[int, str, MessageCounts]]] = {}
    for ticket in sorted(t for t in records if t <= high):
        encoded = records[ticket].get("m", {}).get("S")
        if not encoded:
            continue  # voided
        for mid, counts in parse_entries(encoded):
            by_shard.setdefault(shard_of(mid), []).append((ticket, mid, counts))
    added = Totals()
    for shard in _read_shards(ddb, ledger_table, job, sorted(by_shard)):
        before = Totals()
        before.add(shard.totals)
        for ticket, mid, counts in by_shard[shard.index]:
            shard.apply(ticket, mid, counts)
        if shard.applied == (shard.read_applied or 0):
            continue  # nothing new for this shard
        _put_shard(ddb, ledger_table, job, shard)
        added.add(shard.totals)
        added.add(before, -1)
    return high, added, stalled


@dataclass(frozen=True)
class HolePolicy:
    """When a ticket with no record may be voided: only once no writer can still write it.

    A writer lives at most `writer_timeout_s` (Lambda ends it there). Record t+1 carries
    `prev_at`, the clock of ticket t's writer when it asked for t, so t's writer is gone
    `writer_timeout_s` after it. Any later record u carries ticket u-1's stamp; t's writer
    started before ticket u-1 was handed out, and u-1's writer was alive then and had asked
    at `prev_at`, so t's writer is gone two timeouts after that stamp. Voiding earlier would
    fail a live writer's batch (and SQS would deliver up to a batch of messages again)."""

    writer_timeout_s: float = WRITER_TIMEOUT_S
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def voidable(self, ticket: int, records: Mapping[int, Mapping[str, Any]]) -> bool:
        now = self.clock()
        after = records.get(ticket + 1, {})
        if "prev_at" in after and now - float(after["prev_at"]["N"]) > (
                self.writer_timeout_s + HOLE_MARGIN_S):
            return True
        stamps = [float(r["prev_at"]["N"]) for t, r in records.items()
                  if t > ticket + 1 and "prev_at" in r]
        return bool(stamps) and now - min(stamps) > 2 * self.writer_timeout_s + HOLE_MARGIN_S


def _void(ddb: Any, ledger_table: str, job: str, ticket: int) -> dict[str, Any] | None:
    """Void a ticket whose record did not come; the record if it came after all."""
    try:
        ddb.put_item(TableName=ledger_table,
                     Item={"pk": _s(job), "sk": _s(_log_sk(ticket)), "void": {"BOOL": True}},
                     ConditionExpression="attribute_not_exists(sk)")
        return None
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
    return _get(ddb, ledger_table, job, _log_sk(ticket))


MAX_BATCH_GET = 100


def _read_shards(ddb: Any, ledger_table: str, job: str, indexes: list[int]) -> list[Shard]:
    shards = {i: Shard(i) for i in indexes}
    for start in range(0, len(indexes), MAX_BATCH_GET):
        request: dict[str, Any] = {ledger_table: {
            "Keys": [_key(job, _shard_sk(i)) for i in indexes[start:start + MAX_BATCH_GET]],
            "ConsistentRead": True}}
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(ledger_table, []):
                index = int(item["sk"]["S"][len(SHARD_PREFIX):])
                shards[index] = Shard.from_item(index, item)
            request = response.get("UnprocessedKeys") or {}
    return [shards[i] for i in indexes]


def _put_shard(ddb: Any, ledger_table: str, job: str, shard: Shard) -> None:
    if shard.read_applied is None:
        condition, values = "attribute_not_exists(sk)", {}
    else:
        condition, values = "applied = :read", {":read": _n(shard.read_applied)}
    try:
        ddb.put_item(TableName=ledger_table, Item=shard.item(job), ConditionExpression=condition,
                     **({"ExpressionAttributeValues": values} if values else {}))
    except ClientError as exc:
        if _conditional_failed(exc):
            raise FoldLost(f"job {job}: shard {shard.index} changed under this fold") from exc
        raise


def sum_shards(ddb: Any, ledger_table: str, job: str) -> Totals:
    """The job's totals summed over its shard summaries (after a folder died mid-step)."""
    totals = Totals()
    paginator = ddb.get_paginator("query")
    for page in paginator.paginate(
        TableName=ledger_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": _s(job), ":p": _s(SHARD_PREFIX)},
        ProjectionExpression=", ".join(("#d", *OUTCOMES)),
        ExpressionAttributeNames={"#d": "distinct"},
        ConsistentRead=True,
    ):
        for item in page.get("Items", []):
            totals.add(Totals.of(item))
    return totals


# ------------------------------------------------------------------ completion

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


def _outcome_values(counts: MessageCounts, prefix: str) -> dict[str, dict[str, str]]:
    """The expression values `:<prefix><outcome>` of `counts`, one per outcome."""
    return {f":{prefix}{name}": _n(v) for name, v in zip(OUTCOMES, counts.values(), strict=True)}


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
        if state is None or state.messages_total is None:
            return None
        values = {**_outcome_values(state.totals.counts, "rows_"), ":c": _n(state.cursor),
                  ":complete": _s(COMPLETE)}
        if state.complete:
            break
        if state.stalled is not None or state.totals.distinct < state.messages_total:
            return None
        try:
            ddb.transact_write_items(TransactItems=[
                {"Update": {
                    "TableName": ledger_table, "Key": _key(job, TALLY_SK),
                    "UpdateExpression": "SET completed_at = :t",
                    "ConditionExpression": "tickets = :c",
                    "ExpressionAttributeValues": {":c": _n(state.cursor), ":t": _s(now_iso(clock))}}},
                {"Update": {
                    "TableName": ledger_table, "Key": _key(job, JOB_SK),
                    "UpdateExpression": "SET #st = :complete, finished_at = :t, "
                                        f"{ROWS_SET}, counted_through = :c",
                    "ConditionExpression": "#st = :running",
                    "ExpressionAttributeNames": {"#st": "status"},
                    "ExpressionAttributeValues": values | {":t": _s(now_iso(clock)),
                                                           ":running": _s(RUNNING)}}},
            ])
            return Settlement(COMPLETE, completion_summary(plain(raw_job(ddb, ledger_table, job))))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or [{}, {}]
            if reasons[-1].get("Code") == "ConditionalCheckFailed":
                break  # not RUNNING: completed by another settle (or failed)
            # Reports came in since this fold: fold them too, and try again.
    else:
        return None  # reports keep coming: their own settles complete the job
    try:  # completed earlier: a replay or a late duplicate came in
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, JOB_SK),
            UpdateExpression=f"SET {ROWS_SET}, counted_through = :c",
            ConditionExpression="#st = :complete AND counted_through < :c",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={k: v for k, v in values.items() if k != ":running"},
        )
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
    job_item = raw_job(ddb, ledger_table, job)
    status = job_item.get("status", {}).get("S", "")
    if status == COMPLETE and "summary_published" not in job_item:
        return Settlement(status, completion_summary(plain(job_item)))
    return Settlement(status)


def mark_published(ddb: Any, ledger_table: str, job: str, *, clock: Clock = time.time) -> None:
    """SNS has taken the job's summary: later reports need not publish it again."""
    ddb.update_item(
        TableName=ledger_table,
        Key=_key(job, JOB_SK),
        UpdateExpression="SET summary_published = :t",
        ExpressionAttributeValues={":t": _s(now_iso(clock))},
    )


# ------------------------------------------------------------------ reading

def read_message_counts(ddb: Any, ledger_table: str, job: str) -> dict[str, MessageCounts]:
    """Every message id in the job's log, once each. Reads the whole log, so it is for
    tests and diagnostics of small jobs: nothing in the pipeline calls it."""
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
                counts.update(parse_entries(item["m"]["S"]))
    return counts


def message_counted(ddb: Any, ledger_table: str, job: str, message_id: str) -> bool:
    """Whether the fold has counted this message: one shard read."""
    item = _get(ddb, ledger_table, job, _shard_sk(shard_of(message_id)))
    if not item:
        return False
    shard = Shard.from_item(shard_of(message_id), item)
    if REPLAY_MARK in message_id:
        return message_id in shard.replays
    if "." in message_id:
        return message_id in shard.parts
    bit = int(message_id.split(REPLAY_MARK, 1)[0]) % SHARD_SEQS
    return bool(shard.bits[bit >> 3] & (1 << (bit & 7)))


def is_replay(message_id: str) -> bool:
    return REPLAY_MARK in message_id


def totals(counts: Mapping[str, MessageCounts] | Iterable[MessageCounts]) -> MessageCounts:
    """Job totals from per-message counts (the rule the shards apply, for tests and
    diagnostics): a replayed message's rows that landed move out of rejected."""
    if not isinstance(counts, Mapping):  # bare counts: all original messages
        counts = {str(i): c for i, c in enumerate(counts)}
    sums = [0] * len(OUTCOMES)
    for message_id, c in counts.items():
        if is_replay(message_id):
            c = replace(c, rejected=-c.landed)
        sums = [a + b for a, b in zip(sums, c.values(), strict=True)]
    return MessageCounts(*sums)


def job_counts(counts: MessageCounts) -> dict[str, int]:
    """`rows_<outcome>` for each outcome: the job item's names (and the summaries')."""
    return {f"rows_{name}": v for name, v in zip(OUTCOMES, counts.values(), strict=True)}


def counts_of(job: Mapping[str, Any]) -> MessageCounts:
    """A plain job item's (or summary's) counts; an outcome it lacks is 0."""
    return MessageCounts(*(int(job.get(f"rows_{name}") or 0) for name in OUTCOMES))


def raw_job(ddb: Any, ledger_table: str, job: str) -> dict[str, Any]:
    """The job item as DynamoDB returns it (typed), or {} when there is none."""
    return _get(ddb, ledger_table, job, JOB_SK)


SUMMARY_NAMES = {"written": "TOTAL_NUMBER_OF_ITEMS_WRITTEN",
                 "rejected": "TOTAL_NUMBER_OF_ITEMS_IN_ERROR",
                 "superseded": "TOTAL_NUMBER_OF_ROWS_SUPERSEDED",
                 "deleted": "TOTAL_NUMBER_OF_ITEMS_DELETED",
                 "skipped_existing": "TOTAL_NUMBER_OF_ROWS_SKIPPED_EXISTING"}


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
        **{SUMMARY_NAMES[name]: job.get(f"rows_{name}") for name in outcomes_shown(mode, counts)},
        "DESTINATION_TABLE_NAME": job.get("table"),
        "ERROR_DATA_LOCATION": job.get("error_location"),
    }
    return summary


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
    if "ledger_format" not in item and out.get("status") in (SPLITTING, RUNNING):
        out["error"] = OLD_FORMAT_ERROR.format(job=job)  # what its next report will do
    if out.get("status") != COMPLETE and folded:
        out |= job_counts(running.counts)
    elif "rows_written" in out:  # a job completed before write modes has no rows_deleted
        out |= {name: v for name, v in job_counts(counts_of(out)).items() if name not in out}
    return out


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


# --------------------------------------------------------------------------- parallel split steps
# The job item's parallel-split attributes and the `<kind>#<index>` step items (see the
# layout above); splitter/fan.py calls these and touches the table no other way.

def record_plan(ddb: Any, table: str, job: str, *, ranges: int, header: list[str],
                header_line: int) -> None:
    """A parallel split's plan: how many ranges, and the header every range's messages carry."""
    ddb.update_item(
        TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression="SET parallel_ranges = :n, #h = :h, header_line = :l",
        ExpressionAttributeNames={"#h": "header"},
        ExpressionAttributeValues={":n": _n(ranges), ":h": {"L": [_s(h) for h in header]},
                                   ":l": _n(header_line)},
    )


def report_step(ddb: Any, table: str, job: str, kind: str, index: int,
                result: Mapping[str, Any]) -> dict[str, Any]:
    """Store one step's result (JSON) and add its index to the job's `<kind>s_done` set
    (both idempotent); return the job item as it is now."""
    ddb.put_item(TableName=table, Item={"pk": _s(job), "sk": _s(f"{kind}#{index:05d}"),
                                        "result": _s(json.dumps(result, separators=(",", ":")))})
    attributes: dict[str, Any] = ddb.update_item(
        TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression=f"ADD {kind}s_done :i",
        ExpressionAttributeValues={":i": {"NS": [str(index)]}}, ReturnValues="ALL_NEW",
    )["Attributes"]
    return attributes


def steps_done(job_item: Mapping[str, Any], kind: str) -> set[int]:
    """The indexes of the `kind` steps that have reported."""
    return {int(i) for i in job_item.get(f"{kind}s_done", {}).get("NS", [])}


def stage_fanned(job_item: Mapping[str, Any], kind: str) -> bool:
    return f"{kind}s_fanned" in job_item


def plan_header(job_item: Mapping[str, Any]) -> tuple[list[str], int]:
    """The header a parallel split's plan recorded, and its line."""
    return ([h.get("S", "") for h in job_item.get("header", {}).get("L", [])],
            int(job_item.get("header_line", {}).get("N", "1")))


def job_mode(job_item: Mapping[str, Any]) -> str:
    """The write mode a (raw) job item was started with."""
    return str(job_item.get("mode", {}).get("S", "put"))


def status_of(job_item: Mapping[str, Any]) -> str:
    return str(job_item.get("status", {}).get("S", ""))


def mark_fanned(ddb: Any, table: str, job: str, kind: str) -> None:
    """The `kind` stage has started the next one (so a duplicate step does not again)."""
    ddb.update_item(TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
                    UpdateExpression=f"SET {kind}s_fanned = :t",
                    ExpressionAttributeValues={":t": {"BOOL": True}})


def step_results(ddb: Any, table: str, job: str, kind: str) -> list[dict[str, Any] | None]:
    """Every `kind` step's stored result, in index order (at most 200: one per range);
    None for a step stored by an earlier version (no `result`)."""
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": _s(job), ":p": _s(f"{kind}#")}, ConsistentRead=True,
    ):
        items.extend(page.get("Items", []))
    items.sort(key=lambda item: item["sk"]["S"])
    return [json.loads(item["result"]["S"]) if "result" in item else None for item in items]


# --------------------------------------------------------------------------- many jobs at once
# `fanout ingest s3://BUCKET/PREFIX` asks about every object's job: BatchGetItem, 100 keys a
# call, instead of a GetItem (or get_job's three) per job.

BATCH_GET_ATTEMPTS = 8


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
    for start in range(0, len(keys), MAX_BATCH_GET):
        request: dict[str, Any] = {ledger_table: {"Keys": keys[start:start + MAX_BATCH_GET]}}
        for attempt in range(BATCH_GET_ATTEMPTS):
            response = ddb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(ledger_table, []):
                job = item["pk"]["S"]
                if item["sk"]["S"] == JOB_SK:
                    found[job] = plain(item)
                else:
                    reported[job] = int(item.get("messages_reported", {}).get("N", "0"))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
        else:
            raise RuntimeError(f"{ledger_table}: BatchGetItem left keys unprocessed "
                               f"{BATCH_GET_ATTEMPTS} times (throttled)")
    if progress:
        for job, item in found.items():
            item["messages_reported"] = reported.get(job, 0)
    return found
