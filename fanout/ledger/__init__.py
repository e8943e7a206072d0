"""The jobs ledger: exact counts under duplicate delivery, with work per invocation that
does not grow with the job, and every job ending, whichever invocation dies when.

Invariants (a reviewer checks the code against these; tests/model checks them against
faults):

1. Every row ends in one outcome: a COMPLETE job's counts are the sums over its distinct
   messages, and `rows_read` = the sum of its `rows_<outcome>`.
2. A job completes once, only when every message is counted, and its summary counts
   every report recorded before the completion.
3. Every job ends: COMPLETE, FAILED, STALLED (naming what is missing) or, once an operator
   cancelled it, CANCELLED, and its summary is published at least once (once when nothing
   fails; again when a STALLED job completes after all or is cancelled). No invocation is
   trusted to finish: the reconciler (`reconciler.py`) comes back, on a schedule, for
   every job of the active index.
4. Every write may have its reply lost after it committed and be sent again by botocore;
   each is designed so that its own retry is recognised (the list below).
5. A cancel and a completion exclude each other: a job that was CANCELLING ends CANCELLED
   and never COMPLETE; a COMPLETE or FAILED job is never cancelled. Its counts add a
   sixth outcome, `cancelled` (rows a writer dropped unwritten), and stay exact.

Who writes what, under which condition, and what each rule survives:

* job item, tally format, active item, jobs index entry: `start_job`, one transaction, if
  no job item. Retried: the same ClientRequestToken, applied once; a later start (a
  duplicate event, a retry past the token's 10 minutes) fails the job item's condition and
  with it the whole transaction, so a job has exactly one index entry.
* job's split lease and checkpoint: the splitter holding it, if its owner and SPLITTING.
  Retried: the owner's own condition still holds. Found CANCELLING (ALL_OLD, its own
  owner): `SplitCancelled`, and the splitter records what it sent (see finish_split).
* job's `split_resumes` (ADD 1): `start_job` resuming a split, with the lease it takes, if
  SPLITTING and the lease expired or its own. Retried: counted twice (the owner's
  condition holds); it only bounds the splitter's loop guard, whose limit allows for it.
* job RUNNING, the tally's messages_total, the active item: `finish_split`, one
  transaction, if SPLITTING (or STALLED with no total: a split the reconciler took for
  dead that finishes after all). Retried: applied once (a tally without the total would
  never complete). Found CANCELLING without a total: the same numbers are recorded and the
  job stays CANCELLING (`_finish_cancelled_split`, one transaction, if CANCELLING and no
  messages_total; retried: applied once, or its condition fails and it is done).
* job CANCELLING (`cancelled_at`, `cancelled_by`, `cancelled_from`, summary_published
  removed), the tally's `cancelled_at`, the active item: `cancel_job`, one transaction, if
  SPLITTING, RUNNING or STALLED. Retried: the same token, applied once; a later retry finds
  it CANCELLING and changes nothing (so does a cancel of an ended job).
* job FAILED (bad input), active item removed: `fail_job`, one transaction. Retried:
  idempotent.
* tally ticket ADD: a writer, no condition (tickets are dense). Retried: two tickets;
  the ADD finds its own token (`ticket_by`) in the tally it replaced, so the first is
  this call's phantom, and the writer voids it at once.
* log record: the ticket's writer, if no record, with `expires_at` (TTL) LOG_EXPIRY_S
  ahead. Retried: ALL_OLD shows its own `r` and `m`, so it succeeds (not TicketVoided).
* log record deleted by DynamoDB's TTL, after `expires_at`: only records the fold has
  passed (see the log, below), which nothing reads again.
* log void: its writer, or a folder once the writer cannot be alive, if no record.
  Retried: reads the item back.
* fold lease: a folder, if free or out for HOLE_MARGIN_S. Retried: ALL_OLD shows its
  own owner: held (and treated as dirty).
* shard: the lease holder, if `applied` is as read. Retried: ALL_OLD shows its
  `folded_by` and `applied`: done.
* fold cursor and totals: the lease holder, if its owner. Retried: ALL_OLD shows its
  `saved_by` and cursor: done.
* job COMPLETE, tally `completed_at`, active item: the completing settle, one
  transaction, if `tickets` = the cursor folded, the tally has no `cancelled_at`, and
  RUNNING or STALLED; job CANCELLED the same way, if the tally has `cancelled_at` and
  CANCELLING. A cancel committed between the fold and this transaction fails its tally
  condition: the settle folds again and ends the job CANCELLED. Retried: applied once.
* job STALLED and the tally's `stalled_at`: the reconciler, one transaction, if the status
  it read (and, for a split, no splitter's lease). Retried: the status moved; the next
  visit hands back the summary. A CANCELLING job without progress for `stall_after_s`
  (messages in the DLQ; a split whose splitter died after the cancel) is CANCELLED the
  same way, with the tally's `completed_at` and `counted_through` (so later reports move
  its counts) and, for a split that never recorded its end, rows_read = what was counted.
* publish claim: whoever ended the job, then any settle once it expired, if no summary
  published. Retried: held by itself; it expires, and the reconciler publishes.
* summary published, if the job still has the summary's status (a STALLED summary
  published late must not mark a COMPLETE one), then the active item removed unless a
  later report put it back (`at_ticket`): the publisher. Retried: idempotent; killed
  between, the reconciler removes it.
* active item after completion or a stall: a writer whose ADD found the tally complete or
  stalled, after its record. Removed by the reconciler only once `at_ticket` is folded
  (the condition) and, for a COMPLETE (or CANCELLED) job, in its counts.
* the writer's knowledge of a cancel (no item of its own): the tally its ticket ADD
  returns (ALL_OLD) has `cancelled_at`; that writer process drops the job's later
  messages (not replays), counting their rows `cancelled` (`writer.load.dropped`). No read
  of its own: while no job is cancelled, a cancel costs nothing per message. A process
  that has not reported since the cancel writes its next batch as usual (counted as
  written); a duplicate of a message counted one way and delivered again changes nothing.

Faults and what survives them: a writer killed between its ticket and its record leaves a
hole, voided once its writer cannot be alive (`HolePolicy`), by its batch's redelivery or
the reconciler; a folder killed or out of time leaves the lease to expire and the
reconciler finishes the fold; a split killed before its end is resumed by its retry, or
STALLED when none comes; a batch in the DLQ keeps the job RUNNING until its redrive, or
STALLED after `stall_after_s` without progress, completed when the redrive comes; a
duplicate delivery changes nothing (bitmaps); a clock behind by up to HOLE_MARGIN_S never
voids a live writer nor races a folder's last write.

Layout (one DynamoDB table, `pk`/`sk` strings, `pk` = the job id). This package is the
one owner of it:

* the job item, `sk="job"`: status, source, table, `ledger_format`, rows_read,
  rows_padded (of those, the rows shorter than the header, which the writer pads: not an
  outcome) and messages_total (set by the splitter when it has sent everything), the split's lease and
  checkpoint, `split_resumes` (how often a splitter resumed the split: a continuation,
  a retry; the splitter fails a job resumed more often than its file can need),
  started/finished, `mode` (the write mode, absent for put) and, once
  complete, the exact counts (`rows_<outcome>` for each of OUTCOMES: `rows_written`,
  `rows_rejected`, `rows_superseded`, `rows_deleted`, `rows_skipped_existing`,
  `rows_cancelled`; and
  `counted_through`, the log position they include). A parallel split (splitter/fan.py) adds
  to it `parallel_ranges` (how many), `scans_done` / `ranges_done` (number sets of the
  steps that reported) and `scans_fanned` / `ranges_fanned` (the stage started its next,
  once); its steps' results sit beside it, one item per step: `scan#<index, 5 digits>`
  (where the range's records start, for both start states) and `range#<index>` (what
  the range sent). Only the functions under "Parallel split steps" below touch them;
* the tally, `sk="tally"`: the writers' hot counter, kept apart from the job item so its
  update costs 1 write unit however large the job item grows (a 64 KiB header, the
  parallel split's done-sets): `tickets` (log records handed out), `ticket_at` (the
  clock of the writer that took the last one, when it asked), `messages_reported` (an
  upper bound: duplicates count twice), `ticket_by` (the last ADD's token), a copy of
  messages_total and the format, `split_done_at`, `completed_at` once the job is
  complete (or CANCELLED), `stalled_at` once it was STALLED and `cancelled_at` once an
  operator cancelled it (what the writers' ADD returns to them);
* the log, `sk="log#<ticket, 12 digits>"`: one record per writer invocation and job,
  `m` = `message_id:written:rejected:superseded,...` for each message it finished (with
  `:deleted:skipped_existing` after them when either is not 0: a put's entry is as
  before, and an entry without them reads as 0 for both; and `:cancelled` after those
  when it is not 0, a message of a cancelled job dropped unwritten; a replay whose rows carry their
  indexes (see fanout.contract) then adds `@` and, in hex joined by ".", one bitmask
  per outcome a row can land in (`layout.LANDED`: written, superseded, deleted,
  skipped_existing; zeros at the end left out) of the indexes of its rows that ended
  there: `@8` is row 3 written, `@0` every row rejected again; a replay's entry without
  `@` is one of rows from before indexes), and
  `prev_at`, the `ticket_at` its ticket's ADD replaced (when the previous ticket was
  asked for), and `expires_at`, when DynamoDB's TTL may delete it: LOG_EXPIRY_S (30
  days) after its writer wrote it. The fold reads each record once, when its cursor
  passes it (from the cursor on, never before it), and the reconciler folds every active
  job each minute, so a record is folded minutes after it is written; a record still
  unfolded after 30 days would mean no reconciler ran for a month. The writer takes its
  ticket from the tally (ADD, so tickets are dense: 1, 2, 3, ...) and then writes the
  record under it, conditionally (`attribute_not_exists`). A ticket whose record has not
  come (a hole) stops the fold there; it is voided with a tombstone, `void`, written
  under the same condition, only once no writer can still write it: its writer has
  outlived the writer function's timeout plus HOLE_MARGIN_S, judged from `prev_at` of
  the records after it (see `HolePolicy`). A writer whose record put fails voids its own
  ticket before its batch fails. So a live writer is never voided; one that outlived its
  own lifetime would find its ticket taken, fail its batch, and SQS would deliver it
  again under a new ticket;
* the shards, `sk="shard#<seq // SHARD_SEQS, 12 digits>"`: what the log says about
  sequence numbers [k*4096, (k+1)*4096), folded: `bits` (a 512-byte bitmap, one bit per
  seq whose message is counted), `parts` (the ids "seq.part" of messages that were split
  to fit the queue), `landed` (made when a replay first lands a row here: one bit per row
  (seq, index), 4096 x 25 bits, stored zlib-compressed: a few bytes for a few replayed
  rows, 12,811 at most), `replays` (the ids of replays counted by id: those from before
  indexes), their `distinct` original messages, a count per outcome (OUTCOMES: `written`,
  `rejected`, `superseded`, `deleted`, `skipped_existing`, `cancelled`; replays included), and
  `applied` (the last ticket folded into it); beside `parts` and the old `replays`, a
  shard item is at most 13.5 KB, however often its rows are redriven. Both the
  sequential split's seqs (row index // 25) and a parallel split's (range index * 1e9 +
  n) map to shards this way: a shard is a seq range, whatever namespace it is in;
* the fold, `sk="fold"`: the log position folded (`cursor`), the job's running
  `distinct` and a count per outcome (the sums over its shards), the
  folder's lease (`lease_owner`, `lease_until`, `dirty`), `saved_by` and `folded_at`
  (when the cursor last moved);
* the jobs index, `pk="#jobs"`, `sk=<started_at>#<job id>` (`job`, `source`): one item
  per job, never changed, so `list_jobs` reads the newest first, about as many items as it
  lists (plus their job items, and the fold items of those not ended);
* the active index, `pk="#active"`, `sk=<job id>`: one item per job from its start until
  its end is announced (`mark_published`; `fail_job` for a FAILED one), and again from a
  report after its completion (with that report's ticket, `at_ticket`) until the fold has
  read it, so the reconciler finds every job it must visit with one Query (O(active
  jobs), never a scan);
* what expires: log records only (`expires_at`, the table's TTL attribute). The job item
  and the tally (a job's status and counts) stay; so do the shards, the fold and a
  parallel split's step items: a redrive can send a job's message again at any time (the
  replayer sends what it drained, as new messages), and the shards' bitmaps are what
  recognise it (~1,000 items of at most 13.5 KB for 100M rows); void tombstones too (one
  per dead writer: they keep an outlived writer from writing under its ticket);
* on the job item, once it ended: `publish_until` (the claim of the invocation that
  publishes its summary), `summary_published`; once STALLED: `stall_reason`,
  `missing_messages`, `missing_seqs` (the first ones, for a sequential split),
  `last_progress_at`; once cancelled: `cancelled_at`, `cancelled_by`, `cancelled_from`
  (and, ended by the reconciler, the STALLED attributes above).

Counting (see `fold`): the folder holds the fold's lease and reads the log from the
cursor in steps of about FOLD_MESSAGES entries; each entry is set in its shard's bitmap
and counted only if its bit was clear, so a duplicate changes nothing. A step reads and
writes only the shards its entries touch, and the job's totals move by the shards'
deltas: no step reads the whole job. A shard skips the entries of tickets it has
already applied, so a step that died half way is redone exactly; the next folder finds
the lease `dirty` and sums the shards again (≈1,000 small items at 4M messages).

Replays (`Shard.apply`) move rows that were counted as rejected. An entry with masks
moves each of its rows whose `landed` bit is clear from rejected to the outcome its mask
says, and sets the bit: a row moves once, whatever the replay's id, however often it is
redriven (a row a replay rejects again keeps its index in its DLQ message, and moves when
a later redrive lands it, even one with the same replay id), however the redrives
overlap (the same row in two fixes), and a duplicate delivery changes nothing. An entry
without masks (rows from before indexes) is counted once by its id, in `replays`.

Holes: a fold that meets one polls for its record for HOLE_WAIT_S (a writer between
its two writes, usually), then stops at it, keeping its cursor before it, and returns:
nothing blocks on a slow writer. The writer of a record that came HOLE_WAIT_S or more
after its ticket folds itself (a folder may have stopped at it), and a folder that
stopped looks at the hole once more after releasing its lease, so a record that came
while the lease was held is not left behind. A hole whose writer died is voided by the
first settle after its writer's lifetime; at the end of a job that is the settle of the
dead writer's own batch, which SQS delivers again after the visibility timeout (always
longer than twice the writer timeout plus the margin: `fanout.settings` refuses less), and
whose record's `prev_at` dates the hole just before it; failing that (a ticket ADD applied
twice by a retry that a second writer's ADD came between), the reconciler's next visit.

Completion is attempted only when `distinct` (which duplicates do not inflate) reaches
messages_total: one transaction, the status flip RUNNING (or STALLED) → COMPLETE conditional on the
tally's `tickets` being the fold's cursor (the same update sets the tally's
`completed_at`), so it is detected, and its summary returned for publishing, exactly
once, and that summary counts every report recorded before it. After COMPLETE, a
replay or a late duplicate is one more log record, folded into its own shard, and the
job item's counts are moved by its delta (`counted_through` keeps an older folder from
writing over a newer count); the fold reads `completed_at` in the tally, so such a
settle does not try the completion again. The transaction also takes the publish claim,
so the completer publishes and a concurrent settle does not; a claim whose holder died
expires with it, and the next settle or the reconciler publishes.

Liveness (`reconcile`): every `reconcile_every_s` the reconciler settles each active job
with a full budget of its own; a job with no progress (a split checkpoint, a report, the
fold's cursor moving) for `stall_after_s` is STALLED with what is missing.

Cost: a writer invocation writes 2 items, as the previous format did: the tally ADD
(1 write unit) and its log record (about 18 bytes a message: 1 unit up to ~55 messages).
With 10 messages of 25 rows that is 2 write units per 250 data writes (0.8%); at the
stack's batch size of 100 messages, 3 per 2,500 (0.12%). A writer folds when its report
takes messages_reported across a multiple of FOLD_MESSAGES, and on every report once
messages_reported has reached messages_total; a fold adds its lease, its cursor and one
write per shard touched. `python -m bench` measures all of it (see the README's scale
section). The fold's lease lasts as long as the folding invocation can live, so one that
was killed (a timeout) never holds it past its own end; another folder takes it over only
HOLE_MARGIN_S after that (a shard write the killed folder had in flight, or a clock behind
the next folder's, must not land after the next folder has summed the shards).

Upgrades: jobs started by the previous format (batch records `b#<request id>` and a
`messages_reported` on the job item, no `ledger_format`) cannot be counted by this one:
a writer or a splitter that meets one fails it, with its id and the reason, instead
of leaving it RUNNING. Jobs started before the active index have no item in it: their
own writers' settles end them, as before.

The package, floor by floor (a module imports only from the floors below it, never a
sibling on its own floor):

* `layout`: keys, item kinds, tunables, outcome names, codecs;
* `legacy` (the previous format) and `log` (a log record's void);
* one module per item kind: `split` (the job item while splitting), `tally` (the tally
  and the log records), `folding` (the fold, the shards, holes), `steps` (a parallel
  split's steps), `cancel` (an operator's cancel);
* `complete` (completion) and `reads` (what the CLI and the tools read);
* `reconciler` (liveness);
* this door, which is all the rest of fanout imports.
"""

from fanout.ledger import folding, layout
from fanout.ledger.cancel import CancelOutcome, cancel_job, is_cancelled
from fanout.ledger.complete import (
    COMPLETE_ATTEMPTS,
    ROWS_SET,
    SUMMARY_NAMES,
    Settlement,
    completion_summary,
    mark_published,
    release_publish,
    settle,
)
from fanout.ledger.folding import FoldLost, FoldState, HolePolicy, Shard, Totals, fold, sum_shards
from fanout.ledger.layout import (
    ACTIVE_PK,
    CANCELLED,
    CANCELLING,
    COMPLETE,
    ENDED,
    EXPIRES_AT,
    FAILED,
    FOLD_BUDGET_S,
    FOLD_LEASE_S,
    FOLD_SK,
    HOLE_MARGIN_S,
    HOLE_POLL_S,
    HOLE_WAIT_S,
    JOB_SK,
    LEDGER_FORMAT,
    LOG_EXPIRY_S,
    LOG_PREFIX,
    MAX_BATCH_GET,
    MODE_OUTCOMES,
    OUTCOMES,
    PARTITION_KEY,
    RUNNING,
    SHARD_PREFIX,
    SORT_KEY,
    SPLIT_LEASE_S,
    SPLITTING,
    STALLED,
    TALLY_SK,
    WRITER_TIMEOUT_S,
    Clock,
    MessageCounts,
    counts_of,
    is_replay,
    job_counts,
    job_id,
    job_mode,
    now_iso,
    outcomes_shown,
    parse_entries,
    plain,
    raw_job,
    row_masks,
    shard_of,
    status_of,
)
from fanout.ledger.legacy import (
    OLD_FORMAT_ERROR,
    fail_old_format,
    is_old_format_job,
    old_format_summary,
)
from fanout.ledger.reads import (
    JobsPage,
    get_job,
    jobs_by_id,
    list_jobs,
    message_counted,
    progress_at,
    read_message_counts,
    totals,
)
from fanout.ledger.reconciler import (
    STALL_AFTER_S,
    Reconciled,
    ReconcileIncomplete,
    active_jobs,
    first_missing_seqs,
    reconcile,
    reconcile_job,
)
from fanout.ledger.split import (
    LeaseLost,
    SplitCancelled,
    SplitFinished,
    SplitState,
    fail_job,
    finish_split,
    release_split,
    save_checkpoint,
    split_state,
    start_job,
)
from fanout.ledger.steps import (
    mark_fanned,
    plan_header,
    record_plan,
    report_step,
    stage_fanned,
    step_results,
    steps_done,
)
from fanout.ledger.tally import TicketVoided, record_batch, should_settle

__all__ = [
    "ACTIVE_PK", "CANCELLED", "CANCELLING", "CancelOutcome", "cancel_job",
    "is_cancelled", "JobsPage", "list_jobs", "SplitCancelled", "COMPLETE", "COMPLETE_ATTEMPTS",
    "ENDED", "EXPIRES_AT", "FAILED", "FOLD_BUDGET_S",
    "FOLD_LEASE_S", "FOLD_SK", "HOLE_MARGIN_S", "HOLE_POLL_S", "HOLE_WAIT_S", "JOB_SK",
    "LEDGER_FORMAT", "LOG_EXPIRY_S", "LOG_PREFIX", "MAX_BATCH_GET", "MODE_OUTCOMES", "OLD_FORMAT_ERROR",
    "OUTCOMES", "PARTITION_KEY", "ROWS_SET", "RUNNING", "SHARD_PREFIX", "SORT_KEY", "SPLITTING",
    "SPLIT_LEASE_S", "STALLED", "STALL_AFTER_S", "SUMMARY_NAMES", "TALLY_SK",
    "WRITER_TIMEOUT_S", "active_jobs", "Clock", "completion_summary", "counts_of", "fail_job",
    "fail_old_format", "finish_split", "first_missing_seqs", "fold", "folding", "FoldLost",
    "FoldState", "get_job", "HolePolicy", "is_old_format_job", "is_replay", "job_counts",
    "job_id", "job_mode", "jobs_by_id", "layout", "LeaseLost", "mark_fanned", "mark_published",
    "message_counted", "MessageCounts", "now_iso", "old_format_summary", "outcomes_shown",
    "parse_entries", "plain", "plan_header", "progress_at", "raw_job", "read_message_counts",
    "reconcile", "reconcile_job", "Reconciled", "ReconcileIncomplete", "record_batch",
    "record_plan", "release_publish", "release_split", "report_step", "row_masks",
    "save_checkpoint", "settle", "Settlement", "Shard", "shard_of", "should_settle",
    "split_state", "SplitFinished", "SplitState", "stage_fanned", "start_job", "status_of",
    "step_results", "steps_done", "sum_shards", "TicketVoided", "Totals", "totals",
]
