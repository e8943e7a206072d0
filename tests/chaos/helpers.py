"""Helpers for the chaos suite: a poisoned CSV with its clean expectation, client proxies
that kill a call, and the exactness checks every scenario ends with."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import ROWS_PER_MESSAGE
from fanout_cli.local.ingest import IngestOptions, IngestResult, ingest
from fanout_cli.makecsv import make_csv

ROWS = 1000
# Long enough for a 2 s visibility timeout to pass a few times; short enough that a hung
# pipeline fails the test (PipelineError) instead of hanging it.
MAX_WAIT_S = 60.0

Key = tuple[str, str]


class Killed(RuntimeError):
    """Not an AWS error: what a handler sees when its process dies under it."""


@dataclass
class Expected:
    """A CSV and what a clean run must leave behind, computed from the CSV alone."""

    path: Path
    items: dict[Key, dict[str, str]]
    rejected: list[tuple[int, str]]  # (source line, reason), by line
    read: int
    written: int
    superseded: int

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return self.read, self.written, len(self.rejected), self.superseded


def poisoned_csv(directory: Path, rows: int = ROWS, seed: int = 1) -> Expected:
    """make_csv's rows with three poison rows: an empty key, a ragged row, and a row
    with the key of the row before it in the same 25-row message (so it supersedes it)."""
    path = directory / "chaos.csv"
    make_csv(rows, 20, path, seed=seed, stream=io.StringIO())
    with open(path, newline="", encoding="utf-8") as f:
        header, *body = list(csv.reader(f))
    body[7][0] = ""  # line 9: empty partition key -> empty_key
    body[30] = body[30][:5]  # line 32: ragged -> column_count
    body[61] = body[60][:2] + body[61][2:]  # line 63: same key as line 62 -> superseded
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *body])
    return expectation(path, header, body)


def expectation(path: Path, header: list[str], body: list[list[str]]) -> Expected:
    """The default spec's result, independent of the core: every value a string, empty
    values dropped, a key repeated inside one 25-row message superseded by the later row.
    `body` has no blank lines or quoted newlines, so data row i is on line i + 2."""
    items: dict[Key, dict[str, str]] = {}
    rejected: list[tuple[int, str]] = []
    superseded = 0
    for start in range(0, len(body), ROWS_PER_MESSAGE):
        message: dict[Key, dict[str, str]] = {}
        for i in range(start, min(start + ROWS_PER_MESSAGE, len(body))):
            row, line = body[i], i + 2
            if len(row) != len(header):
                rejected.append((line, "column_count"))
                continue
            record = dict(zip(header, row, strict=True))
            if record["account"] == "" or record["offer_id"] == "":
                rejected.append((line, "empty_key"))
                continue
            key = (record["account"], record["offer_id"])
            superseded += key in message
            message[key] = {k: v for k, v in record.items() if v != ""}
        # Across messages the write order is not defined: the expectation needs none.
        assert not set(message) & set(items), "a key repeats across messages"
        items.update(message)
    return Expected(path, items, rejected, len(body), len(items), superseded)


def run(expected: Expected, out: Path, wrap: Callable[[Clients], Clients] | None = None,
        **options: Any) -> IngestResult:
    return ingest(IngestOptions(file=expected.path, spec=Spec.default(), out_dir=out,
                                wrap_clients=wrap, max_wait_s=MAX_WAIT_S, **options))


def assert_exact(result: IngestResult, expected: Expected) -> None:
    """The table is the clean expectation, the counts are exact, every reject has a reason."""
    s, out = result.summary, result.out_dir
    assert s["status"] == "COMPLETE", s
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == \
        expected.counts, s
    assert s["rows_written"] + s["rows_rejected"] + s["rows_superseded"] == s["rows_read"]
    assert s["rows_in_dlq_unreported"] == 0
    items = [json.loads(x)["Item"] for x in (out / "items.jsonl").read_text().splitlines()]
    got = {(i["account"]["S"], i["offer_id"]["S"]): {k: v["S"] for k, v in i.items()} for i in items}
    assert len(items) == len(got) == s["items_in_table"]
    assert got == expected.items
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    for r in rejected:
        assert isinstance(r.get("reason"), str) and r["reason"], r
        assert isinstance(r.get("line"), int) and r["line"] >= 1, r
    assert sorted((r["line"], r["reason"]) for r in rejected) == expected.rejected


class Hooked:
    """A client proxy: calls named in `hooks` go to `hook(client, **params)`, the rest
    straight to the client."""

    def __init__(self, client: Any, **hooks: Callable[..., Any]) -> None:
        self._client = client
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        hook = self._hooks.get(name)
        if hook is None:
            return getattr(self._client, name)
        return lambda *args, **params: hook(self._client, *args, **params)


class JumpingClock:
    """The wall clock, plus whatever time a test makes pass at once (`jump`): how the
    chaos suite lets a dead writer's lifetime go by without waiting for it.

    Time passes for every invocation alike, and Lambda ends each at its timeout, so no
    invocation can be alive on both sides of a jump longer than its lifetime: a folder
    would find its lease (which lasts as long as it can live) taken while it still folds,
    and two folders would race over the shards and the totals. So a jump waits until the
    other invocations in flight have ended, and holds new ones back while it waits. The
    event source mappings poll through `invocations(sqs)`: a worker thread is in an
    invocation from a receive that returned messages to its next receive."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._in_flight: set[int] = set()  # the worker threads inside an invocation
        self._jumping = 0
        self._changed = threading.Condition()

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump(self, seconds: float) -> None:
        """Let `seconds` pass, from an invocation that is dying (it makes no more calls)."""
        with self._changed:
            # The caller's invocation is over (two dying at once must not wait for each other).
            self._in_flight.discard(threading.get_ident())
            self._jumping += 1
            try:
                if not self._changed.wait_for(lambda: not self._in_flight, timeout=MAX_WAIT_S):
                    raise AssertionError("the clock cannot jump: invocations never ended")
                self.offset += seconds
            finally:
                self._jumping -= 1
                self._changed.notify_all()

    def invocations(self, sqs: Any) -> Hooked:
        """`sqs` with its receive_message marking the calling thread's invocations."""

        def receive_message(client: Any, **params: Any) -> Any:
            me = threading.get_ident()
            with self._changed:
                self._in_flight.discard(me)  # its previous invocation has ended
                self._changed.notify_all()
                self._changed.wait_for(lambda: not self._jumping)
                response = client.receive_message(**params)
                if response.get("Messages"):
                    self._in_flight.add(me)
            return response

        return Hooked(sqs, receive_message=receive_message)


@dataclass
class Counter:
    """A thread-safe call counter: `next()` returns 1, 2, 3, ..."""

    n: int = 0
    hits: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> int:
        with self._lock:
            self.n += 1
            return self.n
