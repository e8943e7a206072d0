"""Helpers for the chaos suite: a poisoned CSV with its clean expectation, client proxies
that kill a call, and the exactness checks every scenario ends with."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import LOCAL_CONFIG, ROWS_PER_MESSAGE, PipelineConfig, ResourceNames
from fanout_cli.local.ingest import IngestOptions, IngestResult, ingest
from fanout_cli.makecsv import make_csv
from tests.sqs_clock import sqs_time_ahead

ROWS = 1000
# Long enough for a few deliveries (the clock skips the visibility timeouts between them);
# short enough that a hung pipeline fails the test (PipelineError) instead of hanging it.
MAX_WAIT_S = 60.0
# How long the pipeline must only wait before the clock skips the wait.
IDLE_S = 0.3

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
    body[30] = body[30] + ["extra"]  # line 32: a field more than the header -> column_count
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


def run(expected: Expected, out: Path, wrap: Callable[[Clients], Clients] | None = None, *,
        config: PipelineConfig = LOCAL_CONFIG, clock: JumpingClock | None = None,
        **options: Any) -> IngestResult:
    """Load the CSV through the pipeline, the ledger and moto's SQS on a JumpingClock that
    skips the pipeline's waits (a visibility timeout is 51 s locally: see JumpingClock)."""
    clock = clock or JumpingClock()

    def wrapped(raw: Clients) -> Clients:
        clients = wrap(raw) if wrap else raw
        clock.skip_waits(raw.sqs, step_s=config.visibility_timeout_s)
        return replace(clients, sqs=clock.invocations(clients.sqs))

    options.setdefault("max_wait_s", MAX_WAIT_S)
    with clock.running():
        return ingest(IngestOptions(file=expected.path, spec=Spec.default(), out_dir=out,
                                    wrap_clients=wrapped, config=config, clock=clock, **options))


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
    """The wall clock, plus the time it skips: how the chaos suite lets the pipeline's
    waits go by without sleeping through them. The local rows queue's visibility timeout
    is 51 s (the ledger's timing rule: more than twice the writer's 10 s timeout plus
    30 s), and a failed message, or a dead writer's whole batch, comes back only after it.
    The ledger runs on this clock and, while `running`, so does moto's SQS, so one jump
    brings a redelivery and the age the ledger sees in a dead writer's hole forward
    together, as real time would.

    It jumps only while the pipeline does nothing but wait (`skip_waits`): no invocation in
    flight, so none is alive on both sides of a jump (Lambda ends each at its timeout; a
    folder alive across a jump would find its lease, which lasts as long as it can live,
    taken while it still folds, and two folders would race over the shards and the
    totals). The event source mappings poll through `invocations(sqs)`: a worker thread is
    in an invocation from a receive that returned messages to its next receive, and its
    empty receives are where the clock looks for a wait to skip, so nothing looks once the
    mappings have stopped."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._in_flight: set[int] = set()  # the worker threads inside an invocation
        self._lock = threading.Lock()
        self._watched: tuple[Any, list[str]] | None = None  # (sqs, the queues the functions read)
        self._step_s = 0.0
        self._looked_at = 0.0
        self._waiting_since: float | None = None

    def __call__(self) -> float:
        return time.time() + self.offset

    @contextmanager
    def running(self) -> Iterator[None]:
        """moto's SQS on this clock."""
        with sqs_time_ahead(lambda: self.offset):
            yield

    def skip_waits(self, sqs: Any, *, step_s: float) -> None:
        """From now on, jump `step_s` (the rows queue's visibility timeout) each time the
        pipeline has only waited for IDLE_S: no invocation in flight, no message visible in
        the queues the functions read (all that `sqs` lists but the DLQ), some invisible."""
        dlq = ResourceNames().dlq
        self._watched = (sqs, [u for u in sqs.list_queues().get("QueueUrls", []) if not u.endswith("/" + dlq)])
        self._step_s = step_s

    def _only_waiting(self, sqs: Any, urls: list[str]) -> bool:
        visible = invisible = 0
        for url in urls:
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            visible += int(counts["ApproximateNumberOfMessages"])
            invisible += int(counts["ApproximateNumberOfMessagesNotVisible"])
        return visible == 0 and invisible > 0

    def _skip_if_waiting(self) -> None:
        """After an empty receive, with the lock held (no receive runs meanwhile)."""
        now = time.monotonic()
        if self._watched is None or self._in_flight:
            self._waiting_since = None
            return
        if now - self._looked_at < IDLE_S / 4:
            return
        self._looked_at = now
        if not self._only_waiting(*self._watched):
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= IDLE_S:
            self.offset += self._step_s
            self._waiting_since = None

    def invocations(self, sqs: Any) -> Hooked:
        """`sqs` with its receive_message marking the calling thread's invocations."""

        def receive_message(client: Any, **params: Any) -> Any:
            me = threading.get_ident()
            with self._lock:
                self._in_flight.discard(me)  # its previous invocation has ended
                response = client.receive_message(**params)
                if response.get("Messages"):
                    self._in_flight.add(me)
                else:
                    self._skip_if_waiting()
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
