"""`splitter.batch.count_short` counts what csv.reader reads, one record at a time, even
though it parses every quoted record of a batch in one csv.reader pass."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.contract import parse_csv_rows
from splitter.batch import count_short

FIELD = st.text(alphabet='ab,;"\n\r ', max_size=6)


def record(fields: list[str], delimiter: str) -> str:
    """One record as the cutter hands it over: csv.writer's, without its line end (a
    carriage return or newline in a field is then quoted, as it must be to stay in it)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(fields)
    return out.getvalue().removesuffix("\r\n")


def one_by_one(records: list[str], delimiter: str, width: int) -> int:
    return sum(1 for r in records if len(parse_csv_rows(r, delimiter)[0]) < width)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=1, max_size=5), max_size=30),
       delimiter=st.sampled_from([",", ";"]), width=st.integers(2, 5))
def test_the_count_is_csv_readers_record_by_record(rows: list[list[str]], delimiter: str,
                                                   width: int) -> None:
    records = [record(fields, delimiter) for fields in rows]
    records = [r for r in records if r]  # the cutter never hands over an empty record
    assert count_short(records, delimiter, width) == one_by_one(records, delimiter, width)


def test_quotes_inside_unquoted_fields_and_stray_carriage_returns_count_as_csv_reader_reads_them() -> None:
    records = ['a,b"c,d', 'x"y,z', '"p,q",r', '"p,q"', 'a,"b\r",c', 'a,"b\nc"', '"a""b",c,d']
    for width in (2, 3, 4):
        assert count_short(records, ",", width) == one_by_one(records, ",", width), width
    assert count_short(['"p,q"', "a,b,c"], ",", 3) == 1
    # a carriage return outside quotes (the cutter never hands one over) makes the one
    # pass read more rows than records: counted one by one instead
    stray = ['x\ry,"z",q', '"a",b,c']
    assert count_short(stray, ",", 3) == one_by_one(stray, ",", 3) == 1
    assert count_short(['"p,q",r,s', 'a,"b,c"'], ",", 3) == 1
