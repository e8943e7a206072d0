"""The larger run: 1,000,000 rows (20,000 in CI) end to end on the embedded runtime, with
2% of the queue deliveries duplicated: exact counts, every row in the table, and one
summary published (`make test-full` runs the full size)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fanout import ledger
from fanout.aws import Clients
from fanout.mapping import Spec
from fanout_cli.local.ingest import IngestOptions, ingest
from fanout_cli.makecsv import make_csv
from tests.conftest import sized
from tests.strict_aws import Faults, StrictLayer


class RecordingSNS:
    def __init__(self, sns: Any) -> None:
        self.sns, self.published = sns, []

    def publish(self, **params: Any) -> Any:
        self.published.append(json.loads(params["Message"]))
        return self.sns.publish(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sns, name)


def test_a_million_rows_with_duplicate_deliveries_count_exactly_and_publish_once(
        tmp_path: Path) -> None:
    # Given a file of 1,000,000 distinct rows and a queue that delivers 2% of its messages twice
    rows = sized(1_000_000, 20_000)
    data = tmp_path / "data.csv"
    make_csv(rows, 200, data, seed=16, stream=io.StringIO())
    layer = StrictLayer(Faults(duplicate_delivery_rate=0.02, seed=16))
    sns: list[RecordingSNS] = []

    def wrap(raw: Clients) -> Clients:
        sns.append(RecordingSNS(raw.sns))
        return replace(layer.wrap(raw), sns=sns[-1])

    # When it is loaded end to end
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  wrap_clients=wrap, concurrency=8))
    s = result.summary
    # Then the counts are exact, despite the duplicates
    assert layer.record.injected["duplicate_delivery"] > rows // 25 // 100
    assert layer.record.violations == []
    assert s["status"] == ledger.COMPLETE
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        rows, rows, 0, 0)
    assert s["items_in_table"] == rows
    # every row is in the table
    with open(data, newline="") as f:
        expected = {(r["account"], r["offer_id"]) for r in csv.DictReader(f)}
    with open(tmp_path / "out" / "items.jsonl", encoding="utf-8") as f:
        got = {(i["account"]["S"], i["offer_id"]["S"]) for i in
               (json.loads(line)["Item"] for line in f)}
    assert got == expected
    # and one summary was published, with the exact counts
    summaries = [m for recorder in sns for m in recorder.published]
    assert len(summaries) == 1, summaries
    assert (summaries[0]["STATUS"], summaries[0]["TOTAL_NUMBER_OF_ROWS_READ"],
            summaries[0]["TOTAL_NUMBER_OF_ITEMS_WRITTEN"]) == (ledger.COMPLETE, rows, rows)
