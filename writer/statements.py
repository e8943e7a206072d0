"""The insert and update write modes at batch speed: PartiQL BatchExecuteStatement, 25
statements a call, where writer/rows.py sends one PutItem or UpdateItem a row.

A row is one statement; DynamoDB answers each statement on its own (a 200 carries a
`Responses` entry per statement, with an `Error` for those that failed), so one call does
the work of 25 and each row still gets its own verdict.

* insert: `INSERT INTO "t" VALUE {'a': ?, ...}`. DynamoDB refuses it (`DuplicateItem`)
  when the table holds the key. The lost-reply rule of writer/rows.py holds: the row
  counts as written if the item the table holds is the row's item (its own write, from a
  call whose reply was lost or an earlier delivery of the message), else it is
  `skipped_existing`. The item is the statement error's `Item` where DynamoDB returns it
  (ReturnValuesOnConditionCheckFailure=ALL_OLD), else a strongly consistent
  BatchGetItem of the duplicates (100 keys a call) reads it. An item deleted between the
  two is inserted again.
* update: `UPDATE "t" SET "a" = ? SET "b" = ? WHERE "k" = ? ...` SETs every non-key
  attribute and touches no other, as UpdateItem does, but a PartiQL UPDATE does not create
  an absent item (`ConditionalCheckFailed`): that row is then INSERTed whole (the key and
  the attributes, which is what UpdateItem would have created), and an INSERT that finds
  the key (created meanwhile, or our own INSERT whose reply was lost) is UPDATEd again.
  Each of the two refusals costs a write unit, so the statement a row tries first follows
  what this process has seen (`UpdateOrder`): a job of existing keys starts with UPDATE,
  a job of new keys with INSERT. A row that is only its key is an INSERT, done if the key
  is there.

Retries are as BatchWriteItem's (writer/batch_write.py): a throttled or failed call, or a
statement that failed on throttling or a 5xx, is sent again with backoff and jitter in an
`InFlight` slot inside the `Budget`; past it the message fails (TransientWriteError).
Whatever PartiQL cannot say (an attribute name with a quote in it, a statement over
8,192 characters) and any statement DynamoDB refuses as invalid goes through writer/rows.py
instead, whose PutItem/UpdateItem gives the row its verdict: a refusal of the statement's
form never rejects a row that UpdateItem would have written.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from writer.batch_write import (
    RETRYABLE_CODES,
    TRANSPORT_ERRORS,
    Budget,
    InFlight,
    TransientWriteError,
    WriteOutcome,
    is_throttle,
    retry_or_raise,
    slot_for,
)
from writer.rows import RowWrite, insert_request, plain_value, same_item, update_request, write_rows

MAX_STATEMENTS = 25  # BatchExecuteStatement's limit
MAX_STATEMENT_CHARS = 8192
MAX_BATCH_GET_KEYS = 100
INSERT, UPDATE = "INSERT", "UPDATE"
THROTTLED, FAILED = "throttled", "failed"
# Statement error codes DynamoDB asks to retry (writer/batch_write.py's, as PartiQL spells them).
RETRY_STATEMENT = frozenset({"ProvisionedThroughputExceeded", "ThrottlingError", "RequestLimitExceeded",
                             "InternalServerError", "TransactionConflict"}) | RETRYABLE_CODES


class UpdateOrder:
    """Which statement an update row tries first: UPDATE while most recent keys were in the
    table, INSERT while most were not (each wrong guess costs a refused statement, which
    DynamoDB charges a write unit for). The share of keys found present is a moving
    average over about the last 20 rows, so a new job's keys decide within its first
    message."""

    WEIGHT = 0.05  # of the latest row in the average

    def __init__(self) -> None:
        self.present_share = 1.0  # a first job is taken for one of existing keys
        self._lock = threading.Lock()

    def first(self) -> str:
        return UPDATE if self.present_share >= 0.5 else INSERT

    def saw(self, *, present: bool) -> None:
        with self._lock:
            self.present_share += self.WEIGHT * (float(present) - self.present_share)


_ORDERS: dict[str, UpdateOrder] = {}


def update_order(table: str) -> UpdateOrder:
    """The process's UpdateOrder for a table (a warm Lambda keeps it across invocations)."""
    return _ORDERS.setdefault(table, UpdateOrder())


def forget_orders() -> None:
    """Start every table's UpdateOrder afresh, as a cold writer does (tests, the bench)."""
    _ORDERS.clear()


def _quotable(names: Sequence[str]) -> bool:
    return not any('"' in name or "'" in name for name in names)


def insert_statement(table: str, item: dict[str, Any]) -> dict[str, Any] | None:
    """INSERT of `item`, or None when PartiQL cannot say it."""
    names = list(item)
    statement = (f'INSERT INTO "{table}" VALUE {{'
                 + ", ".join(f"'{name}': ?" for name in names) + "}")
    if not _quotable(names) or len(statement) > MAX_STATEMENT_CHARS:
        return None
    return {"Statement": statement, "Parameters": [item[name] for name in names],
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def update_statement(table: str, item: dict[str, Any], key_names: Sequence[str]
                     ) -> dict[str, Any] | None:
    """UPDATE that SETs every non-key attribute of `item`, or None when PartiQL cannot say
    it (or there is nothing to set)."""
    attributes = [name for name in item if name not in key_names]
    statement = (f'UPDATE "{table}"' + "".join(f' SET "{name}" = ?' for name in attributes)
                 + " WHERE " + " AND ".join(f'"{name}" = ?' for name in key_names))
    if not attributes or not _quotable(list(item)) or len(statement) > MAX_STATEMENT_CHARS:
        return None
    return {"Statement": statement,
            "Parameters": [item[name] for name in attributes] + [item[k] for k in key_names]}


@dataclass
class _Row:
    index: int
    kind: str  # the statement it sends next
    statement: dict[str, Any]


@dataclass
class _Work:
    """One message's rows in statements: what is left to send, read back or hand to rows.py."""

    table: str
    items: list[dict[str, Any]]
    key_names: list[str]
    mode: str
    order: UpdateOrder
    outcome: WriteOutcome = field(default_factory=WriteOutcome)
    per_row: list[int] = field(default_factory=list)  # indexes for writer/rows.py
    to_read: list[int] = field(default_factory=list)  # inserts that found their key

    def row(self, index: int, kind: str) -> _Row | None:
        """The row's statement of `kind`, or None (it goes to writer/rows.py)."""
        item = self.items[index]
        if kind == UPDATE:
            statement = update_statement(self.table, item, self.key_names)
        else:
            statement = insert_statement(self.table, item)
        if statement is None:
            self.per_row.append(index)
            return None
        return _Row(index, kind, statement)

    def first(self, index: int) -> _Row | None:
        if self.mode == "insert" or len(self.items[index]) == len(self.key_names):
            return self.row(index, INSERT)
        return self.row(index, self.order.first())


def write_statements(ddb: Any, table: str, items: list[dict[str, Any]], key_names: list[str],
                     mode: str, budget: Budget, in_flight: InFlight | None = None) -> WriteOutcome:
    """Write a message's items (distinct keys) in `mode` ("insert" or "update") by
    BatchExecuteStatement; same outcome as writer.rows.write_rows. Raise
    TransientWriteError if the budget runs out with rows unwritten."""
    slots = in_flight or InFlight(1)
    work = _Work(table, items, key_names, mode, update_order(table))
    pending = [row for i in range(len(items)) if (row := work.first(i)) is not None]
    attempt = 0
    while pending or work.to_read:
        if work.to_read:
            pending += _read_back(ddb, work, budget, slots)
        next_round: list[_Row] = []
        throttled = failed = False
        for start in range(0, len(pending), MAX_STATEMENTS):
            group = pending[start:start + MAX_STATEMENTS]
            again, retry = _send(ddb, work, group, budget, slots, attempt,
                                 unwritten=len(pending) - start)
            next_round += again
            throttled = throttled or retry == THROTTLED
            failed = failed or retry == FAILED
        if throttled:
            work.outcome.throttled += 1
            if not budget.backoff(attempt):
                raise TransientWriteError(f"{len(next_round)} row(s) unwritten: statements "
                                          "throttled past the time budget")
        if throttled or failed:
            attempt += 1
        pending = next_round
    if work.per_row:
        _per_row(ddb, work, budget, slots)
    return work.outcome


def _send(ddb: Any, work: _Work, group: list[_Row], budget: Budget, slots: InFlight,
          attempt: int, *, unwritten: int) -> tuple[list[_Row], str | None]:
    """One BatchExecuteStatement: the rows to send again (a throttled statement, the other
    statement of an update, or all of them after a failed call, already backed off from),
    and THROTTLED, FAILED or None."""
    ticket = slot_for(budget, slots, unwritten)
    throttled = True
    outcome = work.outcome
    error: Exception | None = None
    try:
        outcome.calls += 1
        response = ddb.batch_execute_statement(Statements=[row.statement for row in group])
        again, throttled = _answers(work, group, response.get("Responses") or [])
    except ClientError as exc:
        throttled = is_throttle(exc)
        if exc.response.get("Error", {}).get("Code", "") == "ValidationException":
            work.per_row += [row.index for row in group]  # rows.py gives each its verdict
            return [], None
        error = exc
    except TRANSPORT_ERRORS as exc:
        error = exc
    finally:
        slots.release(ticket, throttled=throttled)
    if error is None:
        return again, THROTTLED if throttled else None
    # A failed call: every row is sent again (an INSERT that took effect then finds its
    # own item, an UPDATE sets the same values again).
    retry_or_raise(error, budget, attempt, outcome, unwritten)
    return group, FAILED


def _answers(work: _Work, group: list[_Row], responses: list[dict[str, Any]]
             ) -> tuple[list[_Row], bool]:
    if len(responses) != len(group):  # an answer we cannot match row for row: send again
        return group, True
    again: list[_Row] = []
    throttled = False
    for row, answer in zip(group, responses, strict=True):
        error = answer.get("Error")
        if not error:
            work.outcome.written += 1
            if work.mode == "update" and len(work.items[row.index]) > len(work.key_names):
                work.order.saw(present=row.kind == UPDATE)
            continue
        code = error.get("Code", "")
        if code in RETRY_STATEMENT:
            throttled = True
            again.append(row)
        elif row.kind == INSERT and code in ("DuplicateItem", "ConditionalCheckFailed"):
            follow = _found_key(work, row, error.get("Item"))
            if follow is not None:
                again.append(follow)
        elif row.kind == UPDATE and code == "ConditionalCheckFailed":
            work.order.saw(present=False)
            follow = work.row(row.index, INSERT)  # absent: insert it whole
            if follow is not None:
                again.append(follow)
        elif code == "ValidationError":
            work.per_row.append(row.index)
        else:  # AccessDenied, ResourceNotFound, ItemCollectionSizeLimitExceeded: fail the message
            raise ClientError({"Error": {"Code": code, "Message": error.get("Message", "")}},
                              "BatchExecuteStatement")
    return again, throttled


def _found_key(work: _Work, row: _Row, stored: dict[str, Any] | None) -> _Row | None:
    """An INSERT found its key in the table: what the row does next."""
    item = work.items[row.index]
    if work.mode == "update":
        if len(item) == len(work.key_names):
            work.outcome.written += 1  # only a key, which is there: nothing to set
            return None
        work.order.saw(present=True)
        return work.row(row.index, UPDATE)
    if stored is None:
        work.to_read.append(row.index)
    elif same_item(stored, item):
        work.outcome.written += 1  # our own write, whose reply was lost
    else:
        work.outcome.skipped.append(row.index)
    return None


def _read_back(ddb: Any, work: _Work, budget: Budget, slots: InFlight) -> list[_Row]:
    """Read the items the duplicate INSERTs found (consistent reads, 100 keys a call): the
    row's own item counts written, another item skipped, no item inserted again."""
    wanted, work.to_read = work.to_read, []
    again: list[_Row] = []
    for start in range(0, len(wanted), MAX_BATCH_GET_KEYS):
        indexes = wanted[start:start + MAX_BATCH_GET_KEYS]
        keys = {_key(work, i): i for i in indexes}
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        left = [{name: work.items[i][name] for name in work.key_names} for i in indexes]
        attempt = 0
        while left:
            ticket = slot_for(budget, slots, len(left))
            throttled = True
            try:
                response = ddb.batch_get_item(RequestItems={work.table: {
                    "Keys": left, "ConsistentRead": True}})
                throttled = bool(response.get("UnprocessedKeys"))
            except ClientError as exc:
                throttled = is_throttle(exc)
                retry_or_raise(exc, budget, attempt, work.outcome, len(left))
                attempt += 1
                continue
            except TRANSPORT_ERRORS as exc:
                retry_or_raise(exc, budget, attempt, work.outcome, len(left))
                attempt += 1
                continue
            finally:
                slots.release(ticket, throttled=throttled)
            for stored in response.get("Responses", {}).get(work.table, []):
                found[_plain_key(stored, work.key_names)] = stored
            left = response.get("UnprocessedKeys", {}).get(work.table, {}).get("Keys", [])
            if left and not budget.backoff(attempt):
                raise TransientWriteError(f"{len(left)} key(s) unread past the time budget")
            attempt += 1
        for key, index in keys.items():
            stored = found.get(key)
            if stored is None:  # deleted since the INSERT found it: insert it again
                row = work.row(index, INSERT)
                if row is not None:
                    again.append(row)
            elif same_item(stored, work.items[index]):
                work.outcome.written += 1
            else:
                work.outcome.skipped.append(index)
    return again


def _key(work: _Work, index: int) -> tuple[Any, ...]:
    return _plain_key(work.items[index], work.key_names)


def _plain_key(item: dict[str, Any], key_names: Sequence[str]) -> tuple[Any, ...]:
    """An item's key as DynamoDB compares it: `007` and `7` are one number key."""
    return tuple(plain_value(item[name]) for name in key_names)


def _per_row(ddb: Any, work: _Work, budget: Budget, slots: InFlight) -> None:
    """The rows PartiQL could not say, or refused as invalid: writer/rows.py decides."""
    indexes = sorted(set(work.per_row))
    request = insert_request if work.mode == "insert" else update_request
    writes: list[RowWrite] = [request(work.table, work.items[i], work.key_names) for i in indexes]
    rows = write_rows(ddb, writes, budget, slots)
    outcome = work.outcome
    outcome.written += rows.written
    outcome.calls += rows.calls
    outcome.throttled += rows.throttled
    outcome.skipped += [indexes[i] for i in rows.skipped]
    outcome.invalid += [(indexes[i], reason) for i, reason in rows.invalid]
