"""`fanout make-csv`: test data with the old loader's columns, reproducible by seed."""

from __future__ import annotations

import csv
import math
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from fanout_cli.progress import ProgressDisplay

COLUMNS = ["account", "offer_id", "catalog_id", "account_type_code", "offer_type_id",
           "created", "expire", "risk"]
CHUNK_ROWS = 10_000
RISKS = ["low", "medium", "high"]
# A fixed "now" keeps a seeded file identical from day to day.
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


class MakeCsvError(ValueError):
    pass


def make_csv(rows: int, accounts: int, output: Path, *, seed: int | None = None,
             stream: TextIO | None = None, progress: TextIO | None = None) -> int:
    """Write `rows` rows over `accounts` distinct accounts; return the file size in bytes.

    Every (account, offer_id) pair is distinct, so every row becomes its own item. The
    messages go to `stream` (stdout), the progress display to `progress` (if any).
    """
    stream = stream or sys.stdout
    if rows < 1:
        raise MakeCsvError(f"--rows must be at least 1 (got {rows})")
    if accounts < 1:
        raise MakeCsvError(f"--accounts must be at least 1 (got {accounts})")
    if accounts > rows:
        stream.write("⚠️  Warning: More accounts than rows - some accounts will have no data\n")
    stream.write(f"Generating {rows:,} rows with {accounts:,} unique accounts...\n")
    rng = random.Random(seed)
    account_ids = rng.sample(range(10_000_000, 100_000_000), accounts)
    type_codes = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
                  for _ in range(10)]
    offer_types = [rng.randrange(10_000_000, 100_000_000) for _ in range(10)]
    # Distinct offer ids: a random start and odd stride over the 12-digit space never repeat.
    offer_start = rng.randrange(100_000_000_000, 1_000_000_000_000)
    space = 900_000_000_000
    stride = rng.randrange(1, 1_000_000)
    while math.gcd(stride, space) != 1:
        stride += 1
    display = ProgressDisplay(progress, label=f"make-csv {output}")
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for start in range(0, rows, CHUNK_ROWS):
            chunk = []
            for n in range(start, min(start + CHUNK_ROWS, rows)):
                created = EPOCH - timedelta(seconds=rng.randrange(365 * 86400),
                                            microseconds=rng.randrange(1_000_000))
                expire = created + timedelta(days=rng.randrange(7, 366))
                offer = 100_000_000_000 + (offer_start - 100_000_000_000 + n * stride) % space
                chunk.append([
                    rng.choice(account_ids), offer,
                    rng.randrange(10**17, 10**18), rng.choice(type_codes), rng.choice(offer_types),
                    created.isoformat(), expire.isoformat(), rng.choice(RISKS),
                ])
            writer.writerows(chunk)
            display.update(min(start + CHUNK_ROWS, rows), total=rows)
    display.close()
    size = output.stat().st_size
    stream.write(f"✅ CSV file '{output}' generated successfully with {rows:,} rows!\n")
    if size > 1024 * 1024:
        stream.write(f"📁 File size: {size / (1024 * 1024):.1f} MB\n")
    return size
