"""The writer handler on moto, through the strict AWS layer."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fanout import ledger
from fanout.aws import Clients
from fanout.contract import RowsMessage, Source, decode
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout_cli.local.resources import LocalStack
from tests.integration.helpers import context, drain, sqs_event
from tests.strict_aws import Faults, StrictLayer
from writer import handler
from writer.batch_write import Budget, InFlight, TransientWriteError, items_client, write_items

HEADER = ["account", "offer_id", "risk"]
SOURCE = Source("fanout-uploads", "uploads/t.csv", "etag")


def message(seq: int, rows: list[list[str]], job: str = "job-1") -> RowsMessage:
    return RowsMessage(job, seq, SOURCE, HEADER, list(range(2 + 25 * seq, 2 + 25 * seq + len(rows))),
                       rows)


def send(aws: Clients, stack: LocalStack, *messages: RowsMessage) -> list[dict[str, Any]]:
    for m in messages:
        aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=m.encode())
    received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                       MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert len(received) == len(messages)
    return received


def use(aws: Clients, stack: LocalStack, spec: Spec, layer: StrictLayer | None = None) -> Clients:
    clients = layer.wrap(aws) if layer else aws
    handler.runtime.use(Runtime(stack.settings, spec, clients))
    return clients


@pytest.fixture(autouse=True)
def reset_runtime():
    yield
    handler.runtime.use(None)


def table_items(aws: Clients, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = aws.dynamodb.scan(TableName=table)["Items"]
    return {(i["account"]["S"], i["offer_id"]["S"]): i for i in items}


def test_poison_rows_are_rejected_and_never_block_the_rest(aws, stack, spec):
    layer = StrictLayer()
    use(aws, stack, spec, layer)
    rows = [["a", str(i), "low"] for i in range(25)]
    rows[3] = ["", "3", "low"]  # empty partition key
    rows[7] = ["a", "7", "low", "extra"]  # more fields than the header
    received = send(aws, stack, message(0, rows))
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": []}
    assert len(table_items(aws, stack.settings.table_name)) == 23
    assert layer.record.violations == []
    # The rejected rows wait in the DLQ with their reasons, and in the error report.
    dlq = [decode(m["Body"]) for m in drain(aws.sqs, stack.settings.dlq_url)]
    assert [(r.line, r.reason) for r in dlq[0].rejections] == [(5, "empty_key"), (9, "column_count")]
    report = aws.s3.get_object(Bucket=stack.settings.bucket, Key="errors/job-1/0.jsonl")["Body"]
    lines = [json.loads(x) for x in report.read().decode().splitlines()]
    assert [(x["line"], x["reason"], x["source"]) for x in lines] == [
        (5, "empty_key", SOURCE.uri), (9, "column_count", SOURCE.uri)]


def test_duplicate_keys_in_a_message_keep_the_later_row(aws, stack, spec):
    layer = StrictLayer()
    use(aws, stack, spec, layer)
    rows = [["a", "1", "first"], ["a", "2", "x"], ["a", "1", "second"], ["a", "1", "third"]]
    received = send(aws, stack, message(0, rows))
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    items = table_items(aws, stack.settings.table_name)
    assert items[("a", "1")]["risk"] == {"S": "third"}
    assert layer.record.violations == []  # never two requests for one key in a batch
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert counts["0"] == ledger.MessageCounts(written=2, rejected=0, superseded=2)


def test_unprocessed_items_are_retried_until_written(aws, stack, spec):
    layer = StrictLayer(Faults(unprocessed_rate=0.5, seed=3))
    use(aws, stack, spec, layer)
    received = send(aws, stack, *(message(s, [["a", f"{s}-{i}", "r"] for i in range(25)])
                                  for s in range(4)))
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": []}
    assert layer.record.injected["unprocessed"] > 0
    assert len(table_items(aws, stack.settings.table_name)) == 100


def test_a_message_that_cannot_be_written_in_time_is_reported_not_lost(aws, stack, spec):
    layer = StrictLayer(Faults(unprocessed_rate=1.0))
    use(aws, stack, spec, layer)
    received = send(aws, stack, message(0, [["a", "1", "r"]]))
    # Only 3.5 s left and 3 s are kept in reserve: backoff must give up, not overrun.
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context(3.5))
    assert response == {"batchItemFailures": [{"itemIdentifier": received[0]["MessageId"]}]}
    assert ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1") == {}


def test_a_message_that_is_not_ours_is_reported_as_failed(aws, stack, spec):
    use(aws, stack, spec)
    aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody="not json")
    good = message(0, [["a", "1", "r"]])
    aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=good.encode())
    received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                       MaxNumberOfMessages=10)["Messages"]
    bad_id = next(m["MessageId"] for m in received if m["Body"] == "not json")
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": [{"itemIdentifier": bad_id}]}


def test_duplicate_delivery_changes_nothing(aws, stack, spec):
    use(aws, stack, spec)
    m = message(0, [["a", str(i), "r"] for i in range(10)])
    for _ in range(2):
        received = send(aws, stack, m)
        handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert counts == {"0": ledger.MessageCounts(10, 0, 0)}
    assert len(table_items(aws, stack.settings.table_name)) == 10


class PoisonTable:
    """A DynamoDB stand-in that rejects a whole batch when any item is marked poison."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.calls = 0

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        (requests,) = RequestItems.values()
        if any("poison" in r["PutRequest"]["Item"] for r in requests):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad item"}},
                              "BatchWriteItem")
        self.written.extend(r["PutRequest"]["Item"] for r in requests)
        return {"UnprocessedItems": {}}


def test_a_rejected_batch_is_bisected_to_the_items_at_fault() -> None:
    items = [{"k": {"S": str(i)}} for i in range(25)]
    items[4]["poison"] = {"S": "x"}
    items[19]["poison"] = {"S": "x"}
    table = PoisonTable()
    outcome = write_items(table, "t", items, Budget(lambda: 60.0, sleep=lambda s: None))
    assert sorted(i for i, _ in outcome.invalid) == [4, 19]
    assert outcome.written == 23 and len(table.written) == 23
    assert table.calls < 25  # halving, not one call per item


class Throttled:
    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchWriteItem")


def test_backoff_never_sleeps_past_the_budget() -> None:
    slept: list[float] = []
    clock = {"left": 10.0}

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["left"] -= seconds

    with pytest.raises(TransientWriteError):
        write_items(Throttled(), "t", [{"k": {"S": "1"}}],
                    Budget(lambda: clock["left"], reserve_s=3.0, sleep=sleep))
    assert clock["left"] >= 3.0  # the reserve is intact
    assert slept and all(s <= 5.0 for s in slept)


def test_a_rejected_message_redriven_as_is_is_written_as_a_replay(aws, stack, spec):
    # SQS's own redrive (StartMessageMoveTask) moves DLQ messages back unchanged.
    use(aws, stack, spec)
    handler.lambda_handler(sqs_event(send(aws, stack, message(0, [["", "1", "r"], ["a", "2", "r"]])),
                                     stack.rows_queue_arn), context())
    (rejected,) = drain(aws.sqs, stack.settings.dlq_url)
    aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=rejected["Body"])
    received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                       AttributeNames=["All"])["Messages"]
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    replay_ids = [m for m in counts if "~" in m]
    # Its row carries its index (0): the entry says where each of its rows landed (nowhere)
    assert len(replay_ids) == 1 and counts[replay_ids[0]] == ledger.MessageCounts(
        0, 1, 0, masks=(0, 0, 0, 0))
    assert ledger.totals(counts) == ledger.MessageCounts(1, 1, 0)  # still rejected once, not twice


# --------------------------------------------------------------------------- calls in flight

class SlowTable:
    """Passes BatchWriteItem to moto after `latency_s` (outside the lock, like a network
    round trip; moto's backend itself runs one call at a time) and records how many calls
    were in flight. `throttle_above` makes DynamoDB throttle any call that finds more than
    that many in flight; `throttle_keys` throttles every call holding one of those keys."""

    def __init__(self, ddb: Any, latency_s: float = 0.02, throttle_above: int | None = None,
                 throttle_keys: frozenset[str] = frozenset()) -> None:
        self._ddb = ddb
        self.latency_s = latency_s
        self.throttle_above = throttle_above
        self.throttle_keys = throttle_keys
        self.active = 0
        self.peak = 0
        self.calls = 0
        self.throttled = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)

    def batch_write_item(self, **params: Any) -> Any:
        (requests,) = params["RequestItems"].values()
        keys = {r["PutRequest"]["Item"]["offer_id"]["S"] for r in requests}
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            crowded = self.throttle_above is not None and self.active > self.throttle_above
        try:
            time.sleep(self.latency_s)
            if crowded or keys & self.throttle_keys:
                with self._lock:
                    self.throttled += 1
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "throttled"},
                                   "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchWriteItem")
            with self._lock:
                return self._ddb.batch_write_item(**params)
        finally:
            with self._lock:
                self.active -= 1


def ten_messages(aws, stack) -> list[dict[str, Any]]:
    received = []
    for first in (0, 10):
        received += send(aws, stack, *(message(s, [["a", f"{s}-{i}", "r"] for i in range(25)])
                                       for s in range(first, first + 10)))
    return received


def use_slow(aws, stack, spec, table: SlowTable, in_flight: int) -> None:
    settings = replace(stack.settings, writer_in_flight=in_flight)
    handler.runtime.use(Runtime(settings, spec, replace(aws, dynamodb=table)))


def test_an_invocation_keeps_several_writes_in_flight_on_one_client(aws, stack, spec):
    table = SlowTable(aws.dynamodb, latency_s=0.05)
    use_slow(aws, stack, spec, table, in_flight=8)
    received = ten_messages(aws, stack)
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": []}
    assert len(table_items(aws, stack.settings.table_name)) == 500
    # Calls overlapped (one after another would peak at 1), bounded by the setting; the
    # speed this buys is the bench's to measure, not a timed assertion's.
    assert 2 <= table.peak <= 8
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert ledger.totals(counts) == ledger.MessageCounts(500, 0, 0) and len(counts) == 20


def test_one_write_in_flight_is_sequential(aws, stack, spec):
    table = SlowTable(aws.dynamodb, latency_s=0.01)
    use_slow(aws, stack, spec, table, in_flight=1)
    response = handler.lambda_handler(sqs_event(ten_messages(aws, stack), stack.rows_queue_arn),
                                      context())
    assert response == {"batchItemFailures": []}
    assert table.peak == 1


def test_throttling_shrinks_the_calls_in_flight_instead_of_multiplying_retries(aws, stack, spec):
    # DynamoDB throttles any call that finds more than 2 in flight.
    table = SlowTable(aws.dynamodb, latency_s=0.02, throttle_above=2)
    use_slow(aws, stack, spec, table, in_flight=8)
    response = handler.lambda_handler(sqs_event(ten_messages(aws, stack), stack.rows_queue_arn),
                                      context())
    assert response == {"batchItemFailures": []}
    assert len(table_items(aws, stack.settings.table_name)) == 500
    assert table.throttled > 0
    # With the limit halving on throttling, far fewer throttled calls than one per message
    # per retry round: at most a few rounds of cuts before it settles at 2.
    assert table.throttled < 20


def test_a_message_throttled_past_the_budget_fails_alone_and_waits_longer(aws, stack, spec, queue_clock):
    layer = StrictLayer()
    strict = layer.wrap(aws)
    table = SlowTable(strict.dynamodb, latency_s=0.0, throttle_keys=frozenset({"3-0"}))
    settings = replace(stack.settings, writer_in_flight=4)
    handler.runtime.use(Runtime(settings, spec, replace(strict, dynamodb=table)))
    received = send(aws, stack, *(message(s, [["a", f"{s}-{i}", "r"] for i in range(25)])
                                  for s in range(6)))
    throttled_id = next(m["MessageId"] for m in received if decode(m["Body"]).seq == 3)
    event = sqs_event(received, stack.rows_queue_arn)
    for record in event["Records"]:  # the third delivery of these messages
        record["attributes"]["ApproximateReceiveCount"] = "3"
    # 6 s left, 3 s reserve, 2 s per call: about a second of backoff for message 3.
    response = handler.lambda_handler(event, context(6))
    assert response == {"batchItemFailures": [{"itemIdentifier": throttled_id}]}
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert sorted(counts) == ["0", "1", "2", "4", "5"]
    assert ledger.totals(counts) == ledger.MessageCounts(125, 0, 0)
    # It was held back: at its third receive, 4x the queue's visibility timeout. The others
    # (left undeleted here, as no ESM runs) are back after the usual visibility timeout,
    # which the queue's clock jumps over.
    assert layer.record.calls["change_message_visibility_batch"] == 1
    queue_clock.jump(stack.config.visibility_timeout_s + 0.5)
    back = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                   MaxNumberOfMessages=10)["Messages"]
    assert len(back) == 5 and throttled_id not in {m["MessageId"] for m in back}


def test_no_call_starts_that_could_outlive_the_budget() -> None:
    clock = {"left": 10.0}
    started_with: list[float] = []

    class Clocked(Throttled):
        def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
            started_with.append(clock["left"])
            clock["left"] -= 0.4  # each call takes 0.4 s
            return super().batch_write_item(RequestItems)

    def sleep(seconds: float) -> None:
        clock["left"] -= seconds

    with pytest.raises(TransientWriteError):
        write_items(Clocked(), "t", [{"k": {"S": "1"}}],
                    Budget(lambda: clock["left"], reserve_s=3.0, call_s=2.0, sleep=sleep))
    assert started_with and min(started_with) - 3.0 > 2.0


def test_in_flight_halves_on_throttling_once_a_round_and_grows_back_by_one() -> None:
    slots = InFlight(8)
    tickets = [slots.acquire(0) for _ in range(8)]
    assert None not in tickets and slots.acquire(0) is None  # full
    # All 8 calls of one round throttled: one cut, not eight.
    for ticket in tickets:
        slots.release(ticket, throttled=True)
    assert slots.limit == 4 and slots.cuts == 1
    # A call started after the cut and throttled cuts again.
    slots.release(slots.acquire(0), throttled=True)
    assert slots.limit == 2
    for _ in range(2):  # a round of 2 successes adds about one (1/2, then 1/2.5)
        slots.release(slots.acquire(0), throttled=False)
    assert slots.limit == pytest.approx(2.9)
    for _ in range(100):
        slots.release(slots.acquire(0), throttled=False)
    assert slots.limit == 8  # never above the setting
    for _ in range(10):
        slots.release(slots.acquire(0), throttled=True)
    assert slots.limit == 1  # never below one


def test_the_items_client_sends_the_body_botocore_would(aws, stack):
    """items_client() encodes BatchWriteItem bodies itself: moto parses them as DynamoDB's
    wire format, with every attribute type, a binary value among them, and answers
    UnprocessedItems through botocore's own parser."""
    fast = items_client()
    item = {"account": {"S": "a"}, "offer_id": {"S": "ü-1"}, "n": {"N": "-1.50"},
            "b": {"B": b"\x00\xff binary"}, "flag": {"BOOL": False}, "none": {"NULL": True},
            "m": {"M": {"x": {"L": [{"S": "é"}, {"N": "7"}]}}}, "ss": {"SS": ["p", "q"]}}
    other = {"account": {"S": "a"}, "offer_id": {"S": "2"}}
    response = fast.batch_write_item(RequestItems={stack.settings.table_name: [
        {"PutRequest": {"Item": item}}, {"PutRequest": {"Item": other}}]})
    assert response["UnprocessedItems"] == {}
    items = table_items(aws, stack.settings.table_name)
    assert items[("a", "ü-1")] == item and items[("a", "2")] == other


def test_a_wholly_failed_batch_is_told_apart_for_its_alarm() -> None:
    from writer.load import wholly_failed

    event = {"Records": [{"messageId": "a"}, {"messageId": "b"}]}
    assert wholly_failed(event, {"batchItemFailures": [{"itemIdentifier": "a"},
                                                       {"itemIdentifier": "b"}]})
    assert not wholly_failed(event, {"batchItemFailures": [{"itemIdentifier": "a"}]})
    assert not wholly_failed(event, {"batchItemFailures": []})
    assert not wholly_failed({"Records": []}, {"batchItemFailures": []})


def test_the_json_copy_holds_exactly_the_written_items(aws, stack, spec):
    # Given the old loader's JSON backup switched on
    settings = replace(stack.settings, json_copy=True)
    handler.runtime.use(Runtime(settings, spec, aws))
    rows = [["a", str(i), "low"] for i in range(5)] + [["", "5", "low"]]  # one rejected
    received = send(aws, stack, message(0, rows))
    # When the message is written
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    # Then json-copy/JOB/MESSAGE.jsonl holds each written item, in DynamoDB JSON, and no other
    listed = aws.s3.list_objects_v2(Bucket=settings.bucket, Prefix=settings.json_copy_prefix)
    (key,) = [o["Key"] for o in listed["Contents"]]
    assert key == f"{settings.json_copy_prefix}job-1/0.jsonl"
    body = aws.s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read().decode()
    copied = {(i["Item"]["account"]["S"], i["Item"]["offer_id"]["S"]): i["Item"]
              for i in map(json.loads, body.splitlines())}
    assert copied == table_items(aws, settings.table_name)
    assert len(copied) == 5


# ----------------------------------------------------------------------------- write modes

def moded(seq: int, rows: list[list[str]], mode: str) -> RowsMessage:
    return replace(message(seq, rows), mode=mode)


def test_a_rejected_insert_row_keeps_its_mode_through_the_dlq_replayer(aws, stack, spec, tmp_path):
    import csv as csv_module

    from dlq_replayer.target import Target
    from tests.integration.replayer_helpers import replayer

    # Given a table holding a/1, and an insert message with a/1, a/2 and a row with no key
    table = stack.settings.table_name
    old = {"account": {"S": "a"}, "offer_id": {"S": "1"}, "risk": {"S": "old"}}
    aws.dynamodb.put_item(TableName=table, Item=old)
    layer = StrictLayer(Faults(items_table=table))
    use(aws, stack, spec, layer)
    rows = [["a", "1", "new"], ["a", "2", "new"], ["", "3", "new"]]
    received = send(aws, stack, moded(0, rows, "insert"))
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert table_items(aws, table)[("a", "1")] == old  # not overwritten
    # The rejected row waits in the DLQ as an insert
    target = Target(aws.sqs, stack.settings.dlq_url, stack.settings.rows_queue_url, wait_s=0)
    export = tmp_path / "fix.csv"
    assert replayer(target, "export", "--out", str(export))[0] == 0
    with open(export, newline="") as f:
        records = list(csv_module.DictReader(f))
    records[0]["account"] = "a"  # fixed: a/3, a key the table does not hold yet
    with open(export, "w", newline="") as f:
        out = csv_module.DictWriter(f, fieldnames=list(records[0]))
        out.writeheader()
        out.writerows(records)
    assert replayer(target, "redrive", "--fixes", str(export))[0] == 0
    replayed = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                       MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [decode(m["Body"]).mode for m in replayed] == ["insert"]
    # When the writer takes the replay, it inserts the fixed row (a/3 did not exist)
    handler.lambda_handler(sqs_event(replayed, stack.rows_queue_arn), context())
    items = table_items(aws, table)
    assert items[("a", "3")]["risk"] == {"S": "new"} and items[("a", "1")] == old
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert counts["0"] == ledger.MessageCounts(written=1, rejected=1, skipped_existing=1)
    assert ledger.totals(counts) == ledger.MessageCounts(written=2, rejected=0, skipped_existing=1)
    assert layer.record.violations == []


def test_a_delete_rejection_goes_to_the_dlq_as_a_delete(aws, stack, spec):
    use(aws, stack, spec, StrictLayer())
    received = send(aws, stack, moded(0, [["a", "1", "x"], ["", "2", "x"]], "delete"))
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    (waiting,) = [decode(m["Body"]) for m in drain(aws.sqs, stack.settings.dlq_url)]
    assert waiting.mode == "delete" and [r.reason for r in waiting.rejections] == ["empty_key"]
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert counts["0"] == ledger.MessageCounts(rejected=1, deleted=1)


def test_an_update_dynamodb_refuses_rejects_that_row_alone(aws, stack):
    # Given a header so wide that an UpdateItem's expression passes DynamoDB's 4 KB
    table = stack.settings.table_name
    header = ["account", "offer_id"] + [f"column_{i}" for i in range(300)]
    spec = Spec.default()
    layer = StrictLayer(Faults(items_table=table))
    use(aws, stack, spec, layer)
    wide = ["a", "1"] + ["v"] * 300
    narrow = ["a", "2"] + [""] * 299 + ["only"]  # one attribute set: a short expression
    m = RowsMessage("job-1", 0, SOURCE, header, [2, 3], [wide, narrow], mode="update")
    received = send(aws, stack, m)
    handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    # Then the wide row is rejected as DynamoDB refused it, and the other is written
    items = table_items(aws, table)
    assert set(items) == {("a", "2")} and items[("a", "2")]["column_299"] == {"S": "only"}
    (waiting,) = [decode(m["Body"]) for m in drain(aws.sqs, stack.settings.dlq_url)]
    assert [(r.line, r.reason) for r in waiting.rejections] == [(2, "dynamodb_validation")]
    assert "Expression size" in waiting.rejections[0].detail


def test_row_writes_under_throttles_retry_inside_the_budget_and_cut_in_flight(aws, stack):
    from writer.rows import update_request, write_rows

    table = stack.settings.table_name
    layer = StrictLayer(Faults(throttle_rate=0.3, items_table=table, seed=5))
    ddb = layer.wrap(aws).dynamodb
    requests = [update_request(table, {"account": {"S": "a"}, "offer_id": {"S": str(i)},
                                       "risk": {"S": "r"}}, ["account", "offer_id"])
                for i in range(40)]
    slots = InFlight(8)
    outcome = write_rows(ddb, requests, Budget(remaining_s=lambda: 60, sleep=lambda s: None),
                         slots)
    assert outcome.written == 40 and outcome.throttled == layer.record.injected["throttle"] > 0
    assert slots.cuts > 0 and len(table_items(aws, table)) == 40
    # With no time left, a throttled row fails the message instead of overrunning
    always = StrictLayer(Faults(throttle_rate=1.0, items_table=table)).wrap(aws).dynamodb
    with pytest.raises(TransientWriteError):
        write_rows(always, requests[:1], Budget(remaining_s=lambda: 3.5))


def test_the_items_client_sends_put_item_and_update_item_and_the_ledger_keeps_its_own(aws, stack):
    """PutItem and UpdateItem on the items table go through the items client (parameter
    validation off, botocore's own serializer: encode_whole takes only BatchWriteItem and
    BatchExecuteStatement); the ledger's calls on its own table through the standard client."""
    from writer.batch_write import WriterDynamoDB
    from writer.rows import insert_request, update_request, write_rows

    table, keys = stack.settings.table_name, ["account", "offer_id"]
    fast = items_client()
    ddb = WriterDynamoDB(fast, aws.dynamodb, items_table=table)
    assert ddb._route({"TableName": table}) is fast
    assert ddb._route({"TableName": stack.settings.ledger_table_name}) is aws.dynamodb
    item = {"account": {"S": "a"}, "offer_id": {"S": "1"}, "n": {"N": "1.50"},
            "b": {"B": b"\x00\xff"}, "ss": {"SS": ["p", "q"]}, "m": {"M": {"x": {"N": "7"}}}}
    budget = Budget(remaining_s=lambda: 60)
    first = write_rows(ddb, [insert_request(table, item, keys)], budget)
    again = write_rows(ddb, [insert_request(table, item, keys)], budget)
    other = write_rows(ddb, [insert_request(table, item | {"n": {"N": "2"}}, keys)], budget)
    assert (first.written, again.written, other.skipped) == (1, 1, [0])  # its own item: written
    odd = {"account": {"S": "a"}, "offer_id": {"S": "1"}, "a.b": {"S": "dot"},
           "SET": {"S": "reserved"}, "#x": {"S": "hash"}, ":y": {"S": "colon"}, "with space": {"N": "3"}}
    assert write_rows(ddb, [update_request(table, odd, keys)], budget).written == 1
    # A row that names only its key: the item exists, there is nothing to set: written, as is
    only_key = {name: odd[name] for name in keys}
    assert write_rows(ddb, [update_request(table, only_key, keys)], budget).written == 1
    assert table_items(aws, table)[("a", "1")] == item | odd
