"""Chaos: every scenario loads the same poisoned CSV through the whole pipeline (the real
handlers on moto, with tests/strict_aws.py holding the AWS contract) while something
goes wrong, and must end exactly as a clean run would: the clean table, exact counts
(rows_read == written + rejected + superseded, with the expected numbers) and every
rejected row with its line and reason.

A replayer killed mid-redrive is covered in tests/integration/test_replayer_crash.py.
The last three scenarios shrink the ledger's shards to 8 sequence numbers, so the job
spans five shards and is folded in several steps while it loads.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fanout import ledger
from fanout.aws import Clients
from fanout.runtime import Runtime
from fanout.settings import LOCAL_CONFIG
from fanout_cli.local.esm import LocalContext
from tests.chaos.helpers import Counter, Expected, Hooked, Killed, assert_exact, poisoned_csv, run
from tests.strict_aws import Faults, StrictLayer

UPLOAD_PREFIX = "uploads/"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    return poisoned_csv(tmp_path_factory.mktemp("chaos-data"))


def test_throttling_storm_half_the_writes_unprocessed(data: Expected, tmp_path: Path) -> None:
    """Half of every BatchWriteItem comes back in UnprocessedItems. With the writer's real
    backoff a 25-item group needs ~6 rounds (~1.6 s of sleep), and a writer works through
    its batch's messages one after another, so the ESM hands out one message a batch to 16
    writers here to keep the test short; the backoff itself is not changed."""
    layer = StrictLayer(Faults(unprocessed_rate=0.5, seed=1))
    result = run(data, tmp_path / "out", layer.wrap, concurrency=16,
                 config=replace(LOCAL_CONFIG, batch_size=1))
    assert layer.record.injected["unprocessed"] > data.read / 2
    assert layer.record.violations == []
    assert_exact(result, data)


def test_server_errors_and_throttle_exceptions(data: Expected, tmp_path: Path) -> None:
    layer = StrictLayer(Faults(server_error_rate=0.1, throttle_rate=0.1, seed=2))
    result = run(data, tmp_path / "out", layer.wrap)
    assert layer.record.injected["server_error"] > 0 and layer.record.injected["throttle"] > 0
    assert layer.record.violations == []
    assert_exact(result, data)


def test_send_message_batch_failed_entries_are_resent(data: Expected, tmp_path: Path) -> None:
    layer = StrictLayer(Faults(send_failed_rate=0.2, seed=3))
    result = run(data, tmp_path / "out", layer.wrap)
    assert layer.record.injected["send_failed"] > 0
    assert result.summary["messages_sent"] == (data.read + 24) // 25
    assert_exact(result, data)


def test_duplicate_sqs_deliveries(data: Expected, tmp_path: Path) -> None:
    # Duplicates every queue's deliveries, the S3 events queue's included.
    layer = StrictLayer(Faults(duplicate_delivery_rate=0.2, seed=4))
    result = run(data, tmp_path / "out", layer.wrap)
    assert layer.record.injected["duplicate_delivery"] > 5
    assert_exact(result, data)


def test_duplicate_s3_events_split_the_job_once(data: Expected, tmp_path: Path) -> None:
    """The same S3 notification three times: once more on the events queue (handled after
    the first split finished) and once handed straight to the splitter's lambda_handler
    while the first split holds the lease (mid-file). The job is split once."""
    from splitter import handler as splitter_handler

    layer = StrictLayer()
    events: list[dict[str, Any]] = []
    concurrent: list[dict[str, Any]] = []
    starts, finishes, reads = Counter(), Counter(), Counter()

    def receive_message(sqs: Any, **params: Any) -> Any:
        response = sqs.receive_message(**params)
        if params["QueueUrl"].endswith("-s3-events"):
            for message in response.get("Messages", []):
                if "Records" in json.loads(message["Body"]) and not events:
                    events.append(json.loads(message["Body"]))
                    sqs.send_message(QueueUrl=params["QueueUrl"], MessageBody=message["Body"])
        return response

    def get_object(s3: Any, **params: Any) -> Any:
        if params["Key"].startswith(UPLOAD_PREFIX) and reads.next() == 3:
            # A second invocation for the same event, while this one is mid-file.
            def invoke() -> None:
                concurrent.append(splitter_handler.lambda_handler(
                    events[0], LocalContext("fanout-splitter", 900)))
            thread = threading.Thread(target=invoke)
            thread.start()
            thread.join(timeout=30)
        return s3.get_object(**params)

    def transact_write_items(ddb: Any, **params: Any) -> Any:
        # The job's start and the split's end are transactions (see fanout/ledger/split.py).
        writes = [w for item in params["TransactItems"] for w in item.values()]
        if any(w.get("ConditionExpression") == "attribute_not_exists(pk)" for w in writes):
            starts.next()
        response = ddb.transact_write_items(**params)
        if any("messages_total = :m" in w.get("UpdateExpression", "") for w in writes):
            finishes.next()
        return response

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, s3=Hooked(strict.s3, get_object=get_object),
                       sqs=Hooked(strict.sqs, receive_message=receive_message),
                       dynamodb=Hooked(strict.dynamodb, transact_write_items=transact_write_items))

    result = run(data, tmp_path / "out", wrap, range_bytes=4096)
    assert [job["status"] for c in concurrent for job in c["jobs"]] == ["skipped"]
    assert starts.n == 3  # the first event, the concurrent one, the queued copy
    assert finishes.n == 1  # split once
    assert result.summary["messages_sent"] == (data.read + 24) // 25
    assert_exact(result, data)


def test_writer_killed_mid_batch_write(data: Expected, tmp_path: Path) -> None:
    """BatchWriteItem writes half its items and then the writer dies (not an AWS error):
    the message is retried after the visibility timeout and rewritten idempotently."""
    layer = StrictLayer()
    calls, kills = Counter(), Counter()

    def batch_write_item(ddb: Any, **params: Any) -> Any:
        if calls.next() in (3, 11, 17):
            kills.next()
            (table, requests), = params["RequestItems"].items()
            ddb.batch_write_item(RequestItems={table: requests[: len(requests) // 2]})
            raise Killed("killed")
        return ddb.batch_write_item(**params)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, dynamodb=Hooked(strict.dynamodb, batch_write_item=batch_write_item))

    result = run(data, tmp_path / "out", wrap)
    assert kills.n == 3
    assert layer.record.violations == []
    assert_exact(result, data)


def test_writer_killed_after_writing_before_the_ledger(data: Expected, tmp_path: Path) -> None:
    """The writer dies after its items are written, between its log ticket and its record:
    the whole batch fails, and SQS delivers all of it again after the visibility timeout
    (the clock skips the wait: see JumpingClock). By then its writer cannot be alive (the
    ledger's timing rule), so that settle voids its ticket with no other help; nothing is
    counted twice and the job completes."""
    layer = StrictLayer()
    records, kills, voids = Counter(), Counter(), Counter()

    def put_item(ddb: Any, **params: Any) -> Any:
        sk = params["Item"].get("sk", {}).get("S", "")
        if sk.startswith("log#") and "m" in params["Item"] and records.next() in (2, 5):
            kills.next()
            raise Killed("killed before the ledger")
        if sk.startswith("log#") and "void" in params["Item"]:
            voids.next()
        return ddb.put_item(**params)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, dynamodb=Hooked(strict.dynamodb, put_item=put_item))

    result = run(data, tmp_path / "out", wrap)
    assert kills.n == 2
    assert voids.n == 2  # each dead writer's ticket, once its writer cannot be alive
    assert_exact(result, data)


def test_slow_writers_are_not_voided_and_their_batches_do_not_fail(data: Expected,
                                                                   tmp_path: Path) -> None:
    """Two writers take 1.5 s between their ticket and their record (a throttled
    ledger, retries, a pause), well inside the writer timeout: no ticket is voided, no
    batch fails for it, and the counts are exact."""
    layer = StrictLayer()
    records, slow, voids, taken = Counter(), Counter(), Counter(), Counter()

    def put_item(ddb: Any, **params: Any) -> Any:
        sk = params["Item"].get("sk", {}).get("S", "")
        if sk.startswith("log#") and "m" in params["Item"] and records.next() in (2, 4):
            slow.next()
            time.sleep(1.5)
        if sk.startswith("log#") and "void" in params["Item"]:
            voids.next()
        try:
            return ddb.put_item(**params)
        except ddb.exceptions.ConditionalCheckFailedException:
            if "m" in params["Item"]:
                taken.next()
            raise

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, dynamodb=Hooked(strict.dynamodb, put_item=put_item))

    result = run(data, tmp_path / "out", wrap)
    assert slow.n == 2
    assert voids.n == 0 and taken.n == 0
    assert result.summary["messages_sent"] == (data.read + 24) // 25
    assert_exact(result, data)


@pytest.mark.parametrize("checkpoint_bytes", [None, 8192], ids=["no-checkpoint", "checkpoints"])
def test_splitter_killed_mid_file(data: Expected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  checkpoint_bytes: int | None) -> None:
    """A ranged GET dies (not an AWS error) after 10 of ~30 reads: the local async-invoke
    emulation retries the splitter after 2 s, which restarts (no checkpoint yet) or
    resumes from its last checkpoint; the resent messages are deduplicated. (The first
    checkpoint, past 8 KB, falls after the superseding pair on lines 62-63, so the
    expectation's 25-row grouping still holds there.)"""
    if checkpoint_bytes:
        import fanout_cli.local.ingest as ingest_module

        def small_checkpoints(settings: Any, spec: Any, clients: Clients, **kw: Any) -> Runtime:
            return Runtime(replace(settings, checkpoint_bytes=checkpoint_bytes), spec, clients, **kw)
        monkeypatch.setattr(ingest_module, "Runtime", small_checkpoints)
    layer = StrictLayer()
    reads, kills, starts = Counter(), Counter(), Counter()

    def get_object(s3: Any, **params: Any) -> Any:
        if params["Key"].startswith(UPLOAD_PREFIX) and reads.next() == 11:
            kills.next()
            raise Killed("killed mid-file")
        return s3.get_object(**params)

    def update_item(ddb: Any, **params: Any) -> Any:
        if "split_resumes" in params.get("UpdateExpression", ""):
            starts.hits.append(params)
        return ddb.update_item(**params)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, s3=Hooked(strict.s3, get_object=get_object),
                       dynamodb=Hooked(strict.dynamodb, update_item=update_item))

    result = run(data, tmp_path / "out", wrap, range_bytes=4096)
    assert kills.n == 1
    assert len(starts.hits) == 1  # the retry resumed the job
    assert reads.n > 11 + 2  # and read on
    if not checkpoint_bytes:  # (checkpoints also send the partial message at each one)
        assert result.summary["messages_sent"] == (data.read + 24) // 25
    assert_exact(result, data)


@pytest.fixture
def many_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of 8 sequence numbers and fold steps of ~10 entries, so the 40-message job
    spans 5 shards and is folded in several steps while it loads."""
    from fanout import ledger

    monkeypatch.setattr(ledger.layout, "SHARD_SEQS", 8)
    monkeypatch.setattr(ledger.layout, "FOLD_MESSAGES", 10)
    monkeypatch.setattr(ledger.layout, "LOG_PAGE", 2)


def test_duplicates_over_many_shards(data: Expected, tmp_path: Path, many_shards: None) -> None:
    layer = StrictLayer(Faults(duplicate_delivery_rate=0.3, seed=16))
    result = run(data, tmp_path / "out", layer.wrap)
    assert layer.record.injected["duplicate_delivery"] > 5
    assert_exact(result, data)


def test_a_folder_killed_mid_fold_is_resumed_by_the_next_invocation(
        data: Expected, tmp_path: Path, many_shards: None) -> None:
    """A writer dies while folding, after writing some of a step's shards (twice): its
    batch is delivered again, and the next folder finds the lease dirty, sums the
    shards again and skips what the dead one applied."""
    layer = StrictLayer()
    shard_puts, kills = Counter(), Counter()

    def put_item(ddb: Any, **params: Any) -> Any:
        if params["Item"]["sk"]["S"].startswith("shard#") and shard_puts.next() in (2, 7):
            kills.next()
            raise Killed("killed mid-fold")
        return ddb.put_item(**params)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        return replace(strict, dynamodb=Hooked(strict.dynamodb, put_item=put_item))

    result = run(data, tmp_path / "out", wrap)
    assert kills.n == 2
    assert_exact(result, data)


class Published:
    def __init__(self, sns: Any) -> None:
        self.sns, self.summaries = sns, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sns, name)

    def publish(self, **params: Any) -> Any:
        self.summaries.append(json.loads(params["Message"]))
        return self.sns.publish(**params)


def test_a_replay_during_finalization_is_counted_and_the_summary_published_once(
        data: Expected, tmp_path: Path, many_shards: None) -> None:
    """As the folder is about to mark the job COMPLETE, a writer invocation delivers a
    replay that fixes the empty-key row (line 9). The first folder's flip finds a ticket
    it has not folded and folds again (or the replay's writer completes the job): either
    way the one summary published counts the fix. Exact counts with the fix, the fixed
    row in the table."""
    import csv

    from fanout.contract import RowsMessage, Source, replay_id
    from fanout_cli.local.esm import LocalContext, sqs_record
    from writer import handler as writer_handler

    with open(data.path, newline="", encoding="utf-8") as f:
        header, *body = list(csv.reader(f))
    fixed = ["fixed-account", *body[7][1:]]
    layer = StrictLayer()
    sns: list[Published] = []
    replays: list[dict[str, Any]] = []
    started = Counter()

    def replay_now(job: str, source: str) -> None:
        bucket, key = source.removeprefix("s3://").split("/", 1)
        message = RowsMessage(job, 0, Source(bucket, key), header, [9], [fixed],
                              replay=replay_id(job, "0", [9], [fixed]))
        record = sqs_record({"MessageId": "replay-1", "ReceiptHandle": "r", "Body": message.encode()},
                            "arn:aws:sqs:us-east-1:123456789012:fanout-rows", "us-east-1")
        replays.append(writer_handler.lambda_handler({"Records": [record]},
                                                     LocalContext("fanout-writer", 60)))

    replayed = threading.Event()

    def transact_write_items(ddb: Any, **params: Any) -> Any:
        flips = [item["Update"] for item in params["TransactItems"] if "status" in str(
            item.get("Update", {}).get("ExpressionAttributeNames", {})) and ":complete" in str(item)]
        if not flips:  # not a completion (a job's start, mark_published, ...)
            return ddb.transact_write_items(**params)
        if started.next() == 1:  # the first completion flip
            flip = flips[0]
            job = ddb.get_item(TableName=flip["TableName"], Key=flip["Key"])["Item"]
            thread = threading.Thread(target=replay_now, name="replay",
                                      args=(job["pk"]["S"], job["source"]["S"]))
            thread.start()
            thread.join(timeout=30)
            replayed.set()
        elif threading.current_thread().name != "replay":
            replayed.wait(timeout=30)  # other writers' flips come after the replay, too
        return ddb.transact_write_items(**params)

    def wrap(raw: Clients) -> Clients:
        strict = layer.wrap(raw)
        sns.append(Published(strict.sns))
        return replace(strict, dynamodb=Hooked(strict.dynamodb,
                                               transact_write_items=transact_write_items),
                       sns=sns[-1])

    result = run(data, tmp_path / "out", wrap)
    s = result.summary
    assert replays == [{"batchItemFailures": []}]
    assert started.n >= 2  # the first flip was cancelled by the replay's ticket, and tried again
    assert s["status"] == "COMPLETE"
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        data.read, data.written + 1, len(data.rejected) - 1, data.superseded)
    items = [json.loads(x)["Item"] for x in (result.out_dir / "items.jsonl").read_text().splitlines()]
    assert {(i["account"]["S"], i["offer_id"]["S"]) for i in items} == \
        set(data.items) | {("fixed-account", fixed[1])}
    summaries = [m for p in sns for m in p.summaries]
    assert len(summaries) == 1
    assert (summaries[0]["TOTAL_NUMBER_OF_ITEMS_WRITTEN"], summaries[0]["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"]) \
        == (data.written + 1, len(data.rejected) - 1)


def test_a_last_settle_that_never_completes_the_job_is_finished_by_the_reconciler(
        data: Expected, tmp_path: Path) -> None:
    """Every completion a writer or the splitter attempts is cancelled, as if reports kept
    coming in (`settle` then gives up and leaves the job to their settles), and none does:
    the batches succeed, the queue drains with every message counted and the job RUNNING.
    The reconciler, which `fanout ingest` runs on its schedule and once the queue has
    drained (as the stack's EventBridge rule runs it in the writer), completes it. Without
    it the run would end INCOMPLETE (checked below)."""
    def wrap_for(cancelled: Counter) -> Any:
        layer = StrictLayer()

        def transact_write_items(ddb: Any, **params: Any) -> Any:
            completion = any(":complete" in str(item.get("Update", {}))
                             for item in params["TransactItems"])
            # The functions' invocations run on the event source mappings' threads
            # (fanout-writer-N, fanout-splitter-N); the reconciler's on the caller's.
            if completion and threading.current_thread().name.startswith("fanout-"):
                cancelled.next()
                raise ClientError({"Error": {"Code": "TransactionCanceledException",
                                             "Message": "Transaction cancelled"},
                                   "CancellationReasons": [{"Code": "ConditionalCheckFailed"},
                                                           {"Code": "None"}, {"Code": "None"}]},
                                  "TransactWriteItems")
            return ddb.transact_write_items(**params)

        def wrap(raw: Clients) -> Clients:
            strict = layer.wrap(raw)
            return replace(strict, dynamodb=Hooked(strict.dynamodb,
                                                   transact_write_items=transact_write_items))
        return wrap

    cancelled = Counter()
    result = run(data, tmp_path / "out", wrap_for(cancelled))
    assert cancelled.n >= ledger.COMPLETE_ATTEMPTS  # the last settle gave up
    assert_exact(result, data)

    # Without the reconciler's run the same load ends INCOMPLETE: every message counted,
    # the job never completed.
    from fanout_cli.local.ingest import ReconcilerSchedule

    skipped = Counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReconcilerSchedule, "run", lambda self: skipped.next())
        stuck = run(data, tmp_path / "stuck", wrap_for(Counter())).summary
    assert skipped.n >= 1 and stuck["status"] == "INCOMPLETE", stuck
