"""A replayer killed at any point loses nothing, and a second run finishes the job.

The kill is simulated the hard way: an exception at a step of the redrive, and no
clean-up afterwards (the messages it held stay invisible until their visibility
timeout runs out, as after `kill -9`). The queues' clock jumps over that timeout
instead of the test sleeping through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from moto import mock_aws

from dlq_replayer.dlq import DlqReader
from dlq_replayer.plan import Filters
from dlq_replayer.redrive import Options, run
from dlq_replayer.target import Target
from fanout.contract import REPLAY_MARK
from tests.integration.replayer_helpers import bodies, fresh_queues, put, refs_in, rejected, rows

HOLD_S = 1


class Killed(BaseException):
    """Not an Exception: nothing in the replayer may catch it."""


class KilledReader(DlqReader):
    """After the kill nothing runs: the messages it holds are not released."""

    killed = False

    def release(self) -> int:
        return 0 if self.killed else super().release()


class FailingSQS:
    """Raises Killed on the n-th SendMessageBatch to `queue_url` (a crash mid-send)."""

    def __init__(self, sqs: Any, queue_url: str, nth: int) -> None:
        self._sqs, self._queue_url, self._left = sqs, queue_url, nth

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, **params: Any) -> Any:
        if params["QueueUrl"] == self._queue_url:
            self._left -= 1
            if self._left == 0:
                raise Killed("killed while sending")
        return self._sqs.send_message_batch(**params)


@pytest.fixture
def target() -> Iterator[Target]:
    with mock_aws():
        yield _with_messages(fresh_queues())


def _with_messages(target: Target) -> Target:
    aws = SimpleNamespace(sqs=target.sqs)
    put(aws.sqs, target.dlq_url,
        rejected("job-a", 0, [(3, ["", "2", "low"], "empty_key"),
                              (7, ["a7", "x", "low"], "bad_number")]),
        rejected("job-a", 2, [(55, ["", "5", "low"], "empty_key")]),
        rows("job-a", 1, [27, 28]),
        rejected("job-b", 0, [(2, ["", "9", "high"], "empty_key"),
                              (4, ["", "8", "high"], "empty_key")]))
    return target


ALL_ROWS = {("job-a", "0", 3), ("job-a", "0", 7), ("job-a", "2", 55), ("job-a", "1", 27),
            ("job-a", "1", 28), ("job-b", "0", 2), ("job-b", "0", 4)}


def redrive(target: Target, reader: DlqReader, reasons: frozenset[str],
            hook: Any = None) -> Any:
    return run(target, Options(filters=Filters(reasons=reasons), hook=hook), reader)


EMPTY_KEY = frozenset({"empty_key"})


@pytest.mark.parametrize(("point", "nth", "reasons"), [
    ("sent_rows", 1, EMPTY_KEY),  # replacement sent, nothing deleted
    ("sent_dlq", 1, EMPTY_KEY),   # replacement and remainder sent, original not deleted
    ("sent_rows", 3, frozenset()),  # after two messages were completely done
    ("deleted", 2, EMPTY_KEY),    # right after the second delete
    ("deleted", 4, frozenset()),  # right after the last delete, before the clean-up
    ("send_rows", 2, frozenset()),  # in the middle of the second send to the rows queue
    ("send_dlq", 1, EMPTY_KEY),   # in the middle of sending a remainder back to the DLQ
])
def test_kill_anywhere_loses_nothing_and_a_rerun_finishes(target, queue_clock, point, nth, reasons):
    aws = SimpleNamespace(sqs=target.sqs)
    selected = {r for r in ALL_ROWS if not reasons or r not in {("job-a", "0", 7),
                                                                ("job-a", "1", 27),
                                                                ("job-a", "1", 28)}}

    # Given a redrive that is killed at `point`
    reader = KilledReader(target.sqs, target.dlq_url, visibility_s=HOLD_S, wait_s=0)
    calls: dict[str, int] = defaultdict(int)

    def hook(step: str, plan: Any) -> None:
        calls[step] += 1
        if step == point and calls[step] == nth:
            reader.killed = True
            raise Killed(step)

    crashing = target
    if point in ("send_rows", "send_dlq"):
        queue = target.rows_queue_url if point == "send_rows" else target.dlq_url
        crashing = Target(FailingSQS(aws.sqs, queue, nth), target.dlq_url,
                          target.rows_queue_url, wait_s=0)

        def hook(step: str, plan: Any) -> None:  # noqa: F811 - the proxy does the killing
            reader.killed = True

    with pytest.raises(Killed):
        redrive(crashing, reader, reasons, hook)

    # Then every row is still in the DLQ or back in the rows queue (or both)
    queue_clock.jump(HOLD_S + 0.2)  # the killed run's holds run out
    assert refs_in(aws.sqs, target.dlq_url) | refs_in(aws.sqs, target.rows_queue_url) == ALL_ROWS

    # When the replayer runs again, it finishes the job
    outcome = redrive(target, DlqReader(target.sqs, target.dlq_url, visibility_s=30, wait_s=0),
                      reasons)
    assert outcome.messages_failed == 0 and not outcome.in_flight
    assert refs_in(aws.sqs, target.rows_queue_url) == selected
    assert refs_in(aws.sqs, target.dlq_url) == ALL_ROWS - selected

    # And a row sent twice carries the same replay id both times, so it counts once
    ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for message in bodies(aws.sqs, target.rows_queue_url):
        for line in message.lines:
            ids[(message.job, message.message_id.split(REPLAY_MARK)[0], line)].add(
                message.message_id)
    assert all(len(message_ids) == 1 for message_ids in ids.values()), ids
