"""`python -m bench [--quick]`: measure, model, print one markdown table and short notes."""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import emulators, ledger_scale, model, replayer_scale
from bench.cpu import check_cpu, enqueue_rate, message_bodies, splitter_cpu, writer_cpu
from bench.data import generate, quoted_variant, repeat_to_size
from bench.invocation import writer_rows
from bench.memory import measure
from bench.pipeline import IngestRun, plain_batch_write, run_ingest
from bench.report import goal, table
from fanout.settings import DEFAULT_CONFIG

MB = 1000 * 1000
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    cpu_rows: int
    cpu_runs: int
    ingest_rows: int
    memory_small: int
    memory_mid: int
    memory_large: int
    memory_mid_label: str
    memory_large_label: str


FULL = Sizes(cpu_rows=200_000, cpu_runs=7, ingest_rows=100_000, memory_small=10 * MB,
             memory_mid=100 * MB, memory_large=1000 * MB, memory_mid_label="100 MB",
             memory_large_label="1 GB")
QUICK = Sizes(cpu_rows=50_000, cpu_runs=5, ingest_rows=20_000, memory_small=10 * MB,
              memory_mid=50 * MB, memory_large=200 * MB, memory_mid_label="50 MB",
              memory_large_label="200 MB")

# The load model's assumptions (printed in the notes).
LOAD_ROWS = 100_000_000
TABLE_LIMITS = (40_000, 4_000)
WRITER = model.WriterAssumptions()
SPLITTER = model.SplitterAssumptions()
# The stack's event source mapping BatchSize; with a 1 s batching window AWS fills it under load.
BATCH_MESSAGES = DEFAULT_CONFIG.batch_size
SFN_ROWS_PER_CHILD = (25, 1_000)
SFN_TRANSITIONS_PER_CHILD = 4


def quiet() -> None:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)


def step(text: str) -> float:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
    return time.monotonic()


# --------------------------------------------------------------------------- formatting

def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def usd(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


# --------------------------------------------------------------------------- the figures

Row = tuple[str, str, str, str, str]


@dataclass
class Section:
    """One figure's rows of the table and its notes below it."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: Section) -> Section:
        self.rows += other.rows
        self.notes += other.notes
        return self


@dataclass(frozen=True)
class SplitterFigures:
    """What the later figures take from the splitter's CPU run."""

    section: Section
    rows_per_s: float
    bytes_per_row: float


def splitter_figures(sizes: Sizes, workdir: Path, cpu_file: Path, data: bytes) -> SplitterFigures:
    """Splitter CPU on plain and on quoted rows, against csv.reader in the same process."""
    step("splitter CPU")
    split, csv_base = splitter_cpu(data, sizes.cpu_runs)
    ratio = split.per_s / csv_base.per_s
    section = Section()
    section.rows.append((
        "splitter CPU rows/s (check pass → ranges → records cut → 25-row CSV-text messages → "
        "Enqueuer)", n(split.per_s), f"csv.reader {n(csv_base.per_s)}", f"{ratio:.2f}",
        goal(ratio >= 0.5, "≥ 0.5 (CPU per row ≤ 2× csv.reader's)"),
    ))
    step("splitter CPU on a quoted file")
    quoted_file = workdir / f"quoted-{sizes.cpu_rows}.csv"
    quoted_variant(cpu_file, quoted_file)
    q_split, q_base = splitter_cpu(quoted_file.read_bytes(), sizes.cpu_runs)
    q_ratio = q_split.per_s / q_base.per_s
    section.rows.append((
        "splitter CPU rows/s, the same rows with a quoted last field (a newline in 1 row of 50)",
        n(q_split.per_s), f"csv.reader {n(q_base.per_s)}", f"{q_ratio:.2f}",
        goal(q_ratio >= 0.5, "≥ 0.5"),
    ))
    section.notes.append(
        f"Splitter CPU ({sizes.cpu_rows:,} make-csv rows, {len(data) / MB:.1f} MB, best of "
        f"{sizes.cpu_runs}, time.process_time): the splitter parses no field where a piece holds "
        f"no quote (each line is a record); the writers parse the CSV text. Where quotes "
        f"occur, both passes (the check before anything is sent, then the split) prove the "
        f"piece RFC 4180 with one regular-expression match and cut it by quote parity; a "
        f"piece that is not (a quote inside an unquoted field) is cut by csv.reader.")
    return SplitterFigures(section, split.per_s, len(data) / sizes.cpu_rows)


def check_figure(sizes: Sizes, cpu_file: Path) -> Section:
    """`fanout check` (the dry run) against csv.reader."""
    step("fanout check (dry run)")
    checked, check_base = check_cpu(cpu_file, sizes.cpu_runs)
    return Section([(
        "`fanout check` rows/s (dry run: the splitter's cut + the writer's mapping, nothing "
        "written)", n(checked.per_s), f"csv.reader {n(check_base.per_s)}",
        f"{checked.per_s / check_base.per_s:.2f}",
        goal(checked.per_s >= 100_000, "≥ 100,000 rows/s"),
    )])


def enqueue_figure(data: bytes) -> Section:
    """The splitter's enqueue rate with SQS latency injected, against a 40,000 writes/s table."""
    step("splitter enqueue with 15 ms per SendMessageBatch")
    enqueue_rows_s, latency_sqs = enqueue_rate(data)
    return Section([(
        "splitter enqueue rows/s, 15 ms injected per SendMessageBatch (wall clock)",
        n(enqueue_rows_s), "a 40,000 writes/s table", f"{enqueue_rows_s / 40_000:.2f}",
        goal(enqueue_rows_s >= 40_000, "≥ 1 (≥ 40,000 rows/s)"),
    )], [
        f"Enqueue: the same splitter path with an SQS stand-in that sleeps 15 ms per call "
        f"({latency_sqs.calls:,} SendMessageBatch calls, 8 in flight)."])


def writer_figures(sizes: Sizes, data: bytes, splitter: SplitterFigures,
                   quick: bool) -> tuple[Section, float]:
    """Writer CPU against a naive writer, then per invocation (CPU shares, injected
    latency) and the load model; also returns the writer's rows per CPU second."""
    step("writer CPU")
    bodies = message_bodies(data)
    writer, naive = writer_cpu(bodies, sizes.cpu_runs)
    section = Section([(
        "writer CPU rows/s (decode → RowMapper.to_item → dedupe → BatchWriteItem payload)",
        n(writer.per_s), f"json.loads + csv.reader + TypeSerializer {n(naive.per_s)}",
        f"{writer.per_s / naive.per_s:.2f}", goal(writer.per_s / naive.per_s >= 1.5, "≥ 1.5"),
    )])
    step("writer per invocation (CPU shares, injected latency) and the load model")
    per_invocation_rows, per_invocation_notes = writer_rows(
        bodies, splitter.rows_per_s, splitter.bytes_per_row, sizes.cpu_runs, quick)
    section.add(Section(per_invocation_rows, per_invocation_notes))
    return section, writer.per_s


def ingest_figures(sizes: Sizes, workdir: Path) -> tuple[Section, IngestRun]:
    """`fanout ingest` on moto against plain BatchWriteItem (run before and after it), and
    the same file through the emulators."""
    ingest_file = generate(workdir, sizes.ingest_rows)
    # The baseline runs before and after the ingest and is averaged, so that a change in
    # the machine's load during the run (other processes) shifts both sides alike.
    step("plain BatchWriteItem baseline (1/2)")
    before = plain_batch_write(ingest_file)
    t = step(f"fanout ingest of {sizes.ingest_rows:,} rows (moto in-process)")
    ingest = run_ingest(ingest_file, workdir / "ingest-out")
    step(f"ingest took {time.monotonic() - t:.0f} s; plain BatchWriteItem baseline (2/2)")
    after = plain_batch_write(ingest_file)
    plain_rate = (before.rows + after.rows) / (before.seconds + after.seconds)
    plain_cpu_rate = (before.rows + after.rows) / (before.cpu_seconds + after.cpu_seconds)
    ratio = ingest.rows_per_s / plain_rate
    section = Section([(
        f"`fanout ingest` rows/s ({sizes.ingest_rows:,} rows, moto in-process, wall clock)",
        n(ingest.rows_per_s), f"plain BatchWriteItem {n(plain_rate)}", f"{ratio:.2f}",
        goal(ratio >= 0.8, "≥ 0.8"),
    )])
    emulators.add_to(section.rows, section.notes, ingest_file, workdir, sizes.ingest_rows,
                     moto_ingest=ingest.rows_per_s, moto_plain=plain_rate)
    outcome = ingest.summary
    if outcome["status"] != "COMPLETE" or outcome["rows_written"] != ingest.rows:
        section.notes.append(
            f"**Ingest did not finish cleanly**: status {outcome['status']}, "
            f"{outcome['rows_written']:,} of {outcome['rows_read']:,} rows written, "
            f"{outcome['rows_rejected']:,} rejected, {outcome['messages_sent']:,} messages sent "
            f"(a correctness problem to investigate; the rate above is rows read / wall clock).")
    section.notes.append(
        f"Ingest: wall clock of `ingest()` (emulator start, resources, upload, split, write, "
        f"ledger, output export). Per CPU second (process_time, all threads; steadier when "
        f"the machine is shared): ingest {n(ingest.rows / ingest.cpu_seconds)} rows/CPU-s vs "
        f"plain BatchWriteItem {n(plain_cpu_rate)} ({ingest.rows / ingest.cpu_seconds / plain_cpu_rate:.2f}). "
        f"Plain BatchWriteItem runs before and after the ingest: {n(before.rows / before.seconds)} "
        f"and {n(after.rows / after.seconds)} rows/s.")
    return section, ingest


def memory_figures(sizes: Sizes, workdir: Path, quick: bool) -> Section:
    """The splitter's peak RSS at three input sizes (one child process each): flat."""
    t = step(f"splitter memory at 10 MB and {sizes.memory_large_label} (child processes)")
    block = generate(workdir, 100_000)
    runs = []
    for size in (sizes.memory_small, sizes.memory_mid, sizes.memory_large):
        path = workdir / f"mem-{size}.csv"
        repeat_to_size(block, size, path)
        runs.append(measure(path))
        path.unlink()
    small, mid, large = runs
    ratio = large.peak_mb / small.peak_mb
    section = Section([
        ("splitter peak RSS, 10 MB input (MB)", n(small.peak_mb, 1), "—", "—", "—"),
        (f"splitter peak RSS, {sizes.memory_large_label} input (MB)", n(large.peak_mb, 1),
         f"10 MB input {n(small.peak_mb, 1)}", f"{ratio:.2f}", goal(ratio <= 1.2, "flat (≤ 1.2)")),
        (f"splitter peak RSS, {sizes.memory_large_label} vs {sizes.memory_mid_label} input (MB)",
         n(large.peak_mb, 1), f"{sizes.memory_mid_label} input {n(mid.peak_mb, 1)}",
         f"{large.peak_mb / mid.peak_mb:.2f}", goal(large.peak_mb / mid.peak_mb <= 1.2,
                                                    "flat (≤ 1.2)")),
    ], [
        f"Memory: one child process per size, the real splitter read path over a file-backed "
        f"fake S3 (8 MiB ranges streamed in 1 MiB pieces; the check pass, then the split), "
        f"messages discarded; peak RSS is the child's VmHWM (Linux "
        f"carries ru_maxrss across exec from the parent). The interpreter with the imports "
        f"alone peaks at {n(small.imports_mb, 1)} MB. {sizes.memory_large_label}: "
        f"{large.rows:,} rows in {large.seconds:.0f} s ({n(large.rows / large.seconds)} rows/s)."
        + (" --quick measures 200 MB instead of 1 GB." if quick else "")])
    step(f"memory took {time.monotonic() - t:.0f} s")
    return section


@dataclass(frozen=True)
class CostFigures:
    """What the 100M-row model takes from the cost figures."""

    section: Section
    per_million: model.Usage  # the measured usage, scaled to 1M rows
    splitter_rate: float  # the splitter's modelled rows/s in Lambda


def cost_figures(ingest: IngestRun, writer_per_s: float, splitter: SplitterFigures) -> CostFigures:
    """Requests and dollars per 1M rows, counted from the ingest run's boto3 calls."""
    c = ingest.counts
    rows = ingest.rows
    writer_cpu_s_row = 1.0 / writer_per_s
    msgs_per_inv = c.messages_received / c.writer_invocations if c.writer_invocations else 0.0
    rows_per_msg = rows / int(ingest.summary["messages_sent"])
    writer_inv_s = model.writer_invocation_s(msgs_per_inv, rows_per_msg, writer_cpu_s_row, WRITER)
    splitter_rate = model.splitter_rows_per_s(splitter.rows_per_s, splitter.bytes_per_row,
                                              a=SPLITTER)
    splitter_invocations = max(1, c.splitter_invocations)
    usage = model.Usage(
        rows=rows, item_wru=c.item_wru, ledger_wru=c.ledger_wru, ddb_rru=c.rru,
        sqs_requests=c.sqs_billed, s3_get=c.s3_get, s3_put=c.s3_put,
        lambda_requests=c.writer_invocations + splitter_invocations,
        lambda_gb_s=(c.writer_invocations * writer_inv_s * WRITER.memory_mb / 1024
                     + model.splitter_gb_s(rows, splitter_rate, SPLITTER)),
    )
    per_m = usage.scaled(1e6)
    bill = model.cost(per_m)
    section = Section([
        ("AWS $ per 1M rows (all requests, measured counts)", usd(bill.total),
         f"DynamoDB write floor {usd(bill.floor)}", f"{bill.total / bill.floor:.3f}",
         goal(bill.overhead_pct <= 2.0, "≤ 1.02")),
        ("pipeline overhead above the DynamoDB write floor", f"{bill.overhead_pct:.2f} %",
         f"floor {usd(bill.floor)}", f"{bill.overhead / bill.floor:.4f}",
         goal(bill.overhead_pct <= 2.0, "≤ 2 %")),
    ])
    scale = 1e6 / rows
    for key, calls in sorted(c.calls.items(), key=lambda kv: -kv[1]):
        price = _op_cost(key, c) * scale
        unit = _unit_name(key)
        empty = c.empty_receives.get(key.rsplit("[", 1)[-1].rstrip("]"), 0) \
            if key.startswith("sqs.receive_message") else 0
        measured = f"{n(calls * scale)} calls"
        if unit:
            measured += f" · {n(c.units[key] * scale)} {unit}"
        if empty:
            measured += f" ({n(empty * scale)} empty)"
        section.rows.append((
            f"requests per 1M rows: {key}", measured, f"floor {usd(bill.floor)}",
            f"{price / bill.floor:.4f}" if price else "0", "—",
        ))
    section.rows.append((
        "requests per 1M rows: Lambda invocations (writer + splitter)",
        n(usage.lambda_requests * scale), "—",
        f"{bill.lambda_ / bill.floor:.4f} of floor (incl. GB-s)", "—",
    ))
    full_batches = _with_full_batches(usage, c, rows, writer_cpu_s_row, rows_per_msg,
                                      splitter_rate)
    full_bill = model.cost(full_batches.scaled(1e6))
    section.rows.append((
        f"pipeline overhead with the stack's batches ({BATCH_MESSAGES} messages an invocation)",
        f"{full_bill.overhead_pct:.2f} %", f"floor {usd(full_bill.floor)}",
        f"{full_bill.overhead / full_bill.floor:.4f}", goal(full_bill.overhead_pct <= 2.0, "≤ 2 %"),
    ))
    section.notes.append(
        f"Cost: counted from the boto3 calls of the ingest run above ({rows:,} rows, scaled to "
        f"1M), priced with docs/costs.md (DynamoDB reads at $0.125/M RRU, assumed). Ledger "
        f"{n(c.ledger_wru * scale)} WRU/1M rows; SQS {n(c.sqs_billed * scale)} billed "
        f"requests/1M rows (empty receives of the local 20 ms polling listed, not priced). "
        f"Locally the event source mapping got {msgs_per_inv:.1f} messages "
        f"per writer invocation (local BatchSize 10); with full batches of {BATCH_MESSAGES}, as AWS's ESM fills them "
        f"under load with a 1 s batching window, the overhead is "
        f"{full_bill.overhead_pct:.2f} % ({usd(full_bill.total)} per 1M rows). Lambda "
        f"duration is modelled, not measured on moto: writer {WRITER.memory_mb} MB, "
        f"{WRITER.batch_write_latency_s * 1000:.0f} ms per 25-item BatchWriteItem, "
        f"{WRITER.ledger_write_latency_s * 1000:.0f} ms per ledger write, measured writer CPU "
        f"scaled to the function's vCPU share; splitter {SPLITTER.memory_mb} MB at "
        f"{n(splitter_rate)} rows/s. Local-only calls not priced: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(c.local_only.items())) + ".")
    return CostFigures(section, per_m, splitter_rate)


def load_model_figures(writer_per_s: float, splitter: SplitterFigures,
                       cost: CostFigures) -> Section:
    """The 100M-row model: time to load against a single streaming Lambda, dollars
    against a Step Functions Distributed Map."""
    per_writer = model.writer_rows_per_s(BATCH_MESSAGES, 25, 1.0 / writer_per_s, WRITER)
    splitter_rate, bytes_per_row = cost.splitter_rate, splitter.bytes_per_row
    section = Section()
    for limit in TABLE_LIMITS:
        load = model.simulate_load(
            LOAD_ROWS, table_wru_s=limit, writer_rows_s=per_writer,
            max_concurrency=model.max_concurrency(limit, per_writer),
            splitter_rows_s=splitter_rate,
            splitter_timeout_s=SPLITTER.timeout_s)
        single = model.single_streaming_lambda(LOAD_ROWS, table_wru_s=limit)
        split_note = (f"splitter {model.human_seconds(load.splitter_seconds)}"
                      if load.splitter_finished else
                      f"splitter STOPPED at 15 min after {n(load.rows_split / 1e6, 1)}M rows")
        section.rows.append((
            f"100M rows at {limit:,} WRU/s: time to load",
            f"{model.human_seconds(load.seconds)} (bottleneck: {load.bottleneck}; {split_note})",
            f"single streaming Lambda: needs {model.human_seconds(single.seconds_needed)}, "
            f"stops at 15 min with {n(single.rows_in_timeout / 1e6, 1)}M rows",
            (f"{single.seconds_needed / load.seconds:.2f}× faster" if load.finished
             else "—"),
            "finish in one run" + (" (met)" if load.finished else " (MISSED)"),
        ))
    fanout_100m = model.cost(cost.per_million.scaled(LOAD_ROWS))
    for per_child in SFN_ROWS_PER_CHILD:
        sfn = model.step_functions_distributed_map(
            LOAD_ROWS, per_child, SFN_TRANSITIONS_PER_CHILD, table_wru_s=TABLE_LIMITS[0])
        sfn_total = sfn.floor + sfn.transitions_cost
        section.rows.append((
            f"100M rows: AWS $ (vs Step Functions Distributed Map, {per_child:,} rows/child)",
            f"{usd(fanout_100m.total)} (overhead {fanout_100m.overhead_pct:.1f} %)",
            f"{usd(sfn_total)} ({n(sfn.transitions / 1e6, 1)}M transitions = "
            f"{usd(sfn.transitions_cost)}, {sfn.overhead_pct:.0f} % of floor)",
            f"{fanout_100m.total / sfn_total:.2f}", "—",
        ))
    section.notes.append(
        f"100M-row model: writers at {n(per_writer)} rows/s per concurrent invocation "
        f"({BATCH_MESSAGES} messages × 25 rows, {WRITER.batch_write_latency_s * 1000:.0f} ms per "
        f"BatchWriteItem, measured CPU), ESM from 5 concurrent batches +300/min up to "
        f"MaximumConcurrency as the stack derives it from a write budget of the table limit "
        f"(ceil(limit / rows per writer), {', '.join(str(model.max_concurrency(t, per_writer)) for t in TABLE_LIMITS)} "
        f"for {', '.join(f'{t:,}' for t in TABLE_LIMITS)} WRU/s), table limit "
        f"held fixed (on-demand does not double instantly), 1 WRU per row; splitter "
        f"{n(splitter_rate)} rows/s in Lambda ({SPLITTER.memory_mb} MB = "
        f"{model.lambda_cpu_share(SPLITTER.memory_mb):.2f} vCPU, S3 "
        f"{SPLITTER.s3_read_mb_s:.0f} MB/s per stream, the object read {SPLITTER.object_reads}× "
        f"(check pass, then split), {bytes_per_row:.0f} B/row, measured CPU), "
        f"one invocation per file, 15-minute limit → at most "
        f"{n(splitter_rate * SPLITTER.timeout_s / 1e6, 0)}M rows "
        f"({splitter_rate * SPLITTER.timeout_s * bytes_per_row / 1e9:.0f} GB) per file. "
        f"Single streaming Lambda: ~17k writes/s (docs/costs.md). Step Functions: one transition "
        f"per child execution plus {SFN_TRANSITIONS_PER_CHILD} per child, $0.025/1,000; "
        f"ddbimport's ~80k inserts/s would load 100M rows in "
        f"{model.human_seconds(LOAD_ROWS / 80_000)} only on a table raised above 80k WRU/s.")
    return section


def scale_figures(quick: bool) -> Section:
    """The ledger of a 100M-row job, and the dlq-replayer over 100,000 DLQ rows."""
    section = Section()
    ledger_scale.add_rows(section.rows, section.notes, quick)
    replayer_scale.add_rows(section.rows, section.notes, quick)
    return section


# --------------------------------------------------------------------------- the run

def run(sizes: Sizes, workdir: Path, quick: bool) -> str:
    """Every figure, in the report's order: one table, then the notes."""
    started = time.monotonic()
    t = step(f"generating {sizes.cpu_rows:,} rows with make-csv")
    cpu_file = generate(workdir, sizes.cpu_rows)
    data = cpu_file.read_bytes()
    splitter = splitter_figures(sizes, workdir, cpu_file, data)
    report = Section().add(splitter.section)
    report.add(check_figure(sizes, cpu_file)).add(enqueue_figure(data))
    writer, writer_per_s = writer_figures(sizes, data, splitter, quick)
    report.add(writer)
    del data
    step(f"CPU benchmarks took {time.monotonic() - t:.0f} s")
    ingest_section, ingest = ingest_figures(sizes, workdir)
    report.add(ingest_section).add(memory_figures(sizes, workdir, quick))
    cost = cost_figures(ingest, writer_per_s, splitter)
    report.add(cost.section).add(load_model_figures(writer_per_s, splitter, cost))
    report.add(scale_figures(quick))
    header = (f"fanout bench{' --quick' if quick else ''} — {datetime.now(UTC):%Y-%m-%d %H:%M} "
              f"UTC, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{time.monotonic() - started:.0f} s")
    return (header + "\n\n" + table(report.rows) + "\n\n"
            + "\n".join(f"- {x}" for x in report.notes) + "\n")


def _op_cost(key: str, c: Any) -> float:
    """Dollars of one operation over the run, from its billed units."""
    p = model.PRICES
    units = c.units[key]
    service, op = key.split(".", 1)
    if service == "dynamodb":
        if op in ("get_item", "query", "scan"):
            return units * p.ddb_rru_per_million / 1e6
        return units * p.ddb_wru_per_million / 1e6
    if service == "s3":
        if op in ("get_object", "head_object"):
            return units * p.s3_get_per_thousand / 1e3
        return units * p.s3_put_per_thousand / 1e3
    if service == "sqs":
        return units * p.sqs_per_million / 1e6
    return 0.0


def _unit_name(key: str) -> str:
    if key.startswith("dynamodb."):
        return "RRU" if key.split(".")[1] in ("get_item", "query", "scan") else "WRU"
    if key.startswith("sqs."):
        return "billed requests"
    return ""


def _with_full_batches(usage: model.Usage, c: Any, rows: int, cpu_s_row: float,
                       rows_per_msg: float, splitter_rate: float) -> model.Usage:
    """The measured usage with writer invocations of BATCH_MESSAGES messages each: fewer
    invocations, receives, deletes and per-invocation ledger writes."""
    messages = c.messages_received
    now = c.writer_invocations
    full = math.ceil(messages / BATCH_MESSAGES)
    saved = max(0, now - full)
    per_inv_ledger = WRITER.ledger_writes_per_invocation
    inv_s = model.writer_invocation_s(BATCH_MESSAGES, rows_per_msg, cpu_s_row, WRITER)
    return model.Usage(
        rows=rows, item_wru=usage.item_wru,
        ledger_wru=max(0.0, usage.ledger_wru - saved * per_inv_ledger),
        ddb_rru=usage.ddb_rru,
        sqs_requests=max(0.0, usage.sqs_requests - 2 * saved),  # a receive and a delete each
        s3_get=usage.s3_get, s3_put=usage.s3_put,
        lambda_requests=usage.lambda_requests - saved,
        lambda_gb_s=(full * inv_s * WRITER.memory_mb / 1024
                     + model.splitter_gb_s(rows, splitter_rate, SPLITTER)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes (< 2 minutes): 20k-row ingest, 200 MB memory run")
    parser.add_argument("--workdir", type=Path, help="keep generated files here")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="also write the table, with the run's date and machine, to FILE "
                             "(docs/bench/recorded.md is the one the manual shows)")
    args = parser.parse_args(argv)
    quiet()
    sizes = QUICK if args.quick else FULL
    started, clock = datetime.now(UTC), time.monotonic()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        output = run(sizes, args.workdir, args.quick)
    else:
        with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
            output = run(sizes, Path(tmp), args.quick)
    print(output)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(recorded(output, started, time.monotonic() - clock, args.quick))
    return 0


def recorded(output: str, started: datetime, seconds: float, quick: bool) -> str:
    """The run as the manual shows it: when, where, how long, then the table and notes."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python -m bench --quick" if quick else "python -m bench"
    return (f"Recorded by `{command} --record docs/bench/recorded.md` on "
            f"{started:%Y-%m-%d %H:%M} UTC: {platform.machine()}, {os.cpu_count()} cores "
            f"(load average {load} at the end), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; {seconds:.0f} s.\n\n{output.strip()}\n")
