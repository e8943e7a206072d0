"""The mapping spec: how CSV rows become DynamoDB items.

One TOML file, read by the local runtime and the deployed writer alike::

    [table]
    name = "offers"                      # optional; the CLI/stack may name the table
    mode = "put"                         # put | delete | insert | update (see below)
    partition_key = { name = "pk", type = "S", template = "A_{account}" }
    sort_key      = { name = "offer_id", type = "N" }   # template defaults to the name

    [columns]
    default_type = "S"                   # or "infer" for columns not listed in types
    empty = "drop"                       # drop | null | keep (never allowed in a key)
    short_rows = "pad"                   # pad (missing trailing fields are empty) | reject
    normalize_headers = false            # lowercase, spaces -> "_"
    drop = ["internal_note"]
    rename = { "Offer Type" = "offer_type" }
    set_separator = "|"
    types = { price = "N", active = "BOOL", tags = "SS", meta = "JSON", gone = "NULL" }

    [source]                             # unset: detected (see fanout/dialect.py)
    delimiter = ","                      # one character: , tab ; | ... (unset: from the header)
    encoding = "utf-8"                   # utf-8, utf-16 (BOM required), latin-1 (unset: BOM, else utf-8)

    [transforms.make]                    # per column, applied in this order:
    trim = true                          # trim, lowercase, replace, prefix
    lowercase = true
    replace = { " " = "_" }
    prefix = "MAKE_"

Every section is optional: without `[table]` the keys come from the CLI flags or the
defaults (account, offer_id), so a spec may hold `[source]` alone.

`mode` is what the writer does with each row: `put` writes the item whole (BatchWriteItem,
overwriting), `delete` deletes the row's key (only the key columns are read), `insert`
writes only keys the table does not hold yet (PutItem with a condition), `update` sets
the row's attributes on the item, creating it if absent (UpdateItem). The splitter
stamps it in every message (fanout/contract.py), and the writer obeys the message.

Every column has a name: an empty header field is read as `unnamed_N` (N its column
number from 1), a repeated name as `name.1`, `name.2`, ... (`name_columns`); `rename`,
`types`, `drop` and the keys use those names. A row with fewer fields than the header is
padded with empty fields at its end, as `csv.DictReader` reads it (`short_rows = "pad"`),
which the empty rule then handles; a row with more fields is rejected (`column_count`).

The spec is validated before any row is read (`load_spec`, `Spec.from_dict`), and
bound to a file's header before its first row (`Spec.bind`): a spec error names the
field; a header error names the column.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fanout.contract import MODE_PUT, WRITE_MODES
from fanout.keys import KeyTemplate, TemplateError
from fanout.settings import MAX_ITEM_BYTES

KEY_TYPES = ("S", "N", "B")
COLUMN_TYPES = ("S", "N", "BOOL", "NULL", "JSON", "SS", "B")
EMPTY_POLICIES = ("drop", "null", "keep")
SHORT_ROW_POLICIES = ("pad", "reject")  # a row with fewer fields than the header
ENCODINGS = ("utf-8", "utf-16", "latin-1")
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})


class SpecError(ValueError):
    """A mapping spec that cannot be used; the message names the field."""


class RowRejected(ValueError):
    """A row that can never be written. `reason` is a stable code; the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: str = "S"
    template: KeyTemplate | None = None

    @property
    def source(self) -> KeyTemplate:
        return self.template or KeyTemplate.parse(self.name)


@dataclass(frozen=True)
class ColumnTransform:
    trim: bool = False
    lowercase: bool = False
    replace: tuple[tuple[str, str], ...] = ()
    prefix: str = ""

    def apply(self, value: str) -> str:
        if self.trim:
            value = value.strip()
        if self.lowercase:
            value = value.lower()
        for old, new in self.replace:
            value = value.replace(old, new)
        if self.prefix and value != "":
            value = self.prefix + value
        return value


@dataclass(frozen=True)
class Spec:
    partition_key: KeySpec
    sort_key: KeySpec | None = None
    table_name: str | None = None
    default_type: str = "S"
    empty: str = "drop"
    short_rows: str = "pad"  # SHORT_ROW_POLICIES: pad as csv.DictReader does, or reject
    normalize_headers: bool = False
    drop: frozenset[str] = frozenset()
    rename: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=dict)
    transforms: Mapping[str, ColumnTransform] = field(default_factory=dict)
    set_separator: str = "|"
    delimiter: str = ","
    encoding: str = "utf-8"
    # Which of "delimiter" and "encoding" the spec or a flag set. The others are decided
    # per file from its first bytes (fanout/dialect.py) before any row is read; the values
    # above are then what was decided (or the fallbacks, before).
    source_set: frozenset[str] = frozenset()
    mode: str = MODE_PUT  # what the writer does with each row (fanout.contract.WRITE_MODES)

    @classmethod
    def default(cls, partition_key: str = "account", sort_key: str | None = "offer_id") -> Spec:
        """The make-csv schema: every value a string, empty values dropped."""
        return cls(
            partition_key=key_from_flag(partition_key, "pk"),
            sort_key=key_from_flag(sort_key, "sk") if sort_key else None,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        """Validate a parsed spec; raise SpecError naming the offending field."""
        _only(data, {"table", "columns", "transforms", "source"}, "")
        table = _section(data, "table")
        _only(table, {"name", "partition_key", "sort_key", "mode"}, "table")
        mode = table.get("mode", MODE_PUT)
        if mode not in WRITE_MODES:
            raise SpecError(f"table.mode: {mode!r} is not one of {', '.join(WRITE_MODES)}")
        if "table" in data and "partition_key" not in table and set(table) != {"mode"}:
            raise SpecError("table.partition_key: required (or leave out [table] and give the "
                            "keys as flags)")
        if "partition_key" in table:
            partition = _key_spec(table["partition_key"], "table.partition_key")
            sort = _key_spec(table["sort_key"], "table.sort_key") if table.get("sort_key") else None
        else:  # keys from the flags, or the defaults
            default = cls.default()
            partition, sort = default.partition_key, default.sort_key
        if sort and sort.name == partition.name:
            raise SpecError("table.sort_key.name: must differ from the partition key's name")
        columns = _section(data, "columns")
        _only(columns, {"default_type", "empty", "normalize_headers", "drop", "rename", "types",
                        "set_separator", "short_rows"}, "columns")
        default_type = columns.get("default_type", "S")
        if default_type not in (*COLUMN_TYPES, "infer"):
            raise SpecError(f"columns.default_type: {default_type!r} is not one of "
                            f"{', '.join((*COLUMN_TYPES, 'infer'))}")
        empty = columns.get("empty", "drop")
        if empty not in EMPTY_POLICIES:
            raise SpecError(f"columns.empty: {empty!r} is not one of {', '.join(EMPTY_POLICIES)}")
        short_rows = columns.get("short_rows", "pad")
        if short_rows not in SHORT_ROW_POLICIES:
            raise SpecError(f"columns.short_rows: {short_rows!r} is not one of "
                            f"{', '.join(SHORT_ROW_POLICIES)}")
        types = _str_map(columns.get("types", {}), "columns.types")
        for column, type_ in types.items():
            if type_ not in COLUMN_TYPES:
                raise SpecError(f"columns.types.{column}: {type_!r} is not one of "
                                f"{', '.join(COLUMN_TYPES)}")
        drop = columns.get("drop", [])
        if not isinstance(drop, list) or not all(isinstance(c, str) for c in drop):
            raise SpecError("columns.drop: must be a list of column names")
        separator = columns.get("set_separator", "|")
        if not isinstance(separator, str) or not separator:
            raise SpecError("columns.set_separator: must be a non-empty string")
        normalize = columns.get("normalize_headers", False)
        if not isinstance(normalize, bool):
            raise SpecError("columns.normalize_headers: must be true or false")
        source = _section(data, "source")
        _only(source, {"delimiter", "encoding"}, "source")
        delimiter = check_delimiter(source.get("delimiter", ","), "source.delimiter")
        encoding = check_encoding(source.get("encoding", "utf-8"), "source.encoding")
        table_name = table.get("name")
        if table_name is not None and (not isinstance(table_name, str) or not table_name):
            raise SpecError("table.name: must be a non-empty string")
        return cls(
            partition_key=partition,
            sort_key=sort,
            table_name=table_name,
            default_type=default_type,
            empty=empty,
            short_rows=short_rows,
            normalize_headers=normalize,
            drop=frozenset(drop),
            rename=_str_map(columns.get("rename", {}), "columns.rename"),
            types=types,
            transforms=_transforms(_section(data, "transforms")),
            set_separator=separator,
            delimiter=delimiter,
            encoding=encoding,
            source_set=frozenset(source) & {"delimiter", "encoding"},
            mode=mode,
        )

    def with_keys(self, partition_key: str | None, sort_key: str | None) -> Spec:
        """This spec with keys overridden by CLI flags (None keeps the spec's key)."""
        from dataclasses import replace

        spec = self
        if partition_key:
            spec = replace(spec, partition_key=key_from_flag(partition_key, "pk"))
        if sort_key is not None:
            spec = replace(spec, sort_key=key_from_flag(sort_key, "sk") if sort_key else None)
        return spec

    def with_source(self, delimiter: str | None, encoding: str | None) -> Spec:
        """This spec with the source settings overridden by CLI flags (None keeps the spec's)."""
        from dataclasses import replace

        spec = self
        if delimiter is not None:
            spec = replace(spec, delimiter=check_delimiter(delimiter, "--delimiter"),
                           source_set=spec.source_set | {"delimiter"})
        if encoding is not None:
            spec = replace(spec, encoding=check_encoding(encoding, "--encoding"),
                           source_set=spec.source_set | {"encoding"})
        return spec

    def set_delimiter(self) -> str | None:
        return self.delimiter if "delimiter" in self.source_set else None

    def set_encoding(self) -> str | None:
        return self.encoding if "encoding" in self.source_set else None

    def key_schema(self) -> list[tuple[str, str]]:
        """(attribute name, type) for the partition key and the sort key if any."""
        keys = [(self.partition_key.name, self.partition_key.type)]
        if self.sort_key:
            keys.append((self.sort_key.name, self.sort_key.type))
        return keys

    def output_header(self, header: Sequence[str]) -> list[str]:
        """The header after normalisation, naming (`read_names`) and renames (before drops)."""
        return [self.rename.get(name, name) for name in self.read_names(header)]

    def read_names(self, header: Sequence[str]) -> list[str]:
        """The file's header as it is read, before renames: normalised if the spec says so,
        then named (`name_columns`: an empty name, a repeated one)."""
        names = [normalize_header(n) for n in header] if self.normalize_headers else list(header)
        return name_columns(names)

    def header_notes(self, header: Sequence[str]) -> list[str]:
        """What `read_names` named, for the "read as" line: `column 1 (no name) as unnamed_1`."""
        return naming_notes(header, self.read_names(header))

    def bind(self, header: Sequence[str]) -> RowMapper:
        """Compile the spec against a file's header; fail naming the column at fault."""
        return RowMapper(self, list(header))

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-able form that `from_dict` reads back (for Lambda environment)."""
        def key(k: KeySpec) -> dict[str, str]:
            d = {"name": k.name, "type": k.type}
            if k.template:
                d["template"] = k.template.text
            return d

        table: dict[str, Any] = {"partition_key": key(self.partition_key)}
        if self.sort_key:
            table["sort_key"] = key(self.sort_key)
        if self.table_name:
            table["name"] = self.table_name
        if self.mode != MODE_PUT:
            table["mode"] = self.mode
        return {
            "table": table,
            "columns": {
                "default_type": self.default_type,
                "empty": self.empty,
                "short_rows": self.short_rows,
                "normalize_headers": self.normalize_headers,
                "drop": sorted(self.drop),
                "rename": dict(self.rename),
                "types": dict(self.types),
                "set_separator": self.set_separator,
            },
            "source": {name: getattr(self, name) for name in sorted(self.source_set)},
            "transforms": {
                column: {"trim": t.trim, "lowercase": t.lowercase,
                         "replace": dict(t.replace), "prefix": t.prefix}
                for column, t in self.transforms.items()
            },
        }


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Spec.from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def key_from_flag(flag: str, default_name: str) -> KeySpec:
    """`account`, `pk=A_{account}`, `pk:N={_line}` or a bare template (named `default_name`)."""
    name, type_, template = default_name, "S", flag
    head, sep, rest = flag.partition("=")
    if sep and "{" not in head and head.strip():
        name, template = head.strip(), rest
        if ":" in name:
            name, type_ = name.split(":", 1)
    try:
        parsed = KeyTemplate.parse(template)
    except TemplateError as exc:
        raise SpecError(f"key {flag!r}: {exc}") from exc
    if type_ not in KEY_TYPES:
        raise SpecError(f"key {flag!r}: type {type_!r} is not one of {', '.join(KEY_TYPES)}")
    if parsed.is_bare_column and not sep:
        return KeySpec(name=parsed.text, type=type_)
    return KeySpec(name=name, type=type_, template=parsed)


DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def check_delimiter(value: Any, where: str) -> str:
    """One character, not a quote or a line break; `tab` (or a typed `\\t`) means a tab."""
    if isinstance(value, str) and where.startswith("--"):
        value = DELIMITER_WORDS.get(value.lower(), value)
    if not isinstance(value, str) or len(value) != 1 or value in ('"', "\r", "\n"):
        raise SpecError(f"{where}: {value!r} must be one character (or tab), not a quote or a "
                        "line break")
    return value


def check_encoding(value: Any, where: str) -> str:
    encoding = str(value).lower().replace("_", "-")
    encoding = {"utf8": "utf-8", "latin1": "latin-1", "iso-8859-1": "latin-1",
                "utf16": "utf-16", "utf-8-sig": "utf-8"}.get(encoding, encoding)
    if encoding not in ENCODINGS:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(ENCODINGS)}")
    return encoding


def normalize_header(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


UNNAMED = "unnamed_{}"  # an empty header field, by its column number (1 = the first)


def name_columns(names: Sequence[str]) -> list[str]:
    """Every column a name of its own, deterministically, as pandas reads a header:

    - an empty name becomes `unnamed_N`, N its column number counted from 1 (R's
      `write.csv` row names and pandas' `to_csv` index: pandas reads `Unnamed: 0`, R `X`;
      `unnamed_1` is a plain attribute name that a key template can name, `{unnamed_1}`);
    - a name seen before in the header gets `.1`, `.2`, ... (pandas' `x`, `x.1`), the
      first number that no column of the header holds.
    """
    named = [name if name != "" else UNNAMED.format(position)
             for position, name in enumerate(names, start=1)]
    taken = set(named)
    seen: set[str] = set()
    out = []
    for name in named:
        if name in seen:
            number = 1
            while f"{name}.{number}" in taken:
                number += 1
            name = f"{name}.{number}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def naming_notes(header: Sequence[str], names: Sequence[str]) -> list[str]:
    """`column 1 (no name) as unnamed_1`, `column 4 ('x' again) as x.1`: the columns
    `name_columns` named (what normalisation alone did is the spec's own choice)."""
    notes = []
    for position, (raw, name) in enumerate(zip(header, names, strict=True), start=1):
        if raw == "" or (name != raw and name == UNNAMED.format(position)):
            notes.append(f"column {position} (no name) as {name}")
        elif name != raw and name != normalize_header(raw):
            notes.append(f"column {position} ({raw!r}, a repeated name) as {name}")
    return notes


# --------------------------------------------------------------------------- row mapping

Converter = Callable[[str], "dict[str, Any] | None"]


class RowMapper:
    """A spec bound to one header: turns rows into DynamoDB-JSON items, fast."""

    def __init__(self, spec: Spec, header: list[str]) -> None:
        self.spec = spec
        self.source_header = header
        self.header = spec.output_header(header)
        seen: set[str] = set()
        for position, name in enumerate(self.header):
            if name == "":
                raise TemplateError(f"header column {position + 1} has an empty name")
            if name in seen:
                raise TemplateError(f"columns.rename gives the name {name!r} to two columns: "
                                    "give each column a name of its own")
            seen.add(name)
        for column in list(spec.types) + list(spec.transforms):
            if column not in seen:
                raise TemplateError(f"spec names column {column!r}, which is not in the header "
                                    f"({', '.join(self.header)})")
        try:
            self.partition = spec.partition_key.source.bind(self.header)
            self.sort = spec.sort_key.source.bind(self.header) if spec.sort_key else None
        except TemplateError:
            raise
        self.width = len(header)
        key_names = {spec.partition_key.name}
        if spec.sort_key:
            key_names.add(spec.sort_key.name)
        # (position, attribute name, transform or None, converter) for attribute columns.
        self.columns: list[tuple[int, str, ColumnTransform | None, Converter]] = []
        for position, name in enumerate(self.header):
            if name in spec.drop or name in key_names:
                continue
            type_ = spec.types.get(name, spec.default_type)
            self.columns.append((position, name, spec.transforms.get(name),
                                 _converter(type_, name, spec)))
        self.transforms = [(i, spec.transforms.get(name)) for i, name in enumerate(self.header)]
        self.has_transforms = any(t for _, t in self.transforms)
        # Work done once per header, not once per row (the writer's CPU per row):
        # all-string columns with empties dropped are built in one comprehension...
        self._strings = None if self.has_transforms or spec.empty != "drop" or any(
            spec.types.get(name, spec.default_type) != "S" for _, name, _, _ in self.columns
        ) else [(position, name) for position, name, _, _ in self.columns]
        # ...and the exact item size is computed only for rows whose cheap upper bound
        # (every field at 4 UTF-8 bytes a character, once per reference) passes the limit.
        # JSON values can outgrow their text, so such specs always measure exactly.
        templates = [self.partition] + ([self.sort] if self.sort is not None else [])
        refs = [p for t in templates for _, p in t.parts if p is not None]
        self._size_refs = 1 + sum(1 for p in refs if p >= 0)
        self._size_constant = (sum(len(name.encode()) + 3 for _, name, _, _ in self.columns)
                               + sum(len(k.name.encode()) + 3 for k in self._key_specs())
                               + sum(len(literal.encode()) for t in templates for literal, _ in t.parts)
                               + 20 * sum(1 for p in refs if p == -1))
        self._size_exact = any(spec.types.get(name, spec.default_type) == "JSON"
                               for _, name, _, _ in self.columns)
        pk_spec, sk_spec = spec.partition_key, spec.sort_key
        self._key_fields = ((pk_spec.name, pk_spec.type),
                            (sk_spec.name, sk_spec.type) if sk_spec else None)

    def _key_specs(self) -> list[KeySpec]:
        return [self.spec.partition_key] + ([self.spec.sort_key] if self.spec.sort_key else [])

    def key_of(self, item: Mapping[str, Any]) -> tuple[Any, ...]:
        (pk_name, pk_type), sort = self._key_fields
        if sort is None:
            return (item[pk_name][pk_type],)
        return (item[pk_name][pk_type], item[sort[0]][sort[1]])

    @property
    def key_names(self) -> tuple[str, ...]:
        """The key attributes' names: the partition key's, then the sort key's if any."""
        return tuple(k.name for k in self._key_specs())

    def to_key(self, row: Sequence[str], line: int) -> dict[str, Any]:
        """The key a row names (a delete): only the key's columns are converted, the others
        are not read (the row must still have the header's columns, to find them)."""
        return self._with_key({}, self._aligned(row), line)

    def to_item(self, row: Sequence[str], line: int) -> dict[str, Any]:
        """One row as a DynamoDB-JSON item; raise RowRejected with a reason code."""
        row = self._aligned(row)
        item: dict[str, Any]
        if self._strings is not None:
            item = {name: {"S": row[position]} for position, name in self._strings if row[position]}
        else:
            item = self._converted(row)
        self._with_key(item, row, line)
        if (not self._size_exact and self._size_constant
                + self._size_refs * 4 * sum(map(len, row)) <= MAX_ITEM_BYTES):
            return item
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise RowRejected("item_too_large",
                              f"item is {size:,} bytes; DynamoDB's limit is {MAX_ITEM_BYTES:,}")
        return item

    def _aligned(self, row: Sequence[str]) -> Sequence[str]:
        """The row checked against the header's width (a short row padded with empty fields
        at its end, as csv.DictReader reads it, unless the spec rejects short rows), with
        the columns' transforms applied."""
        if len(row) != self.width:
            if len(row) < self.width and self.spec.short_rows == "pad":
                row = [*row, *[""] * (self.width - len(row))]
            else:
                rule = (' (columns.short_rows = "reject")' if len(row) < self.width else
                        ": a row may not have more fields than the header")
                raise RowRejected("column_count",
                                  f"expected {self.width} columns, found {len(row)}{rule}")
        if self.has_transforms:
            return [t.apply(v) if t else v for (_, t), v in zip(self.transforms, row, strict=True)]
        return row

    def _with_key(self, item: dict[str, Any], row: Sequence[str], line: int) -> dict[str, Any]:
        item[self.spec.partition_key.name] = self._key_value(self.partition, self.spec.partition_key,
                                                             row, line)
        if self.sort is not None and self.spec.sort_key is not None:
            item[self.spec.sort_key.name] = self._key_value(self.sort, self.spec.sort_key, row, line)
        return item

    def _converted(self, row: Sequence[str]) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for position, name, _transform, convert in self.columns:
            value = row[position]
            if value == "":
                empty = self.spec.empty
                if empty == "drop":
                    continue
                item[name] = {"NULL": True} if empty == "null" else {"S": ""}
                continue
            converted = convert(value)
            if converted is not None:
                item[name] = converted
        return item

    def _key_value(self, template: Any, key: KeySpec, row: Sequence[str], line: int) -> dict[str, Any]:
        if key.type == "S" and len(template.parts) == 1 and not template.parts[0][0]:
            position = template.parts[0][1]
            if position is not None and position >= 0 and row[position]:
                return {"S": row[position]}  # a bare column, the common key: no rendering
        text, empty = template.render(row, line)
        if empty:
            names = ", ".join(self.header[p] for p in empty)
            raise RowRejected("empty_key", f"key attribute {key.name!r} uses empty column(s) {names}")
        if text == "":
            raise RowRejected("empty_key", f"key attribute {key.name!r} is empty")
        if key.type == "N":
            return {"N": _number(text, key.name)}
        if key.type == "B":
            return {"B": _binary(text, key.name)}
        return {"S": text}


def item_size(item: Mapping[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (UTF-8 bytes), a close upper bound."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    (type_, v), = value.items()
    if type_ == "S":
        return len(v.encode())
    if type_ == "N":
        return len(v) // 2 + 2
    if type_ == "B":
        return len(v)
    if type_ in ("BOOL", "NULL"):
        return 1
    if type_ == "SS":
        return sum(len(s.encode()) for s in v)
    if type_ == "M":
        return 3 + sum(len(k.encode()) + _value_size(x) + 1 for k, x in v.items())
    if type_ == "L":
        return 3 + sum(_value_size(x) + 1 for x in v)
    return len(str(v))


# --------------------------------------------------------------------------- converters

_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INFER_NUMBER_RE = re.compile(r"^-?(0|[1-9]\d{0,37})(\.\d+)?$")


def _number(text: str, column: str) -> str:
    value = text.strip()
    if not _NUMBER_RE.match(value):
        raise RowRejected("bad_number", f"column {column!r}: {text!r} is not a number")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the regex already rules these out
        raise RowRejected("bad_number", f"column {column!r}: {text!r} is not a number") from exc
    if not number.is_finite():
        raise RowRejected("bad_number", f"column {column!r}: {text!r} is not finite")
    if number != 0:
        digits = number.normalize().as_tuple().digits
        exponent = number.adjusted()
        if len(digits) > 38:
            raise RowRejected("bad_number", f"column {column!r}: {text!r} has more than 38 "
                                            "significant digits (DynamoDB's limit)")
        if exponent > 125 or exponent < -130:
            raise RowRejected("bad_number", f"column {column!r}: {text!r} is outside DynamoDB's "
                                            "number range (1E-130 to 9.9E+125)")
    return value


def _bool(text: str, column: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RowRejected("bad_bool", f"column {column!r}: {text!r} is not true/false, yes/no or 1/0")


def _binary(text: str, column: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RowRejected("bad_binary", f"column {column!r}: not valid base64") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


MAX_JSON_DEPTH = 32  # DynamoDB's limit on nested attributes


def to_attribute(value: Any, column: str, depth: int = 1) -> dict[str, Any]:
    """A parsed JSON value as a DynamoDB attribute value (numbers as N)."""
    if depth > MAX_JSON_DEPTH:
        raise RowRejected("bad_json", f"column {column!r}: nested deeper than DynamoDB's "
                                      f"{MAX_JSON_DEPTH} levels")
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": _number(str(value), column)}
    if isinstance(value, str):
        return {"S": _utf8(value, column)}
    if isinstance(value, list):
        return {"L": [to_attribute(v, column, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"M": {_utf8(str(k), column): to_attribute(v, column, depth + 1)
                      for k, v in value.items()}}
    raise RowRejected("bad_json", f"column {column!r}: unsupported JSON value {value!r}")


def _utf8(text: str, column: str) -> str:
    """JSON's \\u escapes can spell lone surrogates, which no UTF-8 string can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowRejected("bad_json", f"column {column!r}: a string holds a lone surrogate "
                                      f"({exc.reason})") from None
    return text


def _json(text: str, column: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RowRejected("bad_json", f"column {column!r}: not valid JSON: {exc}") from None
    return to_attribute(value, column)


def _infer(text: str) -> dict[str, Any]:
    if _INFER_NUMBER_RE.match(text):
        return {"N": text}
    word = text.lower()
    if word in ("true", "false"):
        return {"BOOL": word == "true"}
    return {"S": text}


def _converter(type_: str, column: str, spec: Spec) -> Converter:
    if type_ == "S":
        return lambda v: {"S": v}
    if type_ == "N":
        return lambda v: {"N": _number(v, column)}
    if type_ == "BOOL":
        return lambda v: {"BOOL": _bool(v, column)}
    if type_ == "B":
        return lambda v: {"B": _binary(v, column)}
    if type_ == "JSON":
        return lambda v: _json(v, column)
    if type_ == "infer":
        return _infer
    if type_ == "NULL":
        def null(v: str) -> dict[str, Any]:
            if v.strip().lower() in ("null", "none"):
                return {"NULL": True}
            raise RowRejected("bad_null", f"column {column!r}: {v!r} is not null")
        return null
    if type_ == "SS":
        separator = spec.set_separator

        def string_set(v: str) -> dict[str, Any] | None:
            members = sorted({m for m in v.split(separator) if m != ""})
            return {"SS": members} if members else None
        return string_set
    raise SpecError(f"columns.types.{column}: unknown type {type_!r}")  # pragma: no cover


# --------------------------------------------------------------------------- spec helpers

def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"{name}: must be a table")
    return value


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise SpecError(f"{prefix}{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{where}: must map names to strings")
    return dict(value)


def _key_spec(value: Any, where: str) -> KeySpec:
    """A key of the spec's [table]. A string is read as the --partition-key / --sort-key flag
    reads it (one rule for both): a column name (`account`), `NAME=TEMPLATE`,
    `NAME:N=TEMPLATE`, or a bare template (`{time_hour}#{flight}`), whose attribute is then
    named `pk` (partition) or `sk` (sort)."""
    if isinstance(value, str):
        return key_from_flag(value, "sk" if where.endswith("sort_key") else "pk")
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be a table with name, type and template")
    _only(value, {"name", "type", "template"}, where)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.name: required")
    type_ = value.get("type", "S")
    if type_ not in KEY_TYPES:
        raise SpecError(f"{where}.type: {type_!r} is not one of {', '.join(KEY_TYPES)}")
    template = value.get("template")
    try:
        parsed = KeyTemplate.parse(template) if template is not None else None
    except TemplateError as exc:
        raise SpecError(f"{where}.template: {exc}") from exc
    return KeySpec(name=name, type=type_, template=parsed)


def _transforms(data: Mapping[str, Any]) -> dict[str, ColumnTransform]:
    out = {}
    for column, options in data.items():
        where = f"transforms.{column}"
        if not isinstance(options, Mapping):
            raise SpecError(f"{where}: must be a table")
        _only(options, {"trim", "lowercase", "replace", "prefix"}, where)
        for flag in ("trim", "lowercase"):
            if not isinstance(options.get(flag, False), bool):
                raise SpecError(f"{where}.{flag}: must be true or false")
        prefix = options.get("prefix", "")
        if not isinstance(prefix, str):
            raise SpecError(f"{where}.prefix: must be a string")
        replace = _str_map(options.get("replace", {}), f"{where}.replace")
        if "" in replace:
            raise SpecError(f"{where}.replace: cannot replace the empty string")
        out[column] = ColumnTransform(
            trim=options.get("trim", False),
            lowercase=options.get("lowercase", False),
            replace=tuple(replace.items()),
            prefix=prefix,
        )
    return out
