"""The version-2 (CSV text) message form, and the splitter's bounded reads: ranged GETs
streamed in grid-aligned pieces, and gzip inflated a piece at a time."""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.contract import (
    CSV_SCHEMA_VERSION,
    ContractError,
    CsvRowsEncoder,
    RowsMessage,
    Source,
    decode,
)
from splitter.range_reader import ObjectInfo, iter_ranges
from splitter.source import gunzip

SOURCE = Source("bucket", "in/é data.csv", "etag", None)
HEADER = ["account", "offer_id", "note"]


def test_a_csv_body_is_json_with_the_records_as_text_and_decodes_to_rows() -> None:
    records = ['a1,1,plain', 'a2,2,"with, comma"', 'a3,3,"two\nlines, ""quoted"""', "a4,4,é😀\r"]
    body = CsvRowsEncoder("job-1", SOURCE, HEADER, ",").encode(7, [2, 3, 4, 6], records)
    data = json.loads(body)
    assert data == {
        "v": CSV_SCHEMA_VERSION, "kind": "rows", "job": "job-1", "source": SOURCE.as_dict(),
        "header": HEADER, "delimiter": ",", "part": 0, "parts": 1, "seq": 7,
        "lines": [2, 3, 4, 6], "csv": "\n".join(records) + "\n",
    }
    message = decode(body)
    assert (message.job, message.seq, message.message_id, message.lines) == ("job-1", 7, "7", [2, 3, 4, 6])
    assert message.rows == [["a1", "1", "plain"], ["a2", "2", "with, comma"],
                            ["a3", "3", 'two\nlines, "quoted"'], ["a4", "4", "é😀"]]


def test_the_delimiter_travels_with_the_text() -> None:
    body = CsvRowsEncoder("job", SOURCE, HEADER, "\t").encode(0, [2], ["a\tb,c\td"])
    assert decode(body).rows == [["a", "b,c", "d"]]


def test_version_1_bodies_still_decode_and_unknown_versions_do_not() -> None:
    v1 = RowsMessage("job", 3, SOURCE, HEADER, [5], [["a", "1", "x"]]).encode()
    assert json.loads(v1)["v"] == 1 and decode(v1).rows == [["a", "1", "x"]]
    with pytest.raises(ContractError, match="unsupported message version: 3"):
        decode(v1.replace('"v":1', '"v":3'))


@pytest.mark.parametrize(("records", "lines", "reason"), [
    (['a,1,"open'], [2], "bad field"),  # a quote left open: strict parsing refuses it
    (["a,1,x", "b,2,y"], [2], "different number of lines and rows"),
])
def test_a_csv_body_that_does_not_add_up_is_a_contract_error(records: list[str], lines: list[int],
                                                            reason: str) -> None:
    body = CsvRowsEncoder("job", SOURCE, HEADER).encode(0, lines, records)
    with pytest.raises(ContractError, match=reason):
        decode(body)


# --------------------------------------------------------------------------- reads


class PieceBody:
    """A streaming body that returns at most `short` bytes a read, like a socket may."""

    def __init__(self, data: bytes, short: int) -> None:
        self.data, self.short, self.reads = data, short, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        size = len(self.data) if size < 0 else min(size, self.short)
        out, self.data = self.data[:size], self.data[size:]
        return out

    def close(self) -> None:
        pass


class RangedS3:
    def __init__(self, data: bytes, short: int) -> None:
        self.data, self.short, self.gets = data, short, 0

    def get_object(self, **params: Any) -> dict[str, Any]:
        self.gets += 1
        first, last = (int(x) for x in params["Range"].removeprefix("bytes=").split("-"))
        return {"Body": PieceBody(self.data[first:last + 1], self.short)}


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 300), range_bytes=st.integers(1, 64), piece=st.integers(1, 40),
       short=st.integers(1, 50), start=st.integers(0, 300))
def test_ranged_reads_come_in_pieces_on_a_fixed_grid(size: int, range_bytes: int, piece: int,
                                                     short: int, start: int) -> None:
    """One GET per range, pieces of at most `piece` bytes that end on multiples of the
    piece or range size whatever the socket returns, so a read resumed at `start` cuts
    exactly where an uninterrupted one did."""
    data = bytes(i % 251 for i in range(size))
    info = ObjectInfo(SOURCE, size)
    s3 = RangedS3(data, short)
    pieces = list(iter_ranges(s3, info, range_bytes, align=True, piece_bytes=piece))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= piece for p in pieces)
    assert s3.gets == -(-size // range_bytes)
    ends, position = set(), 0
    for p in pieces:
        position += len(p)
        ends.add(position)
        assert position % piece == 0 or position % range_bytes == 0 or position == size
    start = min(start, size)
    resumed = list(iter_ranges(RangedS3(data, short), info, range_bytes, start, align=True,
                               piece_bytes=piece))
    assert b"".join(resumed) == data[start:]
    position = start
    for p in resumed[:-1]:
        position += len(p)
        assert position in ends


def test_gzip_never_inflates_more_than_a_piece_at_a_time() -> None:
    plain = b"account,offer_id\n" + b"a,1\n" * 2_000_000  # 8 MB that compresses ~1000x
    packed = gzip.compress(plain) + gzip.compress(b"b,2\n")  # two members, as cat makes
    assert len(packed) < 100_000
    out = list(gunzip([packed[i:i + 4096] for i in range(0, len(packed), 4096)], piece_bytes=65536))
    assert max(len(p) for p in out) <= 65536
    assert b"".join(out) == plain + b"b,2\n"


def test_a_body_read_in_pieces_is_closed_once_done() -> None:
    closed: list[bool] = []

    class Body(io.BytesIO):
        def close(self) -> None:
            closed.append(True)
            super().close()

    class S3:
        def get_object(self, **params: Any) -> dict[str, Any]:
            return {"Body": Body(b"x" * 10)}

    assert list(iter_ranges(S3(), ObjectInfo(SOURCE, 10), 100, piece_bytes=4)) == [b"xxxx", b"xxxx", b"xx"]
    assert closed == [True]


def test_a_body_that_ends_early_fails_loudly_rather_than_truncating() -> None:
    class ShortS3:
        def get_object(self, **params: Any) -> dict[str, Any]:
            return {"Body": io.BytesIO(b"x" * 6)}  # the range asked for 10 bytes

    with pytest.raises(OSError, match="ended after 6 bytes"):
        list(iter_ranges(ShortS3(), ObjectInfo(SOURCE, 10), 100, piece_bytes=4))


def test_a_rejection_bigger_than_a_message_travels_as_a_preview() -> None:
    """A row's JSON can be several times its CSV text (300,000 one-character fields: 600 KB
    of CSV, 1.2 MB of JSON): its rejection must still fit a DLQ message."""
    from fanout.contract import KIND_REJECTED, Rejection, as_replay, rejected_messages

    message = RowsMessage("job", 4, SOURCE, HEADER, [], [])
    wide = Rejection(9, ["a"] * 300_000, "column_count", "300000 fields, header has 3")
    small = Rejection(10, ["b", "2", "x"], "bad_number", "not a number")
    out = rejected_messages(message, [wide, small])
    assert all(len(m.encode().encode()) <= 1_048_576 for m in out)
    carried = [r for m in out for r in m.rejections]
    assert [(r.line, r.reason) for r in carried] == [(9, "row_too_large"), (10, "bad_number")]
    assert "rejected as column_count" in carried[0].detail and len(carried[0].row) == 100
    assert all(m.kind == KIND_REJECTED for m in out)
    assert as_replay(out[0]).rows == []  # a preview is never written as if it were the row
