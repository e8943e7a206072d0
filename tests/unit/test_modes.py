"""Write modes in the core: the spec's `mode`, the message's, and the ledger's counts."""

from __future__ import annotations

import io
import json

import pytest

from fanout import ledger
from fanout.contract import (
    ContractError,
    CsvRowsEncoder,
    Rejection,
    RowsMessage,
    Source,
    as_replay,
    decode,
    rejected_messages,
    split_to_fit,
)
from fanout.mapping import RowRejected, Spec, SpecError
from splitter.batch import Batcher
from writer.load import map_rows

SOURCE = Source("b", "k.csv", "e")
HEADER = ["account", "offer_id", "risk", "amount"]


def spec(mode: str = "put", **columns: object) -> Spec:
    return Spec.from_dict({"table": {"mode": mode, "partition_key": "account",
                                     "sort_key": {"name": "offer_id", "type": "N"}},
                           "columns": {"types": {"amount": "N"}, **columns}})


def test_the_spec_names_its_mode_and_refuses_an_unknown_one():
    assert Spec.default().mode == "put" and spec("delete").mode == "delete"
    assert Spec.from_dict({"table": {"mode": "update"}}).partition_key.name == "account"
    with pytest.raises(SpecError, match=r"table.mode: 'upsert' is not one of put, delete"):
        spec("upsert")
    with pytest.raises(SpecError, match="table.partition_key: required"):
        Spec.from_dict({"table": {}})
    assert Spec.from_dict(spec("insert").to_dict()).mode == "insert"
    assert "mode" not in Spec.default().to_dict()["table"]  # a put spec's form is as before


def test_a_message_without_a_mode_is_a_put_and_a_mode_round_trips():
    put = RowsMessage("j", 0, SOURCE, HEADER, [2], [["a", "1", "x", "2"]])
    assert "mode" not in json.loads(put.encode()) and decode(put.encode()).mode == "put"
    for mode in ("delete", "insert", "update"):
        body = CsvRowsEncoder("j", SOURCE, HEADER, mode=mode).encode(3, [2], ["a,1,x,2"])
        assert decode(body).mode == mode and decode(body).rows == [["a", "1", "x", "2"]]
    bad = json.loads(put.encode()) | {"mode": "merge"}
    with pytest.raises(ContractError, match="unknown write mode 'merge'"):
        decode(json.dumps(bad))


def test_every_message_made_from_another_keeps_its_mode():
    m = RowsMessage("j", 0, SOURCE, HEADER, [2, 3], [["a", "1", "x" * 600, "2"]] * 2,
                    mode="insert")
    rejection = Rejection(2, m.rows[0], "bad_number", "no")
    (rejected,) = rejected_messages(m, [rejection])
    assert rejected.mode == "insert" and decode(rejected.encode()).mode == "insert"
    assert as_replay(decode(rejected.encode())).mode == "insert"
    parts = split_to_fit(m, limit=1000)
    assert len(parts) == 2 and {p.mode for p in parts} == {"insert"}
    (alone,) = split_to_fit(RowsMessage("j", 0, SOURCE, HEADER, [2], [m.rows[0]], mode="delete"),
                            limit=300)
    assert alone.mode == "delete" and alone.rejections[0].reason == "row_too_large"


def test_the_splitter_stamps_the_mode_in_every_message():
    from types import SimpleNamespace

    bodies: list[str] = []
    sink = SimpleNamespace(send=lambda body, size=None: bodies.append(body), drain=lambda: 0)
    batcher = Batcher(sink, "j", SOURCE, HEADER, ",", 0, "delete")
    batcher.add(list(range(2, 32)), [f"a,{i},x,1" for i in range(30)])
    batcher.flush()
    assert [decode(b).mode for b in bodies] == ["delete", "delete"]


def test_a_delete_reads_only_the_key_columns():
    rows = [["a", "1", "x", "not a number"], ["a", "2", "", ""], ["", "3", "x", "1"],
            ["a", "1", "again", "5"], ["a", "4", "x", "1", "extra"]]
    m = RowsMessage("j", 0, SOURCE, HEADER, [2, 3, 4, 5, 6], rows, mode="delete")
    items, lines, rejections, superseded = map_rows(m, spec("delete"))
    assert items == [{"account": {"S": "a"}, "offer_id": {"N": "1"}},
                     {"account": {"S": "a"}, "offer_id": {"N": "2"}}]
    assert lines == [5, 3] and superseded == 1  # a/1 is line 5's (the later row)
    assert [(r.line, r.reason) for r in rejections] == [(4, "empty_key"), (6, "column_count")]
    # The same rows as a put: the bad number is a rejection there
    _, _, put_rejections, _ = map_rows(RowsMessage("j", 0, SOURCE, HEADER, m.lines, rows),
                                       spec("put"))
    assert [r.reason for r in put_rejections] == ["bad_number", "empty_key", "column_count"]


def test_an_update_merges_a_key_twice_in_a_message_as_the_rows_would_in_order():
    rows = [["a", "1", "first", ""], ["a", "1", "", "5"], ["a", "1", "third", ""]]
    m = RowsMessage("j", 0, SOURCE, HEADER, [2, 3, 4], rows, mode="update")
    (item,), lines, _, superseded = map_rows(m, spec("update"))
    assert item == {"account": {"S": "a"}, "offer_id": {"N": "1"}, "risk": {"S": "third"},
                    "amount": {"N": "5"}}
    assert lines == [4] and superseded == 2
    (put_item,), _, _, _ = map_rows(RowsMessage("j", 0, SOURCE, HEADER, [2, 3, 4], rows),
                                    spec("put"))
    assert "amount" not in put_item  # a put writes the last row whole


def test_map_rows_still_rejects_rows_as_the_spec_says():
    with pytest.raises(RowRejected):
        spec("delete").bind(HEADER).to_key(["a", ""] + ["x", "1"], 2)


def test_log_entries_carry_the_new_outcomes_only_when_they_are_not_zero():
    counts = {"0": ledger.MessageCounts(1, 2, 3), "1.1": ledger.MessageCounts(0, 1, 0, 20, 4),
              "2~abc": ledger.MessageCounts(0, 0, 0, 1, 0)}
    encoded = ledger.layout._encode_entries(counts)
    assert encoded == "0:1:2:3,1.1:0:1:0:20:4,2~abc:0:0:0:1:0"
    assert dict(ledger.parse_entries(encoded)) == counts
    assert dict(ledger.parse_entries("7:25:0:0")) == {"7": ledger.MessageCounts(25)}
    # A cancelled message's rows: the sixth count, written only when not 0
    dropped = {"3": ledger.MessageCounts(cancelled=25), "4": ledger.MessageCounts(0, 0, 0, 1, 0, 2)}
    assert ledger.layout._encode_entries(dropped) == "3:0:0:0:0:0:25,4:0:0:0:1:0:2"
    assert dict(ledger.parse_entries("3:0:0:0:0:0:25,4:0:0:0:1:0:2")) == dropped


def test_a_replay_moves_every_landed_row_out_of_rejected():
    counts = {"0": ledger.MessageCounts(written=1, rejected=3, skipped_existing=1),
              "0~r1": ledger.MessageCounts(written=1, rejected=0, skipped_existing=1, deleted=0),
              "1": ledger.MessageCounts(rejected=1, deleted=4),
              "1~r2": ledger.MessageCounts(deleted=1)}
    assert ledger.totals(counts) == ledger.MessageCounts(written=2, rejected=1, deleted=5,
                                                         skipped_existing=2)
    shard = ledger.Shard(0)
    for ticket, (mid, c) in enumerate(counts.items(), 1):
        shard.apply(ticket, mid, c)
    assert shard.totals.counts == ledger.totals(counts) and shard.totals.distinct == 2
    assert ledger.Totals.of(shard.item("j")) == shard.totals
    assert ledger.Totals.of({"distinct": {"N": "1"}, "written": {"N": "4"}}).counts == \
        ledger.MessageCounts(4)  # a shard written before write modes


def test_summaries_show_a_modes_own_outcomes_and_a_put_job_as_before():
    job = {"pk": "j", "status": "COMPLETE", "rows_read": 5, "rows_written": 5,
           "rows_rejected": 0, "rows_superseded": 0, "rows_deleted": 0, "rows_skipped_existing": 0}
    put = ledger.completion_summary(job)
    assert "WRITE_MODE" not in put and "TOTAL_NUMBER_OF_ITEMS_DELETED" not in put
    assert list(put) == ["JOB_ID", "STATUS", "SOURCE", "TOTAL_NUMBER_OF_ROWS_READ",
                         "TOTAL_NUMBER_OF_ITEMS_WRITTEN", "TOTAL_NUMBER_OF_ITEMS_IN_ERROR",
                         "TOTAL_NUMBER_OF_ROWS_SUPERSEDED", "DESTINATION_TABLE_NAME",
                         "ERROR_DATA_LOCATION"]
    insert = ledger.completion_summary(job | {"mode": "insert"})
    assert insert["WRITE_MODE"] == "insert" and insert["TOTAL_NUMBER_OF_ROWS_SKIPPED_EXISTING"] == 0
    assert "TOTAL_NUMBER_OF_ITEMS_DELETED" not in insert
    assert ledger.outcomes_shown("update", {"deleted": 2}) == [
        "written", "rejected", "superseded", "deleted"]


def test_the_stack_summary_and_the_serve_line_name_each_outcome():
    from types import SimpleNamespace

    from fanout_cli.local.ingest import print_summary
    from fanout_cli.local.serve import outcome
    from fanout_cli.local.stack import settled_rows, summary

    job = {"pk": "j", "status": "COMPLETE", "rows_read": 9, "rows_written": 2,
           "rows_rejected": 1, "rows_superseded": 1, "rows_deleted": 0,
           "rows_skipped_existing": 5, "started_at": "2026-01-01T00:00:00+00:00",
           "finished_at": "2026-01-01T00:00:03+00:00"}
    put = {k: v for k, v in job.items() if k != "rows_skipped_existing"} | {"rows_written": 7}
    assert outcome(put).startswith("9 rows read, 7 written, 1 rejected, 1 superseded in ")
    assert outcome(job | {"mode": "insert"}).startswith(
        "9 rows read, 2 written, 1 rejected, 1 superseded, 5 skipped existing in ")
    assert settled_rows(job) == 9
    stack = SimpleNamespace(name="fanout", outputs={"TableName": "items"}, endpoint_url=None,
                            region="us-east-1")
    result = summary(stack, job | {"mode": "insert"}, 1.0)
    assert (result["mode"], result["rows_skipped_existing"], result["rows_deleted"]) == ("insert", 5, 0)
    out = io.StringIO()
    print_summary(result | {"source_format": ""}, out)
    printed = out.getvalue()
    assert "mode       insert" in printed and "  skipped existing 5" in printed
    assert "deleted" not in printed
    out = io.StringIO()
    print_summary(summary(stack, put, 1.0), out)
    assert "mode" not in out.getvalue() and "skipped" not in out.getvalue()


def test_a_job_completed_before_write_modes_reads_with_every_outcome():
    from unittest import mock

    old = {"pk": {"S": "j"}, "sk": {"S": "job"}, "status": {"S": "COMPLETE"},
           "ledger_format": {"N": "2"}, "rows_read": {"N": "3"}, "rows_written": {"N": "2"},
           "rows_rejected": {"N": "1"}, "rows_superseded": {"N": "0"}}
    ddb = mock.Mock()
    ddb.get_item.side_effect = lambda **kw: {"Item": old} if kw["Key"]["sk"]["S"] == "job" else {}
    job = ledger.get_job(ddb, "ledger", "j")
    assert ledger.counts_of(job) == ledger.MessageCounts(2, 1, 0)
    assert (job["rows_deleted"], job["rows_skipped_existing"]) == (0, 0)
    assert list(job)[-3:] == ["rows_deleted", "rows_skipped_existing", "rows_cancelled"]
