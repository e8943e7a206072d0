"""Every log line of a job can be found by its id: the handlers on moto, their Powertools
JSON lines captured."""

from __future__ import annotations

from typing import Any

from fanout.contract import RowsMessage, Source
from fanout.runtime import Runtime
from splitter import handler as splitter_handler
from splitter.source import log as splitter_log
from tests.integration.helpers import context, s3_event, sqs_event
from tests.unit.test_telemetry import captured, lines
from writer import handler as writer_handler
from writer import load

SOURCE = Source("fanout-uploads", "uploads/t.csv", "etag")
HEADER = ["account", "offer_id", "risk"]


def rows_message(seq: int, rows: list[list[str]]) -> RowsMessage:
    first = 2 + 25 * seq
    return RowsMessage("job-7", seq, SOURCE, HEADER, list(range(first, first + len(rows))), rows)


def test_the_writers_lines_carry_the_job_message_and_seq_of_the_message_they_are_about(
        aws, stack, spec, monkeypatch) -> None:
    # Given two messages in one batch, written on the pool's threads, one with a row whose
    # mapping fails in a way no rule foresaw (logged with its traceback)
    real_write_items, real_mapper = load.write_items, load._mapper

    def logging_write_items(ddb: Any, table: str, items: list[Any], *args: Any) -> Any:
        load.log.info("writing %d item(s)", len(items))  # as any line below the handler
        return real_write_items(ddb, table, items, *args)

    class Buggy:
        def __init__(self, mapper: Any) -> None:
            self.mapper = mapper

        def to_item(self, row: list[str], line: int) -> Any:
            if row[0] == "boom":
                raise KeyError("a bug")
            return self.mapper.to_item(row, line)

        def key_of(self, item: Any) -> Any:
            return self.mapper.key_of(item)

    monkeypatch.setattr(load, "write_items", logging_write_items)
    monkeypatch.setattr(load, "_mapper", lambda s, header: Buggy(real_mapper(s, header)))
    messages = [rows_message(0, [["a", "1", "low"], ["boom", "2", "low"]]),
                rows_message(1, [["b", "3", "high"]])]
    for m in messages:
        aws.sqs.send_message(QueueUrl=stack.settings.rows_queue_url, MessageBody=m.encode())
    received = aws.sqs.receive_message(QueueUrl=stack.settings.rows_queue_url,
                                       MaxNumberOfMessages=10)["Messages"]
    writer_handler.runtime.use(Runtime(stack.settings, spec, aws))
    try:
        # When the writer handles the batch
        with captured(load.log) as stream:
            response = writer_handler.lambda_handler(sqs_event(received, stack.rows_queue_arn),
                                                     context())
    finally:
        writer_handler.runtime.use(None)
    assert response["batchItemFailures"] == []
    logged = [x for x in lines(stream) if x["message"] != "Processing batch"]
    # Then each line names the message it is about, on whichever thread wrote it
    by_text = sorted((x["message"], x.get("job"), x.get("message_id"), x.get("seq"))
                     for x in logged)
    assert by_text == [("mapping line 3 failed", "job-7", "0", 0),
                       ("writing 1 item(s)", "job-7", "0", 0),
                       ("writing 1 item(s)", "job-7", "1", 1)]
    (failed,) = [x for x in logged if x["message"].startswith("mapping")]
    assert "KeyError: 'a bug'" in failed["exception"] and failed["level"] == "ERROR"
    assert {x["service"] for x in logged} == {"fanout-writer"}


def test_the_splitters_lines_carry_the_job(aws, stack, spec) -> None:
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/k.csv",
                      Body=b"account,offer_id\na,1\n")
    splitter_handler.runtime.use(Runtime(stack.settings, spec, aws))
    try:
        with captured(splitter_log) as stream:
            result = splitter_handler.lambda_handler(
                s3_event(stack.settings.bucket, "uploads/k.csv"), context())
    finally:
        splitter_handler.runtime.use(None)
    (job,) = [r["job"] for r in result["jobs"]]
    reading = [x for x in lines(stream) if x["message"].startswith("reading ")]
    assert [(x["job"], x["service"]) for x in reading] == [(job, "fanout-splitter")]
    finished = [x for x in lines(stream) if x["message"] == "split finished"]
    assert [x["job"] for x in finished] == [job]
