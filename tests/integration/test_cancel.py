"""An operator's cancel, on moto through the strict layer: during the split, during writing,
after completion, racing the last writer, and a cancelled job whose messages never come
back. Every case ends in exactly one terminal state, with rows_read = the sum of the
outcomes (`cancelled` included) and one summary."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

import pytest

from dlq_replayer.target import Target
from fanout import ledger
from fanout.aws import Clients
from fanout.contract import RowsMessage, Source, decode
from fanout.runtime import Runtime, reconcile_jobs, settle_job
from fanout_cli.local.resources import LocalStack
from splitter import split
from tests.integration.helpers import context, drain, sqs_event
from tests.integration.replayer_helpers import replayer
from tests.integration.test_ledger import Clock, completes
from tests.integration.test_ledger_faults import AwsIdempotentTransactions, LosesReply, Published
from tests.strict_aws import StrictLayer
from writer import handler
from writer.load import load_batch

HEADER = ["account", "offer_id", "risk"]
SOURCE = Source("fanout-uploads", "uploads/t.csv", "etag")
JOB = "job-c"


def message(seq: int, job: str = JOB) -> RowsMessage:
    rows = [["a", f"{seq}-{i}", "low"] for i in range(25)]
    return RowsMessage(job, seq, SOURCE, HEADER, list(range(2 + 25 * seq, 27 + 25 * seq)), rows)


def start(aws: Clients, stack: LocalStack, total: int, clock: Clock, job: str = JOB) -> None:
    table = stack.settings.ledger_table_name
    assert ledger.start_job(aws.dynamodb, table, job, source_uri="s3://b/k", table="t",
                            owner="a", clock=clock)[0] == "new"
    ledger.finish_split(aws.dynamodb, table, job, rows_read=25 * total, messages_total=total,
                        header=HEADER, error_location="s3://b/errors/", clock=clock)


def write(runtime: Runtime, stack: LocalStack, *messages: RowsMessage, request: str) -> None:
    """One writer invocation of `runtime` (a process: it keeps what it learned) over `messages`."""
    sqs = runtime.clients.sqs
    for m in messages:
        sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=m.encode())
    received = sqs.receive_message(QueueUrl=stack.settings.rows_queue_url, MaxNumberOfMessages=10,
                                   AttributeNames=["All"])["Messages"]
    ctx = context()
    ctx.aws_request_id = request
    response = load_batch(sqs_event(received, stack.rows_queue_arn), ctx, runtime)
    assert response == {"batchItemFailures": []}
    for r in received:
        sqs.delete_message(QueueUrl=stack.settings.rows_queue_url, ReceiptHandle=r["ReceiptHandle"])


def items_in(aws: Clients, stack: LocalStack) -> int:
    return len(aws.dynamodb.scan(TableName=stack.settings.table_name)["Items"])


def exact(job: dict[str, Any]) -> bool:
    return job["rows_read"] == sum(job[f"rows_{name}"] for name in ledger.OUTCOMES)


def test_cancel_during_writing_drops_the_rest_and_counts_them_cancelled(aws, stack, spec):
    layer = StrictLayer()
    clients = layer.wrap(aws)
    clock, published = Clock(), Published(aws, stack)
    runtime = Runtime(stack.settings, spec, clients, clock=clock, sleep=clock.sleep)
    table = stack.settings.ledger_table_name
    # Given a job of 5 messages, one written
    start(aws, stack, 5, clock)
    write(runtime, stack, message(0), request="r0")
    # When an operator cancels it
    outcome = ledger.cancel_job(aws.dynamodb, table, JOB, by="alice@laptop", clock=clock)
    assert outcome.cancelled and outcome.status == ledger.CANCELLING
    # Then the writer's next report learns of it (the ticket ADD's old tally says so: the
    # batch it had already written counts as written), and its later batches are dropped
    write(runtime, stack, message(1), request="r1")
    assert JOB in runtime.cancelled_jobs
    write(runtime, stack, message(2), message(3), request="r2")
    write(runtime, stack, message(4), request="r3")
    assert items_in(aws, stack) == 50  # messages 0 and 1; nothing after the writer knew
    job = ledger.get_job(aws.dynamodb, table, JOB)
    assert job["status"] == ledger.CANCELLED and exact(job)
    assert (job["rows_written"], job["rows_cancelled"], job["rows_read"]) == (50, 75, 125)
    assert job["cancelled_by"] == "alice@laptop" and job["cancelled_at"]
    # And the summary is published once, with the cancelled count and who cancelled
    summaries = published.read()
    assert [s["STATUS"] for s in summaries] == [ledger.CANCELLED]
    assert summaries[0]["TOTAL_NUMBER_OF_ROWS_CANCELLED"] == 75
    assert summaries[0]["CANCELLED_BY"] == "alice@laptop"
    assert layer.record.violations == []
    # A redelivery of a dropped message changes nothing
    write(runtime, stack, message(3), request="r4")
    settle_job(runtime, ledger.raw_job(aws.dynamodb, table, JOB))
    again = ledger.get_job(aws.dynamodb, table, JOB)
    assert (again["rows_written"], again["rows_cancelled"]) == (50, 75)
    assert published.read() == summaries


def test_the_writer_makes_no_extra_call_per_message_while_no_job_is_cancelled(aws, stack, spec):
    """The cost of cancellation while nothing is cancelled: the same DynamoDB calls as a
    writer that knew nothing of cancels (a ticket ADD and a log record per invocation and
    job, and the BatchWriteItem calls)."""
    layer = StrictLayer()
    clock = Clock()
    runtime = Runtime(stack.settings, spec, layer.wrap(aws), clock=clock, sleep=clock.sleep)
    start(aws, stack, 10, clock)
    write(runtime, stack, *(message(seq) for seq in range(8)), request="r0")
    calls = dict(layer.record.calls)
    ledger_calls = {op: n for op, n in calls.items() if op in ("update_item", "put_item", "get_item",
                                                                "query", "batch_get_item")}
    # 8 messages: one ADD, one log record put; no read (no fold: 8 of 10 reported)
    assert ledger_calls == {"update_item": 1, "put_item": 1}
    assert calls["batch_write_item"] == 8


class CancelsAtCheckpoint:
    """The operator's cancel lands just after the first splitter checkpoint that `when`
    picks (the first of all is the check's, before anything is sent)."""

    def __init__(self, ddb: Any, table: str, clock: Clock, when: Any) -> None:
        self.ddb, self.table, self.clock, self.when, self.done = ddb, table, clock, when, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ddb, name)

    def update_item(self, **params: Any) -> Any:
        out = self.ddb.update_item(**params)
        checkpoint = params["ExpressionAttributeValues"].get(":cp", {}).get("S")
        if not self.done and checkpoint is not None and self.when(checkpoint):
            self.done = True
            ledger.cancel_job(self.ddb, self.table, params["Key"]["pk"]["S"], by="ops", clock=self.clock)
        return out


def test_cancel_during_the_split_stops_it_at_its_next_checkpoint(aws, stack, spec):
    clock = Clock()
    # every tenth row one field short (padded, and counted rows_padded)
    rows = [[f"acct{i % 7}", f"offer{i}", "low"][:2 if i % 10 == 3 else 3] for i in range(400)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["account", "offer_id", "risk"], *rows])
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/big.csv", Body=buffer.getvalue().encode())
    table = stack.settings.ledger_table_name
    cancelled_after: list[str] = []

    def after_rows_were_sent(checkpoint: str) -> bool:
        if '"checked":true' in checkpoint and '"messages":0' not in checkpoint:
            cancelled_after.append(checkpoint)
            return True
        return False

    settings = replace(stack.settings, checkpoint_bytes=1024, range_bytes=1024)
    runtime = Runtime(settings, spec, replace(aws, dynamodb=CancelsAtCheckpoint(
        aws.dynamodb, table, clock, after_rows_were_sent)),
                      clock=clock, sleep=clock.sleep)
    result = split.split_object(runtime, stack.settings.bucket, "uploads/big.csv", owner="s1")
    # The split stopped: it sent fewer rows than the file holds, and recorded exactly those
    job = ledger.get_job(aws.dynamodb, table, result.job)
    assert cancelled_after and job["status"] == ledger.CANCELLING
    sent = drain(aws.sqs, stack.settings.rows_queue_url)
    assert 0 < job["rows_read"] < 400 and job["messages_total"] == len(sent)
    assert job["rows_padded"] == sum(1 for row in rows[:job["rows_read"]] if len(row) == 2) > 0
    # Its writers (a process that learns of the cancel from its first report) end the job
    writer = Runtime(stack.settings, spec, aws, clock=clock, sleep=clock.sleep)
    bodies = [m["Body"] for m in sent]
    for i, body in enumerate(bodies):
        aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=body)
        received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                           MaxNumberOfMessages=1, AttributeNames=["All"])["Messages"]
        ctx = context()
        ctx.aws_request_id = f"w{i}"
        load_batch(sqs_event(received, stack.rows_queue_arn), ctx, writer)
    job = ledger.get_job(aws.dynamodb, table, result.job)
    assert job["status"] == ledger.CANCELLED and exact(job)
    assert job["rows_written"] == 25 and job["rows_cancelled"] == job["rows_read"] - 25
    assert items_in(aws, stack) == 25


def test_a_cancel_of_a_finished_job_changes_nothing(aws, stack, spec):
    clock = Clock()
    runtime = Runtime(stack.settings, spec, aws, clock=clock, sleep=clock.sleep)
    table = stack.settings.ledger_table_name
    start(aws, stack, 2, clock)
    write(runtime, stack, message(0), message(1), request="r0")
    before = ledger.raw_job(aws.dynamodb, table, JOB)
    assert ledger.status_of(before) == ledger.COMPLETE
    outcome = ledger.cancel_job(aws.dynamodb, table, JOB, by="ops", clock=clock)
    assert not outcome.cancelled and outcome.status == ledger.COMPLETE
    assert ledger.raw_job(aws.dynamodb, table, JOB) == before
    assert "cancelled_at" not in aws.dynamodb.get_item(
        TableName=table, Key={"pk": {"S": JOB}, "sk": {"S": "tally"}})["Item"]
    # And one of no job says so
    assert ledger.cancel_job(aws.dynamodb, table, "no-such-job", by="ops").job is None


class Race:
    """The ledger client of the last writer: at its completion transaction, the operator's
    cancel commits just before it (`cancel_first`) or just after it."""

    def __init__(self, ddb: Any, table: str, job: str, clock: Clock, *, cancel_first: bool) -> None:
        self.ddb, self.table, self.job, self.clock = ddb, table, job, clock
        self.cancel_first = cancel_first
        self.cancel: ledger.CancelOutcome | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ddb, name)

    def _cancel(self) -> None:
        self.cancel = ledger.cancel_job(self.ddb, self.table, self.job, by="ops", clock=self.clock)

    def transact_write_items(self, **params: Any) -> Any:
        if self.cancel is not None or not completes("transact_write_items", params):
            return self.ddb.transact_write_items(**params)
        if self.cancel_first:
            self._cancel()
            return self.ddb.transact_write_items(**params)
        out = self.ddb.transact_write_items(**params)
        self._cancel()
        return out


@pytest.mark.parametrize("cancel_first", [True, False])
def test_a_cancel_racing_the_last_writer_ends_the_job_once_either_way(aws, stack, spec, cancel_first):
    """The cancel commits between the last writer's fold and its completion transaction:
    the completion fails its tally condition, folds again and ends the job CANCELLED with
    the last message counted written. The other order: COMPLETE, and the cancel is refused."""
    table, clock, published = stack.settings.ledger_table_name, Clock(), Published(aws, stack)
    start(aws, stack, 2, clock)
    race = Race(aws.dynamodb, table, JOB, clock, cancel_first=cancel_first)
    runtime = Runtime(stack.settings, spec, replace(aws, dynamodb=race), clock=clock, sleep=clock.sleep)
    write(runtime, stack, message(0), request="w0")
    write(runtime, stack, message(1), request="w1")
    done = ledger.get_job(aws.dynamodb, table, JOB)
    assert race.cancel is not None and race.cancel.cancelled == cancel_first
    assert done["status"] == (ledger.CANCELLED if cancel_first else ledger.COMPLETE)
    assert exact(done) and done["rows_written"] == 50 and done["rows_cancelled"] == 0
    assert [s["STATUS"] for s in published.read()] == [done["status"]]


def test_a_cancel_whose_reply_is_lost_is_applied_once(aws, stack):
    clock = Clock()
    table = stack.settings.ledger_table_name
    start(aws, stack, 2, clock)
    lossy = LosesReply(AwsIdempotentTransactions(aws.dynamodb), "transact_write_items",
                       lambda params: "cancelled_by" in str(params))
    outcome = ledger.cancel_job(lossy, table, JOB, by="ops", clock=clock)
    assert lossy.lost == 1 and outcome.cancelled and outcome.status == ledger.CANCELLING
    # A retry long after (a new token) is told it is cancelling already, and changes nothing
    again = ledger.cancel_job(aws.dynamodb, table, JOB, by="bob", clock=clock)
    assert not again.cancelled and again.job is not None and again.job["cancelled_by"] == "ops"


def test_a_cancelled_job_whose_messages_never_come_back_is_cancelled_by_the_reconciler(
        aws, stack, spec):
    clock = Clock()
    published = Published(aws, stack)
    runtime = Runtime(stack.settings, spec, aws, clock=clock, sleep=clock.sleep)
    table = stack.settings.ledger_table_name
    start(aws, stack, 3, clock)
    write(runtime, stack, message(0), request="r0")  # messages 1 and 2 went to the DLQ
    assert ledger.cancel_job(aws.dynamodb, table, JOB, by="ops", clock=clock).cancelled
    assert reconcile_jobs(runtime) == []  # progress is recent: it waits
    clock.now += stack.settings.stall_after_s + 1
    (ended,) = reconcile_jobs(runtime)
    assert ended.status == ledger.CANCELLED
    job = ledger.get_job(aws.dynamodb, table, JOB)
    assert job["status"] == ledger.CANCELLED and job["missing_messages"] == 2
    (summary,) = published.read()
    assert summary["TOTAL_NUMBER_OF_ROWS_MISSING"] == 50 and summary["STATUS"] == ledger.CANCELLED
    # Out of the active index: the next run has nothing to do
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []
    assert reconcile_jobs(runtime) == []


def test_a_stalled_job_can_be_cancelled_and_ends_cancelled(aws, stack, spec):
    clock = Clock()
    published = Published(aws, stack)
    runtime = Runtime(stack.settings, spec, aws, clock=clock, sleep=clock.sleep)
    table = stack.settings.ledger_table_name
    start(aws, stack, 2, clock)
    write(runtime, stack, message(0), request="r0")
    assert reconcile_jobs(runtime) == []  # folds the report: progress
    clock.now += stack.settings.stall_after_s + 1
    assert [e.status for e in reconcile_jobs(runtime)] == [ledger.STALLED]
    assert ledger.cancel_job(aws.dynamodb, table, JOB, by="ops", clock=clock).cancelled
    clock.now += 1
    assert [e.status for e in reconcile_jobs(runtime)] == [ledger.CANCELLED]
    assert [s["STATUS"] for s in published.read()] == [ledger.STALLED, ledger.CANCELLED]
    assert ledger.get_job(aws.dynamodb, table, JOB)["status"] == ledger.CANCELLED


def test_the_writer_handler_drops_a_known_cancelled_jobs_messages(aws, stack, spec):
    """Through the Lambda entry point: the RowsCancelled count of a dropped batch."""
    runtime = Runtime(stack.settings, spec, aws)
    handler.runtime.use(runtime)
    try:
        start(aws, stack, 1, Clock())
        assert ledger.cancel_job(aws.dynamodb, stack.settings.ledger_table_name, JOB, by="ops").cancelled
        runtime.cancelled_jobs[JOB] = None
        aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=message(0).encode())
        received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                           AttributeNames=["All"])["Messages"]
        assert handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context()) == {
            "batchItemFailures": []}
        assert items_in(aws, stack) == 0
        job = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)
        assert job["rows_cancelled"] == 25 and job["status"] == ledger.CANCELLED and exact(job)
    finally:
        handler.runtime.use(None)


def test_redrive_refuses_a_cancelled_jobs_rows_unless_told_to(aws, stack, spec):
    clock = Clock()
    runtime = Runtime(stack.settings, spec, aws, clock=clock, sleep=clock.sleep)
    table = stack.settings.ledger_table_name
    start(aws, stack, 2, clock)
    poisoned = message(0)
    poisoned.rows[3] = ["", "0-3", "low"]  # an empty key: rejected, to the DLQ
    write(runtime, stack, poisoned, request="r0")
    assert ledger.cancel_job(aws.dynamodb, table, JOB, by="ops", clock=clock).cancelled
    target = Target(aws.sqs, stack.settings.dlq_url, stack.settings.rows_queue_url,
                    ledger=aws.dynamodb, ledger_table=table, wait_s=0)
    # Refused, saying why: nothing matched is "nothing done" (3), the row stays in the DLQ
    code, out, err = replayer(target, "redrive")
    assert code == 3 and "1 row(s) of cancelled jobs stay in the DLQ" in out
    assert f"note: job {JOB} was cancelled: its rows stay in the DLQ (redrive them with " \
           "--include-cancelled to load them all the same)" in err
    assert drain(aws.sqs, stack.settings.rows_queue_url) == []
    # Told to: sent back as a replay, which the writers write (a replay is never dropped)
    code, out, err = replayer(target, "redrive", "--include-cancelled")
    assert code == 0 and "sent 1 row(s)" in out
    (sent,) = drain(aws.sqs, stack.settings.rows_queue_url)
    assert decode(sent["Body"]).replay


def test_a_cancel_before_anything_was_sent_ends_the_job_at_the_splitters_stop(aws, stack, spec):
    """Cancelled while the splitter checks the file (before its first message): it stops at
    its next checkpoint with 0 rows sent, and the job is CANCELLED at once, with a summary."""
    clock, published = Clock(), Published(aws, stack)
    rows = "".join(f"a{i},o{i},low\n" for i in range(300))
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/early.csv",
                      Body=("account,offer_id,risk\n" + rows).encode())
    table = stack.settings.ledger_table_name

    settings = replace(stack.settings, checkpoint_bytes=1024, range_bytes=1024)
    runtime = Runtime(settings, spec, replace(aws, dynamodb=CancelsAtCheckpoint(
        aws.dynamodb, table, clock, lambda checkpoint: True)),
                      clock=clock, sleep=clock.sleep)
    result = split.split_object(runtime, stack.settings.bucket, "uploads/early.csv", owner="s1")
    assert drain(aws.sqs, stack.settings.rows_queue_url) == []
    job = ledger.get_job(aws.dynamodb, table, result.job)
    assert job["status"] == ledger.CANCELLED and job["rows_read"] == 0 and exact(job)
    assert [s["STATUS"] for s in published.read()] == [ledger.CANCELLED]


def test_a_cancel_during_a_parallel_split_stops_the_ranges_not_yet_begun(aws, stack, spec):
    """A parallel split cancelled after two of its ranges sent their rows: the ranges that
    start after the cancel send nothing and report 0, the last one records what was sent,
    and the writers' drops end the job CANCELLED with exact counts."""
    from splitter.split import split_event
    from tests.integration.helpers import s3_event
    from tests.integration.test_splitter import make_rows, parallel_runtime, put_csv

    put_csv(aws, stack.settings.bucket, "uploads/wide.csv", make_rows(600))
    settings, events, parallel = parallel_runtime(Runtime(stack.settings, spec, aws), aws, 6000)
    (started,) = split_event(s3_event(stack.settings.bucket, "uploads/wide.csv"), parallel)
    table = stack.settings.ledger_table_name
    ranges_run = 0
    while events:
        event = events.pop(0)
        if "fanout_range" in event:
            ranges_run += 1
            if ranges_run == 3:
                assert ledger.cancel_job(aws.dynamodb, table, started.job, by="ops").cancelled
        split_event(event, parallel)
    job = ledger.get_job(aws.dynamodb, table, started.job)
    sent = drain(aws.sqs, stack.settings.rows_queue_url)
    assert job["status"] == ledger.CANCELLING and ranges_run >= 4
    assert 0 < job["rows_read"] < 600 and job["messages_total"] == len(sent)
    writer = Runtime(stack.settings, spec, aws)
    writer.cancelled_jobs[started.job] = None  # a writer process that knows already
    for i, m in enumerate(sent):
        aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=m["Body"])
        received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                           AttributeNames=["All"])["Messages"]
        ctx = context()
        ctx.aws_request_id = f"w{i}"
        load_batch(sqs_event(received, stack.rows_queue_arn), ctx, writer)
    job = ledger.get_job(aws.dynamodb, table, started.job)
    assert job["status"] == ledger.CANCELLED and exact(job)
    assert job["rows_cancelled"] == job["rows_read"] and items_in(aws, stack) == 0
