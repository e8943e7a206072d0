"""What to do with one DLQ message: which rows go back, which stay, and in what bodies.

A DLQ message is the unit SQS lets us delete, but filters and fixes select rows. So a
message whose rows are only partly selected is replaced by up to two messages: the
selected rows (to the rows queue, or nowhere when purging) and a *remainder* (a
rejected message with the other rows, back to the DLQ). The original is deleted only
after every replacement was accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dlq_replayer.dlq import DlqMessage, Filters, Ref, WaitingRow
from dlq_replayer.export import FixesError, row_from_fields
from fanout.contract import (
    KIND_REJECTED,
    KIND_ROWS,
    NOT_REPLAYABLE_AS_IS,
    Rejection,
    RowsMessage,
    replay_id,
    replay_indexes,
)
from fanout.settings import MAX_SQS_MESSAGE_BYTES

# Rejections whose row was cut to a preview: sending them back as they are would write
# the preview. Only a fixes file (the operator's full values) sends them back.

REDRIVE = "redrive"
PURGE = "purge"

@dataclass
class Plan:
    """The replacement bodies for one DLQ message; empty `selected` means leave it alone."""

    original: DlqMessage
    selected: list[WaitingRow] = field(default_factory=list)
    kept: list[WaitingRow] = field(default_factory=list)
    to_rows_queue: list[str] = field(default_factory=list)
    to_dlq: list[str] = field(default_factory=list)
    fixed: int = 0
    note: str = ""

    @property
    def acts(self) -> bool:
        return bool(self.selected)


def plan_message(original: DlqMessage, op: str, filters: Filters,
                 fixes: Mapping[Ref, dict[str, str]] | None = None) -> Plan:
    """Decide what `op` does to one DLQ message (fixes: only rows named there act)."""
    plan = Plan(original)
    message = original.message
    if message is None:
        plan.note = f"unreadable message left in the DLQ: {original.error}"
        return plan
    rows = original.rows
    selected = [r for r in rows if filters.match(r) and (fixes is None or r.ref in fixes)]
    if op == REDRIVE and fixes is None and message.kind == KIND_REJECTED:
        held_back = [r for r in selected if r.reason in NOT_REPLAYABLE_AS_IS]
        if held_back:
            plan.note = (f"{len(held_back)} row(s) rejected as row_too_large hold only a "
                         "preview; fix them with --fixes or purge them")
            selected = [r for r in selected if r.reason not in NOT_REPLAYABLE_AS_IS]
    if not selected:
        plan.kept = rows
        return plan
    fixed_rows: dict[Ref, list[str]] = {}
    if fixes is not None:
        try:
            fixed_rows = {r.ref: row_from_fields(r, fixes[r.ref]) for r in selected}
        except FixesError as exc:
            plan.kept, plan.note = rows, f"{exc}; left in the DLQ"
            return plan
    if message.kind == KIND_ROWS:
        return _plan_rows_message(plan, message, rows, selected, op,
                                  fixed_rows if fixes is not None else None)
    if message.kind != KIND_REJECTED:
        plan.kept, plan.note = rows, f"unknown message kind {message.kind!r}"
        return plan
    plan.selected = selected
    chosen = {r.ref for r in selected}
    plan.kept = [r for r in rows if r.ref not in chosen]
    if op == REDRIVE:
        lines = [r.line for r in selected]
        new_rows = [fixed_rows[r.ref] if fixes is not None else list(r.row) for r in selected]
        plan.fixed = sum(1 for r, new in zip(selected, new_rows, strict=True)
                         if tuple(new) != r.row)
        replay = RowsMessage(message.job, message.seq, message.source, message.header,
                             lines, new_rows, part=message.part, parts=message.parts,
                             replay=replay_id(message.job, message.message_id, lines, new_rows),
                             mode=message.mode,
                             indexes=replay_indexes([r.index for r in selected]))
        plan.to_rows_queue.append(replay.encode())
    if plan.kept:
        remainder = RowsMessage(
            message.job, message.seq, message.source, message.header, [], [],
            part=message.part, parts=message.parts, kind=KIND_REJECTED, replay=message.replay,
            rejections=[Rejection(r.line, list(r.row), r.reason, r.detail, r.index)
                        for r in plan.kept],
            mode=message.mode)
        plan.to_dlq.append(remainder.encode())
    return _check_size(plan)


def _plan_rows_message(plan: Plan, message: RowsMessage, rows: list[WaitingRow],
                       selected: list[WaitingRow], op: str,
                       fixed_rows: Mapping[Ref, list[str]] | None) -> Plan:
    # Its rows were never counted: it goes back whole, under its own message id, so the
    # ledger counts it exactly once. A partial selection cannot be split off.
    if len(selected) != len(rows) or (fixed_rows is not None and message.rejections):
        plan.kept = rows
        plan.note = (f"rows message {message.job}/{message.message_id} goes back whole: "
                     f"{len(selected)} of its {len(rows)} rows were selected; left in the DLQ")
        return plan
    plan.selected = selected
    if op == REDRIVE:
        if fixed_rows is None:
            plan.to_rows_queue.append(plan.original.body)
        else:
            new_rows = [fixed_rows[r.ref] for r in rows]
            plan.fixed = sum(1 for r, new in zip(rows, new_rows, strict=True)
                             if tuple(new) != r.row)
            fixed = RowsMessage(message.job, message.seq, message.source, message.header,
                                message.lines, new_rows, part=message.part,
                                parts=message.parts, replay=message.replay, mode=message.mode,
                                indexes=message.indexes)
            plan.to_rows_queue.append(fixed.encode() if plan.fixed else plan.original.body)
    return _check_size(plan)


def _check_size(plan: Plan) -> Plan:
    for body in plan.to_rows_queue + plan.to_dlq:
        if len(body.encode()) > MAX_SQS_MESSAGE_BYTES:
            plan.note = "the fixed message is larger than the queue's maximum; left in the DLQ"
            plan.kept, plan.selected = plan.original.rows, []
            plan.to_rows_queue, plan.to_dlq = [], []
    return plan
