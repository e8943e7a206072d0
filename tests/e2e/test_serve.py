"""`fanout serve` end to end: upload a CSV with poison rows to the running local stack,
find them with `dlq-replayer inspect`, export them, fix them in the file, send them back
with `redrive --fixes`, and see every row land and the DLQ empty."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlq_replayer.cli import main as replayer
from fanout import ledger
from fanout.local.ingest import job_for_object
from fanout.local.serve import ServeHandle, describe, start_stack
from fanout.mapping import Spec

ROWS = 60
POISON_LINES = {5, 33, 47}  # 1-based file lines (the header is line 1) with an empty account


@pytest.fixture
def served() -> Iterator[ServeHandle]:
    handle = start_stack(Spec.default(), port=0, concurrency=2)
    try:
        yield handle
    finally:
        handle.stop()


def write_csv(path: Path, rows: int, poison: set[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["account", "offer_id", "risk"])
        for line in range(2, rows + 2):
            writer.writerow(["" if line in poison else f"acct-{line % 7}", str(line), "low"])


def wait_until(predicate: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {predicate.__name__}")


def run_replayer(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = replayer(list(argv), stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


def test_poison_rows_are_exported_fixed_and_redriven(served: ServeHandle, tmp_path: Path):
    clients, settings = served.clients, served.stack.settings
    endpoint = served.endpoint_url
    assert endpoint in describe(served) and "s3 cp data.csv s3://fanout-uploads/uploads/" in \
        describe(served)

    # Given a CSV with three rows whose partition key (account) is empty, uploaded to the stack
    data = tmp_path / "offers.csv"
    write_csv(data, ROWS, POISON_LINES)
    clients.s3.upload_file(str(data), settings.bucket, "uploads/offers.csv")
    job = job_for_object(clients.s3, settings.bucket, "uploads/offers.csv")

    # When every row is accounted for (the writer rejected the three with empty_key)
    def accounted() -> dict[str, Any] | None:
        item = ledger.get_job(clients.dynamodb, settings.ledger_table_name, job)
        if not item or item.get("status") != ledger.COMPLETE:
            return None
        return item
    item = wait_until(accounted)
    counts = ledger.totals(ledger.read_message_counts(clients.dynamodb,
                                                      settings.ledger_table_name, job).values())
    assert item["rows_read"] == ROWS and counts.rejected == len(POISON_LINES)
    assert counts.written + counts.superseded == ROWS - len(POISON_LINES)

    # Then inspect shows them by reason
    code, out = wait_until(lambda: _inspect(endpoint))
    summary = json.loads(out)
    assert summary["reasons"]["empty_key"]["rows"] == len(POISON_LINES)
    assert summary["jobs"][job]["rows"] == len(POISON_LINES)

    # When they are exported, fixed in the file, and redriven with --fixes
    export = tmp_path / "rejected.csv"
    assert run_replayer("export", "--endpoint-url", endpoint, "--out", str(export))[0] == 0
    with open(export, newline="") as f:
        records = list(csv.DictReader(f))
    assert {int(r["_line"]) for r in records} == POISON_LINES
    for record in records:
        record["account"] = "acct-fixed"
    with open(export, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    code, out = run_replayer("redrive", "--endpoint-url", endpoint, "--fixes", str(export),
                             "--json")
    assert code == 0, out
    assert json.loads(out)["rows_sent"] == len(POISON_LINES)

    # Then every row is in the table and the DLQ is empty
    def all_items() -> bool:
        found = clients.dynamodb.scan(TableName=settings.table_name, Select="COUNT")["Count"]
        return found == ROWS
    wait_until(all_items)
    fixed = clients.dynamodb.query(
        TableName=settings.table_name, KeyConditionExpression="account = :a",
        ExpressionAttributeValues={":a": {"S": "acct-fixed"}})["Items"]
    assert sorted(int(i["offer_id"]["S"]) for i in fixed) == sorted(POISON_LINES)
    assert run_replayer("inspect", "--endpoint-url", endpoint)[0] == 3  # nothing waits
    replays = [mid for mid in ledger.read_message_counts(
        clients.dynamodb, settings.ledger_table_name, job) if "~" in mid]
    assert replays  # the fixed rows were counted under their replay ids


def _inspect(endpoint: str) -> tuple[int, str] | None:
    code, out = run_replayer("inspect", "--endpoint-url", endpoint, "--json")
    return (code, out) if code == 0 else None


def test_the_aws_cli_can_upload_to_the_stack(served: ServeHandle, tmp_path: Path):
    aws = shutil.which("aws")
    if not aws or subprocess.run([aws, "--version"], capture_output=True).returncode != 0:
        pytest.skip("the AWS CLI is not installed")
    clients, settings = served.clients, served.stack.settings
    data = tmp_path / "cli.csv"
    write_csv(data, 30, set())
    env = os.environ | {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([aws, "--endpoint-url", served.endpoint_url, "s3", "cp", str(data),
                           f"s3://{settings.bucket}/uploads/"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job = job_for_object(clients.s3, settings.bucket, "uploads/cli.csv")

    def complete() -> bool:
        item = ledger.get_job(clients.dynamodb, settings.ledger_table_name, job)
        return bool(item and item.get("status") == ledger.COMPLETE)
    wait_until(complete)


def test_serve_command_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fanout.cli import main; sys.exit(main(['serve']))"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("Ctrl-C") or not line:
                break
        text = "".join(lines)
        assert "endpoint        http://127.0.0.1:" in text and "fanout-rows-dlq" in text
        process.terminate()  # SIGTERM
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
