"""A large file split in parallel byte ranges ends exactly like a sequential split, even
with quoted newlines placed across the range boundaries."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import LOCAL_CONFIG
from fanout_cli.local.ingest import IngestOptions, ingest
from tests.e2e.test_continuation import CrashingS3
from tests.strict_aws import Faults, StrictLayer

ROWS = 1500  # about 40 kB
READ = 2048  # bytes a ranged GET reads: two or three a range of the parallel split


def make_file(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    rows = [["account", "offer_id", "note"]]
    for i in range(ROWS):
        note = f'line one of {i}\nline "two", of {i}' if i % 3 == 0 else f"plain {i}"
        rows.append([f"a{i % 13}", str(i), note])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    data = tmp_path / "big.csv"
    data.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())
    return data, rows


def check(tmp_path: Path, rows: list[list[str]], summary: dict) -> None:
    s = summary
    assert s["status"] == "COMPLETE", s
    assert s["parallel_ranges"] >= 10  # it really was split in parallel ranges
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"], s["rows_superseded"]) == (
        ROWS, ROWS, 0, 0)
    got = {}
    for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        got[item["offer_id"]["S"]] = {k: v["S"] for k, v in item.items()}
    assert got == {r[1]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


@pytest.mark.parametrize("faults", ["none", "duplicates", "crash"])
def test_parallel_ranges_load_exactly_what_the_file_holds(tmp_path: Path, faults: str) -> None:
    data, rows = make_file(tmp_path)
    size = data.stat().st_size
    # Any file over 10 kB is "large" here: ~12 ranges of ~3.6 kB, read 2 kB at a time.
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=10_000,
                     parallel_range_bytes=size // 12 + 1)
    # Duplicated deliveries also duplicate the scan and range-split events (the local
    # trigger is a queue too); a crash fails one range read, and the retry redoes it.
    strict = StrictLayer(Faults(duplicate_delivery_rate=0.3 if faults == "duplicates" else 0.0,
                                seed=4))
    crashes: list[CrashingS3] = []

    def wrap(clients: Clients) -> Clients:
        wrapped = strict.wrap(clients)
        if faults != "crash":
            return wrapped
        crashes.append(CrashingS3(clients.s3, crash_at=25))
        return replace(wrapped, s3=crashes[-1])

    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=READ, config=config, wrap_clients=wrap))
    check(tmp_path, rows, result.summary)
    assert strict.record.violations == []
    if faults == "crash":
        assert crashes[0].gets > 25


@pytest.mark.parametrize(("damage", "message"), [
    (lambda text: b"\xff" + text[1:], "bytes are not valid utf-8"),
    # text after a closing quote (a stray quote, as in 5'10", would load)
    (lambda text: b'"x"y ' + text, "malformed CSV: ',' expected after '\"'"),
])
def test_bad_input_in_a_later_range_fails_the_job_before_any_range_sends(
        tmp_path: Path, damage, message: str) -> None:
    data, _rows = make_file(tmp_path)
    content = data.read_bytes()
    bad_at = content.index(b"plain 1250")
    data.write_bytes(content[:bad_at] + damage(content[bad_at:]))
    line = content.count(b"\n", 0, bad_at) + 1
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=10_000,
                     parallel_range_bytes=len(content) // 12 + 1)
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=READ, config=config))
    s = result.summary
    assert s["status"] == "FAILED" and result.exit_code == 1 and s["parallel_ranges"] >= 10
    assert f"big.csv: line {line}: {message}" in s["error"]
    assert (s["messages_sent"], s["items_in_table"]) == (0, 0)  # no range had sent anything


def stray_quote_file(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """Quotes inside unquoted fields (5'10", 12" pizza) before and between quoted
    multi-line fields, as real exports have them; the rows are csv.reader's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["account", "offer_id", "note"])
    for i in range(ROWS):
        if i % 4 == 1:
            buffer.write(f'a{i % 13},{i},5\'10" and a 12" pizza\n')
        else:
            writer.writerow([f"a{i % 13}", str(i), f'line one of {i}\nline "two"' if i % 3 == 0
                             else f"plain {i}"])
    data = tmp_path / "stray.csv"
    data.write_bytes(buffer.getvalue().encode())
    return data, list(csv.reader(io.StringIO(buffer.getvalue(), newline=""), strict=True))


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_quotes_inside_unquoted_fields_load_exactly_as_csv_reader_reads_them(
        tmp_path: Path, parallel: bool) -> None:
    data, rows = stray_quote_file(tmp_path)
    assert ["a1", "1", '5\'10" and a 12" pizza'] in rows and ["a0", "0", 'line one of 0\nline "two"'] in rows
    size = data.stat().st_size
    config = (replace(LOCAL_CONFIG, parallel_threshold_bytes=10_000, parallel_range_bytes=size // 12 + 1)
              if parallel else LOCAL_CONFIG)
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=READ, config=config))
    s = result.summary
    assert s["status"] == "COMPLETE", s
    assert (s["parallel_ranges"] >= 10) == parallel
    assert (s["rows_read"], s["rows_written"], s["rows_rejected"]) == (ROWS, ROWS, 0)
    got = {}
    for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines():
        item = json.loads(line)["Item"]
        got[item["offer_id"]["S"]] = {k: v["S"] for k, v in item.items()}
    assert got == {r[1]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


def test_a_bad_byte_at_the_end_of_a_file_enqueues_nothing(tmp_path: Path) -> None:
    data, _rows = make_file(tmp_path)
    data.write_bytes(data.read_bytes() + b"a1,late,\xc3\x28\r\n")
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=READ))
    s = result.summary
    assert s["status"] == "FAILED"
    assert "bytes are not valid utf-8" in s["error"] and s["parallel_ranges"] == 0
    assert (s["messages_sent"], s["items_in_table"]) == (0, 0)


def test_a_late_duplicate_event_replans_and_never_splits_sequentially(tmp_path: Path) -> None:
    from fanout import ledger
    from fanout.runtime import Runtime
    from fanout.settings import ResourceNames
    from fanout_cli.local.emulator import Emulator
    from fanout_cli.local.resources import create_resources
    from splitter import split

    data, _rows = make_file(tmp_path)
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=10_000,
                     parallel_range_bytes=data.stat().st_size // 4 + 1)
    with Emulator() as emulator:
        clients = emulator.clients()
        stack = create_resources(clients, Spec.default(), config=config, names=ResourceNames(),
                                 range_bytes=READ)
        clients.s3.upload_file(str(data), stack.settings.bucket, "uploads/big.csv")
        sent: list[dict] = []
        now = [1_000_000.0]  # the ledger's clock: the test moves it, nothing waits
        runtime = Runtime(stack.settings, Spec.default(), clients, clock=lambda: now[0])
        first = split.split_object(runtime, stack.settings.bucket, "uploads/big.csv", lease_s=0,
                                   continue_split=sent.append)
        now[0] += 1.1  # the planner's lease runs out
        # A duplicate event arrives before any scan ran.
        again = split.split_object(runtime, stack.settings.bucket, "uploads/big.csv", lease_s=0,
                                   continue_split=sent.append)
        assert first.status == again.status == "planned 4 ranges"
        assert [list(e) for e in sent] == [[split.fan.SCAN_KEY]] * 8  # the same 4 scans, twice
        assert {json.dumps(e, sort_keys=True) for e in sent[:4]} == {
            json.dumps(e, sort_keys=True) for e in sent[4:]}
        job = ledger.get_job(clients.dynamodb, stack.settings.ledger_table_name, first.job)
        assert job["status"] == ledger.SPLITTING and job["parallel_ranges"] == 4
        assert "messages_total" not in job  # nothing was split sequentially


@pytest.mark.parametrize("faults", ["none", "duplicates"])
def test_short_rows_are_counted_once_across_parallel_ranges(tmp_path: Path, faults: str) -> None:
    # Given a large file whose every 7th row lacks its last field (a quoted one elsewhere)
    data, rows = make_file(tmp_path)
    short = [r if i % 7 else r[:2] for i, r in enumerate(rows[1:])]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([rows[0], *short])
    data.write_text(buffer.getvalue())
    config = replace(LOCAL_CONFIG, parallel_threshold_bytes=10_000,
                     parallel_range_bytes=data.stat().st_size // 12 + 1)
    strict = StrictLayer(Faults(duplicate_delivery_rate=0.3 if faults == "duplicates" else 0.0,
                                seed=5))
    # When it is split in parallel ranges (duplicated steps among them)
    result = ingest(IngestOptions(file=data, spec=Spec.default(), out_dir=tmp_path / "out",
                                  range_bytes=READ, config=config, wrap_clients=strict.wrap))
    # Then every row is written, and the short ones are counted once each
    s = result.summary
    assert s["parallel_ranges"] >= 10 and s["status"] == "COMPLETE"
    assert (s["rows_read"], s["rows_written"], s["rows_padded"]) == (ROWS, ROWS, -(-ROWS // 7))
    assert strict.record.violations == []
