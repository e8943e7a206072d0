"""The jobs index behind `fanout jobs`: one entry per job, written by the transaction that
starts it (a lost reply or a later start adds none), listed newest first in pages whose
reads are about the number of jobs listed, however many jobs the ledger holds."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from fanout import ledger
from fanout.ledger import MessageCounts
from tests.integration.test_ledger import Clock
from tests.integration.test_ledger_faults import AwsIdempotentTransactions, LosesReply
from tests.strict_aws import StrictLayer


class Reads:
    """Counts the ledger reads of the calls made through it: calls, and items read (a
    Query's items, the keys a BatchGetItem asks for, a GetItem's one)."""

    def __init__(self, ddb: Any) -> None:
        self.ddb, self.calls, self.items = ddb, Counter[str](), Counter[str]()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.ddb, name)
        if name not in ("query", "batch_get_item", "get_item", "scan"):
            return call

        def counted(**params: Any) -> Any:
            self.calls[name] += 1
            out = call(**params)
            if name == "query":
                self.items[name] += len(out.get("Items", []))
            elif name == "batch_get_item":
                self.items[name] += sum(len(r["Keys"]) for r in params["RequestItems"].values())
            else:
                self.items[name] += 1
            return out
        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.items.clear()


def index_entries(ddb: Any, table: str) -> list[dict[str, Any]]:
    return ddb.query(TableName=table, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": "#jobs"}})["Items"]


def make_jobs(aws: Any, table: str, count: int, clock: Clock, *, prefix: str = "s3://b/uploads/",
              running_every: int = 0, name: str = "job") -> list[str]:
    """`count` jobs started a minute apart: failed ones (ended, counts on the job item) and,
    every `running_every`, one that is running with a report folded."""
    ids = []
    for i in range(count):
        job = f"{name}-{i:06d}"
        ledger.start_job(aws.dynamodb, table, job, source_uri=f"{prefix}{i}.csv", table="t",
                         owner="s", clock=clock)
        if running_every and (i + 10) % running_every == 0:
            ledger.finish_split(aws.dynamodb, table, job, rows_read=50, messages_total=2,
                                header=["h"], error_location="s3://b/errors/", clock=clock)
            ledger.record_batch(aws.dynamodb, table, f"w{i}", {job: {"0": MessageCounts(25)}},
                                clock=clock)
            ledger.fold(aws.dynamodb, table, job, owner="f", clock=clock)
        else:
            ledger.fail_job(aws.dynamodb, table, job, error=f"{prefix}{i}.csv: line 3: bad", clock=clock)
        ids.append(job)
        clock.now += 60
    return ids


def test_a_page_reads_about_as_many_items_as_it_lists_however_many_jobs_there_are(aws, stack):
    table = stack.settings.ledger_table_name
    strict = StrictLayer()
    strict.faults.unprocessed_keys_rate = 0.0  # count reads, not retries
    reads = Reads(strict.wrap(aws).dynamodb)
    clock = Clock()
    ids = make_jobs(aws, table, 200, clock, running_every=50)
    # The newest 20 of 200 jobs: one Query of 20 index items, one BatchGetItem of their 20
    # job items, and one more of the fold items of the 1 job among them still running
    page = ledger.list_jobs(reads, table, limit=20)
    assert [j["pk"] for j in page.jobs] == ids[::-1][:20]
    assert (dict(reads.calls), dict(reads.items)) == (
        {"query": 1, "batch_get_item": 2}, {"query": 20, "batch_get_item": 21})
    running = next(j for j in page.jobs if j["status"] == ledger.RUNNING)
    assert (running["rows_written"], running["messages_counted"]) == (25, 1)
    # Every page after it costs the same, and the pages cover every job once, newest first
    seen = [j["pk"] for j in page.jobs]
    token = page.next_token
    while token:
        reads.reset()
        page = ledger.list_jobs(reads, table, limit=50, after=token)
        assert reads.calls["query"] == 1 and reads.items["query"] == len(page.jobs) <= 50
        assert reads.items["batch_get_item"] <= 2 * len(page.jobs)
        seen += [j["pk"] for j in page.jobs]
        token = page.next_token
    assert seen == ids[::-1]
    assert strict.record.violations == []


def test_filters_read_the_index_not_the_table(aws, stack):
    table = stack.settings.ledger_table_name
    clock = Clock()
    make_jobs(aws, table, 30, clock, prefix="s3://b/uploads/a/")
    recent = make_jobs(aws, table, 10, clock, prefix="s3://b/uploads/b/", name="recent")
    reads = Reads(aws.dynamodb)
    # --since: a key condition (the index sorts by start time): only those jobs are read
    since = ledger.now_iso(lambda: clock.now - 10 * 60 - 1)
    page = ledger.list_jobs(reads, table, limit=50, since=since)
    assert [j["pk"] for j in page.jobs] == recent[::-1] and page.next_token is None
    assert reads.items["query"] == 10 and reads.calls["scan"] == 0
    # --source: the index item carries the source
    page = ledger.list_jobs(aws.dynamodb, table, limit=50, source_prefix="s3://b/uploads/b/")
    assert [j["pk"] for j in page.jobs] == recent[::-1]
    # --status: read from the job items, pages until the page is full
    assert ledger.list_jobs(aws.dynamodb, table, limit=5, statuses=[ledger.RUNNING]).jobs == []
    failed = ledger.list_jobs(aws.dynamodb, table, limit=5, statuses=[ledger.FAILED])
    assert len(failed.jobs) == 5 and failed.next_token is not None


def test_a_start_writes_one_index_entry_whatever_is_retried(aws, stack):
    table = stack.settings.ledger_table_name
    clock = Clock()
    # A start whose reply was lost: botocore's retry (the same token) applies nothing more
    lossy = LosesReply(AwsIdempotentTransactions(aws.dynamodb), "transact_write_items",
                       lambda params: "#jobs" in str(params))
    assert ledger.start_job(lossy, table, "job-1", source_uri="s3://b/k", table="t", owner="a",
                            clock=clock)[0] == "new"
    assert lossy.lost == 1
    # A duplicate event later (a new token, another time): the job item's condition fails
    # the whole transaction, so it adds no second entry
    clock.now += 3600
    assert ledger.start_job(aws.dynamodb, table, "job-1", source_uri="s3://b/k", table="t",
                            owner="b", clock=clock)[0] in ("resume", "skip")
    (entry,) = index_entries(aws.dynamodb, table)
    job = ledger.get_job(aws.dynamodb, table, "job-1")
    assert entry["sk"]["S"] == f"{job['started_at']}#job-1" and entry["job"]["S"] == "job-1"
    # And the transaction is all or nothing: a start that fails leaves no entry either
    class Fails:
        def __getattr__(self, name: str) -> Any:
            return getattr(aws.dynamodb, name)

        def transact_write_items(self, **params: Any) -> Any:
            raise aws.dynamodb.exceptions.InternalServerError(
                {"Error": {"Code": "InternalServerError", "Message": "injected"}}, "TransactWriteItems")
    with contextlib.suppress(aws.dynamodb.exceptions.InternalServerError):
        ledger.start_job(Fails(), table, "job-2", source_uri="s3://b/k2", table="t", owner="a", clock=clock)
    assert [e["job"]["S"] for e in index_entries(aws.dynamodb, table)] == ["job-1"]
