"""The stack deployed with `-c existing_table=... -c gzip=true -c versioned=true`: a .csv.gz
upload into a table created beforehand, two versions of one key, then a writer that keeps
failing (its table gone) and finally `cdk destroy`. The tests run in this order."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.deployed.conftest import EXISTING_TABLE, VARIANT_VISIBILITY_TIMEOUT_S, Local, create_table
from tests.deployed.helpers import BIN, finished_job, queue_depth, run, scan, wait_until, write_csv


def upload_job(local: Local, variant: ministack.Deployment, key: str) -> str:
    return job_for_key(find_stack(variant.stack_name, local.endpoint_url), key)


def test_gzip_upload_loads_into_the_existing_table(local: Local, variant: ministack.Deployment,
                                                   tmp_path: Path):
    plain = tmp_path / "zipped.csv"
    records = write_csv(plain, 90, tag="gz")
    packed = tmp_path / "zipped.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    done = run([str(BIN / "aws"), "s3", "cp", str(packed),
                f"s3://{variant.outputs['BucketName']}/uploads/zipped.csv.gz"], local.endpoint_url)
    assert done.returncode == 0, done.stderr
    job = upload_job(local, variant, "uploads/zipped.csv.gz")
    item = finished_job(local.client("dynamodb"), variant.outputs["LedgerTableName"], job)
    assert item["status"] == ledger.COMPLETE and item["rows_written"] == 90, item
    assert variant.outputs["TableName"] == EXISTING_TABLE
    loaded = [i for i in scan(local.client("dynamodb"), EXISTING_TABLE) if i["offer_id"].startswith("gz")]
    assert sorted(loaded, key=lambda i: i["offer_id"]) == sorted(records, key=lambda r: r["offer_id"])


def test_each_version_of_a_key_is_its_own_job(local: Local, variant: ministack.Deployment,
                                              tmp_path: Path):
    s3, dynamodb = local.client("s3"), local.client("dynamodb")
    bucket, ledger_table = variant.outputs["BucketName"], variant.outputs["LedgerTableName"]
    jobs = []
    for tag in ("v1-", "v2-"):
        data = tmp_path / f"{tag}.csv"
        write_csv(data, 30, tag=tag)
        s3.upload_file(str(data), bucket, "uploads/versioned.csv")
        jobs.append(upload_job(local, variant, "uploads/versioned.csv"))
        finished_job(dynamodb, ledger_table, jobs[-1])
    assert jobs[0] != jobs[1]  # the job id carries the object's version
    versions = s3.list_object_versions(Bucket=bucket, Prefix="uploads/versioned.csv")["Versions"]
    assert len(versions) == 2
    for job in jobs:
        assert ledger.get_job(dynamodb, ledger_table, job)["rows_written"] == 30
    offers = {i["offer_id"][:3] for i in scan(dynamodb, EXISTING_TABLE) if i["offer_id"].startswith("v")}
    assert offers == {"v1-", "v2-"}


def test_a_failing_writer_leaves_its_messages_to_the_dlq_as_retries_exhausted(
        local: Local, variant: ministack.Deployment, tmp_path: Path):
    dynamodb, sqs = local.client("dynamodb"), local.client("sqs")
    # Given the table the writer loads into is gone (every BatchWriteItem fails)
    dynamodb.delete_table(TableName=EXISTING_TABLE)
    data = tmp_path / "doomed.csv"
    write_csv(data, 40, tag="doom")  # two messages
    s3 = local.client("s3")
    s3.upload_file(str(data), variant.outputs["BucketName"], "uploads/doomed.csv")
    # When the queue has received each message maxReceiveCount times (2, a visibility
    # timeout apart: 55 s here), its next receive moves them to the DLQ
    wait_until(lambda: queue_depth(sqs, variant.outputs["DlqUrl"]) >= 2 or None,
               timeout_s=2 * VARIANT_VISIBILITY_TIMEOUT_S + 60,
               what="the queue's redrive to move both messages to the DLQ")
    # Then `dlq-replayer inspect` shows their rows as retries_exhausted
    done = run([str(BIN / "dlq-replayer"), "inspect", "--stack", variant.stack_name, "--json"],
               local.endpoint_url)
    assert done.returncode == 0, done.stderr
    reasons = json.loads(done.stdout)["reasons"]
    assert reasons["retries_exhausted"]["rows"] == 40, reasons


def test_cdk_destroy_removes_the_stack_and_keeps_the_data(local: Local, variant: ministack.Deployment):
    dynamodb, s3 = local.client("dynamodb"), local.client("s3")
    # Given the existing table is back (someone else's table, with their item in it)
    create_table(dynamodb, EXISTING_TABLE)
    dynamodb.put_item(TableName=EXISTING_TABLE, Item={"account": {"S": "theirs"}, "offer_id": {"S": "1"}})
    ministack.destroy(variant, log=local.log)
    # Then the stack, its ledger table and its queues are gone
    with pytest.raises(Exception, match="does not exist"):
        local.client("cloudformation").describe_stacks(StackName=variant.stack_name)
    tables = dynamodb.list_tables()["TableNames"]
    assert variant.outputs["LedgerTableName"] not in tables
    queues = local.client("sqs").list_queues().get("QueueUrls", [])
    assert variant.outputs["DlqUrl"] not in queues
    # And the upload bucket (with its uploads) and the existing table are kept
    assert s3.head_object(Bucket=variant.outputs["BucketName"], Key="uploads/zipped.csv.gz")
    assert dynamodb.get_item(TableName=EXISTING_TABLE,
                             Key={"account": {"S": "theirs"}, "offer_id": {"S": "1"}}).get("Item")
