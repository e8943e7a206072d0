"""Chaos: the items table throttles every write for longer than the rows queue's
maxReceiveCount deliveries would last at the queue's own visibility timeout, then lets
writes through. Nothing may end in the DLQ as retries_exhausted: a message throttled past
the writer's budget is held back (ChangeMessageVisibility, doubling per receive), so the
backlog waits in the queue and every row lands once the table takes writes again. The
storm lasts minutes on the chaos suite's clock, which skips the waits in between (see
tests/chaos/helpers.py: JumpingClock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import fanout_cli.local.ingest as ingest_module
from fanout.aws import Clients
from fanout.settings import LOCAL_CONFIG, ROWS_PER_MESSAGE, min_visibility_timeout_s
from fanout_cli.local.backpressure import BoundedQueueClient
from tests.chaos.helpers import Expected, Hooked, JumpingClock, assert_exact, poisoned_csv, run
from tests.conftest import sized
from tests.strict_aws import StrictLayer
from writer.batch_write import CALL_S, Budget

# The writer keeps 3 s for the ledger and gives a call up to 2 s, so 6 s leaves it about
# a second of retries per delivery; the visibility timeout is the shortest the ledger's
# timing rule allows with it (43 s).
CONFIG = replace(LOCAL_CONFIG, writer_timeout_s=6, visibility_timeout_s=min_visibility_timeout_s(6))
# Without holding back, a message's deliveries would be used up after about
# maxReceiveCount x (retrying + visibility timeout) = 5 x (1 + 43) = 220 s of throttling.
RETRYING_S = CONFIG.writer_timeout_s - Budget(lambda: 0.0).reserve_s - CALL_S
RECEIVES_LAST_S = CONFIG.max_receive_count * (RETRYING_S + CONFIG.visibility_timeout_s)
THROTTLE_S = 240.0
ROWS = sized(50_000, 2_000)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    return poisoned_csv(tmp_path_factory.mktemp("throttle-data"), rows=ROWS)


class Storm:
    """Throttles every BatchWriteItem for `seconds` of `clock` from the first one, then
    passes them."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock
        self.until: float | None = None
        self.throttled = 0
        self.receive_counts: list[int] = []
        self._lock = threading.Lock()

    def batch_write_item(self, ddb: Any, **params: Any) -> Any:
        with self._lock:
            now = self.clock()
            self.until = self.until or now + self.seconds
            storming = now < self.until
            self.throttled += storming
        if storming:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "injected: the table is warming up"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchWriteItem")
        return ddb.batch_write_item(**params)

    def receive_message(self, sqs: Any, **params: Any) -> Any:
        response = sqs.receive_message(**params)
        with self._lock:
            self.receive_counts += [int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
                                    for m in response.get("Messages", [])]
        return response


def test_minutes_of_throttling_wait_in_the_queue_not_in_the_dlq(data: Expected, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert THROTTLE_S - RECEIVES_LAST_S >= 10
    # The splitter sends the whole file at once. Locally it waits for room in the rows
    # queue, which the storm keeps full, and a waiting splitter is an invocation in flight:
    # the clock would not skip the storm's waits.
    monkeypatch.setattr(ingest_module, "BoundedQueueClient",
                        partial(BoundedQueueClient, max_depth=ROWS // ROWS_PER_MESSAGE + 10))
    layer = StrictLayer()
    clock = JumpingClock()
    storm = Storm(THROTTLE_S, clock)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, dynamodb=Hooked(strict.dynamodb, batch_write_item=storm.batch_write_item),
                       sqs=Hooked(strict.sqs, receive_message=storm.receive_message))

    started = clock()
    result = run(data, tmp_path / "out", wrap, config=CONFIG, clock=clock, max_wait_s=900.0)
    assert storm.until is not None and clock() - started > THROTTLE_S
    assert storm.throttled > 0
    # Messages came back while the table throttled, and were held back each time.
    assert max(storm.receive_counts) >= 2
    assert layer.record.calls["change_message_visibility_batch"] > 0
    assert layer.record.violations == []
    # Every row landed: the clean table, exact counts, only the poison rows rejected (none
    # as retries_exhausted), so the DLQ holds no rows message.
    assert_exact(result, data)
