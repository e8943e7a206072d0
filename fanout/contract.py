"""The message contract: the one copy, shared by the splitter, the writer, the replayer and
the local runtime.

A rows message is self-describing, so a message sitting in the dead-letter queue can be
understood and replayed on its own::

    {"v": 1, "kind": "rows", "job": "...", "seq": 12, "part": 0, "parts": 1,
     "source": {"bucket": "...", "key": "...", "etag": "...", "version": null},
     "header": ["account", ...], "lines": [302, 303, ...], "rows": [["...", ...], ...]}

The splitter sends version 2, which carries the rows as the CSV text they were in the
file instead of as arrays (the writer parses them; the splitter only cuts records, so it
never parses a field it does not have to, and the body is smaller)::

    {"v": 2, "kind": "rows", ..., "lines": [302, 303, ...], "delimiter": ",",
     "csv": "a1,2,low\na2,3,high\n..."}

`decode` turns either version into the same `RowsMessage` (rows as lists of fields);
everything else that writes messages (the replayer, oversized messages split in parts)
writes version 1.

`seq` is the index of the message's first row // 25, so a re-run of the splitter
produces the same messages; `part`/`parts` number the pieces of a message that had to
be split to fit the queue's maximum message size. A message is identified in a job by
`message_id` ("12" or "12.1"), which is what the ledger deduplicates on.

Every row has a fixed place in its job: its seq and its *index*, its position (0..24)
among the rows of message seq as the splitter cut it. A whole message's rows are
indexes 0, 1, ... in order, so it does not carry them; a message whose rows are not
(a part of a split message, whose rows are a run of the seq's, or a replay) carries
`"indexes": [...]`, one per row, and a rejection carries its row's `"index"`. Messages
and rejections from before indexes carry none (see `RowsMessage.row_indexes`).

Rows the dlq_replayer sends back carry `"replay": ID` and have message_id "12~ID", so
the ledger counts them apart from the original messages (see fanout/ledger/), and their
indexes, so it moves each row out of rejected once, however often it is sent back.

A rejected message (kind "rejected") carries the rows that can never be written, each
with its source line, its index and a reason, so the dlq_replayer can show, export, fix
and send them back; a row a replay rejects again keeps its index there.

Both kinds carry the job's write mode (`"mode": "delete"`, see fanout/mapping.py's
`[table] mode`), stamped by the splitter from the spec: the writer does what the message
says, so a row the dlq_replayer sends back is written as its job wrote. A message
without `mode` (every message before write modes, and every put) is a put.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from fanout.settings import MAX_SQS_MESSAGE_BYTES, ROWS_PER_MESSAGE

SCHEMA_VERSION = 1
CSV_SCHEMA_VERSION = 2  # rows as CSV text
# csv's default field limit is 128 KiB; DynamoDB items reach 400 KB and SQS messages 1 MiB,
# so allow far more and let the writer reject what is too large, with a reason.
MAX_FIELD_CHARS = 64 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
KIND_ROWS = "rows"
KIND_REJECTED = "rejected"
REPLAY_MARK = "~"
MODE_PUT = "put"
MODE_DELETE = "delete"
MODE_INSERT = "insert"
MODE_UPDATE = "update"
WRITE_MODES = (MODE_PUT, MODE_DELETE, MODE_INSERT, MODE_UPDATE)


class ContractError(ValueError):
    """A message body that does not follow the contract."""


@dataclass(frozen=True)
class Source:
    bucket: str
    key: str
    etag: str = ""
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "version": self.version}

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Rejection:
    """One row that can never be written, and why."""

    line: int
    row: list[str]
    reason: str
    detail: str = ""
    index: int | None = None  # the row's index in its seq; None when not known (older messages)

    def as_dict(self) -> dict[str, Any]:
        out = {"line": self.line, "row": self.row, "reason": self.reason, "detail": self.detail}
        return out if self.index is None else out | {"index": self.index}


@dataclass
class RowsMessage:
    job: str
    seq: int
    source: Source
    header: list[str]
    lines: list[int]
    rows: list[list[str]]
    part: int = 0
    parts: int = 1
    kind: str = KIND_ROWS
    rejections: list[Rejection] = field(default_factory=list)
    # Set on rows the dlq_replayer sends back (fixed or as they were) after they were
    # counted as rejected: the ledger moves them from rejected to written/superseded.
    replay: str | None = None
    mode: str = MODE_PUT  # what the writer does with the rows (see the module docstring)
    indexes: list[int] | None = None  # each row's index in its seq, when not 0, 1, ...

    @property
    def message_id(self) -> str:
        base = str(self.seq) if self.parts == 1 else f"{self.seq}.{self.part}"
        return f"{base}{REPLAY_MARK}{self.replay}" if self.replay else base

    @property
    def row_indexes(self) -> list[int] | None:
        """Each row's index in its seq: the ones carried, else 0, 1, ... for a whole
        original message; None when not known (a part or a replay from before indexes)."""
        if self.indexes is not None:
            return self.indexes
        if self.parts == 1 and not self.replay and len(self.rows) <= ROWS_PER_MESSAGE:
            return list(range(len(self.rows)))
        return None

    def encode(self) -> str:
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "kind": self.kind,
            "job": self.job,
            "seq": self.seq,
            "part": self.part,
            "parts": self.parts,
            "source": self.source.as_dict(),
            "header": self.header,
        }
        if self.replay:
            body["replay"] = self.replay
        if self.mode != MODE_PUT:
            body["mode"] = self.mode
        if self.kind != KIND_REJECTED:
            body["lines"] = self.lines
            body["rows"] = self.rows
            if self.indexes is not None:
                body["indexes"] = self.indexes
        if self.rejections:
            body["rejections"] = [r.as_dict() for r in self.rejections]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class CsvRowsEncoder:
    """Version-2 bodies for one job's rows messages: the parts every message repeats (job,
    source, header) are encoded once, and each message adds its seq, lines and the CSV
    text of its records.

    `records` are the records' text as in the file, each without its final newline (so a
    CRLF record ends in "\r"), never blank; they are joined with "\n".
    """

    def __init__(self, job: str, source: Source, header: list[str], delimiter: str = ",",
                 mode: str = MODE_PUT) -> None:
        def dumps(value: Any) -> str:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

        self._dumps = dumps
        stamp = "" if mode == MODE_PUT else f'"mode":{dumps(mode)},'
        self._head = (f'{{"v":{CSV_SCHEMA_VERSION},"kind":"{KIND_ROWS}","job":{dumps(job)},{stamp}'
                      f'"source":{dumps(source.as_dict())},"header":{dumps(header)},'
                      f'"delimiter":{dumps(delimiter)},"part":0,"parts":1,"seq":')

    def encode(self, seq: int, lines: list[int], records: list[str]) -> str:
        text = "\n".join(records)
        return (f'{self._head}{seq},"lines":[{",".join(map(str, lines))}],'
                f'"csv":{self._dumps(text + chr(10))}}}')


def parse_csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    """The rows of a version-2 body's CSV text (strict: a quote left open is an error)."""
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))


def decode(body: str) -> RowsMessage:
    """Parse a message body; raise ContractError with the reason when it is not ours."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"message body is not JSON: {exc}") from exc
    version = data.get("v") if isinstance(data, dict) else data
    if version not in (SCHEMA_VERSION, CSV_SCHEMA_VERSION):
        raise ContractError(f"unsupported message version: {version!r}")
    try:
        source = Source(**data["source"])
        kind = data.get("kind", KIND_ROWS)
        if version == CSV_SCHEMA_VERSION:
            rows = parse_csv_rows(data["csv"], data.get("delimiter", ","))
        else:
            rows = [list(r) for r in data.get("rows", [])]
        message = RowsMessage(
            job=str(data["job"]),
            seq=int(data["seq"]),
            part=int(data.get("part", 0)),
            parts=int(data.get("parts", 1)),
            source=source,
            header=list(data["header"]),
            lines=list(data.get("lines", [])),
            rows=rows,
            kind=kind,
            rejections=[Rejection(**r) for r in data.get("rejections", [])],
            replay=data.get("replay"),
            mode=data.get("mode", MODE_PUT),
            indexes=None if data.get("indexes") is None else [int(i) for i in data["indexes"]],
        )
    except (KeyError, TypeError, ValueError, csv.Error) as exc:
        raise ContractError(f"message is missing or has a bad field: {exc}") from exc
    if message.mode not in WRITE_MODES:
        raise ContractError(f"unknown write mode {message.mode!r} (one of {', '.join(WRITE_MODES)})")
    if kind == KIND_ROWS and len(message.lines) != len(message.rows):
        raise ContractError("message has a different number of lines and rows")
    if message.indexes is not None and len(message.indexes) != len(message.rows):
        raise ContractError("message has a different number of indexes and rows")
    places = [*(message.indexes or []), *(r.index for r in message.rejections if r.index is not None)]
    if any(not 0 <= i < ROWS_PER_MESSAGE for i in places):
        raise ContractError(f"a row index is outside 0..{ROWS_PER_MESSAGE - 1}")
    return message


OVERSIZE_FIELD_PREVIEW = 200
OVERSIZE_PREVIEW_FIELDS = 100


def too_large(line: int, row: list[str], detail: str, index: int | None = None) -> Rejection:
    """A `row_too_large` rejection for a row no queue message can hold: the row travels
    as a preview (at most 100 fields of 200 characters), so its message always fits."""
    preview = [f[:OVERSIZE_FIELD_PREVIEW] for f in row[:OVERSIZE_PREVIEW_FIELDS]]
    return Rejection(line, preview, "row_too_large",
                     f"{detail} (the row is cut to {len(preview)} field(s) of at most "
                     f"{OVERSIZE_FIELD_PREVIEW} characters here)", index)


def replay_id(job: str, message_id: str, lines: list[int], rows: list[list[str]]) -> str:
    """Deterministic: the same rows sent back twice carry the same id, so the ledger
    counts them once; a different fix of the same rows gets a different id."""
    identity = json.dumps([job, message_id, lines, rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


# Rejections whose row is only a preview (cut to fit a message): never written as they are.
NOT_REPLAYABLE_AS_IS = frozenset({"row_too_large"})
MAX_DETAIL_CHARS = 300


def replay_indexes(indexes: list[int | None]) -> list[int] | None:
    """The indexes a replay of rows carries: all of theirs, or None when one is not known
    (a rejection from before indexes: the ledger then counts the replay by its id)."""
    known = [i for i in indexes if i is not None]
    return known if len(known) == len(indexes) else None


def as_replay(message: RowsMessage) -> RowsMessage:
    """A rejected message's rows as a rows message to write again (e.g. after a spec fix,
    or when a DLQ was redriven wholesale with SQS's own StartMessageMoveTask). Rows kept
    only as a preview stay rejected."""
    replayable = [r for r in message.rejections if r.reason not in NOT_REPLAYABLE_AS_IS]
    kept = [r for r in message.rejections if r.reason in NOT_REPLAYABLE_AS_IS]
    lines = [r.line for r in replayable]
    rows = [list(r.row) for r in replayable]
    return RowsMessage(message.job, message.seq, message.source, message.header, lines, rows,
                       part=message.part, parts=message.parts, rejections=kept,
                       replay=replay_id(message.job, message.message_id, lines, rows),
                       mode=message.mode, indexes=replay_indexes([r.index for r in replayable]))


def rejected_messages(message: RowsMessage, rejections: list[Rejection],
                      limit: int = MAX_SQS_MESSAGE_BYTES) -> list[RowsMessage]:
    """The DLQ messages that carry `rejections` (details cut short), each within `limit`."""
    cut = [replace(r, detail=r.detail[:MAX_DETAIL_CHARS]) for r in rejections]
    groups = [cut]
    out: list[RowsMessage] = []
    while groups:
        group = groups.pop(0)
        candidate = RowsMessage(message.job, message.seq, message.source, message.header, [], [],
                                part=message.part, parts=message.parts, kind=KIND_REJECTED,
                                rejections=group, mode=message.mode)
        if len(candidate.encode().encode()) > limit:
            if len(group) > 1:
                middle = len(group) // 2
                groups[:0] = [group[:middle], group[middle:]]
                continue
            # One row whose rejection is bigger than a message (a row's JSON can be several
            # times its CSV text): it travels as a preview, and its reason in the detail.
            (r,) = group
            candidate.rejections = [too_large(r.line, r.row, f"rejected as {r.reason}: {r.detail}; "
                                                             "too large to carry whole", r.index)]
        out.append(candidate)
    return out


def split_to_fit(message: RowsMessage, limit: int = MAX_SQS_MESSAGE_BYTES) -> list[RowsMessage]:
    """Split a message into parts whose encoded bodies fit `limit` bytes.

    Parts keep the message's seq so the split is as deterministic as the message itself.
    A single row too large for any message travels as a rejection (`row_too_large`, its
    fields cut to a preview), so it is counted and reported, never dropped.
    """
    if len(message.encode().encode()) <= limit:
        return [message]
    if len(message.rows) <= 1:
        return [_oversize(message, limit)]
    places = message.row_indexes  # each part carries its rows' indexes in the seq

    def piece(start: int, end: int, part: int = 0, parts: int = 1) -> RowsMessage:
        return RowsMessage(message.job, message.seq, message.source, message.header,
                           message.lines[start:end], message.rows[start:end], part=part,
                           parts=parts, mode=message.mode,
                           indexes=None if places is None else places[start:end])

    halves = [(0, len(message.rows))]
    done: list[tuple[int, int]] = []
    while halves:
        start, end = halves.pop(0)
        if end - start <= 1 or len(piece(start, end).encode().encode()) <= limit:
            done.append((start, end))
            continue
        mid = start + (end - start) // 2
        halves[:0] = [(start, mid), (mid, end)]
    parts = []
    for i, (start, end) in enumerate(done):
        part = piece(start, end, i, len(done))
        parts.append(part if end - start > 1 else split_to_fit(part, limit)[0])
    return parts


def _oversize(message: RowsMessage, limit: int) -> RowsMessage:
    (line,), (row,) = message.lines, message.rows
    size = len(json.dumps(row, ensure_ascii=False).encode())
    index = None if message.row_indexes is None else message.row_indexes[0]
    rejection = too_large(line, row, f"row is {size:,} bytes; a queue message holds at most {limit:,}",
                          index)
    return RowsMessage(message.job, message.seq, message.source, message.header, [], [],
                       part=message.part, parts=message.parts, rejections=[rejection],
                       mode=message.mode)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_id_for(source: Source) -> str:
    """A job id derived from the object version, so a duplicate S3 event maps to the same job.

    Version "null" (an object stored before its bucket's versioning was enabled, which
    HeadObject then reports) counts as none: the ETag names it, as when it was uploaded."""
    version = source.version if source.version != "null" else None
    identity = f"{source.bucket}/{source.key}@{version or source.etag}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    stem = _UNSAFE.sub("-", source.key.rsplit("/", 1)[-1])[:40].strip("-") or "object"
    return f"{stem}-{digest}"


# The writer's other event: the reconciler's schedule (the constant input of the stack's
# EventBridge rule, which MiniStack fires for `fanout serve` too; the embedded runtime sends
# the same), instead of an SQS batch.
RECONCILE_EVENT: dict[str, str] = {"fanout": "reconcile"}


def is_reconcile_event(event: Any) -> bool:
    """Whether a writer invocation is the reconciler's schedule, not an SQS batch."""
    return isinstance(event, dict) and event.get("fanout") == RECONCILE_EVENT["fanout"] \
        and "Records" not in event
