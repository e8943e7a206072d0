"""Data as people export it, through the deployed stack: an R write.csv export (row names
in an unnamed first column) whose rows are mostly one field short."""

from __future__ import annotations

from pathlib import Path

from fanout import ledger
from fanout.mapping import Spec
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.corpus import expected_items
from tests.deployed.conftest import Local
from tests.deployed.helpers import finished_job, scan

ROWS = 60


def test_an_r_export_with_short_rows_loads_every_row_and_counts_the_padded(
        local: Local, stack: ministack.Deployment, tmp_path: Path):
    # Given R's write.csv of a table with the stack's keys, two rows in three a field short
    data = tmp_path / "r_export.csv"
    lines = ['"","account","offer_id","risk","note"']
    for i in range(ROWS):
        lines.append(f'"row{i}","rx{i % 5}","rx-{i}","low"' + (',"has a note"' if i % 3 == 0 else ""))
    data.write_text("\n".join(lines) + "\n")
    # When it is uploaded into the stack's prefix
    local.client("s3").upload_file(str(data), stack.outputs["BucketName"], "uploads/r_export.csv")
    job = job_for_key(find_stack(stack.stack_name, local.endpoint_url), "uploads/r_export.csv")
    item = finished_job(local.client("dynamodb"), stack.outputs["LedgerTableName"], job)
    # Then every row is written, and the ledger counts the padded ones
    assert item["status"] == ledger.COMPLETE, item
    assert (item["rows_read"], item["rows_written"], item["rows_rejected"],
            item["rows_padded"]) == (ROWS, ROWS, 0, ROWS - ROWS // 3)
    # And the table holds what csv.reader reads, the row names under unnamed_1
    loaded = [i for i in scan(local.client("dynamodb"), stack.outputs["TableName"])
              if i["account"].startswith("rx")]
    expected = [{name: next(iter(value.values())) for name, value in i.items()}
                for i in expected_items(data, Spec.default()).values()]
    key = lambda i: i["offer_id"]  # noqa: E731
    assert sorted(loaded, key=key) == sorted(expected, key=key)
    assert {i["unnamed_1"] for i in loaded} == {f"row{i}" for i in range(ROWS)}
