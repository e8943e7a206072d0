"""Acting on the DLQ: redrive (rows back to the rows queue) and purge, without loss.

For each DLQ message the order is always: send the replacements (rows queue, then the
remainder back to the DLQ), check that SQS accepted every entry (`Failed` in a 200
response counts), and only then delete the original. A replayer killed at any point
leaves each row in the DLQ, in the rows queue, or in both; the writer's writes are
idempotent and replay ids are deterministic, so "both" costs nothing but a repeat.

`hook(point, plan)` is called at each step ("sent_rows", "sent_dlq", "deleted") so a
test can kill the run between any two of them.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

from botocore.exceptions import ClientError

from dlq_replayer.dlq import DlqMessage, DlqReader, Ref, in_flight
from dlq_replayer.plan import PURGE, REDRIVE, Filters, Plan, plan_message
from dlq_replayer.target import Target
from fanout import ledger, sending
from fanout_cli.progress import ProgressDisplay

Hook = Callable[[str, Plan], None]
MAX_LISTED = 100  # notes and errors an outcome lists; the counts are exact
BACKOFF_S = 0.2  # the first retry's longest wait (fanout.sending doubles it, with jitter)


class SendFailed(RuntimeError):
    """SQS did not accept a replacement; the original stays in the DLQ."""


@dataclass
class Options:
    op: str = REDRIVE
    filters: Filters = field(default_factory=Filters)
    fixes: Mapping[Ref, dict[str, str]] | None = None
    dry_run: bool = False
    max_messages: int | None = None
    rate: float | None = None  # DLQ messages acted on per second
    confirm: Callable[[dict[str, Any]], bool] | None = None  # purge: ask before deleting
    hook: Hook | None = None
    progress: TextIO | None = None
    # Redrive: whether a job was cancelled (`CancelledJobs`); its rows stay in the DLQ
    # unless `include_cancelled` (the writers would write them: a replay is never dropped).
    cancelled: Callable[[str], bool] | None = None
    include_cancelled: bool = False


@dataclass
class Outcome:
    op: str
    dry_run: bool
    messages_seen: int = 0
    messages_selected: int = 0
    messages_done: int = 0
    messages_failed: int = 0
    rows_selected: int = 0
    rows_sent: int = 0
    rows_fixed: int = 0
    rows_purged: int = 0
    rows_kept: int = 0
    remainders: int = 0
    fixes_unmatched: int = 0
    in_flight: int = 0
    rows_refused: int = 0  # rows of cancelled jobs left in the DLQ (see Options.cancelled)
    # Rows sent to the DLQ during this run (rejected again): left for the next run.
    rows_came_back: int = 0
    messages_came_back: int = 0
    cancelled: bool = False
    held_limit: bool = False
    by_reason: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return self.messages_selected > 0

    @property
    def partial(self) -> bool:
        return bool(self.messages_failed or self.fixes_unmatched or self.in_flight
                    or self.cancelled or self.held_limit)

    def note(self, text: str) -> None:
        """Keep a note once, and at most MAX_LISTED distinct ones (a note can name a
        message, and a run may see millions)."""
        if text not in self.notes and len(self.notes) < MAX_LISTED:
            self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "by_reason"}
        out["by_reason"] = dict(self.by_reason)
        return out


def run(target: Target, options: Options, reader: DlqReader) -> Outcome:
    """Redrive or purge the selected DLQ messages; release what it held at the end."""
    outcome = Outcome(options.op, options.dry_run)
    progress = Progress(options.progress, options.op)
    matched_refs: set[Ref] = set()
    limiter = RateLimiter(options.rate)
    asks = options.confirm is not None and not options.dry_run
    # Asking first means holding every selected message until the answer: the pass stops
    # at what one run may hold rather than release a message it would delete.
    reader.stop_at_limit = asks
    spool = PlanSpool()
    # What enters the DLQ from now on (a row this run sends back and the writer rejects
    # again) waits for the next run: each row is acted on at most once per run. SQS's
    # SentTimestamp is the server's clock; a clock behind it by a moment leaves a message
    # sent just before the run for the next one, never acts on one twice.
    started_ms = int(time.time() * 1000) if options.op == REDRIVE and not options.dry_run else None
    try:
        planned = _selected_plans(reader, options, outcome, matched_refs, started_ms)
        if asks:
            summary = spool.fill(planned)
            confirm = options.confirm
            assert confirm is not None  # `asks` says so
            if summary["messages"] and not confirm(summary):
                outcome.cancelled = True
                return outcome
            planned = spool.plans()
        for plan in planned:
            if options.dry_run:
                _count_done(outcome, plan)
                continue
            limiter.wait()
            try:
                execute(target, plan, options.hook)
            except SendFailed as exc:
                outcome.messages_failed += 1
                if len(outcome.errors) < MAX_LISTED:
                    outcome.errors.append(str(exc))
                continue
            reader.forget(plan.original)
            _count_done(outcome, plan)
            progress.show(outcome)
    finally:
        spool.close()
        progress.done()
        reader.release()
    if reader.stopped:
        outcome.held_limit = True
        outcome.note(f"stopped after the {reader.max_held:,} DLQ messages one run may hold "
                     "(SQS's in-flight quota); run again for the rest")
    if options.fixes is not None:
        outcome.fixes_unmatched = len(set(options.fixes) - matched_refs)
        if outcome.fixes_unmatched:
            outcome.note(f"{outcome.fixes_unmatched} row(s) of the fixes file were not "
                                 "found waiting in the DLQ (already replayed, or held by "
                                 "another reader)")
    if not options.dry_run:
        outcome.in_flight = in_flight(target.sqs, target.dlq_url)[1]
        if outcome.in_flight:
            outcome.note(f"{outcome.in_flight} DLQ message(s) were in flight (held by "
                                 "another reader or a killed run); run again after their "
                                 "visibility timeout")
    return outcome


def _selected_plans(reader: DlqReader, options: Options, outcome: Outcome,
                    matched_refs: set[Ref], started_ms: int | None = None) -> Iterable[Plan]:
    for batch in reader.batches():
        for message in batch:
            outcome.messages_seen += 1
            if _refused(message, options, outcome):
                continue
            plan = plan_message(message, options.op, options.filters, options.fixes)
            if started_ms is not None and (message.sent_ms or 0) > started_ms:
                # Came back during this run; the reader releases it at the end. Only its
                # selected rows count: a remainder this run sent holds none.
                if plan.acts:
                    outcome.messages_came_back += 1
                    outcome.rows_came_back += len(plan.selected)
                continue
            if plan.note:
                outcome.note(plan.note)
            if options.fixes is not None:
                matched_refs.update(r.ref for r in message.rows if r.ref in options.fixes)
            if not plan.acts:
                continue
            if options.max_messages is not None and \
                    outcome.messages_selected >= options.max_messages:
                return
            outcome.messages_selected += 1
            outcome.rows_selected += len(plan.selected)
            yield plan


def _refused(message: DlqMessage, options: Options, outcome: Outcome) -> bool:
    """A redrive leaves a cancelled job's rows in the DLQ, unless told to, and says why."""
    if options.op != REDRIVE or options.include_cancelled or options.cancelled is None \
            or message.message is None:
        return False
    job = message.message.job
    rows = [row for row in message.rows if options.filters.match(row)]
    if not rows or not options.cancelled(job):
        return False
    outcome.rows_refused += len(rows)
    outcome.note(f"job {job} was cancelled: its rows stay in the DLQ (redrive them with "
                 "--include-cancelled to load them all the same)")
    return True


class CancelledJobs:
    """Whether a job was cancelled, from the ledger: one read per job a run meets (at most
    MAX_JOBS_ASKED kept); a ledger that cannot be read says no (the rows go back)."""

    MAX_JOBS_ASKED = 10_000

    def __init__(self, ddb: Any, ledger_table: str) -> None:
        self.ddb, self.table, self.known = ddb, ledger_table, dict[str, bool]()

    def __call__(self, job: str) -> bool:
        if job not in self.known:
            if len(self.known) >= self.MAX_JOBS_ASKED:
                self.known.clear()
            try:
                item = ledger.raw_job(self.ddb, self.table, job)
            except ClientError:
                item = {}
            self.known[job] = ledger.is_cancelled(item)
        return self.known[job]


def execute(target: Target, plan: Plan, hook: Hook | None = None) -> None:
    """Send the plan's replacements, then delete the original (only if all were accepted)."""
    if plan.to_rows_queue:
        send_all(target.sqs, target.rows_queue_url, plan.to_rows_queue)
    if hook:
        hook("sent_rows", plan)
    if plan.to_dlq:
        send_all(target.sqs, target.dlq_url, plan.to_dlq)
    if hook:
        hook("sent_dlq", plan)
    try:
        target.sqs.delete_message(QueueUrl=target.dlq_url, ReceiptHandle=plan.original.receipt)
    except Exception as exc:  # e.g. our hold ran out and the receipt is stale
        raise SendFailed(f"replacements of DLQ message {plan.original.sqs_id} were sent but it "
                         f"could not be deleted ({exc}); its rows are in both queues") from exc
    if hook:
        hook("deleted", plan)


def send_all(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    """SendMessageBatch, 10 a call, retrying the entries reported in `Failed`
    (fanout.sending); raise SendFailed if any stays failed."""
    try:
        sending.send_all(sqs, queue_url, bodies, base_delay_s=BACKOFF_S)
    except Exception as exc:  # the original stays in the DLQ, whatever the failure
        raise SendFailed(f"SendMessageBatch to {queue_url} failed: {exc}") from exc


def _count_done(outcome: Outcome, plan: Plan) -> None:
    outcome.messages_done += 1
    outcome.rows_kept += len(plan.kept)
    outcome.remainders += len(plan.to_dlq)
    outcome.rows_fixed += plan.fixed
    for row in plan.selected:
        outcome.by_reason[row.reason] += 1
    if outcome.op == PURGE:
        outcome.rows_purged += len(plan.selected)
    else:
        outcome.rows_sent += len(plan.selected)


class PlanSpool:
    """The selected plans of a run that asks first, pickled to a temporary file while it
    adds up what the question shows; read back one at a time once answered."""

    def __init__(self) -> None:
        self.file: IO[bytes] | None = None

    def fill(self, plans: Iterable[Plan]) -> dict[str, Any]:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (read back later; close())
        messages, rows, reasons = 0, 0, Counter[str]()
        jobs: set[str] = set()
        for plan in plans:
            pickle.dump(plan, self.file)
            messages += 1
            rows += len(plan.selected)
            reasons.update(r.reason for r in plan.selected)
            jobs.update(r.job for r in plan.selected)
        return {"messages": messages, "rows": rows, "by_reason": dict(reasons),
                "jobs": sorted(jobs)}

    def plans(self) -> Iterator[Plan]:
        assert self.file is not None
        self.file.seek(0)
        while True:
            try:
                yield pickle.load(self.file)
            except EOFError:
                return

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class RateLimiter:
    """At most `rate` calls of `wait()` per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


class Progress:
    """The run's progress through the one display (fanout_cli/progress.py): DLQ messages done
    and the rows they held, with the rate."""

    def __init__(self, stream: TextIO | None, op: str) -> None:
        self.display = ProgressDisplay(stream, label=f"dlq-replayer {op}", unit="messages")
        self.op = op

    def show(self, outcome: Outcome) -> None:
        rows = outcome.rows_purged if self.op == PURGE else outcome.rows_sent
        self.display.update(outcome.messages_done, messages=outcome.messages_done, rows=rows)

    def done(self) -> None:
        self.display.close()
