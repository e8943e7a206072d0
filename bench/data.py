"""Benchmark input: `fanout make-csv` files, and large files built by repeating one."""

from __future__ import annotations

import io
from pathlib import Path

from fanout_cli.makecsv import make_csv


def generate(directory: Path, rows: int, *, accounts: int = 20, seed: int = 1) -> Path:
    """A make-csv file of `rows` data rows (plus the header)."""
    path = directory / f"make-csv-{rows}.csv"
    if not path.exists():
        make_csv(rows, accounts, path, seed=seed, stream=io.StringIO())
    return path


def repeat_to_size(source: Path, target_bytes: int, output: Path) -> tuple[int, int]:
    """Write `output`: the header of `source`, then its data rows again and again until the
    next whole row would pass `target_bytes`. Never holds more than `source` in memory.
    Returns (size in bytes, data rows)."""
    data = source.read_bytes()
    cut = data.index(b"\n") + 1
    header, block = data[:cut], data[cut:]
    block_rows = block.count(b"\n")
    size, rows = len(header), 0
    with open(output, "wb") as f:
        f.write(header)
        while size + len(block) <= target_bytes:
            f.write(block)
            size += len(block)
            rows += block_rows
        left = target_bytes - size
        end = block.rfind(b"\n", 0, left) + 1 if left > 0 else 0
        if end:
            f.write(block[:end])
            size += end
            rows += block[:end].count(b"\n")
    return size, rows


def quoted_variant(source: Path, output: Path, *, multiline_every: int = 50) -> int:
    """Write `output`: `source` with its last column quoted and holding a comma on every
    row, and a newline inside the quotes on every `multiline_every`-th row (the CSV that
    quote-free fast paths do not help). Returns the number of data rows."""
    rows = 0
    with open(source, encoding="utf-8", newline="") as f, \
            open(output, "w", encoding="utf-8", newline="") as out:
        out.write(f.readline())
        for rows, line in enumerate(f, 1):
            head, _, last = line.rstrip("\n").rpartition(",")
            gap = "\n" if rows % multiline_every == 0 else " "
            out.write(f'{head},"{last},{gap}""noted"""\n')
    return rows
