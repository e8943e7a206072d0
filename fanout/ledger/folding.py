"""The fold and the shards: the log folded into per-shard summaries under the fold's
lease, holes voided only once their writer is gone (`HolePolicy`)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from fanout.contract import REPLAY_MARK
from fanout.ledger import layout
from fanout.ledger.layout import (
    FOLD_BUDGET_S,
    FOLD_LEASE_S,
    FOLD_SK,
    HOLE_MARGIN_S,
    HOLE_POLL_S,
    HOLE_WAIT_S,
    LOG_PREFIX,
    OUTCOMES,
    SHARD_PREFIX,
    TALLY_SK,
    WRITER_TIMEOUT_S,
    MessageCounts,
    _batch_get,
    _conditional_failed,
    _get,
    _key,
    _log_sk,
    _moved,
    _n,
    _n_time,
    _outcome_values,
    _own_commit,
    _s,
    _shard_sk,
    parse_entries,
    shard_of,
)
from fanout.ledger.log import _void
from fanout.settings import ROWS_PER_MESSAGE

_ALL_ROWS = (1 << ROWS_PER_MESSAGE) - 1  # a seq's rows in the landed bitmap


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
    bits: bytearray = field(default_factory=lambda: bytearray(layout.SHARD_SEQS // 8))
    parts: set[str] = field(default_factory=set)
    replays: set[str] = field(default_factory=set)  # replays whose rows carry no indexes
    totals: Totals = field(default_factory=Totals)
    applied: int = 0
    read_applied: int | None = None  # `applied` as read, None when the item did not exist
    # One bit per row (seq, index) a replay landed; made when the first one lands here.
    landed: bytearray | None = None

    @classmethod
    def from_item(cls, index: int, item: Mapping[str, Any]) -> Shard:
        applied = int(item["applied"]["N"])
        landed = bytearray(zlib.decompress(item["landed"]["B"])) if "landed" in item else None
        return cls(index, bytearray(item["bits"]["B"]), set(item.get("parts", {}).get("SS", [])),
                   set(item.get("replays", {}).get("SS", [])), Totals.of(item), applied, applied,
                   landed)

    def apply(self, ticket: int, message_id: str, counts: MessageCounts) -> None:
        """Count one log entry, once: a message already counted here changes nothing."""
        if ticket <= self.read_applied_or_zero:
            return  # folded by an earlier step that died before it moved the cursor
        if REPLAY_MARK in message_id and counts.masks is not None:
            # Replayed rows were counted as rejected: each row moves out of rejected to the
            # outcome of the first replay that lands it, whatever the replay's id, however
            # often it is sent back (a row rejected again stays, and may land later).
            moved = self._land(message_id, counts.masks)
            if moved is None:
                return
            counts, distinct = moved, 0
        elif REPLAY_MARK in message_id:
            # A replay of rows from before indexes: counted once by its id (the rows it
            # writes, deletes, skips or supersedes move out of rejected).
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
            bit = int(message_id) % layout.SHARD_SEQS
            byte, mask = bit >> 3, 1 << (bit & 7)
            if self.bits[byte] & mask:
                return
            self.bits[byte] |= mask
            distinct = 1
        self.totals.add(Totals(distinct, counts))
        self.applied = max(self.applied, ticket)

    def _land(self, message_id: str, masks: tuple[int, ...]) -> MessageCounts | None:
        """Set the landed bits of a replay's rows; the rows whose bit was clear move from
        rejected to their outcome (None when there is none)."""
        seq = int(message_id.split(REPLAY_MARK, 1)[0].split(".", 1)[0])
        seen = before = self.landed_rows(seq)
        fresh = []
        for mask in masks:
            fresh.append(mask & _ALL_ROWS & ~seen)
            seen |= fresh[-1]
        if seen == before:
            return None
        if self.landed is None:
            self.landed = bytearray(-(-layout.SHARD_SEQS * ROWS_PER_MESSAGE // 8))
        start = seq % layout.SHARD_SEQS * ROWS_PER_MESSAGE
        window = slice(start >> 3, (start >> 3) + 4)  # 25 bits from any bit of a byte: 4 bytes
        chunk = self.landed[window]
        word = int.from_bytes(chunk, "little") | seen << (start & 7)
        self.landed[window] = word.to_bytes(len(chunk), "little")
        return _moved(fresh)

    def landed_rows(self, seq: int) -> int:
        """The bitmask of seq's row indexes a replay has landed."""
        if self.landed is None:
            return 0
        start = seq % layout.SHARD_SEQS * ROWS_PER_MESSAGE
        chunk = self.landed[start >> 3:(start >> 3) + 4]
        return int.from_bytes(chunk, "little") >> (start & 7) & _ALL_ROWS

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
        if self.landed is not None:  # compressed: mostly zeros, unless most rows were replayed
            item["landed"] = {"B": zlib.compress(bytes(self.landed))}
        return item


@dataclass
class FoldState:
    """The fold as one folder left it."""

    cursor: int
    totals: Totals
    tickets: int
    messages_total: int | None
    stalled: int | None = None  # a young hole the fold stopped at (see HolePolicy)
    complete: bool = False  # the tally says the job completed (or, cancelled, ended)
    cancelled: bool = False  # the tally says the job was cancelled


class FoldLost(RuntimeError):
    """Another folder changed a shard or took the lease: this fold stops; nothing is lost
    (shards skip what they applied, and the next folder sums them again: a lease is taken
    over only HOLE_MARGIN_S after it ran out, so no write of this folder lands after that)."""


def fold(ddb: Any, ledger_table: str, job: str, *, owner: str, lease_s: float = FOLD_LEASE_S,
         budget_s: float = FOLD_BUDGET_S, clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep,
         writer_timeout_s: float = WRITER_TIMEOUT_S) -> FoldState | None:
    """Fold the job's log into its shards from the cursor on, in steps of about
    layout.FOLD_MESSAGES entries, for at most `budget_s`. Returns the state reached, or None when
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
        state.cancelled = "cancelled_at" in tally
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
            ReturnValues="ALL_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD",
        ).get("Attributes", {})
        return previous
    except ClientError as exc:
        if _own_commit(exc, lease_owner=_s(owner)):
            # This acquire committed and its reply was lost: the lease is this folder's.
            # What it replaced is gone, so treat the fold as dirty (sum the shards).
            return dict(exc.response["Item"])
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
        moved_at = None
        if tickets > cursor:
            high, added, stalled = _fold_step(ddb, ledger_table, job, owner, cursor, tickets, holes)
            totals.add(added)
            moved_at = holes.clock() if high > cursor else None
            cursor = high
        more = stalled is None and holes.clock() - started < budget_s and cursor < tickets
        _save_fold(ddb, ledger_table, job, owner, cursor, totals, clean=not more, moved_at=moved_at)
        if not more:
            return FoldState(cursor, totals, tickets, total, stalled, "completed_at" in tally,
                             "cancelled_at" in tally)


def _save_fold(ddb: Any, ledger_table: str, job: str, owner: str, cursor: int, totals: Totals,
               *, clean: bool, moved_at: float | None = None) -> None:
    update = "SET #cursor = :c, #d = :distinct, saved_by = :o, " + ", ".join(
        f"{name} = :{name}" for name in OUTCOMES)
    values: dict[str, Any] = {":c": _n(cursor), ":o": _s(owner), ":distinct": _n(totals.distinct),
                              **_outcome_values(totals.counts, "")}
    if moved_at is not None:  # the cursor moved: the job made progress (see the reconciler)
        update += ", folded_at = :at"
        values[":at"] = _n_time(moved_at)
    if clean:  # done: the lease goes with it
        update += ", dirty = :false REMOVE lease_owner, lease_until"
        values[":false"] = {"BOOL": False}
    try:
        ddb.update_item(
            TableName=ledger_table, Key=_key(job, FOLD_SK), UpdateExpression=update,
            ConditionExpression="lease_owner = :o",
            ExpressionAttributeNames={"#cursor": "cursor", "#d": "distinct"},
            ExpressionAttributeValues=values, ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if _own_commit(exc, saved_by=_s(owner), cursor=_n(cursor)):
            return  # committed, then its reply was lost (a clean save removed the lease)
        if _conditional_failed(exc):
            raise FoldLost(f"job {job}: the fold's lease passed to another folder") from exc
        raise


def _read_log(ddb: Any, ledger_table: str, job: str, low: int, high: int
              ) -> tuple[dict[int, dict[str, Any]], int]:
    """Log records from ticket `low` on, up to `high`, until about layout.FOLD_MESSAGES entries
    are read: (records by ticket, the last ticket the read covers)."""
    records: dict[int, dict[str, Any]] = {}
    entries = 0
    params: dict[str, Any] = {
        "TableName": ledger_table, "Limit": layout.LOG_PAGE, "ConsistentRead": True,
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
        if entries >= layout.FOLD_MESSAGES:
            return records, max(records)
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _fold_step(ddb: Any, ledger_table: str, job: str, owner: str, cursor: int, tickets: int,
               holes: HolePolicy) -> tuple[int, Totals, int | None]:
    """Fold the tickets after `cursor` (about layout.FOLD_MESSAGES entries' worth, up to
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
        _put_shard(ddb, ledger_table, job, shard, owner)
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


def _read_shards(ddb: Any, ledger_table: str, job: str, indexes: list[int]) -> list[Shard]:
    shards = {i: Shard(i) for i in indexes}
    for item in _batch_get(ddb, ledger_table, [_key(job, _shard_sk(i)) for i in indexes],
                           consistent=True):
        index = int(item["sk"]["S"][len(SHARD_PREFIX):])
        shards[index] = Shard.from_item(index, item)
    return [shards[i] for i in indexes]


def _put_shard(ddb: Any, ledger_table: str, job: str, shard: Shard, owner: str) -> None:
    if shard.read_applied is None:
        condition, values = "attribute_not_exists(sk)", {}
    else:
        condition, values = "applied = :read", {":read": _n(shard.read_applied)}
    item = shard.item(job) | {"folded_by": _s(owner)}
    try:
        ddb.put_item(TableName=ledger_table, Item=item, ConditionExpression=condition,
                     ReturnValuesOnConditionCheckFailure="ALL_OLD",
                     **({"ExpressionAttributeValues": values} if values else {}))
    except ClientError as exc:
        if _own_commit(exc, folded_by=item["folded_by"], applied=item["applied"]):
            return  # committed, then its reply was lost and the retry failed the condition
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
