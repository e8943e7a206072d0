"""The cost and time model: pure functions, no I/O, tested in tests/unit/test_bench_model.py.

Prices and limits are the ones docs/costs.md lists (us-east-1 list prices); every
other number is an argument with a stated default, so the assumptions are visible at the
call site and in the bench's notes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

KB = 1024
SQS_BILLING_CHUNK = 64 * KB
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one full vCPU at 1,769 MB, proportionally less below
ROWS_PER_BATCH_WRITE = 25


@dataclass(frozen=True)
class Prices:
    ddb_wru_per_million: float = 0.625  # on-demand write request units
    ddb_rru_per_million: float = 0.125  # on-demand read request units (assumed)
    sqs_per_million: float = 0.40  # standard queue, per 64 KiB chunk of payload
    s3_get_per_thousand: float = 0.0004  # GET and HEAD
    s3_put_per_thousand: float = 0.005  # PUT, LIST
    lambda_gb_s: float = 0.0000133334  # arm64
    lambda_per_million_requests: float = 0.20
    sfn_per_thousand_transitions: float = 0.025  # Standard workflows


PRICES = Prices()


# --------------------------------------------------------------------------- billing units

def write_units(item_bytes: int) -> int:
    """DynamoDB write request units for one item write: 1 per KB, rounded up, at least 1."""
    return max(1, math.ceil(item_bytes / KB))


def read_units(total_bytes: int, *, consistent: bool = True) -> float:
    """Read request units for one read of `total_bytes`: 1 per 4 KB strongly consistent
    (half for eventually consistent), at least one unit's worth."""
    units = max(1, math.ceil(total_bytes / (4 * KB)))
    return float(units) if consistent else units / 2


def sqs_billed_requests(payload_bytes: int) -> int:
    """SQS bills each 64 KiB chunk of a request's payload as one request (at least 1)."""
    return max(1, math.ceil(payload_bytes / SQS_BILLING_CHUNK))


def lambda_cpu_share(memory_mb: int) -> float:
    """The fraction of one vCPU a function of `memory_mb` gets (capped at 1: the code is
    single-threaded where it computes)."""
    return min(1.0, memory_mb / LAMBDA_MB_PER_VCPU)


# --------------------------------------------------------------------------- per-run costs

@dataclass(frozen=True)
class Usage:
    """Billable units of one run (or scaled to 1M rows). All counts are floats so they scale."""

    rows: float
    item_wru: float  # write units of the data items (the floor)
    ledger_wru: float = 0.0  # write units of the jobs ledger
    ddb_rru: float = 0.0
    sqs_requests: float = 0.0  # billed (64 KiB chunks)
    s3_get: float = 0.0  # GET + HEAD
    s3_put: float = 0.0  # PUT + LIST
    lambda_requests: float = 0.0
    lambda_gb_s: float = 0.0

    def scaled(self, rows: float) -> Usage:
        factor = rows / self.rows if self.rows else 0.0
        return Usage(rows, *(getattr(self, name) * factor for name in _USAGE_FIELDS[1:]))


_USAGE_FIELDS = ("rows", "item_wru", "ledger_wru", "ddb_rru", "sqs_requests", "s3_get",
                 "s3_put", "lambda_requests", "lambda_gb_s")


@dataclass(frozen=True)
class Cost:
    floor: float  # DynamoDB writes of the data items
    ledger: float
    reads: float
    sqs: float
    s3: float
    lambda_: float
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.floor + self.overhead

    @property
    def overhead(self) -> float:
        return self.ledger + self.reads + self.sqs + self.s3 + self.lambda_

    @property
    def overhead_pct(self) -> float:
        """Everything but the data writes, as a percentage of the data writes."""
        return 100.0 * self.overhead / self.floor if self.floor else math.inf


def cost(usage: Usage, prices: Prices = PRICES) -> Cost:
    floor = usage.item_wru * prices.ddb_wru_per_million / 1e6
    ledger = usage.ledger_wru * prices.ddb_wru_per_million / 1e6
    reads = usage.ddb_rru * prices.ddb_rru_per_million / 1e6
    sqs = usage.sqs_requests * prices.sqs_per_million / 1e6
    s3 = (usage.s3_get * prices.s3_get_per_thousand + usage.s3_put * prices.s3_put_per_thousand) / 1e3
    lambda_ = (usage.lambda_requests * prices.lambda_per_million_requests / 1e6
               + usage.lambda_gb_s * prices.lambda_gb_s)
    return Cost(floor, ledger, reads, sqs, s3, lambda_, {
        "dynamodb items": floor, "dynamodb ledger": ledger + reads, "sqs": sqs, "s3": s3,
        "lambda": lambda_,
    })


def floor_cost(rows: float, wru_per_row: float = 1.0, prices: Prices = PRICES) -> float:
    """The DynamoDB write floor: what the data writes alone cost."""
    return rows * wru_per_row * prices.ddb_wru_per_million / 1e6


# --------------------------------------------------------------------------- Lambda durations

@dataclass(frozen=True)
class WriterAssumptions:
    batch_write_latency_s: float = 0.010  # one BatchWriteItem of 25 items in AWS
    ledger_write_latency_s: float = 0.005  # one small PutItem/UpdateItem
    ledger_writes_per_invocation: int = 2  # see fanout/ledger/
    memory_mb: int = 512
    invoke_overhead_s: float = 0.002  # handler wrappers, batch processor, ESM hand-off


def writer_invocation_s(messages: float, rows_per_message: float, cpu_s_per_row: float,
                        a: WriterAssumptions = WriterAssumptions()) -> float:
    """Duration of one writer invocation: its BatchWriteItem calls (one per message of up
    to 25 rows; sequential), the CPU to map the rows (scaled to the function's vCPU share)
    and the ledger writes."""
    rows = messages * rows_per_message
    calls = messages * math.ceil(rows_per_message / ROWS_PER_BATCH_WRITE)
    cpu = rows * cpu_s_per_row / lambda_cpu_share(a.memory_mb)
    return (a.invoke_overhead_s + calls * a.batch_write_latency_s + cpu
            + a.ledger_writes_per_invocation * a.ledger_write_latency_s)


def writer_rows_per_s(messages: float, rows_per_message: float, cpu_s_per_row: float,
                      a: WriterAssumptions = WriterAssumptions()) -> float:
    """Rows per second one concurrent writer invocation sustains."""
    return messages * rows_per_message / writer_invocation_s(messages, rows_per_message,
                                                             cpu_s_per_row, a)


@dataclass(frozen=True)
class SplitterAssumptions:
    memory_mb: int = 512  # the stack's (infra/fanout_stack/functions.py SPLITTER_MEMORY_MB; a test checks)
    s3_read_mb_s: float = 90.0  # one ranged GET stream; reads are not overlapped with parsing
    object_reads: int = 2  # the check pass reads the object once before the split reads it
    send_latency_s: float = 0.015  # one SendMessageBatch in AWS
    send_workers: int = 8  # splitter.enqueue.Enqueuer default
    timeout_s: float = 900.0


def splitter_rows_per_s(cpu_rows_per_s: float, bytes_per_row: float, rows_per_message: float = 25,
                        a: SplitterAssumptions = SplitterAssumptions()) -> float:
    """The splitter's rate in Lambda: read and parse in series (ranges are read by the
    same thread that parses them), sending overlapped on the thread pool. `cpu_rows_per_s`
    is the measured rate of both passes (check and split); the object is read twice."""
    cpu = cpu_rows_per_s * lambda_cpu_share(a.memory_mb)
    read = a.s3_read_mb_s * 1e6 / (bytes_per_row * a.object_reads)
    serial = 1.0 / (1.0 / cpu + 1.0 / read)
    send = a.send_workers / a.send_latency_s * 10 * rows_per_message
    return min(serial, send)


def splitter_gb_s(rows: float, rate: float, a: SplitterAssumptions = SplitterAssumptions()) -> float:
    return rows / rate * a.memory_mb / 1024


# --------------------------------------------------------------------------- load model

def esm_concurrency(t_s: float, cap: int = 1000, start: int = 5, per_minute: int = 300) -> float:
    """Concurrent batches an SQS event source mapping runs `t_s` seconds after the queue
    fills: starts at 5, adds up to 300 a minute, at most 1,000 (or MaximumConcurrency)."""
    return float(min(cap, 1000, start + per_minute * max(0.0, t_s) / 60.0))


@dataclass(frozen=True)
class LoadResult:
    rows: float
    seconds: float  # time until the last row is written (inf if it never is)
    finished: bool
    rows_written: float
    rows_split: float
    splitter_seconds: float
    splitter_finished: bool
    bottleneck: str  # "table", "writers" or "splitter": the limit that held longest
    limits: dict[str, float] = field(default_factory=dict)  # seconds each limit was binding


def simulate_load(rows: float, *, table_wru_s: float, wru_per_row: float = 1.0,
                  writer_rows_s: float, max_concurrency: int = 1000,
                  splitter_rows_s: float, splitter_timeout_s: float = 900.0,
                  dt: float = 1.0, max_s: float = 30 * 86400.0) -> LoadResult:
    """Time to load `rows` through splitter -> queue -> writers -> table, second by second.

    The splitter produces at `splitter_rows_s` until it has split everything or its
    timeout ends it (the splitter as written has no checkpoint to resume from, so rows
    past the timeout are never split); the writers drain the queue at
    min(ESM concurrency x `writer_rows_s`, table limit / `wru_per_row`). The ESM scales
    from the moment the first messages arrive.
    """
    table_rows_s = table_wru_s / wru_per_row
    split = written = 0.0
    t = 0.0
    limits = {"table": 0.0, "writers": 0.0, "splitter": 0.0}
    splitter_s = math.inf
    while written < rows and t < max_s:
        if split < rows and t < splitter_timeout_s:
            step = min(rows - split, splitter_rows_s * min(dt, splitter_timeout_s - t))
            split += step
            if split >= rows:
                splitter_s = t + step / splitter_rows_s
        backlog = split - written
        writers = esm_concurrency(t, max_concurrency) * writer_rows_s * dt
        table = table_rows_s * dt
        step = min(backlog, writers, table)
        if step <= 0 and split < rows and t >= splitter_timeout_s:
            break  # the splitter was stopped and the queue is empty: nothing more comes
        if step == backlog and backlog < min(writers, table):
            limits["splitter"] += dt
        elif writers <= table:
            limits["writers"] += dt
        else:
            limits["table"] += dt
        written += step
        t += dt
        if written >= rows and step < min(writers, table):
            # the last step needed only part of dt at the writers' rate
            t -= dt * (1.0 - step / min(writers, table))
    finished = written >= rows
    bottleneck = max(limits, key=lambda k: limits[k])
    return LoadResult(
        rows=rows, seconds=t if finished else math.inf, finished=finished,
        rows_written=min(written, rows), rows_split=split,
        splitter_seconds=splitter_s if split >= rows else math.inf,
        splitter_finished=split >= rows, bottleneck=bottleneck, limits=limits,
    )


@dataclass(frozen=True)
class SingleLambdaResult:
    rows_in_timeout: float
    seconds_needed: float
    finished: bool
    invocations_needed: int


def single_streaming_lambda(rows: float, writes_per_s: float = 17_000.0,
                            timeout_s: float = 900.0, table_wru_s: float = math.inf,
                            wru_per_row: float = 1.0) -> SingleLambdaResult:
    """Seed design 1: one Lambda streams the file and writes as it goes, until its timeout."""
    rate = min(writes_per_s, table_wru_s / wru_per_row)
    needed = rows / rate
    return SingleLambdaResult(
        rows_in_timeout=min(rows, rate * timeout_s), seconds_needed=needed,
        finished=needed <= timeout_s, invocations_needed=math.ceil(needed / timeout_s),
    )


@dataclass(frozen=True)
class StepFunctionsResult:
    children: int
    transitions: int
    transitions_cost: float
    floor: float
    seconds: float

    @property
    def overhead_pct(self) -> float:
        return 100.0 * self.transitions_cost / self.floor if self.floor else math.inf


def step_functions_distributed_map(rows: float, rows_per_child: int = 25,
                                   transitions_per_child: int = 4, *,
                                   inserts_per_s: float = 80_000.0,
                                   table_wru_s: float = math.inf, wru_per_row: float = 1.0,
                                   parent_transitions: int = 10,
                                   prices: Prices = PRICES) -> StepFunctionsResult:
    """Seed design 2: a Distributed Map, one child execution per `rows_per_child` rows.

    Billed transitions: one per child execution plus each child's own, plus a few for the
    parent. Time: ddbimport's published insert rate, capped by the table's write limit.
    """
    children = math.ceil(rows / rows_per_child)
    transitions = children * (1 + transitions_per_child) + parent_transitions
    rate = min(inserts_per_s, table_wru_s / wru_per_row)
    return StepFunctionsResult(
        children=children, transitions=transitions,
        transitions_cost=transitions * prices.sfn_per_thousand_transitions / 1e3,
        floor=floor_cost(rows, wru_per_row, prices), seconds=rows / rate,
    )


# --------------------------------------------------------------------------- formatting

def per_million(counts: Mapping[str, float], rows: float) -> dict[str, float]:
    """Counts scaled to 1M rows."""
    return {name: value * 1e6 / rows for name, value in counts.items()} if rows else {}


def human_seconds(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- the writer's defaults
#
# What the stack deploys for the writer (infra/fanout_stack/config.py, fanout/settings.py)
# is derived here from what bench/invocation.py measured; tests/unit/test_bench_model.py
# checks that the stack's defaults are these functions of the recorded measurement.

MIN_MAX_CONCURRENCY, MAX_MAX_CONCURRENCY = 2, 1000  # ScalingConfig.MaximumConcurrency


@dataclass(frozen=True)
class WriterMeasurement:
    """Writer rows/s per invocation (one ESM batch, default calls in flight) at each
    memory size's CPU share, with `latency_s` per BatchWriteItem."""

    rows_per_s: Mapping[int, float]  # memory MB -> rows/s
    in_flight: int
    batch_rows: int
    latency_s: float = 0.010


def writer_cost_per_million(memory_mb: int, rows_per_s: float, batch_rows: int,
                            prices: Prices = PRICES) -> float:
    """The writer's Lambda dollars per 1M rows: GB-s at the measured rate, and requests."""
    invocations = 1e6 / batch_rows
    return invocations * (batch_rows / rows_per_s * memory_mb / 1024 * prices.lambda_gb_s
                          + prices.lambda_per_million_requests / 1e6)


def cheapest_memory(m: WriterMeasurement, prices: Prices = PRICES) -> int:
    """The measured memory size with the lowest cost per 1M rows (ties: the faster one)."""
    return min(m.rows_per_s, key=lambda mb: (round(writer_cost_per_million(
        mb, m.rows_per_s[mb], m.batch_rows, prices), 7), -m.rows_per_s[mb]))


def max_concurrency(write_budget: float, rows_per_writer_s: float, wru_per_row: float = 1.0) -> int:
    """MaximumConcurrency for a write budget (WCU/s): enough writers to reach it, no more
    (the backlog waits in SQS), clamped to what the event source mapping accepts."""
    if write_budget <= 0 or rows_per_writer_s <= 0:
        raise ValueError("write_budget and rows_per_writer_s must be positive")
    wanted = math.ceil(write_budget / wru_per_row / rows_per_writer_s)
    return max(MIN_MAX_CONCURRENCY, min(MAX_MAX_CONCURRENCY, wanted))


@dataclass(frozen=True)
class PipelineAssumptions:
    """Request counts per message and per invocation that are the design's, not measured."""

    rows_per_message: int = 25  # fanout.settings.ROWS_PER_MESSAGE
    send_batch: int = 10  # SendMessageBatch entries (the splitter's Enqueuer)
    receive_batch: int = 10  # the ESM's pollers take up to 10 messages a ReceiveMessage
    delete_batch: int = 10  # and delete what succeeded 10 a DeleteMessageBatch
    ledger_writes_per_invocation: int = 2  # fanout/ledger/: a batch record + a counter
    range_bytes: int = 8 * 1024 * 1024  # the splitter's ranged GETs
    object_reads: int = 2  # the check pass, then the split


def million_rows_usage(*, batch_messages: int, message_bytes: float, bytes_per_row: float,
                       writer_rows_s: float, writer_memory_mb: int, splitter_rows_s: float,
                       a: PipelineAssumptions = PipelineAssumptions(),
                       splitter: SplitterAssumptions = SplitterAssumptions()) -> Usage:
    """Billable units of 1M rows of at most 1 KB through the stack."""
    rows = 1e6
    messages = rows / a.rows_per_message
    invocations = messages / batch_messages
    send_requests = messages / a.send_batch * sqs_billed_requests(int(a.send_batch * message_bytes))
    receives = messages / a.receive_batch * sqs_billed_requests(int(a.receive_batch * message_bytes))
    deletes = messages / a.delete_batch
    writer_gb_s = invocations * (batch_messages * a.rows_per_message / writer_rows_s) \
        * writer_memory_mb / 1024
    gets = math.ceil(rows * bytes_per_row / a.range_bytes) * a.object_reads + 1  # + a HEAD
    return Usage(rows=rows, item_wru=rows, ledger_wru=invocations * a.ledger_writes_per_invocation,
                 sqs_requests=send_requests + receives + deletes, s3_get=gets,
                 lambda_requests=invocations + 1,
                 lambda_gb_s=writer_gb_s + splitter_gb_s(rows, splitter_rows_s, splitter))


@dataclass(frozen=True)
class WriterDefaults:
    """What the stack deploys for the writer, and the three figures it is judged by."""

    memory_mb: int
    rows_per_writer_s: int  # rounded down to 100 rows/s: a conservative MaximumConcurrency
    in_flight: int
    writers_for_40k: int
    cost: Cost  # per 1M rows
    load_100m_40k: LoadResult


def writer_defaults(m: WriterMeasurement, *, batch_messages: int, message_bytes: float,
                    bytes_per_row: float, splitter_rows_s: float, table_wru_s: float = 40_000,
                    load_rows: float = 100e6, prices: Prices = PRICES) -> WriterDefaults:
    """The writer's deploy defaults and their figures, from the measurement."""
    memory = cheapest_memory(m, prices)
    rate = int(m.rows_per_s[memory] // 100 * 100)
    writers = max_concurrency(table_wru_s, rate)
    usage = million_rows_usage(batch_messages=batch_messages, message_bytes=message_bytes,
                               bytes_per_row=bytes_per_row, writer_rows_s=rate,
                               writer_memory_mb=memory, splitter_rows_s=splitter_rows_s)
    # The splitter checkpoints and continues past its 15 minutes, so no timeout applies.
    load = simulate_load(load_rows, table_wru_s=table_wru_s, writer_rows_s=rate,
                         max_concurrency=writers, splitter_rows_s=splitter_rows_s,
                         splitter_timeout_s=math.inf)
    return WriterDefaults(memory, rate, m.in_flight, writers, cost(usage, prices), load)


# The run the stack's writer defaults come from (`python -m bench`, see the README's bench
# section for its date and machine): rows/s per invocation at 10 ms per BatchWriteItem.
RECORDED_WRITER = WriterMeasurement({256: 2_331, 512: 5_774, 1024: 8_466, 1769: 9_163},
                                    in_flight=16, batch_rows=2_500)
# The splitter's rate in Lambda: splitter_rows_per_s of the run's measured 976,892 rows/s of
# CPU. At the stack's 512 MB (0.29 vCPU) reading and parsing give 158,900 rows/s, so its
# 8 SendMessageBatch calls in flight (133,333 rows/s at 15 ms a call) set the rate, as at
# 1,769 MB.
RECORDED_PIPELINE = {"message_bytes": 3_621.0, "bytes_per_row": 124.0,
                     "splitter_rows_s": 133_333.0}
