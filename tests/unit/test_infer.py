"""`fanout spec infer`: types only where every sampled value converts, a unique key, and a
spec that `load_spec` reads back."""

from __future__ import annotations

import csv
import io

import pytest

from fanout.infer import InferError, infer
from fanout.mapping import Spec, load_spec


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
    ("a,a\n1,2\n", "more than once"),
    ("a,\n1,2\n", "has no name"),
    ("a,b\n", "no data rows"),
])
def test_unusable_samples_say_what_to_do(text, message):
    with pytest.raises(InferError, match=message):
        _infer(text)


def test_the_sample_is_bounded():
    text = "id\n" + "".join(f"{i}\n" for i in range(50)) + "1\n"
    result = _infer(text, max_rows=50)
    assert result.rows == 50
    assert result.key.partition == "id"  # the duplicate after the sample is not seen
