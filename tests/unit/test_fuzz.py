"""Fuzzing the splitter's chunker and the writer's mapping with random input (issue 7).

In memory, no moto. Three properties:

(a) the chunker, fed any bytes (stray quotes included) in any range sizes, is csv.reader
    (strict) on the decoded text: the same records at the same source lines when
    csv.reader reads it, and otherwise CsvDecodeError naming a line >= 1, never a
    different load;
(b) a spec bound to any header fails only with TemplateError, and RowMapper.to_item on
    any row either rejects it (RowRejected with a reason code) or returns an item with
    non-empty keys that fits DynamoDB's 400 KB;
(c) writer.load.map_rows accounts for every row of any message:
    items + rejections + superseded == rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fanout.contract import RowsMessage, Source, decode
from fanout.keys import TemplateError
from fanout.mapping import RowMapper, RowRejected, Spec
from splitter.batch import Batcher
from splitter.chunker import CsvDecodeError, iter_records, iter_regions
from writer.load import map_rows

# FANOUT_FUZZ_EXAMPLES=2000 for a deeper run; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("FANOUT_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_ITEM_BYTES = 400 * 1024
DELIMITERS = [",", ";", "|", "\t"]

# --------------------------------------------------------------------------- (a) chunker

cell = st.text(alphabet=st.sampled_from(list('ab ,;|\t"\n\ré€😀\x00x1')) | st.characters(codec="utf-8"),
               max_size=10)
valid_junk = st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\n", b",", b";", b"|", b"\t", b"\xef\xbb\xbf",
                              "é".encode(), b"\x00"])
invalid_junk = st.binary(min_size=1, max_size=6) | st.sampled_from(
    [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xc0\xaf"])


@st.composite
def csv_bytes(draw: st.DrawFn, *, stray_quotes: bool, damage: bool = True) -> tuple[bytes, str]:
    """A CSV as some tool might write it, then damaged: (bytes, delimiter).

    Quoting is random (csv.writer's minimal or all), as are the delimiter, the line
    terminator, blank lines, ragged rows, a BOM, an occasional field of up to 200 KB,
    random bytes (invalid UTF-8 among them) spliced in, and truncation. Without
    `stray_quotes` the spliced bytes hold no `"`, so quoting stays RFC 4180's. Without
    `damage`, nothing is spliced in or cut off: csv.writer's output as it wrote it.
    """
    delimiter = draw(st.sampled_from(DELIMITERS))
    rows = draw(st.lists(st.lists(cell, max_size=5), max_size=12))  # [] is a blank line
    if rows and draw(st.integers(0, 5)) == 0:  # past csv's default 128 KiB field limit too
        row = draw(st.integers(0, len(rows) - 1))
        rows[row] = [*rows[row], "h" * draw(st.sampled_from([4_000, 131_073, 200_000]))]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
               quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))).writerows(rows)
    data = bytearray(out.getvalue().encode("utf-8"))
    junk = invalid_junk if draw(st.integers(0, 2)) == 0 else valid_junk
    for _ in range(draw(st.integers(0, 3)) if damage else 0):
        piece = draw(junk)
        if not stray_quotes:
            piece = piece.replace(b'"', b"")
        at = draw(st.integers(0, len(data)))
        data[at:at] = piece
    if draw(st.booleans()):
        data[:0] = codecs.BOM_UTF8
    if damage and data and draw(st.integers(0, 3)) == 0:
        del data[draw(st.integers(0, len(data))):]
    return bytes(data), delimiter


@st.composite
def range_sizes(draw: st.DrawFn, length: int) -> int:
    # At most ~200 ranges: a record longer than a range is re-copied at each one.
    smallest = max(1, length // 200)
    return draw(st.integers(smallest, max(smallest, 64)) | st.integers(smallest, max(smallest, length + 1)))


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def reference(data: bytes, delimiter: str, strict: bool = False) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter,
                           strict=strict))


def reference_lines(data: bytes, delimiter: str) -> list[tuple[int, list[str]]]:
    """csv.reader (strict) on the whole text, each record with its source line: 1 + the
    \n before its first physical line (raises csv.Error or UnicodeDecodeError)."""
    consumed: list[str] = []

    def physical_lines():
        for piece in io.StringIO(data.decode("utf-8-sig"), newline=""):
            consumed.append(piece)
            yield piece

    out, line = [], 1
    for row in csv.reader(physical_lines(), delimiter=delimiter, strict=True):
        out.append((line, row))
        line += "".join(consumed).count("\n")
        consumed.clear()
    return out


def check_chunker(data: bytes, delimiter: str, size: int) -> list[list[str]] | None:
    """The chunker's records, or None when it (rightly) raised CsvDecodeError."""
    try:
        records = list(iter_records(cut(data, size), delimiter=delimiter))
    except CsvDecodeError as exc:
        assert exc.line >= 1, exc
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            bad_line = 1 + data.count(b"\n", 0, bad.start)
            if exc.reason.startswith("malformed CSV"):  # an earlier error wins
                assert exc.line <= bad_line, (exc, bad)
                event("chunker: malformed CSV before invalid UTF-8")
                return None
            assert exc.reason.startswith("bytes are not valid utf-8"), exc
            assert exc.line == bad_line, (exc, bad)
            event("chunker: invalid UTF-8")
            return None
        # Valid UTF-8: only CSV that csv.reader in strict mode rejects (an unterminated
        # quote, a character after a closing quote) may fail, and then the job fails loudly.
        with pytest.raises(csv.Error):
            reference(data, delimiter, strict=True)
        event("chunker: malformed CSV")
        return None
    lines = [line for line, _ in records]
    assert lines == sorted(lines) and all(line >= 1 for line in lines)
    event("chunker: parsed" + (" a field over 100 KB" if len(data) > 100_000 else ""))
    return [fields for _, fields in records]


@FUZZ
@given(st.data())
def test_chunker_on_rfc4180_quoting_equals_csv_reader(data: st.DataObject) -> None:
    raw, delimiter = data.draw(csv_bytes(stray_quotes=False))
    size = data.draw(range_sizes(len(raw)))
    records = check_chunker(raw, delimiter, size)
    if records is not None:
        assert records == reference(raw, delimiter)


stray_bytes = st.lists(st.sampled_from(list(b'ab,;|\t"\'\r\n ') + [0xC3, 0xA9, 0x00]), max_size=120)


@FUZZ
@given(st.data())
def test_chunker_on_any_bytes_is_csv_reader_strict(data: st.DataObject) -> None:
    """Stray quotes anywhere (5'10", a"b, \"a\"b, a quote never closed), any range size:
    the chunker loads exactly csv.reader's records at their source lines, or, where
    csv.reader (strict) rejects the text or it is not UTF-8, fails with a line."""
    raw, delimiter = data.draw(csv_bytes(stray_quotes=True) | st.tuples(
        st.binary(max_size=300) | stray_bytes.map(bytes), st.sampled_from(DELIMITERS)))
    size = data.draw(range_sizes(len(raw)))
    try:
        expected = reference_lines(raw, delimiter)
    except (csv.Error, UnicodeDecodeError):
        expected = None
    records = check_chunker(raw, delimiter, size)
    if expected is None:
        assert records is None, "csv.reader (strict) rejects this, the chunker loaded it"
        return
    assert records is not None
    assert list(iter_records(cut(raw, size), delimiter=delimiter)) == expected
    event("strict csv.reader reads it" + (" (a stray quote)" if b"\"" in raw else ""))


class Capture:
    """Stands in for the Enqueuer: keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, body: str, size: int | None = None) -> None:
        self.bodies.append(body)


def what_the_writer_parses(data: bytes, delimiter: str, size: int) -> list[tuple[int, list[str]]] | None:
    """The splitter's path to the queue and back: the whole object cut into regions first
    (which checks it, as the splitter does before it sends), then into records
    (`data_records`) and 25-record messages (the real Batcher), which the writer decodes.
    None when the cut (or decoding) rightly raised CsvDecodeError."""
    try:
        regions = list(iter_regions(cut(data, size), delimiter=delimiter))
    except CsvDecodeError as exc:
        assert exc.line >= 1 and exc.reason, exc
        event("messages: rejected by the check")
        return None
    queue = Capture()
    batcher = Batcher(queue, "job", SOURCE, ["header"], delimiter, 0)  # type: ignore[arg-type]
    for region in regions:
        lines, texts = region.data_records()
        assert all(texts) and len(lines) == len(texts)
        batcher.add(lines, texts)
    batcher.flush()
    out: list[tuple[int, list[str]]] = []
    for body in queue.bodies:
        message = decode(body)
        assert message.header == ["header"] and not message.rejections
        out.extend(zip(message.lines, message.rows, strict=True))
    event("messages: carried")
    return out


@FUZZ
@given(st.data())
def test_messages_carry_csv_readers_records_on_rfc4180_quoting(data: st.DataObject) -> None:
    """What csv.writer writes (any delimiter, quoting, terminator, blank lines, multi-line
    and 200 KB fields, any range size): the check passes and the writer parses exactly
    csv.reader's non-blank records, at the lines the record-by-record parse gives."""
    raw, delimiter = data.draw(csv_bytes(stray_quotes=False, damage=False))
    size = data.draw(range_sizes(len(raw)))
    carried = what_the_writer_parses(raw, delimiter, size)
    assert carried is not None
    assert [fields for _, fields in carried] == [r for r in reference(raw, delimiter) if r]
    records = [(line, fields) for line, fields in iter_records(cut(raw, size), delimiter=delimiter)
               if fields]
    assert carried == records


@FUZZ
@given(st.data())
def test_messages_carry_csv_readers_records_whatever_the_quoting(data: st.DataObject) -> None:
    """Any damage, stray quotes included: the writer gets csv.reader's non-blank records at
    their source lines when csv.reader (strict) reads the file, and otherwise the cut
    rejects it (the job fails with a line, before anything is sent)."""
    raw, delimiter = data.draw(csv_bytes(stray_quotes=True) | st.tuples(
        stray_bytes.map(bytes), st.sampled_from(DELIMITERS)))
    carried = what_the_writer_parses(raw, delimiter, data.draw(range_sizes(len(raw))))
    try:
        expected = [(line, row) for line, row in reference_lines(raw, delimiter) if row]
    except (csv.Error, UnicodeDecodeError):
        assert carried is None
        return
    assert carried == expected


# --------------------------------------------------------------------------- (b) mapping

TYPED = Spec.from_dict({
    "table": {"partition_key": {"name": "account"}, "sort_key": {"name": "offer_id", "type": "N"}},
    "columns": {"types": {"amount": "N", "active": "BOOL", "meta": "JSON"}},
})
TEMPLATED = Spec.from_dict({
    "table": {"partition_key": {"name": "pk", "template": "A_{account}"},
              "sort_key": {"name": "sk", "template": "{offer_id}#{_line}"}},
    "columns": {"default_type": "infer", "empty": "null", "drop": ["risk"]},
})
SPECS = {"default": Spec.default(), "typed": TYPED, "templated": TEMPLATED}

names = st.sampled_from(["account", "offer_id", "amount", "active", "meta", "risk", "", "a b", "é"]) \
    | st.text(max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**40, 10**40) | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str).map(float),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
values = (
    st.text(max_size=12)
    | st.sampled_from(["", " ", "0", "-0", "1", "1.5", " 7 ", ".5", "1e5", "1E-131", "9.9E+125", "1e126",
                       "1" * 38, "1" * 39, "NaN", "Infinity", "-inf", "12,5", "0x10", "yes", "No", "TRUE",
                       "1", "maybe", "null", "{}", "[]", "{", '{"a": NaN}', "1" * 5000, '"\\u00e9"'])
    | json_values.map(json.dumps)
    | st.sampled_from([100_000, 150_000, 210_000, 405_000]).map(lambda n: "y" * n)
)


def dynamodb_size(item: dict[str, Any]) -> int:
    """Item size by DynamoDB's documented rules, numbers at their 21-byte maximum."""
    def value(v: dict[str, Any]) -> int:
        (type_, x), = v.items()
        if type_ == "S":
            return len(x.encode("utf-8"))
        if type_ == "N":
            return 21
        if type_ in ("BOOL", "NULL"):
            return 1
        if type_ == "B":
            return len(x)
        if type_ == "SS":
            return sum(len(s.encode("utf-8")) for s in x)
        if type_ == "L":
            return 3 + sum(value(e) + 1 for e in x)
        assert type_ == "M", v
        return 3 + sum(len(k.encode("utf-8")) + value(e) + 1 for k, e in x.items())
    return sum(len(name.encode("utf-8")) + value(v) for name, v in item.items())


@st.composite
def rows_for(draw: st.DrawFn, width: int, count: int) -> list[list[str]]:
    rows = []
    for _ in range(count):
        n = width if draw(st.integers(0, 5)) else draw(st.integers(0, width + 2))
        rows.append(draw(st.lists(values, min_size=n, max_size=n)))
    return rows


def check_item(spec: Spec, item: dict[str, Any]) -> None:
    for name, type_ in spec.key_schema():
        (got_type, value), = item[name].items()
        assert got_type == type_ and len(value) > 0, (name, item[name])
    assert dynamodb_size(item) <= MAX_ITEM_BYTES


def bind(spec: Spec, header: list[str]) -> RowMapper | None:
    try:
        return spec.bind(header)
    except TemplateError as exc:
        assert str(exc)
        return None


@FUZZ
@given(st.sampled_from(sorted(SPECS)), st.lists(names, max_size=7), st.data())
def test_row_mapper_rejects_with_a_reason_or_returns_a_valid_item(spec_name: str, header: list[str],
                                                                  data: st.DataObject) -> None:
    spec = SPECS[spec_name]
    if data.draw(st.booleans()):  # mostly headers that bind
        header = [*dict.fromkeys(["account", "offer_id", "amount", "active", "meta", *header])]
    mapper = bind(spec, header)
    if mapper is None:
        return
    for line, row in enumerate(data.draw(rows_for(len(header), 4)), start=2):
        try:
            item = mapper.to_item(row, line)
        except RowRejected as exc:
            assert isinstance(exc.reason, str) and exc.reason and exc.detail
            event(f"rejected: {exc.reason}")
            continue
        check_item(spec, item)
        event("item")


# --------------------------------------------------------------------------- (c) map_rows

SOURCE = Source("bucket", "uploads/f.csv", "etag")
key_values = st.sampled_from(["", "a", "b", "1", "2", " 3", "x"])


@FUZZ
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_map_rows_accounts_for_every_row(spec_name: str, data: st.DataObject) -> None:
    spec = SPECS[spec_name]
    header = data.draw(st.sampled_from([["account", "offer_id", "amount", "active", "meta"],
                                        ["account", "offer_id", "amount", "active", "meta", "risk"]])
                       | st.lists(names, max_size=6))
    count = data.draw(st.integers(0, 25))
    rows = data.draw(rows_for(len(header), count))
    for row in rows:  # few distinct keys, so rows supersede each other
        for column in ("account", "offer_id"):
            if column in header and len(row) == len(header) and data.draw(st.booleans()):
                row[header.index(column)] = data.draw(key_values)
    first = data.draw(st.integers(2, 10**6))
    lines = list(range(first, first + count))
    message = RowsMessage("job", 0, SOURCE, header, lines, rows)

    items, item_lines, rejections, superseded = map_rows(message, spec)

    assert len(items) + len(rejections) + superseded == len(rows)
    assert len(items) == len(item_lines) == len(set(item_lines)) and set(item_lines) <= set(lines)
    assert all(r.reason and r.line in lines for r in rejections)
    assert not set(item_lines) & {r.line for r in rejections}
    mapper = bind(spec, header)
    if mapper is None:
        assert {r.reason for r in rejections} <= {"bad_header"} and not items
        return
    keys = [mapper.key_of(item) for item in items]
    assert len(set(keys)) == len(keys)
    for item in items:
        check_item(spec, item)
    # The later row in file order wins: each item comes from the last good row with its key.
    rejected_lines = {r.line for r in rejections}
    last: dict[Any, int] = {}
    for line, row in zip(lines, rows, strict=True):
        if line not in rejected_lines:
            last[mapper.key_of(mapper.to_item(row, line))] = line
    assert dict(zip(keys, item_lines, strict=True)) == last


# --------------------------------------------------------------------------- stray quotes

STRAY = b'name,height,note\nann,5\'10",ok\nbob,6,"two\nlines"\ncat,5,x\n'


@pytest.mark.parametrize("size", [1, 7, 8 * 1024 * 1024])
def test_a_stray_quote_does_not_split_a_later_quoted_field(size: int) -> None:
    assert reference(STRAY, ",") == [["name", "height", "note"], ["ann", "5'10\"", "ok"],
                                     ["bob", "6", "two\nlines"], ["cat", "5", "x"]]
    assert list(iter_records(cut(STRAY, size))) == [
        (1, ["name", "height", "note"]), (2, ["ann", "5'10\"", "ok"]), (3, ["bob", "6", "two\nlines"]),
        (5, ["cat", "5", "x"])]


@pytest.mark.parametrize(("data", "line", "reason"), [
    (b'a,b\n1,"x"y\n', 2, "malformed CSV: ',' expected after '\"'"),
    (b'a,b\n5\'10",1\n2,"never closed\n3,4\n', 3, "malformed CSV: unexpected end of data"),
])
@pytest.mark.parametrize("size", [1, 5, 1024])
def test_what_strict_csv_reader_rejects_fails_with_the_records_line(
        data: bytes, line: int, reason: str, size: int) -> None:
    with pytest.raises(csv.Error):
        reference(data, ",", strict=True)
    with pytest.raises(CsvDecodeError) as error:
        list(iter_records(cut(data, size)))
    assert error.value.line == line and error.value.reason.startswith(reason)


def typed_message(meta: str) -> RowsMessage:
    rows = [[f"a{i}", str(i), "1.5", "yes", "{}"] for i in range(25)]
    rows[7][4] = meta
    return RowsMessage("job", 0, SOURCE, ["account", "offer_id", "amount", "active", "meta"],
                       list(range(2, 27)), rows)


@pytest.mark.parametrize("meta", ['"\\ud800"', '{"\\udfff": 1}', '["ok", "\\ud83d"]'])
def test_a_lone_surrogate_in_json_rejects_the_row_only(meta: str) -> None:
    items, _, rejections, superseded = map_rows(typed_message(meta), TYPED)
    assert (len(items), [(r.line, r.reason) for r in rejections], superseded) == (24, [(9, "bad_json")], 0)


def test_deeply_nested_json_rejects_the_row_only() -> None:
    items, _, rejections, superseded = map_rows(typed_message("[" * 5000), TYPED)
    assert (len(items), [(r.line, r.reason) for r in rejections], superseded) == (24, [(9, "bad_json")], 0)
