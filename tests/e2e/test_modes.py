"""Write modes end to end: `fanout ingest` in-process on moto, through the strict layer,
into a table that already holds items when the job starts; and `fanout check` agreeing."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.aws import Clients
from fanout.mapping import Spec, load_spec
from fanout.settings import ResourceNames
from fanout_cli.check import check_file
from fanout_cli.cli import main
from fanout_cli.local.ingest import IngestOptions, IngestResult, ingest
from tests.strict_aws import Faults, StrictLayer

TABLE = ResourceNames().table
HEADER = ["account", "offer_id", "risk", "amount"]
EXISTING = 60  # items the table holds before the job: offer_id 0..59


def spec_for(mode: str, tmp_path: Path) -> Spec:
    text = f"""
[table]
mode = "{mode}"
partition_key = {{ name = "account", type = "S" }}
sort_key = {{ name = "offer_id", type = "N" }}

[columns]
types = {{ amount = "N" }}
"""
    path = tmp_path / f"{mode}.toml"
    path.write_text(text)
    return load_spec(path)


def existing_item(i: int) -> dict[str, Any]:
    return {"account": {"S": f"a{i % 3}"}, "offer_id": {"N": str(i)}, "risk": {"S": "old"},
            "amount": {"N": f"{i}.5"}, "extra": {"S": f"kept-{i}"},
            "tags": {"SS": ["x", "y"]}}


def prepopulated(layer: StrictLayer) -> Callable[[Clients], Clients]:
    """The ingest's client hook: fills the items table (just created) before the job
    starts, then puts the strict layer in front of the handlers."""
    def wrap(raw: Clients) -> Clients:
        for i in range(EXISTING):
            raw.dynamodb.put_item(TableName=TABLE, Item=existing_item(i))
        return layer.wrap(raw)
    return wrap


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([HEADER, *rows])
    path.write_text(buffer.getvalue())
    return path


def run(tmp_path: Path, mode: str, rows: list[list[str]], faults: Faults | None = None,
        **options: Any) -> tuple[IngestResult, StrictLayer, dict[tuple[str, str], dict[str, Any]]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_csv(tmp_path / f"{mode}.csv", rows)
    layer = StrictLayer(faults or Faults(items_table=TABLE))
    out = tmp_path / f"out-{mode}"
    captured: dict[tuple[str, str], dict[str, Any]] = {}
    result = ingest(IngestOptions(file=data, spec=spec_for(mode, tmp_path), out_dir=out,
                                  wrap_clients=prepopulated(layer), **options))
    for line in (out / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        captured[(item["account"]["S"], item["offer_id"]["N"])] = item
    return result, layer, captured


def key(i: int) -> tuple[str, str]:
    return (f"a{i % 3}", str(i))


def before() -> dict[tuple[str, str], dict[str, Any]]:
    return {key(i): existing_item(i) for i in range(EXISTING)}


def assert_exact(summary: dict[str, Any]) -> None:
    assert summary["rows_read"] == sum(summary[f"rows_{name}"] for name in (
        "written", "rejected", "superseded", "deleted", "skipped_existing"))


def test_delete_removes_exactly_the_named_keys_and_an_absent_key_counts_deleted(tmp_path):
    # Given a table with 60 items, and a file naming keys 0..29, two absent keys, a key
    # twice in one message, a row with an empty key and one whose other columns are bad
    rows = [[f"a{i % 3}", str(i), "", ""] for i in range(30)]
    rows += [["a0", "900", "", ""], ["a1", "901", "", ""]]  # absent
    rows += [["a2", "32", "first", ""], ["a2", "32", "second", ""]]  # twice: one superseded
    rows += [["", "33", "", ""]]  # no key: rejected
    rows += [["a1", "34", "whatever", "not a number"]]  # other columns are not read
    result, layer, items = run(tmp_path, "delete", rows)
    s = result.summary
    # Then exactly the named keys are gone, and every row is counted once
    assert layer.record.violations == []
    assert layer.record.calls["batch_write_item"] >= 2
    gone = {key(i) for i in range(30)} | {key(32), key(34)}
    assert items == {k: v for k, v in before().items() if k not in gone}
    assert s["status"] == "COMPLETE" and result.exit_code == 3
    assert (s["rows_read"], s["rows_deleted"], s["rows_superseded"], s["rows_rejected"],
            s["rows_written"], s["rows_skipped_existing"]) == (36, 34, 1, 1, 0, 0)
    assert_exact(s)
    assert s["completion"]["WRITE_MODE"] == "delete"
    assert s["completion"]["TOTAL_NUMBER_OF_ITEMS_DELETED"] == 34


def test_insert_writes_only_new_keys_and_leaves_existing_items_byte_for_byte(tmp_path):
    # Given a table with 60 items, and a file with keys 50..79 (50..59 exist), one new key
    # twice in a message and a row with a bad number
    rows = []
    for i in range(50, 80):
        rows.append([f"a{i % 3}", str(i), "new", f"{i}"])
        if i == 70:  # 70 again, in the same message: the later row wins
            rows.append(["a1", "70", "newer", "7.25"])
    rows += [["a0", "81", "new", "NaN-ish"]]  # rejected: bad_number
    result, layer, items = run(tmp_path, "insert", rows)
    s = result.summary
    assert layer.record.violations == []
    assert layer.record.calls["put_item"] >= 30
    assert items == before() | {
        key(i): {"account": {"S": key(i)[0]}, "offer_id": {"N": str(i)}, "risk": {"S": "new"},
                 "amount": {"N": str(i)}} for i in range(60, 80) if i != 70
    } | {key(70): {"account": {"S": "a1"}, "offer_id": {"N": "70"}, "risk": {"S": "newer"},
                   "amount": {"N": "7.25"}}}
    assert (s["rows_read"], s["rows_written"], s["rows_skipped_existing"], s["rows_superseded"],
            s["rows_rejected"], s["rows_deleted"]) == (32, 20, 10, 1, 1, 0)
    assert_exact(s)
    assert s["completion"]["TOTAL_NUMBER_OF_ROWS_SKIPPED_EXISTING"] == 10


def test_update_merges_into_existing_items_and_creates_absent_ones(tmp_path):
    # Given a table with 60 items; rows for keys 50..69 set risk and amount; key 52 leaves
    # risk empty (not mentioned: the old risk stays); key 65 comes twice in a message, the
    # first setting risk, the second amount
    rows = [[f"a{i % 3}", str(i), "upd", f"{i}.75"] for i in range(50, 70) if i not in (52, 65)]
    rows += [["a1", "52", "", "1.50"]]
    rows += [["a2", "65", "first", ""], ["a2", "65", "", "6"]]
    result, layer, items = run(tmp_path, "update", rows)
    s = result.summary
    assert layer.record.violations == []
    assert layer.record.calls["update_item"] >= 20
    expected = before()
    for i in range(50, 70):
        if i in (52, 65):
            continue
        base = expected.get(key(i), {"account": {"S": key(i)[0]}, "offer_id": {"N": str(i)}})
        expected[key(i)] = base | {"risk": {"S": "upd"}, "amount": {"N": f"{i}.75"}}
    expected[key(52)] = existing_item(52) | {"amount": {"N": "1.50"}}  # (moto keeps the text)
    expected[key(65)] = {"account": {"S": "a2"}, "offer_id": {"N": "65"}, "risk": {"S": "first"},
                         "amount": {"N": "6"}}
    assert items == expected
    assert items[key(55)]["extra"] == {"S": "kept-55"} and "extra" not in items[key(60)]
    assert (s["rows_read"], s["rows_written"], s["rows_superseded"], s["rows_rejected"]) == (
        21, 20, 1, 0)
    assert_exact(s)


def test_put_summary_is_as_before_modes(tmp_path, capsys):
    data = write_csv(tmp_path / "p.csv", [["a0", "1", "x", "2"]])
    assert main(["ingest", str(data), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "deleted" not in printed and "skipped" not in printed and "mode" not in printed


@pytest.mark.parametrize("mode", ["insert", "update", "delete"])
def test_modes_under_throttles_500s_and_lost_replies_keep_counts_exact(tmp_path, mode):
    # Given the same rows as a clean run, with throttles, 500s and replies lost after the
    # write took effect on the item writes, and duplicate deliveries
    # (a delete is one call per 25 rows, not one per row: more rows, more lost replies)
    last, lost = (230, 0.5) if mode == "delete" else (130, 0.1)
    rows = [[f"a{i % 3}", str(i), f"r{i}", f"{i}.50"] for i in range(30, last)]
    clean, _, clean_items = run(tmp_path / "clean", mode, rows)
    faults = Faults(throttle_rate=0.1, server_error_rate=0.05, lost_reply_rate=lost,
                    unprocessed_rate=0.2, duplicate_delivery_rate=0.1, items_table=TABLE, seed=7)
    noisy, layer, noisy_items = run(tmp_path / "noisy", mode, rows, faults, concurrency=4)
    # Then the table and every count are those of the clean run
    assert layer.record.violations == []
    assert layer.record.injected["lost_reply"] > 0 and layer.record.injected["throttle"] > 0
    assert noisy_items == clean_items
    names = ("rows_read", "rows_written", "rows_rejected", "rows_superseded", "rows_deleted",
             "rows_skipped_existing")
    assert {n: noisy.summary[n] for n in names} == {n: clean.summary[n] for n in names}
    assert noisy.summary["status"] == "COMPLETE"
    assert_exact(noisy.summary)


@pytest.mark.parametrize("mode", ["put", "delete", "insert", "update"])
def test_check_agrees_with_ingest_for_each_mode(tmp_path, mode):
    rows = [[f"a{i % 3}", str(i), "r", str(i)] for i in range(40, 90)]
    rows += [["a2", "41", "again", "1"], ["", "5", "", ""], ["a0", "6", "x", "bad"], ["a0", "7", "x", "1", "extra"]]
    result, _, _ = run(tmp_path, mode, rows)
    s = result.summary
    checked = check_file(tmp_path / f"{mode}.csv", spec_for(mode, tmp_path)).summary()
    assert checked["rows_read"] == s["rows_read"] == 54
    assert checked["rows_rejected"] == s["rows_rejected"] == (2 if mode == "delete" else 3)
    assert checked["rows_superseded"] == s["rows_superseded"] == 0
    assert checked.get("rows_deleted", 0) == s["rows_deleted"]
    if mode == "insert":  # check has no table: it cannot tell a new key from an existing one
        assert checked["rows_written_or_skipped_existing"] == (
            s["rows_written"] + s["rows_skipped_existing"])
        assert s["rows_skipped_existing"] == 21  # 40..59 and the second 41
        assert "rows_written" not in checked
    else:
        assert checked["rows_written"] == s["rows_written"]
    assert checked.get("mode", "put") == mode


def test_a_parallel_split_stamps_the_mode_in_every_range(tmp_path):
    from dataclasses import replace

    from fanout.settings import LOCAL_CONFIG

    # Given 600 rows naming keys 0..599 (0..59 in the table), split in ~8 parallel ranges
    rows = [[f"a{i % 3}", str(i), "", ""] for i in range(600)]
    data = write_csv(tmp_path / "delete.csv", rows)
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=1_000,
                     parallel_range_bytes=data.stat().st_size // 8 + 1)
    layer = StrictLayer(Faults(items_table=TABLE))
    result = ingest(IngestOptions(file=data, spec=spec_for("delete", tmp_path),
                                  out_dir=tmp_path / "out", wrap_clients=prepopulated(layer),
                                  config=config, range_bytes=512))
    s = result.summary
    # Then every range's rows were deletes: the table is empty, and every row counted deleted
    assert s["parallel_ranges"] >= 5 and s["status"] == "COMPLETE"
    assert (s["rows_read"], s["rows_deleted"], s["rows_written"]) == (600, 600, 0)
    assert (tmp_path / "out" / "items.jsonl").read_text() == ""
    assert layer.record.violations == []
