"""`fanout ingest s3://BUCKET/PREFIX --stack`: what is listed, skipped, started and followed,
on moto through the strict layer, with the real splitter and writer handlers behind a
stand-in for Lambda's asynchronous invoke."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from fanout import ledger
from fanout.aws import Clients
from fanout.contract import Source, job_id_for
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout_cli.cli import main
from fanout_cli.failures import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from fanout_cli.local import prefix
from fanout_cli.local.prefix import (
    MAX_READS_PER_POLL,
    PrefixError,
    PrefixIngest,
    S3Prefix,
    ingest_prefix,
    object_created_event,
    parse_s3_uri,
    readable_part,
)
from fanout_cli.local.resources import LocalStack
from fanout_cli.local.stack import DeployedStack
from splitter import handler as splitter_handler
from splitter.split import objects_in_event
from tests.integration.helpers import context, drain, sqs_event
from tests.strict_aws import Faults, StrictLayer
from writer import handler as writer_handler

SOURCE = "data-lake"
STACK = "fanout"


class SplitterLambda:
    """Lambda's asynchronous invoke of the splitter: the event is recorded and, with
    `run`, handled by the real splitter and then the writer until the rows queue is empty
    (so the job is finished when the CLI first polls)."""

    def __init__(self, local: LocalStack, *, run: bool = True) -> None:
        self.local, self.run, self.events = local, run, []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        assert (FunctionName, InvocationType) == ("fanout-splitter", "Event")
        event = json.loads(Payload)
        self.events.append(event)
        if self.run:
            splitter_handler.lambda_handler(event, context())
            while messages := drain(splitter_handler.runtime.get().clients.sqs,
                                    self.local.settings.rows_queue_url):
                for start in range(0, len(messages), 10):
                    writer_handler.lambda_handler(
                        sqs_event(messages[start:start + 10], self.local.rows_queue_arn), context())
        return {"StatusCode": 202}


@pytest.fixture
def strict() -> StrictLayer:
    return StrictLayer(Faults(unprocessed_keys_rate=0.3, seed=3))


@pytest.fixture
def clients(aws: Clients, strict: StrictLayer) -> Clients:
    return strict.wrap(aws)


@pytest.fixture
def runtimes(clients: Clients, stack: LocalStack, spec: Spec):
    runtime = Runtime(stack.settings, spec, clients)
    splitter_handler.runtime.use(runtime)
    writer_handler.runtime.use(runtime)
    yield runtime
    splitter_handler.runtime.use(None)
    writer_handler.runtime.use(None)


@pytest.fixture
def deployed(clients: Clients, stack: LocalStack) -> DeployedStack:
    settings = stack.settings
    clients.s3.create_bucket(Bucket=SOURCE)
    return DeployedStack(STACK, {
        "BucketName": settings.bucket, "UploadPrefix": "uploads/",
        "LedgerTableName": settings.ledger_table_name, "RowsQueueUrl": settings.rows_queue_url,
        "TableName": settings.table_name, "SplitterFunctionName": "fanout-splitter",
        "SplitterLogGroup": "/aws/fanout/fanout/splitter", "SourceBuckets": SOURCE,
    }, clients.s3, clients.dynamodb, clients.sqs)


def csv_bytes(tag: str, rows: int, *, empty_account_at: int | None = None) -> tuple[bytes, list[dict[str, str]]]:
    records = [{"account": "" if i == empty_account_at else f"acct-{i % 5}",
                "offer_id": f"{tag}-{i}", "risk": f"r{i % 3}"} for i in range(rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["account", "offer_id", "risk"])
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode(), records


def run(deployed: DeployedStack, uri: str, lambda_: Any, **options: Any) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = _ingest(deployed, uri, lambda_, out, err, **options)
    return code, json.loads(out.getvalue()), err.getvalue()


def _ingest(deployed: DeployedStack, uri: str, lambda_: Any, out: io.StringIO,
            err: io.StringIO, as_json: bool = True, **options: Any) -> int:
    original = prefix.find_stack
    prefix.find_stack = lambda name, endpoint_url=None: deployed  # the stack is given here
    try:
        return ingest_prefix(uri, STACK, as_json=as_json, stdout=out, stderr=err,
                             lambda_client=lambda_, poll_s=0.0, **options)
    finally:
        prefix.find_stack = original


def items(clients: Clients, table: str) -> list[dict[str, str]]:
    return sorted(({k: v["S"] for k, v in item.items()}
                   for item in clients.dynamodb.scan(TableName=table)["Items"]),
                  key=lambda i: i["offer_id"])


def job_items(clients: Clients, ledger_table: str) -> set[str]:
    return {i["pk"]["S"] for i in clients.dynamodb.scan(TableName=ledger_table)["Items"]
            if i["sk"]["S"] == "job"}


# ---------------------------------------------------------------------- the event and the grant

@pytest.mark.parametrize("key", ["in/my file+v2 é.csv", "a/b/c%20d.csv", "plain.csv"])
def test_the_event_is_read_by_the_splitter_as_the_object_it_names(key: str, runtime_settings) -> None:
    event = object_created_event(SOURCE, key, size=10, etag="abc", version="v7", region="us-east-1")
    record = event["Records"][0]
    assert record["eventName"].startswith("ObjectCreated") and record["eventSource"] == "aws:s3"
    assert unquote_plus(record["s3"]["object"]["key"]) == key and " " not in record["s3"]["object"]["key"]
    assert record["s3"]["object"] | {"key": key} == {
        "key": key, "size": 10, "eTag": "abc", "versionId": "v7",
        "sequencer": record["s3"]["object"]["sequencer"]}
    assert list(objects_in_event(event, runtime_settings)) == [(SOURCE, key, "v7")]
    unversioned = object_created_event(SOURCE, key, size=1, etag="e", version=None, region="us-east-1")
    assert "versionId" not in unversioned["Records"][0]["s3"]["object"]


@pytest.fixture
def runtime_settings(stack: LocalStack, spec: Spec, aws: Clients) -> Runtime:
    return Runtime(stack.settings, spec, aws)


def test_another_buckets_errors_prefix_is_data_to_the_splitter(runtime_settings: Runtime) -> None:
    # The stack's own outputs are ignored in its own bucket only.
    own = runtime_settings.settings.bucket
    for bucket, expected in ((own, []), (SOURCE, [(SOURCE, "errors/x.csv", None)])):
        event = object_created_event(bucket, "errors/x.csv", size=1, etag="e", version=None,
                                     region="us-east-1")
        assert list(objects_in_event(event, runtime_settings)) == expected


@pytest.mark.parametrize("text, expected", [
    ("s3://b/p/", S3Prefix("b", "p/")), ("s3://b", S3Prefix("b", "")),
    ("s3://b/", S3Prefix("b", "")), ("s3://b/a//c", S3Prefix("b", "a//c"))])
def test_s3_uris(text: str, expected: S3Prefix) -> None:
    assert parse_s3_uri(text) == expected


def test_an_s3_uri_without_a_bucket_is_a_usage_error() -> None:
    with pytest.raises(PrefixError) as raised:
        parse_s3_uri("s3:///p")
    assert raised.value.code == EXIT_USAGE


def test_what_the_splitter_may_read(deployed: DeployedStack) -> None:
    own = deployed.bucket
    assert readable_part(deployed, S3Prefix(SOURCE, "")) == ""  # granted: all of it
    assert readable_part(deployed, S3Prefix(own, "uploads/2024/")) == ""
    assert readable_part(deployed, S3Prefix(own, "")) == "uploads/"  # the rest is skipped
    # The fix names the buckets granted already too (the option lists them all)
    for target, fix in ((S3Prefix("elsewhere", "x/"), f"-c source_buckets={SOURCE},elsewhere"),
                        (S3Prefix(own, "exports/"), f"-c source_buckets={SOURCE},{own}")):
        with pytest.raises(PrefixError) as raised:
            readable_part(deployed, target)
        assert raised.value.code == EXIT_USAGE and fix in str(raised.value)
        assert target.bucket in str(raised.value)


def test_an_ungranted_bucket_is_refused_before_anything_is_listed_or_started(
        deployed: DeployedStack, local_lambda, strict: StrictLayer) -> None:
    deployed.s3.create_bucket(Bucket="elsewhere")
    deployed.s3.put_object(Bucket="elsewhere", Key="a.csv", Body=csv_bytes("x", 3)[0])
    with pytest.raises(PrefixError, match="may not read bucket 'elsewhere'.*-c source_buckets=data-lake,elsewhere"):
        _ingest(deployed, "s3://elsewhere/", local_lambda, io.StringIO(), io.StringIO())
    assert local_lambda.events == [] and strict.record.calls["batch_get_item"] == 0


@pytest.fixture
def local_lambda(stack: LocalStack, runtimes: Runtime) -> SplitterLambda:
    return SplitterLambda(stack)


# ---------------------------------------------------------------------- loading, re-running

def test_a_prefix_loads_every_csv_once_and_a_rerun_starts_nothing(
        deployed: DeployedStack, clients: Clients, stack: LocalStack, local_lambda: SplitterLambda,
        strict: StrictLayer) -> None:
    s3 = clients.s3
    plain, plain_rows = csv_bytes("plain", 60)
    packed, packed_rows = csv_bytes("packed", 30)
    nested, nested_rows = csv_bytes("nested", 7)
    s3.put_object(Bucket=SOURCE, Key="lake/a.csv", Body=plain)
    s3.put_object(Bucket=SOURCE, Key="lake/b.csv.gz", Body=gzip.compress(packed))
    s3.put_object(Bucket=SOURCE, Key="lake/deep/er/c d.csv", Body=nested)
    s3.put_object(Bucket=SOURCE, Key="lake/notes.txt", Body=b"not data")
    s3.put_object(Bucket=SOURCE, Key="lake/folder/", Body=b"")
    s3.put_object(Bucket=SOURCE, Key="lake/empty.csv", Body=b"")
    s3.put_object(Bucket=SOURCE, Key="other/z.csv", Body=plain)  # outside the prefix

    code, result, _ = run(deployed, f"s3://{SOURCE}/lake/", local_lambda)

    assert code == EXIT_OK, result
    by_key = {o["key"]: o for o in result["objects"]}
    assert sorted(by_key) == ["lake/a.csv", "lake/b.csv.gz", "lake/deep/er/c d.csv",
                              "lake/empty.csv", "lake/folder/", "lake/notes.txt"]
    assert {k: o["reason"] for k, o in by_key.items() if o["action"] == "skipped"} == {
        "lake/empty.csv": "empty (0 bytes)", "lake/folder/": "a folder marker (the key ends with /)",
        "lake/notes.txt": "not .csv or .csv.gz"}
    loaded = {k: o for k, o in by_key.items() if o["action"] == "started"}
    assert {k: (o["status"], o["rows_read"], o["rows_written"], o["rows_rejected"],
                o["rows_superseded"]) for k, o in loaded.items()} == {
        "lake/a.csv": ("COMPLETE", 60, 60, 0, 0), "lake/b.csv.gz": ("COMPLETE", 30, 30, 0, 0),
        "lake/deep/er/c d.csv": ("COMPLETE", 7, 7, 0, 0)}
    # The job ids are the splitter's own (bucket, key, ETag), and the ledger agrees
    for key, o in loaded.items():
        etag = s3.head_object(Bucket=SOURCE, Key=key)["ETag"].strip('"')
        assert o["job"] == job_id_for(Source(SOURCE, key, etag))
        assert ledger.get_job(clients.dynamodb, stack.settings.ledger_table_name, o["job"])[
            "rows_written"] == o["rows_read"]
    assert result["total"]["rows_written"] == 97 and result["total"]["started"] == 3
    assert items(clients, stack.settings.table_name) == sorted(
        plain_rows + packed_rows + nested_rows, key=lambda r: r["offer_id"])
    assert len(local_lambda.events) == 3

    # When it runs again: nothing is invoked, no job is added, and each says so
    jobs_before = job_items(clients, stack.settings.ledger_table_name)
    code, again, _ = run(deployed, f"s3://{SOURCE}/lake/", local_lambda)
    assert code == EXIT_OK and len(local_lambda.events) == 3
    assert job_items(clients, stack.settings.ledger_table_name) == jobs_before
    assert {o["key"]: (o["action"], o["status"], o.get("rows_written")) for o in again["objects"]
            if o["action"] != "skipped"} == {
        "lake/a.csv": ("already_loaded", "COMPLETE", 60),
        "lake/b.csv.gz": ("already_loaded", "COMPLETE", 30),
        "lake/deep/er/c d.csv": ("already_loaded", "COMPLETE", 7)}

    # When one object is replaced with new content (a new ETag): only it is loaded again
    replaced, replaced_rows = csv_bytes("replaced", 12)
    s3.put_object(Bucket=SOURCE, Key="lake/a.csv", Body=replaced)
    code, third, _ = run(deployed, f"s3://{SOURCE}/lake/", local_lambda)
    assert code == EXIT_OK and len(local_lambda.events) == 4
    (started,) = [o for o in third["objects"] if o["action"] == "started"]
    assert (started["key"], started["rows_written"]) == ("lake/a.csv", 12)
    assert started["job"] not in jobs_before
    assert [r for r in items(clients, stack.settings.table_name)
            if r["offer_id"].startswith("replaced")] == sorted(replaced_rows,
                                                               key=lambda r: r["offer_id"])
    assert strict.record.violations == [] and strict.record.injected["unprocessed_keys"] > 0


def test_the_text_summary_has_a_line_per_object_and_a_total(
        deployed: DeployedStack, clients: Clients, local_lambda: SplitterLambda) -> None:
    clients.s3.put_object(Bucket=SOURCE, Key="t/one.csv", Body=csv_bytes("one", 5)[0])
    clients.s3.put_object(Bucket=SOURCE, Key="t/readme.md", Body=b"# hi")
    out, err = io.StringIO(), io.StringIO()
    assert _ingest(deployed, f"s3://{SOURCE}/t/", local_lambda, out, err, as_json=False) == EXIT_OK
    lines = out.getvalue().splitlines()
    (one,) = [line for line in lines if "t/one.csv" in line]
    assert "COMPLETE" in one and "read 5, written 5, rejected 0, superseded 0" in one
    (readme,) = [line for line in lines if "t/readme.md" in line]
    assert "skipped: not .csv or .csv.gz" in readme
    assert re.fullmatch(r"total      1 job\(s\): read 5, written 5, rejected 0, superseded 0 "
                        r"· \d+:\d\d( \([\d,.]+ rows/s\))?", lines[-1]), lines[-1]
    assert "1 object(s)" not in err.getvalue() and "2 object(s) listed, 1 job(s) started" in err.getvalue()
    # A second run says, per object, that it was loaded already
    out = io.StringIO()
    assert _ingest(deployed, f"s3://{SOURCE}/t/", local_lambda, out, io.StringIO(),
                   as_json=False) == EXIT_OK
    assert any("t/one.csv" in line and "already loaded: COMPLETE" in line
               for line in out.getvalue().splitlines())


def test_the_stacks_own_bucket_loads_only_what_its_splitter_may_read(
        deployed: DeployedStack, clients: Clients, local_lambda: SplitterLambda) -> None:
    own = deployed.bucket
    body = csv_bytes("own", 4)[0]
    for key in ("uploads/x.csv", "errors/job/1.csv", "json-copy/job/1.csv", "exports/y.csv"):
        clients.s3.put_object(Bucket=own, Key=key, Body=body)
    code, result, _ = run(deployed, f"s3://{own}/", local_lambda)
    assert code == EXIT_OK
    reasons = {o["key"]: o.get("reason") for o in result["objects"]}
    assert reasons["uploads/x.csv"] is None
    assert reasons["errors/job/1.csv"] == "the stack's own output (errors/)"
    assert reasons["json-copy/job/1.csv"] == "the stack's own output (json-copy/)"
    assert reasons["exports/y.csv"].startswith(f"outside s3://{own}/uploads/")
    assert len(local_lambda.events) == 1


def test_a_versioned_object_is_loaded_in_its_current_version(
        deployed: DeployedStack, clients: Clients, local_lambda: SplitterLambda) -> None:
    s3 = clients.s3
    s3.create_bucket(Bucket="versioned-lake")
    s3.put_bucket_versioning(Bucket="versioned-lake", VersioningConfiguration={"Status": "Enabled"})
    deployed.outputs["SourceBuckets"] = f"{SOURCE},versioned-lake"
    s3.put_object(Bucket="versioned-lake", Key="v.csv", Body=csv_bytes("old", 3)[0])
    current = s3.put_object(Bucket="versioned-lake", Key="v.csv", Body=csv_bytes("new", 4)[0])
    code, result, _ = run(deployed, "s3://versioned-lake/", local_lambda)
    assert code == EXIT_OK
    (obj,) = result["objects"]
    (event,) = local_lambda.events
    assert event["Records"][0]["s3"]["object"]["versionId"] == current["VersionId"]
    assert obj["job"] == job_id_for(Source("versioned-lake", "v.csv", current["ETag"].strip('"'),
                                           current["VersionId"]))
    assert (obj["status"], obj["rows_written"]) == ("COMPLETE", 4)


def test_an_object_stored_before_versioning_keeps_the_job_its_upload_started(
        deployed: DeployedStack, clients: Clients, local_lambda: SplitterLambda,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its version id is "null": its S3 event had none, so its job is named by the ETag,
    and a re-run after versioning was enabled finds that job instead of loading it again."""
    s3 = clients.s3
    s3.create_bucket(Bucket="later-versioned")
    deployed.outputs["SourceBuckets"] = f"{SOURCE},later-versioned"
    before = s3.put_object(Bucket="later-versioned", Key="old.csv", Body=csv_bytes("old", 3)[0])
    s3.put_bucket_versioning(Bucket="later-versioned",
                             VersioningConfiguration={"Status": "Enabled"})
    real = deployed.s3.head_object

    def head_object(**params: Any) -> Any:  # AWS says "null" for it; moto says nothing
        return {"VersionId": "null"} | real(**params)

    monkeypatch.setattr(deployed.s3, "head_object", head_object)
    code, result, _ = run(deployed, "s3://later-versioned/", local_lambda)
    assert code == EXIT_OK
    (obj,) = result["objects"]
    (event,) = local_lambda.events
    assert "versionId" not in event["Records"][0]["s3"]["object"]
    assert obj["job"] == job_id_for(Source("later-versioned", "old.csv",
                                           before["ETag"].strip('"'), None))


def test_an_object_head_object_refuses_is_skipped_and_the_rest_load(
        deployed: DeployedStack, clients: Clients, local_lambda: SplitterLambda,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = clients.s3
    s3.create_bucket(Bucket="partly-readable")
    s3.put_bucket_versioning(Bucket="partly-readable",
                             VersioningConfiguration={"Status": "Enabled"})
    deployed.outputs["SourceBuckets"] = f"{SOURCE},partly-readable"
    for key in ("a.csv", "theirs.csv"):
        s3.put_object(Bucket="partly-readable", Key=key, Body=csv_bytes(key[0], 2)[0])
    real = deployed.s3.head_object

    def head_object(**params: Any) -> Any:
        if params["Key"] == "theirs.csv":  # another account's object, say
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        return real(**params)

    monkeypatch.setattr(deployed.s3, "head_object", head_object)
    code, result, _ = run(deployed, "s3://partly-readable/", local_lambda)
    by_key = {o["key"]: o for o in result["objects"]}
    assert (by_key["a.csv"]["status"], by_key["a.csv"]["rows_written"]) == ("COMPLETE", 2)
    assert "HeadObject refused it (403" in str(by_key["theirs.csv"])
    assert len(local_lambda.events) == 1 and code == EXIT_OK


def test_the_exit_code_is_the_worst_jobs(deployed: DeployedStack, clients: Clients,
                                         local_lambda: SplitterLambda) -> None:
    s3 = clients.s3
    s3.put_object(Bucket=SOURCE, Key="mixed/good.csv", Body=csv_bytes("good", 5)[0])
    s3.put_object(Bucket=SOURCE, Key="mixed/one-rejected.csv",
                  Body=csv_bytes("rej", 5, empty_account_at=2)[0])
    code, result, _ = run(deployed, f"s3://{SOURCE}/mixed/", local_lambda)
    assert code == EXIT_REJECTED
    assert result["total"]["rows_rejected"] == 1 and result["total"]["rows_written"] == 9
    s3.put_object(Bucket=SOURCE, Key="mixed/broken.csv",
                  Body=b'account,offer_id,risk\na,1,low\nc,"3,low\n')
    code, result, _ = run(deployed, f"s3://{SOURCE}/mixed/", local_lambda)
    assert code == EXIT_FAILED
    (broken,) = [o for o in result["objects"] if o["key"] == "mixed/broken.csv"]
    assert broken["status"] == "FAILED" and "line 3" in broken["error"]


def test_nothing_to_load_is_a_failure_that_says_why(deployed: DeployedStack, clients: Clients,
                                                    local_lambda: SplitterLambda) -> None:
    clients.s3.put_object(Bucket=SOURCE, Key="docs/a.txt", Body=b"x")
    code, result, err = run(deployed, f"s3://{SOURCE}/docs/", local_lambda)
    assert code == EXIT_FAILED and result["objects"][0]["status"] == "SKIPPED"
    assert "nothing to load under s3://data-lake/docs/: 1 object(s), none a CSV" in err
    code, _, err = run(deployed, f"s3://{SOURCE}/nothing-here/", local_lambda)
    assert code == EXIT_FAILED and "no objects" in err


# ---------------------------------------------------------------------- following many jobs

def test_following_reads_a_bounded_number_of_jobs_a_poll_and_never_a_finished_one(
        deployed: DeployedStack, clients: Clients, stack: LocalStack, strict: StrictLayer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 260 objects, listed 100 a page, whose jobs never start (the invoke is only recorded)
    strict.faults.unprocessed_keys_rate = 0.0  # count reads, not retries
    monkeypatch.setattr(prefix, "LIST_PAGE_KEYS", 100)
    body = csv_bytes("many", 2)[0]
    for i in range(260):
        clients.s3.put_object(Bucket=SOURCE, Key=f"many/{i:04d}.csv", Body=body)
    recorder = SplitterLambda(stack, run=False)
    now = [0.0]
    reads_per_poll: list[int] = []
    last = [0]

    def reads_since_last() -> int:
        calls = strict.record.calls["batch_get_item"]
        last[0], delta = calls, calls - last[0]
        return delta

    def sleep(seconds: float) -> None:
        reads_per_poll.append(reads_since_last())
        now[0] += 1.0

    run_ = PrefixIngest(deployed, S3Prefix(SOURCE, "many/"), lambda_client=recorder,
                        clock=lambda: now[0], sleep=sleep, start_timeout_s=3.0)
    run_.start()
    # Deciding costs one BatchGetItem per listed page (100 keys), not a read per object
    assert len(recorder.events) == 260 and reads_since_last() == 3
    run_.follow(prefix.ProgressDisplay(None, label="x"))
    reads_per_poll.append(reads_since_last())
    # Then each poll read at most MAX_READS_PER_POLL x 50 jobs, rotating through all 260;
    # a job that ended (here NOT_STARTED, at the start timeout) was not read again: the last
    # poll read only the 80 left
    assert reads_per_poll == [MAX_READS_PER_POLL] * 4 + [2]
    assert {o.status for o in run_.objects} == {"NOT_STARTED"}
    assert run_.exit_code() == EXIT_FAILED
    assert "has not started it after 3 s" in run_.objects[0].error


def test_ctrl_c_says_how_to_follow(deployed: DeployedStack, clients: Clients,
                                   stack: LocalStack) -> None:
    clients.s3.put_object(Bucket=SOURCE, Key="slow/a.csv", Body=csv_bytes("slow", 2)[0])

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    out, err = io.StringIO(), io.StringIO()
    code = _ingest(deployed, f"s3://{SOURCE}/slow/", SplitterLambda(stack, run=False), out, err,
                   sleep=interrupt)
    assert code == 130 and out.getvalue() == ""
    etag = clients.s3.head_object(Bucket=SOURCE, Key="slow/a.csv")["ETag"].strip('"')
    job = job_id_for(Source(SOURCE, "slow/a.csv", etag))
    assert f"fanout status {job} --stack {STACK} --follow" in err.getvalue()
    assert f"fanout ingest s3://{SOURCE}/slow/ --stack {STACK}" in err.getvalue()


def test_without_a_stack_an_s3_uri_is_one_line_exit_2(capsys) -> None:
    assert main(["ingest", "s3://bucket/prefix/"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--stack NAME" in err and "fanout serve" in err


def test_a_caller_who_may_not_invoke_the_splitter_is_told_what_to_grant(
        deployed: DeployedStack, clients: Clients) -> None:
    from botocore.exceptions import ClientError

    class Denied:
        def invoke(self, **params: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "AccessDeniedException",
                                         "Message": "not authorized to perform lambda:InvokeFunction"}},
                              "Invoke")

    clients.s3.put_object(Bucket=SOURCE, Key="d/a.csv", Body=csv_bytes("d", 2)[0])
    with pytest.raises(PrefixError) as raised:
        _ingest(deployed, f"s3://{SOURCE}/d/", Denied(), io.StringIO(), io.StringIO())
    message = str(raised.value)
    assert raised.value.code == EXIT_FAILED
    assert "cannot start the splitter fanout-splitter for d/a.csv" in message
    assert "AccessDeniedException" in message and "needs lambda:InvokeFunction" in message
