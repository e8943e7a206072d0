"""CPU benchmarks of the two Lambdas' own code, with no AWS (emulated or real) in the loop.

* splitter: the real code path of `splitter.split.split_object` (the check pass over the
  whole object, then ranged reads -> chunker regions -> records cut -> 25-row CSV-text
  messages -> Enqueuer) over an in-memory S3 object and an SQS client that discards,
  against `csv.reader` over the same bytes;
* writer: decode each message the splitter sent (fanout.contract: JSON, then the rows'
  CSV text) -> `writer.load.map_rows` (RowMapper, dedupe) -> the BatchWriteItem request
  payloads, against json.loads + csv.reader + boto3's TypeSerializer per item; and the
  same with each request sent through a real botocore client (the HTTP round trip
  canned), the writer's client config against boto3's defaults.

CPU time is `time.process_time` (all threads of the process), best of N.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from bench.fakes import CannedDynamoDB, LatencySQS, NullSQS
from fanout.aws import Clients
from fanout.contract import decode, job_id_for
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import MAX_BATCH_WRITE_ITEMS, Settings
from fanout_cli.local.file_s3 import MemoryS3
from splitter.range_reader import head
from writer.batch_write import ITEMS_CLIENT_CONFIG, Budget, encode_whole, write_items
from writer.load import map_rows, prepare

TABLE = "bench-items"


@dataclass(frozen=True)
class Rate:
    rows: int
    seconds: float  # best CPU seconds

    @property
    def per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def best_of(runs: int, *works: Callable[[], int]) -> list[Rate]:
    """Best CPU time of each `work` over `runs` rounds; the works take turns within a
    round, so a change in the machine's load touches all of them alike."""
    best = [float("inf")] * len(works)
    rows = [0] * len(works)
    for _ in range(runs):
        for i, work in enumerate(works):
            started = time.process_time()
            rows[i] = work()
            best[i] = min(best[i], time.process_time() - started)
    return [Rate(r, b) for r, b in zip(rows, best, strict=True)]


def _slices(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------- splitter

def splitter_runtime(s3: Any, sqs: Any, range_bytes: int | None = None) -> Runtime:
    settings = Settings(table_name=TABLE, ledger_table_name="bench-jobs",
                        rows_queue_url="https://sqs.invalid/rows")
    if range_bytes:
        settings = replace(settings, range_bytes=range_bytes)
    return Runtime(settings, Spec.default(), Clients(s3=s3, sqs=sqs, dynamodb=None))


def run_splitter(s3: Any, sqs: Any, range_bytes: int | None = None) -> int:
    """The splitter's whole read path for the one object `s3` serves; returns data rows."""
    # The code path split_object runs: the check before anything is sent, then the split.
    from splitter.enqueue import Enqueuer
    from splitter.source import open_source
    from splitter.split import Checkpoint, NoProgress, cut_object

    runtime, info = open_source(splitter_runtime(s3, sqs, range_bytes), head(s3, "bench", "bench.csv"))
    checkpoint = Checkpoint()
    job, range_bytes = job_id_for(info.source), runtime.settings.range_bytes
    enqueuer = Enqueuer(sqs, runtime.settings.rows_queue_url)
    try:
        assert cut_object(runtime, info, job, range_bytes, checkpoint, sink=enqueuer,
                          progress=NoProgress())
    finally:
        enqueuer.close()
    return checkpoint.rows_read


def enqueue_rate(data: bytes, latency_s: float = 0.015) -> tuple[float, LatencySQS]:
    """Wall-clock rows/s of the splitter when every SendMessageBatch takes `latency_s`."""
    sqs = LatencySQS(latency_s)
    started = time.perf_counter()
    rows = run_splitter(MemoryS3(data), sqs)
    return rows / (time.perf_counter() - started), sqs


def splitter_cpu(data: bytes, runs: int) -> tuple[Rate, Rate]:
    """(splitter, csv.reader baseline) rows/s on `data`."""
    s3 = MemoryS3(data)

    def splitter() -> int:
        return run_splitter(s3, NullSQS())

    def baseline() -> int:
        rows = 0
        for _ in csv.reader(io.StringIO(data.decode("utf-8"), newline="")):
            rows += 1
        return rows - 1  # the header

    split, base = best_of(runs, splitter, baseline)
    return split, base


def check_cpu(path: Path, runs: int) -> tuple[Rate, Rate]:
    """(`fanout check`, csv.reader baseline) rows/s on the file at `path`: the dry run is
    the splitter's cut plus the writer's mapping of every message."""
    from fanout_cli.check import check_file

    def check() -> int:
        return check_file(path, Spec.default()).rows_read

    def baseline() -> int:
        with open(path, newline="", encoding="utf-8") as f:
            return sum(1 for _ in csv.reader(f)) - 1  # the header

    checked, base = best_of(runs, check, baseline)
    return checked, base


# --------------------------------------------------------------------------- writer

def message_bodies(data: bytes) -> list[str]:
    """The rows messages the splitter sends for `data`, as it sends them."""
    sqs = NullSQS(keep=True)
    run_splitter(MemoryS3(data), sqs)
    return sqs.bodies


def _requests(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RequestItems payloads writer.batch_write sends for `items`."""
    return [
        {TABLE: [{"PutRequest": {"Item": item}} for item in items[start:start + MAX_BATCH_WRITE_ITEMS]]}
        for start in range(0, len(items), MAX_BATCH_WRITE_ITEMS)
    ]


def writer_cpu(bodies: list[str], runs: int) -> tuple[Rate, Rate]:
    """(writer, naive baseline) rows/s over the same message bodies."""
    spec = Spec.default()

    def writer() -> int:
        rows = 0
        for body in bodies:
            message = decode(body)
            items, _lines, _rejections, _superseded = map_rows(message, spec)
            _requests(items)
            rows += len(message.rows)
        return rows

    serializer = TypeSerializer()

    def naive() -> int:
        rows = 0
        for body in bodies:
            items = _naive_items(json.loads(body), serializer)
            _requests(items)
            rows += len(items)
        return rows

    mapped, plain = best_of(runs, writer, naive)
    return mapped, plain


def _naive_items(data: dict[str, Any], serializer: TypeSerializer) -> list[dict[str, Any]]:
    """The naive writer's items: csv.reader on the body's CSV text, TypeSerializer per value."""
    header = data["header"]
    table = (list(csv.reader(io.StringIO(data["csv"], newline=""), delimiter=data["delimiter"]))
             if "csv" in data else data["rows"])
    return [{name: serializer.serialize(value)
             for name, value in zip(header, row, strict=True) if value != ""}
            for row in table]


def writer_request_cpu(bodies: list[str], runs: int) -> tuple[Rate, Rate]:
    """(writer, naive) rows/s over the same bodies with every BatchWriteItem sent through a
    real botocore client (validation, serialization, signing, response parsing; the HTTP
    round trip canned, no latency): the writer's path (`prepare` → `write_items` on its
    own client config) against the naive loop on boto3's default client."""
    spec = Spec.default()
    writer_client = CannedDynamoDB(ITEMS_CLIENT_CONFIG, customize=encode_whole)
    naive_client = CannedDynamoDB()
    budget = Budget(lambda: 900.0)

    def writer() -> int:
        rows = 0
        for body in bodies:
            prepared = prepare(decode(body), spec)
            write_items(writer_client, TABLE, prepared.items, budget)
            rows += len(prepared.message.rows)
        return rows

    serializer = TypeSerializer()

    def naive() -> int:
        rows = 0
        for body in bodies:
            table = _naive_items(json.loads(body), serializer)
            for request in _requests(table):
                naive_client.batch_write_item(RequestItems=request)
            rows += len(table)
        return rows

    mapped, plain = best_of(runs, writer, naive)
    return mapped, plain
