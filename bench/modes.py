"""The write modes against put, in one process: writer rows/s per invocation, CPU per row,
the cost per 1M rows above the DynamoDB floor, and the rejected-row path.

The same 2,500 make-csv rows, cut by the splitter's Batcher into 100 messages (one
invocation's batch) stamped with each mode, go through `writer.load.write_batch`
(decode, map, write on the pool of `writer_in_flight` threads with InFlight) on the
writer's own client (`WriterDynamoDB` over a real botocore client built with
ITEMS_CLIENT_CONFIG and `encode_whole`) whose round trip is canned (`CannedTable`: a
sleep of the injected latency, then the answer DynamoDB would give for a table that
holds the keys the scenario says). put and delete send BatchWriteItem; insert and
update BatchExecuteStatement (writer/statements.py); "one call a row" is the path
before it (writer/rows.py, PutItem/UpdateItem), kept for what PartiQL cannot say.

rows/s is at the stack's writer memory: Lambda's CPU share of it (memory/1,769 of a
core) is applied with bench.invocation.CpuShare. CPU per row is measured at a full core
and 0 ms (`time.process_time`, all threads), less the fake's own parsing. Cost per 1M
rows above the floor (one write unit a row): the writer's GB-s at the 10 ms rate and
its requests, write units DynamoDB charges for refused statements (an update's wrong
first guess), read units of an insert's read-back, SQS requests of the rejected rows
and the S3 PUTs of their error reports. The rejected-row path: the put file with every
tenth row's key emptied (10% rejected: each message's rejected rows go to the error
report in S3 and, a batch's together, to the DLQ, each call with the latency) against
the same file clean.

Run alone: `python -m bench.modes` (`--quick`: fewer runs).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from botocore.awsrequest import AWSResponse

from bench import model
from bench.data import generate
from bench.fakes import CannedDynamoDB, _CannedBody
from bench.invocation import CpuShare, stack_config
from bench.report import Row, goal, print_alone
from fanout.aws import Clients
from fanout.contract import Source
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import DEFAULT_CONFIG, Settings
from splitter.batch import Batcher
from writer.batch_write import CALL_S, ITEMS_CLIENT_CONFIG, Budget, WriterDynamoDB, encode_whole
from writer.load import ChunkResult, write_batch
from writer.statements import forget_orders

TABLE = "bench-items"
ROWS = 2_500  # 100 messages: one invocation's batch
LATENCIES_S = (0.0, 0.010)
SOURCE = Source("bench", "uploads/modes.csv", "etag")
KEYS = [name for name, _ in Spec.default().key_schema()]
REJECT_EVERY = 10
_NAME = re.compile(r"'([^']*)': \?")


class CannedTable(CannedDynamoDB):
    """CannedDynamoDB that also answers BatchExecuteStatement, BatchGetItem, PutItem and
    UpdateItem after the latency, as a table holding the keys in `present` would (an
    INSERT of a held key: DuplicateItem; an UPDATE of an absent one: ConditionalCheckFailed),
    and counts the statements DynamoDB would refuse and still charge for."""

    def __init__(self, *, present: bool, **kwargs: Any) -> None:
        super().__init__(ITEMS_CLIENT_CONFIG, customize=encode_whole, **kwargs)
        self.present_all = present
        self.written: set[tuple[str, ...]] = set()
        self.refused = 0
        self.read_keys = 0
        self.fake_cpu_s = 0.0
        for operation, answer in (("BatchExecuteStatement", self._statements),
                                  ("BatchGetItem", self._get), ("PutItem", self._row),
                                  ("UpdateItem", self._row)):
            self.client.meta.events.register(f"before-send.dynamodb.{operation}",
                                             self._answering(answer))

    def put_item(self, **params: Any) -> Any:
        return self.client.put_item(**params)

    def update_item(self, **params: Any) -> Any:
        return self.client.update_item(**params)

    def batch_execute_statement(self, **params: Any) -> Any:
        return self.client.batch_execute_statement(**params)

    def batch_get_item(self, **params: Any) -> Any:
        return self.client.batch_get_item(**params)

    def _answering(self, answer: Any) -> Any:
        def send(request: Any, **_: Any) -> AWSResponse:
            started = time.thread_time()
            with self._lock:
                self.calls += 1
                body = answer(json.loads(request.body) if request.body else {})
            self.fake_cpu_s += time.thread_time() - started
            if self.latency_s:
                time.sleep(self.latency_s)
            return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                                  "x-amzn-RequestId": "bench"},
                               _CannedBody(json.dumps(body).encode()))
        return send

    def _held(self, key: tuple[str, ...]) -> bool:
        return self.present_all or key in self.written

    def _statements(self, request: dict[str, Any]) -> dict[str, Any]:
        answers: list[dict[str, Any]] = []
        for statement in request["Statements"]:
            text, values = statement["Statement"], statement["Parameters"]
            if text.startswith("INSERT"):
                item = dict(zip(_NAME.findall(text), values, strict=True))
                key = tuple(item[k]["S"] for k in KEYS)
                if self._held(key):
                    self.refused += 1
                    answers.append({"Error": {"Code": "DuplicateItem", "Message": "dup"}})
                    continue
            else:
                key = tuple(v["S"] for v in values[-len(KEYS):])
                if not self._held(key):
                    self.refused += 1
                    answers.append({"Error": {"Code": "ConditionalCheckFailed", "Message": "no"}})
                    continue
            self.written.add(key)
            answers.append({"TableName": TABLE})
        return {"Responses": answers}

    def _get(self, request: dict[str, Any]) -> dict[str, Any]:
        keys = request["RequestItems"][TABLE]["Keys"]
        self.read_keys += len(keys)
        return {"Responses": {TABLE: keys}, "UnprocessedKeys": {}}

    def _row(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}


class _Keep:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, body: str, size: int | None = None) -> None:
        self.bodies.append(body)

    def drain(self) -> int:
        return 0


class _Latent:
    """The DLQ and the error-report bucket: each call waits the latency and counts."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.send_calls = 0
        self.send_bytes = 0
        self.puts = 0
        self._lock = threading.Lock()

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        with self._lock:
            self.send_calls += 1
            self.send_bytes += sum(len(e["MessageBody"]) for e in params["Entries"])
        time.sleep(self.latency_s)
        return {"Successful": [{"Id": e["Id"]} for e in params["Entries"]], "Failed": []}

    def put_object(self, **_: Any) -> dict[str, Any]:
        with self._lock:
            self.puts += 1
        time.sleep(self.latency_s)
        return {}


def bodies_for(path: Path, mode: str, reject_every: int = 0) -> list[str]:
    """The splitter's messages for the file's rows, stamped with `mode`; with
    `reject_every`, every such row's partition key is emptied (the writer rejects it)."""
    header, *records = path.read_text().splitlines()
    if reject_every:
        records = ["," + r.split(",", 1)[1] if i % reject_every == reject_every - 1 else r
                   for i, r in enumerate(records)]
    sink = _Keep()
    batcher = Batcher(sink, "bench-modes", SOURCE, header.split(","), ",", 0, mode)
    batcher.add(list(range(2, len(records) + 2)), records)
    batcher.flush()
    return sink.bodies


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str
    present: bool = False  # the table holds every key before the job
    statements: bool = True  # the Lambda's client (False: one call a row, as before)
    reject_every: int = 0


@dataclass(frozen=True)
class Measured:
    rows_per_s: float
    seconds: float
    calls: int
    refused: int
    read_keys: int
    send_calls: int
    send_bytes: int
    puts: int
    cpu_s_per_row: float = 0.0


SCENARIOS = (
    Scenario("put", "put"),
    Scenario("delete", "delete", present=True),
    Scenario("insert (new keys)", "insert"),
    Scenario("update (keys in the table)", "update", present=True),
    Scenario("update (new keys)", "update"),
    Scenario("insert, one call a row (before)", "insert", statements=False),
    Scenario("update, one call a row (before)", "update", present=True, statements=False),
)
REJECTED = (Scenario("put, clean", "put"),
            Scenario(f"put, every {REJECT_EVERY}th row rejected", "put", reject_every=REJECT_EVERY))


def run_once(bodies: list[str], scenario: Scenario, latency_s: float) -> Measured:
    settings = replace(Settings(table_name=TABLE, ledger_table_name="bench-jobs"),
                       writer_in_flight=DEFAULT_CONFIG.writer_in_flight)
    side = _Latent(latency_s)
    if scenario.reject_every:
        settings = replace(settings, dlq_url="https://sqs.invalid/dlq", bucket="bench")
    records = [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b,
                "attributes": {"ApproximateReceiveCount": "1"}} for i, b in enumerate(bodies)]
    table = CannedTable(present=scenario.present, latency_s=latency_s)
    forget_orders()  # each run a job on a fresh writer (an update of new keys guesses wrong first)
    ddb: Any = WriterDynamoDB(table, table, items_table=TABLE) if scenario.statements else table
    runtime = Runtime(settings, Spec.default(), Clients(s3=side, sqs=side, dynamodb=ddb))
    started, cpu = time.perf_counter(), time.process_time()
    deadline = started + 300.0
    budget = Budget(lambda: deadline - time.perf_counter(), call_s=CALL_S)
    outcomes = write_batch(records, runtime, budget)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    failed = [o for o in outcomes.values() if not isinstance(o, ChunkResult)]
    if failed:
        raise RuntimeError(f"{scenario.name}: {len(failed)} message(s) failed: {failed[0]!r}")
    rows = sum(o.counts.rows for o in outcomes.values() if isinstance(o, ChunkResult))
    assert rows == ROWS, (scenario.name, rows)
    return Measured(rows / seconds, seconds, table.calls, table.refused, table.read_keys,
                    side.send_calls, side.send_bytes, side.puts,
                    (cpu_s - table.fake_cpu_s) / rows)


def best(bodies: list[str], scenario: Scenario, latency_s: float, runs: int, *,
         memory_mb: int | None) -> Measured:
    """The fastest of `runs` invocations, at `memory_mb`'s CPU share (None: a full core)."""
    share = model.lambda_cpu_share(memory_mb) if memory_mb else 1.0
    with CpuShare(share):
        return max((run_once(bodies, scenario, latency_s) for _ in range(runs)),
                   key=lambda m: m.rows_per_s)


def cost_above_floor(m: Measured, memory_mb: int, prices: model.Prices = model.PRICES) -> float:
    """Dollars per 1M rows beyond the one write unit a row (see the module docstring)."""
    per_million = 1e6 / ROWS  # invocations
    lambda_ = per_million * (m.seconds * memory_mb / 1024 * prices.lambda_gb_s
                             + prices.lambda_per_million_requests / 1e6)
    refused = per_million * m.refused * prices.ddb_wru_per_million / 1e6
    reads = per_million * m.read_keys * prices.ddb_rru_per_million / 1e6
    sqs = per_million * model.sqs_billed_requests(m.send_bytes // max(1, m.send_calls)) \
        * m.send_calls * prices.sqs_per_million / 1e6
    s3 = per_million * m.puts * prices.s3_put_per_thousand / 1e3
    return lambda_ + refused + reads + sqs + s3


MODE_GOALS = {"insert": 0.5, "update": 0.5, "delete": 0.9}  # rows/s vs put at 10 ms
CPU_GOAL = 3.0  # insert and update: CPU per row at most 3x put's
REJECTED_GOAL = 0.8


def add_rows(rows: list[Row], notes: list[str], quick: bool) -> None:
    runs = 2 if quick else 3
    memory_mb = int(stack_config().DEFAULT_WRITER_MEMORY_MB)
    with TemporaryDirectory(prefix="fanout-bench-modes-") as folder:
        path = generate(Path(folder), ROWS)
        bodies = {s: bodies_for(path, s.mode, s.reject_every) for s in SCENARIOS + REJECTED}
        rate = {(s, lat): best(bodies[s], s, lat, runs, memory_mb=memory_mb)
                for lat in LATENCIES_S for s in SCENARIOS}
        cpu = {s: best(bodies[s], s, 0.0, runs, memory_mb=None).cpu_s_per_row for s in SCENARIOS}
        rejected = {s: best(bodies[s], s, 0.010, runs, memory_mb=memory_mb) for s in REJECTED}
    put = SCENARIOS[0]
    for latency_s in LATENCIES_S:
        base = rate[(put, latency_s)]
        for s in SCENARIOS[1:]:
            m = rate[(s, latency_s)]
            ratio = m.rows_per_s / base.rows_per_s
            wanted = MODE_GOALS.get(s.mode) if latency_s and s.statements else None
            rows.append((
                f"writer rows/s per invocation, {s.name} vs put, {latency_s * 1000:.0f} ms per "
                f"call, {memory_mb} MB",
                f"{m.rows_per_s:,.0f} ({m.calls:,} calls)",
                f"put {base.rows_per_s:,.0f} ({base.calls:,} calls)", f"{ratio:.2f}",
                goal(ratio >= wanted, f"≥ {wanted}") if wanted else "—"))
    for s in SCENARIOS[1:]:
        ratio = cpu[s] / cpu[put]
        wanted = CPU_GOAL if s.mode in ("insert", "update") and s.statements else None
        rows.append((f"writer CPU per row, {s.name} vs put (a full core)",
                     f"{cpu[s] * 1e6:,.1f} µs", f"put {cpu[put] * 1e6:,.1f} µs", f"{ratio:.2f}",
                     goal(ratio <= wanted, f"≤ {wanted:.0f}") if wanted else "—"))
    put_cost = cost_above_floor(rate[(put, 0.010)], memory_mb)
    for s in SCENARIOS[1:]:
        m = rate[(s, 0.010)]
        c = cost_above_floor(m, memory_mb)
        rows.append((f"cost per 1M rows above the DynamoDB floor, {s.name} vs put",
                     f"${c:,.4f} ({c / model.floor_cost(1e6):.1%} of the floor; "
                     f"{m.refused * int(1e6 / ROWS):,} refused statements)",
                     f"put ${put_cost:,.4f}", f"{c / put_cost:.2f}", "—"))
    clean, dirty = (rejected[s] for s in REJECTED)
    ratio = dirty.rows_per_s / clean.rows_per_s
    rows.append((f"writer rows/s per invocation, 10% of rows rejected vs the same file clean, "
                 f"10 ms per call, {memory_mb} MB",
                 f"{dirty.rows_per_s:,.0f} ({dirty.send_calls} SendMessageBatch, "
                 f"{dirty.puts} S3 PUT)", f"clean {clean.rows_per_s:,.0f}", f"{ratio:.2f}",
                 goal(ratio >= REJECTED_GOAL, f"≥ {REJECTED_GOAL}")))
    c_dirty, c_clean = cost_above_floor(dirty, memory_mb), cost_above_floor(clean, memory_mb)
    rows.append(("cost per 1M rows above the DynamoDB floor, 10% of rows rejected vs clean",
                 f"${c_dirty:,.4f}", f"clean ${c_clean:,.4f}", f"{c_dirty / c_clean:.2f}", "—"))
    notes.append(
        f"Write modes: {ROWS:,} make-csv rows in {ROWS // 25} messages (one invocation) "
        "through writer.load.write_batch on the writer's client (WriterDynamoDB over "
        "ITEMS_CLIENT_CONFIG and encode_whole), each round trip a sleep of the latency, then "
        "the answer a table holding the scenario's keys gives; "
        f"{DEFAULT_CONFIG.writer_in_flight} calls in flight; best of {runs}; CPU capped at "
        f"{memory_mb} MB's share ({model.lambda_cpu_share(memory_mb):.2f} of a core, "
        "bench.invocation.CpuShare) for rows/s, a full core for CPU per row. insert and update: "
        "BatchExecuteStatement, 25 rows a call; an update of new keys tries UPDATE for the first "
        "messages (refused: absent), then INSERT first (writer/statements.py UpdateOrder). "
        "Refused statements are per 1M rows (x400 invocations). Cost: Lambda GB-s and "
        "requests at the 10 ms rate, refused statements' write units, read-back read units, "
        "DLQ SendMessageBatch requests, error-report PUTs; the floor is one write unit a row "
        f"(${model.floor_cost(1e6):.3f} per 1M rows).")


if __name__ == "__main__":
    print_alone(add_rows)
