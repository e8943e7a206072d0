"""`inspect`: what waits in the DLQ, by job and by reason, with a few samples."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from dlq_replayer.dlq import DlqMessage, Filters, WaitingRow, column_labels

SAMPLES_PER_REASON = 3


def distinct_rows(messages: list[DlqMessage], filters: Filters) -> list[WaitingRow]:
    """Selected rows, once each: a killed redrive can leave a row in two DLQ messages."""
    seen: dict[tuple[str, str, int], WaitingRow] = {}
    for message in messages:
        for row in message.rows:
            if filters.match(row):
                seen.setdefault(row.ref, row)
    return sorted(seen.values(), key=lambda r: (r.job, r.line))


def summarize(messages: list[DlqMessage], filters: Filters, samples: int = SAMPLES_PER_REASON
              ) -> dict[str, Any]:
    rows = distinct_rows(messages, filters)
    selected = [m for m in messages if any(filters.match(r) for r in m.rows)]
    by_kind = Counter(m.message.kind for m in selected if m.message)
    jobs: dict[str, dict[str, Any]] = {}
    by_job: dict[str, list[WaitingRow]] = defaultdict(list)
    for row in rows:
        by_job[row.job].append(row)
    for job, job_rows in by_job.items():
        jobs[job] = {"source": job_rows[0].source, "rows": len(job_rows),
                     "by_reason": dict(Counter(r.reason for r in job_rows).most_common())}
    reasons: dict[str, dict[str, Any]] = {}
    for reason, count in Counter(r.reason for r in rows).most_common():
        examples = [r for r in rows if r.reason == reason][:samples]
        reasons[reason] = {"rows": count, "samples": [
            {"job": r.job, "line": r.line, "detail": r.detail,
             "row": dict(zip(column_labels(r.header, len(r.row)), r.row, strict=False))}
            for r in examples]}
    return {
        "messages": len(selected),
        "messages_by_kind": dict(by_kind),
        "unreadable_messages": sum(1 for m in messages if m.message is None),
        "rows": len(rows),
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
