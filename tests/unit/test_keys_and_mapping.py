"""Key templates and the mapping spec: rows -> DynamoDB items, rejects with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout.keys import KeyTemplate, TemplateError
from fanout.mapping import RowRejected, Spec, SpecError, key_from_flag, load_spec


def test_templates_mix_columns_literals_and_line() -> None:
    template = KeyTemplate.parse("A_{DOL Vehicle ID}#{_line}").bind(["x", "DOL Vehicle ID"])
    assert template.render(["1", "99"], 7) == ("A_99#7", [])


def test_template_naming_a_missing_column_fails_with_the_header() -> None:
    with pytest.raises(TemplateError, match="'carrier'.*not in the header"):
        KeyTemplate.parse("{carrier}#{flight}").bind(["flight"])


def test_key_flags_name_type_and_template() -> None:
    assert key_from_flag("account", "pk").name == "account"
    key = key_from_flag("line:N={_line}", "sk")
    assert (key.name, key.type, key.template.text) == ("line", "N", "{_line}")
    assert key_from_flag("{carrier}#{flight}", "pk").name == "pk"


def test_default_spec_makes_every_value_a_string_and_drops_empties() -> None:
    mapper = Spec.default().bind(["account", "offer_id", "risk", "note"])
    item = mapper.to_item(["123", "456", "low", ""], 2)
    assert item == {"account": {"S": "123"}, "offer_id": {"S": "456"}, "risk": {"S": "low"}}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["", "1", "x"], "empty_key"),
        (["1", "", "x"], "empty_key"),
        (["1", "2", "x", "extra"], "column_count"),
    ],
)
def test_rows_that_can_never_be_written_are_rejected_with_a_reason(row: list[str], reason: str) -> None:
    mapper = Spec.default().bind(["account", "offer_id", "risk"])
    with pytest.raises(RowRejected) as error:
        mapper.to_item(row, 5)
    assert error.value.reason == reason


def typed_spec(**columns: object) -> Spec:
    return Spec.from_dict({
        "table": {"partition_key": {"name": "id", "type": "N"}},
        "columns": {"types": {"price": "N", "active": "BOOL", "meta": "JSON", "tags": "SS",
                              "gone": "NULL"}, **columns},
    })


def test_typed_columns_become_dynamodb_types() -> None:
    mapper = typed_spec().bind(["id", "price", "active", "meta", "tags", "gone"])
    item = mapper.to_item(["7", "19.990", "No", '{"a": [1, 2.5, "x", true, null]}', "b|a|b", "null"], 2)
    assert item == {
        "id": {"N": "7"},
        "price": {"N": "19.990"},
        "active": {"BOOL": False},
        "meta": {"M": {"a": {"L": [{"N": "1"}, {"N": "2.5"}, {"S": "x"}, {"BOOL": True},
                                    {"NULL": True}]}}},
        "tags": {"SS": ["a", "b"]},
        "gone": {"NULL": True},
    }


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("price", "NaN", "bad_number"),
        ("price", "inf", "bad_number"),
        ("price", "1e999", "bad_number"),
        ("price", "12abc", "bad_number"),
        ("active", "FALSEY", "bad_bool"),
        ("meta", "{not json", "bad_json"),
        ("meta", '{"x": NaN}', "bad_json"),
        ("gone", "something", "bad_null"),
    ],
)
def test_bad_typed_values_are_rejected(column: str, value: str, reason: str) -> None:
    header = ["id", "price", "active", "meta", "tags", "gone"]
    row = ["1", "1", "true", "{}", "a", "null"]
    row[header.index(column)] = value
    with pytest.raises(RowRejected) as error:
        typed_spec().bind(header).to_item(row, 3)
    assert error.value.reason == reason
    assert column in error.value.detail


def test_empty_policy_null_and_keep() -> None:
    header = ["id", "price", "active", "meta", "tags", "gone"]
    row = ["1", "", "", "", "", ""]
    assert typed_spec(empty="null").bind(header).to_item(row, 2)["price"] == {"NULL": True}
    assert typed_spec(empty="keep").bind(header).to_item(row, 2)["meta"] == {"S": ""}
    assert "price" not in typed_spec().bind(header).to_item(row, 2)


def test_a_spec_naming_a_column_the_file_lacks_is_an_error() -> None:
    with pytest.raises(TemplateError, match="spec names column 'price'"):
        typed_spec().bind(["id", "note"])


def test_transforms_rename_drop_and_normalise_headers() -> None:
    spec = Spec.from_dict({
        "table": {"partition_key": {"name": "vin", "template": "V_{vehicle_id}"}},
        "columns": {"normalize_headers": True, "rename": {"model_year": "year"}, "drop": ["junk"]},
        "transforms": {"make": {"trim": True, "lowercase": True, "replace": {" ": "_"},
                                "prefix": "MAKE_"}},
    })
    mapper = spec.bind(["Vehicle ID", "Make", "Model Year", "Junk"])
    item = mapper.to_item(["42", "  Tesla Motors ", "2020", "zzz"], 2)
    assert item == {"vin": {"S": "V_42"}, "vehicle_id": {"S": "42"},
                    "make": {"S": "MAKE_tesla_motors"}, "year": {"S": "2020"}}


def test_infer_mode_types_unlisted_columns() -> None:
    spec = Spec.from_dict({"table": {"partition_key": "id"}, "columns": {"default_type": "infer"}})
    item = spec.bind(["id", "n", "b", "zip"]).to_item(["x", "-12.5", "TRUE", "00501"], 2)
    assert item["n"] == {"N": "-12.5"}
    assert item["b"] == {"BOOL": True}
    assert item["zip"] == {"S": "00501"}  # leading zeros stay a string


def test_items_over_400_kb_are_rejected() -> None:
    mapper = Spec.default().bind(["account", "offer_id", "blob"])
    with pytest.raises(RowRejected) as error:
        mapper.to_item(["1", "2", "x" * 500_000], 2)
    assert error.value.reason == "item_too_large"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"table": {"name": "offers"}}, "table.partition_key"),
        ({"table": {"partition_key": {"name": "id", "type": "BOOL"}}}, "table.partition_key.type"),
        ({"table": {"partition_key": "id"}, "columns": {"types": {"x": "FLOAT"}}}, "columns.types.x"),
        ({"table": {"partition_key": "id"}, "columns": {"empty": "skip"}}, "columns.empty"),
        ({"table": {"partition_key": "id"}, "colums": {}}, "colums"),
        ({"table": {"partition_key": "id"}, "transforms": {"a": {"upper": True}}}, "transforms.a.upper"),
        ({"table": {"partition_key": {"name": "id", "template": "{a"}}}, "table.partition_key.template"),
    ],
)
def test_spec_errors_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        Spec.from_dict(spec)
    assert str(error.value).startswith(field)


def test_spec_file_round_trips_through_toml(tmp_path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('[table]\npartition_key = { name = "pk", type = "S", template = "A_{a}" }\n'
                    '[columns]\ntypes = { n = "N" }\n')
    spec = load_spec(path)
    assert Spec.from_dict(spec.to_dict()) == spec
    bad = tmp_path / "bad.toml"
    bad.write_text("[table\n")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(bad)


def test_header_problems_are_named() -> None:
    with pytest.raises(TemplateError, match="columns.rename gives the name 'b' to two columns"):
        Spec.from_dict({"table": {"partition_key": "a"},
                        "columns": {"rename": {"c": "b"}}}).bind(["a", "b", "c"])
    with pytest.raises(TemplateError, match="'offer_id'"):
        Spec.default().bind(["account", "x"])


def test_unnamed_and_repeated_header_fields_get_names_as_pandas_gives_them() -> None:
    # Given R's write.csv row names (an empty first name) and a name repeated twice,
    # one of whose suffixed forms the file already holds
    header = ["", "x", "x", "x.1", "x", ""]
    spec = Spec.from_dict({"table": {"partition_key": "unnamed_1"}})
    # Then each column has a name of its own, deterministically, and the notes say which
    assert spec.output_header(header) == ["unnamed_1", "x", "x.2", "x.1", "x.3", "unnamed_6"]
    assert spec.header_notes(header) == [
        "column 1 (no name) as unnamed_1", "column 3 ('x', a repeated name) as x.2",
        "column 5 ('x', a repeated name) as x.3", "column 6 (no name) as unnamed_6"]
    mapper = spec.bind(header)
    assert mapper.to_item(["Cow", "1", "2", "3", "4", ""], 2) == {
        "unnamed_1": {"S": "Cow"}, "x": {"S": "1"}, "x.2": {"S": "2"}, "x.1": {"S": "3"},
        "x.3": {"S": "4"}}


def test_the_spec_names_an_unnamed_column_through_rename() -> None:
    spec = Spec.from_dict({"table": {"partition_key": "animal"},
                           "columns": {"rename": {"unnamed_1": "animal"}}})
    assert spec.bind(["", "body"]).to_item(["Cow", "465"], 2) == {
        "animal": {"S": "Cow"}, "body": {"S": "465"}}
    assert spec.header_notes(["", "body"]) == ["column 1 (no name) as unnamed_1"]


def test_normalised_names_that_collide_are_suffixed_not_refused() -> None:
    spec = Spec.from_dict({"table": {"partition_key": "k"}, "columns": {"normalize_headers": True}})
    assert spec.output_header(["K", "k", " "]) == ["k", "k.1", "unnamed_3"]
    assert spec.header_notes(["K", "k", " "]) == ["column 2 ('k', a repeated name) as k.1",
                                                   "column 3 (no name) as unnamed_3"]


def test_short_rows_are_padded_as_dictreader_pads_them_unless_the_spec_rejects_them() -> None:
    header = ["account", "offer_id", "price", "note"]
    spec = Spec.from_dict({"table": {"partition_key": "account", "sort_key": "offer_id"},
                           "columns": {"types": {"price": "N"}, "empty": "null"}})
    # A row two fields short: the missing fields are empty, then the empty rule applies
    assert spec.bind(header).to_item(["1", "2"], 3) == {
        "account": {"S": "1"}, "offer_id": {"S": "2"}, "price": {"NULL": True},
        "note": {"NULL": True}}
    # A key column missing from a short row is an empty key, as in any row
    with pytest.raises(RowRejected) as missing_key:
        spec.bind(header).to_item(["1"], 3)
    assert missing_key.value.reason == "empty_key"
    # A row with more fields than the header stays a rejection
    with pytest.raises(RowRejected, match="more fields than the header") as long_row:
        spec.bind(header).to_item(["1", "2", "3", "4", "5"], 3)
    assert long_row.value.reason == "column_count"
    rejecting = Spec.from_dict({**spec.to_dict(), "columns": {"short_rows": "reject"}})
    with pytest.raises(RowRejected, match='columns.short_rows = "reject"') as short:
        rejecting.bind(header).to_item(["1", "2"], 3)
    assert short.value.reason == "column_count"
    with pytest.raises(SpecError, match="columns.short_rows: 'drop' is not one of pad, reject"):
        Spec.from_dict({"columns": {"short_rows": "drop"}})


def test_rejected_rows_travel_in_messages_that_fit_and_previews_are_not_replayed() -> None:
    from fanout.contract import (
        Rejection,
        RowsMessage,
        Source,
        as_replay,
        decode,
        rejected_messages,
    )

    source = Source("b", "k")
    message = RowsMessage("job", 3, source, ["a", "b"], [], [])
    rejections = [Rejection(i, ["x" * 60_000, "y"], "bad_number", "z" * 5000) for i in range(30)]
    parts = rejected_messages(message, rejections)
    assert len(parts) > 1
    assert all(len(p.encode().encode()) <= 1_048_576 for p in parts)
    assert sum(len(p.rejections) for p in parts) == 30
    assert all(len(r.detail) <= 300 for p in parts for r in p.rejections)
    mixed = decode(rejected_messages(message, [
        Rejection(2, ["1", "2"], "bad_number", "n"), Rejection(3, ["big"], "row_too_large", "p"),
    ])[0].encode())
    replay = as_replay(mixed)
    assert replay.rows == [["1", "2"]] and replay.lines == [2]
    assert [r.reason for r in replay.rejections] == ["row_too_large"]


@pytest.mark.parametrize(("text", "role"), [("{time_hour}#{flight}", "sort_key"), ("A_{a}", "partition_key"),
                                            ("line:N={_line}", "sort_key"), ("pk=A_{a}", "partition_key"),
                                            ("account", "partition_key")])
def test_a_key_string_in_a_spec_is_read_as_the_flag_reads_it(text: str, role: str, tmp_path: Path):
    # One rule: `sort_key = "{time_hour}#{flight}"` names its attribute as
    # `--sort-key '{time_hour}#{flight}'` does (sk), not literally `{time_hour}#{flight}`
    other = "account" if role == "sort_key" else "offer_id"
    keys = {role: text, ("partition_key" if role == "sort_key" else "sort_key"): other}
    path = tmp_path / "spec.toml"
    path.write_text("[table]\n" + "".join(f'{name} = "{value}"\n' for name, value in keys.items()))
    from_spec = getattr(load_spec(path), role)
    flags = Spec.default().with_keys(keys["partition_key"], keys["sort_key"])
    assert from_spec == getattr(flags, role)
    assert "{" not in from_spec.name
