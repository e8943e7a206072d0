"""The jobs ledger: exact counts under duplicates, completion exactly once, replays."""

from __future__ import annotations

from fanout import ledger
from fanout.ledger import MessageCounts


def start(aws, stack, job="job-1", total=3, rows=75):
    table = stack.settings.ledger_table_name
    assert ledger.start_job(aws.dynamodb, table, job, source_uri="s3://b/k", table="t",
                            owner="a")[0] == "new"
    return ledger.finish_split(aws.dynamodb, table, job, rows_read=rows, messages_total=total,
                               header=["h"], error_location="s3://b/errors/job-1/")


def test_completion_is_detected_once_and_duplicates_do_not_count_twice(aws, stack):
    table = stack.settings.ledger_table_name
    start(aws, stack)
    c = MessageCounts(25, 0, 0)
    (item,) = ledger.record_batch(aws.dynamodb, table, "r1", {"job-1": {"0": c, "1": c}})
    assert not ledger.may_be_complete(item)
    # A duplicate delivery of message 1 pushes the reported count to the total...
    ready = ledger.record_batch(aws.dynamodb, table, "r2", {"job-1": {"1": c}})
    assert ledger.may_be_complete(ready[0])
    # ...but the finalizer sees only 2 distinct messages of 3, so the job is not complete.
    assert ledger.try_finalize(aws.dynamodb, table, ready[0]) is None
    ready = ledger.record_batch(aws.dynamodb, table, "r3", {"job-1": {"2": MessageCounts(20, 4, 1)}})
    summary = ledger.try_finalize(aws.dynamodb, table, ready[0])
    assert summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == 70
    assert summary["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"] == 4
    assert summary["STATUS"] == ledger.COMPLETE
    # A second finalizer (a racing writer) gets nothing: published exactly once.
    assert ledger.try_finalize(aws.dynamodb, table, ready[0]) is None
    job = ledger.get_job(aws.dynamodb, table, "job-1")
    assert (job["rows_read"], job["rows_written"], job["rows_rejected"], job["rows_superseded"]) == (
        75, 70, 4, 1)


def test_replayed_rows_move_from_rejected_to_written(aws, stack, spec):
    from fanout.runtime import Runtime, settle_job

    runtime = Runtime(stack.settings, spec, aws)
    table = stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    for batch, counts in (("r1", {"0": MessageCounts(20, 5, 0)}),
                          # The operator fixes 4 of the 5 rejected rows and redrives them
                          # (one is still bad); the fix is delivered twice.
                          ("r2", {"0~abc": MessageCounts(3, 1, 1)}),
                          ("r3", {"0~abc": MessageCounts(3, 1, 1)})):
        for item in ledger.record_batch(aws.dynamodb, table, batch, {"job-1": counts}):
            settle_job(runtime, item)
    job = ledger.get_job(aws.dynamodb, table, "job-1")
    assert (job["rows_written"], job["rows_rejected"], job["rows_superseded"]) == (23, 1, 1)
    assert job["rows_written"] + job["rows_rejected"] + job["rows_superseded"] == job["rows_read"]


def test_a_crashed_splitter_releases_or_outlives_its_lease(aws, stack):
    table = stack.settings.ledger_table_name
    args = {"source_uri": "s3://b/k", "table": "t"}
    assert ledger.start_job(aws.dynamodb, table, "j", owner="a", lease_s=60, **args)[0] == "new"
    assert ledger.start_job(aws.dynamodb, table, "j", owner="b", lease_s=60, **args)[0] == "skip"
    ledger.release_split(aws.dynamodb, table, "j", "a")
    assert ledger.start_job(aws.dynamodb, table, "j", owner="b", lease_s=60, **args)[0] == "resume"
    assert ledger.start_job(aws.dynamodb, table, "j", owner="c", lease_s=0, **args)[0] == "skip"


def test_a_replay_recorded_while_finalizing_is_not_left_out(aws, stack, monkeypatch):
    table = stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    ledger.record_batch(aws.dynamodb, table, "r0", {"job-1": {"0": MessageCounts(20, 5, 0)}})
    real = ledger.read_message_counts
    calls = {"n": 0}

    def racing_read(ddb, table_name, job):
        counts = real(ddb, table_name, job)
        calls["n"] += 1
        if calls["n"] == 1:  # another writer records a replay right after this read
            ledger.record_batch(ddb, table_name, "r1", {"job-1": {"0~fix": MessageCounts(2, 0, 0)}})
        return counts

    monkeypatch.setattr(ledger, "read_message_counts", racing_read)
    summary = ledger.try_finalize(aws.dynamodb, table, ledger.raw_job(aws.dynamodb, table, "job-1"))
    assert summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == 22
    assert summary["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"] == 3


def test_a_retried_splitter_finishes_a_job_whose_finalizer_died(aws, stack, spec):
    from fanout.runtime import Runtime
    from splitter import split

    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/a.csv",
                      Body=b"account,offer_id\n1,1\n2,2\n")
    runtime = Runtime(stack.settings, spec, aws)
    table = stack.settings.ledger_table_name
    first = split.split_object(runtime, stack.settings.bucket, "uploads/a.csv")
    # The writers report the one message, but the splitter died before finalizing: RUNNING.
    ledger.record_batch(aws.dynamodb, table, "w1", {first.job: {"0": MessageCounts(2, 0, 0)}})
    ledger_item = ledger.get_job(aws.dynamodb, table, first.job)
    assert ledger_item["status"] == ledger.RUNNING
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
    from dataclasses import replace

    import pytest

    from fanout.runtime import Runtime, settle_job

    flaky = FlakySNS(aws.sns)
    runtime = Runtime(stack.settings, spec, replace(aws, sns=flaky))
    table = stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    (item,) = ledger.record_batch(aws.dynamodb, table, "r1", {"job-1": {"0": MessageCounts(25, 0, 0)}})
    with pytest.raises(RuntimeError):  # the invocation fails, so SQS delivers the batch again
        settle_job(runtime, item)
    assert ledger.get_job(aws.dynamodb, table, "job-1")["status"] == ledger.COMPLETE
    (item,) = ledger.record_batch(aws.dynamodb, table, "r1", {"job-1": {"0": MessageCounts(25, 0, 0)}})
    settle_job(runtime, item)
    assert flaky.calls == 2
    assert "summary_published" in ledger.get_job(aws.dynamodb, table, "job-1")
    (item,) = ledger.record_batch(aws.dynamodb, table, "r2", {"job-1": {"0": MessageCounts(25, 0, 0)}})
    settle_job(runtime, item)
    assert flaky.calls == 2  # published once it succeeded, not again
