"""Every row is written, rejected with a reason, or superseded — and the counts prove it,
under injected throttling and duplicate deliveries."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from fanout.mapping import Spec, load_spec
from fanout_cli.cli import main
from fanout_cli.local.ingest import IngestOptions, ingest
from fanout_cli.makecsv import make_csv
from tests.conftest import sized
from tests.strict_aws import Faults, StrictLayer


def items_of(out: Path) -> list[dict]:
    return [json.loads(x)["Item"] for x in (out / "items.jsonl").read_text().splitlines()]


def test_faults_and_duplicates_end_with_the_clean_result_and_exact_counts(tmp_path: Path) -> None:
    # Given 50,000 rows (20,000 in CI), 20% of writes returned as UnprocessedItems, 5% of
    # deliveries duplicated, and some throttling and 500s
    rows = sized(50_000, 20_000)
    data = tmp_path / "data.csv"
    make_csv(rows, 20, data, seed=5, stream=io.StringIO())
    layer = StrictLayer(Faults(unprocessed_rate=0.2, duplicate_delivery_rate=0.05,
                               throttle_rate=0.02, server_error_rate=0.02, seed=11))
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  wrap_clients=layer.wrap, concurrency=8))
    s = result.summary
    # Then the table holds exactly the CSV's rows, and the counts are exact
    assert layer.record.injected["unprocessed"] > rows // 50
    assert layer.record.injected["duplicate_delivery"] > rows // 1000
    assert layer.record.violations == []
    assert s["status"] == "COMPLETE"
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        rows, rows, 0, 0)
    with open(data, newline="") as f:
        expected = {(r["account"], r["offer_id"]): r for r in csv.DictReader(f)}
    got = {(i["account"]["S"], i["offer_id"]["S"]): {k: v["S"] for k, v in i.items()}
           for i in items_of(tmp_path / "out")}
    assert got == expected


MIXED_SPEC = """
[table]
partition_key = { name = "account", type = "S" }
sort_key = { name = "offer_id", type = "N" }

[columns]
types = { amount = "N", active = "BOOL", meta = "JSON" }
"""


def mixed_file(tmp_path: Path, mode: str = "put") -> tuple[Path, Path]:
    """60 rows, 6 of them bad in six ways, one superseded; and the spec, in `mode`."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(MIXED_SPEC.replace("[table]\n", f'[table]\nmode = "{mode}"\n'))
    header = ["account", "offer_id", "amount", "active", "meta", "blob"]
    rows = []
    for i in range(60):
        rows.append([f"a{i % 4}", str(i), f"{i}.50", "yes" if i % 2 else "no", '{"n": 1}', "x"])
    rows[3][0] = ""  # empty key                      -> empty_key
    rows[10][2] = "12,5"  # bad number               -> bad_number
    rows[11][2] = "NaN"  # not finite                -> bad_number
    rows[12][3] = "maybe"  # bad boolean             -> bad_bool
    rows[20] = ["a1", "21", "1", "yes", "{}", "first"]  # same key as row 21 in the same message
    rows[30][5] = "y" * 500_000  # 500 KB field       -> item_too_large
    rows[40] = rows[40] + ["extra"]  # a field too many -> column_count
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    data = tmp_path / "mixed.csv"
    data.write_text(buffer.getvalue())
    return data, spec_path


def test_mixed_good_and_bad_rows_are_each_accounted_for(tmp_path: Path) -> None:
    data, spec_path = mixed_file(tmp_path)
    result = ingest(IngestOptions(file=data, spec=load_spec(spec_path), out_dir=tmp_path / "out",
                                  wrap_clients=StrictLayer().wrap))
    s = result.summary
    assert result.exit_code == 3
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        60, 53, 6, 1)
    assert s["rows_written"] + s["rows_rejected"] + s["rows_superseded"] == s["rows_read"]
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (5, "empty_key"), (12, "bad_number"), (13, "bad_number"), (14, "bad_bool"),
        (32, "item_too_large"), (42, "column_count"), ]
    items = {int(i["offer_id"]["N"]): i for i in items_of(tmp_path / "out")}
    assert len(items) == 53
    assert items[21]["blob"] == {"S": "x"}  # the later row with the key won
    assert items[1]["amount"] == {"N": "1.50"} and items[1]["active"] == {"BOOL": True}
    assert items[2]["meta"] == {"M": {"n": {"N": "1"}}}
    assert s["completion"]["TOTAL_NUMBER_OF_ITEMS_IN_ERROR"] == 6
    assert s["completion"]["ERROR_DATA_LOCATION"].startswith("s3://fanout-uploads/errors/")


@pytest.mark.parametrize("mode", ["insert", "update", "delete"])
def test_mixed_rows_are_each_accounted_for_in_every_write_mode(tmp_path: Path, mode: str) -> None:
    data, spec_path = mixed_file(tmp_path, mode)
    result = ingest(IngestOptions(file=data, spec=load_spec(spec_path), out_dir=tmp_path / "out",
                                  wrap_clients=StrictLayer().wrap))
    s = result.summary
    names = ("rows_read", "rows_written", "rows_rejected", "rows_superseded", "rows_deleted",
             "rows_skipped_existing")
    rejected = [json.loads(x)["reason"]
                for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    if mode == "delete":  # only the key is read: a bad value elsewhere, or a big one, is no fault
        assert tuple(s[n] for n in names) == (60, 0, 2, 1, 57, 0)
        assert rejected == ["empty_key", "column_count"]
    else:  # the empty table: every insert is new, every update creates its item
        assert tuple(s[n] for n in names) == (60, 53, 6, 1, 0, 0)
        assert rejected == ["empty_key", "bad_number", "bad_number", "bad_bool",
                            "item_too_large", "column_count"]
    assert s["rows_read"] == sum(s[n] for n in names[1:])
    assert s["completion"]["WRITE_MODE"] == mode


@pytest.mark.parametrize("field_limit", [None, 1_100_000], ids=["parsable", "past-csv-field-limit"])
def test_a_row_too_large_for_any_queue_message_is_rejected_not_lost(tmp_path: Path,
                                                                   field_limit: int | None) -> None:
    """Also when its field is past csv's field limit (64 MiB; lowered here to stand in for
    a 64 MiB field): the splitter must not crash on parsing it."""
    data = tmp_path / "huge.csv"
    data.write_text("account,offer_id,blob\n" + "a,1,small\n" + f"a,2,{'z' * 1_200_000}\n" + "a,3,ok\n")
    saved = csv.field_size_limit(field_limit) if field_limit else None
    try:
        result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out"))
    finally:
        if saved:
            csv.field_size_limit(saved)
    s = result.summary
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"]) == (3, 2, 1)
    (rejected,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected["line"] == 3 and rejected["reason"] == "row_too_large"
    if field_limit:
        assert rejected["row"] == ["a,2," + "z" * 196]  # the raw text, cut
    else:
        assert len(rejected["row"][2]) == 200


def test_json_copy_backs_up_written_items_and_status_shows_the_job(tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    from fanout_cli.local import ingest as local_ingest

    # Given the json-copy objects, read from the bucket before the emulator stops
    copies: dict[str, list[dict]] = {}
    real_write_outputs = local_ingest.write_outputs

    def read_copies_then_write_outputs(clients, stack, job, *args, **kwargs):
        prefix = f"{stack.settings.json_copy_prefix}{job}/"
        for page in clients.s3.get_paginator("list_objects_v2").paginate(
                Bucket=stack.settings.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = clients.s3.get_object(Bucket=stack.settings.bucket, Key=obj["Key"])["Body"]
                copies[obj["Key"].removeprefix(prefix)] = [
                    json.loads(line)["Item"] for line in body.read().decode().splitlines()]
        return real_write_outputs(clients, stack, job, *args, **kwargs)

    monkeypatch.setattr(local_ingest, "write_outputs", read_copies_then_write_outputs)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "small.csv"
    make_csv(60, 3, data, seed=2, stream=io.StringIO())
    # When the file is loaded with --json-copy
    assert main(["ingest", str(data), "--json-copy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == 60
    # Then there is one object per message (25, 25 and 10 rows), and together they hold
    # exactly the items written to the table
    assert sorted((name, len(items)) for name, items in copies.items()) == [
        ("0.jsonl", 25), ("1.jsonl", 25), ("2.jsonl", 10)]

    def key(item: dict) -> str:
        return json.dumps(item, sort_keys=True)

    copied = sorted((item for items in copies.values() for item in items), key=key)
    assert copied == sorted(items_of(Path(summary["out_dir"])), key=key)
    assert main(["status", summary["job_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == summary["job_id"]
    assert main(["status", "no-such-job"]) == 1
