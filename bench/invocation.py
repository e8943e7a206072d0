"""Writer rows/s per invocation, standing for Lambda.

One invocation is what the event source mapping hands the writer: a batch of
MEASURED_BATCH real rows messages (the splitter's bodies for the bench file; the stack's
batches are larger, which only spreads the ledger's fixed cost thinner) through
`writer.load.write_batch` (decode, map, BatchWriteItem with the pool), on a real botocore
client whose round trip is `bench.fakes.CannedDynamoDB`: a sleep of the
injected latency, and half the items back as UnprocessedItems for 5% of the calls. The
ledger's two writes per invocation are added as their modelled latency (they are one
round trip each whatever the batch).

Lambda's CPU share is applied with `CpuShare`: Lambda gives a function memory/1,769 of a
vCPU through a CFS bandwidth quota, so a function that waits on the network is not slowed
but one that computes runs at most its share of each period. `CpuShare` does the same to
this process: a thread keeps a token bucket of CPU time (refilled at `share` CPU-seconds
per second, holding at most one 20 ms period's quota), reads the process's CPU time
(`time.process_time`, all threads) every millisecond, and when the bucket is empty holds
the GIL while it sleeps the debt off (a libc `usleep` through `ctypes.PyDLL`, which does
not release the GIL), so no Python thread runs: the threads waiting on the injected
latency keep waiting in wall-clock time, as a throttled cgroup's sockets do. It was chosen
over a cgroup (needs root, and writes to the host's cgroup tree) and a duty cycle of
SIGSTOP/SIGCONT (it would stop the process for 1 - share of every period even while it
only waits, which a quota does not). The cap holds only if this process gets a full CPU
when it runs: on a busy machine the figures are lower than Lambda's, never higher.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from bench import model
from bench.fakes import CannedDynamoDB
from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import DEFAULT_CONFIG, Settings
from writer.batch_write import CALL_S, ITEMS_CLIENT_CONFIG, Budget, encode_whole
from writer.load import ChunkResult, write_batch

TABLE = "bench-items"
LATENCIES_S = (0.010, 0.025)
UNPROCESSED_RATE = 0.05
MEMORY_MB = (256, 512, 1024, 1769)  # 256 and 1,024 asked for; 512 and 1,769 for the pick
SWEEP_IN_FLIGHT = (2, 4, 8, 16, 32)
GOAL_RATIO = 4.0  # concurrent vs sequential at 10 ms and 1,024 MB
MEASURED_BATCH = 100  # messages an invocation in the bench (2,500 rows)


class CpuShare:
    """Cap this process at `share` of one CPU (see the module docstring)."""

    def __init__(self, share: float, period_s: float = 0.020, tick_s: float = 0.001) -> None:
        self.share = share
        self.period_s = period_s
        self.tick_s = tick_s
        self.held_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CpuShare:
        if self.share < 1.0:
            self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        hold_gil_sleeping = ctypes.PyDLL(None).usleep
        quota = self.share * self.period_s
        tokens = quota
        wall, cpu = time.perf_counter(), time.process_time()
        while not self._stop.is_set():
            # One thread runs Python at a time (the GIL), so the process cannot spend
            # more CPU than wall-clock time: waking when the bucket could first be empty
            # is enough, and keeps the throttle's own CPU (charged to the quota) small.
            time.sleep(max(self.tick_s, tokens))
            now, used = time.perf_counter(), time.process_time()
            tokens = min(quota, tokens + self.share * (now - wall) - (used - cpu))
            wall, cpu = now, used
            if tokens < 0:
                pause = -tokens / self.share
                self.held_s += pause
                hold_gil_sleeping(int(pause * 1e6))


@dataclass(frozen=True)
class InvocationRate:
    memory_mb: int
    latency_s: float
    in_flight: int
    rows: int
    seconds: float  # wall clock of the invocation, ledger included (best of the runs)
    cpu_s: float  # CPU seconds of the process over that run
    calls: int
    unprocessed_calls: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_fraction(self) -> float:
        return self.cpu_s / self.seconds


def _records(bodies: list[str]) -> list[dict[str, Any]]:
    return [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": body,
             "attributes": {"ApproximateReceiveCount": "1"}} for i, body in enumerate(bodies)]


def invocation(bodies: list[str], *, memory_mb: int, latency_s: float, in_flight: int,
               runs: int = 3, ledger_s: float = 0.010, seed: int = 1) -> InvocationRate:
    """Best of `runs` invocations over `bodies` (one batch) at `memory_mb`'s CPU share."""
    settings = replace(Settings(table_name=TABLE, ledger_table_name="bench-jobs"),
                       writer_in_flight=in_flight)
    records = _records(bodies)
    best: InvocationRate | None = None
    with CpuShare(model.lambda_cpu_share(memory_mb)):
        for run in range(runs):
            ddb = CannedDynamoDB(ITEMS_CLIENT_CONFIG, latency_s=latency_s,
                                 unprocessed_rate=UNPROCESSED_RATE, seed=seed + run,
                                 customize=encode_whole)
            runtime = _runtime(settings, ddb)
            started, cpu = time.perf_counter(), time.process_time()
            deadline = started + 60.0
            budget = Budget(lambda: deadline - time.perf_counter(), call_s=CALL_S)  # noqa: B023
            outcomes = write_batch(records, runtime, budget)
            time.sleep(ledger_s)  # the ledger's two writes: waits, no CPU to speak of
            seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
            rows = _written(outcomes)
            rate = InvocationRate(memory_mb, latency_s, in_flight, rows, seconds, cpu_s,
                                  ddb.calls, ddb.unprocessed_calls)
            if best is None or rate.seconds < best.seconds:
                best = rate
    assert best is not None
    return best


def _runtime(settings: Settings, ddb: CannedDynamoDB) -> Any:
    from fanout.runtime import Runtime

    return Runtime(settings, Spec.default(), Clients(s3=None, sqs=None, dynamodb=ddb))


def _written(outcomes: dict[str, Any]) -> int:
    failed = [o for o in outcomes.values() if not isinstance(o, ChunkResult)]
    if failed:
        raise RuntimeError(f"{len(failed)} message(s) failed in the bench: {failed[0]!r}")
    return sum(o.written + o.superseded + len(o.rejections) for o in outcomes.values())


@dataclass
class InvocationBench:
    """Every figure the invocation bench measured, for the table and for the model."""

    pairs: dict[tuple[int, float], tuple[InvocationRate, InvocationRate]]  # seq, concurrent
    sweep: list[InvocationRate]
    in_flight: int  # the default it picked
    batch_messages: int
    cpu_s_per_row: float  # at one full CPU, from the 1,769 MB sequential run

    def concurrent(self, memory_mb: int, latency_s: float = LATENCIES_S[0]) -> InvocationRate:
        return self.pairs[(memory_mb, latency_s)][1]


def pick_in_flight(sweep: list[InvocationRate], tolerance: float = 0.05) -> int:
    """The fewest calls in flight within `tolerance` of the best rate: more threads and
    more calls at once for no more rows are only more to throttle."""
    best = max(r.rows_per_s for r in sweep)
    return min(r.in_flight for r in sweep if r.rows_per_s >= (1 - tolerance) * best)


def measure(bodies: list[str], quick: bool = False) -> InvocationBench:
    bodies = bodies[:MEASURED_BATCH]
    runs = 2 if quick else 3
    sweep = [invocation(bodies, memory_mb=1024, latency_s=LATENCIES_S[0], in_flight=n, runs=runs)
             for n in SWEEP_IN_FLIGHT]
    in_flight = pick_in_flight(sweep)
    pairs = {}
    for memory_mb in MEMORY_MB:
        for latency_s in LATENCIES_S:
            if latency_s != LATENCIES_S[0] and memory_mb not in (256, 1024):
                continue
            seq = invocation(bodies, memory_mb=memory_mb, latency_s=latency_s, in_flight=1,
                             runs=runs)
            conc = invocation(bodies, memory_mb=memory_mb, latency_s=latency_s,
                              in_flight=in_flight, runs=runs)
            pairs[(memory_mb, latency_s)] = (seq, conc)
    full = invocation(bodies, memory_mb=model.LAMBDA_MB_PER_VCPU, latency_s=0.0, in_flight=1,
                      runs=runs, ledger_s=0.0)
    return InvocationBench(pairs, sweep, in_flight, len(bodies), full.cpu_s / full.rows)


Row = tuple[str, str, str, str, str]


def table_rows(bench: InvocationBench) -> tuple[list[Row], list[str]]:
    """The bench's rows for `python -m bench` and its notes."""
    rows: list[Row] = []
    for (memory_mb, latency_s), (seq, conc) in sorted(bench.pairs.items(),
                                                      key=lambda kv: (kv[0][1], kv[0][0])):
        ratio = conc.rows_per_s / seq.rows_per_s
        target = latency_s == LATENCIES_S[0] and memory_mb == 1024
        rows.append((
            f"writer rows/s per invocation, {latency_s * 1000:.0f} ms per BatchWriteItem, "
            f"{memory_mb:,} MB ({model.lambda_cpu_share(memory_mb):.2f} vCPU): "
            f"{conc.in_flight} in flight",
            f"{conc.rows_per_s:,.0f} (CPU {conc.cpu_fraction:.2f} of a core)",
            f"sequential {seq.rows_per_s:,.0f}", f"{ratio:.2f}",
            (f"≥ {GOAL_RATIO:.0f} ({'met' if ratio >= GOAL_RATIO else 'MISSED'})" if target
             else "—"),
        ))
    sweep = ", ".join(f"{r.in_flight}: {r.rows_per_s:,.0f}" for r in bench.sweep)
    calls = sum(c.calls for _, c in bench.pairs.values())
    unprocessed = sum(c.unprocessed_calls for _, c in bench.pairs.values())
    notes = [
        f"Writer per invocation: {bench.batch_messages} real rows messages ("
        f"{bench.batch_messages * 25:,} rows; the stack's batches of {DEFAULT_CONFIG.batch_size:,} "
        f"only spread the ledger's 10 ms thinner) through writer.load.write_batch on a real "
        f"botocore client (ITEMS_CLIENT_CONFIG) whose round trip sleeps the latency; "
        f"{UNPROCESSED_RATE:.0%} of calls return half their items as UnprocessedItems "
        f"({unprocessed:,} of {calls:,} in the concurrent runs); +10 ms for the ledger's two "
        f"writes; best of 3. CPU capped with bench.invocation.CpuShare (a CFS-like quota: "
        f"memory/1,769 of a CPU, 20 ms periods, enforced by holding the GIL). Calls in flight "
        f"at 1,024 MB and 10 ms, rows/s: {sweep} → default {bench.in_flight} (the fewest "
        f"within 5% of the best). Writer CPU at a full core, ledger aside: "
        f"{bench.cpu_s_per_row * 1e6:.1f} µs per row."
    ]
    return rows, notes


def cost_per_million(rate: InvocationRate, batch_rows: int,
                     prices: model.Prices = model.PRICES) -> float:
    """The writer's Lambda dollars per 1M rows at the measured rate (GB-s + requests)."""
    invocations = math.ceil(1e6 / batch_rows)
    seconds = batch_rows / rate.rows_per_s
    return invocations * (seconds * rate.memory_mb / 1024 * prices.lambda_gb_s
                          + prices.lambda_per_million_requests / 1e6)


# --------------------------------------------------------------------------- the bench's rows

GOAL_CPU_RATIO = 1.5
GOAL_OVERHEAD_PCT = 1.0
GOAL_WRITERS_40K = 50
GOAL_LOAD_100M_S = 2_750


def writer_rows(bodies: list[str], splitter_cpu_rows_s: float, bytes_per_row: float,
                runs: int, quick: bool = False) -> tuple[list[Row], list[str]]:
    """Everything `python -m bench` prints for the writer (issue 14): CPU per row with the
    request sent, rows/s per invocation, and the load model's defaults and figures."""
    from bench.cpu import writer_request_cpu

    rows: list[Row] = []
    # 50,000 rows are plenty for a per-row CPU figure at botocore's pace (~30-70 µs a row).
    writer, naive = writer_request_cpu(bodies[:2_000], runs)
    ratio = writer.per_s / naive.per_s
    rows.append((
        "writer CPU rows/s, each BatchWriteItem sent through botocore (round trip canned)",
        f"{writer.per_s:,.0f} ({1e6 / writer.per_s:.1f} µs/row)",
        f"naive on boto3's default client {naive.per_s:,.0f} ({1e6 / naive.per_s:.1f} µs/row)",
        f"{ratio:.2f}", f"≥ {GOAL_CPU_RATIO} ({'met' if ratio >= GOAL_CPU_RATIO else 'MISSED'})",
    ))
    bench = measure(bodies, quick)
    bench_rows, notes = table_rows(bench)
    rows += bench_rows
    measured = model.WriterMeasurement(
        {mb: bench.concurrent(mb).rows_per_s for mb in MEMORY_MB}, bench.in_flight,
        bench.batch_messages * 25)
    for mb in MEMORY_MB:
        rate = measured.rows_per_s[mb]
        rows.append((
            f"writer Lambda $ per 1M rows at {mb:,} MB (10 ms, {bench.in_flight} in flight)",
            f"${model.writer_cost_per_million(mb, rate, measured.batch_rows):.5f}",
            f"{rate:,.0f} rows/s per invocation", "—",
            "lowest: the writer's memory" if mb == model.cheapest_memory(measured) else "—",
        ))
    message_bytes = sum(len(b.encode()) for b in bodies) / len(bodies)
    splitter_rows_s = model.splitter_rows_per_s(splitter_cpu_rows_s, bytes_per_row)
    derived = model.writer_defaults(
        measured, batch_messages=DEFAULT_CONFIG.batch_size, message_bytes=message_bytes,
        bytes_per_row=bytes_per_row, splitter_rows_s=splitter_rows_s)
    bill = derived.cost
    rows.append((
        "model: cost above the DynamoDB write floor per 1M rows (stack defaults derived here)",
        f"${bill.overhead:.5f} ({bill.overhead_pct:.2f} %)", f"floor ${bill.floor:.4f}",
        f"{bill.overhead / bill.floor:.4f}",
        f"≤ {GOAL_OVERHEAD_PCT:.0f} % ({'met' if bill.overhead_pct <= GOAL_OVERHEAD_PCT else 'MISSED'})",
    ))
    rows.append((
        "model: concurrent writers for 40,000 rows/s (MaximumConcurrency)",
        f"{derived.writers_for_40k}", f"{derived.rows_per_writer_s:,} rows/s per writer", "—",
        f"≤ {GOAL_WRITERS_40K} ({'met' if derived.writers_for_40k <= GOAL_WRITERS_40K else 'MISSED'})",
    ))
    load = derived.load_100m_40k
    rows.append((
        "model: 100M rows into a 40,000 WCU/s table",
        f"{load.seconds:,.0f} s (bottleneck: {load.bottleneck})", "the table alone 2,500 s",
        f"{2_500 / load.seconds:.3f} of the table",
        f"≤ {GOAL_LOAD_100M_S:,} s ({'met' if load.seconds <= GOAL_LOAD_100M_S else 'MISSED'})",
    ))
    parts = ", ".join(f"{name} ${value:.5f}" for name, value in bill.parts.items())
    notes.append(
        f"Writer defaults the model derives from this run (bench/model.py writer_defaults): "
        f"memory {derived.memory_mb} MB (lowest $ per 1M rows of {', '.join(map(str, MEMORY_MB))}), "
        f"rows_per_writer_s {derived.rows_per_writer_s:,} (the measured rate rounded down to "
        f"100), writer_in_flight {derived.in_flight}; the stack deploys "
        f"{_stack_defaults()}. Cost per 1M rows: {parts}; batches of "
        f"{DEFAULT_CONFIG.batch_size} messages (the stack's BatchSize, filled under load), "
        f"{message_bytes:,.0f} B per message, SQS 10 messages a send, receive and delete, "
        f"2 ledger writes an invocation, splitter {splitter_rows_s:,.0f} rows/s at "
        f"{model.SplitterAssumptions().memory_mb:,} MB; "
        f"not priced: CloudWatch Logs, X-Ray, the ESM's empty receives while idle. Load: ESM "
        f"from 5 batches +300/min (docs/costs.md), 1 WRU per row, the table held at 40,000 WCU/s.")
    return rows, notes


def stack_config() -> Any:
    """infra's fanout_stack.config (the stack's defaults), importable from the bench."""
    import importlib
    import sys
    from pathlib import Path

    infra = str(Path(__file__).resolve().parents[1] / "infra")
    if infra not in sys.path:
        sys.path.insert(0, infra)
    return importlib.import_module("fanout_stack.config")


def _stack_defaults() -> str:
    config = stack_config()
    return (f"{config.DEFAULT_WRITER_MEMORY_MB} MB, "
            f"rows_per_writer_s {config.DEFAULT_ROWS_PER_WRITER_S:,}, "
            f"writer_in_flight {DEFAULT_CONFIG.writer_in_flight}")
