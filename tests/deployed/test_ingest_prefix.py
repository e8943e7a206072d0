"""`fanout ingest s3://BUCKET/PREFIX --stack` on the deployed main stack: objects already in
another bucket (granted by `-c source_buckets=`) loaded where they are, once; a re-run starts
nothing; a replaced object loads again; a bucket the stack was not granted is refused."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

from fanout import ledger
from fanout.contract import Source, job_id_for
from fanout_cli.local import ministack
from tests.deployed.conftest import SOURCE_BUCKET, Local
from tests.deployed.helpers import BIN, run, scan, wait_until, write_csv

PREFIX = "lake/"
# The rows' offer_id tags start with "s3": the other deployed tests share the main stack's
# table and pick their rows by other prefixes ("p", "cli", "ing", ...).
# Long enough for an asynchronous invocation the CLI should not have made to show in the log.
SETTLE_S = 3.0


def splits_logged(local: Local, stack: ministack.Deployment, bucket: str = SOURCE_BUCKET) -> int:
    """The splitter's "split finished" log lines for objects of `bucket`: one per invocation
    that handled one (a duplicate event logs one too, as skipped)."""
    logs = local.client("logs")
    group = stack.outputs["SplitterLogGroup"]
    count, token = 0, None
    while True:
        page = logs.filter_log_events(logGroupName=group, **({"nextToken": token} if token else {}))
        count += sum(1 for e in page.get("events", [])
                     if "split finished" in e["message"] and f"s3://{bucket}/" in e["message"])
        token = page.get("nextToken")
        if not token:
            return count


def ledger_jobs(local: Local, stack: ministack.Deployment) -> set[str]:
    items = scan(local.client("dynamodb"), stack.outputs["LedgerTableName"])
    return {i["pk"] for i in items if i["sk"] == "job"}


def ingest(local: Local, stack: ministack.Deployment, uri: str, *flags: str) -> Any:
    return run([str(BIN / "fanout"), "ingest", uri, "--stack", stack.stack_name, *flags],
               local.endpoint_url)


def rows_tagged(local: Local, stack: ministack.Deployment, tag: str) -> list[dict[str, str]]:
    return sorted((i for i in scan(local.client("dynamodb"), stack.outputs["TableName"])
                   if i["offer_id"].startswith(tag)), key=lambda i: i["offer_id"])


def test_objects_in_another_bucket_load_once_and_a_rerun_starts_nothing(
        local: Local, stack: ministack.Deployment, tmp_path: Path) -> None:
    s3 = local.client("s3")
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    # Given a .csv, a .csv.gz, a .csv two levels down and a text file under one prefix
    files: dict[str, list[dict[str, str]]] = {}
    for key, rows, tag in (("a.csv", 40, "s3a-"), ("b.csv.gz", 30, "s3b-"),
                           ("nested/deeper/c.csv", 20, "s3c-")):
        path = tmp_path / key.replace("/", "_")
        files[PREFIX + key] = write_csv(path, rows, tag=tag)
        body = path.read_bytes()
        s3.put_object(Bucket=SOURCE_BUCKET, Key=PREFIX + key,
                      Body=gzip.compress(body) if key.endswith(".gz") else body)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=PREFIX + "notes.txt", Body=b"not a csv")

    # When `fanout ingest s3://...` runs against the stack
    done = ingest(local, stack, f"s3://{SOURCE_BUCKET}/{PREFIX}", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)  # --json: nothing but the JSON
    by_key = {o["key"]: o for o in result["objects"]}
    assert sorted(by_key) == sorted([*files, PREFIX + "notes.txt"])
    assert by_key[PREFIX + "notes.txt"]["action"] == "skipped"
    # Then each CSV was a job of its own, COMPLETE with exact counts in the ledger
    dynamodb = local.client("dynamodb")
    for key, records in files.items():
        o = by_key[key]
        assert o["action"] == "started" and o["status"] == ledger.COMPLETE, o
        item = ledger.get_job(dynamodb, stack.outputs["LedgerTableName"], o["job"])
        assert (item["status"], item["rows_read"], item["rows_written"], item["rows_rejected"],
                item["rows_superseded"]) == (ledger.COMPLETE, len(records), len(records), 0, 0)
        assert (o["rows_read"], o["rows_written"]) == (len(records), len(records))
        assert item["source"] == f"s3://{SOURCE_BUCKET}/{key}"
    # And the table holds exactly the files' rows (a scan, not the ledger's word)
    for records in files.values():
        tag = records[0]["offer_id"][:4]
        assert rows_tagged(local, stack, tag) == sorted(records, key=lambda r: r["offer_id"])
    assert result["total"]["rows_written"] == 90 and result["exit_code"] == 0
    # (a Lambda's log lines reach MiniStack's log service after its invocation ended, so
    # the last split's line may come a moment after its job completed)
    wait_until(lambda: splits_logged(local, stack) >= 3, timeout_s=30, what="the 3 splits' log lines")
    assert splits_logged(local, stack) == 3

    # When it runs again (as text): no new job, no splitter invocation, exit 0
    jobs = ledger_jobs(local, stack)
    again = ingest(local, stack, f"s3://{SOURCE_BUCKET}/{PREFIX}")
    assert again.returncode == 0, again.stdout + again.stderr
    object_lines = [line for line in again.stdout.splitlines() if line.startswith(f"  {PREFIX}")]
    assert len(object_lines) == 4  # one summary line per object
    for key in files:
        (line,) = [line for line in object_lines if line.split()[0] == key]
        assert "already loaded: COMPLETE" in line and f"written {len(files[key])}" in line, line
    time.sleep(SETTLE_S)
    assert ledger_jobs(local, stack) == jobs and splits_logged(local, stack) == 3

    # When a.csv is replaced with new content (a new ETag): it alone is loaded again
    replaced = write_csv(tmp_path / "a2.csv", 10, tag="s3r-")
    s3.put_object(Bucket=SOURCE_BUCKET, Key=PREFIX + "a.csv", Body=(tmp_path / "a2.csv").read_bytes())
    third = ingest(local, stack, f"s3://{SOURCE_BUCKET}/{PREFIX}", "--json")
    assert third.returncode == 0, third.stdout + third.stderr
    actions = {o["key"]: o["action"] for o in json.loads(third.stdout)["objects"]}
    assert actions == {PREFIX + "a.csv": "started", PREFIX + "b.csv.gz": "already_loaded",
                       PREFIX + "nested/deeper/c.csv": "already_loaded",
                       PREFIX + "notes.txt": "skipped"}
    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=PREFIX + "a.csv")["ETag"].strip('"')
    new_job = job_id_for(Source(SOURCE_BUCKET, PREFIX + "a.csv", etag))
    assert ledger_jobs(local, stack) - jobs == {new_job}
    assert rows_tagged(local, stack, "s3r-") == sorted(replaced, key=lambda r: r["offer_id"])


def test_a_bucket_the_stack_was_not_granted_is_refused_before_anything_starts(
        local: Local, stack: ministack.Deployment) -> None:
    s3 = local.client("s3")
    s3.create_bucket(Bucket="fanout-test-stranger")
    s3.put_object(Bucket="fanout-test-stranger", Key="x.csv", Body=b"account,offer_id\na,1\n")
    before = ledger_jobs(local, stack)
    done = ingest(local, stack, "s3://fanout-test-stranger/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert "may not read bucket 'fanout-test-stranger'" in line
    assert f"-c source_buckets={SOURCE_BUCKET},fanout-test-stranger" in line
    time.sleep(SETTLE_S)
    assert ledger_jobs(local, stack) == before
    assert splits_logged(local, stack, "fanout-test-stranger") == 0
