"""Least privilege, evaluated: the default stack deployed into a MiniStack that runs with
`AUTH=true` (IAM policies evaluated, each Lambda worker signing with its execution role's
session) and `USE_SSL=1` (so the buckets' `aws:SecureTransport` deny admits the calls).

The positive run proves the roles' policies suffice for a load (and `-c source_buckets=`
lets the splitter read that bucket, and no other); the negative run takes one grant away
(the writer role's DynamoDB write statement, detached with the IAM API) and proves the
pipeline then fails where that grant is used.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from fanout import ledger
from fanout.contract import Source, job_id_for
from fanout_cli.local import ministack
from fanout_cli.local.prefix import ingest_prefix, object_created_event
from tests.deployed.helpers import finished_job, queue_depth, scan, wait_until, write_csv

STACK = "fanout-authz"
# `-c source_buckets=`: the splitter may read this bucket too, and no other.
GRANTED_BUCKET = "fanout-authz-lake"
ROWS = 60  # three messages
# How long the denied file is watched: the allowed one is written within ~2 s of its split.
DENIED_WAIT_S = 20
# AWS authorizes SQS's batch APIs as their single action (SendMessageBatch needs
# sqs:SendMessage); MiniStack 1.5.33 asks for the operation's own name (core/iam_actions.py,
# extract_iam_action: `f"{namespace}:{action_name}"`). The template grants what AWS
# checks; the test translates MiniStack's names, statement by statement, and widens nothing.
MINISTACK_BATCH_NAMES = {"sqs:SendMessage": "sqs:SendMessageBatch",
                         "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
                         "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch"}


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ministack.MiniStack,
                                                                      ministack.Deployment]]:
    folder = tmp_path_factory.mktemp("ministack-authz")
    emulator = ministack.MiniStack(log_path=folder / "ministack.log", auth=True)
    with ministack.local_stack(emulator=emulator, stack_name=STACK, log=folder / "cdk.log",
                               context={"source_buckets": GRANTED_BUCKET}) as pair:
        client = clients(pair[1])
        for function in ("SplitterFunctionName", "WriterFunctionName"):
            edit_policies(client("iam"), role_of(pair[1], client, function), with_batch_names)
        yield pair


def with_batch_names(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s | {"Action": _actions(s) + [MINISTACK_BATCH_NAMES[a] for a in _actions(s)
                                          if a in MINISTACK_BATCH_NAMES]} for s in statements]


def edit_policies(iam: Any, role: str, edit: Any) -> list[str]:
    """Rewrite the role's inline policies' statements with `edit`; the names it changed."""
    changed = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        statements = edit(document["Statement"])
        if statements != document["Statement"]:
            changed.append(name)
            iam.put_role_policy(RoleName=role, PolicyName=name,
                                PolicyDocument=json.dumps(document | {"Statement": statements}))
    return changed


def clients(deployment: ministack.Deployment) -> Any:
    def make(service: str) -> Any:
        return ministack.local_client(service, deployment.endpoint_url,
                                      ca_bundle=deployment.ca_bundle)
    return make


def upload(s3: Any, bucket: str, path: Path, key: str) -> str:
    s3.upload_file(str(path), bucket, key)
    head = s3.head_object(Bucket=bucket, Key=key)
    return job_id_for(Source(bucket, key, head["ETag"].strip('"'), head.get("VersionId")))


def role_of(deployment: ministack.Deployment, client: Any, output: str) -> str:
    config = client("lambda").get_function_configuration(FunctionName=deployment.outputs[output])
    return str(config["Role"]).rsplit("/", 1)[-1]


def test_the_source_buckets_grant_lets_the_splitter_read_that_bucket_and_no_other(
        authz: tuple[ministack.MiniStack, ministack.Deployment], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    _emulator, deployment = authz
    client = clients(deployment)
    s3, dynamodb = client("s3"), client("dynamodb")
    data = tmp_path / "lake.csv"
    records = write_csv(data, 30, tag="lake")
    for bucket in (GRANTED_BUCKET, "fanout-authz-other"):
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(data), bucket, "in/lake.csv")
    # Given the stack granted one other bucket: `fanout ingest s3://...` loads it, every call
    # of the splitter evaluated against its role
    for name, value in ministack.client_env(deployment.endpoint_url,
                                            ca_bundle=deployment.ca_bundle).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)  # the suite's fake one: not root's
    out = io.StringIO()
    code = ingest_prefix(f"s3://{GRANTED_BUCKET}/in/", STACK, as_json=True, stdout=out,
                         stderr=io.StringIO())
    result = json.loads(out.getvalue())
    assert code == 0, result
    (loaded,) = result["objects"]
    assert (loaded["status"], loaded["rows_written"]) == (ledger.COMPLETE, len(records))
    assert len([i for i in scan(dynamodb, deployment.outputs["TableName"])
                if i["offer_id"].startswith("lake")]) == len(records)
    # When the splitter is handed an object of a bucket it was not granted (by hand: the CLI
    # refuses before it invokes), its read is denied and no job starts
    head = s3.head_object(Bucket="fanout-authz-other", Key="in/lake.csv")
    event = object_created_event("fanout-authz-other", "in/lake.csv", size=head["ContentLength"],
                                 etag=head["ETag"].strip('"'), version=None, region=ministack.REGION)
    response = client("lambda").invoke(FunctionName=deployment.outputs["SplitterFunctionName"],
                                       InvocationType="RequestResponse",
                                       Payload=json.dumps(event).encode())
    error = response["Payload"].read().decode()
    assert response.get("FunctionError"), error
    assert "403" in error or "AccessDenied" in error or "Forbidden" in error, error
    job = job_id_for(Source("fanout-authz-other", "in/lake.csv", head["ETag"].strip('"')))
    assert ledger.get_job(dynamodb, deployment.outputs["LedgerTableName"], job) is None


def test_the_roles_policies_suffice_and_one_grant_less_fails(
        authz: tuple[ministack.MiniStack, ministack.Deployment], tmp_path: Path):
    _emulator, deployment = authz
    client = clients(deployment)
    o = deployment.outputs
    s3, dynamodb, iam = client("s3"), client("dynamodb"), client("iam")
    assert deployment.endpoint_url.startswith("https://")
    # The deployer signs as the account root; a Lambda does not: an unknown key is refused.
    stranger = boto3.session.Session(
        aws_access_key_id="stranger-not-in-iam", aws_secret_access_key="x",
        region_name=ministack.REGION).client("s3", endpoint_url=deployment.endpoint_url,
                                             verify=str(deployment.ca_bundle))
    with pytest.raises(ClientError):
        stranger.list_objects_v2(Bucket=o["BucketName"])

    # Given the stack as deployed, a small upload loads exactly (S3 -> splitter -> SQS ->
    # writer -> DynamoDB, every call evaluated against the role that makes it)
    data = tmp_path / "ok.csv"
    records = write_csv(data, ROWS, tag="ok")
    job = upload(s3, o["BucketName"], data, "uploads/ok.csv")
    item = finished_job(dynamodb, o["LedgerTableName"], job, timeout_s=90)
    assert item["status"] == ledger.COMPLETE, item
    assert (item["rows_read"], item["rows_written"]) == (ROWS, ROWS)
    loaded = [i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("ok")]
    assert len(loaded) == len(records)
    # And its summary was announced: the writer's transaction that records it also deletes
    # the job's entry in the ledger's active index (evaluated as dynamodb:DeleteItem)
    wait_until(lambda: job not in ledger.active_jobs(dynamodb, o["LedgerTableName"]) or None,
               timeout_s=30, what="the job to leave the active index")

    # When the writer role loses its DynamoDB write statement on the items table
    role = role_of(deployment, client, "WriterFunctionName")
    removed = edit_policies(iam, role, lambda statements: [
        s for s in statements if "dynamodb:BatchWriteItem" not in _actions(s)])
    assert removed, f"no statement of {role}'s policies grants dynamodb:BatchWriteItem"

    # Then a second upload is split, but none of its rows reaches the table: the writer's
    # BatchWriteItem is refused, so no message is counted and all stay on the rows queue
    # (the first file's messages were written and counted within seconds)
    data = tmp_path / "denied.csv"
    write_csv(data, ROWS, tag="no")
    job = upload(s3, o["BucketName"], data, "uploads/denied.csv")
    split = wait_until(lambda: (ledger.get_job(dynamodb, o["LedgerTableName"], job) or {}).get(
        "split_finished_at") and ledger.get_job(dynamodb, o["LedgerTableName"], job),
        timeout_s=30, what="the second file's split")
    assert (split["rows_read"], split["messages_total"]) == (ROWS, 3)
    time.sleep(DENIED_WAIT_S)
    item = ledger.get_job(dynamodb, o["LedgerTableName"], job)
    assert item is not None and item["status"] == ledger.RUNNING, item
    assert (item["messages_counted"], item["rows_written"]) == (0, 0), item
    assert queue_depth(client("sqs"), o["RowsQueueUrl"]) == 3
    assert not [i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("no")]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)
