"""BatchWriteItem held to the AWS contract: at most 25 requests a call, never two for one
key, UnprocessedItems and throttling retried with exponential backoff and full jitter
inside the invocation's time budget, and a whole-batch ValidationException bisected down
to the items at fault so the rest are still written.

One invocation writes its messages with several calls in flight on one shared client
(`InFlight`): the number in flight grows by one per round of calls DynamoDB took whole
and halves when it throttles (additive increase, multiplicative decrease), so a
throttled table sees fewer calls, not a multiple of retries.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from fanout.aws import CLIENT_CONFIG, b64_default
from fanout.settings import MAX_BATCH_WRITE_ITEMS
from fanout.telemetry import subsegment

RETRYABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "InternalFailure", "TransactionInProgressException",
})
# A connection that failed or timed out may or may not have written: puts are idempotent,
# so the call is retried like a throttle.
TRANSPORT_ERRORS = (HTTPClientError, BotocoreConnectionError)
BASE_DELAY_S = 0.05
MAX_DELAY_S = 5.0

# The client the writer sends BatchWriteItem with. Parameter validation is off: the
# requests are built by writer.load from items RowMapper already held to DynamoDB's rules
# (and tests/strict_aws.py checks them against the AWS contract), and botocore's validator
# walks every attribute of every item, about half of the writer's CPU per row. Retries are
# ours (budget-aware, and they feed InFlight): botocore's would sleep inside a call where
# the budget cannot see it. The timeouts bound one call, so `Budget.call_s` can make
# sure no call starts that could outlive the invocation.
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 1.0
ITEMS_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(
    parameter_validation=False, retries={"mode": "standard", "max_attempts": 1},
    connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
))
CALL_S = CONNECT_TIMEOUT_S + READ_TIMEOUT_S


class WriterDynamoDB:
    """The writer's DynamoDB: the item writes (BatchWriteItem, BatchExecuteStatement, and
    the PutItem/UpdateItem of the insert and update modes on the items table) through a client built with
    ITEMS_CLIENT_CONFIG (shared by the write pool's threads; boto3 clients are
    thread-safe), every other call (the ledger's, on its own table) through the standard
    client, whose botocore retries the ledger relies on."""

    def __init__(self, items: Any, standard: Any, items_table: str | None = None) -> None:
        self._items = items
        self._standard = standard
        self._items_table = items_table

    runs_statements = True  # writer/statements.py: the insert and update modes by PartiQL

    def batch_write_item(self, **params: Any) -> Any:
        return self._items.batch_write_item(**params)

    def batch_execute_statement(self, **params: Any) -> Any:
        return self._items.batch_execute_statement(**params)

    def put_item(self, **params: Any) -> Any:
        return self._route(params).put_item(**params)

    def update_item(self, **params: Any) -> Any:
        return self._route(params).update_item(**params)

    def _route(self, params: dict[str, Any]) -> Any:
        return self._items if params.get("TableName") == self._items_table else self._standard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._standard, name)


def items_client(*, endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    """The BatchWriteItem client: ITEMS_CLIENT_CONFIG, and request bodies encoded whole
    by `json.dumps` (see `encode_whole`)."""
    client = boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url,
                                            region_name=region, config=ITEMS_CLIENT_CONFIG)
    encode_whole(client)
    return client


_BODY = "fanout_body"


def encode_whole(client: Any) -> None:
    """Encode BatchWriteItem and BatchExecuteStatement bodies with `json.dumps` (C speed)
    instead of botocore's serializer, which walks the operation's shapes for every attribute of every item (a
    third of the CPU of a call once validation is off). The items already are DynamoDB
    JSON, which is the wire format (binary values go out base64-encoded, as botocore
    sends blobs), so the body is the same JSON.

    Two of botocore's documented events: before the parameters are serialized, the body is
    encoded from them and the items are taken out (the table names stay, for endpoint
    resolution); before the call is sent, the body is put in place of the one botocore
    built from the empty lists. tests/integration/test_writer.py sends through this client
    to moto, which parses the body as DynamoDB would; tests/integration/test_statements.py
    compares a BatchExecuteStatement body with botocore's own."""
    events = client.meta.events
    for operation in _TAKEN:
        events.register(f"before-parameter-build.dynamodb.{operation}", _take_items)
        events.register(f"before-call.dynamodb.{operation}", _put_body)


# What botocore still serializes of each operation so encoded: BatchWriteItem keeps its
# table names (endpoint resolution reads them); BatchExecuteStatement's statements, whose
# parameters are DynamoDB JSON too (writer/statements.py), go whole.
_TAKEN: dict[str, Any] = {
    "BatchWriteItem": lambda p: p.update(RequestItems={t: [] for t in p["RequestItems"]}),
    "BatchExecuteStatement": lambda p: p.update(Statements=[]),
}


def _take_items(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    context[_BODY] = json.dumps(params, separators=(",", ":"), default=b64_default).encode()
    _TAKEN[model.name](params)


def _put_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    body = context.pop(_BODY, None)
    if body is not None:
        params["body"] = body




class TransientWriteError(RuntimeError):
    """Items still unwritten when the time budget ran out: the message is retried by SQS."""


@dataclass
class WriteOutcome:
    written: int = 0
    # (index into the items list, DynamoDB's message) for items DynamoDB will never accept.
    invalid: list[tuple[int, str]] = field(default_factory=list)
    # Indexes of inserts whose key the table already held (nothing was written for them).
    skipped: list[int] = field(default_factory=list)
    calls: int = 0
    throttled: int = 0  # calls DynamoDB throttled (an error, or items left unprocessed)


@dataclass
class Budget:
    """How long we may keep writing: `remaining_s()` minus a reserve for the ledger and
    the response. A call starts only with `call_s` (the longest one call can take) left."""

    remaining_s: Callable[[], float]
    reserve_s: float = 3.0
    sleep: Callable[[float], None] = time.sleep
    call_s: float = 0.0

    def left(self) -> float:
        return self.remaining_s() - self.reserve_s

    def may_call(self) -> bool:
        return self.left() > self.call_s

    def backoff(self, attempt: int) -> bool:
        """Sleep with full jitter; False when the sleep and a call after it would overrun
        the budget."""
        delay = random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2**attempt))
        if delay + self.call_s >= self.left():
            return False
        self.sleep(delay)
        return True


class InFlight:
    """How many BatchWriteItem calls may be in flight at once (AIMD, as TCP does).

    Each call DynamoDB takes whole adds 1/limit (about one more per round of calls); a
    throttled call halves the limit, at most once per round (calls that started before
    the last cut do not cut again), down to one. `acquire` waits for a slot.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the number of calls in flight must be at least 1")
        self.most = limit
        self.limit = float(limit)
        self.active = 0
        self.started = 0
        self.peak = 0
        self.cuts = 0
        self._cut_at = 0
        self._ready = threading.Condition()

    def acquire(self, wait_s: float) -> int | None:
        """A ticket for one call, or None if no slot freed within `wait_s` seconds."""
        deadline = time.monotonic() + wait_s
        with self._ready:
            while self.active >= int(self.limit):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ready.wait(left)
            self.active += 1
            self.started += 1
            self.peak = max(self.peak, self.active)
            return self.started

    def release(self, ticket: int, *, throttled: bool) -> None:
        with self._ready:
            self.active -= 1
            if throttled:
                if ticket > self._cut_at:
                    self.limit = max(1.0, self.limit / 2)
                    self._cut_at = self.started
                    self.cuts += 1
            else:
                self.limit = min(float(self.most), self.limit + 1.0 / self.limit)
            self._ready.notify_all()


PUT_REQUEST = ("PutRequest", "Item")
DELETE_REQUEST = ("DeleteRequest", "Key")  # the items are keys


def write_items(ddb: Any, table: str, items: list[dict[str, Any]], budget: Budget,
                in_flight: InFlight | None = None,
                request: tuple[str, str] = PUT_REQUEST) -> WriteOutcome:
    """Write `items` (DynamoDB JSON, distinct keys) as `request`s: puts, or with
    DELETE_REQUEST deletes of the keys `items` are (`written` then counts the deleted).
    Raise TransientWriteError if the budget runs out with items unwritten."""
    outcome = WriteOutcome()
    slots = in_flight or InFlight(1)
    for start in range(0, len(items), MAX_BATCH_WRITE_ITEMS):
        group = list(range(start, min(start + MAX_BATCH_WRITE_ITEMS, len(items))))
        _write_group(ddb, table, items, group, budget, outcome, slots, request)
    return outcome


def slot_for(budget: Budget, slots: InFlight, unwritten: int) -> int:
    """A ticket for one call, or TransientWriteError when no call may start in the budget."""
    ticket = slots.acquire(max(0.0, budget.left() - budget.call_s)) if budget.may_call() else None
    if ticket is None:
        raise TransientWriteError(f"{unwritten} item(s) unwritten: no time left for a call")
    return ticket


def is_throttle(exc: ClientError) -> bool:
    """DynamoDB asks for less (a throttle or a 5xx): back off and cut InFlight."""
    return (exc.response.get("Error", {}).get("Code", "") in RETRYABLE_CODES
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500)


def retry_or_raise(error: Exception, budget: Budget, attempt: int, outcome: WriteOutcome,
                   unwritten: int) -> None:
    """After a failed call that may be retried (a throttle, a 5xx, a lost connection):
    back off, or raise TransientWriteError once the budget is spent; any other error is
    raised as it is."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if not is_throttle(error):
            raise error
    else:
        code = type(error).__name__
    outcome.throttled += 1
    if not budget.backoff(attempt):
        raise TransientWriteError(
            f"{unwritten} item(s) unwritten: {code} past the time budget") from error


def _call(ddb: Any, table: str, items: list[dict[str, Any]], pending: list[int], budget: Budget,
          outcome: WriteOutcome, slots: InFlight, request: tuple[str, str],
          ) -> tuple[dict[str, Any] | None, Exception | None]:
    """One BatchWriteItem in a slot: (response, None) or (None, the error to act on)."""
    ticket = slot_for(budget, slots, len(pending))
    throttled = True
    kind, field_name = request
    try:
        outcome.calls += 1
        with subsegment("BatchWriteItem", items=len(pending)):
            response = ddb.batch_write_item(
                RequestItems={table: [{kind: {field_name: items[i]}} for i in pending]})
        throttled = bool(response.get("UnprocessedItems"))
        return response, None
    except ClientError as exc:
        throttled = is_throttle(exc)
        return None, exc
    except TRANSPORT_ERRORS as exc:
        return None, exc
    finally:
        slots.release(ticket, throttled=throttled)


def _write_group(ddb: Any, table: str, items: list[dict[str, Any]], group: list[int],
                 budget: Budget, outcome: WriteOutcome, slots: InFlight,
                 request: tuple[str, str]) -> None:
    pending = group
    attempt = 0
    kind, field_name = request
    while pending:
        response, error = _call(ddb, table, items, pending, budget, outcome, slots, request)
        if error is not None:
            if (isinstance(error, ClientError)
                    and error.response.get("Error", {}).get("Code", "") == "ValidationException"):
                _bisect(ddb, table, items, pending, budget, outcome, slots, error, request)
                return
            retry_or_raise(error, budget, attempt, outcome, len(pending))
            attempt += 1
            continue
        assert response is not None
        unprocessed = [r[kind][field_name]
                       for r in response.get("UnprocessedItems", {}).get(table, [])]
        # Map what came back to our indexes (keys are distinct, so equality is exact).
        left = [i for i in pending if items[i] in unprocessed] if unprocessed else []
        if len(left) != len(unprocessed):
            # An echo we cannot match item for item: retry everything still pending rather
            # than count an unwritten item as written (puts are idempotent).
            left = list(pending)
        outcome.written += len(pending) - len(left)
        if left and len(left) < len(pending):
            attempt = 0  # progress: DynamoDB is taking writes, so back off from the start again
        pending = left
        if pending:
            outcome.throttled += 1
            if not budget.backoff(attempt):
                raise TransientWriteError(
                    f"{len(pending)} item(s) still in UnprocessedItems past the time budget")
            attempt += 1


def _bisect(ddb: Any, table: str, items: list[dict[str, Any]], group: list[int], budget: Budget,
            outcome: WriteOutcome, slots: InFlight, error: ClientError,
            request: tuple[str, str]) -> None:
    """DynamoDB rejected the whole call: find the items at fault by halving."""
    if len(group) == 1:
        outcome.invalid.append((group[0], error.response["Error"].get("Message", str(error))))
        return
    middle = len(group) // 2
    for half in (group[:middle], group[middle:]):
        _write_group(ddb, table, items, half, budget, outcome, slots, request)
