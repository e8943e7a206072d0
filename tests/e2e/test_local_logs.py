"""Locally, stdout belongs to the summary: the Lambdas' log lines go to stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanout.mapping import RowMapper
from fanout_cli.cli import main


def test_a_writer_log_line_goes_to_stderr_and_json_output_stays_json(
        tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    data = tmp_path / "data.csv"
    data.write_text("id,name\n1,a\n2,b\n3,c\n")
    spec = tmp_path / "spec.toml"
    spec.write_text("[table]\npartition_key = { name = \"id\", type = \"S\", template = \"{id}\" }\n")
    real = RowMapper.to_item

    def to_item(self: RowMapper, row: list[str], line: int) -> Any:
        if row[0] == "2":  # a mapping bug on one row: the writer logs it and rejects the row
            raise KeyError("boom")
        return real(self, row, line)

    monkeypatch.setattr(RowMapper, "to_item", to_item)
    code = main(["ingest", str(data), "--spec", str(spec), "--json", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    summary = json.loads(out)  # nothing but the summary on stdout
    assert code == 3 and summary["rows_rejected"] == 1 and summary["rows_written"] == 2
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "mapping line 3 failed" and entry["level"] == "ERROR"
               and entry.get("job") == summary["job_id"] for entry in logged), err
