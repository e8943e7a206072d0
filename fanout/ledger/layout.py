"""The ledger's bottom floor: the table's keys and item kinds, the tunables, the outcome
names, and the codecs every other ledger module shares (attribute values, key builders,
log entries, plain items). It imports nothing of the ledger's.

Names with a leading underscore are the package's own: its modules share them; the door
(`fanout.ledger`) does not offer them. A test that changes a tunable changes it here
(`ledger.layout.SHARD_SEQS`), where every module reads it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from fanout.contract import REPLAY_MARK
from fanout.settings import HOLE_MARGIN_S as HOLE_MARGIN_S  # the timing rule's margin: one copy

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
# the writer that took it has outlived the writer function's timeout, plus HOLE_MARGIN_S
# for clock differences between hosts and a request still in flight when the writer died.
# It lives in fanout.settings, which holds the queue's visibility timeout to it.
WRITER_TIMEOUT_S = 60.0  # PipelineConfig.writer_timeout_s, when the caller cannot say
FOLD_LEASE_S = 60.0  # when the caller cannot say how long it lives

SPLITTING = "SPLITTING"
RUNNING = "RUNNING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
# A job that cannot end: no progress for the stall time (a message past the queue's
# retention, a split that died after its retries). Its summary names what is missing; the
# job still completes if the missing messages come after all (a DLQ redrive).
STALLED = "STALLED"
# An operator's cancel (`cancel.cancel_job`): CANCELLING at once, CANCELLED once nothing
# more of the job will be written (every message it sent counted, or none came for the
# stall time). A STALLED job can be cancelled too; a COMPLETE or FAILED one cannot.
CANCELLING = "CANCELLING"
CANCELLED = "CANCELLED"
ENDED = (COMPLETE, FAILED, STALLED, CANCELLED)

# The active index: one item per job that is not yet ended and announced (pk ACTIVE_PK,
# sk the job id), so the reconciler finds them with one Query, whatever the table holds.
# A job id never starts with "#" (fanout.contract.job_id_for), so no job's items share it.
ACTIVE_PK = "#active"
# The jobs index: one item per job, written once, by the transaction that starts it (pk
# JOBS_PK, sk its start time and id, `_jobs_sk`), so `fanout jobs` lists the newest first
# with one Query that reads about as many items as it lists.
JOBS_PK = "#jobs"

# A log record carries `expires_at` (the ledger table's TTL attribute), LOG_EXPIRY_S after
# its writer wrote it. The fold reads a record once, when its cursor passes it, and never
# again; the reconciler folds every active job each minute, so a record waits minutes to
# be folded, never a month. Nothing else of the ledger expires (see the door).
EXPIRES_AT = "expires_at"
LOG_EXPIRY_S = 30 * 86400

SPLIT_LEASE_S = 960  # a little over the splitter's 15-minute maximum timeout


# Where a row can end, one name each: in MessageCounts, log entries (in this order), the
# shards and the fold (as named), and the job item (`rows_<name>`). `written` is an item
# put, inserted or updated; `deleted` a key deleted (absent or not, as DynamoDB counts
# it); `skipped_existing` an insert whose key the table already held.
# `cancelled`: a row of a cancelled job that a writer dropped without writing it.
OUTCOMES = ("written", "rejected", "superseded", "deleted", "skipped_existing", "cancelled")
MODE_OUTCOMES = {"delete": ("deleted",), "insert": ("skipped_existing",)}  # beyond put's
# Where a replayed row can land (a replay is never dropped as cancelled: see the writer).
LANDED = ("written", "superseded", "deleted", "skipped_existing")


@dataclass(frozen=True)
class MessageCounts:
    written: int = 0
    rejected: int = 0
    superseded: int = 0
    deleted: int = 0
    skipped_existing: int = 0
    cancelled: int = 0
    # A replay whose rows carry their indexes (see fanout.contract): per LANDED outcome, a
    # bitmask of the indexes (in the seq) of the rows that ended there. None otherwise.
    masks: tuple[int, ...] | None = field(default=None, kw_only=True)

    @property
    def rows(self) -> int:
        return self.rejected + self.landed + self.cancelled

    @property
    def landed(self) -> int:
        """The rows that did not end rejected (what a replay moves out of rejected)."""
        return self.written + self.superseded + self.deleted + self.skipped_existing

    def values(self) -> tuple[int, ...]:
        """The counts in OUTCOMES order."""
        return (self.written, self.rejected, self.superseded, self.deleted, self.skipped_existing,
                self.cancelled)


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


def _n_time(seconds: float) -> dict[str, str]:
    return {"N": f"{seconds:.3f}"}


def _key(job: str, sk: str) -> dict[str, dict[str, str]]:
    return {PARTITION_KEY: _s(job), SORT_KEY: _s(sk)}


def _log_sk(ticket: int) -> str:
    return f"{LOG_PREFIX}{ticket:012d}"


def _shard_sk(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard:012d}"


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")


def _own_commit(exc: ClientError, **expected: dict[str, Any]) -> bool:
    """Whether a conditional write that failed its condition (asked with
    ReturnValuesOnConditionCheckFailure=ALL_OLD) found the item as this very write left it:
    its reply was lost after it committed, and botocore's retry then failed the condition.
    `expected` are attribute values only this write could have set (an owner, a token)."""
    if not _conditional_failed(exc):
        return False
    item = exc.response.get("Item") or {}
    return all(item.get(name) == value for name, value in expected.items())


def _canceled_on(exc: ClientError, index: int) -> bool:
    """Whether a TransactWriteItems failed because item `index`'s condition failed."""
    if exc.response["Error"]["Code"] != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    return index < len(reasons) and reasons[index].get("Code") == "ConditionalCheckFailed"


def _active_key(job: str) -> dict[str, dict[str, str]]:
    return {PARTITION_KEY: _s(ACTIVE_PK), SORT_KEY: _s(job)}


def _jobs_sk(started_at: str, job: str) -> str:
    """A job's place in the jobs index: its start time (ISO, UTC, so it sorts) and its id."""
    return f"{started_at}#{job}"


def _get(ddb: Any, ledger_table: str, job: str, sk: str) -> dict[str, Any]:
    return ddb.get_item(TableName=ledger_table, Key=_key(job, sk),
                        ConsistentRead=True).get("Item") or {}


def raw_job(ddb: Any, ledger_table: str, job: str) -> dict[str, Any]:
    """The job item as DynamoDB returns it (typed), or {} when there is none."""
    return _get(ddb, ledger_table, job, JOB_SK)


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger item with DynamoDB types removed (numbers as int)."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        (type_, v), = value.items()
        if type_ == "N":
            out[name] = int(v)
        elif type_ == "L":  # of strings (a header) or numbers (missing seqs)
            out[name] = [int(x["N"]) if "N" in x else x.get("S") for x in v]
        else:
            out[name] = v
    return out


def job_id(item: Mapping[str, Any]) -> str:
    """The job a ledger item (job item, tally, ...) belongs to."""
    return str(item["pk"]["S"])


def status_of(job_item: Mapping[str, Any]) -> str:
    return str(job_item.get("status", {}).get("S", ""))


def job_mode(job_item: Mapping[str, Any]) -> str:
    """The write mode a (raw) job item was started with."""
    return str(job_item.get("mode", {}).get("S", "put"))


def _outcome_values(counts: MessageCounts, prefix: str) -> dict[str, dict[str, str]]:
    """The expression values `:<prefix><outcome>` of `counts`, one per outcome."""
    return {f":{prefix}{name}": _n(v) for name, v in zip(OUTCOMES, counts.values(), strict=True)}


def job_counts(counts: MessageCounts) -> dict[str, int]:
    """`rows_<outcome>` for each outcome: the job item's names (and the summaries')."""
    return {f"rows_{name}": v for name, v in zip(OUTCOMES, counts.values(), strict=True)}


def counts_of(job: Mapping[str, Any]) -> MessageCounts:
    """A plain job item's (or summary's) counts; an outcome it lacks is 0."""
    return MessageCounts(*(int(job.get(f"rows_{name}") or 0) for name in OUTCOMES))


def is_replay(message_id: str) -> bool:
    return REPLAY_MARK in message_id


def _encode_entries(messages: Mapping[str, MessageCounts]) -> str:
    return ",".join(":".join(map(str, (mid, *_trimmed(c.values())))) + _encode_masks(c.masks)
                    for mid, c in messages.items())


def _trimmed(values: tuple[int, ...]) -> tuple[int, ...]:
    """An entry's counts as written: put's three; the write modes' two after them when either
    is not 0; `cancelled` last, only when not 0 (so every earlier entry reads as it did)."""
    if values[5]:
        return values
    return values[:5] if values[3] or values[4] else values[:3]


def _encode_masks(masks: tuple[int, ...] | None) -> str:
    """`@` and the masks in hex, joined by ".", without the zeros at the end: "@8" is row 3
    written; "@0" a replay whose rows all stayed rejected. Nothing when there are none."""
    if masks is None:
        return ""
    digits = [f"{mask:x}" for mask in masks]
    while len(digits) > 1 and digits[-1] == "0":
        digits.pop()
    return "@" + ".".join(digits)


def row_masks(*, written: Iterable[int] = (), superseded: Iterable[int] = (),
              deleted: Iterable[int] = (), skipped_existing: Iterable[int] = ()) -> tuple[int, ...]:
    """A replay's `MessageCounts.masks` from the indexes of its rows by outcome."""
    return tuple(sum(1 << i for i in set(indexes))
                 for indexes in (written, superseded, deleted, skipped_existing))  # LANDED


def _moved(masks: Iterable[int]) -> MessageCounts:
    """The rows of a replay's masks (LANDED order), moved out of rejected."""
    written, superseded, deleted, skipped = (mask.bit_count() for mask in masks)
    return MessageCounts(written, -(written + superseded + deleted + skipped), superseded,
                         deleted, skipped)


def parse_entries(encoded: str) -> Iterator[tuple[str, MessageCounts]]:
    for entry in encoded.split(","):
        counted, marked, masks = entry.partition("@")
        mid, *numbers = counted.split(":")  # message ids hold no ":" or "@" (see fanout.contract)
        found = [int(mask, 16) for mask in masks.split(".")] if marked else None
        yield mid, MessageCounts(*map(int, numbers), masks=None if found is None else tuple(
            found + [0] * (len(LANDED) - len(found))))


def shard_of(message_id: str) -> int:
    return int(message_id.split(REPLAY_MARK, 1)[0].split(".", 1)[0]) // SHARD_SEQS


MAX_BATCH_GET = 100
BATCH_GET_ATTEMPTS = 8


def _batch_get(ddb: Any, ledger_table: str, keys: list[dict[str, Any]], *, consistent: bool,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """The items of `keys` that exist, MAX_BATCH_GET keys a call; unprocessed keys are asked
    again with backoff, at most BATCH_GET_ATTEMPTS times, then it raises."""
    for start in range(0, len(keys), MAX_BATCH_GET):
        request: dict[str, Any] = {ledger_table: {"Keys": keys[start:start + MAX_BATCH_GET],
                                                  "ConsistentRead": consistent}}
        for attempt in range(BATCH_GET_ATTEMPTS):
            response = ddb.batch_get_item(RequestItems=request)
            yield from response.get("Responses", {}).get(ledger_table, [])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            sleep(min(2.0, 0.05 * 2 ** attempt))
        else:
            raise RuntimeError(f"{ledger_table}: BatchGetItem left keys unprocessed "
                               f"{BATCH_GET_ATTEMPTS} times (throttled)")
