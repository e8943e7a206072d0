"""The write modes against put, in one process: writer rows/s per invocation.

The same 2,500 make-csv rows, cut by the splitter's Batcher into 100 messages stamped
with each mode, go through `writer.load.write_batch` (decode, map, write with the
pool of `writer_in_flight` threads and InFlight) on a real botocore client built with
ITEMS_CLIENT_CONFIG and `encode_whole` (the writer's items client), whose round trip is
canned (bench.fakes.CannedDynamoDB): a sleep of the injected latency per call and a
200. put and delete send BatchWriteItem (25 requests a call); insert sends one PutItem
with `attribute_not_exists` a row, update one UpdateItem a row. At 0 ms the figure is
the writer's CPU per row; at 10 ms (a DynamoDB round trip from Lambda) it is what the
number of calls costs. The CPU is not capped (a full core, Lambda's at 1,769 MB).

Run alone: `python -m bench.modes` (`--quick`: fewer runs).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from botocore.awsrequest import AWSResponse

from bench.data import generate
from bench.fakes import CannedDynamoDB, _CannedBody
from bench.report import Row, print_alone
from fanout.aws import Clients
from fanout.contract import WRITE_MODES, Source
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import DEFAULT_CONFIG, Settings
from splitter.batch import Batcher
from writer.batch_write import CALL_S, ITEMS_CLIENT_CONFIG, Budget, encode_whole
from writer.load import ChunkResult, write_batch

TABLE = "bench-items"
ROWS = 2_500  # 100 messages: one invocation's batch
LATENCIES_S = (0.0, 0.010)
SOURCE = Source("bench", "uploads/modes.csv", "etag")


class CannedRowWrites(CannedDynamoDB):
    """CannedDynamoDB that also answers PutItem and UpdateItem (a 200 with `{}`, after the
    latency), so the per-row modes are measured through the same client."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ITEMS_CLIENT_CONFIG, customize=encode_whole, **kwargs)
        for operation in ("PutItem", "UpdateItem"):
            self.client.meta.events.register(f"before-send.dynamodb.{operation}", self._send_row)

    def put_item(self, **params: Any) -> Any:
        return self.client.put_item(**params)

    def update_item(self, **params: Any) -> Any:
        return self.client.update_item(**params)

    def _send_row(self, request: Any, **_: Any) -> AWSResponse:
        with self._lock:
            self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "bench"}, _CannedBody(b"{}"))


class _Keep:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, body: str, size: int | None = None) -> None:
        self.bodies.append(body)

    def drain(self) -> int:
        return 0


def bodies_for(path: Path, mode: str) -> list[str]:
    """The splitter's messages for the file's rows, stamped with `mode`."""
    header, *records = path.read_text().splitlines()
    sink = _Keep()
    batcher = Batcher(sink, "bench-modes", SOURCE, header.split(","), ",", 0, mode)
    batcher.add(list(range(2, len(records) + 2)), records)
    batcher.flush()
    return sink.bodies


def rate(bodies: list[str], mode: str, latency_s: float, runs: int) -> tuple[float, int]:
    """Best rows/s of `runs` invocations, and the calls one invocation made."""
    settings = Settings(table_name=TABLE, ledger_table_name="bench-jobs")
    records = [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b,
                "attributes": {"ApproximateReceiveCount": "1"}} for i, b in enumerate(bodies)]
    best, calls = 0.0, 0
    for _ in range(runs):
        ddb = CannedRowWrites(latency_s=latency_s)
        runtime = Runtime(replace(settings, writer_in_flight=DEFAULT_CONFIG.writer_in_flight),
                          Spec.default(), Clients(s3=None, sqs=None, dynamodb=ddb))
        started = time.perf_counter()
        deadline = started + 120.0
        budget = Budget(lambda: deadline - time.perf_counter(), call_s=CALL_S)  # noqa: B023
        outcomes = write_batch(records, runtime, budget)
        seconds = time.perf_counter() - started
        failed = [o for o in outcomes.values() if not isinstance(o, ChunkResult)]
        if failed:
            raise RuntimeError(f"{mode}: {len(failed)} message(s) failed: {failed[0]!r}")
        rows = sum(o.counts.rows for o in outcomes.values() if isinstance(o, ChunkResult))
        assert rows == ROWS, (mode, rows)
        if rows / seconds > best:
            best, calls = rows / seconds, ddb.calls
    return best, calls


def add_rows(rows: list[Row], notes: list[str], quick: bool) -> None:
    runs = 2 if quick else 3
    with TemporaryDirectory(prefix="fanout-bench-modes-") as folder:
        path = generate(Path(folder), ROWS)
        bodies = {mode: bodies_for(path, mode) for mode in WRITE_MODES}
        for latency_s in LATENCIES_S:
            measured = {mode: rate(bodies[mode], mode, latency_s, runs) for mode in WRITE_MODES}
            put_rate, put_calls = measured["put"]
            for mode in WRITE_MODES:
                if mode == "put":
                    continue
                mode_rate, mode_calls = measured[mode]
                rows.append((
                    f"writer rows/s per invocation, {mode} vs put, "
                    f"{latency_s * 1000:.0f} ms per call, {DEFAULT_CONFIG.writer_in_flight} in flight",
                    f"{mode_rate:,.0f} ({mode_calls:,} calls)",
                    f"put {put_rate:,.0f} ({put_calls:,} calls)",
                    f"{mode_rate / put_rate:.3f}", "— (measured, not a goal)"))
    notes.append(
        f"Write modes: {ROWS:,} make-csv rows in {ROWS // 25} messages through "
        "writer.load.write_batch on the writer's items client (ITEMS_CLIENT_CONFIG, "
        "encode_whole), the round trip canned (a sleep, then 200); best of "
        f"{runs}, no CPU cap. put and delete: BatchWriteItem, 25 rows a call; insert: "
        "PutItem with attribute_not_exists, update: UpdateItem SET, one call a row (so 25x "
        "the calls; with one message's rows in sequence, at most writer_in_flight calls at once).")


if __name__ == "__main__":
    print_alone(add_rows)
