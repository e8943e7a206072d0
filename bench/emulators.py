"""Which emulator `make demo` uses: `fanout ingest` on in-process moto against the same file
through the real stack deployed into MiniStack, each beside plain 25-item BatchWriteItem
calls to the same emulator.

`python -m bench.emulators [--rows N]` runs it alone; `python -m bench` runs it on its
ingest file, reusing the moto figures it has just measured.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data import generate
from bench.pipeline import plain_batch_write, run_ingest
from fanout.mapping import Spec
from fanout.settings import MAX_BATCH_WRITE_ITEMS
from fanout_cli.local import ministack
from fanout_cli.local.resources import key_attribute_definitions
from fanout_cli.local.stack import find_stack, follow, upload
from fanout_cli.progress import ProgressDisplay


@dataclass(frozen=True)
class Rates:
    moto_ingest: float
    moto_plain: float
    ministack_ingest: float
    ministack_plain: float
    ministack_setup_s: float
    ministack_status: str


def items_of(path: Path, spec: Spec) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        mapper = spec.bind(next(reader))
        return [mapper.to_item(row, line) for line, row in enumerate(reader, start=2)]


def plain_rate(dynamodb: Any, items: list[dict[str, Any]], spec: Spec) -> float:
    """Rows/s of sequential 25-item BatchWriteItem calls from one client."""
    definitions, schema = key_attribute_definitions(spec)
    dynamodb.create_table(TableName="plain", AttributeDefinitions=definitions, KeySchema=schema,
                          BillingMode="PAY_PER_REQUEST")
    started = time.perf_counter()
    for start in range(0, len(items), MAX_BATCH_WRITE_ITEMS):
        batch = items[start:start + MAX_BATCH_WRITE_ITEMS]
        pending = {"plain": [{"PutRequest": {"Item": item}} for item in batch]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return len(items) / (time.perf_counter() - started)


def on_ministack(path: Path, log: Path) -> tuple[float, float, float, str]:
    """(ingest rows/s, plain rows/s, seconds to start and deploy, the job's status)."""
    spec = Spec.default()
    started = time.perf_counter()
    with ministack.local_stack(stack_name="fanout-bench", log=log) as (emulator, deployment):
        setup_s = time.perf_counter() - started
        stack = find_stack(deployment.stack_name, emulator.endpoint_url)
        began = time.perf_counter()
        _, job = upload(stack, path)
        item = follow(stack, job, display=ProgressDisplay(None, label="bench"), poll_s=0.25)
        ingest = int(item.get("rows_read", 0)) / (time.perf_counter() - began)
        plain = plain_rate(ministack.local_client("dynamodb", emulator.endpoint_url),
                           items_of(path, spec), spec)
    return ingest, plain, setup_s, str(item.get("status"))


def measure(path: Path, workdir: Path, *, moto_ingest: float | None = None,
            moto_plain: float | None = None) -> Rates:
    if moto_ingest is None:
        moto_ingest = run_ingest(path, workdir / "emulators-ingest-out").rows_per_s
    if moto_plain is None:
        baseline = plain_batch_write(path)
        moto_plain = baseline.rows / baseline.seconds
    ingest, plain, setup_s, status = on_ministack(path, workdir / "emulators-cdk.log")
    return Rates(moto_ingest, moto_plain, ingest, plain, setup_s, status)


def table_rows(rates: Rates, rows: int) -> list[tuple[str, str, str, str, str]]:
    """Rows for bench's table: (what, measured, baseline, ratio, goal)."""
    def n(value: float) -> str:
        return f"{value:,.0f}"
    return [
        (f"`fanout ingest` rows/s, {rows:,} rows, moto in-process", n(rates.moto_ingest),
         f"plain BatchWriteItem to moto {n(rates.moto_plain)}",
         f"{rates.moto_ingest / rates.moto_plain:.2f}", "info"),
        (f"the same file through the deployed stack on MiniStack (upload to COMPLETE; job "
         f"{rates.ministack_status})", n(rates.ministack_ingest),
         f"plain BatchWriteItem to MiniStack {n(rates.ministack_plain)}",
         f"{rates.ministack_ingest / rates.ministack_plain:.2f}", "info"),
        ("MiniStack over moto, `fanout ingest` rows/s", n(rates.ministack_ingest),
         f"moto in-process {n(rates.moto_ingest)}",
         f"{rates.ministack_ingest / rates.moto_ingest:.2f}",
         f"demo on MiniStack if ≥ 1 (plus {rates.ministack_setup_s:.0f} s to start and deploy)"),
    ]


def add_to(rows_out: list[tuple[str, str, str, str, str]], notes: list[str], path: Path,
           workdir: Path, rows: int, **moto: float) -> None:
    """bench/run.py's one call: measure and append the rows and a note."""
    rates = measure(path, workdir, **moto)
    rows_out.extend(table_rows(rates, rows))
    notes.append(f"Emulators: MiniStack {ministack.MINISTACK_VERSION} took "
                 f"{rates.ministack_setup_s:.0f} s to start, bootstrap and `cdk deploy` the stack "
                 "before the timed upload; its Lambdas are worker processes, so the two cores "
                 "both work, where the in-process moto run shares one interpreter.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulators", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the file (default 20,000)")
    args = parser.parse_args(argv)
    from bench.run import quiet

    quiet()
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        workdir = Path(tmp)
        path = generate(workdir, args.rows)
        rows: list[tuple[str, str, str, str, str]] = []
        notes: list[str] = []
        add_to(rows, notes, path, workdir, args.rows)
    print("| what | measured | baseline | ratio | goal |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
