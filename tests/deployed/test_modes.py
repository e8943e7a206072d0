"""Write modes on the deployed stack: `fanout-modes` is deployed with `-c spec=` a spec
whose mode is insert, into a table that already holds items; an insert job runs with
`fanout ingest --stack`, then the same stack is deployed again with a delete spec (only
the functions' environment changes) and a delete job runs. The tests run in this order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.deployed.conftest import Local, create_table
from tests.deployed.helpers import BIN, finished_job, run, scan, write_csv

MODES_STACK = "fanout-modes"
MODES_TABLE = "fanout-modes-items"
HELD = 20  # the table holds offer_id m2..m21 before the insert job


def spec_file(folder: Path, mode: str) -> Path:
    path = folder / f"{mode}.toml"
    path.write_text(f'[table]\nmode = "{mode}"\npartition_key = "account"\nsort_key = "offer_id"\n')
    return path


@pytest.fixture(scope="module")
def modes(local: Local, tmp_path_factory: pytest.TempPathFactory) -> ministack.Deployment:
    dynamodb = local.client("dynamodb")
    create_table(dynamodb, MODES_TABLE)
    for line in range(2, HELD + 2):  # the keys write_csv gives lines 2..21, held already
        dynamodb.put_item(TableName=MODES_TABLE, Item={
            "account": {"S": f"acct-{line % 7}"}, "offer_id": {"S": f"m{line}"},
            "risk": {"S": "held"}, "note": {"S": "from before the job"}})
    folder = tmp_path_factory.mktemp("modes")
    return local.deploy(MODES_STACK, existing_table=MODES_TABLE,
                        spec=str(spec_file(folder, "insert")))


def items_by_key(dynamodb: Any) -> dict[tuple[str, str], dict[str, str]]:
    return {(i["account"], i["offer_id"]): i for i in scan(dynamodb, MODES_TABLE)}


def redeploy(local: Local, modes: ministack.Deployment, folder: Path, mode: str) -> None:
    """The same stack with a spec of another mode (only the functions' environment changes)."""
    ministack.deploy(local.endpoint_url, stack_name=MODES_STACK, log=local.log,
                     context={**modes.context, "spec": str(spec_file(folder, mode))})


def upload_and_finish(local: Local, modes: ministack.Deployment, data: Path) -> dict[str, Any]:
    """Upload `data` (S3 notification -> splitter -> writers) and return its finished job."""
    key = f"uploads/{data.name}"
    local.client("s3").upload_file(str(data), modes.outputs["BucketName"], key)
    job = job_for_key(find_stack(MODES_STACK, local.endpoint_url), key)
    return finished_job(local.client("dynamodb"), modes.outputs["LedgerTableName"], job)


def test_an_insert_job_skips_the_keys_the_table_holds(local: Local, modes: ministack.Deployment,
                                                      tmp_path: Path):
    dynamodb = local.client("dynamodb")
    held = items_by_key(dynamodb)
    data = tmp_path / "insert.csv"
    records = write_csv(data, 50, tag="m", poison=frozenset({40}))  # lines 2..51, one bad
    done = run([str(BIN / "fanout"), "ingest", str(data), "--stack", modes.stack_name, "--json"],
               local.endpoint_url)
    assert done.returncode == 3, done.stderr  # the poison row is rejected
    summary = json.loads(done.stdout)
    assert summary["mode"] == "insert"
    assert (summary["rows_read"], summary["rows_written"], summary["rows_skipped_existing"],
            summary["rows_rejected"], summary["rows_superseded"]) == (50, 29, HELD, 1, 0)
    items = items_by_key(dynamodb)
    assert all(items[k] == v for k, v in held.items())  # not one held item changed
    new = {(r["account"], r["offer_id"]): r for r in records[HELD:] if r["account"]}
    assert {k: items[k] for k in new} == new and len(items) == HELD + 29


def test_a_delete_job_on_the_same_stack_deletes_the_named_keys(local: Local,
                                                               modes: ministack.Deployment,
                                                               tmp_path: Path):
    redeploy(local, modes, tmp_path, "delete")
    dynamodb = local.client("dynamodb")
    # Lines 2..31 name m2..m31 (all in the table); line 60 names a key that is not there
    data = tmp_path / "delete.csv"
    write_csv(data, 30, tag="m")
    with open(data, "a") as f:
        f.write("acct-4,m60,gone\n")
    item = upload_and_finish(local, modes, data)
    assert item["status"] == ledger.COMPLETE and item["mode"] == "delete", item
    assert (item["rows_read"], item["rows_deleted"], item["rows_written"],
            item["rows_rejected"]) == (31, 31, 0, 0)
    # What is left: the insert job's m32..m51, but m40 (its rejected row)
    left = items_by_key(dynamodb)
    assert sorted(int(offer[1:]) for _, offer in left) == [n for n in range(32, 52) if n != 40]


def test_an_update_job_merges_into_items_and_creates_the_absent(local: Local,
                                                               modes: ministack.Deployment,
                                                               tmp_path: Path):
    redeploy(local, modes, tmp_path, "update")
    dynamodb = local.client("dynamodb")
    before = items_by_key(dynamodb)
    (account, offer), kept = next((k, v) for k, v in sorted(before.items()))
    # An attribute no row of the update mentions: it must survive the merge
    dynamodb.update_item(TableName=MODES_TABLE, Key={"account": {"S": account},
                                                     "offer_id": {"S": offer}},
                         UpdateExpression="SET note = :n", ExpressionAttributeValues={
                             ":n": {"S": "set before the update"}})
    data = tmp_path / "update.csv"
    data.write_text(f"account,offer_id,risk\n{account},{offer},updated\nacct-9,m99,new\n")
    item = upload_and_finish(local, modes, data)
    assert item["status"] == ledger.COMPLETE and item["mode"] == "update", item
    assert (item["rows_read"], item["rows_written"], item["rows_rejected"]) == (2, 2, 0)
    after = items_by_key(dynamodb)
    assert after[(account, offer)] == kept | {"risk": "updated", "note": "set before the update"}
    assert after[("acct-9", "m99")] == {"account": "acct-9", "offer_id": "m99", "risk": "new"}
    assert {k: v for k, v in after.items() if k not in {(account, offer), ("acct-9", "m99")}} \
        == {k: v for k, v in before.items() if k != (account, offer)}  # no other item touched
