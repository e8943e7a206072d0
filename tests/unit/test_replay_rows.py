"""Replays counted per row: every row's place (seq, index) travels with it through the
contract, a replay's log entry says which of its rows landed where, and a shard moves
each row out of rejected once, in a bitmap whose size does not depend on the redrives."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from fanout import ledger
from fanout.contract import (
    KIND_REJECTED,
    ContractError,
    Rejection,
    RowsMessage,
    Source,
    as_replay,
    decode,
    rejected_messages,
    split_to_fit,
)
from fanout.ledger import MessageCounts, Shard
from fanout.mapping import item_size
from splitter.batch import Batcher

SOURCE = Source("b", "k")
HEADER = ["account", "offer_id"]


def test_a_replays_entry_carries_its_rows_outcomes_and_old_entries_read_as_before():
    counts = {"0": MessageCounts(24, 1, 0),
              "0~a": MessageCounts(1, 0, 0, masks=ledger.row_masks(written=[3])),
              "1~b": MessageCounts(0, 2, 0, masks=ledger.row_masks()),
              "2~c": MessageCounts(0, 0, 1, 1, 1, masks=ledger.row_masks(
                  superseded=[0], deleted=[24], skipped_existing=[7])),
              "3~old": MessageCounts(2, 0, 0)}
    encoded = ledger.layout._encode_entries(counts)
    assert encoded == "0:24:1:0,0~a:1:0:0@8,1~b:0:2:0@0,2~c:0:0:1:1:1@0.1.1000000.80,3~old:2:0:0"
    assert dict(ledger.parse_entries(encoded)) == counts
    # What writers wrote before: no masks, so counted by replay id
    assert dict(ledger.parse_entries("7:25:0:0,7~x:1:0:0:2:0")) == {
        "7": MessageCounts(25), "7~x": MessageCounts(1, 0, 0, 2, 0)}


def apply(shard: Shard, entries: list[tuple[str, MessageCounts]]) -> None:
    for mid, counts in entries:
        shard.apply(shard.applied + 1, mid, counts)


def replay(mid: str, rejected: int = 0, **indexes: list[int]) -> tuple[str, MessageCounts]:
    masks = ledger.row_masks(**indexes)
    landed = [len(v) for v in (indexes.get(n, []) for n in ledger.layout.LANDED)]
    return mid, MessageCounts(landed[0], rejected, *landed[1:], masks=masks)


def test_a_shard_moves_each_replayed_row_out_of_rejected_once():
    shard = Shard(0)
    apply(shard, [("5", MessageCounts(20, 5, 0)), ("6", MessageCounts(22, 3, 0))])
    apply(shard, [
        replay("5~x", 5),  # all 5 rejected again: nothing moves
        replay("5~x", 3, written=[1, 2]),  # the same id, after a spec fix: rows 1 and 2 land
        replay("5~x", 3, written=[1, 2]),  # a duplicate delivery
        replay("5~y", 1, written=[1], superseded=[2, 3]),  # overlaps: only row 3 is new
        replay("5~z", 0, deleted=[4], written=[9]),  # row 9 (an index past the 5): new
        replay("6~x", written=[0, 24]),
        ("6~old", MessageCounts(1, 0, 0)),  # a replay from before indexes: by its id
        ("6~old", MessageCounts(1, 0, 0)),
    ])
    assert shard.totals.counts == MessageCounts(20 + 22 + 3 + 2 + 1, 0, 1, 1)
    assert shard.totals.distinct == 2 and shard.replays == {"6~old"}
    assert shard.landed_rows(5) == 0b1000011110 and shard.landed_rows(6) == 1 | 1 << 24
    # The item round-trips, and a later fold of it goes on from there
    again = Shard.from_item(0, shard.item("j"))
    assert (again.landed, again.totals, again.replays) == (shard.landed, shard.totals, shard.replays)
    apply(again, [replay("5~w", written=[1, 2]), replay("6~w", skipped_existing=[24])])
    assert again.totals == shard.totals and again.applied == shard.applied  # landed before
    # The whole-log rule (ledger.totals) is the shards' own
    entries = {"5": MessageCounts(20, 5, 0), "5~x": MessageCounts(2, 3, 0, masks=(6, 0, 0, 0)),
               "5~y": replay("5~y", 1, written=[1], superseded=[2, 3])[1]}
    assert ledger.totals(entries) == MessageCounts(22, 2, 1)


def test_a_shard_without_replays_has_no_bitmap_and_a_rejected_replay_makes_none():
    shard = Shard(0)
    apply(shard, [("5", MessageCounts(20, 5, 0)), replay("5~x", 5)])
    assert shard.landed is None and "landed" not in shard.item("j")


def test_a_shards_item_is_under_14_kb_whatever_its_replays():
    """The worst case: every bit of the landed bitmap as random as can be (zlib cannot
    shrink it: 12,811 bytes for 12,800), the longest job id, counts of 7 digits: 13.5 KB,
    against DynamoDB's 400 KB, which the `replays` set of ids passes at about 17,000 ids
    of 23 characters."""
    shard = Shard(10**12 - 1, landed=bytearray(os.urandom(ledger.layout.SHARD_SEQS * 25 // 8)),
                  totals=ledger.Totals(4096, MessageCounts(*[9_999_999] * 5)), applied=10**12)
    item = shard.item("j" * 40 + "-0123456789ab")
    assert 13_000 < item_size(item) < 14_000
    assert Shard.from_item(shard.index, item).landed == shard.landed
    # A few replayed rows cost a few bytes: the shard stays one write unit
    apply(few := Shard(0), [replay("7~x", written=[3])])
    assert item_size(few.item("j" * 53)) < 1024


def test_every_row_knows_its_place_in_its_seq():
    whole = RowsMessage("j", 3, SOURCE, HEADER, [2, 3], [["a", "1"], ["a", "2"]])
    assert whole.row_indexes == [0, 1] and "indexes" not in whole.encode()
    assert RowsMessage("j", 3, SOURCE, HEADER, [2], [["a", "1"]], part=1, parts=2).row_indexes is None
    assert RowsMessage("j", 3, SOURCE, HEADER, [2], [["a", "1"]], replay="r").row_indexes is None
    body = json.loads(RowsMessage("j", 3, SOURCE, HEADER, [2], [["a", "1"]], indexes=[24]).encode())
    assert decode(json.dumps(body)).row_indexes == [24]
    for bad in ({"indexes": [25]}, {"indexes": [0, 1]},
                {"kind": KIND_REJECTED, "rejections": [{"line": 2, "row": [], "reason": "x",
                                                        "index": -1}]}):
        with pytest.raises(ContractError):
            decode(json.dumps(body | bad))


def test_parts_of_a_split_message_carry_their_rows_indexes_in_the_whole_seq():
    # Records 0..5, where record 2 is too long for any message and 4 fits only alone
    bodies: list[str] = []
    sink = SimpleNamespace(send=lambda body, size=None: bodies.append(body), drain=lambda: 0)
    batcher = Batcher(sink, "j", SOURCE, HEADER, ",", 7)  # type: ignore[arg-type]
    records = [f"a,{i}" for i in range(6)]
    records[2] = "a," + "x" * 1_100_000
    records[4] = "a," + "y" * 700_000
    batcher.add(list(range(10, 16)), records)
    batcher.flush()
    parts = [decode(b) for b in bodies]
    assert {p.message_id for p in parts} == {f"7.{i}" for i in range(len(parts))}
    places = sorted([i for p in parts for i in p.indexes or []]
                    + [r.index for p in parts for r in p.rejections if r.index is not None])
    assert places == [0, 1, 2, 3, 4, 5]
    (cut,) = [r for p in parts for r in p.rejections]
    assert (cut.line, cut.index, cut.reason) == (12, 2, "row_too_large")
    # A row too large as JSON, not as CSV, keeps its index too
    *_, alone = split_to_fit(RowsMessage("j", 7, SOURCE, HEADER, [10, 11], [["a", "1"], ["a", "x" * 600]],
                                         indexes=[3, 8]), limit=500)
    assert alone.rejections[0].index == 8


def test_rejected_rows_keep_their_index_into_the_dlq_and_back_as_a_replay():
    message = RowsMessage("j", 3, SOURCE, HEADER, [], [])
    rejections = [Rejection(5, ["", "2"], "empty_key", "d", 3),
                  Rejection(9, ["x" * 2_000_000], "bad_number", "d", 7),
                  Rejection(11, ["a", "z"], "row_too_large", "d", 9)]
    waiting = [decode(m.encode()) for m in rejected_messages(message, rejections)]
    assert [(r.line, r.index) for m in waiting for r in m.rejections] == [(5, 3), (9, 7), (11, 9)]
    replays = [as_replay(m) for m in waiting]
    assert [(r.lines, r.indexes) for r in replays] == [([5], [3]), ([], []), ([], [])]
    assert [[r.index for r in m.rejections] for m in replays] == [[], [7], [9]]  # previews stay
    # A rejection from before indexes: its replay carries none (counted by id)
    (legacy,) = rejected_messages(message, [Rejection(5, ["", "2"], "empty_key")])
    assert as_replay(decode(legacy.encode())).indexes is None
