"""What a run must remember about every DLQ message or row it read, kept on disk.

A run reads the DLQ once through, and what it must remember grows with the DLQ: the ids
and receipt handles of the messages it holds (to see each once and to release them at
the end), and for `inspect` and `export` the distinct rows (a killed redrive can leave a
row in two messages). Each `Spool` is a private SQLite database in a temporary file
(deleted when it is closed) with a small page cache, so the run's memory stays the same
whatever the DLQ holds; the disk it uses grows, about 0.5 KB per message held plus each
row's fields.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlq_replayer.dlq import WaitingRow

CACHE_KIB = 2048  # SQLite's page cache per spool; the rest is on disk
PAGE = 500  # rows fetched at a time when reading a spool back


def connect() -> sqlite3.Connection:
    """A private on-disk database ("" = a temporary file SQLite deletes on close)."""
    db = sqlite3.connect("", isolation_level=None)
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA temp_store = FILE")
    return db


class HeldMessages:
    """The messages a run has seen (by SQS message id), with the receipt of those it still
    holds invisible."""

    def __init__(self) -> None:
        self.db = connect()
        self.db.execute("CREATE TABLE held (id TEXT PRIMARY KEY, receipt TEXT, holding INT)")
        self.holding = 0

    def add(self, sqs_id: str, receipt: str) -> bool:
        """Record a received message; False if the run saw it before (its receipt is kept:
        the newest one is the one that can release it)."""
        row = self.db.execute("SELECT holding FROM held WHERE id = ?", (sqs_id,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO held VALUES (?, ?, 1)", (sqs_id, receipt))
            self.holding += 1
            return True
        self.db.execute("UPDATE held SET receipt = ?, holding = 1 WHERE id = ?",
                        (receipt, sqs_id))
        self.holding += 1 - row[0]
        return False

    def drop(self, sqs_id: str) -> None:
        """The message was deleted: nothing to release (still seen)."""
        cursor = self.db.execute("UPDATE held SET holding = 0 WHERE id = ? AND holding = 1",
                                 (sqs_id,))
        self.holding -= cursor.rowcount

    def pages(self, size: int = 10) -> Iterator[list[tuple[str, str]]]:
        """(id, receipt) of the messages still held, `size` at a time; each page is marked
        not held once the next is asked for."""
        after = 0
        while True:
            page = self.db.execute(
                "SELECT rowid, id, receipt FROM held WHERE holding = 1 AND rowid > ? "
                "ORDER BY rowid LIMIT ?", (after, size)).fetchall()
            if not page:
                return
            yield [(sqs_id, receipt) for _, sqs_id, receipt in page]
            cursor = self.db.execute("UPDATE held SET holding = 0 WHERE rowid > ? AND "
                                     "rowid <= ? AND holding = 1", (after, page[-1][0]))
            self.holding -= cursor.rowcount
            after = page[-1][0]


class DistinctRows:
    """The selected rows a read finds, each (job, message id, line) once, read back in
    (job, line) order (ties: the order read)."""

    def __init__(self) -> None:
        self.db = connect()
        self.db.executescript("""
            CREATE TABLE headers (id INTEGER PRIMARY KEY, header TEXT UNIQUE);
            CREATE TABLE rows (job TEXT, message TEXT, line INT, kind TEXT, source TEXT,
                               header INT, reason TEXT, detail TEXT, row TEXT,
                               PRIMARY KEY (job, message, line));
        """)
        self._header: tuple[tuple[str, ...], int] | None = None
        self.count = 0

    def _header_id(self, header: tuple[str, ...]) -> int:
        if self._header is None or self._header[0] != header:
            text = json.dumps(header)
            self.db.execute("INSERT OR IGNORE INTO headers (header) VALUES (?)", (text,))
            found = self.db.execute("SELECT id FROM headers WHERE header = ?", (text,))
            self._header = (header, found.fetchone()[0])
        return self._header[1]

    def add(self, rows: list[WaitingRow]) -> None:
        self.db.execute("BEGIN")
        for r in rows:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.job, r.message_id, r.line, r.kind, r.source, self._header_id(r.header),
                 r.reason, r.detail, json.dumps(r.row, ensure_ascii=False)))
            self.count += cursor.rowcount
        self.db.execute("COMMIT")

    def finish(self) -> None:
        """Index for reading back (once every row is in: cheaper than keeping it)."""
        self.db.execute("CREATE INDEX by_job ON rows (job, line)")
        self.db.execute("CREATE INDEX by_reason ON rows (reason, job, line)")

    def ordered(self, where: str = "", params: tuple[Any, ...] = (),
                limit: int | None = None) -> Iterator[WaitingRow]:
        """The rows in (job, line) order, optionally filtered by `where` (SQL)."""
        from dlq_replayer.dlq import WaitingRow  # dlq imports this module

        headers: dict[int, tuple[str, ...]] = {}
        sql = ("SELECT rowid, job, message, kind, source, header, line, row, reason, detail "
               f"FROM rows {'WHERE ' + where if where else ''} ORDER BY job, line, rowid")
        last: tuple[str, int, int] | None = None
        left = limit
        while left is None or left > 0:
            page_size = PAGE if left is None else min(PAGE, left)
            if last is None:
                page = self.db.execute(f"{sql} LIMIT ?", (*params, page_size)).fetchall()
            else:
                keyed = sql.replace("ORDER BY", ("AND " if where else "WHERE ") +
                                    "(job, line, rowid) > (?, ?, ?) ORDER BY")
                page = self.db.execute(f"{keyed} LIMIT ?",
                                       (*params, *last, page_size)).fetchall()
            if not page:
                return
            for rowid, job, message, kind, source, header_id, line, row, reason, detail in page:
                if header_id not in headers:
                    headers[header_id] = tuple(json.loads(self.db.execute(
                        "SELECT header FROM headers WHERE id = ?", (header_id,)).fetchone()[0]))
                yield WaitingRow(job, message, kind, source, headers[header_id], line,
                                 tuple(json.loads(row)), reason, detail)
                last = (job, line, rowid)
            if left is not None:
                left -= len(page)

    def shapes(self) -> Iterator[tuple[tuple[str, ...], int]]:
        """(header, fields) of the rows in (job, line) order, for the CSV's columns."""
        for header, width in self.db.execute(
                "SELECT headers.header, json_array_length(row) FROM rows "
                "JOIN headers ON headers.id = rows.header ORDER BY job, line, rows.rowid"):
            yield tuple(json.loads(header)), width

    def by_job(self) -> list[tuple[str, str, int]]:
        """(job, reason, rows) in job order, then most rows first (ties: first seen)."""
        return [(job, reason, n) for job, reason, n, *_ in self.db.execute(
            "SELECT job, reason, count(*) AS n, min(line), min(rowid) FROM rows "
            "GROUP BY job, reason ORDER BY job, n DESC, min(line), min(rowid)")]

    def by_reason(self) -> list[tuple[str, int]]:
        """(reason, rows), most rows first (ties: the reason whose first row comes first)."""
        counts = self.db.execute("SELECT reason, count(*) FROM rows GROUP BY reason").fetchall()
        first = {reason: self.db.execute(
            "SELECT job, line, rowid FROM rows WHERE reason = ? ORDER BY job, line, rowid "
            "LIMIT 1", (reason,)).fetchone() for reason, _ in counts}
        return sorted(counts, key=lambda c: (-c[1], first[c[0]]))

    def source_of(self, job: str) -> str:
        return self.db.execute("SELECT source FROM rows WHERE job = ? ORDER BY line, rowid "
                               "LIMIT 1", (job,)).fetchone()[0]

    def jobs(self) -> list[str]:
        return [job for (job,) in self.db.execute("SELECT DISTINCT job FROM rows ORDER BY job")]

    def close(self) -> None:
        self.db.close()
