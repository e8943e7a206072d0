"""`inspect`: what waits in the DLQ, by job and by reason, with a few samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dlq_replayer.dlq import DlqMessage, DlqReader, Filters, column_labels
from dlq_replayer.spool import DistinctRows

SAMPLES_PER_REASON = 3


@dataclass
class Read:
    """What a read-only pass found, in bounded memory: counts of messages, and the selected
    rows once each (a killed redrive can leave a row in two DLQ messages) on disk."""

    filters: Filters
    rows: DistinctRows = field(default_factory=DistinctRows)
    messages: int = 0  # messages with at least one selected row
    by_kind: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0

    def add(self, message: DlqMessage) -> None:
        if message.message is None:
            self.unreadable += 1
            return
        selected = [r for r in message.rows if self.filters.match(r)]
        if selected:
            self.messages += 1
            self.by_kind[message.message.kind] += 1
            self.rows.add(selected)


def read_selected(reader: DlqReader, filters: Filters) -> Read:
    """One pass over the DLQ; every message it held is released at the end."""
    found = Read(filters)
    try:
        for batch in reader.batches():
            for message in batch:
                found.add(message)
    finally:
        reader.release()
    found.rows.finish()
    return found


def summarize(found: Read, samples: int = SAMPLES_PER_REASON) -> dict[str, Any]:
    rows = found.rows
    jobs: dict[str, dict[str, Any]] = {}
    for job, reason, n in rows.by_job():
        if job not in jobs:
            jobs[job] = {"source": rows.source_of(job), "rows": 0, "by_reason": {}}
        jobs[job]["rows"] += n
        jobs[job]["by_reason"][reason] = n
    reasons: dict[str, dict[str, Any]] = {}
    for reason, count in rows.by_reason():
        examples = rows.ordered("reason = ?", (reason,), limit=samples) if samples > 0 else []
        reasons[reason] = {"rows": count, "samples": [
            {"job": r.job, "line": r.line, "detail": r.detail,
             "row": dict(zip(column_labels(r.header, len(r.row)), r.row, strict=False))}
            for r in examples]}
    return {
        "messages": found.messages,
        "messages_by_kind": dict(found.by_kind),
        "unreadable_messages": found.unreadable,
        "rows": rows.count,
        "jobs": jobs,
        "reasons": reasons,
    }


def format_text(summary: dict[str, Any]) -> str:
    if not summary["rows"]:
        return "nothing waiting in the DLQ matches\n"
    kinds = ", ".join(f"{n} {k}" for k, n in summary["messages_by_kind"].items())
    out = [f"DLQ: {summary['messages']:,} message(s) ({kinds}), {summary['rows']:,} row(s)"]
    if summary["unreadable_messages"]:
        out.append(f"     {summary['unreadable_messages']} unreadable message(s) (not ours)")
    out.append("")
    out.append("by job:")
    for job, info in summary["jobs"].items():
        reasons = ", ".join(f"{r} {n:,}" for r, n in info["by_reason"].items())
        out.append(f"  {job}  {info['rows']:,} row(s)  [{reasons}]  {info['source']}")
    out.append("")
    out.append("by reason:")
    for reason, info in summary["reasons"].items():
        out.append(f"  {reason}: {info['rows']:,} row(s)")
        for sample in info["samples"]:
            fields = ", ".join(f"{k}={v!r}" for k, v in list(sample["row"].items())[:6])
            out.append(f"    {sample['job']} line {sample['line']}: {sample['detail']}")
            out.append(f"      {fields}")
    return "\n".join(out) + "\n"
