"""Files `csv.reader` reads load with no spec: gzip named .csv, UTF-16 with a BOM, semicolon
and tab delimiters (decided from the first bytes, fanout/dialect.py); what cannot be
detected fails saying what to set."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from fanout.mapping import Spec
from fanout.settings import LOCAL_CONFIG
from fanout_cli.local.ingest import IngestOptions, ingest
from tests.strict_aws import StrictLayer

ROWS = [["account", "offer_id", "note"]] + [
    [f"a{i % 5}", str(i), f'x;y\t"{i}", z' if i % 4 == 0 else f"plain é {i}"] for i in range(90)]


def csv_text(delimiter: str = ",", rows: list[list[str]] = ROWS) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def load(tmp_path: Path, name: str, data: bytes, spec: Spec | None = None, **options) -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    layer = StrictLayer()
    result = ingest(IngestOptions(file=path, spec=spec or Spec.default(), out_dir=tmp_path / "out",
                                  wrap_clients=layer.wrap, **options))
    assert layer.record.violations == []
    return result.summary


def items(tmp_path: Path) -> dict[str, dict[str, str]]:
    out = {}
    for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        out[item["offer_id"]["S"]] = {k: v["S"] for k, v in item.items()}
    return out


def assert_loaded_exactly(tmp_path: Path, summary: dict) -> None:
    assert summary["status"] == "COMPLETE", summary
    assert summary["rows_read"] == summary["rows_written"] == len(ROWS) - 1
    assert items(tmp_path) == {r[1]: dict(zip(ROWS[0], r, strict=True)) for r in ROWS[1:]}


@pytest.mark.parametrize(("name", "data", "described"), [
    ("gzip-named.csv", gzip.compress(csv_text().encode()), "gzip, utf-8, delimiter ',' (from the header)"),
    ("plain-named.gz", csv_text().encode(), "utf-8, delimiter ',' (from the header)"),
    ("utf16le.csv", csv_text().encode("utf-16"), "utf-16 (BOM), delimiter ',' (from the header)"),
    ("utf16be.csv", b"\xfe\xff" + csv_text().encode("utf-16-be"),
     "utf-16 (BOM), delimiter ',' (from the header)"),
    ("semicolon.csv", csv_text(";").encode(), "utf-8, delimiter ';' (from the header)"),
    ("tab.tsv", csv_text("\t").encode(), "utf-8, delimiter tab (from the header)"),
    ("all-three.csv", gzip.compress(csv_text("\t").encode("utf-16")),
     "gzip, utf-16 (BOM), delimiter tab (from the header)"),
], ids=lambda value: value if isinstance(value, str) and value.endswith((".csv", ".gz", ".tsv"))
   else "")
def test_files_load_with_no_spec(tmp_path: Path, name: str, data: bytes, described: str) -> None:
    # Small ranges: the decided format holds past the first read, and across checkpoints.
    summary = load(tmp_path, name, data, range_bytes=100)
    assert_loaded_exactly(tmp_path, summary)
    assert summary["source_format"] == described


def test_a_semicolon_file_split_in_parallel_ranges(tmp_path: Path) -> None:
    rows = [ROWS[0]] + [[f"a{i % 5}", str(i), f"n {i}"] for i in range(2000)]
    data = csv_text(";", rows).encode()
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=5_000,
                     parallel_range_bytes=len(data) // 6 + 1)
    summary = load(tmp_path, "semi-big.csv", data, range_bytes=2048, config=config)
    assert summary["status"] == "COMPLETE" and summary["parallel_ranges"] >= 4
    assert summary["rows_written"] == 2000
    assert items(tmp_path)["7"] == {"account": "a2", "offer_id": "7", "note": "n 7"}


def test_a_set_delimiter_wins_over_the_header(tmp_path: Path) -> None:
    # The header has more semicolons than commas, but the spec says comma.
    rows = [["account", "offer_id", "a;b;c;d"], ["x", "1", "p;q"]]
    summary = load(tmp_path, "set.csv", csv_text(",", rows).encode(),
                   spec=Spec.from_dict({"source": {"delimiter": ","}}))
    assert summary["status"] == "COMPLETE" and summary["rows_written"] == 1
    assert items(tmp_path)["1"]["a;b;c;d"] == "p;q"


def test_latin1_that_is_not_utf8_fails_saying_what_to_set(tmp_path: Path) -> None:
    data = "account,offer_id,note\na,1,café\n".encode("latin-1")
    summary = load(tmp_path, "latin.csv", data)
    assert summary["status"] == "FAILED"
    assert "line 2: bytes are not valid utf-8" in summary["error"]
    assert "--encoding latin-1" in summary["error"] and '[source] encoding = "latin-1"' in summary["error"]
    # And set, it loads.
    summary = load(tmp_path, "latin.csv", data, spec=Spec.default().with_source(None, "latin-1"))
    assert summary["status"] == "COMPLETE" and items(tmp_path)["1"]["note"] == "café"
