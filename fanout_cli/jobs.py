"""An operator's controls: `fanout jobs` (every job, newest first), `fanout cancel JOB`,
and why a job ended (`explain`, what `fanout status` adds). The ledger does the work
(fanout.ledger.list_jobs, cancel_job); this module words it."""

from __future__ import annotations

import getpass
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout import ledger

SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COLUMNS = ("JOB", "STATUS", "SOURCE", "READ", "WRITTEN", "REJECTED", "STARTED", "TIME", "ROWS/S")


class SinceError(ValueError):
    """`--since` is neither a duration (24h, 30m, 7d, 90s) nor an ISO time."""


def since_iso(text: str, now: float | None = None) -> str:
    """`--since` as the ISO time the jobs index sorts by: a duration back from now (24h,
    30m, 7d, 90s) or a time (2026-12-07, 2026-12-07T13:00, UTC unless it says)."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        seconds = int(match.group(1)) * SINCE_UNITS[match.group(2)]
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(seconds=seconds)
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise SinceError(f"--since {text!r}: give a duration (24h, 30m, 7d, 90s) or an ISO "
                             "time (2026-12-07T13:00)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _seconds(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def job_row(job: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """One job as `fanout jobs` lists it (also its --json entry)."""
    now = time.time() if now is None else now
    started, finished = _seconds(job.get("started_at")), _seconds(job.get("finished_at"))
    counts = ledger.counts_of(job)
    ended = job.get("status") in ledger.ENDED
    elapsed = ((finished if ended and finished else now) - started) if started else None
    return {
        "job_id": job.get("pk"), "status": job.get("status"), "source": job.get("source"),
        "rows_read": job.get("rows_read"), "rows_written": counts.written,
        "rows_rejected": counts.rejected, "rows_cancelled": counts.cancelled,
        "started_at": job.get("started_at"), "finished_at": job.get("finished_at") if ended else None,
        "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
        "rows_per_s": round(counts.rows / elapsed) if elapsed and elapsed > 0 else None,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 \
        else f"{rest}s"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The jobs as a table, newest first: TIME is how long a job took, or (with +) has run."""
    lines = [COLUMNS]
    for row in rows:
        running = row["finished_at"] is None
        lines.append((
            str(row["job_id"]), str(row["status"]), str(row["source"]),
            "-" if row["rows_read"] is None else f"{row['rows_read']:,}",
            f"{row['rows_written']:,}", f"{row['rows_rejected']:,}",
            (row["started_at"] or "-")[:19].replace("T", " "),
            _duration(row["elapsed_s"]) + ("+" if running else ""),
            "-" if row["rows_per_s"] is None else f"{row['rows_per_s']:,}",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def who() -> str:
    """Who cancels, as far as this machine can say: the user and the host."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container): the host alone
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def replayer_target(stack: str | None, endpoint_url: str | None) -> str:
    """The dlq-replayer flags that reach the same stack as this command did."""
    if stack:
        return f"--stack {stack}" + (f" --endpoint-url {endpoint_url}" if endpoint_url else "")
    return f"--endpoint-url {endpoint_url}" if endpoint_url else "--stack NAME"


def explain(job: Mapping[str, Any], *, target: str) -> dict[str, Any]:
    """Why the job is where it is, in the words an operator needs, for every state the ledger
    can reach; with where its rejected rows are and the command that shows them."""
    status, job_id = job.get("status"), job.get("pk") or job.get("job_id")
    counts = ledger.counts_of(job)
    why: dict[str, Any] = {"status": status}
    if status == ledger.FAILED:
        error = str(job.get("error") or "")
        line = re.search(r"\bline (\d+)", error)
        why |= {"summary": "the file could not be loaded; nothing was written",
                "file": job.get("source"), "line": int(line.group(1)) if line else None,
                "reason": error}
    elif status == ledger.CANCELLED:
        why |= {"summary": f"cancelled by {job.get('cancelled_by')} at {job.get('cancelled_at')}"
                           f" (it was {job.get('cancelled_from') or 'running'}); "
                           f"{counts.cancelled:,} row(s) were not written",
                "cancelled_by": job.get("cancelled_by"), "cancelled_at": job.get("cancelled_at"),
                "rows_cancelled": counts.cancelled}
        if job.get("stall_reason"):
            why["ended_by_reconciler"] = job.get("stall_reason")
        if job.get("missing_messages"):
            why["missing_messages"] = job.get("missing_messages")
    elif status == ledger.CANCELLING:
        why |= {"summary": f"cancelled by {job.get('cancelled_by')} at {job.get('cancelled_at')}; "
                           "CANCELLED once nothing more of it will be written (its writers drop "
                           "its remaining messages, counted as cancelled)",
                "messages_counted": job.get("messages_counted"),
                "messages_total": job.get("messages_total")}
    elif status == ledger.STALLED:
        why |= {"summary": f"no progress since {job.get('last_progress_at')}: {job.get('stall_reason')}",
                "missing_messages": job.get("missing_messages"),
                "first_missing_seqs": job.get("missing_seqs", []),
                "next": "it completes if the missing messages come after all (a DLQ redrive), "
                        f"or stop it: fanout cancel {job_id}"}
    elif status == ledger.COMPLETE:
        why["summary"] = "every row is accounted for: " + ", ".join(
            f"{value:,} {name.replace('_', ' ')}" for name, value in
            zip(ledger.OUTCOMES, counts.values(), strict=True) if value or name in ledger.OUTCOMES[:3])
    else:
        why["summary"] = "still loading"
    if counts.rejected:
        why["rejected_rows"] = {"count": counts.rejected, "report": job.get("error_location"),
                                "show": f"dlq-replayer inspect --job {job_id} {target}"}
    return why


def cancel_message(outcome: ledger.CancelOutcome, job_id: str) -> tuple[bool, str]:
    """(cancelled or cancelling already, the one line to print) for `fanout cancel`."""
    job = outcome.job or {}
    if outcome.cancelled:
        return True, (f"job {job_id}: CANCELLING (was {job.get('cancelled_from')}); it becomes "
                      "CANCELLED once nothing more of it will be written")
    if outcome.status in (ledger.CANCELLING, ledger.CANCELLED):
        return True, (f"job {job_id}: already {outcome.status} (by {job.get('cancelled_by')} at "
                      f"{job.get('cancelled_at')}); nothing changed")
    return False, (f"job {job_id} already ended {outcome.status} at {job.get('finished_at')}: "
                   "there is nothing to cancel, and nothing was changed")
