"""Replays counted per row: every row's place (seq, index) travels with it through the
contract."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

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
from splitter.batch import Batcher

SOURCE = Source("b", "k")
HEADER = ["account", "offer_id"]


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
