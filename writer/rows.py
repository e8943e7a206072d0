"""The insert and update write modes one call a row (PutItem with a condition, or
UpdateItem), since BatchWriteItem can neither condition a put nor merge into an item.
The Lambda writes these modes 25 rows a call by PartiQL (writer/statements.py); this is
the path for the rows a statement cannot say or that DynamoDB refuses as a statement, and
for a client that runs no statements (the embedded runtime's moto).

Each call runs in an `InFlight` slot, inside the invocation's `Budget`, and is retried
with backoff and jitter on a throttle, a 5xx or a lost connection, as BatchWriteItem's
are (writer/batch_write.py); past the budget the message fails (TransientWriteError) and
SQS delivers it again. A ValidationException rejects that row alone.

Retries are exact. An update sets the same values again. An insert whose condition
fails asks DynamoDB for the item that is there (ReturnValuesOnConditionCheckFailure):
if it is the row's item, it is this job's own write, from a call whose reply was lost or
from an earlier delivery of the message, and counts as written; any other item is a key
the table already held, `skipped_existing`. (An item the table held before the job that
is exactly the row is counted written too: nothing tells the two apart, and the table
holds the row either way.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from writer.batch_write import (
    TRANSPORT_ERRORS,
    Budget,
    InFlight,
    WriteOutcome,
    is_throttle,
    retry_or_raise,
    slot_for,
)

PUT_ITEM = "put_item"
UPDATE_ITEM = "update_item"


@dataclass(frozen=True)
class RowWrite:
    """One row's call: the client method and its parameters. `done_if_present`: a failed
    `attribute_not_exists` condition means the row's work is done (an update that only
    names a key, whose item is there: there is nothing to set)."""

    operation: str
    params: dict[str, Any]
    done_if_present: bool = False


def insert_request(table: str, item: dict[str, Any], key_names: Sequence[str]) -> RowWrite:
    """PutItem of `item` only if the table holds no item with its key."""
    return RowWrite(PUT_ITEM, {"TableName": table, "Item": item,
                               "ConditionExpression": "attribute_not_exists(#k)",
                               "ExpressionAttributeNames": {"#k": key_names[0]},
                               "ReturnValuesOnConditionCheckFailure": "ALL_OLD"})


def update_request(table: str, item: dict[str, Any], key_names: Sequence[str]) -> RowWrite:
    """UpdateItem that SETs every non-key attribute of `item` (creating the item if it is
    absent) and touches no other. Every name and value goes through a placeholder, so any
    attribute name is safe (reserved words, dots, spaces). An item that is only its key
    has nothing to set: it is a conditional put of the key, which creates the item if it
    is absent and leaves it as it is if not (`done_if_present`)."""
    attributes = [(n, v) for n, v in item.items() if n not in key_names]
    if not attributes:
        return RowWrite(PUT_ITEM, {"TableName": table, "Item": item,
                                   "ConditionExpression": "attribute_not_exists(#k)",
                                   "ExpressionAttributeNames": {"#k": key_names[0]}},
                        done_if_present=True)
    return RowWrite(UPDATE_ITEM, {
        "TableName": table, "Key": {name: item[name] for name in key_names},
        "UpdateExpression": "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attributes))),
        "ExpressionAttributeNames": {f"#a{i}": name for i, (name, _) in enumerate(attributes)},
        "ExpressionAttributeValues": {f":v{i}": value for i, (_, value) in enumerate(attributes)},
    })


def write_rows(ddb: Any, writes: list[RowWrite], budget: Budget,
               in_flight: InFlight | None = None) -> WriteOutcome:
    """Send each row's call; an insert whose key exists is in `skipped`, a row DynamoDB
    refuses in `invalid`. Raise TransientWriteError if the budget runs out with rows
    unwritten."""
    outcome = WriteOutcome()
    slots = in_flight or InFlight(1)
    for index, write in enumerate(writes):
        _write_row(ddb, index, write, budget, outcome, slots, unwritten=len(writes) - index)
    return outcome


def _write_row(ddb: Any, index: int, write: RowWrite, budget: Budget,
               outcome: WriteOutcome, slots: InFlight, *, unwritten: int) -> None:
    attempt = 0
    call, params = getattr(ddb, write.operation), write.params
    while True:
        ticket = slot_for(budget, slots, unwritten)
        throttled = True
        error: Exception
        try:
            outcome.calls += 1
            call(**params)
            throttled = False
            outcome.written += 1
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                throttled = False
                if write.done_if_present or same_item(exc.response.get("Item"), params["Item"]):
                    outcome.written += 1  # our own write, whose reply was lost (see above)
                else:
                    outcome.skipped.append(index)
                return
            if code == "ValidationException":
                throttled = False
                outcome.invalid.append((index, exc.response["Error"].get("Message", str(exc))))
                return
            throttled = is_throttle(exc)
            error = exc
        except TRANSPORT_ERRORS as exc:
            error = exc
        finally:
            slots.release(ticket, throttled=throttled)
        retry_or_raise(error, budget, attempt, outcome, unwritten)
        attempt += 1


def same_item(stored: Mapping[str, Any] | None, item: Mapping[str, Any]) -> bool:
    """Whether DynamoDB's copy of an item is `item`: numbers compare as numbers (DynamoDB
    stores `1.50` as `1.5`), sets as sets."""
    return stored is not None and _plain(stored) == _plain(item)


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: plain_value(value) for name, value in item.items()}


def plain_value(value: Mapping[str, Any]) -> tuple[str, Any]:
    """An attribute value as DynamoDB compares it (numbers as numbers, sets as sets)."""
    (type_, v), = value.items()
    if type_ == "N":
        return type_, Decimal(v)
    if type_ == "NS":
        return type_, frozenset(map(Decimal, v))
    if type_ in ("SS", "BS"):
        return type_, frozenset(bytes(x) if type_ == "BS" else x for x in v)
    if type_ == "B":
        return type_, bytes(v)
    if type_ == "M":
        return type_, _plain(v)
    if type_ == "L":
        return type_, tuple(plain_value(x) for x in v)
    return type_, v
