"""One SendMessageBatch loop (fanout.sending) for the splitter's enqueue, the writer's
rejected rows and the replayer's redrive: 10 a call and 1 MiB at most, `Failed` entries
and throttles sent again a bounded number of times, nothing counted sent that SQS did
not take; and the writer's rejected rows of a whole batch sent together, a message whose
rows the DLQ would not take reported failed."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from fanout import ledger, sending
from fanout.contract import decode
from fanout.settings import MAX_SQS_MESSAGE_BYTES
from tests.integration.helpers import context, drain, sqs_event
from tests.integration.test_writer import message, send, use
from tests.strict_aws import Faults, StrictLayer
from writer import handler


def no_sleep(_: float) -> None:
    pass


def test_batches_are_ten_bodies_and_a_mebibyte_at_most_in_order():
    bodies = [f"b{i}" for i in range(23)]
    assert [len(b) for b in sending.batches(bodies)] == [10, 10, 3]
    assert [x for b in sending.batches(bodies) for x in b] == bodies
    big = ["x" * 400_000] * 5
    cut = list(sending.batches(big))
    assert [len(b) for b in cut] == [2, 2, 1]
    assert all(sum(len(x) for x in b) <= MAX_SQS_MESSAGE_BYTES for b in cut)


def test_failed_entries_are_sent_again_until_each_lands_once(aws, stack):
    layer = StrictLayer(Faults(send_failed_rate=0.4, seed=5))
    sqs, url = layer.wrap(aws).sqs, stack.settings.dlq_url
    bodies = [f"body-{i}" for i in range(35)]
    sending.send_all(sqs, url, bodies, sleep=no_sleep)
    assert layer.record.injected["send_failed"] > 0
    assert sorted(m["Body"] for m in drain(aws.sqs, url)) == sorted(bodies)
    assert layer.record.violations == []


class Scripted:
    """An SQS client whose SendMessageBatch answers come from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def send_message_batch(self, **params: Any) -> Any:
        self.calls.append([e["Id"] for e in params["Entries"]])
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, Exception):
            raise answer
        entries = params["Entries"]
        if answer == "ok":
            return {"Successful": [{"Id": e["Id"]} for e in entries]}
        return {"Successful": [], "Failed": [{"Id": e["Id"], **answer} for e in entries]}


def error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessageBatch")


def test_a_throttle_or_5xx_is_retried_and_a_sender_fault_or_other_error_is_not():
    sqs = Scripted(error("RequestThrottled", 400), error("InternalError", 500), "ok")
    sending.send_batch(sqs, "url", ["a", "b"], sleep=no_sleep)
    assert len(sqs.calls) == 3
    sqs = Scripted({"SenderFault": True, "Code": "InvalidMessageContents", "Message": "bad"})
    with pytest.raises(sending.SendError, match="InvalidMessageContents"):
        sending.send_batch(sqs, "url", ["a"], sleep=no_sleep)
    assert len(sqs.calls) == 1
    sqs = Scripted(error("AWS.SimpleQueueService.NonExistentQueue", 400))
    with pytest.raises(ClientError):
        sending.send_batch(sqs, "url", ["a"], sleep=no_sleep)
    assert len(sqs.calls) == 1


def test_retries_are_bounded_and_a_refused_body_is_never_reported_sent():
    refusing = {"SenderFault": False, "Code": "InternalError", "Message": "try later"}
    sqs = Scripted(*[refusing] * 100)
    waits: list[float] = []
    with pytest.raises(sending.SendError, match="did not accept 2 message"):
        sending.send_batch(sqs, "url", ["a", "b"], sleep=waits.append)
    assert len(sqs.calls) == sending.MAX_SEND_ATTEMPTS
    assert all(0 <= w <= sending.MAX_DELAY_S for w in waits) and len(waits) == len(sqs.calls) - 1
    # An answer that names an entry neither sent nor failed: that entry goes again
    class Silent(Scripted):
        def send_message_batch(self, **params: Any) -> Any:
            super().send_message_batch(**params)
            return {"Successful": [{"Id": params["Entries"][0]["Id"]}]}

    silent = Silent()
    sending.send_batch(silent, "url", ["a", "b", "c"], sleep=no_sleep)
    assert silent.calls == [["0", "1", "2"], ["1", "2"], ["2"]]


def test_the_writer_sends_a_batchs_rejected_rows_together(aws, stack, spec):
    layer = StrictLayer()
    use(aws, stack, spec, layer)
    messages = []
    for seq in range(12):  # one bad row in each of 12 messages
        rows = [["a", f"{seq}-{i}", "low"] for i in range(25)]
        rows[seq % 25] = ["", "x", "low"]
        messages.append(message(seq, rows))
    received = send(aws, stack, *messages[:10]) + send(aws, stack, *messages[10:])
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": []}
    # 12 DLQ bodies in two SendMessageBatch calls, not 12 SendMessage
    assert layer.record.calls["send_message_batch"] == 2
    assert layer.record.calls["send_message"] == 0
    dlq = [decode(m["Body"]) for m in drain(aws.sqs, stack.settings.dlq_url)]
    assert sorted(m.seq for m in dlq) == list(range(12))
    assert all(len(m.rejections) == 1 for m in dlq)


def test_a_message_whose_rejected_rows_the_dlq_refuses_fails_and_is_not_counted(aws, stack, spec):
    layer = StrictLayer(Faults(send_failed_rate=1.0))
    use(aws, stack, spec, layer)
    clean = message(0, [["a", f"c{i}", "low"] for i in range(25)])
    poisoned = message(1, [["a", f"p{i}", "low"] for i in range(24)] + [["", "x", "low"]])
    received = send(aws, stack, clean, poisoned)
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    by_id = {decode(r["Body"]).seq: r["MessageId"] for r in received}
    assert response == {"batchItemFailures": [{"itemIdentifier": by_id[1]}]}
    assert layer.record.injected["send_failed"] == sending.MAX_SEND_ATTEMPTS
    counts = ledger.read_message_counts(aws.dynamodb, stack.settings.ledger_table_name, "job-1")
    assert set(counts) == {"0"}  # the failed message waits for its redelivery
    assert drain(aws.sqs, stack.settings.dlq_url) == []


def test_with_a_time_budget_no_wait_starts_that_leaves_no_time_for_the_call():
    refusing = {"SenderFault": False, "Code": "InternalError", "Message": "try later"}
    sqs = Scripted(*[refusing] * 100)
    waits: list[float] = []
    with pytest.raises(sending.SendError, match="in the time left"):
        sending.send_batch(sqs, "url", ["a"], sleep=waits.append,
                           time_left=lambda: sending.CALL_S)
    assert len(sqs.calls) == 1 and waits == []
