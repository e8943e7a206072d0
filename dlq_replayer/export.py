"""`export`: every waiting row in a form a person can fix in a spreadsheet, and reading
the fixed file back for `redrive --fixes`.

CSV: one row per CSV line. The columns starting with `_` say where the row came from
(`_job`, `_message`, `_line` identify it; `_kind`, `_source`, `_reason`, `_detail` are
for the reader); the others are the row's fields under the header's column names (the
union of the headers when several jobs are exported). JSONL: one object per line with
the same `_` fields and the row's fields under "fields".
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from dlq_replayer.dlq import Ref, WaitingRow, column_labels
from dlq_replayer.spool import DistinctRows

META = ["_job", "_message", "_line", "_kind", "_reason", "_detail", "_source"]


class FixesError(ValueError):
    """A fixes file that cannot be used; the message names the line."""


def record(row: WaitingRow) -> dict[str, Any]:
    labels = column_labels(row.header, len(row.row))
    return {"_job": row.job, "_message": row.message_id, "_line": row.line, "_kind": row.kind,
            "_reason": row.reason, "_detail": row.detail, "_source": row.source,
            "fields": dict(zip(labels, row.row, strict=False))}


def export_rows(rows: DistinctRows, out: Path) -> int:
    """Write `rows` to `out` (.csv or .jsonl) one at a time, in (job, line) order; returns
    how many."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".jsonl":
        with open(out, "w", encoding="utf-8") as f:
            for row in rows.ordered():
                f.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        return rows.count
    columns = _columns(rows)
    clash = set(columns) & set(META)
    if clash:
        raise FixesError(f"the data has column(s) named {', '.join(sorted(clash))}; "
                         "export to .jsonl instead")
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(META + columns)
        for row in rows.ordered():
            rec = record(row)
            writer.writerow([rec[m] for m in META] + [rec["fields"].get(c, "") for c in columns])
    return rows.count


def _columns(rows: DistinctRows) -> list[str]:
    """The union of the rows' column labels, in the order they first appear (a first pass
    over the shapes of the rows: there are few distinct ones)."""
    columns: dict[str, None] = {}
    done: set[tuple[tuple[str, ...], int]] = set()
    for header, width in rows.shapes():
        if (header, width) not in done:
            done.add((header, width))
            columns.update(dict.fromkeys(column_labels(header, width)))
    return list(columns)


def read_fixes(path: Path) -> dict[Ref, dict[str, str]]:
    """(job, message id, line) -> the row's fields by column label, from an edited export."""
    fixes: dict[Ref, dict[str, str]] = {}
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                    fields = {str(k): "" if v is None else str(v)
                              for k, v in rec["fields"].items()}
                    fixes[_ref(rec, path, number)] = fields
                except (ValueError, KeyError, AttributeError) as exc:
                    raise FixesError(f"{path}:{number}: not an exported row ({exc})") from exc
        return fixes
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [m for m in ("_job", "_message", "_line") if m not in (reader.fieldnames or [])]
        if missing:
            raise FixesError(f"{path}: missing column(s) {', '.join(missing)}: "
                             "is this a dlq-replayer export?")
        for rec in reader:
            if not any((v or "").strip() for v in rec.values()):
                continue  # a blank line a spreadsheet left behind
            fields = {k: v or "" for k, v in rec.items() if k and not k.startswith("_")
                      or (k or "").startswith("_extra_")}
            fixes[_ref(rec, path, reader.line_num)] = fields
    return fixes


def _ref(rec: dict[str, Any], path: Path, number: int) -> Ref:
    try:
        return (str(rec["_job"]), str(rec["_message"]), int(rec["_line"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FixesError(f"{path}:{number}: bad _job/_message/_line ({exc})") from exc


def row_from_fields(row: WaitingRow, fields: dict[str, str]) -> list[str]:
    """The fixed row, in the header's order: the header's columns, then any `_extra_N`
    fields up to the last one that is not empty (so a fix can drop surplus columns)."""
    labels = column_labels(row.header)
    missing = [label for label in labels if label not in fields]
    if missing:
        raise FixesError(f"{row.job} line {row.line}: the fixes file has no column(s) "
                         f"{', '.join(missing)}")
    values = [fields[label] for label in labels]
    extras = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in fields.items()
                    if k.startswith("_extra_") and k.rsplit("_", 1)[1].isdigit())
    tail = [v for _, v in extras]
    while tail and tail[-1] == "":
        tail.pop()
    return values + tail
