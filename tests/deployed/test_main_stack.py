"""The default stack, deployed: an `aws s3 cp` upload, `fanout ingest --stack`, a file that
fails, a parallel split, and the Powertools layer the Lambdas really import."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from fanout_cli.makecsv import make_csv
from tests.deployed.conftest import PARALLEL_THRESHOLD, Local, published_summaries
from tests.deployed.helpers import BIN, finished_job, run, scan, wait_until, write_csv

ROWS = 120
PARALLEL_ROWS = 6_000  # about 720 KB: three ranges


def test_aws_cli_upload_loads_the_file_exactly(local: Local, stack: ministack.Deployment,
                                               summaries: str, tmp_path: Path):
    o = stack.outputs
    # Given a CSV, uploaded with the real AWS CLI into the stack's upload prefix
    data = tmp_path / "cli.csv"
    records = write_csv(data, ROWS, tag="cli")
    done = run([str(BIN / "aws"), "s3", "cp", str(data), f"s3://{o['BucketName']}/uploads/"],
               local.endpoint_url)
    assert done.returncode == 0, done.stderr

    # Then the ledger says COMPLETE with exact counts
    s3, dynamodb = local.client("s3"), local.client("dynamodb")
    job = job_for_key(find_stack(stack.stack_name, local.endpoint_url), "uploads/cli.csv")
    item = finished_job(dynamodb, o["LedgerTableName"], job)
    assert item["status"] == ledger.COMPLETE, item
    assert (item["rows_read"], item["rows_written"], item["rows_rejected"],
            item["rows_superseded"]) == (ROWS, ROWS, 0, 0)
    assert s3.head_object(Bucket=o["BucketName"], Key="uploads/cli.csv")

    # And the table holds exactly the file's rows (a scan, not the ledger's word)
    loaded = [i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("cli")]
    assert sorted(loaded, key=lambda i: i["offer_id"]) == sorted(records, key=lambda r: r["offer_id"])

    # And the completion summary reached a queue subscribed to the topic
    sqs = local.client("sqs")
    summary = wait_until(lambda: next((s for s in published_summaries(sqs, summaries)
                                       if s.get("JOB_ID") == job), None),
                         timeout_s=30, what="the SNS completion summary")
    assert summary["STATUS"] == ledger.COMPLETE
    assert summary["TOTAL_NUMBER_OF_ROWS_READ"] == ROWS
    assert summary["TOTAL_NUMBER_OF_ITEMS_WRITTEN"] == ROWS


def test_fanout_ingest_stack_follows_the_job_and_exits_0(local: Local, stack: ministack.Deployment,
                                                         tmp_path: Path):
    data = tmp_path / "ingested.csv"
    write_csv(data, 80, tag="ing")
    done = run([str(BIN / "fanout"), "ingest", str(data), "--stack", stack.stack_name, "--json"],
               local.endpoint_url)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)  # --json: nothing but the JSON on stdout
    assert (result["status"], result["rows_read"], result["rows_written"]) == (ledger.COMPLETE, 80, 80)
    written = [i for i in scan(local.client("dynamodb"), stack.outputs["TableName"])
               if i["offer_id"].startswith("ing")]
    assert len(written) == 80


def test_a_failed_job_prints_its_file_line_and_reason(local: Local, stack: ministack.Deployment,
                                                      tmp_path: Path):
    # Given a file whose quote on line 4 is never closed (csv.reader(strict=True) rejects it)
    data = tmp_path / "broken.csv"
    data.write_text('account,offer_id,risk\na,1,low\nb,2,low\nc,"3,low\nd,4,low\n')
    done = run([str(BIN / "fanout"), "ingest", str(data), "--stack", stack.stack_name],
               local.endpoint_url)
    # Then ingest exits 1 and says which file and line, and why
    assert done.returncode == 1, done.stdout + done.stderr
    assert "status     FAILED" in done.stdout
    failure = next(line for line in done.stdout.splitlines() if line.startswith("the job failed"))
    assert "uploads/broken.csv" in failure and "line 4" in failure, failure


def test_a_large_file_is_split_in_parallel_ranges(local: Local, stack: ministack.Deployment,
                                                  tmp_path: Path):
    # Given a file over the (lowered) parallel threshold
    data = tmp_path / "parallel.csv"
    make_csv(PARALLEL_ROWS, 50, data, seed=7)
    assert data.stat().st_size > PARALLEL_THRESHOLD
    o = stack.outputs
    s3, dynamodb = local.client("s3"), local.client("dynamodb")
    s3.upload_file(str(data), o["BucketName"], "uploads/parallel.csv")
    job = job_for_key(find_stack(stack.stack_name, local.endpoint_url), "uploads/parallel.csv")
    # Then the splitter fanned out (its asynchronous self-invocations ran) and every row landed
    item = finished_job(dynamodb, o["LedgerTableName"], job, timeout_s=240)
    assert item["status"] == ledger.COMPLETE, item
    assert item.get("parallel_ranges", 0) >= 2, item
    assert item["rows_read"] == PARALLEL_ROWS
    assert item["rows_written"] + item["rows_superseded"] == PARALLEL_ROWS and item["rows_rejected"] == 0
    keys = {(i["account"], i["offer_id"]) for i in scan(dynamodb, o["TableName"])
            if i.get("catalog_id") is not None}
    assert len(keys) == item["rows_written"]


def test_the_lambdas_run_on_the_stacks_own_powertools_layer(local: Local,
                                                            stack: ministack.Deployment):
    functions = local.client("lambda")
    arns = {tuple(layer["Arn"] for layer in functions.get_function_configuration(
        FunctionName=stack.outputs[name])["Layers"])
        for name in ("SplitterFunctionName", "WriterFunctionName")}
    (layer_arns,) = arns  # both functions, one layer
    (arn,) = layer_arns
    version = functions.get_layer_version_by_arn(Arn=arn)
    pinned = importlib.metadata.version("aws-lambda-powertools")
    assert f"aws-lambda-powertools[tracer]=={pinned}" in version["Description"]
    # MiniStack's interpreter (the Lambda runtime here) has no Powertools of its own, so
    # the loads above ran on the layer's.
    probe = subprocess.run(
        [str(ministack.ministack_python()), "-c", "import aws_lambda_powertools"],
        capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "No module named" in probe.stderr
