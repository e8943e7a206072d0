"""Cutting a job's records into 25-row messages and handing them to a sink (the Enqueuer)."""

from __future__ import annotations

import csv
from typing import Protocol

from fanout.contract import (
    MODE_PUT,
    OVERSIZE_FIELD_PREVIEW,
    CsvRowsEncoder,
    Rejection,
    RowsMessage,
    Source,
    parse_csv_rows,
    split_to_fit,
    too_large,
)
from fanout.settings import MAX_SQS_MESSAGE_BYTES, ROWS_PER_MESSAGE


class Sink(Protocol):
    """Where messages go: the Enqueuer (SendMessageBatch), or `fanout check`'s counter."""

    def send(self, body: str, size: int | None = None) -> None: ...

    def drain(self) -> int: ...


def count_short(records: list[str], delimiter: str, width: int) -> int:
    """How many of the records (CSV text) have fewer than `width` fields.

    A record with fewer than width - 1 delimiters is short whatever its quoting; one with
    enough and no quote is not; only one with enough and a quote is parsed (a quoted field
    may hold the delimiter), all of them by one csv.reader: each is one whole record, so
    joined they read as as many rows (else, say a stray carriage return, one by one)."""
    enough = width - 1
    short = 0
    quoted = []
    for record in records:
        if record.count(delimiter) < enough:
            short += 1
        elif '"' in record:
            quoted.append(record)
    if not quoted:
        return short
    rows = parse_csv_rows("\n".join(quoted), delimiter)
    if len(rows) != len(quoted):
        rows = [parse_csv_rows(record, delimiter)[0] for record in quoted]
    return short + sum(1 for row in rows if len(row) < width)


class Batcher:
    """Cuts the records of one job, in file order, into messages of 25 and sends them
    (CSV-text bodies, see fanout.contract.CsvRowsEncoder), numbering them from `seq`.

    Whole messages are cut with list slices, so the per-record cost is an append (and,
    with `count_short`, a `str.count`). `rows`, `messages` and `padded` count what was
    sent since the caller last reset them. Every message carries the job's write `mode`
    (the spec's), which the writer obeys.

    `padded` counts the records with fewer fields than the header, which the writer pads
    (the spec's `short_rows = "pad"`, `count_short`): information about the rows read,
    not an outcome (each still ends written, rejected or superseded).
    """

    def __init__(self, enqueuer: Sink, job: str, source: Source, header: list[str],
                 delimiter: str, seq: int, mode: str = MODE_PUT, *,
                 count_short: bool = False) -> None:
        self.enqueuer, self.job, self.source = enqueuer, job, source
        self.header, self.delimiter, self.mode = header, delimiter, mode
        self.encoder = CsvRowsEncoder(job, source, header, delimiter, mode)
        self.seq = seq
        self.rows = self.messages = self.padded = 0
        self.count_short = count_short and len(header) > 1
        self._lines: list[int] = []
        self._records: list[str] = []

    def add(self, lines: list[int], records: list[str]) -> None:
        if self.count_short:
            self.padded += count_short(records, self.delimiter, len(self.header))
        self._lines += lines
        self._records += records
        pending = len(self._records)
        if pending < ROWS_PER_MESSAGE:
            return
        whole = pending - pending % ROWS_PER_MESSAGE
        for start in range(0, whole, ROWS_PER_MESSAGE):
            end = start + ROWS_PER_MESSAGE
            self._send(self._lines[start:end], self._records[start:end])
        del self._lines[:whole], self._records[:whole]

    def flush(self) -> None:
        """Send what is left as a shorter message (at the end, and at a checkpoint)."""
        if self._records:
            self._send(self._lines, self._records)
            self._lines, self._records = [], []

    def _send(self, lines: list[int], records: list[str]) -> None:
        body = self.encoder.encode(self.seq, lines, records)
        size = len(body) if body.isascii() else len(body.encode())
        if size <= MAX_SQS_MESSAGE_BYTES:
            self.enqueuer.send(body, size)
            self.messages += 1
        else:
            self.messages += self._send_parts(lines, records)
        self.rows += len(records)
        self.seq += 1

    def _send_parts(self, lines: list[int], records: list[str]) -> int:
        """Rare: records too large for one message travel as version-1 parts (see
        split_to_fit); a record longer than any message is a `row_too_large` rejection
        (its raw text as the preview if a field is past csv's field limit)."""
        rows: list[list[str]] = []
        row_lines: list[int] = []
        indexes: list[int] = []  # each row's index in the seq: the parts carry them
        rejections: list[Rejection] = []
        for index, (line, record) in enumerate(zip(lines, records, strict=True)):
            if len(record) > MAX_SQS_MESSAGE_BYTES:
                try:
                    fields = parse_csv_rows(record, self.delimiter)[0]
                except csv.Error:  # a field past csv's limit: the preview is the raw text
                    fields = [record[:OVERSIZE_FIELD_PREVIEW]]
                rejections.append(too_large(line, fields,
                                            f"row is {len(record.encode()):,} bytes of CSV; a "
                                            f"queue message holds at most {MAX_SQS_MESSAGE_BYTES:,}",
                                            index))
            else:
                rows.append(parse_csv_rows(record, self.delimiter)[0])
                row_lines.append(line)
                indexes.append(index)
        parts = split_to_fit(RowsMessage(self.job, self.seq, self.source, self.header, row_lines,
                                         rows, mode=self.mode, indexes=indexes)) if rows else []
        parts += [RowsMessage(self.job, self.seq, self.source, self.header, [], [], rejections=[r],
                              mode=self.mode)
                  for r in rejections]
        for index, part in enumerate(parts):
            part.part, part.parts = index, len(parts)
            self.enqueuer.send(part.encode())
        return len(parts)
