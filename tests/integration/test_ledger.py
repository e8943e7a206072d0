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
    assert ledger.record_batch(aws.dynamodb, table, "r1", {"job-1": {"0": c, "1": c}}) == []
    # A duplicate delivery of message 1 pushes the reported count to the total...
    ready = ledger.record_batch(aws.dynamodb, table, "r2", {"job-1": {"1": c}})
    assert len(ready) == 1
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


def test_replayed_rows_move_from_rejected_to_written(aws, stack):
    table = stack.settings.ledger_table_name
    start(aws, stack, total=1, rows=25)
    ready = ledger.record_batch(aws.dynamodb, table, "r1", {"job-1": {"0": MessageCounts(20, 5, 0)}})
    ledger.try_finalize(aws.dynamodb, table, ready[0])
    # The operator fixes 4 of the 5 rejected rows and redrives them; one is still bad.
    ledger.record_batch(aws.dynamodb, table, "r2", {"job-1": {"0~abc": MessageCounts(3, 1, 1)}})
    ledger.record_batch(aws.dynamodb, table, "r3", {"job-1": {"0~abc": MessageCounts(3, 1, 1)}})
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
