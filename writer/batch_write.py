"""BatchWriteItem held to the AWS contract: at most 25 requests a call, never two for one
key, UnprocessedItems retried with exponential backoff and full jitter inside the
invocation's time budget, and a whole-batch ValidationException bisected down to the
items at fault so the rest are still written."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from fanout.settings import MAX_BATCH_WRITE_ITEMS

RETRYABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "InternalFailure", "TransactionInProgressException",
})
BASE_DELAY_S = 0.05
MAX_DELAY_S = 5.0


class TransientWriteError(RuntimeError):
    """Items still unwritten when the time budget ran out: the message is retried by SQS."""


@dataclass
class WriteOutcome:
    written: int = 0
    # (index into the items list, DynamoDB's message) for items DynamoDB will never accept.
    invalid: list[tuple[int, str]] = field(default_factory=list)
    calls: int = 0
    retries: int = 0


@dataclass
class Budget:
    """How long we may keep retrying: `remaining_s()` minus a reserve for the ledger and
    the response."""

    remaining_s: Callable[[], float]
    reserve_s: float = 3.0
    sleep: Callable[[float], None] = time.sleep

    def left(self) -> float:
        return self.remaining_s() - self.reserve_s

    def backoff(self, attempt: int) -> bool:
        """Sleep with full jitter; False when sleeping would overrun the budget."""
        delay = random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2**attempt))
        if delay >= self.left():
            return False
        self.sleep(delay)
        return True


def write_items(ddb: Any, table: str, items: list[dict[str, Any]], budget: Budget) -> WriteOutcome:
    """Write `items` (DynamoDB JSON, distinct keys). Raise TransientWriteError if the budget
    runs out with items unwritten."""
    outcome = WriteOutcome()
    for start in range(0, len(items), MAX_BATCH_WRITE_ITEMS):
        group = list(range(start, min(start + MAX_BATCH_WRITE_ITEMS, len(items))))
        _write_group(ddb, table, items, group, budget, outcome)
    return outcome


def _write_group(ddb: Any, table: str, items: list[dict[str, Any]], group: list[int],
                 budget: Budget, outcome: WriteOutcome) -> None:
    pending = group
    attempt = 0
    while pending:
        try:
            outcome.calls += 1
            response = ddb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": items[i]}} for i in pending]}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "ValidationException":
                _bisect(ddb, table, items, pending, budget, outcome, exc)
                return
            if code in RETRYABLE_CODES or status >= 500:
                outcome.retries += 1
                if not budget.backoff(attempt):
                    raise TransientWriteError(
                        f"{len(pending)} item(s) unwritten: {code} past the time budget") from exc
                attempt += 1
                continue
            raise
        unprocessed = [r["PutRequest"]["Item"]
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
            outcome.retries += 1
            if not budget.backoff(attempt):
                raise TransientWriteError(
                    f"{len(pending)} item(s) still in UnprocessedItems past the time budget")
            attempt += 1


def _bisect(ddb: Any, table: str, items: list[dict[str, Any]], group: list[int], budget: Budget,
            outcome: WriteOutcome, error: ClientError) -> None:
    """DynamoDB rejected the whole call: find the items at fault by halving."""
    if len(group) == 1:
        outcome.invalid.append((group[0], error.response["Error"].get("Message", str(error))))
        return
    middle = len(group) // 2
    for half in (group[:middle], group[middle:]):
        _write_group(ddb, table, items, half, budget, outcome)
