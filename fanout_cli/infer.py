"""`fanout spec infer`: a commented, valid mapping spec from a sample of a CSV file.

Each guess is checked with the writer's own converters: a column is typed N, BOOL or JSON
only if every sampled value converts, so the spec loads its own sample with no
rejections. The key is a column, or a pair of columns, unique in the sample; when none
is, the spec says so and falls back to the row's source line as the sort key (or as the
whole key, when no column can be one). Every column is named as the loader names it
(`fanout.mapping.name_columns`: `unnamed_N`, `name.1`), and the spec says so. The spec is
checked before it is returned: it loads and binds to the header, or inference fails with
a one-line reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fanout.dialect import (
    HEAD_BYTES,
    HINT_LATIN1,
    DialectError,
    detect,
    gunzip_head,
    header_text,
    hint_delimiter,
)
from fanout.keys import KeyTemplate, TemplateError
from fanout.mapping import (
    UNNAMED,
    RowRejected,
    Spec,
    SpecError,
    naming_notes,
    normalize_header,
)

DEFAULT_SAMPLE_ROWS = 10_000
# DynamoDB's limits on key values: 2,048 bytes for a partition key, 1,024 for a sort key.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
# Pairs are searched among this many of the highest-cardinality candidates (66 pairs).
MAX_PAIR_CANDIDATES = 12

# Exact numbers only: no sign but '-', no leading zeros (00501 is a ZIP code, not 501),
# no exponent, at most 38 significant digits (DynamoDB's precision).
_EXACT_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")
_BOOL_VOCABULARIES = ({"true", "false"}, {"yes", "no"})
# Words exports write for a missing value. In a column that is otherwise numeric or
# boolean, the spec maps them to empty (a `replace` transform), so the column can be typed.
MISSING_WORDS = frozenset({"NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "none", "#N/A"})
# Column names that say "identifier": id, key, uuid, guid, sku, as a word or a suffix
# (order_id, Order ID, orderId).
_IDENTIFIER = re.compile(r"(^|[^A-Za-z])(?i:id|key|uuid|guid|sku)$|[a-z](Id|ID|Key)$")


class InferError(ValueError):
    """A sample a spec cannot be inferred from; the message says what to do."""


@dataclass
class ColumnStats:
    name: str
    values: list[str] = field(default_factory=list)
    empty: int = 0
    missing: frozenset[str] = frozenset()  # MISSING_WORDS the spec maps to empty

    @property
    def filled(self) -> list[str]:
        return [v for v in self.values if v != "" and v not in self.missing]

    @property
    def distinct(self) -> int:
        return len(set(self.values))

    @property
    def max_bytes(self) -> int:
        return max((len(v.encode("utf-8", "surrogatepass")) for v in self.values), default=0)


@dataclass(frozen=True)
class KeyChoice:
    partition: str
    partition_type: str
    sort: str | None
    sort_type: str
    comment: list[str]


LINE_KEY = "{_line}"  # the key template of the fallback: the row's source line


@dataclass(frozen=True)
class Inference:
    rows: int
    header: list[str]
    normalize_headers: bool
    naming: list[str]  # mapping.naming_notes: the columns the loader names
    source_header: list[str]  # the header as the file has it
    types: dict[str, str]
    empties: dict[str, int]
    missing: dict[str, list[str]]
    key: KeyChoice
    delimiter: str
    encoding: str

    def to_toml(self, source_name: str) -> str:
        """The spec as commented TOML that `load_spec` reads back."""
        key = self.key
        lines = [f"# Inferred by `fanout spec infer` from the first {self.rows:,} data rows of "
                 f"{source_name}.", "# Review it before loading; every guess is explained below.",
                 "", "[source]",
                 f"delimiter = {_toml_str(self.delimiter)}",
                 f"encoding = {_toml_str(self.encoding)}", "", "[table]"]
        lines += [f"# {text}" for text in key.comment]
        line_name = _toml_str(line_attribute(self.header))
        if key.partition == LINE_KEY:
            lines.append(f'partition_key = {{ name = {line_name}, type = "N", '
                         'template = "{_line}" }')
        else:
            lines.append(f"partition_key = {{ name = {_toml_str(key.partition)}, "
                         f"type = {_toml_str(key.partition_type)} }}")
        if key.sort == LINE_KEY:
            lines.append(f'sort_key = {{ name = {line_name}, type = "N", template = "{{_line}}" }}')
        elif key.sort:
            lines.append(f"sort_key = {{ name = {_toml_str(key.sort)}, "
                         f"type = {_toml_str(key.sort_type)} }}")
        lines += ["", "[columns]", 'default_type = "S"',
                  '# An empty value is left out of the item ("null" would store NULL, "keep" an '
                  "empty string).", 'empty = "drop"',
                  "# A row with fewer fields than the header gets empty fields at its end (as "
                  'csv.DictReader reads it); "reject" would reject it.', 'short_rows = "pad"']
        if self.normalize_headers:
            lines.append("# Some headers have spaces or capitals: they become lowercase, "
                         "spaces -> \"_\".")
        lines.append(f"normalize_headers = {'true' if self.normalize_headers else 'false'}")
        if self.naming:
            lines += ["# The header does not name every column once, so the loader names them "
                      "(unnamed_N: column N has no",
                      "# name, as R's row names and pandas' index; name.1: a repeated name), "
                      "and this spec uses those names:"]
            lines += [f"#   {note}" for note in self.naming]
            example = next((n for n in self.header if re.fullmatch(r"unnamed_\d+", n)), None)
            lines.append("# To name one yourself: rename = { "
                         f"{_toml_str(example or self.header[0])} = \"row_name\" }}, and use "
                         "the new name in [table] and [columns.types].")
        if self.types:
            lines.append("[columns.types]")
            for column, type_ in self.types.items():
                lines.append(f"{_toml_str(column)} = {_toml_str(type_)}"
                             f"{_empty_note(self.empties.get(column, 0), self.rows)}")
        strings = [c for c in self.header if c not in self.types and c not in _key_columns(key)]
        if strings:
            lines.append("# Left as strings (S): " + ", ".join(strings))
        always_empty = [c for c, n in self.empties.items() if n == self.rows]
        if always_empty:
            lines.append("# Empty in every sampled row (never stored while empty = \"drop\"): "
                         + ", ".join(always_empty))
        for column, words in self.missing.items():
            lines += ["", f"# {' and '.join(map(repr, words))} in {column!r} "
                      f"{'mean' if len(words) > 1 else 'means'} no value: mapped to empty.",
                      f"[transforms.{_toml_str(column)}]",
                      "replace = { " + ", ".join(f"{_toml_str(w)} = \"\"" for w in words) + " }"]
        text = "\n".join(lines) + "\n"
        self.check(text)
        return text

    def check(self, text: str) -> None:
        """The spec loads and binds to the file's header, as the splitter will bind it; an
        inference that would not is an error naming the column, never a spec that fails."""
        try:
            Spec.from_dict(tomllib.loads(text)).bind(self.source_header)
        except (SpecError, TemplateError, tomllib.TOMLDecodeError) as exc:
            raise InferError(f"the inferred spec would not load ({exc}): set the keys with "
                             "--partition-key/--sort-key, and please report the file's header"
                             ) from None


def infer_file(path: Path, *, max_rows: int = DEFAULT_SAMPLE_ROWS, delimiter: str | None = None,
               encoding: str | None = None) -> Inference:
    """Infer a spec from the first `max_rows` data rows of a local CSV (gzip, BOM and the
    delimiter detected as the splitter detects them)."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(HEAD_BYTES)
            dialect = detect(head, encoding=encoding, delimiter=delimiter)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if dialect.gzip else raw
            codec = {"utf-8": "utf-8-sig"}.get(dialect.encoding, dialect.encoding)
            text = io.TextIOWrapper(stream, encoding=codec, newline="")
            reader = csv.reader(text, delimiter=dialect.delimiter, strict=True)
            records = _records(reader)
            header = next(records, None)
            if header is None:
                raise InferError(f"{path}: no header line: the file is empty")
            return infer(header, records, delimiter=dialect.delimiter,
                         encoding=dialect.encoding, max_rows=max_rows)
    except OSError as exc:
        raise InferError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except DialectError as exc:
        raise InferError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        hint = HINT_LATIN1 if dialect.encoding == "utf-8" else ""
        raise InferError(f"{path}: not valid {dialect.encoding} ({exc.reason}){hint}") from None
    except csv.Error as exc:
        hint = hint_delimiter(header_text(head, dialect.encoding) if not dialect.gzip else
                              header_text(gunzip_head(head), dialect.encoding), dialect.delimiter)
        raise InferError(f"{path}: line {reader.line_num}: not valid CSV ({exc}){hint}") from None


def _records(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """Records without blank lines (csv.reader yields [] for them; the splitter skips them)."""
    return (record for record in reader if record)


def infer(header: Sequence[str], rows: Iterable[Sequence[str]], *, delimiter: str = ",",
          encoding: str = "utf-8", max_rows: int = DEFAULT_SAMPLE_ROWS) -> Inference:
    """Infer types, empties and a key from the header and up to `max_rows` rows."""
    names, normalize = _column_names(header)
    columns = [ColumnStats(name) for name in names]
    count = longer = 0
    for row in itertools.islice(rows, max_rows):
        if len(row) > len(columns):
            longer += 1
            continue  # a row longer than the header is rejected as column_count whatever the spec
        if len(row) < len(columns):  # the loader pads a short row (short_rows = "pad")
            row = [*row, *[""] * (len(columns) - len(row))]
        count += 1
        for stats, value in zip(columns, row, strict=True):
            stats.values.append(value)
            if value == "":
                stats.empty += 1
    if count == 0:  # nothing to infer from: a spec that loads what rows may come
        return Inference(rows=0, header=names, normalize_headers=normalize,
                         naming=naming_notes(header, names), source_header=list(header),
                         types={}, empties={}, missing={}, delimiter=delimiter,
                         encoding=encoding, key=KeyChoice(LINE_KEY, "N", None, "S", [
                             (f"No data row has at most as many fields as the header ({longer:,} "
                              "sampled rows have more, and would be rejected as column_count)"
                              if longer else "The file has no data rows (a job would fail: "
                              "'the file has a header but no data rows')")
                             + ": every column is a string,",
                             "and the row's source line is the key."]))
    types = {c.name: t for c in columns if (t := _column_type(c)) != "S"}
    for c in columns:
        if c.name not in types:
            c.missing = frozenset()  # a string column keeps its "NA" as text
    key = _choose_key(columns, types, count)
    for name in _key_columns(key):
        types.pop(name, None)  # the key's own type is in [table]
    empties = {c.name: c.empty + sum(v in c.missing for v in c.values)
               for c in columns if c.empty or c.missing}
    return Inference(rows=count, header=names, normalize_headers=normalize,
                     naming=naming_notes(header, names), source_header=list(header), types=types,
                     empties=empties, missing={c.name: sorted(c.missing) for c in columns
                                               if c.missing}, key=key,
                     delimiter=delimiter, encoding=encoding)


def _column_names(header: Sequence[str]) -> tuple[list[str], bool]:
    """The names the loader will give the columns, and whether to normalise them: only if
    normalising changes a name and makes no two names one (`K` and `k`), and empties no
    name (`normalize_header` of a blank name)."""
    normalized = [normalize_header(name) for name in header]
    normalize = (normalized != list(header) and "" not in set(normalized) - {n for n in header}
                 and len(set(normalized)) == len(set(header)))
    spec = replace(Spec.default(), normalize_headers=normalize)
    return spec.read_names(header), normalize


def line_attribute(names: Sequence[str]) -> str:
    """The attribute name of the {_line} key: `line`, unless a column has that name."""
    name, number = "line", 1
    while name in names:
        name, number = f"source_line_{number}", number + 1
    return name


def _column_type(stats: ColumnStats) -> str:
    words = frozenset(MISSING_WORDS.intersection(stats.values))
    rest = [v for v in stats.values if v != "" and v not in words]
    # Only if no other value holds the word: `replace` works on substrings.
    if rest and not any(w in v for w in words for v in rest):
        stats.missing = words
    filled = stats.filled
    if not filled:
        return "S"
    if all(_EXACT_NUMBER.fullmatch(v) and _significant_digits(v) <= 38 for v in filled):
        return _if_converts("N", filled, stats.name)
    lowered = {v.lower() for v in filled}
    if any(lowered <= vocabulary for vocabulary in _BOOL_VOCABULARIES):
        return _if_converts("BOOL", filled, stats.name)
    if all(v.lstrip()[:1] in ("{", "[") for v in filled):
        return _if_converts("JSON", filled, stats.name)
    return "S"


def _significant_digits(text: str) -> int:
    return len(text.lstrip("-").replace(".", "").lstrip("0")) or 1


def _if_converts(type_: str, values: list[str], column: str) -> str:
    """`type_` if the writer's converter takes every value, else S."""
    spec = Spec.from_dict({"table": {"partition_key": {"name": "k"}},
                           "columns": {"types": {column: type_}}})
    mapper = spec.bind(["k", column])
    try:
        for value in values:
            mapper.to_item(["k", value], 0)
    except RowRejected:
        return "S"
    return type_


def _choose_key(columns: list[ColumnStats], types: dict[str, str], rows: int) -> KeyChoice:
    """The first unique choice in this order: an identifier-like column, a string column,
    a pair with a string or identifier in it, an integer column, any pair; else {_line}."""
    candidates = [c for c in columns if _key_rank(c, types) is not None]
    order = {c.name: i for i, c in enumerate(columns)}
    candidates.sort(key=lambda c: (_rank(c, types), -c.distinct, order[c.name]))

    def key_type(c: ColumnStats) -> str:
        return "N" if types.get(c.name) == "N" else "S"

    def single(c: ColumnStats) -> KeyChoice:
        return KeyChoice(c.name, key_type(c), None, "S",
                         [f"{c.name!r} is unique in all {rows:,} sampled rows."])

    unique = [c for c in candidates if c.distinct == rows]
    # A pair with a column unique on its own is that column with a redundant sort key.
    pairs = _pairs([c for c in candidates if c.distinct < rows][:MAX_PAIR_CANDIDATES], rows)
    unique_pairs = [p for p in pairs if p[2] == rows]
    preferred = [c for c in unique if _rank(c, types) <= 1]
    if preferred:
        return single(preferred[0])
    preferred_pairs = [p for p in unique_pairs if min(_rank(p[0], types), _rank(p[1], types)) <= 1]
    if preferred_pairs or (unique_pairs and not unique):
        partition, sort, _ = (preferred_pairs or unique_pairs)[0]
        return KeyChoice(partition.name, key_type(partition), sort.name, key_type(sort),
                         [f"No single column is unique in the {rows:,} sampled rows; "
                          f"({partition.name!r}, {sort.name!r}) is."])
    if unique:
        return single(unique[0])
    if not candidates:
        reasons = [f"{c.name!r} {why}" for c in columns if (why := _why_not_key(c, types))]
        return KeyChoice(LINE_KEY, "N", None, "S", [
            "No column can be a key (" + "; ".join(reasons[:4])
            + ("; ..." if len(reasons) > 4 else "") + "),",
            "so the row's source line is the key: every row becomes its own item.",
            "A re-upload of the same file overwrites the same items; a changed file (rows "
            "added or removed above a row) puts rows under other keys."])
    comment = [f"No column or pair of columns is unique in the {rows:,} sampled rows, so the "
               "row's source line is the sort key:",
               "every row becomes its own item (a re-upload of the same file overwrites the "
               "same items)."]
    if pairs:
        partition, sort, distinct = max(pairs, key=lambda p: p[2])
        comment.append(f"Closest pair: ({partition.name!r}, {sort.name!r}), {distinct:,} "
                       f"distinct of {rows:,}; rows sharing a key would overwrite each other.")
    partition = max(candidates, key=lambda c: c.distinct)
    comment.append(f"Partition key {partition.name!r}: the most distinct values "
                   f"({partition.distinct:,} of {rows:,}), to spread the writes.")
    return KeyChoice(partition.name, key_type(partition), "{_line}", "N", comment)


def _pairs(pool: list[ColumnStats], rows: int) -> list[tuple[ColumnStats, ColumnStats, int]]:
    """(partition, sort, distinct pairs) for pairs within DynamoDB's key sizes; the
    higher-cardinality column is the partition key, to spread the writes."""
    pairs = []
    for first, second in itertools.combinations(pool, 2):
        partition, sort = (first, second) if first.distinct >= second.distinct else (second, first)
        if sort.max_bytes > MAX_SORT_KEY_BYTES:
            partition, sort = sort, partition
        if sort.max_bytes > MAX_SORT_KEY_BYTES:
            continue
        pairs.append((partition, sort, len(set(zip(partition.values, sort.values, strict=True)))))
    return pairs


def _rank(stats: ColumnStats, types: dict[str, str]) -> int:
    rank = _key_rank(stats, types)
    assert rank is not None, "only candidates are ranked"
    return rank


def _key_rank(stats: ColumnStats, types: dict[str, str]) -> int | None:
    """0 an identifier-like name, 1 a string, 2 an integer; None if it cannot be a key
    (empty values, too long, a decimal measurement, BOOL/JSON, or braces in its name)."""
    type_ = types.get(stats.name, "S")
    if (stats.empty or stats.missing or stats.max_bytes > MAX_PARTITION_KEY_BYTES
            or type_ not in ("S", "N")):
        return None
    if type_ == "N" and any("." in v for v in stats.values):
        return None
    try:
        if not KeyTemplate.parse(stats.name).is_bare_column:
            return None
    except TemplateError:
        return None
    if _IDENTIFIER.search(stats.name) or re.fullmatch(UNNAMED.format(r"\d+"), stats.name):
        return 0  # an identifier, or R's row names and pandas' index (an unnamed column)
    return 1 if type_ == "S" else 2


def _why_not_key(stats: ColumnStats, types: dict[str, str]) -> str:
    """Why a column cannot be a key ("" if it can), for the spec's comment."""
    type_ = types.get(stats.name, "S")
    if stats.empty or stats.missing:
        return "has empty values"
    if stats.max_bytes > MAX_PARTITION_KEY_BYTES:
        return f"has values over {MAX_PARTITION_KEY_BYTES:,} bytes"
    if type_ not in ("S", "N"):
        return f"is {type_}"
    if type_ == "N" and any("." in v for v in stats.values):
        return "holds decimals"
    if _key_rank(stats, types) is None:
        return "has a brace in its name"
    return ""


def _key_columns(key: KeyChoice) -> set[str]:
    return ({key.partition} if key.partition != LINE_KEY else set()) | (
        {key.sort} if key.sort and key.sort != LINE_KEY else set())


def _empty_note(empty: int, rows: int) -> str:
    return f"  # empty in {empty:,} of {rows:,} sampled rows" if empty else ""


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON's string escapes are all valid TOML escapes)."""
    return json.dumps(text, ensure_ascii=False)
