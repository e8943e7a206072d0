"""`fanout cancel` on the deployed stack, mid-write: the writers (MiniStack's Lambda workers,
which stay warm between batches) learn of the cancel from their next ledger report and
drop the rest; the job ends CANCELLED with exact counts, and `fanout jobs` and `fanout
status` say so."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from fanout import ledger
from fanout_cli.cli import main
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.deployed.conftest import Local
from tests.deployed.helpers import run, scan, wait_until, write_csv

ROWS = 100_000  # 4,000 messages in parallel ranges: the writers are at it for a while


def fanout(local: Local, *argv: str) -> tuple[int, str, str]:
    """This checkout's `fanout` as a user in a second terminal runs it (the endpoint and
    the printed credentials in the environment)."""
    done = run([sys.executable, "-m", "fanout_cli.cli", *argv], local.endpoint_url)
    return done.returncode, done.stdout, done.stderr


def test_cancel_mid_write_ends_the_job_cancelled_with_exact_counts(
        local: Local, stack: ministack.Deployment, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    o = stack.outputs
    ddb, table = local.client("dynamodb"), o["LedgerTableName"]
    target = ["--stack", stack.stack_name]
    # Given a file being written
    data = tmp_path / "cancel.csv"
    write_csv(data, ROWS, tag="cx")
    key = "uploads/cancel-mid-write.csv"
    local.client("s3").upload_file(str(data), o["BucketName"], key)
    job = job_for_key(find_stack(stack.stack_name, local.endpoint_url), key)

    def writing() -> dict[str, object] | None:
        item = ledger.get_job(ddb, table, job)
        return item if item and int(item.get("messages_reported", 0)) > 0 else None
    wait_until(writing, timeout_s=180, what=f"job {job}'s first writer report", every_s=0.2)
    # When an operator cancels it (this process's `fanout cancel`, at once: a second
    # terminal's would start a new interpreter while the writers go on)
    for name, value in ministack.client_env(local.endpoint_url).items():
        monkeypatch.setenv(name, value)
    cancelled_at = time.monotonic()
    assert main(["cancel", job, *target, "--by", "deployed-test"]) == 0
    assert capsys.readouterr().out.startswith(f"job {job}: CANCELLING (was ")
    # And finds it with `fanout jobs`
    code, out, err = fanout(local, "jobs", *target, "--json")
    assert code == 0, err
    listed = {j["job_id"]: j["status"] for j in json.loads(out)["jobs"]}
    assert listed[job] in (ledger.CANCELLING, ledger.CANCELLED)

    # Then it ends CANCELLED, every row read in exactly one outcome, some of them cancelled
    def ended() -> dict[str, object] | None:
        item = ledger.get_job(ddb, table, job)
        return item if item and item.get("status") in ledger.ENDED else None
    done = wait_until(ended, timeout_s=300, what=f"job {job} to end", every_s=1.0)
    print(f"CANCELLED {time.monotonic() - cancelled_at:.1f} s after the cancel: "
          f"{ledger.counts_of(done)}, rows_read {done['rows_read']}")
    assert done["status"] == ledger.CANCELLED
    counts = ledger.counts_of(done)
    assert done["rows_read"] == counts.rows == ROWS
    assert counts.cancelled > 0 and counts.rejected == 0
    # The table holds exactly the rows counted written
    assert sum(1 for item in scan(ddb, o["TableName"]) if item["offer_id"].startswith("cx")) \
        == counts.written
    # And `fanout status` says who cancelled it and when
    code, out, err = fanout(local, "status", job, *target)
    assert code == 0, err
    why = json.loads(out)["why"]
    assert why["cancelled_by"] == "deployed-test" and why["rows_cancelled"] == counts.cancelled
