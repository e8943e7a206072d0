"""Every job ends, exactly: the faults of issue 21's audit, each deterministic.

A reply lost after its write committed (botocore then sends the same request again), a
folder out of time or killed while holding the fold's lease, a split whose end is throttled,
a replay recorded just before the completion: after each, the job still completes with
exact counts, by the next invocation or the reconciler, and a job that cannot end is
STALLED with what it misses, never silently RUNNING."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fanout import ledger
from fanout.ledger import MessageCounts
from fanout.runtime import Runtime, reconcile_jobs, settle_job
from tests.integration.test_ledger import JOB, Calls, Clock, completes, counts_of, timed

C = MessageCounts(25, 0, 0)


class LosesReply(Calls):
    """Loses the reply of the first call that `matches`: the call commits, then botocore's
    retry sends it again, and the caller sees the retry's outcome (its result or error).
    botocore gives a TransactWriteItems one ClientRequestToken for the call and its retries."""

    def __init__(self, ddb: Any, operation: str, matches: Any) -> None:
        super().__init__(ddb)
        self.operation, self.matches, self.lost = operation, matches, 0

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        if name != self.operation:
            return call

        def lossy(**params: Any) -> Any:
            if name == "transact_write_items":
                params.setdefault("ClientRequestToken", str(uuid.uuid4()))
            if not self.lost and self.matches(params):
                self.lost += 1
                call(**params)  # committed; its reply never came
            return call(**params)
        return lossy


class AwsIdempotentTransactions:
    """TransactWriteItems as AWS runs it: a token's transaction is applied once, and its
    retry answered with success (moto applies it again)."""

    def __init__(self, ddb: Any) -> None:
        self.ddb, self.seen = ddb, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ddb, name)

    def transact_write_items(self, **params: Any) -> Any:
        token = params.get("ClientRequestToken")
        if token not in self.seen:
            self.seen[token] = self.ddb.transact_write_items(**params)
        return self.seen[token]


def start(aws, stack, job=JOB, total=3, rows=75, clock: Clock | None = None):
    """A job split into `total` messages, on the test's clock."""
    table, clock = stack.settings.ledger_table_name, clock or Clock()
    assert ledger.start_job(aws.dynamodb, table, job, source_uri="s3://b/k", table="t",
                            owner="a", clock=clock)[0] == "new"
    return ledger.finish_split(aws.dynamodb, table, job, rows_read=rows, messages_total=total,
                               header=["h"], error_location="s3://b/errors/", clock=clock)


def sk_of(params: dict[str, Any]) -> str:
    return str((params.get("Key") or params.get("Item"))["sk"]["S"])


def runtime_for(aws, stack, spec, clock: Clock, ddb: Any = None, **settings: Any) -> Runtime:
    clients = replace(aws, dynamodb=ddb) if ddb is not None else aws
    return Runtime(replace(stack.settings, **settings), spec, clients, clock=clock,
                   sleep=clock.sleep)


class Published:
    """The summaries the stack's topic took, read from a queue subscribed to it; `read`
    returns every summary so far, in order."""

    def __init__(self, aws, stack) -> None:
        self.sqs, self.got = aws.sqs, []
        self.queue = aws.sqs.create_queue(QueueName="summaries")["QueueUrl"]
        arn = aws.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        aws.sns.subscribe(TopicArn=stack.settings.topic_arn, Protocol="sqs", Endpoint=arn,
                          Attributes={"RawMessageDelivery": "true"})

    def read(self) -> list[dict[str, Any]]:
        while messages := self.sqs.receive_message(QueueUrl=self.queue,
                                                   MaxNumberOfMessages=10).get("Messages", []):
            for m in messages:
                self.got.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return list(self.got)


# ------------------------------------------------------------------ 1: a folder out of time

def test_a_report_left_by_a_folder_out_of_time_is_settled_by_the_reconciler(aws, stack, spec):
    """A late duplicate's fold holds the lease with its budget spent; the last real report
    finds the lease held and returns. The folder exits with that ticket unread. The
    reconciler, on its schedule, finishes the job."""
    clock, table = Clock(), stack.settings.ledger_table_name
    summaries = Published(aws, stack)
    start(aws, stack, total=2, rows=50)
    runtime = runtime_for(aws, stack, spec, clock)
    for item in ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock):
        settle_job(runtime, item)
    # The late folder takes the lease (its invocation has 1 s left) and never gets to fold.
    assert ledger.folding._acquire(aws.dynamodb, table, JOB, "late-folder", clock() + 1,
                                   clock()) is not None
    for item in ledger.record_batch(aws.dynamodb, table, "w1", {JOB: {"1": C}}, clock=clock):
        settle_job(runtime, item)  # finds the lease held: returns
    assert counts_of(aws, stack)[0] == ledger.RUNNING
    # Nothing else comes. The reconciler runs every minute: within the lease plus the
    # takeover margin it does nothing, after it the job completes.
    clock.now += 60
    reconcile_jobs(runtime)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)
    (summary,) = summaries.read()
    assert summary["STATUS"] == ledger.COMPLETE and summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == 50
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []


# ------------------------------------------------------------------ 2: the ticket ADD twice

def test_a_ticket_add_applied_twice_voids_its_own_phantom_at_once(aws, stack, spec):
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    lossy = LosesReply(aws.dynamodb, "update_item",
                       lambda p: "ADD tickets" in p.get("UpdateExpression", ""))
    runtime = runtime_for(aws, stack, spec, clock)
    for item in ledger.record_batch(lossy, table, "w0", {JOB: {"0": C}}, clock=clock):
        assert item["tickets"]["N"] == "2"  # the retry's ticket: ticket 1 has no writer
        settle_job(runtime, item)
    assert lossy.lost == 1
    assert ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(1))["void"]["BOOL"]
    # No time passed and no redelivery came: the writer's own settle completed the job.
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25, 0, 0)


def test_a_log_record_put_retried_after_it_committed_is_not_taken_for_a_void(aws, stack, spec):
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    lossy = LosesReply(aws.dynamodb, "put_item", lambda p: sk_of(p).startswith(ledger.LOG_PREFIX))
    (item,) = ledger.record_batch(lossy, table, "w0", {JOB: {"0": C}}, clock=clock)
    assert lossy.lost == 1  # no TicketVoided: the batch succeeds, and is not delivered again
    settle_job(runtime_for(aws, stack, spec, clock), item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25, 0, 0)


# ------------------------------------------------------------------ 3: the folder's own writes

FOLDER_WRITES = {
    "lease acquire": ("update_item", lambda p: sk_of(p) == ledger.FOLD_SK
                      and "lease_owner = :o, lease_until" in p["UpdateExpression"]),
    "shard put": ("put_item", lambda p: sk_of(p).startswith(ledger.SHARD_PREFIX)),
    "fold save": ("update_item", lambda p: sk_of(p) == ledger.FOLD_SK
                  and "#cursor = :c" in p["UpdateExpression"]),
    "completion": ("transact_write_items", lambda p: completes("transact_write_items", p)),
}


@pytest.mark.parametrize("write", sorted(FOLDER_WRITES))
def test_a_folder_write_retried_after_it_committed_is_recognised(aws, stack, spec, write):
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50)
    operation, matches = FOLDER_WRITES[write]
    lossy = LosesReply(AwsIdempotentTransactions(aws.dynamodb), operation, matches)
    runtime = runtime_for(aws, stack, spec, clock, ddb=lossy)
    for m in ("0", "1"):
        for item in ledger.record_batch(aws.dynamodb, table, f"w{m}", {JOB: {m: C}}, clock=clock):
            settle_job(runtime, item)
    assert lossy.lost == 1
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)



# ------------------------------------------------------------------ 4: the split's end

def test_a_throttled_split_end_leaves_the_job_splitting_and_its_retry_finishes_it(aws, stack, spec):
    """finish_split is one transaction: a throttle cannot leave the job RUNNING without the
    tally's messages_total (which no settle could ever complete)."""
    from splitter import split

    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/a.csv",
                      Body=b"account,offer_id\n1,1\n2,2\n")
    throttled = []

    class Throttles(Calls):
        def __getattr__(self, name: str) -> Any:
            call = super().__getattr__(name)

            def maybe(**params: Any) -> Any:
                ends = "messages_total = :total" in str(params)
                if ends and not throttled:
                    if name == "update_item":  # the tally's half, as the split's end once was
                        throttled.append(name)
                        raise ClientError({"Error": {"Code": "ThrottlingException"}}, name)
                    if name == "transact_write_items":  # nothing of it commits
                        throttled.append(name)
                        raise ClientError({"Error": {"Code": "ThrottlingException"}}, name)
                return call(**params)
            return maybe

    runtime = Runtime(stack.settings, spec, replace(aws, dynamodb=Throttles(aws.dynamodb)))
    table = stack.settings.ledger_table_name
    with pytest.raises(ClientError):
        split.split_object(runtime, stack.settings.bucket, "uploads/a.csv")
    job = split.split_object(Runtime(stack.settings, spec, aws), stack.settings.bucket,
                             "uploads/a.csv").job  # the retry (its lease was released)
    for item in ledger.record_batch(aws.dynamodb, table, "w", {job: {"0": MessageCounts(2, 0, 0)}}):
        settle_job(Runtime(stack.settings, spec, aws), item)
    assert ledger.get_job(aws.dynamodb, table, job)["status"] == ledger.COMPLETE


# ------------------------------------------------------------------ 5: a folder killed

def test_a_redrive_settled_inside_a_dead_folders_lease_is_finished_by_the_reconciler(
        aws, stack, spec):
    """A folder is killed on a message's last receive: that batch goes to the DLQ; its
    redrive settles inside the dead folder's lease and returns. The reconciler ends it."""
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50)
    runtime = runtime_for(aws, stack, spec, clock)
    for item in ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock):
        settle_job(runtime, item)
    lease_s = 60.0
    assert ledger.folding._acquire(aws.dynamodb, table, JOB, "killed", clock() + lease_s,
                                   clock()) is not None  # ...and the folder dies
    clock.now += 10  # its batch went to the DLQ, and the operator redrives it at once
    for item in ledger.record_batch(aws.dynamodb, table, "redrive", {JOB: {"1": C}}, clock=clock):
        settle_job(runtime, item)
    assert counts_of(aws, stack)[0] == ledger.RUNNING
    reconcile_jobs(runtime)  # inside the lease: nothing yet
    assert counts_of(aws, stack)[0] == ledger.RUNNING
    clock.now += lease_s + ledger.HOLE_MARGIN_S
    reconcile_jobs(runtime)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)


# ------------------------------------------------------------------ 9: tickets = cursor

def test_a_replay_recorded_just_before_the_completion_is_in_the_published_summary(
        aws, stack, spec):
    """The completion is conditional on the tally holding exactly the tickets folded; a
    replay recorded between the fold and the completion makes it fold again. (With
    `tickets >= :c` the completion would commit without the replay.)"""
    clock, table = Clock(), stack.settings.ledger_table_name
    summaries = Published(aws, stack)
    start(aws, stack, total=2, rows=50)
    runtime = runtime_for(aws, stack, spec, clock)
    for item in ledger.record_batch(aws.dynamodb, table, "w0",
                                    {JOB: {"0": MessageCounts(20, 5, 0)}}, clock=clock):
        settle_job(runtime, item)

    class ReplayFirst(Calls):
        replayed = False

        def transact_write_items(self, **params: Any) -> Any:
            if completes("transact_write_items", params) and not self.replayed:
                self.replayed = True
                ledger.record_batch(aws.dynamodb, table, "replay",
                                    {JOB: {"0~fix": MessageCounts(5, 0, 0)}}, clock=clock)
            return self.ddb.transact_write_items(**params)

    racing = runtime_for(aws, stack, spec, clock, ddb=ReplayFirst(aws.dynamodb))
    for item in ledger.record_batch(aws.dynamodb, table, "w1", {JOB: {"1": C}}, clock=clock):
        settle_job(racing, item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)
    (summary,) = summaries.read()
    assert (summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"], summary["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"]) == (
        50, 0)


# ------------------------------------------------------------------ STALLED

def test_a_job_missing_a_message_is_stalled_with_what_it_misses_then_completes_on_redrive(
        aws, stack, spec):
    clock, table = Clock(), stack.settings.ledger_table_name
    summaries = Published(aws, stack)
    start(aws, stack, total=3, rows=75, clock=clock)
    runtime = runtime_for(aws, stack, spec, clock, stall_after_s=600)
    for m in ("0", "2"):  # message 1 is lost (past the queue's retention, say)
        for item in ledger.record_batch(aws.dynamodb, table, f"w{m}", {JOB: {m: C}}, clock=clock):
            settle_job(runtime, item)
    clock.now += 60
    reconcile_jobs(runtime)  # folds the two reports (the fold moving is progress too)
    progressed = clock()
    clock.now += 599
    reconcile_jobs(runtime)
    assert counts_of(aws, stack)[0] == ledger.RUNNING
    assert ledger.get_job(aws.dynamodb, table, JOB)["last_progress_at"] == progressed
    clock.now += 2
    reconcile_jobs(runtime)
    job = ledger.get_job(aws.dynamodb, table, JOB)
    assert (job["status"], job["missing_messages"], job["missing_seqs"]) == (ledger.STALLED, 1, [1])
    (stalled,) = summaries.read()
    assert stalled["STATUS"] == ledger.STALLED and stalled["MISSING_SEQS"] == [1]
    assert stalled["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] + stalled["TOTAL_NUMBER_OF_ROWS_MISSING"] == 75
    reconcile_jobs(runtime)  # published: the job left the active index, nothing more
    assert summaries.read() == [stalled]
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []
    # The operator redrives message 1 from the DLQ: the job completes and says so.
    for item in ledger.record_batch(aws.dynamodb, table, "redrive", {JOB: {"1": C}}, clock=clock):
        settle_job(runtime, item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 75, 0, 0)
    assert [s["STATUS"] for s in summaries.read()] == [ledger.STALLED, ledger.COMPLETE]


def test_a_split_that_died_after_its_retries_is_stalled_not_left_splitting(aws, stack, spec):
    clock, table = Clock(), stack.settings.ledger_table_name
    ledger.start_job(aws.dynamodb, table, JOB, source_uri="s3://b/k", table="t", owner="a",
                     lease_s=900, clock=clock)
    runtime = runtime_for(aws, stack, spec, clock, stall_after_s=1200)
    clock.now += 1000
    reconcile_jobs(runtime)  # its lease ran out 100 s ago: a retry may still resume it
    assert ledger.get_job(aws.dynamodb, table, JOB)["status"] == ledger.SPLITTING
    clock.now += 201
    (ended,) = reconcile_jobs(runtime)
    assert ended.status == ledger.STALLED
    assert "split stopped" in ledger.get_job(aws.dynamodb, table, JOB)["stall_reason"]


def test_the_reconciler_reads_the_active_jobs_not_the_table(aws, stack, spec):
    """Finding the jobs to visit is one Query of the active index, however many jobs ended."""
    clock, table = Clock(), stack.settings.ledger_table_name
    runtime = runtime_for(aws, stack, spec, clock)
    for n in range(30):
        job = f"done-{n}"
        start(aws, stack, job=job, total=1, rows=25)
        for item in ledger.record_batch(aws.dynamodb, table, f"w{n}", {job: {"0": C}}, clock=clock):
            settle_job(runtime, item)
    start(aws, stack, job="running", total=2, rows=50)
    calls = Calls(aws.dynamodb)
    ended = reconcile_jobs(runtime_for(aws, stack, spec, clock, ddb=calls))
    assert ended == []
    keys = {p.get("Key", {}).get("pk", {}).get("S") for _, p in calls.calls} - {None}
    assert keys == {"running"}  # only the running job's items were read
    assert "scan" not in {op for op, _ in calls.calls}
    assert list(ledger.active_jobs(aws.dynamodb, table)) == ["running"]


def test_status_shows_when_the_job_last_made_progress(aws, stack):
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50, clock=clock)
    clock.now = 2_000_000.0
    ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock)
    assert ledger.get_job(aws.dynamodb, table, JOB)["last_progress_at"] == 2_000_000.0


def test_the_writers_scheduled_event_runs_the_reconciler(aws, stack, spec):
    """The deployed stack's EventBridge rule invokes the writer with RECONCILE_EVENT."""
    from fanout.contract import RECONCILE_EVENT
    from fanout_cli.local.esm import LocalContext
    from writer import handler as writer_handler

    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50, clock=clock)
    ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock)
    writer_handler.runtime.use(runtime_for(aws, stack, spec, clock, stall_after_s=600))
    try:
        assert writer_handler.lambda_handler(dict(RECONCILE_EVENT), LocalContext("w", 60)) == {
            "ended": {}}
        clock.now += 601
        assert writer_handler.lambda_handler(dict(RECONCILE_EVENT), LocalContext("w", 60)) == {
            "ended": {JOB: ledger.STALLED}}
    finally:
        writer_handler.runtime.use(None)


def test_the_completer_publishes_and_a_concurrent_settle_does_not_until_its_claim_expires(
        aws, stack):
    """At least once, and once when nothing fails: the completion takes the publish claim;
    another settle meanwhile gets no summary; if the completer died before publishing, the
    claim expires with its lease and the next settle (or the reconciler) publishes."""
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25, clock=clock)
    ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock)
    done = ledger.settle(aws.dynamodb, table, JOB, owner="completer", lease_s=30, **timed(clock))
    assert done.status == ledger.COMPLETE and done.summary is not None
    ledger.record_batch(aws.dynamodb, table, "dup", {JOB: {"0": C}}, clock=clock)
    again = ledger.settle(aws.dynamodb, table, JOB, owner="duplicate", lease_s=30, **timed(clock))
    assert (again.status, again.summary) == (ledger.COMPLETE, None)
    clock.now += 31  # the completer died without publishing
    later = ledger.settle(aws.dynamodb, table, JOB, owner="later", lease_s=30, **timed(clock))
    assert later.summary is not None and later.summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == 25


def test_a_job_the_reconciler_cannot_read_does_not_keep_it_from_the_others(aws, stack, spec):
    """A throttled job's visit fails that job only: the others are settled and announced,
    then the run fails (so the schedule's invocation shows the error)."""
    clock, table = Clock(), stack.settings.ledger_table_name
    for job in ("a-job", "b-job"):
        start(aws, stack, job=job, total=1, rows=25, clock=clock)
        ledger.record_batch(aws.dynamodb, table, f"w-{job}", {job: {"0": C}}, clock=clock)

    class ThrottlesA(Calls):
        def get_item(self, **params: Any) -> Any:
            if params["Key"]["pk"]["S"] == "a-job":
                raise ClientError({"Error": {"Code": "ThrottlingException"}}, "GetItem")
            return self.ddb.get_item(**params)

    with pytest.raises(ledger.ReconcileIncomplete, match="a-job"):
        reconcile_jobs(runtime_for(aws, stack, spec, clock, ddb=ThrottlesA(aws.dynamodb)))
    assert ledger.get_job(aws.dynamodb, table, "b-job")["status"] == ledger.COMPLETE
    assert "summary_published" in ledger.get_job(aws.dynamodb, table, "b-job")
    assert ledger.get_job(aws.dynamodb, table, "a-job")["status"] == ledger.RUNNING
    reconcile_jobs(runtime_for(aws, stack, spec, clock))
    assert ledger.get_job(aws.dynamodb, table, "a-job")["status"] == ledger.COMPLETE


def test_a_replay_after_completion_left_by_a_dead_folder_is_counted_by_the_reconciler(
        aws, stack, spec):
    """After completion and its summary, a job leaves the active index; a report that comes
    later puts it back until the fold has read it, so a replay whose settle met a dead
    folder's lease is still counted."""
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25, clock=clock)
    runtime = runtime_for(aws, stack, spec, clock)
    for item in ledger.record_batch(aws.dynamodb, table, "w0",
                                    {JOB: {"0": MessageCounts(20, 5, 0)}}, clock=clock):
        settle_job(runtime, item)
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []  # ended and announced
    assert ledger.folding._acquire(aws.dynamodb, table, JOB, "killed", clock() + 60,
                                   clock()) is not None  # a late duplicate's folder dies
    for item in ledger.record_batch(aws.dynamodb, table, "replay",
                                    {JOB: {"0~fix": MessageCounts(5, 0, 0)}}, clock=clock):
        settle_job(runtime, item)  # finds the lease held
    assert counts_of(aws, stack) == (ledger.COMPLETE, 20, 5, 0)
    assert list(ledger.active_jobs(aws.dynamodb, table)) == [JOB]
    clock.now += 60 + ledger.HOLE_MARGIN_S + 1
    assert reconcile_jobs(runtime) == []  # nothing to publish again
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25, 0, 0)
    reconcile_jobs(runtime)
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []


def test_a_split_whose_writers_report_is_not_stalled_and_one_stalled_that_finishes_goes_on(
        aws, stack, spec):
    """A parallel split holds no lease while its ranges run: its writers' reports are its
    progress. And a split the reconciler stalled that finishes after all completes."""
    clock, table = Clock(), stack.settings.ledger_table_name
    ledger.start_job(aws.dynamodb, table, JOB, source_uri="s3://b/k", table="t", owner="a",
                     lease_s=10, clock=clock)
    runtime = runtime_for(aws, stack, spec, clock, stall_after_s=600)
    for n in range(3):  # the ranges' messages are written, 500 s apart
        clock.now += 500
        ledger.record_batch(aws.dynamodb, table, f"w{n}", {JOB: {str(n): C}}, clock=clock)
        reconcile_jobs(runtime)
    assert ledger.get_job(aws.dynamodb, table, JOB)["status"] == ledger.SPLITTING
    clock.now += 601
    (ended,) = reconcile_jobs(runtime)
    assert (ended.status, ledger.get_job(aws.dynamodb, table, JOB)["rows_written"]) == (
        ledger.STALLED, 75)
    # The last range was only slow: it finishes the split, and the job completes.
    ledger.finish_split(aws.dynamodb, table, JOB, rows_read=75, messages_total=3, header=["h"],
                        error_location="s3://b/errors/", clock=clock)
    reconcile_jobs(runtime)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 75, 0, 0)


def test_a_stalled_jobs_redrive_whose_settle_met_a_dead_folder_is_completed_by_the_reconciler(
        aws, stack, spec):
    clock, table = Clock(), stack.settings.ledger_table_name
    summaries = Published(aws, stack)
    start(aws, stack, total=2, rows=50, clock=clock)
    runtime = runtime_for(aws, stack, spec, clock, stall_after_s=600)
    ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock)
    reconcile_jobs(runtime)  # folds the report (progress)
    clock.now += 601
    reconcile_jobs(runtime)
    assert [s["STATUS"] for s in summaries.read()] == [ledger.STALLED]
    assert list(ledger.active_jobs(aws.dynamodb, table)) == []
    assert ledger.folding._acquire(aws.dynamodb, table, JOB, "killed", clock() + 60,
                                   clock()) is not None
    for item in ledger.record_batch(aws.dynamodb, table, "redrive", {JOB: {"1": C}}, clock=clock):
        settle_job(runtime, item)  # the lease is held: nothing settles it now
    assert ledger.get_job(aws.dynamodb, table, JOB)["status"] == ledger.STALLED
    clock.now += 60 + ledger.HOLE_MARGIN_S + 1
    reconcile_jobs(runtime)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)
    assert [s["STATUS"] for s in summaries.read()] == [ledger.STALLED, ledger.COMPLETE]


def test_a_stalled_summary_published_after_the_job_completed_does_not_mark_the_complete_one(
        aws, stack):
    clock, table = Clock(), stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25, clock=clock)
    ledger.record_batch(aws.dynamodb, table, "w0", {JOB: {"0": C}}, clock=clock)
    done = ledger.settle(aws.dynamodb, table, JOB, owner="w", lease_s=30, **timed(clock))
    assert done.status == ledger.COMPLETE
    # A reconciler that stalled the job earlier publishes its STALLED summary only now.
    ledger.mark_published(aws.dynamodb, table, JOB, status=ledger.STALLED, clock=clock)
    assert "summary_published" not in ledger.get_job(aws.dynamodb, table, JOB)
    ledger.mark_published(aws.dynamodb, table, JOB, status=ledger.COMPLETE, clock=clock)
    assert "summary_published" in ledger.get_job(aws.dynamodb, table, JOB)
