"""Replayed rows are counted once each, end to end on moto: the writer rejects rows, the
dlq-replayer sends them back (as they were, or fixed), the writer takes the replays, and
the job's counts stay exact however often a row goes round, however its redrives overlap."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from dlq_replayer.target import Target
from fanout import ledger
from fanout.aws import Clients
from fanout.contract import KIND_REJECTED, RowsMessage, Source, decode
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout_cli.local.resources import LocalStack
from tests.integration.helpers import context, drain, sqs_event
from tests.integration.replayer_helpers import bodies, replayer
from writer import handler

JOB = "job-1"
HEADER = ["account", "offer_id", "risk"]
SOURCE = Source("fanout-uploads", "uploads/t.csv", "etag")


@pytest.fixture(autouse=True)
def reset_runtime():
    yield
    handler.runtime.use(None)


@pytest.fixture
def typed(spec: Spec) -> Spec:
    """The spec before the operator's fix: `risk` is a number, so "high" is rejected."""
    return replace(spec, types={"risk": "N"})


@pytest.fixture
def target(aws: Clients, stack: LocalStack) -> Target:
    return Target(aws.sqs, stack.settings.dlq_url, stack.settings.rows_queue_url, wait_s=0)


def original(seq: int, bad: dict[int, str]) -> RowsMessage:
    """Message `seq` as the splitter cuts it: 25 rows, lines 2 + 25 * seq on; the rows at
    the indexes in `bad` have that risk (not a number)."""
    rows = [["a", f"{seq}-{i}", bad.get(i, "1")] for i in range(25)]
    first = 2 + 25 * seq
    return RowsMessage(JOB, seq, SOURCE, HEADER, list(range(first, first + 25)), rows)


def start(aws: Clients, stack: LocalStack, messages: int, mode: str = "put") -> None:
    table = stack.settings.ledger_table_name
    ledger.start_job(aws.dynamodb, table, JOB, source_uri=SOURCE.uri, table="t", owner="a",
                     mode=mode)
    ledger.finish_split(aws.dynamodb, table, JOB, rows_read=25 * messages,
                        messages_total=messages, header=HEADER, error_location="s3://b/e/")


def write(aws: Clients, stack: LocalStack, spec: Spec, *bodies: str) -> None:
    """One writer invocation takes `bodies`, or else everything in the rows queue."""
    url = stack.settings.rows_queue_url
    for body in bodies:
        aws.sqs.send_message(QueueUrl=url, MessageBody=body)
    received = drain(aws.sqs, url)
    assert received and len(received) <= 10
    handler.runtime.use(Runtime(stack.settings, spec, aws))
    response = handler.lambda_handler(sqs_event(received, stack.rows_queue_arn), context())
    assert response == {"batchItemFailures": []}


def counts(aws: Clients, stack: LocalStack) -> tuple[Any, ...]:
    job = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)
    return job["status"], job["rows_read"], job["rows_written"], job["rows_rejected"]


def items(aws: Clients, stack: LocalStack) -> dict[str, str]:
    found = aws.dynamodb.scan(TableName=stack.settings.table_name)["Items"]
    return {i["offer_id"]["S"]: i["risk"].get("S") or i["risk"]["N"] for i in found}


def waiting(aws: Clients, stack: LocalStack) -> list[RowsMessage]:
    """The DLQ's messages (taken out of it)."""
    return [decode(m["Body"]) for m in drain(aws.sqs, stack.settings.dlq_url)]


def log_entries(aws: Clients, stack: LocalStack) -> list[str]:
    found = aws.dynamodb.query(
        TableName=stack.settings.ledger_table_name, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": JOB}})["Items"]
    return [e for item in found if "m" in item for e in item["m"]["S"].split(",")]


def test_a_row_rejected_again_is_counted_when_a_second_redrive_lands_it(aws, stack, spec, typed,
                                                                         target):
    """Audit failure 6: a row redriven unchanged is rejected again; its new DLQ message
    has no replay id, so the next redrive of the same row has the same replay id as the
    first. Counted by that id, the row that finally lands was never moved out of rejected."""
    start(aws, stack, messages=1)
    # Given message 0, whose row 3 has risk "high" where the spec wants a number
    write(aws, stack, typed, original(0, {3: "high"}).encode())
    assert counts(aws, stack) == ("COMPLETE", 25, 24, 1)
    # When the operator redrives it before fixing the spec, it is rejected again
    assert replayer(target, "redrive")[0] == 0
    write(aws, stack, typed)
    assert counts(aws, stack) == ("COMPLETE", 25, 24, 1)
    (again,) = bodies(aws.sqs, stack.settings.dlq_url)
    assert again.kind == KIND_REJECTED and again.replay is None
    # And redrives it again once the spec takes any risk: the same replay id, and it lands
    assert replayer(target, "redrive")[0] == 0
    write(aws, stack, spec)
    assert items(aws, stack)["0-3"] == "high"
    assert counts(aws, stack) == ("COMPLETE", 25, 25, 0)
    replays = {e.split(":")[0] for e in log_entries(aws, stack) if "~" in e}
    assert len(replays) == 1  # both redrives were one replay id
    assert waiting(aws, stack) == []
    # The whole-log diagnostics apply the same rule, and the replay is counted
    table = stack.settings.ledger_table_name
    assert ledger.totals(ledger.read_message_counts(aws.dynamodb, table, JOB)) == \
        ledger.MessageCounts(25, 0, 0)
    assert ledger.message_counted(aws.dynamodb, table, JOB, replays.pop(), [3])
    assert [(r.line, r.index) for r in again.rejections] == [(5, 3)]  # its place survived


def test_overlapping_redrives_and_duplicates_count_each_row_once(aws, stack, spec, typed, target,
                                                                 tmp_path):
    """Message 0 is delivered twice, so its two rejected rows wait in the DLQ twice. One
    copy's row 3 is redriven with a fix (--fixes, --max 1); then, with the spec fixed,
    everything left as it was: the other copy (rows 3 and 7) and the first copy's
    remainder (row 7). Row 3 lands in two replays, row 7 in two others, and one replay
    is delivered twice: 25 written, 0 rejected."""
    start(aws, stack, messages=1)
    body = original(0, {3: "high", 7: "low"}).encode()
    write(aws, stack, typed, body)
    write(aws, stack, typed, body)  # a duplicate delivery: its rejections go to the DLQ too
    assert counts(aws, stack) == ("COMPLETE", 25, 23, 2)
    export = tmp_path / "fix.jsonl"
    assert replayer(target, "export", "--out", str(export))[0] == 0
    records = [json.loads(t) for t in export.read_text().splitlines()]
    (row3,) = [r for r in records if r["_line"] == 5]
    row3["fields"]["risk"] = "3"
    export.write_text(json.dumps(row3) + "\n")
    assert replayer(target, "redrive", "--fixes", str(export), "--max", "1")[0] == 0
    assert replayer(target, "redrive")[0] == 0  # the other copy and the remainder
    sent = [m["Body"] for m in drain(aws.sqs, stack.settings.rows_queue_url)]
    write(aws, stack, spec, *sent)
    write(aws, stack, spec, sent[0])  # a duplicate delivery of one replay
    assert counts(aws, stack) == ("COMPLETE", 25, 25, 0)
    assert len(items(aws, stack)) == 25 and waiting(aws, stack) == []
    replays = [decode(body) for body in sent]
    assert len({m.replay for m in replays}) == 3
    assert sorted(sorted(m.indexes or []) for m in replays) == [[3], [3, 7], [7]]


def test_rejections_from_before_indexes_are_still_counted_by_replay_id(aws, stack, spec, typed,
                                                                       target):
    """A DLQ message a writer of the previous version left has no row indexes: its replay
    is counted as before, by its id (once, however often it is delivered), beside a
    replay of the same shard whose rows carry theirs."""
    start(aws, stack, messages=2)
    write(aws, stack, typed, original(0, {3: "high"}).encode(), original(1, {7: "low"}).encode())
    assert counts(aws, stack) == ("COMPLETE", 50, 48, 2)
    for message in drain(aws.sqs, stack.settings.dlq_url):
        body = json.loads(message["Body"])
        if body["seq"] == 0:  # as the previous version wrote it: no index
            body["rejections"] = [{k: v for k, v in r.items() if k != "index"}
                                  for r in body["rejections"]]
        aws.sqs.send_message(QueueUrl=stack.settings.dlq_url, MessageBody=json.dumps(body))
    assert replayer(target, "redrive")[0] == 0
    sent = drain(aws.sqs, stack.settings.rows_queue_url)
    write(aws, stack, spec, *(m["Body"] for m in sent))
    write(aws, stack, spec, *(m["Body"] for m in sent))  # each delivered twice
    assert counts(aws, stack) == ("COMPLETE", 50, 50, 0)
    replays = sorted(e for e in log_entries(aws, stack) if "~" in e)
    assert [e.split("~")[0] for e in replays] == ["0", "0", "1", "1"]
    assert all("@" not in e for e in replays[:2])  # by its id, as before
    assert all(e.endswith("@80") for e in replays[2:])  # row 7 written


def test_a_replays_rows_land_under_the_jobs_write_mode_each_in_its_own_outcome(aws, stack, spec,
                                                                              typed, target,
                                                                              tmp_path):
    """An insert job: rows 2, 5 and 9 of message 0 are rejected. Meanwhile something else
    writes row 2's key; the operator fixes 5 and 9 so that 9 has row 5's key. The replay
    inserts row 9, supersedes row 5 and skips row 2 (its key exists): the log entry says
    which row landed where, and the job counts each once (a duplicate delivery too)."""
    start(aws, stack, messages=1, mode="insert")
    inserting = replace(typed, mode="insert")
    write(aws, stack, inserting,
          replace(original(0, {2: "high", 5: "high", 9: "high"}), mode="insert").encode())
    assert counts(aws, stack) == ("COMPLETE", 25, 22, 3)
    aws.dynamodb.put_item(TableName=stack.settings.table_name, Item={
        "account": {"S": "a"}, "offer_id": {"S": "0-2"}, "risk": {"S": "elsewhere"}})
    export = tmp_path / "fix.jsonl"
    assert replayer(target, "export", "--out", str(export))[0] == 0
    records = [json.loads(t) for t in export.read_text().splitlines()]
    for record in records:
        record["fields"]["risk"] = "1"
        if record["_line"] == 11:  # row 9
            record["fields"]["offer_id"] = "0-5"
    export.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert replayer(target, "redrive", "--fixes", str(export))[0] == 0
    (sent,) = [m["Body"] for m in drain(aws.sqs, stack.settings.rows_queue_url)]
    write(aws, stack, inserting, sent)
    write(aws, stack, inserting, sent)  # delivered again: the same outcomes, nothing moves
    job = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, JOB)
    assert [job[f"rows_{name}"] for name in ledger.OUTCOMES] == [23, 0, 1, 0, 1, 0]
    assert items(aws, stack)["0-2"] == "elsewhere" and items(aws, stack)["0-5"] == "1"
    replay = decode(sent)
    assert replay.mode == "insert" and replay.indexes == [2, 5, 9]
    # written: row 9 (0x200); superseded: row 5 (0x20); deleted: none; skipped: row 2 (0x4)
    first, again = [e for e in log_entries(aws, stack) if "~" in e]
    assert first == again == f"{replay.message_id}:1:0:1:0:1@200.20.0.4"
