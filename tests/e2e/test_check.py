"""`fanout check`: the dry run counts what `fanout ingest` does, writing nothing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.mapping import Spec, load_spec
from fanout_cli.check import check_file
from fanout_cli.cli import main
from fanout_cli.local.ingest import IngestOptions, ingest

SPEC = """\
[table]
partition_key = { name = "account", type = "S" }
sort_key = { name = "offer_id", type = "N" }

[columns]
types = { amount = "N", active = "BOOL", meta = "JSON" }
"""
HEADER = ["account", "offer_id", "amount", "active", "meta"]
GOOD = ["a1", "1", "2.50", "yes", '{"n": 1}']
# Each kind of bad row, and what the writer calls it.
BAD = {
    "empty_key": ["", "1", "1", "yes", "{}"],
    "bad_number": ["a1", "1", "12,5", "yes", "{}"],
    "bad_bool": ["a1", "1", "1", "maybe", "{}"],
    "bad_json": ["a1", "1", "1", "no", "{not json"],
    "column_count": ["a1", "1", "1", "yes", "{}", "extra"],
    "bad_sort_key": ["a1", "x1", "1", "no", "{}"],  # N key that is not a number
}


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([HEADER, *rows])
    path.write_text(buffer.getvalue())
    return path


def counts(summary: dict) -> tuple[int, int, int, int, int]:
    """Read, landed, deleted, rejected, superseded. An insert's written and skipped rows
    are one count (the dry run has no table to tell them apart)."""
    landed = (summary.get("rows_written", 0) + summary.get("rows_skipped_existing", 0)
              + summary.get("rows_written_or_skipped_existing", 0))
    return (summary["rows_read"], landed, summary.get("rows_deleted", 0),
            summary["rows_rejected"], summary["rows_superseded"])


# Rows: a kind ("good" or a BAD reason) and an offer id; small ids make duplicate keys
# (superseded within a message, overwritten across messages) likely.
row_kinds = st.lists(st.tuples(st.sampled_from(["good"] * 4 + sorted(BAD)),
                               st.integers(min_value=0, max_value=40)), min_size=1, max_size=90)


@settings(max_examples=int(os.environ.get("FANOUT_CHECK_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kinds=row_kinds, mode=st.sampled_from(["put", "delete", "insert", "update"]))
def test_check_agrees_with_ingest_on_every_count(tmp_path_factory, kinds, mode) -> None:
    # Given a generated file with bad rows of every kind and repeated keys, in a write mode
    tmp = tmp_path_factory.mktemp("agree")
    rows = []
    for kind, offer in kinds:
        row = list(GOOD if kind == "good" else BAD[kind])
        if kind != "bad_sort_key" and len(row) > 1:
            row[1] = str(offer)
        rows.append(row)
    data = write_csv(tmp / "data.csv", rows)
    (tmp / "spec.toml").write_text(SPEC.replace("[table]\n", f'[table]\nmode = "{mode}"\n'))
    spec = load_spec(tmp / "spec.toml")
    assert spec.mode == mode
    # When it is checked and ingested with the same spec
    checked = check_file(data, spec).summary()
    ingested = ingest(IngestOptions(file=data, spec=spec, out_dir=tmp / "out")).summary
    # Then every count agrees, and the rejections by reason are the ingest's
    assert counts(checked) == counts(ingested)
    rejected = [json.loads(line)["reason"]
                for line in (tmp / "out" / "rejected.jsonl").read_text().splitlines()]
    by_reason = {reason: rejected.count(reason) for reason in set(rejected)}
    assert checked["rejected_by_reason"] == dict(sorted(by_reason.items()))


def test_the_dry_run_prints_reasons_and_first_lines_and_exits_as_ingest(tmp_path, capsys) -> None:
    data = write_csv(tmp_path / "data.csv", [GOOD, BAD["bad_number"], ["a1", "1", "3", "no", "[]"],
                                             BAD["empty_key"]])
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    assert main(["check", str(data), "--spec", str(spec)]) == 3
    out = capsys.readouterr().out
    assert "rows read   4" in out and "would write  1" in out and "superseded   1" in out
    assert "bad_number           1" in out and "empty_key            1" in out
    assert "line 3: bad_number: column 'amount': '12,5' is not a number" in out
    assert "nothing was written" in out and "mode" not in out
    assert main(["check", str(data), "--spec", str(spec), "--json"]) == 3
    summary = json.loads(capsys.readouterr().out)  # nothing but the JSON
    assert summary["first_rejected"][0]["line"] == 3
    assert summary["source_format"] == "utf-8, delimiter ',' (from the header)"


def test_a_write_mode_is_printed_with_what_the_dry_run_can_know(tmp_path, capsys) -> None:
    data = write_csv(tmp_path / "data.csv", [GOOD, ["a1", "2", "12,5", "yes", "{}"],
                                             BAD["empty_key"]])
    printed = {}
    for mode, line in (("delete", "would delete 2 "), ("insert", "would write or skip 1 "),
                       ("update", "would write  1")):
        spec = tmp_path / f"{mode}.toml"
        spec.write_text(SPEC.replace("[table]\n", f'[table]\nmode = "{mode}"\n'))
        assert main(["check", str(data), "--spec", str(spec)]) == 3
        printed[mode] = capsys.readouterr().out
        assert f"mode        {mode}" in printed[mode] and line in printed[mode], printed[mode]
    # A delete reads only the key: the bad number is no rejection there
    assert "bad_number" not in printed["delete"] and "bad_number" in printed["update"]
    assert "a dry run has no table to tell" in printed["insert"]


def test_a_clean_file_exits_0_and_a_file_the_job_would_fail_exits_1(tmp_path, capsys) -> None:
    clean = write_csv(tmp_path / "clean.csv", [["a1", str(i), "1", "yes", "{}"] for i in range(60)])
    assert main(["check", str(clean), "--sort-key", "offer_id"]) == 0
    assert "would write  60" in capsys.readouterr().out
    broken = tmp_path / "broken.csv"
    broken.write_text('account,offer_id\na,1\nb,"never closed\nc,3\n')
    assert main(["check", str(broken)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fanout check: error: {broken}: line 3:") and "\n" not in err


def test_usage_errors_exit_2_before_reading_the_file(tmp_path, capsys) -> None:
    clean = write_csv(tmp_path / "clean.csv", [GOOD])
    assert main(["check", str(clean), "--partition-key", "nosuch"]) == 2
    assert "not in the header" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.csv")]) == 2


def test_nothing_is_written_and_no_emulator_is_needed(tmp_path, monkeypatch) -> None:
    # Any AWS client the dry run made would fail: there are no credentials and no endpoint.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    data = write_csv(tmp_path / "d.csv", [["a1", str(i), "1", "yes", "{}"] for i in range(30)])
    before = sorted(p.name for p in tmp_path.iterdir())
    result = check_file(data, Spec.default())
    assert (result.rows_read, result.written, result.messages) == (30, 30, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("range_bytes", [7, 1024])
def test_tiny_ranges_count_the_same_as_large_ones(tmp_path, range_bytes) -> None:
    rows = [["a1", str(i), "1", "yes", '{"note": "has, a comma\\nand a newline"}'] for i in range(80)]
    data = write_csv(tmp_path / "q.csv", rows)
    small = check_file(data, Spec.default(), range_bytes=range_bytes)
    large = check_file(data, Spec.default())
    assert (small.rows_read, small.written, small.messages) == (large.rows_read, large.written,
                                                                 large.messages) == (80, 80, 4)
