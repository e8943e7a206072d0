"""The insert and update modes end to end as the Lambda writes them, by PartiQL
BatchExecuteStatement (writer/statements.py): `fanout ingest` in-process on moto, the
writer's DynamoDB the Lambda's (WriterDynamoDB) over the strict layer. The same rows as
tests/e2e/test_modes.py give the same table and the same counts as one PutItem or
UpdateItem a row, clean and under throttles, 500s, statement errors, lost replies and
duplicate deliveries."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fanout.aws import Clients
from fanout.settings import LOCAL_CONFIG
from fanout_cli.local.ingest import IngestOptions, ingest
from tests.chaos.helpers import JumpingClock
from tests.e2e.test_modes import TABLE, assert_exact, existing_item, spec_for, write_csv
from tests.strict_aws import Faults, StrictLayer
from writer.batch_write import WriterDynamoDB

EXISTING = 60
COUNTS = ("rows_read", "rows_written", "rows_rejected", "rows_superseded", "rows_deleted",
          "rows_skipped_existing")


def run(tmp_path: Path, mode: str, rows: list[list[str]], *, statements: bool,
        faults: Faults | None = None, **options: Any) -> tuple[dict[str, Any], StrictLayer,
                                                               dict[Any, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_csv(tmp_path / f"{mode}.csv", rows)
    layer = StrictLayer(faults or Faults(items_table=TABLE))
    # A message whose statements ran out of retries comes back after the local visibility
    # timeout (51 s): the clock skips that wait instead of sleeping through it.
    clock = JumpingClock()

    def wrap(raw: Clients) -> Clients:
        for i in range(EXISTING):
            raw.dynamodb.put_item(TableName=TABLE, Item=existing_item(i))
        strict = layer.wrap(raw)
        if statements:
            strict = replace(strict, dynamodb=WriterDynamoDB(strict.dynamodb, strict.dynamodb,
                                                             items_table=TABLE))
        clock.skip_waits(raw.sqs, step_s=LOCAL_CONFIG.visibility_timeout_s)
        return replace(strict, sqs=clock.invocations(strict.sqs))

    out = tmp_path / "out"
    with clock.running():
        result = ingest(IngestOptions(file=data, spec=spec_for(mode, tmp_path), out_dir=out,
                                      wrap_clients=wrap, clock=clock, **options))
    items = {}
    for line in (out / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        items[(item["account"]["S"], item["offer_id"]["N"])] = item
    return result.summary, layer, items


def rows_for(mode: str) -> list[list[str]]:
    """Keys 30..129 (30..59 in the table), the key 70 twice in a message, a row with a bad
    number, and for an update a row (32) that leaves a column empty (not set)."""
    rows = [[f"a{i % 3}", str(i), f"r{i}", f"{i}.50"] for i in range(30, 130)]
    rows[41:41] = [["a1", "70", "again", ""]]  # in 70's own message: the later row wins
    rows += [["a0", "131", "x", "not a number"]]
    if mode == "update":
        rows[2] = ["a2", "32", "", "9"]
    return rows


@pytest.mark.parametrize("mode", ["insert", "update"])
def test_statements_give_the_table_and_counts_one_call_a_row_gives(tmp_path, mode):
    rows = rows_for(mode)
    per_row, _, per_row_items = run(tmp_path / "rows", mode, rows, statements=False)
    summary, layer, items = run(tmp_path / "statements", mode, rows, statements=True)
    assert layer.record.violations == []
    assert layer.record.calls["batch_execute_statement"] >= 5  # 103 rows, 25 a call
    assert items == per_row_items
    assert {n: summary[n] for n in COUNTS} == {n: per_row[n] for n in COUNTS}
    assert summary["status"] == "COMPLETE"
    assert_exact(summary)
    if mode == "insert":
        assert summary["rows_skipped_existing"] == 30 and summary["rows_superseded"] == 1
        assert items[("a0", "30")] == existing_item(30)  # left byte for byte
    else:
        merged = items[("a2", "32")]  # merged, not replaced; the empty risk not set
        assert (merged["extra"], merged["risk"], merged["amount"]) == (
            {"S": "kept-32"}, {"S": "old"}, {"N": "9"})


@pytest.mark.parametrize("mode", ["insert", "update"])
def test_statements_under_faults_keep_the_table_and_counts_exact(tmp_path, mode):
    rows = rows_for(mode)
    clean, _, clean_items = run(tmp_path / "clean", mode, rows, statements=True)
    # A run makes only a few statement calls, and which call draws which fault depends on
    # how the 4 writers interleave: seeds are tried until one run lost a reply (every run
    # must be exact, whatever it drew)
    lost = 0
    for seed in range(11, 19):
        faults = Faults(throttle_rate=0.1, server_error_rate=0.05, lost_reply_rate=0.3,
                        unprocessed_keys_rate=0.2, duplicate_delivery_rate=0.1, items_table=TABLE,
                        seed=seed)
        noisy, layer, noisy_items = run(tmp_path / f"noisy-{seed}", mode, rows, statements=True,
                                        faults=faults, concurrency=4)
        assert layer.record.violations == []
        assert noisy_items == clean_items
        assert {n: noisy[n] for n in COUNTS} == {n: clean[n] for n in COUNTS}
        assert noisy["status"] == "COMPLETE"
        assert_exact(noisy)
        lost += layer.record.injected["lost_reply"]
        if lost:
            break
    assert lost > 0
