"""The splitter handler on moto: S3 event in, 25-row self-describing messages out."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fanout import ledger
from fanout.aws import Clients
from fanout.dialect import HEAD_BYTES
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout_cli.local.resources import LocalStack
from splitter import handler
from tests.integration.helpers import context, drain, rows_messages, s3_event, sqs_event


@pytest.fixture
def runtime(aws: Clients, stack: LocalStack, spec: Spec):
    rt = Runtime(stack.settings, spec, aws)
    handler.runtime.use(rt)
    yield rt
    handler.runtime.use(None)


def make_rows(n: int) -> list[list[str]]:
    return [[f"acct{i % 7}", f"offer{i}", f'note, "quoted"\nline {i}'] for i in range(n)]


def put_csv(aws: Clients, bucket: str, key: str, rows: list[list[str]], *, bom: bool = False,
            terminator: str = "\r\n") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(["account", "offer_id", "note"])
    writer.writerows(rows)
    data = (("\ufeff" if bom else "") + buffer.getvalue()).encode()
    aws.s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


@pytest.mark.parametrize("key", ["uploads/my file+v2 é.csv", "uploads/plain.csv"])
def test_every_row_is_enqueued_in_25_row_messages_with_source_lines(aws, stack, runtime, key):
    # Given a CSV whose fields hold commas, quotes and newlines, under a key with spaces,
    # '+' and unicode (S3 URL-encodes it in the event)
    rows = make_rows(60)
    put_csv(aws, stack.settings.bucket, key, rows, bom=True)
    # When the splitter handles the event, reading 7 bytes per range
    rt = runtime
    handler.runtime.use(Runtime(
        type(rt.settings)(**{**rt.settings.__dict__, "range_bytes": 7}), rt.spec, aws))
    result = handler.lambda_handler(s3_event(stack.settings.bucket, key), context())
    # Then every row is in a message, 25 a message, with its source line
    assert result["jobs"][0]["rows_read"] == 60
    messages = rows_messages(aws.sqs, stack.settings.rows_queue_url)
    assert [m.seq for m in messages] == [0, 1, 2]
    assert [len(m.rows) for m in messages] == [25, 25, 10]
    assert [r for m in messages for r in m.rows] == rows
    assert messages[0].header == ["account", "offer_id", "note"]  # BOM stripped
    assert messages[0].lines[:3] == [2, 4, 6]  # each row spans two lines
    assert messages[0].source.key == key


def test_short_rows_are_counted_as_padded_in_the_ledger_whatever_the_quoting(aws, stack, runtime):
    # Given a header with an unnamed and a repeated field, and rows one or more fields
    # short, one of them with the delimiter inside a quoted field (4 fields by its commas,
    # 3 as csv.reader reads it)
    body = ('account,offer_id,,note,note\r\n'
            'a,1,x,n,m\r\n'  # whole
            'a,2,x,n\r\n'  # one short
            'a,3\r\n'  # three short
            'a,4,"x, y",n\r\n'  # one short, with a quoted comma
            'a,5,"x, y",n,m\r\n')  # whole, with a quoted comma
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/short.csv", Body=body.encode())
    # When the splitter reads it 7 bytes a range
    handler.runtime.use(Runtime(
        type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 7}),
        runtime.spec, aws))
    result = handler.lambda_handler(s3_event(stack.settings.bucket, "uploads/short.csv"),
                                    context())
    # Then the ledger holds the rows read and, of them, the short ones (padded by the writer)
    job = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, result["jobs"][0]["job"])
    assert job is not None and (job["rows_read"], job["rows_padded"]) == (5, 3)
    # And the messages carry the header as the file has it: the writer names its columns
    messages = rows_messages(aws.sqs, stack.settings.rows_queue_url)
    assert messages[0].header == ["account", "offer_id", "", "note", "note"]


def test_ranged_reads_never_fetch_the_whole_object(aws, stack, runtime, monkeypatch):
    data = put_csv(aws, stack.settings.bucket, "uploads/a.csv", make_rows(100))
    ranges: list[str] = []
    original = aws.s3.get_object

    def spy(**params):
        ranges.append(params.get("Range", "WHOLE"))
        return original(**params)

    monkeypatch.setattr(aws.s3, "get_object", spy)
    handler.runtime.use(Runtime(
        type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 1024}),
        runtime.spec, aws))
    handler.lambda_handler(s3_event(stack.settings.bucket, "uploads/a.csv"), context())
    assert "WHOLE" not in ranges
    # One bounded read of the first bytes (gzip? BOM? delimiter?), then two passes of 1 KiB
    # ranges: one checks that every byte decodes, one splits.
    assert ranges[0] == f"bytes=0-{min(HEAD_BYTES, len(data)) - 1}"
    assert len(ranges) == 1 + 2 * -(-len(data) // 1024)


def test_the_s3_test_event_and_own_outputs_are_ignored(aws, stack, runtime):
    assert handler.lambda_handler({"Event": "s3:TestEvent", "Bucket": "b"}, context()) == {"jobs": []}
    put_csv(aws, stack.settings.bucket, "errors/job/1.jsonl", make_rows(1))
    assert handler.lambda_handler(
        s3_event(stack.settings.bucket, "errors/job/1.jsonl"), context()) == {"jobs": []}
    assert rows_messages(aws.sqs, stack.settings.rows_queue_url) == []


def test_a_duplicate_s3_event_starts_one_job(aws, stack, runtime):
    put_csv(aws, stack.settings.bucket, "uploads/a.csv", make_rows(30))
    event = s3_event(stack.settings.bucket, "uploads/a.csv")
    first = handler.lambda_handler(event, context())["jobs"][0]
    second = handler.lambda_handler(event, context())["jobs"][0]
    assert first["status"] == "split" and second["status"] == "skipped"
    assert first["job"] == second["job"]
    assert len(rows_messages(aws.sqs, stack.settings.rows_queue_url)) == 2


def test_the_check_pass_hands_over_near_the_time_limit_and_resumes_where_it_stopped(
        aws, stack, runtime, monkeypatch):
    """A file too big to check in one invocation: the check saves its offset at a
    checkpoint and hands over; the continuation checks the rest (not from byte 0), then
    splits. Nothing is sent before the check is complete."""
    from splitter.split import Checkpoint, split_object

    rows = make_rows(400)
    data = put_csv(aws, stack.settings.bucket, "uploads/big.csv", rows)
    settings = type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 1024,
                                         "checkpoint_bytes": 4096})
    small = Runtime(settings, runtime.spec, aws)
    ranges: list[str] = []
    original = aws.s3.get_object

    def spy(**params):
        ranges.append(params["Range"])
        return original(**params)

    monkeypatch.setattr(aws.s3, "get_object", spy)
    handed_over: list[dict] = []
    first = split_object(small, stack.settings.bucket, "uploads/big.csv", owner="first",
                         remaining_s=lambda: 0.0, continue_split=handed_over.append)
    assert first.status == "continued" and len(handed_over) == 1
    job = ledger.raw_job(aws.dynamodb, settings.ledger_table_name, first.job)
    saved = Checkpoint.loads(job["checkpoint"]["S"])
    assert not saved.checked and 4096 <= saved.check_offset < len(data) and saved.seq == 0
    assert drain(aws.sqs, settings.rows_queue_url) == []  # nothing sent yet
    checked_first = len(ranges)

    second = split_object(small, stack.settings.bucket, "uploads/big.csv", owner="second",
                          remaining_s=lambda: 1e9, continue_split=handed_over.append)
    assert second.status == "split" and second.rows_read == 400
    assert ranges[checked_first].startswith("bytes=0-")  # the first bytes: gzip? BOM? delimiter?
    resumed_at = int(ranges[checked_first + 1].removeprefix("bytes=").split("-")[0])
    assert resumed_at == saved.check_offset  # not from byte 0
    messages = rows_messages(aws.sqs, settings.rows_queue_url)
    assert [r for m in messages for r in m.rows] == rows


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the file is empty"),
        (b"account,offer_id\r\n", "line 1: the file has a header but no data rows"),
        (b"account,other\r\n1,2\r\n", "line 1: key template 'offer_id' names column 'offer_id'"),
        (b"account,offer_id\r\n1,2\r\n3,\xff\r\n", "line 3: bytes are not valid utf-8"),
        (b"\r\naccount,offer_id," + b"x" * 70_000 + b"\r\n1,2,3\r\n",
         "line 2: the header is 70,027 bytes; at most 65,536"),
    ],
)
def test_bad_input_ends_the_job_with_file_line_and_reason(aws, stack, runtime, body, message):
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/bad.csv", Body=body)
    result = handler.lambda_handler(s3_event(stack.settings.bucket, "uploads/bad.csv"), context())
    job = result["jobs"][0]
    assert job["status"] == "failed"
    assert job["error"].startswith("s3://fanout-uploads/uploads/bad.csv: ")
    assert message in job["error"]
    recorded = ledger.get_job(aws.dynamodb, stack.settings.ledger_table_name, job["job"])
    assert recorded["status"] == ledger.FAILED and message in recorded["error"]
    assert drain(aws.sqs, stack.settings.rows_queue_url) == []  # nothing half-enqueued


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # a character after a closing quote: csv.reader (strict) rejects it
        ('acct1,offer-x,"quoted"then more\r\n', "malformed CSV: ',' expected after '\"'"),
        # text after a closing quote in a multi-line field that began after a stray quote
        ('acct1,offer-x,5\'10"\r\nacct2,offer-y,"two\r\nlines"!\r\n',
         "malformed CSV: ',' expected after '\"'"),
        # a quoted field never closed before the end of the file
        ('acct1,offer-x,"never closed\r\n', "unexpected end of data"),
    ],
)
def test_broken_quoting_late_in_a_file_fails_the_job_before_anything_is_sent(
        aws, stack, runtime, broken, message):
    rows = make_rows(3000)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([["account", "offer_id", "note"], *rows])
    good = buffer.getvalue()
    body = (good + broken).encode() if "never" in broken else (good + broken + good).encode()
    line = good.count("\n") + 1 + broken.startswith("acct1,offer-x,5")  # the broken record's first line
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/quotes.csv", Body=body)
    result = handler.lambda_handler(s3_event(stack.settings.bucket, "uploads/quotes.csv"), context())
    job = result["jobs"][0]
    assert job["status"] == "failed", job
    assert f"uploads/quotes.csv: line {line}: " in job["error"] and message in job["error"]
    assert drain(aws.sqs, stack.settings.rows_queue_url) == []  # 3000 good rows came first


# The file of issue 12: a quote inside an unquoted field (5'10"), then a quoted newline.
STRAY_QUOTES = b'account,height,offer_id\nann,5\'10",tall\ncat,"multi\nline",y\n'


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("range_bytes", [1, 7, 1024])
def test_a_quote_inside_an_unquoted_field_loads_as_csv_reader_reads_it(
        aws, stack, runtime, parallel, range_bytes):
    # Given the file, which csv.reader (strict) reads as 3 rows
    expected = list(csv.reader(io.StringIO(STRAY_QUOTES.decode(), newline=""), strict=True))
    assert expected == [["account", "height", "offer_id"], ["ann", "5'10\"", "tall"],
                        ["cat", "multi\nline", "y"]]
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/stray.csv", Body=STRAY_QUOTES)
    # When the splitter handles its event, sequentially or in ranges of 20 bytes
    events: list[dict] = []
    settings = type(runtime.settings)(**{
        **runtime.settings.__dict__, "range_bytes": range_bytes,
        **({"parallel_threshold_bytes": 10, "parallel_range_bytes": 20} if parallel else {})})
    from splitter.split import split_event

    rt = Runtime(settings, runtime.spec, aws, continue_split=events.append)
    results = split_event(s3_event(stack.settings.bucket, "uploads/stray.csv"), rt)
    while events:
        results = split_event(events.pop(0), rt)
    # Then both data rows are queued as csv.reader reads them, at their source lines
    assert results[0].status in ("split", "range"), results
    job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, results[0].job)
    assert job["rows_read"] == 2 and ("parallel_ranges" in job) == parallel
    messages = rows_messages(aws.sqs, settings.rows_queue_url)
    assert messages[0].header == expected[0]
    assert [(line, row) for m in messages for line, row in zip(m.lines, m.rows, strict=True)] == [
        (2, expected[1]), (3, expected[2])]


def test_a_split_handed_over_at_every_checkpoint_sends_what_one_run_sends(aws, stack, runtime):
    """Stray quotes and multi-line fields, cut partly by csv.reader: a split (and its check
    pass) that hands over at every checkpoint resumes with the same cuts, so it sends the
    same messages, with the same sequence numbers, as a split that runs in one go."""
    from splitter.split import split_object

    lines = ["account,offer_id,note"]
    for i in range(400):
        lines.append(f'acct{i % 7},{i},5\'10" tall' if i % 3 else f'acct{i % 7},{i},"two\nlines {i}"')
    body = ("\n".join(lines) + "\n").encode()
    expected = list(csv.reader(io.StringIO(body.decode(), newline=""), strict=True))[1:]
    settings = type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 512,
                                         "checkpoint_bytes": 1024})
    small = Runtime(settings, runtime.spec, aws)

    def sent(key: str, remaining_s) -> list[tuple[int, list[int], list[list[str]]]]:
        aws.s3.put_object(Bucket=stack.settings.bucket, Key=key, Body=body)
        handed_over: list[dict] = []
        invocations = 0
        while True:
            invocations += 1
            result = split_object(small, stack.settings.bucket, key, owner=f"o{invocations}",
                                  remaining_s=remaining_s, continue_split=handed_over.append)
            if result.status != "continued":
                break
        assert result.status == "split" and result.rows_read == 400
        messages = rows_messages(aws.sqs, settings.rows_queue_url)
        assert (invocations > 10) == (remaining_s is not None)
        return [(m.seq, m.lines, m.rows) for m in messages]

    whole = sent("uploads/whole.csv", None)
    # Less time left than the reserve at every checkpoint (so it hands over there), but
    # more than half of it (so it never hands over between checkpoints).
    continued = sent("uploads/continued.csv", lambda: settings.split_reserve_s * 0.75)
    assert continued == whole
    assert [row for _, _, rows in whole for row in rows] == expected


def test_a_split_that_resumes_without_progress_fails_with_its_reason_instead_of_looping(
        aws, stack, runtime):
    """The stack lets the splitter invoke itself past Lambda's recursive-loop limit
    (RecursiveLoop: Allow); the ledger's count of resumes is the guard. Invocations that
    each hand over before reaching their next checkpoint (no time left from the start)
    make no progress: the job is FAILED, naming the count, the bound and what to do,
    once it was resumed more often than its file can need; nothing continues it."""
    from splitter.split import max_split_resumes, split_object

    put_csv(aws, stack.settings.bucket, "uploads/loop.csv", make_rows(400))
    settings = type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 512,
                                         "checkpoint_bytes": 1024})
    small = Runtime(settings, runtime.spec, aws)
    size = aws.s3.head_object(Bucket=stack.settings.bucket, Key="uploads/loop.csv")["ContentLength"]
    limit = max_split_resumes(size, gzip=False, checkpoint_bytes=1024)
    handed_over: list[dict] = []
    results = []
    while len(results) < 10 * limit:  # bounded: a failure of the guard fails here
        results.append(split_object(small, stack.settings.bucket, "uploads/loop.csv",
                                    owner=f"o{len(results)}", remaining_s=lambda: 0.0,
                                    continue_split=handed_over.append))
        if results[-1].status != "continued":
            break
    last = results[-1]
    assert last.status == "failed"
    # The first run plus `limit` resumes continued; the next resume is refused.
    assert len(results) == limit + 2 and len(handed_over) == limit + 1
    assert f"resumed {limit + 1} times, more than the {limit} a {size:,}-byte file" in last.error
    assert last.error.startswith("s3://") and "line " in last.error
    assert "Upload the file again under a new key" in last.error
    job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, last.job)
    assert job["status"] == ledger.FAILED and job["error"] == last.error
    # A late duplicate of the last hand-over finds the job past splitting.
    again = split_object(small, stack.settings.bucket, "uploads/loop.csv", owner="late",
                         remaining_s=lambda: 0.0, continue_split=handed_over.append)
    assert again.status == "skipped" and len(handed_over) == limit + 1


def test_the_resume_bound_grows_with_the_file_and_allows_for_gzip_and_retries():
    from splitter.split import max_split_resumes

    mib = 1024 * 1024
    small = max_split_resumes(1000, gzip=False, checkpoint_bytes=64 * mib)
    assert small == 16  # (2 passes x 1 checkpoint + 2) hops x (1 run + 1 lost reply + 2 retries)
    big = max_split_resumes(10 * 1024 * mib, gzip=False, checkpoint_bytes=64 * mib)
    # Each pass crosses 2 x 10 GiB / 64 MiB checkpoints at most (UTF-16 parsed as UTF-8).
    assert big == (2 * 320 + 2) * 4
    # A gzip object may inflate ~1032-fold: its bound is that much larger, still finite.
    assert max_split_resumes(mib, gzip=True, checkpoint_bytes=64 * mib) == (2 * 17 + 2) * 4


class FailingSQS:
    """Accepts the first SendMessageBatch, fails every later one."""

    def __init__(self) -> None:
        self.calls = 0

    def send_message_batch(self, **params):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("SQS is down")
        return {"Successful": [{"Id": e["Id"]} for e in params["Entries"]], "Failed": []}


def test_the_enqueuer_never_reports_success_for_a_failed_send():
    from splitter.enqueue import EnqueueError, Enqueuer

    enqueuer = Enqueuer(FailingSQS(), "url", workers=2)
    for i in range(40):
        enqueuer.send(f"m{i}")
    with pytest.raises(EnqueueError, match="SQS is down"):
        enqueuer.drain()
    with pytest.raises(EnqueueError):
        enqueuer.close()


def test_a_header_field_past_csvs_field_limit_fails_the_job_with_its_line(aws, stack, runtime):
    body = ("\n" + "h" * 300 + ",offer_id\r\n1,2\r\n").encode()  # the header is on line 2
    aws.s3.put_object(Bucket=stack.settings.bucket, Key="uploads/wide.csv", Body=body)
    saved = csv.field_size_limit(200)  # stands in for a header field over 64 MiB
    try:
        result = handler.lambda_handler(s3_event(stack.settings.bucket, "uploads/wide.csv"), context())
    finally:
        csv.field_size_limit(saved)
    job = result["jobs"][0]
    assert job["status"] == "failed"
    assert "wide.csv: line 2: the header cannot be read: field larger than field limit" in job["error"]
    assert drain(aws.sqs, stack.settings.rows_queue_url) == []


def parallel_runtime(runtime, aws, range_size: int):
    """A runtime that splits anything over 4 kB in ranges of `range_size`, its steps
    collected in `events` (in place of the self-invoke)."""
    settings = type(runtime.settings)(**{**runtime.settings.__dict__, "range_bytes": 1024,
                                         "parallel_threshold_bytes": 4096,
                                         "parallel_range_bytes": range_size})
    events: list[dict] = []
    return settings, events, Runtime(settings, runtime.spec, aws, continue_split=events.append)


def test_duplicate_parallel_steps_never_multiply_the_next_stage(aws, stack, runtime):
    """Every scan and range-split event delivered twice (and the S3 event): each stage
    still starts the next exactly once per range, no duplicate reads the object again,
    and every row is sent once."""
    from splitter.split import split_event

    rows = make_rows(600)
    put_csv(aws, stack.settings.bucket, "uploads/wide.csv", rows)
    settings, events, parallel = parallel_runtime(runtime, aws, 6000)
    gets = 0
    original = aws.s3.get_object

    def counting(**params):
        nonlocal gets
        gets += 1
        return original(**params)

    aws.s3.get_object = counting
    for _ in range(2):  # a duplicate S3 event
        split_event(s3_event(stack.settings.bucket, "uploads/wide.csv"), parallel)
    started = {kind: 0 for kind in ("fanout_scan", "fanout_range")}
    reads_by_first_deliveries = 0
    while events:
        event = events.pop(0)
        (kind,) = event
        started[kind] += 1
        for delivery in range(2):
            before = gets
            split_event(event, parallel)
            if delivery == 1:
                assert gets == before, f"a duplicate {kind} read the object again"
            else:
                reads_by_first_deliveries += gets - before
    parts = started["fanout_scan"]
    assert parts >= 4
    assert started == {"fanout_scan": parts, "fanout_range": parts}
    assert reads_by_first_deliveries > 0
    job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, split_event(
        s3_event(stack.settings.bucket, "uploads/wide.csv"), parallel)[0].job)
    assert job["rows_read"] == 600 and job["status"] == ledger.RUNNING
    messages = rows_messages(aws.sqs, settings.rows_queue_url)
    assert sorted(r[1] for m in messages for r in m.rows) == sorted(r[1] for r in rows)


def test_a_checkpoint_from_an_earlier_version_fails_the_job_instead_of_resuming_inexactly(
        aws, stack, runtime):
    from splitter.split import split_object

    put_csv(aws, stack.settings.bucket, "uploads/old.csv", make_rows(50))
    first = split_object(runtime, stack.settings.bucket, "uploads/old.csv", owner="old",
                         continue_split=lambda payload: None)
    assert first.status == "split"  # small: done in one go; now make it look resumable
    table = stack.settings.ledger_table_name
    aws.dynamodb.update_item(
        TableName=table, Key={"pk": {"S": first.job}, "sk": {"S": ledger.JOB_SK}},
        UpdateExpression="SET #st = :s, #cp = :cp, split_lease_until = :z",
        ExpressionAttributeNames={"#st": "status", "#cp": "checkpoint"},
        ExpressionAttributeValues={":s": {"S": ledger.SPLITTING}, ":z": {"N": "0"},
                                   ":cp": {"S": '{"offset":100,"line":3,"seq":1}'}})
    resumed = split_object(runtime, stack.settings.bucket, "uploads/old.csv", owner="new",
                           continue_split=lambda payload: None)
    assert resumed.status == "failed" and "earlier fanout version" in resumed.error


@pytest.mark.parametrize("stale", ["check step", "range step", "scan result"])
def test_a_parallel_split_planned_by_an_earlier_version_fails_instead_of_finishing_inexactly(
        aws, stack, runtime, stale):
    from splitter import fan
    from splitter.split import split_event

    put_csv(aws, stack.settings.bucket, "uploads/old.csv", make_rows(300))
    settings, events, parallel = parallel_runtime(runtime, aws, 4000)
    planned = split_event(s3_event(stack.settings.bucket, "uploads/old.csv"), parallel)[0]
    scans = list(events)
    events.clear()
    if stale == "scan result":  # an earlier version's scan stored parity counts
        first = scans.pop(0)[fan.SCAN_KEY]
        aws.dynamodb.put_item(TableName=settings.ledger_table_name, Item={
            "pk": {"S": planned.job}, "sk": {"S": "scan#00000"},
            "task": {"S": json.dumps(first)}, "stats": {"S": '{"quote_parity": 0}'}})
        aws.dynamodb.update_item(
            TableName=settings.ledger_table_name, Key={"pk": {"S": planned.job}, "sk": {"S": ledger.JOB_SK}},
            UpdateExpression="ADD scans_done :i", ExpressionAttributeValues={":i": {"NS": ["0"]}})
        for event in scans:
            result = split_event(event, parallel)[0]
    else:
        task = {**scans[0][fan.SCAN_KEY], "state": {"offset": 0, "quote_parity": 0}}
        kind = fan.CHECK_KEY if stale == "check step" else fan.RANGE_KEY
        result = split_event({kind: task}, parallel)[0]
    assert result.status == "failed" and "earlier fanout version" in result.error
    job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, planned.job)
    assert job["status"] == ledger.FAILED
    assert drain(aws.sqs, settings.rows_queue_url) == []


def test_a_parallel_split_retried_after_it_finished_but_before_it_settled_still_settles(
        aws, stack, runtime, monkeypatch):
    """The writers count every message before the last range finishes the split; that
    range then dies before it settles (a crash, a timeout). Its retry finds the split
    finished and must settle the job anyway: nothing else would, since no writer is left
    to. The job completes with exact counts and its summary is published once."""
    from splitter import fan
    from splitter.split import split_event
    from writer import handler as writer_handler

    # Given a queue subscribed to the completion topic, and 300 rows split in parallel
    summaries = aws.sqs.create_queue(QueueName="summaries")["QueueUrl"]
    summaries_arn = aws.sqs.get_queue_attributes(
        QueueUrl=summaries, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(TopicArn=stack.settings.topic_arn, Protocol="sqs", Endpoint=summaries_arn,
                      Attributes={"RawMessageDelivery": "true"})
    put_csv(aws, stack.settings.bucket, "uploads/settle.csv", make_rows(300))
    settings, events, parallel = parallel_runtime(runtime, aws, 4000)
    writer_handler.runtime.use(Runtime(settings, runtime.spec, aws))

    def write_everything() -> None:
        while messages := drain(aws.sqs, settings.rows_queue_url):
            for start in range(0, len(messages), 10):
                response = writer_handler.lambda_handler(
                    sqs_event(messages[start:start + 10], stack.rows_queue_arn), context())
                assert response["batchItemFailures"] == []

    real_finish, real_settle = ledger.finish_split, fan.settle_job
    settles: list[str] = []

    def finish_after_the_writers(*args, **kwargs):
        write_everything()  # every message is counted while the job is still SPLITTING
        return real_finish(*args, **kwargs)

    def dies_the_first_time(rt, job_item, **kwargs):
        settles.append(job_item["status"]["S"])
        if len(settles) == 1:
            raise RuntimeError("the splitter died before it settled")
        real_settle(rt, job_item, **kwargs)

    monkeypatch.setattr(ledger, "finish_split", finish_after_the_writers)
    monkeypatch.setattr(fan, "settle_job", dies_the_first_time)
    try:
        # When every step runs, the last range dying after it finished the split
        split_event(s3_event(stack.settings.bucket, "uploads/settle.csv"), parallel)
        last_range = None
        while events:
            event = events.pop(0)
            try:
                split_event(event, parallel)
            except RuntimeError:
                last_range = event  # Lambda would retry this invocation
        assert last_range is not None and "fanout_range" in last_range and settles == ["RUNNING"]
        job_id = last_range["fanout_range"]["job"]
        job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, job_id)
        assert job["status"] == ledger.RUNNING  # every message counted, and nobody to finish it
        assert job["messages_reported"] == job["messages_total"] > 0
        assert drain(aws.sqs, summaries) == []
        # Then its retry completes the job, with exact counts, and publishes the summary
        split_event(last_range, parallel)
        assert settles == ["RUNNING", "RUNNING"]
        job = ledger.get_job(aws.dynamodb, settings.ledger_table_name, job_id)
        assert (job["status"], job["rows_read"], job["rows_written"], job["rows_rejected"],
                job["rows_superseded"]) == (ledger.COMPLETE, 300, 300, 0, 0)
        (published,) = [json.loads(m["Body"]) for m in drain(aws.sqs, summaries)]
        assert published == ledger.completion_summary(job) | {
            "JOB_ID": job_id, "STATUS": ledger.COMPLETE, "TOTAL_NUMBER_OF_ROWS_READ": 300,
            "TOTAL_NUMBER_OF_ITEMS_WRITTEN": 300, "TOTAL_NUMBER_OF_ITEMS_IN_ERROR": 0}
        assert aws.dynamodb.scan(TableName=settings.table_name, Select="COUNT")["Count"] == 300
        # And, marked done, a later duplicate stops: no second settle, no second summary
        split_event(last_range, parallel)
        assert len(settles) == 2 and drain(aws.sqs, summaries) == []
    finally:
        writer_handler.runtime.use(None)


def test_a_resumed_split_keeps_its_jobs_mode_whatever_the_spec_says_now(aws, stack, runtime):
    """A put job handed over to a continuation after a spec with another mode was deployed
    (a continuation runs the function's latest code and environment): the rest of the
    file still goes out as puts, never as deletes."""
    from dataclasses import replace

    from splitter.split import split_object

    rows = make_rows(400)
    put_csv(aws, stack.settings.bucket, "uploads/mode.csv", rows)
    settings = replace(runtime.settings, range_bytes=1024, checkpoint_bytes=4096)
    small = Runtime(settings, runtime.spec, aws)
    assert small.spec.mode == "put"
    handed_over: list[dict] = []
    first = split_object(small, stack.settings.bucket, "uploads/mode.csv", owner="first",
                         remaining_s=lambda: 0.0, continue_split=handed_over.append)
    assert first.status == "continued"
    redeployed = replace(small, spec=replace(small.spec, mode="delete"))
    second = split_object(redeployed, stack.settings.bucket, "uploads/mode.csv", owner="second",
                          remaining_s=lambda: 1e9, continue_split=handed_over.append)
    assert second.status == "split" and second.rows_read == 400
    messages = rows_messages(aws.sqs, settings.rows_queue_url)
    assert [r for m in messages for r in m.rows] == rows
    assert {m.mode for m in messages} == {"put"}
