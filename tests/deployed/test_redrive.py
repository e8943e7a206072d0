"""Poison rows on the deployed stack: found with `dlq-replayer --stack`, exported, fixed in
the file, sent back with `redrive --fixes`; then every row is in the table, the DLQ empty."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

from dlq_replayer.cli import main as replayer
from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.deployed.conftest import Local
from tests.deployed.helpers import BIN, finished_job, queue_depth, run, scan, wait_until, write_csv

ROWS = 60
POISON = frozenset({5, 33, 47})  # file lines with an empty account (the header is line 1)


def replay(local: Local, stack: ministack.Deployment, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = replayer([*argv, "--stack", stack.stack_name, "--endpoint-url", local.endpoint_url],
                    stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


def test_poison_rows_are_exported_fixed_and_redriven(local: Local, stack: ministack.Deployment,
                                                     tmp_path: Path):
    o = stack.outputs
    s3, dynamodb, sqs = local.client("s3"), local.client("dynamodb"), local.client("sqs")
    # Given a file with three rows the writer rejects (empty partition key)
    data = tmp_path / "poison.csv"
    write_csv(data, ROWS, poison=POISON, tag="p")
    s3.upload_file(str(data), o["BucketName"], "uploads/poison.csv")
    job = job_for_key(find_stack(stack.stack_name, local.endpoint_url), "uploads/poison.csv")
    item = finished_job(dynamodb, o["LedgerTableName"], job)
    assert item["status"] == ledger.COMPLETE and item["rows_rejected"] == len(POISON)

    # When `dlq-replayer inspect --stack NAME` runs with only the endpoint and credentials set
    inspect = [str(BIN / "dlq-replayer"), "inspect", "--stack", stack.stack_name, "--json"]
    attempts = []

    def found() -> subprocess.CompletedProcess[str] | None:
        attempts.append(run(inspect, local.endpoint_url))
        return attempts[-1] if attempts[-1].returncode == 0 else None
    try:
        inspected = wait_until(found, timeout_s=30, what="inspect to find the rejected rows")
    except AssertionError:
        raise AssertionError(f"{attempts[-1].returncode}: {attempts[-1].stdout} {attempts[-1].stderr}") from None
    summary = json.loads(inspected.stdout)
    assert summary["reasons"]["empty_key"]["rows"] == len(POISON)
    assert summary["jobs"][job]["rows"] == len(POISON)

    # And the rows are exported, fixed in the file and redriven with --fixes
    export = tmp_path / "rejected.csv"
    assert replay(local, stack, "export", "--out", str(export))[0] == 0
    with open(export, newline="") as f:
        records = list(csv.DictReader(f))
    assert {int(r["_line"]) for r in records} == POISON
    for record in records:
        record["account"] = "acct-fixed"
    with open(export, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    code, out = replay(local, stack, "redrive", "--fixes", str(export), "--json")
    assert code == 0, out
    assert json.loads(out)["rows_sent"] == len(POISON)

    # Then every row of the file is in the table, and the DLQ is empty
    def all_rows() -> list[dict[str, str]] | None:
        items = [i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("p")]
        return items if len(items) == ROWS else None
    items = wait_until(all_rows, timeout_s=60, what="the fixed rows in the table")
    assert sorted(int(i["offer_id"][1:]) for i in items if i["account"] == "acct-fixed") == sorted(POISON)
    assert wait_until(lambda: queue_depth(sqs, o["DlqUrl"]) == 0 or None, timeout_s=30,
                      what="an empty DLQ")
