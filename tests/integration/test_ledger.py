"""The jobs ledger: exact counts under duplicates, completion exactly once, replays, a
job spanning many shards, folds that die half way, and jobs of the previous format."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from fanout import ledger
from fanout.ledger import MessageCounts
from fanout.runtime import Runtime, settle_job
from fanout.settings import timing_error

JOB = "job-1"


def start(aws, stack, job=JOB, total=3, rows=75):
    table = stack.settings.ledger_table_name
    assert ledger.start_job(aws.dynamodb, table, job, source_uri="s3://b/k", table="t",
                            owner="a")[0] == "new"
    return ledger.finish_split(aws.dynamodb, table, job, rows_read=rows, messages_total=total,
                               header=["h"], error_location="s3://b/errors/job-1/")


def settle(aws, stack, job=JOB, **kwargs):
    return ledger.settle(aws.dynamodb, stack.settings.ledger_table_name, job, owner="t", **kwargs)


def record(aws, stack, request_id, messages, job=JOB):
    return ledger.record_batch(aws.dynamodb, stack.settings.ledger_table_name, request_id,
                               {job: messages})


def counts_of(aws, stack, job=JOB):
    j = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, job)
    return j["status"], j["rows_written"], j["rows_rejected"], j["rows_superseded"]


def completes(operation: str, params: dict[str, Any]) -> bool:
    """Whether a call is the completion transaction (the one that marks the tally)."""
    return operation == "transact_write_items" and any(
        "completed_at" in item.get("Update", {}).get("UpdateExpression", "")
        for item in params["TransactItems"])


class Calls:
    """A DynamoDB proxy recording each call's operation and parameters."""

    def __init__(self, ddb: Any) -> None:
        self.ddb, self.calls = ddb, []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.ddb, name)
        if not callable(target) or name == "get_paginator":
            return target

        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            return target(**params)
        return call


def test_completion_is_detected_once_and_duplicates_do_not_count_twice(aws, stack):
    start(aws, stack)
    c = MessageCounts(25, 0, 0)
    (tally,) = record(aws, stack, "r1", {"0": c, "1": c})
    assert not ledger.should_settle(tally)
    # A duplicate delivery of message 1 pushes the reported count to the total...
    (tally,) = record(aws, stack, "r2", {"1": c})
    assert ledger.should_settle(tally)
    # ...but the fold counts 2 distinct messages of 3, so the job is not complete.
    assert settle(aws, stack) is None
    assert counts_of(aws, stack) == (ledger.RUNNING, 50, 0, 0)
    record(aws, stack, "r3", {"2": MessageCounts(20, 4, 1)})
    done = settle(aws, stack)
    assert done.status == ledger.COMPLETE
    assert done.summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == 70
    assert done.summary["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"] == 4
    # A second settler gets a summary only while none is recorded as published.
    ledger.mark_published(aws.dynamodb, stack.settings.ledger_table_name, JOB)
    assert settle(aws, stack).summary is None
    job = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)
    assert (job["rows_read"], job["rows_written"], job["rows_rejected"], job["rows_superseded"],
            job["messages_counted"], job["messages_reported"]) == (75, 70, 4, 1, 3, 4)


def test_completion_is_attempted_only_when_every_message_is_counted(aws, stack):
    """Duplicates inflate messages_reported, not the fold's distinct count: no status
    flip is tried until the distinct count reaches messages_total."""
    calls = Calls(aws.dynamodb)
    table = stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50)
    c = MessageCounts(25, 0, 0)
    for request in ("r1", "r2", "r3"):  # message 0 three times
        ledger.record_batch(aws.dynamodb, table, request, {JOB: {"0": c}})
        ledger.settle(calls, table, JOB, owner="t")
    def flips():
        return [p for op, p in calls.calls if completes(op, p) or (
            op == "update_item" and p["Key"]["sk"]["S"] == ledger.JOB_SK)]
    assert flips() == []
    ledger.record_batch(aws.dynamodb, table, "r4", {JOB: {"1": c}})
    assert ledger.settle(calls, table, JOB, owner="t").status == ledger.COMPLETE
    assert len(flips()) == 1
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)


def test_a_job_over_many_shards_counts_exactly_in_bounded_steps(aws, stack, monkeypatch):
    """Three parallel ranges (seq namespaces 0, 1e9, 2e9), each over two shards, parts of
    a split message, 10% duplicates, folded in steps of about 30 entries read 2 records a
    page: exact, and no step reads more of the log than its step allows."""
    monkeypatch.setattr(ledger.layout, "FOLD_MESSAGES", 30)
    monkeypatch.setattr(ledger.layout, "LOG_PAGE", 2)
    spans = []
    real_read = ledger.folding._read_log

    def read_log(ddb, table_name, job, low, high):
        records, last = real_read(ddb, table_name, job, low, high)
        spans.append(len(records))
        return records, last

    monkeypatch.setattr(ledger.folding, "_read_log", read_log)
    ids = [str(r * 1_000_000_000 + n) for r in range(3) for n in range(0, 6000, 97)]
    ids += ["12.0", "12.1"]  # message 12 had to be split in two parts
    start(aws, stack, total=len(ids), rows=len(ids) * 25)
    calls = Calls(aws.dynamodb)
    table = stack.settings.ledger_table_name
    batches = [ids[i:i + 10] for i in range(0, len(ids), 10)]
    batches += [ids[i:i + 10] for i in range(0, len(ids), 100)]  # duplicate deliveries
    for n, batch in enumerate(batches):
        ledger.record_batch(aws.dynamodb, table, f"r{n}", {JOB: {m: MessageCounts(24, 1, 0)
                                                                 for m in batch}})
    shards = {ledger.shard_of(m) for m in ids}
    assert len(shards) >= 6
    done = ledger.settle(calls, table, JOB, owner="t", budget_s=60)
    assert done.status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 24 * len(ids), len(ids), 0)
    assert sum(spans) == len(batches) and max(spans) == 4 and len(spans) == 6
    fold = ledger.layout._get(aws.dynamodb, table, JOB, ledger.FOLD_SK)
    assert int(fold["cursor"]["N"]) == len(batches)
    assert not fold["dirty"]["BOOL"] and "lease_owner" not in fold
    shard_puts = [p for op, p in calls.calls if op == "put_item"
                  and p["Item"]["sk"]["S"].startswith(ledger.SHARD_PREFIX)]
    assert {int(p["Item"]["sk"]["S"][len(ledger.SHARD_PREFIX):]) for p in shard_puts} == shards


def test_a_replay_after_completion_recounts_only_its_shard(aws, stack, spec):
    runtime = Runtime(stack.settings, spec, aws)
    ids = [str(n) for n in range(0, 3 * ledger.layout.SHARD_SEQS, 250)]
    start(aws, stack, total=len(ids), rows=len(ids) * 25)
    for n in range(0, len(ids), 10):
        for item in record(aws, stack, f"r{n}", {m: MessageCounts(20, 5, 0) for m in ids[n:n + 10]}):
            settle_job(runtime, item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 20 * len(ids), 5 * len(ids), 0)
    calls = Calls(aws.dynamodb)
    counted = replace(aws, dynamodb=calls)
    replayed = Runtime(stack.settings, spec, counted)
    # The operator fixes 4 of message 250's 5 rejected rows and redrives them (one is still
    # bad); the fix is delivered twice.
    for request in ("x1", "x2"):
        for item in ledger.record_batch(calls, stack.settings.ledger_table_name, request,
                                        {JOB: {"250~abc": MessageCounts(3, 1, 1)}}):
            settle_job(replayed, item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 20 * len(ids) + 3, 5 * len(ids) - 4, 1)
    shard_reads = [key["sk"]["S"] for op, p in calls.calls if op == "batch_get_item"
                   for key in p["RequestItems"][stack.settings.ledger_table_name]["Keys"]]
    assert set(shard_reads) == {ledger.layout._shard_sk(0)}
    # The tally says the job is complete: no settle attempts the completion again.
    assert not [op for op, p in calls.calls if completes(op, p)]
    # The only queries read the two new log records: nothing else of the job is read.
    log_reads = [p["ExpressionAttributeValues"][":low"]["S"] for op, p in calls.calls
                 if op == "query"]
    completed_at = -(-len(ids) // 10)  # the tickets of the original messages
    assert sorted(set(log_reads)) == [ledger.layout._log_sk(completed_at + 1), ledger.layout._log_sk(completed_at + 2)]


class Clock:
    """A wall clock the test moves; `sleep` moves it too, so nothing really waits."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# How long after its ticket a hole's writer may still write its record (tests' default).
LIFETIME_S = ledger.WRITER_TIMEOUT_S + ledger.HOLE_MARGIN_S


def timed(clock: Clock, **kwargs: Any) -> dict[str, Any]:
    return {"clock": clock, "sleep": clock.sleep, **kwargs}


def test_a_slow_writer_is_not_voided_and_the_fold_that_met_its_hole_returns_promptly(aws, stack):
    """Ticket 2's writer takes 30 s between its ticket and its record (a throttled table,
    retries, a pause): the folder that meets the hole stops there at once and voids
    nothing; the record is folded when it comes, and the writer's batch does not fail."""
    table, clock = stack.settings.ledger_table_name, Clock()
    start(aws, stack, total=3, rows=75)
    ledger.record_batch(aws.dynamodb, table, "r1", {JOB: {"0": MessageCounts(25, 0, 0)}},
                        clock=clock)  # ticket 1
    met = {}

    class Slow(Calls):
        def put_item(self, **params):
            if params["Item"]["sk"]["S"] == ledger.layout._log_sk(2):
                clock.now += 30.0
                # Ticket 3's writer reports the job's last message and settles.
                last, = ledger.record_batch(aws.dynamodb, table, "r3",
                                            {JOB: {"2": MessageCounts(25, 0, 0)}}, clock=clock)
                assert ledger.should_settle(last)
                before = clock.now
                met["settled"] = settle(aws, stack, **timed(clock))
                met["spent_s"] = clock.now - before
                met["cursor"] = int(ledger.layout._get(aws.dynamodb, table, JOB, ledger.FOLD_SK)["cursor"]["N"])
                met["hole"] = ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(2))
            return self.ddb.put_item(**params)

    tally, = ledger.record_batch(Slow(aws.dynamodb), table, "slow",
                                 {JOB: {"1": MessageCounts(25, 0, 0)}}, clock=clock)
    assert met["settled"] is None  # stopped at the hole: not complete yet
    assert met["spent_s"] <= ledger.HOLE_WAIT_S + ledger.HOLE_POLL_S  # no waiting it out
    assert met["cursor"] == 1 and met["hole"] == {}  # folded up to it; not voided
    # The record came late, so its writer folds (its report alone would not: 2 of 3
    # messages when it took its ticket): the job completes, every row counted once.
    assert ledger.should_settle(tally)
    assert settle(aws, stack, **timed(clock)).status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 75, 0, 0)
    assert "void" not in ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(2))


def dead_writer(aws, stack, clock: Clock, message: str) -> None:
    """A writer takes its ticket and dies before its record (not an AWS error)."""
    class Dies(Calls):
        def put_item(self, **params):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        ledger.record_batch(Dies(aws.dynamodb), stack.settings.ledger_table_name, "dead",
                            {JOB: {message: MessageCounts(25, 0, 0)}}, clock=clock)


def test_a_dead_writers_hole_is_voided_only_after_the_writer_timeout(aws, stack):
    table, clock = stack.settings.ledger_table_name, Clock()
    start(aws, stack, total=3, rows=75)
    ledger.record_batch(aws.dynamodb, table, "r1", {JOB: {"0": MessageCounts(25, 0, 0)}},
                        clock=clock)  # ticket 1
    dead_writer(aws, stack, clock, "1")  # ticket 2, never written
    clock.now += 5.0
    ledger.record_batch(aws.dynamodb, table, "r3", {JOB: {"2": MessageCounts(25, 0, 0)}},
                        clock=clock)  # ticket 3
    clock.now += LIFETIME_S - 5.0 - 1.0  # ticket 2's writer could still be alive
    assert settle(aws, stack, **timed(clock)) is None
    assert ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(2)) == {}
    assert counts_of(aws, stack) == (ledger.RUNNING, 25, 0, 0)  # ticket 3 waits behind it
    clock.now += 2.0  # now it cannot be
    assert settle(aws, stack, **timed(clock)) is None  # message 1 is still not counted
    assert ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(2))["void"]["BOOL"]
    assert counts_of(aws, stack) == (ledger.RUNNING, 50, 0, 0)
    ledger.record_batch(aws.dynamodb, table, "again", {JOB: {"1": MessageCounts(25, 0, 0)}},
                        clock=clock)  # SQS delivers the dead writer's batch again
    assert settle(aws, stack, **timed(clock)).status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 75, 0, 0)


@pytest.mark.parametrize("dead", [1, 2], ids=["one-dead-writer", "two-in-a-row"])
def test_the_job_completes_on_the_redelivery_of_a_dead_writers_batch(aws, stack, spec, dead):
    """The end of a job: every message was reported, but the last writer(s) died between
    ticket and record, and nothing else is delivered. SQS delivers their batches again
    after the visibility timeout; those settles find the holes old enough, void them and
    complete the job, with no other trigger."""
    clock = Clock()
    runtime = Runtime(stack.settings, spec, aws, clock=clock)
    visibility_s = stack.config.visibility_timeout_s  # the shortest the timing rule allows
    assert timing_error(stack.settings.writer_timeout_s, visibility_s) is None
    total = 2 + dead
    start(aws, stack, total=total, rows=25 * total)
    for m in ("0", "1"):
        for item in ledger.record_batch(aws.dynamodb, stack.settings.ledger_table_name, m,
                                        {JOB: {m: MessageCounts(25, 0, 0)}}, clock=clock):
            settle_job(runtime, item)
    for m in range(2, total):
        dead_writer(aws, stack, clock, str(m))
    assert ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)["status"] == \
        ledger.RUNNING
    clock.now += visibility_s
    calls = Calls(aws.dynamodb)
    redelivered = Runtime(stack.settings, spec, replace(aws, dynamodb=calls), clock=clock)
    for m in range(2, total):
        for item in ledger.record_batch(calls, stack.settings.ledger_table_name, f"again{m}",
                                        {JOB: {str(m): MessageCounts(25, 0, 0)}}, clock=clock):
            settle_job(redelivered, item)
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25 * total, 0, 0)
    assert sum(completes(op, p) for op, p in calls.calls) == 1


def test_a_record_that_lands_while_the_stalled_folder_holds_the_lease_is_folded(aws, stack):
    """The folder stops at ticket 1's hole; before it releases the lease, the record lands
    and its writer's settle finds the lease taken. The folder looks at the hole once
    more after releasing, so the job completes without another trigger."""
    table, clock = stack.settings.ledger_table_name, Clock()
    start(aws, stack, total=2, rows=50)
    dead_writer(aws, stack, clock, "1")  # ticket 1: its record is not there yet
    ledger.record_batch(aws.dynamodb, table, "r2", {JOB: {"0": MessageCounts(25, 0, 0)}},
                        clock=clock)  # ticket 2
    landed = []

    class Releasing(Calls):
        def update_item(self, **params):
            if "REMOVE lease_owner" in params["UpdateExpression"] and not landed:
                landed.append(True)
                aws.dynamodb.put_item(TableName=table, Item={
                    "pk": {"S": JOB}, "sk": {"S": ledger.layout._log_sk(1)},
                    "m": {"S": "1:25:0:0"}, "r": {"S": "slow"}})
                assert settle(aws, stack, **timed(clock)) is None  # the lease is taken
            return self.ddb.update_item(**params)

    done = ledger.settle(Releasing(aws.dynamodb), table, JOB, owner="f1", **timed(clock))
    assert landed and done.status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 50, 0, 0)


def test_a_writer_whose_record_put_fails_voids_its_own_ticket(aws, stack):
    """An AWS error on the record put fails the batch; the writer voids its ticket first,
    so the redelivered batch's settle completes the job without waiting for the hole."""
    from botocore.exceptions import ClientError

    table, clock = stack.settings.ledger_table_name, Clock()
    start(aws, stack, total=1, rows=25)

    class Throttled(Calls):
        def put_item(self, **params):
            if "m" in params["Item"]:
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}},
                                  "PutItem")
            return self.ddb.put_item(**params)

    with pytest.raises(ClientError):
        ledger.record_batch(Throttled(aws.dynamodb), table, "r1",
                            {JOB: {"0": MessageCounts(25, 0, 0)}}, clock=clock)
    assert ledger.layout._get(aws.dynamodb, table, JOB, ledger.layout._log_sk(1))["void"]["BOOL"]
    ledger.record_batch(aws.dynamodb, table, "again", {JOB: {"0": MessageCounts(25, 0, 0)}},
                        clock=clock)
    assert settle(aws, stack, **timed(clock)).status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25, 0, 0)


def test_a_fold_that_died_half_way_is_redone_exactly(aws, stack):
    """The folder dies after writing one of two shards: the next folder finds the lease
    dirty, sums the shards again, and skips what the dead one applied."""
    table = stack.settings.ledger_table_name
    ids = ["1", str(ledger.layout.SHARD_SEQS + 1), "2"]
    start(aws, stack, total=3, rows=75)
    record(aws, stack, "r1", {m: MessageCounts(25, 0, 0) for m in ids[:2]})

    class DiesOnSecondShard(Calls):
        def put_item(self, **params):
            if params["Item"]["sk"]["S"].startswith(ledger.SHARD_PREFIX):
                self.calls.append(("put_item", params))
                if sum(op == "put_item" for op, _ in self.calls) == 2:
                    raise RuntimeError("killed")
            return self.ddb.put_item(**params)

    with pytest.raises(RuntimeError, match="killed"):
        ledger.settle(DiesOnSecondShard(aws.dynamodb), table, JOB, owner="dead")
    fold = ledger.layout._get(aws.dynamodb, table, JOB, ledger.FOLD_SK)
    assert fold["dirty"]["BOOL"] and "lease_owner" not in fold  # released, marked dirty
    record(aws, stack, "r2", {"2": MessageCounts(20, 5, 0), "1": MessageCounts(25, 0, 0)})
    assert settle(aws, stack).status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 70, 5, 0)


def test_a_replay_recorded_while_folding_is_not_left_out(aws, stack, monkeypatch):
    table = stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    record(aws, stack, "r0", {"0": MessageCounts(20, 5, 0)})
    real = ledger.folding._read_log
    calls = {"n": 0}

    def racing_read(ddb, table_name, job, low, high):
        records = real(ddb, table_name, job, low, high)  # (records, last ticket)
        calls["n"] += 1
        if calls["n"] == 1:  # another writer records a replay right after this read
            ledger.record_batch(ddb, table_name, "r1", {JOB: {"0~fix": MessageCounts(2, 0, 0)}})
        return records

    monkeypatch.setattr(ledger.folding, "_read_log", racing_read)
    done = settle(aws, stack)
    assert done.status == ledger.COMPLETE
    # The folder looked at the tally again before it let go, and folded the replay too.
    assert counts_of(aws, stack) == (ledger.COMPLETE, 22, 3, 0)
    assert ledger.get_job(aws.dynamodb, table, JOB)["counted_through"] == 2


def test_a_retried_splitter_finishes_a_job_whose_finalizer_died(aws, stack, spec):
    from splitter import split

    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/a.csv",
                      Body=b"account,offer_id\n1,1\n2,2\n")
    runtime = Runtime(stack.settings, spec, aws)
    table = stack.settings.ledger_table_name
    first = split.split_object(runtime, stack.settings.bucket, "uploads/a.csv")
    # The writers report the one message, but the writer died before settling: RUNNING.
    ledger.record_batch(aws.dynamodb, table, "w1", {first.job: {"0": MessageCounts(2, 0, 0)}})
    assert ledger.get_job(aws.dynamodb, table, first.job)["status"] == ledger.RUNNING
    # A retry (or a duplicate S3 event) is skipped, but finishes the job.
    again = split.split_object(runtime, stack.settings.bucket, "uploads/a.csv")
    assert again.status == "skipped"
    assert ledger.get_job(aws.dynamodb, table, first.job)["status"] == ledger.COMPLETE


class FlakySNS:
    def __init__(self, sns) -> None:
        self.sns, self.calls = sns, 0

    def publish(self, **params):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("SNS unavailable")
        return self.sns.publish(**params)


def test_a_summary_whose_publish_failed_is_published_on_the_retry(aws, stack, spec):
    flaky = FlakySNS(aws.sns)
    runtime = Runtime(stack.settings, spec, replace(aws, sns=flaky))
    start(aws, stack, total=1, rows=25)
    (item,) = record(aws, stack, "r1", {"0": MessageCounts(25, 0, 0)})
    with pytest.raises(RuntimeError):  # the invocation fails, so SQS delivers the batch again
        settle_job(runtime, item)
    assert ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)["status"] == \
        ledger.COMPLETE
    (item,) = record(aws, stack, "r1", {"0": MessageCounts(25, 0, 0)})
    settle_job(runtime, item)
    assert flaky.calls == 2
    assert "summary_published" in ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)
    (item,) = record(aws, stack, "r2", {"0": MessageCounts(25, 0, 0)})
    settle_job(runtime, item)
    assert flaky.calls == 2  # published once it succeeded, not again
    assert counts_of(aws, stack) == (ledger.COMPLETE, 25, 0, 0)


def old_format_job(aws, stack, status):
    """A job as the previous ledger format left it in flight: no ledger_format, its
    counter on the job item, batch records under b#."""
    table = stack.settings.ledger_table_name
    aws.dynamodb.put_item(TableName=table, Item={
        "pk": {"S": "old-job"}, "sk": {"S": ledger.JOB_SK}, "status": {"S": status},
        "source": {"S": "s3://b/old.csv"}, "messages_reported": {"N": "1"},
        "split_owner": {"S": "x"}, "split_lease_until": {"N": "0"}})
    aws.dynamodb.put_item(TableName=table, Item={
        "pk": {"S": "old-job"}, "sk": {"S": "b#req-0"}, "m": {"S": "0:25:0:0"}})


def test_an_in_flight_job_of_the_previous_format_fails_clearly_with_its_id(aws, stack, spec):
    from fanout.aws import Clients

    published = []

    class SNS:
        def publish(self, **params):
            published.append(params)

    runtime = Runtime(stack.settings, spec, Clients(aws.s3, aws.sqs, aws.dynamodb, SNS()))
    table = stack.settings.ledger_table_name
    old_format_job(aws, stack, ledger.RUNNING)
    # A new writer reports a message of it: the job fails with its id and the reason.
    (item,) = ledger.record_batch(aws.dynamodb, table, "r1", {"old-job": {"1": MessageCounts(25, 0, 0)}})
    settle_job(runtime, item)
    job = ledger.get_job(aws.dynamodb, table, "old-job")
    assert job["status"] == ledger.FAILED
    assert "job old-job was started by an earlier fanout version" in job["error"]
    assert len(published) == 1 and "old-job" in published[0]["Message"]
    # Later reports of it change nothing and publish nothing more.
    (item,) = ledger.record_batch(aws.dynamodb, table, "r2", {"old-job": {"2": MessageCounts(25, 0, 0)}})
    settle_job(runtime, item)
    assert len(published) == 1
    assert ledger.get_job(aws.dynamodb, table, "old-job")["status"] == ledger.FAILED


def test_a_finished_job_of_the_previous_format_fails_on_its_next_event(aws, stack, spec):
    """Every message was reported under the previous format but it was never completed
    (its finalizer died): `fanout status` says why, and a duplicate S3 event (any settle)
    fails it clearly instead of leaving it RUNNING."""
    table = stack.settings.ledger_table_name
    old_format_job(aws, stack, ledger.RUNNING)
    status = ledger.get_job(aws.dynamodb, table, "old-job")
    assert status["status"] == ledger.RUNNING and "earlier fanout version" in status["error"]
    settle_job(Runtime(stack.settings, spec, aws), ledger.raw_job(aws.dynamodb, table, "old-job"))
    job = ledger.get_job(aws.dynamodb, table, "old-job")
    assert job["status"] == ledger.FAILED and "job old-job" in job["error"]


def test_a_split_of_the_previous_format_fails_clearly_when_it_finishes(aws, stack):
    table = stack.settings.ledger_table_name
    old_format_job(aws, stack, ledger.SPLITTING)
    item = ledger.finish_split(aws.dynamodb, table, "old-job", rows_read=25, messages_total=1,
                               header=["h"], error_location="s3://b/e/")
    assert item["status"]["S"] == ledger.FAILED
    assert "old-job" in item["error"]["S"] and "Upload the file again" in item["error"]["S"]


def test_a_crashed_splitter_releases_or_outlives_its_lease(aws, stack):
    table, clock = stack.settings.ledger_table_name, Clock()
    args = {"source_uri": "s3://b/k", "table": "t", "lease_s": 60, "clock": clock}

    def claim(owner: str) -> tuple[str, Any]:
        return ledger.start_job(aws.dynamodb, table, "j", owner=owner, **args)

    assert claim("a") == ("new", None)
    lease = int(ledger.raw_job(aws.dynamodb, table, "j")["split_lease_until"]["N"])
    assert lease == int(clock() + 60) + 1  # whole seconds, rounded up past the lease
    assert claim("b") == ("skip", None)  # a holds the lease
    ledger.release_split(aws.dynamodb, table, "j", "a")  # a failed and let the retry in
    status, item = claim("b")
    assert status == "resume" and (item["split_owner"], item["split_resumes"]) == ("b", 1)
    clock.sleep(61)  # b's lease holds through second int(now + 60) + 1
    assert claim("c") == ("skip", None)
    clock.sleep(1)  # b died: its lease has run out, and c takes the job over
    status, item = claim("c")
    assert status == "resume" and (item["split_owner"], item["split_resumes"]) == ("c", 2)
    assert item["split_lease_until"] == int(clock() + 60) + 1
    with pytest.raises(ledger.LeaseLost):  # b, alive after all, stops without writing more
        ledger.save_checkpoint(aws.dynamodb, table, "j", "b", "{}", clock=clock)
    assert ledger.raw_job(aws.dynamodb, table, "j")["started_at"]["S"] == "1970-01-12T13:46:40.000+00:00"


def test_message_counted_answers_from_one_shard(aws, stack):
    table = stack.settings.ledger_table_name
    start(aws, stack, total=4, rows=100)
    record(aws, stack, "r1", {"5": MessageCounts(25, 0, 0), "9.1": MessageCounts(25, 0, 0),
                              "5~fix": MessageCounts(1, 0, 0)})
    settle(aws, stack)
    assert [ledger.message_counted(aws.dynamodb, table, JOB, m)
            for m in ("5", "6", "9.1", "9.0", "5~fix", "5~other", str(ledger.layout.SHARD_SEQS + 5))] == [
        True, False, True, False, True, False, False]


def test_a_folders_late_shard_write_is_not_raced_by_a_takeover_inside_the_margin(aws, stack):
    """Folder A's lease runs out (Lambda ended it) while its shard write is still in
    flight, and lands 5 s later. A folder that comes in between must not take the lease
    over: it would sum the shards before the late write and save totals short of it for
    good. Past lease + HOLE_MARGIN_S the lease is free, and the counts are exact."""
    table, clock = stack.settings.ledger_table_name, Clock()
    start(aws, stack, total=2, rows=50)
    c = MessageCounts(25, 0, 0)
    ledger.record_batch(aws.dynamodb, table, "r1", {JOB: {"0": c}}, clock=clock)
    ledger.record_batch(aws.dynamodb, table, "r2", {JOB: {"1": c}}, clock=clock)
    seen: dict[str, Any] = {}

    class LateA(Calls):
        def put_item(self, **params):
            if params["Item"]["sk"]["S"].startswith(ledger.SHARD_PREFIX) and "b" not in seen:
                clock.now += ledger.FOLD_LEASE_S + 5  # A's lease is over; its write is not
                late = dict(params)

                class B(Calls):
                    def batch_get_item(self, **p):  # B, had it taken over, sums the shards
                        seen["landed"] = aws.dynamodb.put_item(**late)  # ... then A's lands
                        return self.ddb.batch_get_item(**p)

                seen["b"] = ledger.settle(B(aws.dynamodb), table, JOB, owner="B", **timed(clock))
                return seen.get("landed") or self.ddb.put_item(**late)
            return self.ddb.put_item(**params)

    ledger.settle(LateA(aws.dynamodb), table, JOB, owner="A", **timed(clock))
    assert seen["b"] is None and "landed" not in seen  # B left the lease alone
    clock.now += ledger.HOLE_MARGIN_S + 1
    ledger.settle(aws.dynamodb, table, JOB, owner="C", **timed(clock))
    assert counts_of(aws, stack) == ("COMPLETE", 50, 0, 0)


def test_a_shard_whose_rows_are_redriven_round_after_round_stays_small_and_exact(aws, stack):
    """Audit failure 7: every row of one shard's 4,096 messages is rejected, then redriven
    in 5 rounds under new replay ids (a new fix each round); each round lands a fifth of
    each message's rows (its own random fifth, so the landed bitmap does not compress
    away) and rejects the rest again, and a sixteenth of it is delivered twice. Counted by
    replay id, the shard kept every id: 20,480 ids of 23 characters passed DynamoDB's
    400 KB item limit, and every later fold of the job raised. Counted by row, the shard
    stays under 14 KB (its worst case, see tests/unit/test_replay_rows.py), and every
    round's counts are exact."""
    import random

    from fanout.mapping import item_size

    seqs = ledger.layout.SHARD_SEQS
    first = (2 * 10**9 // seqs + 1) * seqs  # one shard, in parallel range 2's namespace
    rows = 25 * seqs
    start(aws, stack, total=seqs, rows=rows)
    sent = [0]

    def send(entries: list[tuple[str, MessageCounts]]) -> None:
        for n in range(0, len(entries), 100):
            sent[0] += 1
            record(aws, stack, f"r{sent[0]}", dict(entries[n:n + 100]))

    send([(str(seq), MessageCounts(0, 25, 0)) for seq in range(first, first + seqs)])
    assert settle(aws, stack, budget_s=60).status == ledger.COMPLETE
    assert counts_of(aws, stack) == (ledger.COMPLETE, 0, rows, 0)
    rounds = {seq: random.Random(seq).sample(range(25), 25) for seq in range(first, first + seqs)}
    sizes = []
    for n in range(5):
        entries = []
        for seq, order in rounds.items():
            here, left = order[5 * n:5 * n + 5], 25 - 5 * n
            entries.append((f"{seq}~{n:02x}{seq:010x}", MessageCounts(
                5, left - 5, 0, masks=ledger.row_masks(written=here))))
        send(entries)
        send(entries[::16])  # delivered again
        settle(aws, stack, budget_s=60)
        landed = 5 * seqs * (n + 1)
        assert counts_of(aws, stack) == (ledger.COMPLETE, landed, rows - landed, 0)
        shard = ledger.layout._get(aws.dynamodb, stack.settings.ledger_table_name, JOB,
                                   ledger.layout._shard_sk(first // seqs))
        sizes.append(item_size(shard))
    assert max(sizes) < 14_000 and "replays" not in shard


def test_only_log_records_expire_thirty_days_after_their_writer_wrote_them(aws, stack):
    """The ledger table's TTL attribute is on log records alone: the job item, the tally,
    the fold and the shards (what a late duplicate or a redrive is checked against) carry
    none, so DynamoDB's TTL never takes a job's status, counts or dedupe memory."""
    table = stack.settings.ledger_table_name
    start(aws, stack, total=2, rows=50)
    now = float(int(time.time()))
    ledger.record_batch(aws.dynamodb, table, "w1", {JOB: {"0": MessageCounts(25, 0, 0)}},
                        clock=lambda: now)
    record(aws, stack, "w2", {"1": MessageCounts(25, 0, 0)})
    assert settle(aws, stack).status == ledger.COMPLETE
    items = aws.dynamodb.query(TableName=table, KeyConditionExpression="pk = :pk",
                               ExpressionAttributeValues={":pk": {"S": JOB}})["Items"]
    expiring = {i["sk"]["S"] for i in items if ledger.EXPIRES_AT in i}
    assert expiring == {"log#000000000001", "log#000000000002"}
    first = next(i for i in items if i["sk"]["S"] == "log#000000000001")
    assert int(first[ledger.EXPIRES_AT]["N"]) == int(now) + 30 * 86400 == int(now + ledger.LOG_EXPIRY_S)
    kinds = {i["sk"]["S"].split("#")[0] for i in items}
    assert {"job", "tally", "fold", "shard"} <= kinds
    # With the folded records gone (as TTL deletes them), the job reads the same, and a
    # late duplicate of a counted message still changes nothing.
    for sk in expiring:
        aws.dynamodb.delete_item(TableName=table, Key={"pk": {"S": JOB}, "sk": {"S": sk}})
    before = counts_of(aws, stack)
    record(aws, stack, "w3", {"0": MessageCounts(25, 0, 0)})
    settle(aws, stack)
    assert counts_of(aws, stack) == before == (ledger.COMPLETE, 50, 0, 0)
