"""End-to-end on the embedded emulator: `fanout ingest` against plain BatchWriteItem.

Both run on moto in this process, one after the other, on the same rows: the ingest
through `fanout_cli.local.ingest.ingest` (the real handlers, the local event source mapping,
the ledger and the output export, i.e. what `fanout ingest FILE` does), the baseline as
25-item BatchWriteItem calls from one client of items built beforehand. The ingest's AWS
requests are counted on the way (bench.counting).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.counting import Counts, RequestCounter
from fanout.mapping import Spec
from fanout.settings import MAX_BATCH_WRITE_ITEMS
from fanout_cli.local.emulator import Emulator
from fanout_cli.local.ingest import IngestOptions, ingest
from fanout_cli.local.resources import key_attribute_definitions


@dataclass(frozen=True)
class IngestRun:
    rows: int
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU (all threads): steadier on a busy machine
    summary: dict[str, Any]
    counts: Counts

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def run_ingest(path: Path, out_dir: Path, spec: Spec | None = None) -> IngestRun:
    spec = spec or Spec.default()
    counter = RequestCounter()
    started, cpu = time.perf_counter(), time.process_time()
    result = ingest(IngestOptions(file=path, spec=spec, out_dir=out_dir,
                                  wrap_clients=counter.wrap))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    summary = result.summary
    # An incomplete run is reported by the caller, not hidden: the rate still counts only
    # rows_read over the wall clock, and the notes say what did not land.
    return IngestRun(int(summary["rows_read"]), seconds, cpu, summary, counter.counts)


@dataclass(frozen=True)
class PlainRun:
    rows: int
    seconds: float
    cpu_seconds: float


def plain_batch_write(path: Path, spec: Spec | None = None) -> PlainRun:
    """The rows of `path` as 25-item BatchWriteItem calls to moto, timed."""
    spec = spec or Spec.default()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        mapper = spec.bind(next(reader))
        items = [mapper.to_item(row, line) for line, row in enumerate(reader, start=2)]
    with Emulator("inprocess") as emulator:
        ddb = emulator.clients().dynamodb
        definitions, schema = key_attribute_definitions(spec)
        ddb.create_table(TableName="plain", AttributeDefinitions=definitions, KeySchema=schema,
                         BillingMode="PAY_PER_REQUEST")
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(items), MAX_BATCH_WRITE_ITEMS):
            response = ddb.batch_write_item(RequestItems={"plain": [
                {"PutRequest": {"Item": item}} for item in items[start:start + MAX_BATCH_WRITE_ITEMS]
            ]})
            if response.get("UnprocessedItems"):
                raise RuntimeError("moto returned UnprocessedItems")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return PlainRun(len(items), seconds, cpu)
