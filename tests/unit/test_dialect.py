"""How a file is stored, decided from its first bytes (fanout/dialect.py) and by the spec."""

from __future__ import annotations

import codecs
import gzip

import pytest

from fanout.dialect import (
    DialectError,
    detect,
    hint_delimiter,
    hint_one_column,
    sniff_delimiter,
    suggest_delimiter,
)
from fanout.mapping import Spec, SpecError

HEADER = "account;offer_id;note\na1;1;x\n"


def test_gzip_is_recognised_by_its_magic_bytes_whatever_the_name() -> None:
    found = detect(gzip.compress(HEADER.encode()))
    assert found.gzip and found.delimiter == ";" and found.delimiter_from == "header"
    assert not detect(HEADER.encode()).gzip


def test_bytes_that_start_like_gzip_but_are_not_fail_clearly() -> None:
    with pytest.raises(DialectError, match="not valid gzip"):
        detect(b"\x1f\x8b" + b"garbage, not deflate")


@pytest.mark.parametrize(("bom", "codec"), [(codecs.BOM_UTF16_LE, "utf-16-le"),
                                            (codecs.BOM_UTF16_BE, "utf-16-be")])
def test_a_utf16_bom_decides_the_encoding_and_the_header_is_sniffed_through_it(bom, codec) -> None:
    found = detect(bom + HEADER.replace(";", "\t").encode(codec))
    assert (found.encoding, found.encoding_from, found.delimiter) == ("utf-16", "bom", "\t")


def test_a_utf8_bom_is_utf8_and_no_bom_is_the_utf8_default() -> None:
    assert detect(codecs.BOM_UTF8 + b"a,b\n").encoding_from == "bom"
    assert detect(b"a,b\n").encoding_from == "default"
    assert detect(b"a,b\n").encoding == detect(codecs.BOM_UTF8 + b"a,b\n").encoding == "utf-8"


def test_what_the_spec_sets_wins_over_detection() -> None:
    found = detect(b"a;b,c;d\n", encoding="latin-1", delimiter=",")
    assert (found.encoding, found.delimiter, found.delimiter_from) == ("latin-1", ",", "spec")


def test_a_utf16_bom_against_a_set_encoding_says_what_to_set() -> None:
    with pytest.raises(DialectError, match=r"--encoding utf-16.*\[source\] encoding"):
        detect(codecs.BOM_UTF16_LE + "a,b\n".encode("utf-16-le"), encoding="utf-8")


@pytest.mark.parametrize(("line", "expected"), [
    ("a,b,c", ","), ("a\tb\tc", "\t"), ("a;b;c", ";"), ("a|b|c", "|"),
    ('"x;y",b,c', ","),  # a delimiter inside quotes does not count
    ("a;b,c", ","),  # a tie goes to the earlier candidate
    ("account", None),  # one column: nothing to sniff
    ("\n\na;b\n", ";"),  # blank lines before the header
    ('"name" "pop" "area"', " "),  # R's write.table: quoted fields, single spaces
    ('"a b" "c"', " "),  # a space inside quotes does not count
    ("name pop area", None),  # unquoted words: a sentence as much as a header
    ('"a" "b",c', ","),  # not quoted fields alone: the space is no candidate
])
def test_the_delimiter_is_the_candidate_that_splits_the_header_most(line, expected) -> None:
    assert sniff_delimiter(line + "\n") == expected


def test_a_one_column_header_falls_back_to_comma_and_the_hint_names_the_fix() -> None:
    found = detect(b"account\n1\n")
    assert (found.delimiter, found.delimiter_from) == (",", "default")
    hint = hint_one_column(["account:offer_id"], ",")
    assert "--delimiter" in hint and "[source] delimiter" in hint
    assert hint_one_column(["a", "b"], ",") == ""


def test_describe_names_what_was_used() -> None:
    assert detect(gzip.compress(codecs.BOM_UTF16_LE + "a\tb\n".encode("utf-16-le"))).describe() == \
        "gzip, utf-16 (BOM), delimiter tab (from the header)"


def test_a_spec_may_hold_source_alone_and_the_keys_come_from_flags_or_defaults() -> None:
    spec = Spec.from_dict({"source": {"delimiter": ";"}})
    assert spec.partition_key.name == "account" and spec.sort_key.name == "offer_id"
    assert spec.set_delimiter() == ";" and spec.set_encoding() is None
    flagged = spec.with_keys("id", "").with_source(None, "latin1")
    assert flagged.partition_key.name == "id" and flagged.sort_key is None
    assert (flagged.set_delimiter(), flagged.set_encoding()) == (";", "latin-1")
    assert Spec.from_dict(flagged.to_dict()) == flagged  # what the stack passes the Lambdas


def test_unset_source_settings_stay_unset_through_the_lambda_environment() -> None:
    spec = Spec.default()
    assert spec.to_dict()["source"] == {}
    assert Spec.from_dict(spec.to_dict()).set_delimiter() is None


@pytest.mark.parametrize(("flag", "expected"), [("tab", "\t"), ("\\t", "\t"), (";", ";"),
                                                ("semicolon", ";"), ("|", "|")])
def test_delimiter_flag_words(flag, expected) -> None:
    assert Spec.default().with_source(flag, None).delimiter == expected


@pytest.mark.parametrize(("delimiter", "encoding", "field"), [
    (";;", None, "--delimiter"), ('"', None, "--delimiter"), (None, "cp1252", "--encoding")])
def test_bad_source_flags_name_the_flag(delimiter, encoding, field) -> None:
    with pytest.raises(SpecError, match=f"^{field}"):
        Spec.default().with_source(delimiter, encoding)


def test_a_csv_error_names_the_delimiter_the_file_reads_with() -> None:
    # Given a space-delimited file whose header is not quoted (so it is not sniffed)
    text = 'area pop\n"Aberdeen_City" 1142\n"Angus" 116\n'
    # Then a space is the delimiter it reads with, and the hint says how to set it
    assert suggest_delimiter(text, ",") == " "
    assert hint_delimiter(text, ",") == (
        "; the file reads as CSV with the delimiter ' ': set it (--delimiter ' ', or [source] "
        'delimiter = " " in the spec)')
    assert "--delimiter tab" in hint_delimiter("a\tb\n1\t2\n", ",")
    # And a file no other delimiter reads gets no hint
    assert hint_delimiter('a,b\n1,"never closed\n', ",") == ""
