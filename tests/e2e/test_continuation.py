"""The splitter past its time limit: checkpoints, continuations and a crash in the middle
end with the same table and counts as one clean run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import LOCAL_CONFIG
from fanout_cli.local.ingest import IngestOptions, ingest
from fanout_cli.makecsv import make_csv
from tests.conftest import sized
from tests.strict_aws import StrictLayer


class CrashingS3:
    """An S3 client whose `crash_at`-th ranged GET raises, as a splitter killed mid-file."""

    def __init__(self, s3: Any, crash_at: int) -> None:
        self._s3 = s3
        self.gets = 0
        self.crash_at = crash_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **params: Any) -> Any:
        self.gets += 1
        if self.gets == self.crash_at:
            raise RuntimeError("splitter killed mid-file")
        return self._s3.get_object(**params)


def test_many_continuations_and_a_crash_equal_a_clean_run(tmp_path: Path) -> None:
    # 6,000 rows are 22 ranges of 32 KiB: a continuation at nearly every one (100k rows,
    # 380 ranges, with FANOUT_FULL_SIZE=1).
    rows = sized(100_000, 6_000)
    data = tmp_path / "data.csv"
    make_csv(rows, 50, data, seed=9, stream=io.StringIO())
    strict = StrictLayer()
    crashing: list[CrashingS3] = []

    # The first pass reads every range once to check the bytes decode; crash half-way
    # through the second pass, which splits.
    ranges = -(-data.stat().st_size // (32 * 1024))
    crash_at = ranges + ranges // 2

    def wrap(clients: Clients) -> Clients:
        s3 = CrashingS3(clients.s3, crash_at=crash_at)
        crashing.append(s3)
        return replace(strict.wrap(clients), s3=s3)

    # 32 KiB ranges, a checkpoint at each, and a splitter that must hand over at the first
    # checkpoint after 0.1 s: a continuation every few hundred rows, and one crash
    # mid-split. (The 2.45 s after that before it gives up on reaching a checkpoint at all
    # is slack for a loaded machine: with less, a slow invocation can hand over before it
    # reaches the next checkpoint, again and again; 1.45 s was not enough at a load of 8
    # on two cores.)
    config = replace(LOCAL_CONFIG, checkpoint_bytes=32 * 1024, splitter_timeout_s=5.0,
                     split_reserve_s=4.9)
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=32 * 1024, config=config, wrap_clients=wrap,
                                  concurrency=6))
    s = result.summary
    assert crashing[0].gets >= crash_at
    assert s["status"] == "COMPLETE"
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        rows, rows, 0, 0)
    assert s["split_invocations"] > rows // 1000  # it really did continue, many times
    with open(data, newline="") as f:
        expected = {(r["account"], r["offer_id"]): r for r in csv.DictReader(f)}
    got = {}
    for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        got[(item["account"]["S"], item["offer_id"]["S"])] = {k: v["S"] for k, v in item.items()}
    assert got == expected
